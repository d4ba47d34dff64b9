"""Instance configurations, their ids, masking, and reading them from request headers."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from multidict import CIMultiDict

from gateway.errors import InvalidConfig, InvalidHeader, UnknownInstance
from gateway.instances.model import InstanceConfig, candidate_id, config_digest, mask_key
from gateway.instances.registry import Registry
from gateway.settings import Settings
from tests.binding import bind_request

ID_KEY = bytes(range(32))
BASE = {
    "provider": "openai",
    "model": "gpt-4o-mini",
    "api_key": "sk-test-0123456789abcdef",
    "base_url": "https://api.example.com/v1",
    "client": "cursor",
}
PMEM_ID = re.compile(r"^pmem-[0-9a-f]{16}$")


def derived_id(**fields: str) -> str:
    return candidate_id(config_digest(ID_KEY, InstanceConfig.parse(**(BASE | fields))))


def llm_headers(**fields: str) -> CIMultiDict[str]:
    values = BASE | fields
    return CIMultiDict(
        {
            "X-PowerMem-LLM-Provider": values["provider"],
            "X-PowerMem-LLM-Model": values["model"],
            "X-PowerMem-LLM-Api-Key": values["api_key"],
            "X-PowerMem-LLM-Base-Url": values["base_url"],
            "X-PowerMem-Client": values["client"],
        }
    )


# -- ids ------------------------------------------------------------------------------------------


def test_same_configuration_gives_the_same_id() -> None:
    """Two parses of one configuration derive one id."""
    assert derived_id() == derived_id()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("provider", "deepseek"),
        ("model", "gpt-4o"),
        ("api_key", "sk-test-0123456789abcdeX"),
        ("base_url", "https://other.example.com/v1"),
        ("client", "claude-code"),
    ],
)
def test_any_field_change_gives_another_id(field: str, value: str) -> None:
    """Changing any one of the five fields changes the id."""
    assert derived_id(**{field: value}) != derived_id()


def test_id_is_pmem_and_sixteen_lowercase_hex() -> None:
    """A derived id is `pmem-` followed by 16 lowercase hex characters."""
    assert PMEM_ID.match(derived_id())
    assert all(PMEM_ID.match(candidate_id("ab" * 32, n)) for n in range(5))


def test_id_depends_on_the_gateway_secret() -> None:
    """The same configuration under another id key gets another id."""
    config = InstanceConfig.parse(**BASE)
    other = candidate_id(config_digest(bytes(32), config))
    assert other != candidate_id(config_digest(ID_KEY, config))


def test_id_reveals_nothing_of_the_key() -> None:
    """Neither the key nor a plain hash of the canonical form shows in the id."""
    import hashlib

    config = InstanceConfig.parse(**BASE)
    instance_id = derived_id()
    assert BASE["api_key"] not in instance_id
    assert hashlib.sha256(config.canonical()).hexdigest()[:16] not in instance_id


def test_later_candidates_differ_from_the_first() -> None:
    """Fallback candidates are distinct from each other and from attempt 0."""
    digest = config_digest(ID_KEY, InstanceConfig.parse(**BASE))
    ids = [candidate_id(digest, n) for n in range(10)]
    assert len(set(ids)) == 10


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ({"provider": " OpenAI "}, {"provider": "openai"}),
        ({"model": "  gpt-4o-mini "}, {"model": "gpt-4o-mini"}),
        ({"base_url": "https://api.example.com/v1/"}, {"base_url": "https://api.example.com/v1"}),
        ({"api_key": " sk-test-0123456789abcdef\t"}, {}),
    ],
)
def test_spelling_variants_normalise_to_one_configuration(
    variant: dict[str, str], expected: dict[str, str]
) -> None:
    """Case, surrounding blanks and a trailing slash do not make a new configuration."""
    config = InstanceConfig.parse(**(BASE | variant))
    assert config == InstanceConfig.parse(**(BASE | expected))
    assert derived_id(**variant) == derived_id()


def test_keyless_provider_may_omit_the_key() -> None:
    """ollama and vllm accept an empty key; an empty key still derives a valid id."""
    config = InstanceConfig.parse(provider="ollama", model="llama3")
    assert config.api_key == ""
    assert config.base_url == ""
    assert PMEM_ID.match(candidate_id(config_digest(ID_KEY, config)))


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"provider": ""}, "provider"),
        ({"provider": "skynet"}, "provider"),
        ({"model": ""}, "model"),
        ({"model": "x" * 257}, "model"),
        ({"model": "gpt\n4"}, "model"),
        ({"api_key": ""}, "api_key"),
        ({"api_key": "sk-\x00nul"}, "api_key"),
        ({"base_url": "ftp://api.example.com"}, "base_url"),
        ({"base_url": "javascript:alert(1)"}, "base_url"),
        ({"base_url": "https://user:pw@api.example.com"}, "base_url"),
        ({"base_url": "https://api.example.com/v1#frag"}, "base_url"),
        ({"base_url": "https://"}, "base_url"),
        ({"client": "has spaces"}, "client"),
        ({"client": 42}, "client"),
        ({"provider": "azure", "base_url": ""}, "base_url"),
    ],
)
def test_invalid_configuration_names_the_field(fields: dict[str, Any], field: str) -> None:
    """Every invalid configuration raises `InvalidConfig` whose details name the field."""
    with pytest.raises(InvalidConfig) as caught:
        InstanceConfig.parse(**(BASE | fields))
    assert caught.value.details["field"] == field
    assert field.split("_")[0] in caught.value.message


def test_config_repr_hides_the_key() -> None:
    """The plaintext key does not show in a configuration's repr."""
    assert BASE["api_key"] not in repr(InstanceConfig.parse(**BASE))


