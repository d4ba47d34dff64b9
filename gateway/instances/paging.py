"""Pages of instances in a stable order, with an opaque cursor (issue 11.8).

Order: the instances.yaml entries first (by id), then the stored instances by
(created_at, instance_id). The cursor names the last item of the page it came with, so a page
never repeats or skips an instance that existed when the first page was read, however many
are created meanwhile (new ones come last).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field

from gateway.errors import InvalidConfig
from gateway.instances.model import InstanceRecord

__all__ = ["MAX_LIMIT", "Cursor", "Page", "decode_cursor", "encode_cursor"]

MAX_LIMIT = 1000


@dataclass(frozen=True)
class Cursor:
    """After this yaml id (`yaml`), or after this stored (created_at, instance_id)."""

    yaml: str | None = None
    stored: tuple[str, str] | None = None


@dataclass
class Page:
    items: list[InstanceRecord] = field(default_factory=list)
    next_cursor: str | None = None


def encode_cursor(cursor: Cursor) -> str:
    stored = cursor.stored or ("", "")
    value = ["y", cursor.yaml] if cursor.yaml is not None else ["s", *stored]
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(text: str | None) -> Cursor:
    if not text:
        return Cursor()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            if len(value) == 2 and value[0] == "y":
                return Cursor(yaml=value[1])
            if len(value) == 3 and value[0] == "s":
                return Cursor(stored=(value[1], value[2]))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        pass
    raise InvalidConfig(
        "cursor is not one this gateway gave out; start again without it.",
        details={"field": "cursor"},
    )
