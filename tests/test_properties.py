"""Property tests: header parsing, canonical ids, masking, redaction, SSE and the Anthropic
translation hold for every input hypothesis can think of, not just the ones we wrote down."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import string
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from gateway.errors import GatewayError, InvalidConfig
from gateway.instances.model import InstanceConfig, candidate_id, config_digest, mask_key
from gateway.instances.registry import Registry
from gateway.observe.logs import redact
from gateway.providers import provider_names
from gateway.proxy.baggage import baggage_header, instance_from_baggage
from gateway.proxy.binding import Binding
from gateway.relay.anthropic import (
    StreamTranslator,
    from_anthropic_response,
    to_anthropic_request,
)
from gateway.relay.sse import SSEParser, format_sse
from gateway.settings import Settings
from tests.binding import bind_request

# Any text at all, lone surrogates included (aiohttp keeps undecodable header bytes that way).
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
WORD = st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=20)
KEY = st.text(string.ascii_letters + string.digits + "-_", min_size=0, max_size=60)
HEADER_NAMES = [
    "X-PowerMem-Instance",
    "X-PowerMem-LLM-Provider",
    "X-PowerMem-LLM-Model",
    "X-PowerMem-LLM-Api-Key",
    "X-PowerMem-LLM-Base-Url",
    "X-PowerMem-Client",
    "X-PowerMem-LLM-Colour",
    "Content-Type",
]


def _header_value(name: str) -> st.SearchStrategy[str]:
    plausible = {
        "X-PowerMem-LLM-Provider": st.sampled_from([*provider_names(), "OpenAI ", "skynet"]),
        "X-PowerMem-Instance": st.sampled_from(["pmem-0123456789abcdef", "pmem-x", "../etc"]),
        "X-PowerMem-LLM-Base-Url": st.sampled_from(
            ["http://127.0.0.1:9/v1", "https://api.example.com/v1/", "ftp://x", "http://u:p@h"]
        ),
    }.get(name)
    return st.one_of(ANY_TEXT, plausible) if plausible is not None else ANY_TEXT


HEADERS = st.lists(
    st.sampled_from(HEADER_NAMES).flatmap(lambda n: st.tuples(st.just(n), _header_value(n))),
    max_size=6,
)


def test_header_parsing_fails_only_with_gateway_errors(tmp_path: Path) -> None:
    """Arbitrary X-PowerMem-* headers bind, fall back, or raise a GatewayError; nothing else."""
    loop = asyncio.new_event_loop()
    settings_ = Settings(data_dir=tmp_path / "data", instances_file=tmp_path / "instances.yaml")
    registry = loop.run_until_complete(Registry.open(settings_))
    try:

        @settings(max_examples=300)
        @given(HEADERS)
        def check(pairs: list[tuple[str, str]]) -> None:
            headers = CIMultiDict(pairs)
            try:
                result = loop.run_until_complete(bind_request(headers, registry))
            except GatewayError as exc:
                assert 400 <= exc.status < 500, exc
                return
            assert result is None or isinstance(result, Binding)

        check()
    finally:
        loop.run_until_complete(registry.close())
        loop.close()


def _config_fields() -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries(
        {
            "provider": st.sampled_from(provider_names()),
            "model": WORD,
            "api_key": st.text(string.ascii_letters + string.digits, min_size=1, max_size=40),
            "base_url": st.sampled_from(
                ["", "http://127.0.0.1:8000/v1", "https://api.example.com/v1"]
            ),
            "client": st.sampled_from(["", "claude-code", "cursor"]),
        }
    )


def _parse(fields: dict[str, str]) -> InstanceConfig | None:
    try:
        return InstanceConfig.parse(**fields)
    except InvalidConfig:
        return None


@settings(max_examples=200)
@given(_config_fields(), st.sampled_from(["", " ", "\t"]), st.sampled_from(["", "/"]))
def test_equal_configurations_get_equal_ids(fields: dict[str, str], pad: str, slash: str) -> None:
    """Spelling variants of one configuration (case, padding, trailing /) share one id."""
    config = _parse(fields)
    if config is None:
        return
    variant = {
        "provider": pad + fields["provider"].upper() + pad,
        "model": pad + fields["model"] + pad,
        "api_key": pad + fields["api_key"] + pad,
        "base_url": fields["base_url"] + slash if fields["base_url"] else "",
        "client": fields["client"],
    }
    other = InstanceConfig.parse(**variant)
    key = b"k" * 32
    assert other == config
    assert candidate_id(config_digest(key, config)) == candidate_id(config_digest(key, other))


@settings(max_examples=200)
@given(_config_fields(), _config_fields())
def test_ids_are_well_formed_and_differ_for_different_configurations(
    a_fields: dict[str, str], b_fields: dict[str, str]
) -> None:
    """Ids are pmem- and 16 hex; normalising is idempotent; different configs, different ids."""
    a, b = _parse(a_fields), _parse(b_fields)
    key = b"\x01" * 32
    for config in (a, b):
        if config is None:
            continue
        again = InstanceConfig.parse(
            provider=config.provider,
            model=config.model,
            api_key=config.api_key,
            base_url=config.base_url,
            client=config.client,
        )
        assert again == config
        for attempt in (0, 1, 7):
            assert re.fullmatch(
                r"pmem-[0-9a-f]{16}", candidate_id(config_digest(key, config), attempt)
            )
    if a is not None and b is not None and a != b:
        assert config_digest(key, a) != config_digest(key, b)


@settings(max_examples=300)
@given(st.text(st.characters(codec="utf-8"), max_size=80))
def test_a_masked_key_shows_at_most_eight_characters(key: str) -> None:
    """A mask keeps at most eight characters of the key and never the whole of a long one."""
    masked = mask_key(key)
    shown = masked.replace("…", "")
    assert len(shown) <= 8
    if len(key) > 8:
        assert key not in masked
    if len(key) >= 16:
        assert key[4:-4] not in masked


@settings(max_examples=300)
@given(
    st.sampled_from(["sk-", "sk-ant-", "pgr-", "Bearer "]),
    st.text(string.ascii_letters + string.digits + "_-", min_size=12, max_size=60),
    ANY_TEXT,
    ANY_TEXT,
)
def test_redaction_hides_every_key_shaped_secret(
    prefix: str, body: str, before: str, after: str
) -> None:
    """A key or bearer token anywhere in a log line is masked, and masking twice changes nothing."""
    secret = prefix + body
    line = f"{before} {secret} {after}"
    once = redact(line)
    assert body not in once.replace(before, "").replace(after, "")
    assert redact(once) == once


@settings(max_examples=300)
@given(st.lists(ANY_TEXT, max_size=4))
def test_baggage_parsing_never_crashes(values: list[str]) -> None:
    """Any baggage header gives an instance id or None."""
    found = instance_from_baggage(values)
    assert found is None or isinstance(found, str)


@settings(max_examples=100)
@given(st.sampled_from(["pmem-0123456789abcdef", "pmem-yaml", "probe-00ff"]), ANY_TEXT)
def test_baggage_member_survives_other_members(instance_id: str, other: str) -> None:
    """Our member is found whatever other members precede it."""
    other = other.replace(",", "").replace("=", "")
    header = f"{other.strip() or 'k'}=v,{baggage_header(instance_id)}"
    assert instance_from_baggage([header]) == instance_id


EVENT_DATA = st.text(st.characters(codec="utf-8", exclude_characters="\r"), min_size=1, max_size=30)


@settings(max_examples=200)
@given(st.lists(EVENT_DATA, min_size=1, max_size=5), st.data())
def test_sse_events_survive_any_chunking(events: list[str], data: st.DataObject) -> None:
    """However the bytes are cut, the parser gives back exactly the events that were written."""
    wire = b"".join(format_sse(e) for e in events)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    parser, seen = SSEParser(), []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        seen += [e.data for e in parser.feed(wire[start:end])]
    assert seen == events


# -- the Anthropic translation ---------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30)
CALL_ID = st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=12)
ARGS = st.dictionaries(WORD, st.one_of(st.integers(), TEXT, st.booleans()), max_size=3)


@st.composite
def _tool_call(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "id": "call_" + draw(CALL_ID),
        "type": "function",
        "function": {"name": draw(WORD), "arguments": json.dumps(draw(ARGS))},
    }


@st.composite
def _message(draw: st.DrawFn) -> dict[str, Any]:
    role = draw(st.sampled_from(["system", "user", "assistant", "tool"]))
    if role == "assistant":
        calls = draw(st.lists(_tool_call(), max_size=2))
        message: dict[str, Any] = {"role": role, "content": draw(st.one_of(st.none(), TEXT))}
        if calls:
            message["tool_calls"] = calls
        return message
    if role == "tool":
        return {"role": role, "tool_call_id": "call_" + draw(CALL_ID), "content": draw(TEXT)}
    content = draw(st.one_of(TEXT, st.lists(TEXT, min_size=1, max_size=2)))
    if isinstance(content, list):
        content = [{"type": "text", "text": t} for t in content]
    return {"role": role, "content": content}


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [part["text"] for part in content or []]


@settings(max_examples=200)
@given(st.lists(_message(), min_size=1, max_size=8))
def test_every_message_and_tool_call_reaches_the_anthropic_request(
    messages: list[dict[str, Any]],
) -> None:
    """Each text, tool call (id, name, arguments) and tool result survives, roles alternate."""
    out = to_anthropic_request({"messages": messages}, model="claude")
    turns = out["messages"]
    assert all(a["role"] != b["role"] for a, b in itertools.pairwise(turns))
    blocks = [block for turn in turns for block in turn["content"]]
    texts = [b["text"] for b in blocks if b["type"] == "text"]
    uses = [(b["id"], b["name"], b["input"]) for b in blocks if b["type"] == "tool_use"]
    results = [(b["tool_use_id"], b.get("content")) for b in blocks if b["type"] == "tool_result"]
    system = out.get("system", "")
    for message in messages:
        if message["role"] == "system":
            for text in _texts(message["content"]):
                assert text in system
        elif message["role"] == "tool":
            assert (message["tool_call_id"], message["content"]) in results
        else:
            for text in _texts(message.get("content")):
                assert text in texts
            for call in message.get("tool_calls", []):
                function = call["function"]
                expected = (call["id"], function["name"], json.loads(function["arguments"]))
                assert expected in uses


@st.composite
def _anthropic_answer(draw: st.DrawFn) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            blocks.append({"type": "text", "text": draw(TEXT)})
        else:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": "toolu_" + draw(CALL_ID),
                    "name": draw(WORD),
                    "input": draw(ARGS),
                }
            )
    return blocks


def _expected(blocks: list[dict[str, Any]]) -> tuple[str, list[tuple[str, str, Any]]]:
    text = "".join(b["text"] for b in blocks if b["type"] == "text")
    calls = [(b["id"], b["name"], b["input"]) for b in blocks if b["type"] == "tool_use"]
    return text, calls


@settings(max_examples=200)
@given(_anthropic_answer())
def test_an_anthropic_answer_keeps_its_text_and_tool_calls(blocks: list[dict[str, Any]]) -> None:
    """Text and tool calls of an Anthropic message come back intact in OpenAI's shape."""
    answer = {"id": "msg_1", "content": blocks, "stop_reason": "end_turn", "usage": {}}
    out = from_anthropic_response(answer, model="claude", json_mode=False)
    message = out["choices"][0]["message"]
    text, calls = _expected(blocks)
    assert (message["content"] or "") == text
    got = [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in message.get("tool_calls", [])
    ]
    assert got == calls


