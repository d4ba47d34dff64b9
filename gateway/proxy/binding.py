"""Which instance a proxied request belongs to, from its `X-PowerMem-*` headers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.errors import InvalidConfig, InvalidHeader
from gateway.instances.model import INSTANCE_ID_RE, InstanceConfig, InstanceRecord
from gateway.instances.registry import Registry

__all__ = ["CONSUMED_HEADERS", "Binding", "bind_request"]

INSTANCE = "X-PowerMem-Instance"
CLIENT = "X-PowerMem-Client"
LLM_PREFIX = "x-powermem-llm-"
_LLM_FIELDS = {
    "provider": "X-PowerMem-LLM-Provider",
    "model": "X-PowerMem-LLM-Model",
    "api_key": "X-PowerMem-LLM-Api-Key",
    "base_url": "X-PowerMem-LLM-Base-Url",
    "client": CLIENT,
}
# Headers the gateway reads and never passes on (they may hold a key, or mean nothing upstream).
CONSUMED_HEADERS = frozenset(h.lower() for h in (INSTANCE, *_LLM_FIELDS.values()))
MAX_HEADER_LEN = 8192


@dataclass(frozen=True)
class Binding:
    record: InstanceRecord
    created: bool

    def response_headers(self) -> dict[str, str]:
        headers = {INSTANCE: self.record.instance_id}
        if self.created:
            headers["X-PowerMem-Instance-Created"] = "true"
        return headers


def _value(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    if len(value) > MAX_HEADER_LEN:
        raise InvalidHeader(
            f"{name} is longer than {MAX_HEADER_LEN} characters.", details={"header": name}
        )
    try:
        # aiohttp keeps undecodable bytes as surrogates; those are not UTF-8 text.
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidHeader(f"{name} is not valid UTF-8.", details={"header": name}) from None
    return value.strip()


async def bind_request(
    headers: Mapping[str, str], registry: Registry, *, source: str = ""
) -> Binding | None:
    """The instance named or described by the headers; None for a plain (fallback) request.

    `source` is the caller's address, for the audit entry of an implicit registration.
    """
    instance_id = _value(headers, INSTANCE)
    if instance_id is not None:
        if not INSTANCE_ID_RE.match(instance_id):
            raise InvalidHeader(
                f"{INSTANCE} must be an instance id such as pmem-0123456789abcdef.",
                details={"header": INSTANCE},
            )
        return Binding(await registry.get(instance_id), created=False)
    llm = {name: _value(headers, header) for name, header in _LLM_FIELDS.items()}
    if all(v is None for k, v in llm.items() if k != "client"):
        unknown = [h for h in headers if h.lower().startswith(LLM_PREFIX)]
        if unknown:
            raise InvalidHeader(
                f"unknown header {unknown[0]}; the LLM headers are "
                + ", ".join(h for k, h in _LLM_FIELDS.items() if k != "client")
                + ".",
                details={"header": unknown[0]},
            )
        return None
    try:
        config = InstanceConfig.parse(**llm)
    except InvalidConfig as exc:
        header = _LLM_FIELDS.get(str(exc.details.get("field")), "X-PowerMem-LLM-*")
        raise InvalidHeader(f"{header}: {exc.message}", details={"header": header}) from None
    record, created = await registry.resolve(config, source=source, implicit=True)
    return Binding(record, created)
