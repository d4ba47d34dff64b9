"""LLM headers are parsed and fingerprinted once per process, in a bounded table.

As a flood of distinct or broken header sets would test it: nothing invalid is remembered,
the table never passes its bound, and two header sets differing only in their key never share
a fingerprint (so never an instance).
"""

from __future__ import annotations

import pytest

from gateway.errors import InvalidConfig
from gateway.instances.model import InstanceConfig, config_digest
from gateway.instances.parsed import ParsedConfigs

ID_KEY = b"k" * 32


def _digest(config: InstanceConfig) -> str:
    return config_digest(ID_KEY, config)


def test_the_same_headers_give_the_same_config_and_digest_as_a_fresh_parse() -> None:
    parsed = ParsedConfigs(_digest)
    fields = (" OpenAI ", "gpt-4o-mini", "sk-parsed-0123456789abcdef", None, "cursor")
    config, digest = parsed.get(fields)
    again = parsed.get(fields)
    fresh = InstanceConfig.parse(
        provider=" OpenAI ",
        model="gpt-4o-mini",
        api_key="sk-parsed-0123456789abcdef",
        client="cursor",
    )
    assert again == (config, digest)
    assert config == fresh and digest == _digest(fresh)
    assert len(parsed) == 1


def test_keys_that_differ_in_one_character_never_share_a_digest() -> None:
    parsed = ParsedConfigs(_digest)
    a = parsed.get(("openai", "m", "sk-parsed-0123456789abcdeA", None, None))
    b = parsed.get(("openai", "m", "sk-parsed-0123456789abcdeB", None, None))
    assert a[1] != b[1]
    assert a[0].api_key != b[0].api_key


def test_headers_that_do_not_parse_are_refused_every_time_and_never_remembered() -> None:
    parsed = ParsedConfigs(_digest)
    bad = ("no-such-provider", "m", "sk-parsed-0123456789abcdef", None, None)
    for _ in range(3):
        with pytest.raises(InvalidConfig):
            parsed.get(bad)
    with pytest.raises(InvalidConfig):
        parsed.get(("openai", "m", "sk-x", "file:///etc/passwd", None))
    assert len(parsed) == 0


def test_a_flood_of_distinct_headers_stays_within_the_bound() -> None:
    parsed = ParsedConfigs(_digest, limit=8)
    for n in range(100):
        parsed.get(("openai", "m", f"sk-parsed-{n:06d}-abcdefgh", None, None))
    assert len(parsed) == 8
    # The newest are kept, the oldest went first; either way the answer is the same.
    last = ("openai", "m", "sk-parsed-000099-abcdefgh", None, None)
    first = ("openai", "m", "sk-parsed-000000-abcdefgh", None, None)
    assert parsed.get(first)[1] == _digest(InstanceConfig.parse(**_named(first)))
    assert parsed.get(last)[1] == _digest(InstanceConfig.parse(**_named(last)))
    assert len(parsed) == 8


def _named(fields: tuple[str | None, ...]) -> dict[str, str | None]:
    return dict(zip(("provider", "model", "api_key", "base_url", "client"), fields, strict=True))