@settings(max_examples=200)
@given(_anthropic_answer(), st.integers(1, 5))
def test_a_streamed_anthropic_answer_reassembles_to_the_same_message(
    blocks: list[dict[str, Any]], piece: int
) -> None:
    """Streamed in pieces of any size, the OpenAI chunks add up to the same text and calls."""
    translator = StreamTranslator(model="claude")
    wire = translator.feed("message_start", {"type": "message_start", "message": {"id": "m"}})
    for index, block in enumerate(blocks):
        start = {**block, "text": ""} if block["type"] == "text" else {**block, "input": {}}
        wire += translator.feed(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
        )
        payload = block["text"] if block["type"] == "text" else json.dumps(block["input"])
        for at in range(0, len(payload), piece):
            fragment = payload[at : at + piece]
            delta = (
                {"type": "text_delta", "text": fragment}
                if block["type"] == "text"
                else {"type": "input_json_delta", "partial_json": fragment}
            )
            wire += translator.feed(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        wire += translator.feed(
            "content_block_stop", {"type": "content_block_stop", "index": index}
        )
    wire += translator.feed("message_stop", {"type": "message_stop"})
    wire += translator.finish()
    assert translator.complete
    text, calls = "", {}
    for event in SSEParser().feed(wire):
        if event.data == "[DONE]":
            continue
        for choice in json.loads(event.data)["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            for call in delta.get("tool_calls", []):
                entry = calls.setdefault(call["index"], {"id": None, "name": None, "args": ""})
                entry["id"] = call.get("id") or entry["id"]
                function = call.get("function", {})
                entry["name"] = function.get("name") or entry["name"]
                entry["args"] += function.get("arguments") or ""
    expected_text, expected_calls = _expected(blocks)
    assert text == expected_text
    got = [(c["id"], c["name"], json.loads(c["args"])) for _, c in sorted(calls.items())]
    assert got == expected_calls
