"""The gateway's settings: one frozen object, built once from flags and environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Settings", "default_data_dir", "default_env_file", "default_instances_file"]


def _powermem_home() -> Path:
    return Path.home() / ".powermem"


def default_data_dir() -> Path:
    return _powermem_home() / "gateway"


def default_instances_file() -> Path:
    return _powermem_home() / "instances.yaml"


def default_env_file() -> Path:
    return _powermem_home() / ".env"


@dataclass(frozen=True)
class Settings:
    """Everything the gateway needs to know; passed to `create_app`, never read from globals."""

    host: str = "127.0.0.1"
    port: int = 8848
    # None means "managed": the gateway starts the stock powermem-server itself.
    upstream: str | None = None
    data_dir: Path = field(default_factory=default_data_dir)
    instances_file: Path = field(default_factory=default_instances_file)
    env_file: Path = field(default_factory=default_env_file)
    admin_token: str | None = None
    # Master secret for API-key encryption; None means a generated key file in data_dir.
    secret: str | None = None
    # Earlier secrets whose ciphertexts must stay readable until `secret rotate` finishes.
    previous_secrets: tuple[str, ...] = ()
    # Relay token override; None means a generated token file in data_dir.
    relay_token: str | None = None
    # Seconds to wait for the upstream's response headers (bodies may stream for longer).
    upstream_timeout: float = 120.0
    upstream_connect_timeout: float = 10.0
    # Seconds for one provider call made by the relay (headers and body).
    provider_timeout: float = 120.0
    provider_retries: int = 2
    # Seconds one relayed call may take in all, retries included.
    relay_deadline: float = 120.0
    # Per-instance request limit (requests per minute); None disables it.
    instance_rate_limit: int | None = None
    # The command that runs powermem's server in managed mode.
    powermem_command: str = "powermem-server"
    # Whether client-supplied base URLs may point at private/loopback addresses;
    # None means "allowed while we listen on loopback only".
    allow_private_base_urls: bool | None = None
    # Hosts, addresses or CIDR blocks client base URLs may always reach (cloud metadata too).
    allowed_base_url_hosts: tuple[str, ...] = ()
    # Host names (besides loopback names and addresses) the gateway answers to; "*" for any.
    allowed_hosts: tuple[str, ...] = ()
    # Browser origins allowed to make cross-origin requests (default: none).
    allowed_origins: tuple[str, ...] = ()
    log_level: str = "INFO"
    log_format: str = "json"
    # Whether instances need a secret besides their id; None means "shared exactly when we
    # listen beyond loopback" (see `is_shared`).
    shared: bool | None = None
    # Caps on new instances (explicit or implicit); 0 means no cap. Admin-token callers are
    # never capped.
    max_instances: int = 10_000
    new_instances_per_client_per_hour: int = 100
    # Seconds an implicit instance may stay unused before it expires; None keeps them forever.
    implicit_instance_ttl: float | None = 30 * 24 * 3600.0

    @property
    def relay_url(self) -> str:
        """Where a co-located powermem server reaches this gateway's relay."""
        host = self.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a listen address, not a bind
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/relay/v1"

    @property
    def listens_on_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")

    @property
    def is_shared(self) -> bool:
        """Whether an instance id alone is not enough to bind a request (issue 9.5)."""
        return self.shared if self.shared is not None else not self.listens_on_loopback

    @property
    def private_base_urls_allowed(self) -> bool:
        if self.allow_private_base_urls is not None:
            return self.allow_private_base_urls
        return self.listens_on_loopback

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from `POWERMEM_GATEWAY_*` variables, with explicit overrides winning."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if v := env.get("POWERMEM_GATEWAY_DATA_DIR"):
            values["data_dir"] = Path(v).expanduser()
        if v := env.get("POWERMEM_GATEWAY_INSTANCES_FILE"):
            values["instances_file"] = Path(v).expanduser()
        if v := env.get("POWERMEM_ENV_FILE"):
            values["env_file"] = Path(v).expanduser()
        if v := env.get("POWERMEM_GATEWAY_UPSTREAM"):
            values["upstream"] = v
        for name, key in (
            ("admin_token", "POWERMEM_GATEWAY_ADMIN_TOKEN"),
            ("secret", "POWERMEM_GATEWAY_SECRET"),
            ("relay_token", "POWERMEM_GATEWAY_RELAY_TOKEN"),
        ):
            if v := env.get(key):
                values[name] = v
        if v := env.get("POWERMEM_GATEWAY_PREVIOUS_SECRET"):
            values["previous_secrets"] = (v,)
        if v := env.get("POWERMEM_GATEWAY_ALLOWED_BASE_URL_HOSTS"):
            values["allowed_base_url_hosts"] = tuple(h.strip() for h in v.split(",") if h.strip())
        if v := env.get("POWERMEM_GATEWAY_ALLOW_PRIVATE_BASE_URLS"):
            values["allow_private_base_urls"] = v.strip().lower() in ("1", "true", "yes", "on")
        if v := env.get("POWERMEM_GATEWAY_SHARED"):
            values["shared"] = v.strip().lower() in ("1", "true", "yes", "on")
        for name in ("max_instances", "new_instances_per_client_per_hour"):
            if v := env.get(f"POWERMEM_GATEWAY_{name.upper()}"):
                values[name] = int(v)
        if v := env.get("POWERMEM_GATEWAY_IMPLICIT_INSTANCE_TTL"):
            values["implicit_instance_ttl"] = None if v.strip() in ("0", "") else float(v)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
