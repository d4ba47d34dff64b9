"""The fields of an instance configuration, each declared once: type, limits, pattern, wording.

`InstanceConfig` (the registration body) and `InstanceUpdate` (the update body) are built from
these, so the two can never disagree, and the OpenAPI schemas generated from them say exactly
what is enforced. Patterns use escapes only, so pydantic's regex engine, Python's `re` and
ECMA-262 (what OpenAPI tools use) read them the same way.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from gateway.providers import PROVIDERS, provider_names
from gateway.validation import Hint

__all__ = [
    "BASE_URL_PATTERN",
    "CLIENT_PATTERN",
    "CONFIG_FIELDS",
    "CONFIG_HINTS",
    "INSTANCE_ID_PATTERN",
    "INSTANCE_ID_RE",
    "TEXT_PATTERN",
    "ApiKey",
    "BaseUrl",
    "ClientLabel",
    "ModelName",
    "ProviderName",
]

# Derived ids are `pmem-` + 16 hex; ids written by hand in instances.yaml may be any short slug.
INSTANCE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
INSTANCE_ID_RE = re.compile(INSTANCE_ID_PATTERN)
CLIENT_PATTERN = r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,63})?$"
MAX_MODEL_LEN = 256
MAX_KEY_LEN = 4096
MAX_URL_LEN = 2048
CONFIG_FIELDS = ("client", "provider", "model", "api_key", "base_url")

# Printable text with no blank at either end: no control character (C0, DEL, C1) and no line
# or paragraph separator anywhere, no space or no-break space at the ends.
_EDGE = r"[^\x00-\x20\x7f-\xa0\u2028\u2029]"
_INNER = r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]"
TEXT_PATTERN = rf"^(?:{_EDGE}(?:{_INNER}*{_EDGE})?)?$"


# http(s)://host[:port][/path]: no credentials, no ?query (the relay appends its own path,
# and `?key=` would put a key where keys are not protected), no #fragment, no blanks. The
# host is a name (letters, digits, '-', '.', '_'; IDNs in punycode), a dotted IPv4 address,
# or an IPv6 address in brackets exactly as RFC 3986 spells one; the port at most 65535.
def _ipv6_pattern() -> str:
    h16, octet = "[0-9A-Fa-f]{1,4}", "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
    ls32 = rf"(?:{h16}:{h16}|{octet}(?:\.{octet}){{3}})"
    forms = [
        rf"(?:{h16}:){{6}}{ls32}",
        rf"::(?:{h16}:){{5}}{ls32}",
        rf"(?:{h16})?::(?:{h16}:){{4}}{ls32}",
    ]
    forms += [rf"(?:(?:{h16}:){{0,{n}}}{h16})?::(?:{h16}:){{{3 - n}}}{ls32}" for n in range(1, 3)]
    forms += [
        rf"(?:(?:{h16}:){{0,3}}{h16})?::{h16}:{ls32}",
        rf"(?:(?:{h16}:){{0,4}}{h16})?::{ls32}",
        rf"(?:(?:{h16}:){{0,5}}{h16})?::{h16}",
        rf"(?:(?:{h16}:){{0,6}}{h16})?::",
    ]
    return "(?:" + "|".join(forms) + ")"


_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
_HOST = rf"(?:{_NAME}|\[{_ipv6_pattern()}\])"
BASE_URL_PATTERN = (
    rf"^(?:[Hh][Tt][Tt][Pp][Ss]?://{_HOST}(?::{_PORT})?(?:/[^\x00-\x20\x7f-\xa0?#\\]*)?)?$"
)


def _provider(value: str) -> str:
    if value not in PROVIDERS:
        raise PydanticCustomError(
            "unknown_provider",
            "unknown provider; use one of: {allowed}.",
            {"allowed": ", ".join(provider_names())},
        )
    return value


def _canonical_url(value: str) -> str:
    # One canonical spelling, so `…/v1` and `…/v1/` are the same configuration.
    return value.rstrip("/")


ProviderName = Annotated[
    str,
    Field(
        min_length=1, json_schema_extra={"enum": provider_names()}, description="The LLM provider."
    ),
    AfterValidator(_provider),
]
ClientLabel = Annotated[
    str,
    Field(pattern=CLIENT_PATTERN, description="A short label such as claude-code; may be empty."),
]
BaseUrl = Annotated[
    str,
    Field(
        max_length=MAX_URL_LEN,
        pattern=BASE_URL_PATTERN,
        description="The provider's http(s) base URL; empty for the provider's default.",
    ),
    AfterValidator(_canonical_url),
]
ModelName = Annotated[str, Field(min_length=1, max_length=MAX_MODEL_LEN, pattern=TEXT_PATTERN)]
ApiKey = Annotated[
    str,
    Field(
        max_length=MAX_KEY_LEN,
        pattern=TEXT_PATTERN,
        repr=False,
        description="Sent once, stored encrypted, never shown again (responses show it masked).",
    ),
]


def _explain_base_url(value: object) -> str:
    """Why a base URL failed its pattern, most specific reason first (never quoting it)."""
    if not isinstance(value, str):
        return "base_url must be a string."
    if len(value) > MAX_URL_LEN:
        return f"base_url is longer than {MAX_URL_LEN} characters."
    scheme, _, rest = value.partition("://")
    authority = rest.partition("/")[0]
    if scheme.lower() in ("http", "https") and authority:
        if "@" in authority:
            return "base_url must not carry credentials; send the key as api_key."
        if "?" in value:
            return "base_url must not have a ?query; send the key as api_key."
        if "#" in value:
            return "base_url must not have a #fragment."
        if authority.startswith("["):
            return "base_url: a host in [brackets] must be an IPv6 address."
    return (
        "base_url must be an http:// or https:// URL with a host name or address (and a port "
        "up to 65535), without blanks, e.g. https://api.example.com/v1."
    )


CONFIG_HINTS: dict[str, Hint] = {
    "model": f"model must be printable and at most {MAX_MODEL_LEN} characters, "
    "with no blank at either end.",
    "api_key": f"api_key must be printable and at most {MAX_KEY_LEN} characters, "
    "with no blank at either end.",
    "client": "client must be a short label of letters, digits, '.', '_' or '-' "
    "(at most 64), e.g. claude-code.",
    "base_url": _explain_base_url,
}
