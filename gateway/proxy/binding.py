"""Which instance a proxied request belongs to: its scoped URL or its `X-PowerMem-*` headers.

Three ways in, the first one present wins:
- an instance-scoped URL, `/i/<id>[~<secret>]/…` (for tools whose only knob is a base URL);
- `X-PowerMem-Instance: <id>` (with `X-PowerMem-Instance-Secret` on a shared gateway);
- the `X-PowerMem-LLM-*` headers, which derive the id and create the instance on first sight
  (the key itself is the proof, so no secret is needed).
No way in means the request is not bound (the `.env`'s default LLM serves it). A scoped URL
and an `X-PowerMem-Instance` naming two different instances, or anything invalid, is
refused; nothing ever falls back silently.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import GatewayError, InvalidConfig, InvalidHeader
from gateway.instances.model import INSTANCE_ID_RE, InstanceRecord
from gateway.instances.registry import Registry

__all__ = [
    "HEADER_NAMES",
    "Binding",
    "InstanceSecretRequired",
    "bind",
    "check_header_name",
    "powermem_headers",
]

INSTANCE = b"x-powermem-instance"
SECRET = b"x-powermem-instance-secret"
_LLM_FIELDS = {
    "provider": b"x-powermem-llm-provider",
    "model": b"x-powermem-llm-model",
    "api_key": b"x-powermem-llm-api-key",
    "base_url": b"x-powermem-llm-base-url",
}
_LLM_HEADERS = tuple(_LLM_FIELDS.values())
CLIENT = b"x-powermem-client"
# Every `X-PowerMem-*` request header there is (lower-case → how the docs spell it).
HEADER_NAMES = {
    INSTANCE: "X-PowerMem-Instance",
    SECRET: "X-PowerMem-Instance-Secret",
    CLIENT: "X-PowerMem-Client",
    b"x-powermem-llm-provider": "X-PowerMem-LLM-Provider",
    b"x-powermem-llm-model": "X-PowerMem-LLM-Model",
    b"x-powermem-llm-api-key": "X-PowerMem-LLM-Api-Key",
    b"x-powermem-llm-base-url": "X-PowerMem-LLM-Base-Url",
}
MAX_HEADER_LEN = 8192


class InstanceSecretRequired(GatewayError):
    """A shared gateway binds an instance id only together with that instance's secret."""

    status = 401
    code = "INSTANCE_SECRET_REQUIRED"


@dataclass(frozen=True, slots=True)
class Binding:
    record: InstanceRecord
    created: bool

    def response_headers(self) -> dict[str, str]:
        headers = {"X-PowerMem-Instance": self.record.instance_id}
        if self.created:
            headers["X-PowerMem-Instance-Created"] = "true"
        return headers


def check_header_name(key: bytes) -> None:
    """Refuse an `X-PowerMem-*` name (lower-case) that is not one of ours, or misspelled with
    underscores: a typo must be an error, never a header silently ignored (or forwarded)."""
    if key in HEADER_NAMES:
        return
    name = key.decode("latin-1")[:60]
    raise InvalidHeader(
        f"Unknown header {name}: the gateway's headers are "
        + ", ".join(HEADER_NAMES.values())
        + " (nothing else starting with X-PowerMem- is accepted, so a typo never falls back "
        "to the default LLM).",
        details={"header": name},
    )


def powermem_headers(headers: list[tuple[bytes, bytes]]) -> dict[bytes, str]:
    """The request's `X-PowerMem-*` headers, checked and decoded."""
    found: dict[bytes, str] = {}
    for key, raw in headers:
        if not key.startswith((b"x-powermem", b"x_powermem")):
            continue
        check_header_name(key)
        name = HEADER_NAMES[key]
        if key in found:
            raise InvalidHeader(f"{name} is given twice.", details={"header": name})
        if len(raw) > MAX_HEADER_LEN:
            raise InvalidHeader(
                f"{name} is longer than {MAX_HEADER_LEN} bytes.", details={"header": name}
            )
        try:
            found[key] = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise InvalidHeader(f"{name} is not valid UTF-8.", details={"header": name}) from None
    return found


def _instance_id(value: str, where: str) -> str:
    if not INSTANCE_ID_RE.match(value):
        raise InvalidHeader(
            f"{where} must name an instance id such as pmem-0123456789abcdef.",
            details={"header": where},
        )
    return value


async def bind(
    ours: dict[bytes, str],
    registry: Registry,
    *,
    scope: str | None = None,
    source: str = "",
) -> Binding | None:
    """The instance the request names or describes; None for a plain (fallback) request."""
    secret = ours.get(SECRET)
    if scope is not None:
        instance_id, _, scoped_secret = scope.partition("~")
        instance_id = _instance_id(instance_id, "The scoped URL")
        if INSTANCE in ours and ours[INSTANCE] != instance_id:
            raise InvalidHeader(
                "The scoped URL and X-PowerMem-Instance name two different instances.",
                details={"header": "X-PowerMem-Instance"},
            )
        secret = scoped_secret or secret
    elif INSTANCE in ours:
        instance_id = _instance_id(ours[INSTANCE], "X-PowerMem-Instance")
    elif any(header in ours for header in _LLM_HEADERS):
        return await _implicit(ours, registry, source)
    else:
        return None
    record = await registry.get(instance_id)
    if not registry.verify_secret(record, secret):
        raise InstanceSecretRequired(
            "Missing or wrong instance secret: this gateway binds an instance id only with "
            "its secret, sent as X-PowerMem-Instance-Secret or in the scoped URL "
            "(/i/<instance>~<secret>/…).",
            headers={"WWW-Authenticate": 'Bearer realm="powermem-gateway instance"'},
        )
    return Binding(record, created=False)


async def _implicit(ours: dict[bytes, str], registry: Registry, source: str) -> Binding:
    fields = (
        ours.get(_LLM_FIELDS["provider"]),
        ours.get(_LLM_FIELDS["model"]),
        ours.get(_LLM_FIELDS["api_key"]),
        ours.get(_LLM_FIELDS["base_url"]),
        ours.get(CLIENT),
    )
    try:
        config, digest = registry.parsed.get(fields)
    except InvalidConfig as exc:
        field = str(exc.details.get("field"))
        header = HEADER_NAMES.get(_LLM_FIELDS.get(field, CLIENT if field == "client" else b""), "")
        header = header or "X-PowerMem-LLM-*"
        raise InvalidHeader(f"{header}: {exc.message}", details={"header": header}) from None
    record, created = await registry.resolve(config, source=source, implicit=True, digest=digest)
    return Binding(record, created)
