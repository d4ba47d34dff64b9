"""The gateway's settings: one frozen object, built once from flags, environment and files.

Sources, highest first: flags (keyword arguments), `POWERMEM_GATEWAY_*` variables, their
`*_FILE` variants (a file holding the value, as container secrets are mounted), defaults.
Every command builds its settings here, so a variable means the same thing everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

__all__ = [
    "ENV_PREFIX",
    "FILE_VARIANTS",
    "Settings",
    "SettingsFileError",
    "default_data_dir",
    "default_env_file",
    "default_instances_file",
    "default_workers",
    "environ_values",
    "unknown_variables",
]

ENV_PREFIX = "POWERMEM_GATEWAY_"
# The cap on the default number of worker processes: beyond it more processes only add
# memory for a gateway whose upstream serves one request at a time per worker.
MAX_DEFAULT_WORKERS = 4
# Secrets that may come from a file: `<PREFIX><NAME>_FILE` → field.
FILE_VARIANTS: dict[str, str] = {
    "SECRET": "secret",
    "PREVIOUS_SECRET": "previous_secrets",
    "ADMIN_TOKEN": "admin_token",
    "RELAY_TOKEN": "relay_token",
    "DATABASE_URL": "database_url",
    "REDIS_URL": "redis_url",
}
# Variables whose name does not follow `<PREFIX><FIELD>`.
_RENAMED = {"POWERMEM_ENV_FILE": "env_file", f"{ENV_PREFIX}PREVIOUS_SECRET": "previous_secrets"}
# Read by docker/compose.yaml on the host (the published port), never by the gateway.
_NOT_OURS = frozenset({f"{ENV_PREFIX}HOST_PORT"})
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


class SettingsFileError(ValueError):
    """A `*_FILE` variable names a file that cannot be read, or clashes with its plain twin."""


def _powermem_home() -> Path:
    return Path.home() / ".powermem"


def default_data_dir() -> Path:
    return _powermem_home() / "gateway"


def default_instances_file() -> Path:
    return _powermem_home() / "instances.yaml"


def default_env_file() -> Path:
    return _powermem_home() / ".env"


def default_workers() -> int:
    """One process per core, up to `MAX_DEFAULT_WORKERS`."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))


def _read_secret_file(variable: str, path: str) -> str:
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SettingsFileError(f"{variable}={path}: cannot read that file ({reason}).") from None
    # A trailing newline is how editors and `echo` leave files; it is never part of a secret.
    value = text.strip()
    if not value:
        raise SettingsFileError(f"{variable}={path}: that file is empty.")
    return value


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """`POWERMEM_GATEWAY_*` variables that no setting reads: a misspelt name would otherwise
    be ignored without a word (`serve` says so; a container file is tested against it)."""
    fields = Settings.model_fields
    unknown = []
    for name in environ:
        if not name.startswith(ENV_PREFIX) or name in _RENAMED or name in _NOT_OURS:
            continue
        key = name[len(ENV_PREFIX) :]
        if key.lower() in fields or key.removesuffix("_FILE") in FILE_VARIANTS:
            continue
        unknown.append(name)
    return sorted(unknown)


def environ_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """Field values from `POWERMEM_GATEWAY_*` variables and their `*_FILE` variants.

    Empty variables count as unset. A secret given both directly and as `*_FILE` is an
    error: which one wins would be a guess.
    """
    fields = Settings.model_fields
    values: dict[str, Any] = {}
    for name, raw in environ.items():
        value = raw.strip()
        if not value:
            continue
        if name in _RENAMED:
            values[_RENAMED[name]] = value
            continue
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :]
        if key.endswith("_FILE") and key[: -len("_FILE")] in FILE_VARIANTS:
            continue  # below, so the clash check sees both spellings
        field = key.lower()
        if field in fields:
            values[field] = value
    for key, field in FILE_VARIANTS.items():
        variable = f"{ENV_PREFIX}{key}_FILE"
        path = environ.get(variable, "").strip()
        if not path:
            continue
        if environ.get(f"{ENV_PREFIX}{key}", "").strip():
            raise SettingsFileError(
                f"Both {ENV_PREFIX}{key} and {variable} are set; keep one of them."
            )
        values[field] = _read_secret_file(variable, path)
        values[f"{field.removesuffix('s')}_file"] = Path(path).expanduser()
    return values


