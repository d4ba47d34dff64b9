"""JSON on the relay's hot path: orjson, with the standard library for what orjson refuses.

Every relayed call encodes a chat body, and a streamed Anthropic answer decodes and encodes
one JSON object per event; orjson does that several times faster. It refuses integers beyond
64 bits, which a caller may send: those bodies take the standard library's slower path.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["encode_json"]


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON (no spaces, non-ASCII kept), as both encoders write it."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