# -- masking --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "masked"),
    [
        ("", ""),
        ("short", "…"),
        ("12345678", "…"),
        ("sk-abcdef123", "sk…23"),
        ("sk-abcdefghijklmnopqrstuvwxb12x", "sk-a…b12x"),
    ],
)
def test_mask_shows_only_the_ends_of_long_keys(key: str, masked: str) -> None:
    """Long keys show four characters each side, short ones two, tiny ones none."""
    assert mask_key(key) == masked


def test_public_view_is_masked() -> None:
    """A configuration's public view carries the masked key only."""
    public = InstanceConfig.parse(**BASE).public()
    assert public["api_key"] == "sk-t…cdef"
    assert BASE["api_key"] not in str(public)


# -- header parsing -------------------------------------------------------------------------------


async def test_no_powermem_headers_means_unbound(registry: Registry) -> None:
    """A request without instance or LLM headers is not bound (fallback)."""
    assert await bind_request(CIMultiDict({"Accept": "*/*"}), registry) is None


async def test_client_label_alone_means_unbound(registry: Registry) -> None:
    """`X-PowerMem-Client` without LLM headers does not make an instance."""
    assert await bind_request(CIMultiDict({"X-PowerMem-Client": "cursor"}), registry) is None
    assert await registry.list() == []


async def test_llm_headers_create_then_find_one_instance(registry: Registry) -> None:
    """The first request with LLM headers creates the instance; the next one finds it."""
    first = await bind_request(llm_headers(), registry)
    second = await bind_request(llm_headers(), registry)
    assert first is not None and second is not None
    assert first.created and not second.created
    assert first.record.instance_id == second.record.instance_id
    assert PMEM_ID.match(first.record.instance_id)
    assert first.response_headers() == {
        "X-PowerMem-Instance": first.record.instance_id,
        "X-PowerMem-Instance-Created": "true",
    }
    assert second.response_headers() == {"X-PowerMem-Instance": first.record.instance_id}


async def test_header_names_are_case_insensitive(registry: Registry) -> None:
    """Lower-case header names bind to the same instance as canonical ones."""
    first = await bind_request(llm_headers(), registry)
    lower = CIMultiDict({k.lower(): v for k, v in llm_headers().items()})
    second = await bind_request(lower, registry)
    assert first is not None and second is not None
    assert first.record.instance_id == second.record.instance_id