class _Environment(PydanticBaseSettingsSource):
    """The process environment, read by `environ_values` (prefix, renamed and `_FILE`)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads everything at once

    def __call__(self) -> dict[str, Any]:
        return environ_values(os.environ)


def _split(value: object) -> object:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


class Settings(BaseSettings):
    """Everything the gateway needs to know; passed to `create_app`, never read from globals."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", validate_default=True)

    # -- where it listens, and how many processes ---------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8848, ge=0, le=65535)
    # Processes serving the one listening socket (`serve --workers N`).
    workers: int = Field(default_factory=default_workers, ge=1, le=64)
    # Host names the gateway's own routes answer to, besides the loopback names.
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    # Browser origins allowed cross-origin requests (default: none).
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = ()
    # Shared gateway (instance secrets required); None: shared exactly when listening
    # beyond loopback.
    shared: bool | None = None

    # -- the upstream powermem ---------------------------------------------------------------
    # None means "managed": the gateway starts the stock powermem-server itself.
    upstream: str | None = None
    # Seconds to wait for the upstream's response headers (bodies may stream for longer).
    upstream_timeout: float = Field(default=120.0, gt=0)
    upstream_connect_timeout: float = Field(default=10.0, gt=0)
    # The command that runs powermem's server in managed mode.
    powermem_command: str = "powermem-server"

    # -- files -------------------------------------------------------------------------------
    data_dir: Path = Field(default_factory=default_data_dir)
    instances_file: Path = Field(default_factory=default_instances_file)
    # powermem's own settings (POWERMEM_ENV_FILE).
    env_file: Path = Field(default_factory=default_env_file)

    # -- secrets (each also as a *_FILE variable; the *_file fields say which file) ----------
    admin_token: str | None = Field(default=None, repr=False)
    # Master secret for API-key encryption; None means a generated key file in data_dir.
    secret: str | None = Field(default=None, repr=False)
    # Earlier secrets whose ciphertexts must stay readable until `secret rotate` finishes.
    previous_secrets: Annotated[tuple[str, ...], NoDecode] = Field(default=(), repr=False)
    # Relay token override; None means a generated token file in data_dir.
    relay_token: str | None = Field(default=None, repr=False)
    # Registry in PostgreSQL instead of the data dir's SQLite (issue 13).
    database_url: str | None = Field(default=None, repr=False)
    # With database_url: cache records in each process, kept honest by LISTEN/NOTIFY with
    # confirmations and leases (True), or read one row per bound request (False).
    registry_cache: bool = True
    # Shared state across hosts (rate limits, ledger), when the gateway runs on several.
    redis_url: str | None = Field(default=None, repr=False)
    admin_token_file: Path | None = None
    secret_file: Path | None = None
    previous_secret_file: Path | None = None
    relay_token_file: Path | None = None
    database_url_file: Path | None = None
    redis_url_file: Path | None = None

    # -- the relay ---------------------------------------------------------------------------
    # Seconds for one provider call made by the relay (headers and body).
    provider_timeout: float = Field(default=120.0, gt=0)
    provider_retries: int = Field(default=2, ge=0, le=10)
    # Seconds a relayed call may take in all, retries included (`--relay-deadline`).
    relay_deadline: float = Field(default=120.0, gt=0)

    # -- limits ------------------------------------------------------------------------------
    # Per-instance request limit (requests per minute); None disables it.
    instance_rate_limit: int | None = Field(default=None, ge=1)
    # Caps on new instances (explicit or implicit): in all, and per client address per hour;
    # 0 means no cap. Callers presenting the admin token are never capped.
    max_instances: int = Field(default=10_000, ge=0)
    new_instances_per_client_per_hour: int = Field(default=100, ge=0)
    # Seconds an implicitly created instance may stay unused before it expires; 0: forever.
    implicit_instance_ttl: float | None = Field(default=30 * 24 * 3600.0, ge=0)
    # Whether client-supplied base URLs may point at private/loopback addresses;
    # None means "allowed while we listen on loopback only".
    allow_private_base_urls: bool | None = None
    # Hosts, addresses or CIDR blocks client base URLs may always reach (cloud metadata too).
    allowed_base_url_hosts: Annotated[tuple[str, ...], NoDecode] = ()

    # -- the client commands (register, doctor) ----------------------------------------------
    # The running gateway's URL (POWERMEM_GATEWAY_URL); None: derived from host and port.
    url: str | None = None

    # The event loop each process runs on: uvloop when installed ("auto"), or asyncio's own.
    loop: Literal["auto", "uvloop", "asyncio"] = "auto"

    # -- logs --------------------------------------------------------------------------------
    log_level: str = "INFO"
    log_format: str = "json"

    _split_fields: ClassVar[tuple[str, ...]] = (
        "allowed_hosts",
        "allowed_origins",
        "previous_secrets",
        "allowed_base_url_hosts",
    )

    @field_validator(*_split_fields, mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split(value)

    @field_validator("data_dir", "instances_file", "env_file", mode="after")
    @classmethod
    def _expand_user(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags first, then the environment (with its *_FILE variants); the gateway reads no
        # dotenv file of its own: ~/.powermem/.env is powermem's, read by upstream_env.
        return init_settings, _Environment(settings_cls)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from the environment (or `environ` on top of it); overrides win, None skips."""
        values: dict[str, Any] = environ_values(environ) if environ is not None else {}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def relay_url(self) -> str:
        """Where a co-located powermem server reaches this gateway's relay."""
        return self.local_url + "/relay/v1"

    @property
    def local_url(self) -> str:
        """This gateway's own URL as seen from this machine."""
        host = self.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a listen address, not a bind
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def listens_on_loopback(self) -> bool:
        return self.host in _LOOPBACK_NAMES or self.host.startswith("127.")

    @property
    def is_shared(self) -> bool:
        """Whether instances need their secret with the id (issue 9.5)."""
        return self.shared if self.shared is not None else not self.listens_on_loopback

    @property
    def private_base_urls_allowed(self) -> bool:
        if self.allow_private_base_urls is not None:
            return self.allow_private_base_urls
        return self.listens_on_loopback
