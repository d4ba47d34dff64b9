"""Human-managed instances from `~/.powermem/instances.yaml`.

    instances:
      pmem-claude:
        client: claude-code
        provider: anthropic
        model: claude-sonnet-4-6
        api_key_env: ANTHROPIC_API_KEY     # or api_key: sk-ant-…
        base_url: ""
        secret_env: CLAUDE_INSTANCE_SECRET # optional: the instance secret on a shared gateway

One bad entry never takes the others down (issue 11.6): it is reported (a log line and
`InstancesFile.problems`, which status and doctor show) and skipped, or, if an earlier
version of it was good, that version stays in force. A file that cannot be read as a whole
keeps the previous file in force. No message ever repeats a key, nor a value given as
`api_key_env` unless it is shaped like a variable name (someone may have put the key there).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.errors import GatewayError, InvalidConfig
from gateway.instances.credentials import hash_secret
from gateway.instances.crypto import SealedFor
from gateway.instances.model import INSTANCE_ID_RE, InstanceConfig, InstanceRecord, mask_key

__all__ = [
    "InstancesFile",
    "InstancesFileError",
    "YamlEntry",
    "YamlInstance",
    "load_instances_file",
    "read_instances_file",
]

log = logging.getLogger("gateway.registry")
_UNREAD = object()
MAX_BYTES = 4 * 1024 * 1024
MAX_ENTRIES = 10_000  # bounds the in-memory tables built from the file
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")


class InstancesFileError(GatewayError):
    """instances.yaml cannot be used as written."""

    code = "INSTANCES_FILE_INVALID"


class YamlEntry(BaseModel):
    """One entry as written in the file."""

    model_config = ConfigDict(strict=True, extra="forbid", hide_input_in_errors=True, frozen=True)

    provider: str
    model: str
    client: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    base_url: str | None = None
    secret_env: str | None = None


@dataclass(frozen=True)
class YamlInstance:
    instance_id: str
    config: InstanceConfig
    secret: str | None = None


def _variable(name: str, what: str, where: str, environ: Mapping[str, str]) -> str:
    if not name:
        raise InstancesFileError(f"{where}: {what} must name an environment variable.")
    if name not in environ:
        shown = name if _ENV_NAME.match(name) and len(name) <= 64 else None
        raise InstancesFileError(
            f"{where}: environment variable {shown} ({what}) is not set for the gateway."
            if shown
            else f"{where}: {what} does not name a set environment variable (the value is "
            "not repeated here: it does not look like a variable name; is it a key?)."
        )
    return environ[name]


def _pydantic_problem(where: str, exc: ValidationError) -> InstancesFileError:
    error = exc.errors(include_input=False, include_url=False)[0]
    field = ".".join(str(part) for part in error["loc"]) or "entry"
    if error["type"] == "missing":
        text = f"{field} is required"
    elif error["type"] == "extra_forbidden":
        text = f"unknown field {field}; allowed: {', '.join(YamlEntry.model_fields)}"
    elif error["type"] == "model_type":
        text = "must be a mapping of client/provider/model/api_key"
    else:
        text = f"{field}: {error['msg']}"
    return InstancesFileError(f"{where}: {text}.")


def _entry(instance_id: object, raw: object, environ: Mapping[str, str]) -> YamlInstance:
    if not isinstance(instance_id, str) or not INSTANCE_ID_RE.match(instance_id):
        raise InstancesFileError(
            f"instance id {str(instance_id)[:64]!r} is not valid: use letters, digits, "
            "'.', '_' or '-' (at most 64), e.g. pmem-claude."
        )
    where = f"instance {instance_id!r}"
    try:
        entry = YamlEntry.model_validate(raw)
    except ValidationError as exc:
        raise _pydantic_problem(where, exc) from None
    if entry.api_key is not None and entry.api_key_env is not None:
        raise InstancesFileError(f"{where} gives both api_key and api_key_env; keep one.")
    api_key = entry.api_key or ""
    if entry.api_key_env is not None:
        api_key = _variable(entry.api_key_env, "api_key_env", where, environ)
    secret = None
    if entry.secret_env is not None:
        secret = _variable(entry.secret_env, "secret_env", where, environ)
    try:
        config = InstanceConfig.parse(
            provider=entry.provider,
            model=entry.model,
            api_key=api_key,
            base_url=entry.base_url or "",
            client=entry.client or "",
        )
    except InvalidConfig as exc:
        raise InstancesFileError(f"{where}: {exc.message}") from None
    return YamlInstance(instance_id, config, secret)


def read_instances_file(
    path: Path, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, YamlInstance], dict[str, str]]:
    """The good entries by id, and a problem message for each bad one (by id).

    Raises `InstancesFileError` when the file as a whole cannot be used.
    """
    env = os.environ if environ is None else environ
    try:
        if path.stat().st_size > MAX_BYTES:
            raise InstancesFileError(f"{path.name} is larger than {MAX_BYTES // 2**20} MiB.")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, {}
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
        return {}, {}
    if not isinstance(doc, dict) or not isinstance(doc.get("instances", {}), dict):
        raise InstancesFileError(f"{path.name} must hold a mapping 'instances: {{id: {{…}}}}'.")
    good: dict[str, YamlInstance] = {}
    problems: dict[str, str] = {}
    for n, (key, raw) in enumerate((doc.get("instances") or {}).items()):
        if n == MAX_ENTRIES:
            problems["…"] = f"only the first {MAX_ENTRIES} instances are used."
            break
        try:
            good[key] = _entry(key, raw, env)
        except InstancesFileError as exc:
            problems[str(key)[:64]] = exc.message
    return good, problems


def load_instances_file(
    path: Path, environ: Mapping[str, str] | None = None
) -> dict[str, YamlInstance]:
    """Every instance in the file by id; any bad entry raises (for checks that want it all)."""
    good, problems = read_instances_file(path, environ)
    if problems:
        raise InstancesFileError(next(iter(problems.values())))
    return good


class InstancesFile:
    """The file's instances as records, re-read only when the file changes.

    `seal(key, sealed_for)` encrypts a key like the registry does, so a record from the file
    is handled exactly like a stored one; `digest(config)` is the registry's fingerprint.
    """

    def __init__(
        self,
        path: Path,
        *,
        seal: Callable[[str, SealedFor], str],
        digest: Callable[[InstanceConfig], str],
    ) -> None:
        self.path = path
        self._seal = seal
        self._digest = digest
        self._stamp: object = _UNREAD
        self.records: dict[str, InstanceRecord] = {}
        self.by_digest: dict[str, str] = {}
        self.sorted_ids: list[str] = []
        self.problems: list[str] = []

    def _record(self, entry: YamlInstance, when: str) -> InstanceRecord:
        config = entry.config
        sealed_for = SealedFor(entry.instance_id, config.provider, config.base_url)
        return InstanceRecord(
            instance_id=entry.instance_id,
            client=config.client,
            provider=config.provider,
            model=config.model,
            base_url=config.base_url,
            encrypted_key=self._seal(config.api_key, sealed_for),
            masked_key=mask_key(config.api_key),
            config_digest=self._digest(config),
            created_at=when,
            updated_at=when,
            source="yaml",
            secret_hash=hash_secret(entry.secret) if entry.secret else "",
        )

    def reload(self) -> bool:
        """Re-read the file if it changed; True when the instances in force changed."""
        try:
            st = self.path.stat()
            stamp: tuple[float, int, int] | None = (st.st_mtime, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            entries, bad = read_instances_file(self.path)
        except InstancesFileError as exc:
            log.error("%s not reloaded, previous one kept: %s", self.path.name, exc.message)
            self.problems = [f"{exc.message} (the previous version stays in force)"]
            return False
        when = (
            (datetime.fromtimestamp(stamp[0], UTC) if stamp else datetime.now(UTC))
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
        records: dict[str, InstanceRecord] = {}
        problems = []
        for instance_id, message in bad.items():
            message = message.rstrip(".")
            if (previous := self.records.get(instance_id)) is not None:
                records[instance_id] = previous
                message += " (the previous one kept)."
            else:
                message += " (entry skipped)."
            log.error("%s: %s", self.path.name, message)
            problems.append(message)
        for instance_id, entry in entries.items():
            old = self.records.get(instance_id)
            new = self._record(entry, when)
            # An unchanged entry keeps its record (and its times) as they were.
            same = (
                old is not None
                and old.config_digest == new.config_digest
                and old.secret_hash == new.secret_hash
            )
            records[instance_id] = old if same and old is not None else new
        by_digest: dict[str, str] = {}
        for instance_id, record in records.items():
            by_digest.setdefault(record.config_digest, instance_id)
        changed = records != self.records
        self.records, self.by_digest, self.problems = records, by_digest, problems
        self.sorted_ids = sorted(records)
        if changed:
            log.info("%s loaded: %d instance(s)", self.path.name, len(records))
        return changed
