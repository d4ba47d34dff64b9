"""Human-managed instances from `~/.powermem/instances.yaml`.

    instances:
      pmem-claude:
        client: claude-code
        provider: anthropic
        model: claude-sonnet-4-6
        api_key_env: ANTHROPIC_API_KEY     # or api_key: sk-ant-…
        base_url: ""

The file is all-or-nothing: one bad entry rejects the whole file with a message naming the
entry, so a typo never silently drops an instance that clients rely on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from gateway.errors import GatewayError, InvalidConfig
from gateway.instances.model import INSTANCE_ID_RE, InstanceConfig, InstanceRecord, mask_key

__all__ = ["InstancesFile", "InstancesFileError", "YamlInstance", "load_instances_file"]

log = logging.getLogger("gateway.registry")
_UNREAD = object()

_FIELDS = {"client", "provider", "model", "api_key", "api_key_env", "base_url"}


class InstancesFileError(GatewayError):
    """instances.yaml cannot be used as written."""

    code = "INSTANCES_FILE_INVALID"


@dataclass(frozen=True)
class YamlInstance:
    instance_id: str
    config: InstanceConfig


def _entry(instance_id: object, raw: object, environ: Mapping[str, str]) -> YamlInstance:
    if not isinstance(instance_id, str) or not INSTANCE_ID_RE.match(instance_id):
        raise InstancesFileError(
            f"instance id {str(instance_id)[:64]!r} is not valid: use letters, digits, "
            "'.', '_' or '-' (at most 64), e.g. pmem-claude."
        )
    where = f"instance {instance_id!r}"
    if not isinstance(raw, dict):
        raise InstancesFileError(f"{where} must be a mapping of client/provider/model/api_key.")
    unknown = sorted(str(k) for k in raw if k not in _FIELDS)
    if unknown:
        raise InstancesFileError(
            f"{where} has unknown field(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(_FIELDS))}."
        )
    if "api_key" in raw and "api_key_env" in raw:
        raise InstancesFileError(f"{where} gives both api_key and api_key_env; keep one.")
    api_key: object = raw.get("api_key", "")
    if "api_key_env" in raw:
        name = raw["api_key_env"]
        if not isinstance(name, str) or not name:
            raise InstancesFileError(f"{where}: api_key_env must name an environment variable.")
        if name not in environ:
            raise InstancesFileError(
                f"{where}: environment variable {name} (api_key_env) is not set for the gateway."
            )
        api_key = environ[name]
    try:
        config = InstanceConfig.parse(
            provider=raw.get("provider"),
            model=raw.get("model"),
            api_key=api_key,
            base_url=raw.get("base_url", ""),
            client=raw.get("client", ""),
        )
    except InvalidConfig as exc:
        raise InstancesFileError(f"{where}: {exc.message}") from None
    return YamlInstance(instance_id, config)


def load_instances_file(
    path: Path, environ: Mapping[str, str] | None = None
) -> dict[str, YamlInstance]:
    """Every instance in the file by id; an absent file is simply no instances."""
    env = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise InstancesFileError(f"{path.name} cannot be read: {exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        # The parser's own message may quote the offending text, which could be a key.
        raise InstancesFileError(f"{path.name} is not valid YAML{where}.") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict) or not isinstance(doc.get("instances", {}), dict):
        raise InstancesFileError(f"{path.name} must hold a mapping 'instances: {{id: {{…}}}}'.")
    entries = doc.get("instances") or {}
    return {e.instance_id: e for e in (_entry(k, v, env) for k, v in entries.items())}


class InstancesFile:
    """The file's instances as records, re-read only when the file changes.

    `seal(key, instance_id)` encrypts a key like the registry does, so a record from the file
    is handled exactly like a stored one; `digest(config)` is the registry's fingerprint.
    """

    def __init__(
        self,
        path: Path,
        *,
        seal: Callable[[str, str], str],
        digest: Callable[[InstanceConfig], str],
    ) -> None:
        self.path = path
        self._seal = seal
        self._digest = digest
        self._stamp: object = _UNREAD
        self.records: dict[str, InstanceRecord] = {}
        self.by_digest: dict[str, str] = {}

    def reload(self, *, strict: bool = False) -> bool:
        """Re-read the file if it changed; a bad file keeps the previous one in force.

        With `strict` (at start) a bad file raises instead: there is nothing to keep.
        """
        try:
            st = self.path.stat()
            stamp: tuple[float, int, int] | None = (st.st_mtime, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return False
        try:
            entries = load_instances_file(self.path)
        except InstancesFileError as exc:
            if strict:
                raise
            log.error("%s not reloaded, previous one kept: %s", self.path.name, exc.message)
            self._stamp = stamp
            return False
        when = (
            datetime.fromtimestamp(stamp[0], UTC).isoformat(timespec="milliseconds")
            if stamp
            else datetime.now(UTC).isoformat(timespec="milliseconds")
        ).replace("+00:00", "Z")
        records: dict[str, InstanceRecord] = {}
        by_digest: dict[str, str] = {}
        for instance_id, entry in entries.items():
            config = entry.config
            digest = self._digest(config)
            records[instance_id] = InstanceRecord(
                instance_id=instance_id,
                client=config.client,
                provider=config.provider,
                model=config.model,
                base_url=config.base_url,
                encrypted_key=self._seal(config.api_key, instance_id),
                masked_key=mask_key(config.api_key),
                config_digest=digest,
                created_at=when,
                updated_at=when,
                source="yaml",
            )
            by_digest.setdefault(digest, instance_id)
        self.records, self.by_digest, self._stamp = records, by_digest, stamp
        log.info("%s loaded: %d instance(s)", self.path.name, len(records))
        return True