async def test_instance_header_wins_over_llm_headers(registry: Registry) -> None:
    """With both an instance id and LLM headers, the named instance is used."""
    named = await bind_request(llm_headers(), registry)
    assert named is not None
    headers = llm_headers(model="another-model")
    headers["X-PowerMem-Instance"] = named.record.instance_id
    bound = await bind_request(headers, registry)
    assert bound is not None and bound.record.instance_id == named.record.instance_id
    assert len(await registry.list()) == 1


async def test_unknown_instance_header_is_refused(registry: Registry) -> None:
    """An id nobody registered raises `UnknownInstance` naming it."""
    with pytest.raises(UnknownInstance) as caught:
        await bind_request(CIMultiDict({"X-PowerMem-Instance": "pmem-0000000000000000"}), registry)
    assert "pmem-0000000000000000" in caught.value.message


@pytest.mark.parametrize(
    ("mutate", "header"),
    [
        (lambda h: h.pop("X-PowerMem-LLM-Model"), "X-PowerMem-LLM-Model"),
        (lambda h: h.pop("X-PowerMem-LLM-Provider"), "X-PowerMem-LLM-Provider"),
        (lambda h: h.pop("X-PowerMem-LLM-Api-Key"), "X-PowerMem-LLM-Api-Key"),
        (lambda h: h.__setitem__("X-PowerMem-LLM-Provider", "skynet"), "X-PowerMem-LLM-Provider"),
        (
            lambda h: h.__setitem__("X-PowerMem-LLM-Base-Url", "file:///etc"),
            "X-PowerMem-LLM-Base-Url",
        ),
        (lambda h: h.__setitem__("X-PowerMem-LLM-Model", "m" * 9000), "X-PowerMem-LLM-Model"),
        (lambda h: h.__setitem__("X-PowerMem-LLM-Api-Key", "sk-\udcff"), "X-PowerMem-LLM-Api-Key"),
        (lambda h: h.__setitem__("X-PowerMem-Instance", "not an id!"), "X-PowerMem-Instance"),
        (lambda h: h.__setitem__("X-PowerMem-Instance", "x" * 9000), "X-PowerMem-Instance"),
        (lambda h: h.__setitem__("X-PowerMem-Client", "two words"), "X-PowerMem-Client"),
    ],
)
async def test_bad_headers_name_the_offending_header(
    registry: Registry, mutate: Callable[[CIMultiDict[str]], object], header: str
) -> None:
    """Incomplete, invalid, oversized or undecodable headers raise `InvalidHeader` naming one."""
    headers = llm_headers()
    mutate(headers)
    with pytest.raises(InvalidHeader) as caught:
        await bind_request(headers, registry)
    assert caught.value.details["header"] == header
    assert header in caught.value.message
    assert await registry.list() == []


async def test_unknown_llm_header_alone_is_refused(registry: Registry) -> None:
    """A misspelt `X-PowerMem-LLM-*` header is an error, not a silent fallback."""
    with pytest.raises(InvalidHeader) as caught:
        await bind_request(CIMultiDict({"X-PowerMem-LLM-Modle": "gpt-4o"}), registry)
    assert "x-powermem-llm-modle" in caught.value.message.lower()


async def test_ids_are_stable_across_a_registry_reopen(
    make_settings: Callable[..., Settings],
) -> None:
    """The same headers bind to the same id after the registry is closed and reopened."""
    first = await Registry.open(make_settings())
    try:
        before = await bind_request(llm_headers(), first)
    finally:
        await first.close()
    second = await Registry.open(make_settings())
    try:
        after = await bind_request(llm_headers(), second)
    finally:
        await second.close()
    assert before is not None and after is not None
    assert before.record.instance_id == after.record.instance_id
    assert before.created and not after.created
