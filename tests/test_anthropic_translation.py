"""OpenAI Chat Completions ⇄ Anthropic Messages translation, pinned by recorded wire examples."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import InvalidBody
from gateway.relay.anthropic import (
    DEFAULT_MAX_TOKENS,
    DONE,
    StreamTranslator,
    from_anthropic_error,
    from_anthropic_response,
    json_mode_requested,
    openai_error,
    stream_usage_requested,
    strip_json_fences,
    to_anthropic_request,
)
from gateway.relay.sse import SSEEvent, SSEParser

WIRE = Path(__file__).parent / "wire"
MODEL = "claude-sonnet-4-5"
CREATED = 1700000000


def wire_json(name: str) -> Any:
    return json.loads((WIRE / name).read_text(encoding="utf-8"))


def translate(body: dict[str, Any]) -> dict[str, Any]:
    return to_anthropic_request(body, model=MODEL)


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def function_tool(name: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if parameters is not None:
        function["parameters"] = parameters
    return {"type": "function", "function": function}


def anthropic_message(
    content: list[dict[str, Any]], stop_reason: str = "end_turn"
) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": content,
        "stop_reason": stop_reason,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }


def stream(*events: dict[str, Any], include_usage: bool = False) -> tuple[bytes, StreamTranslator]:
    translator = StreamTranslator(model=MODEL, include_usage=include_usage, created=CREATED)
    out = b"".join(translator.feed(str(event["type"]), event) for event in events)
    return out + translator.finish(), translator


def chunks(raw: bytes) -> list[Any]:
    """The JSON payloads of an OpenAI stream, `[DONE]` left as the string."""
    events = SSEParser().feed(raw)
    return [event.data if event.data == "[DONE]" else json.loads(event.data) for event in events]


START = {
    "type": "message_start",
    "message": {"id": "msg_s", "usage": {"input_tokens": 7, "output_tokens": 1}},
}
STOP = {"type": "message_stop"}


def tool_block(index: int, tool_id: str, name: str) -> dict[str, Any]:
    return {
        "type": "content_block_start",
        "index": index,
        "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}},
    }


def end(stop_reason: str, output_tokens: int = 3) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    }


# --- requests -------------------------------------------------------------------------------


def test_recorded_request_with_system_tools_and_results_translates_exactly() -> None:
    """The recorded OpenAI request becomes exactly the recorded Anthropic request."""
    body = wire_json("openai_request_tools.json")
    assert translate(body) == wire_json("anthropic_request_tools.json")


def test_instance_model_replaces_the_requested_model() -> None:
    """The `model` argument wins over whatever model the caller named."""
    assert translate({"model": "gpt-4o", "messages": [user("hi")]})["model"] == MODEL


def test_unknown_openai_fields_are_dropped() -> None:
    """Fields Anthropic does not know are never forwarded."""
    body = {
        "messages": [user("hi")],
        "seed": 1,
        "user": "u",
        "logit_bias": {},
        "presence_penalty": 1,
        "stream_options": {"include_usage": True},
        "metadata": {"x": "y"},
        "reasoning_effort": "low",
        "n": 1,
    }
    assert set(translate(body)) == {"model", "max_tokens", "messages"}


def test_system_and_developer_messages_become_the_system_prompt() -> None:
    """System and developer messages, wherever they appear, are joined into `system`."""
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            user("hi"),
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
        ]
    }
    out = translate(body)
    assert out["system"] == "Be brief.\n\nUse French."
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_text_parts_are_kept_as_text_blocks() -> None:
    """A content-part list keeps each non-empty text part as its own block."""
    parts = [
        {"type": "text", "text": "a"},
        {"type": "text", "text": ""},
        {"type": "text", "text": "b"},
    ]
    assert translate({"messages": [user(parts)]})["messages"][0]["content"] == [
        {"type": "text", "text": "a"},
        {"type": "text", "text": "b"},
    ]


def test_data_url_image_becomes_a_base64_image_block() -> None:
    """A base64 data: URL is split into media type and data."""
    part = {
        "type": "image_url",
        "image_url": {"url": "data:image/jpeg;base64,/9j/AAA=", "detail": "low"},
    }
    block = translate({"messages": [user([part])]})["messages"][0]["content"][0]
    assert block == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/AAA="},
    }


def test_percent_encoded_data_url_is_re_encoded_as_base64() -> None:
    """A data: URL without `;base64` is re-encoded, as Anthropic only takes base64."""
    part = {"type": "image_url", "image_url": {"url": "data:image/svg+xml,%3Csvg%2F%3E"}}
    source = translate({"messages": [user([part])]})["messages"][0]["content"][0]["source"]
    assert source == {"type": "base64", "media_type": "image/svg+xml", "data": "PHN2Zy8+"}


def test_http_image_becomes_a_url_image_block() -> None:
    """An http(s) image URL is passed by reference."""
    part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    block = translate({"messages": [user([part])]})["messages"][0]["content"][0]
    assert block == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.png"},
    }


def test_unsupported_content_part_is_refused() -> None:
    """A part Anthropic cannot take (audio) is a clear 400, not silently dropped."""
    part = {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}
    with pytest.raises(InvalidBody, match="input_audio"):
        translate({"messages": [user([part])]})


def test_image_with_another_scheme_is_refused() -> None:
    """Only http(s) and data: image URLs can be translated."""
    part = {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}
    with pytest.raises(InvalidBody, match="image URL"):
        translate({"messages": [user([part])]})


def test_tool_call_arguments_are_decoded_into_tool_input() -> None:
    """JSON arguments become the tool_use `input` object."""
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [call("c1", "f", '{"a": [1, 2]}')],
    }
    blocks = translate({"messages": [user("go"), message]})["messages"][1]["content"]
    assert blocks == [{"type": "tool_use", "id": "c1", "name": "f", "input": {"a": [1, 2]}}]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ("", {}),
        ('{"a": ', {"raw_arguments": '{"a": '}),
        ("[1, 2]", {"raw_arguments": "[1, 2]"}),
        ("not json", {"raw_arguments": "not json"}),
    ],
)
def test_unusable_tool_arguments_are_wrapped_not_lost(arguments: str, expected: Any) -> None:
    """Empty arguments mean no input; invalid or non-object JSON is kept verbatim in a wrapper."""
    message = {"role": "assistant", "tool_calls": [call("c1", "f", arguments)]}
    block = translate({"messages": [user("go"), message]})["messages"][1]["content"][0]
    assert block["input"] == expected


def test_tool_call_without_id_is_refused() -> None:
    """A tool call without an id could never be matched to its result, so it is a 400."""
    message = {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}
    with pytest.raises(InvalidBody, match="'id'"):
        translate({"messages": [user("go"), message]})


def test_consecutive_tool_results_share_one_user_turn() -> None:
    """Tool results (and a user message after them) merge into a single user turn."""
    body = {
        "messages": [
            user("go"),
            {"role": "assistant", "tool_calls": [call("a", "f", "{}"), call("b", "f", "{}")]},
            {"role": "tool", "tool_call_id": "a", "content": "one"},
            {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "two"}]},
        ]
    }
    messages = translate(body)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "a", "content": "one"},
        {"type": "tool_result", "tool_use_id": "b", "content": [{"type": "text", "text": "two"}]},
    ]


def test_empty_tool_result_carries_no_content() -> None:
    """An empty tool output is sent as a tool_result without content, which Anthropic accepts."""
    body = {
        "messages": [
            user("go"),
            {"role": "assistant", "tool_calls": [call("a", "f", "{}")]},
            {"role": "tool", "tool_call_id": "a", "content": ""},
        ]
    }
    assert translate(body)["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "a"}
    ]


def test_tool_message_without_call_id_is_refused() -> None:
    """A tool result must say which call it answers."""
    with pytest.raises(InvalidBody, match="tool_call_id"):
        translate({"messages": [user("go"), {"role": "tool", "content": "x"}]})


def test_consecutive_same_role_messages_are_merged() -> None:
    """Anthropic requires alternation, so back-to-back user or assistant messages merge."""
    body = {
        "messages": [
            user("a"),
            user("b"),
            {"role": "assistant", "content": "c"},
            {"role": "assistant", "content": "d"},
            user("e"),
        ]
    }
    messages = translate(body)["messages"]
    assert messages == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "c"}, {"type": "text", "text": "d"}],
        },
        {"role": "user", "content": [{"type": "text", "text": "e"}]},
    ]


def test_empty_messages_are_skipped_and_neighbours_merge() -> None:
    """A message with no content is dropped, and the turns around it then merge."""
    body = {"messages": [user("a"), {"role": "assistant", "content": ""}, user("b")]}
    assert translate(body)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": []},
        {"messages": "hi"},
        {"messages": ["hi"]},
        {"messages": [{"role": "function", "content": "x"}]},
        {"messages": [user(42)]},
        {"messages": [user("hi")], "n": 2},
    ],
)
def test_malformed_requests_are_refused(body: dict[str, Any]) -> None:
    """Requests that cannot be translated faithfully raise InvalidBody."""
    with pytest.raises(InvalidBody):
        translate(body)


def test_max_tokens_defaults_when_absent() -> None:
    """Anthropic requires max_tokens, so an OpenAI request without it gets the default."""
    assert translate({"messages": [user("hi")]})["max_tokens"] == DEFAULT_MAX_TOKENS == 4096


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    """The newer OpenAI field takes precedence over the deprecated one."""
    body = {"messages": [user("hi")], "max_tokens": 10, "max_completion_tokens": 20}
    assert translate(body)["max_tokens"] == 20


@pytest.mark.parametrize("value", [0, -1, 1.5, "100", True])
def test_invalid_max_tokens_is_refused(value: Any) -> None:
    """max_tokens must be a positive integer."""
    with pytest.raises(InvalidBody, match="max_tokens"):
        translate({"messages": [user("hi")], "max_tokens": value})


@pytest.mark.parametrize(("given", "sent"), [(0, 0.0), (0.7, 0.7), (1, 1.0), (1.8, 1.0), (-1, 0.0)])
def test_temperature_is_clamped_to_anthropic_range(given: float, sent: float) -> None:
    """OpenAI's 0..2 temperature is clamped into Anthropic's 0..1."""
    assert translate({"messages": [user("hi")], "temperature": given})["temperature"] == sent


def test_top_p_alone_is_forwarded() -> None:
    """top_p is passed through when it is the only sampling setting."""
    out = translate({"messages": [user("hi")], "top_p": 0.3})
    assert out["top_p"] == 0.3
    assert "temperature" not in out


def test_top_p_is_dropped_when_temperature_is_set() -> None:
    """Recent Claude models refuse both at once, so temperature is kept and top_p dropped."""
    out = translate({"messages": [user("hi")], "temperature": 0.1, "top_p": 0.1})
    assert (out["temperature"], "top_p" in out) == (0.1, False)


def test_non_numeric_temperature_is_refused() -> None:
    """A temperature that is not a number is a 400."""
    with pytest.raises(InvalidBody, match="temperature"):
        translate({"messages": [user("hi")], "temperature": "hot"})


@pytest.mark.parametrize(
    ("stop", "expected"),
    [("END", ["END"]), (["a", "b"], ["a", "b"]), (["x", " ", ""], ["x"]), ([], None)],
)
def test_stop_becomes_stop_sequences(stop: Any, expected: list[str] | None) -> None:
    """`stop` (string or list) becomes `stop_sequences`, without blank entries."""
    out = translate({"messages": [user("hi")], "stop": stop})
    assert out.get("stop_sequences") == expected


def test_stream_flag_is_forwarded() -> None:
    """A streaming request asks Anthropic to stream, without OpenAI's stream_options."""
    body = {"messages": [user("hi")], "stream": True, "stream_options": {"include_usage": True}}
    out = translate(body)
    assert out["stream"] is True
    assert "stream_options" not in out
    assert stream_usage_requested(body)
    assert not stream_usage_requested({"stream": True})


def test_function_tools_become_anthropic_tools() -> None:
    """Function tools map to name/description/input_schema; a bare tool gets an empty schema."""
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    tools = [function_tool("search", schema), function_tool("now")]
    tools[0]["function"]["description"] = "Search the web"
    tools[0]["function"]["strict"] = True
    out = translate({"messages": [user("hi")], "tools": tools})
    assert out["tools"] == [
        {"name": "search", "description": "Search the web", "input_schema": schema},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in out


def test_non_function_tool_is_refused() -> None:
    """Only function tools have an Anthropic equivalent."""
    with pytest.raises(InvalidBody, match=r"tools\[0\]"):
        translate({"messages": [user("hi")], "tools": [{"type": "custom", "custom": {}}]})


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", None),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
    ],
)
def test_tool_choice_variants(choice: Any, expected: dict[str, Any] | None) -> None:
    """Each OpenAI tool_choice maps to its Anthropic form; auto is Anthropic's default."""
    out = translate(
        {"messages": [user("hi")], "tools": [function_tool("f")], "tool_choice": choice}
    )
    assert out.get("tool_choice") == expected
    assert out["tools"][0]["name"] == "f"


def test_parallel_tool_calls_false_disables_parallel_tool_use() -> None:
    """parallel_tool_calls=false becomes disable_parallel_tool_use on the tool choice."""
    body = {
        "messages": [user("hi")],
        "tools": [function_tool("f")],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }
    assert translate(body)["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    del body["tool_choice"]
    assert translate(body)["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_tool_choice_without_tools_is_not_sent() -> None:
    """A tool_choice with no tools to choose from is dropped."""
    out = translate({"messages": [user("hi")], "tool_choice": "required"})
    assert "tool_choice" not in out
    assert "tools" not in out


@pytest.mark.parametrize("choice", ["sometimes", {"type": "function"}, {"type": "allowed_tools"}])
def test_invalid_tool_choice_is_refused(choice: Any) -> None:
    """A tool_choice with no Anthropic meaning is a 400 naming the field."""
    with pytest.raises(InvalidBody, match="tool_choice"):
        translate({"messages": [user("hi")], "tools": [function_tool("f")], "tool_choice": choice})


def test_json_object_mode_adds_a_system_instruction() -> None:
    """json_object mode appends an answer-with-JSON-only instruction after the caller's system."""
    body = {
        "messages": [{"role": "system", "content": "Extract facts."}, user("I like tea")],
        "response_format": {"type": "json_object"},
    }
    system = translate(body)["system"]
    assert system.startswith("Extract facts.\n\n")
    assert "single valid JSON object" in system
    assert "code fences" in system
    assert json_mode_requested(body)


def test_json_schema_mode_includes_the_schema() -> None:
    """json_schema mode puts the caller's schema into the instruction."""
    schema = {"type": "object", "properties": {"facts": {"type": "array"}}, "required": ["facts"]}
    body = {
        "messages": [user("I like tea")],
        "response_format": {"type": "json_schema", "json_schema": {"name": "f", "schema": schema}},
    }
    system = translate(body)["system"]
    assert "single valid JSON object" in system
    assert json.dumps(schema, sort_keys=True) in system
    assert "response_format" not in translate(body)


def test_text_response_format_changes_nothing() -> None:
    """response_format text is OpenAI's default and adds no instruction."""
    body = {"messages": [user("hi")], "response_format": {"type": "text"}}
    assert "system" not in translate(body)
    assert not json_mode_requested(body)


# --- responses ------------------------------------------------------------------------------


def test_recorded_response_with_text_and_tool_use_translates_exactly() -> None:
    """The recorded Anthropic message becomes exactly the recorded chat.completion."""
    out = from_anthropic_response(
        wire_json("anthropic_response_tool_use.json"), model=MODEL, json_mode=False, created=CREATED
    )
    assert out == wire_json("openai_response_tool_use.json")


def test_translated_responses_validate_against_the_openai_sdk() -> None:
    """The official OpenAI SDK parses our chat.completion objects."""
    openai_chat = pytest.importorskip("openai.types.chat")
    resp = wire_json("anthropic_response_tool_use.json")
    parsed = openai_chat.ChatCompletion.model_validate(
        from_anthropic_response(resp, model=MODEL, json_mode=False)
    )
    assert parsed.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_text_only_response_has_no_tool_calls() -> None:
    """Several text blocks are concatenated into the message content."""
    resp = anthropic_message([{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}])
    message = from_anthropic_response(resp, model=MODEL, json_mode=False)["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "Hello", "refusal": None}


def test_tool_only_response_has_null_content() -> None:
    """As in OpenAI, content is null when the answer is only tool calls."""
    block = {"type": "tool_use", "id": "t", "name": "f", "input": {}}
    out = from_anthropic_response(
        anthropic_message([block], "tool_use"), model=MODEL, json_mode=False
    )
    message = out["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}


def test_thinking_blocks_are_not_returned() -> None:
    """Extended-thinking blocks have no Chat Completions form and are left out."""
    blocks = [
        {"type": "thinking", "thinking": "hmm", "signature": "s"},
        {"type": "text", "text": "ok"},
    ]
    out = from_anthropic_response(anthropic_message(blocks), model=MODEL, json_mode=False)
    assert out["choices"][0]["message"]["content"] == "ok"


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("something_new", "stop"),
    ],
)
def test_stop_reason_maps_to_finish_reason(stop_reason: str, finish_reason: str) -> None:
    """Anthropic stop reasons map to OpenAI finish reasons."""
    resp = anthropic_message([{"type": "text", "text": "x"}], stop_reason)
    out = from_anthropic_response(resp, model=MODEL, json_mode=False)
    assert out["choices"][0]["finish_reason"] == finish_reason


def test_usage_counts_cache_tokens_as_prompt() -> None:
    """Cache reads and writes are input the caller sent, so they count as prompt tokens."""
    resp = anthropic_message([{"type": "text", "text": "x"}])
    resp["usage"] = {
        "input_tokens": 3,
        "cache_creation_input_tokens": 4,
        "cache_read_input_tokens": 5,
        "output_tokens": 6,
    }
    usage = from_anthropic_response(resp, model=MODEL, json_mode=False)["usage"]
    assert usage == {
        "prompt_tokens": 12,
        "completion_tokens": 6,
        "total_tokens": 18,
        "prompt_tokens_details": {"cached_tokens": 5},
    }


def test_created_defaults_to_now() -> None:
    """Without an explicit timestamp the response is stamped with the current time."""
    before = int(time.time())
    out = from_anthropic_response(anthropic_message([]), model=MODEL, json_mode=False)
    assert before <= out["created"] <= int(time.time())
    assert out["choices"][0]["message"]["content"] == ""


def test_json_mode_strips_code_fences_from_the_answer() -> None:
    """In JSON mode a fenced answer comes back as bare, parseable JSON."""
    resp = anthropic_message([{"type": "text", "text": '```json\n{"facts": ["tea"]}\n```'}])
    content = from_anthropic_response(resp, model=MODEL, json_mode=True)["choices"][0]["message"]
    assert json.loads(content["content"]) == {"facts": ["tea"]}


def test_fences_are_kept_outside_json_mode() -> None:
    """Without JSON mode the text is returned exactly as the model wrote it."""
    text = '```json\n{"a": 1}\n```'
    resp = anthropic_message([{"type": "text", "text": text}])
    out = from_anthropic_response(resp, model=MODEL, json_mode=False)
    assert out["choices"][0]["message"]["content"] == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('```json\n{"a": 1}\n```', '{"a": 1}'),
        ('  ```JSON\r\n{"a": 1}\r\n```  \n', '{"a": 1}'),
        ('```\n{"a": 1}\n```', '{"a": 1}'),
        ('```json {"a": 1}```', '{"a": 1}'),
        ('```json\n{"code": "```x```"}\n```', '{"code": "```x```"}'),
        ('Here it is:\n```json\n{"a": 1}\n```\nDone.', '{"a": 1}'),
        ('{"a": 1}', '{"a": 1}'),
        ("Sure:\n```python\nprint(1)\n```", "Sure:\n```python\nprint(1)\n```"),
        ("no json here", "no json here"),
    ],
)
def test_strip_json_fences(text: str, expected: str) -> None:
    """Fences around (or a JSON fence inside) the answer are removed; other text is untouched."""
    assert strip_json_fences(text) == expected


# --- streams --------------------------------------------------------------------------------


def test_recorded_stream_translates_to_the_exact_chunk_sequence() -> None:
    """The recorded Anthropic stream becomes exactly the recorded OpenAI chunk bytes."""
    translator = StreamTranslator(model=MODEL, include_usage=True, created=CREATED)
    parser = SSEParser()
    raw = (WIRE / "anthropic_stream_tool_use.sse").read_bytes()
    out = b"".join(translator.feed_event(event) for event in parser.feed(raw))
    out += translator.finish()
    assert out == (WIRE / "openai_stream_tool_use.sse").read_bytes()
    assert (translator.usage.prompt_tokens, translator.usage.completion_tokens) == (472, 89)
    assert translator.complete
    assert not translator.failed


def test_recorded_stream_chunks_validate_against_the_openai_sdk() -> None:
    """Every chunk we emit parses as the official SDK's ChatCompletionChunk."""
    openai_chat = pytest.importorskip("openai.types.chat")
    payloads = chunks((WIRE / "openai_stream_tool_use.sse").read_bytes())
    assert payloads[-1] == "[DONE]"
    for payload in payloads[:-1]:
        openai_chat.ChatCompletionChunk.model_validate(payload)


def test_recorded_stream_tool_arguments_reassemble_to_json() -> None:
    """Concatenated argument fragments are the tool input Anthropic streamed."""
    payloads = chunks((WIRE / "openai_stream_tool_use.sse").read_bytes())[:-1]
    fragments = [
        tool["function"].get("arguments", "")
        for payload in payloads
        for choice in payload["choices"]
        for tool in choice["delta"].get("tool_calls", [])
    ]
    assert json.loads("".join(fragments)) == {"location": "San Francisco, CA", "unit": "fahrenheit"}


def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    """Without stream_options.include_usage no chunk carries a usage field."""
    text = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "hi"},
    }
    raw, translator = stream(START, text, end("end_turn"), STOP)
    payloads = chunks(raw)
    assert payloads[-1] == "[DONE]"
    assert all("usage" not in payload for payload in payloads[:-1])
    deltas = [payload["choices"][0] for payload in payloads[:-1]]
    assert [d["delta"] for d in deltas] == [
        {"role": "assistant", "content": ""},
        {"content": "hi"},
        {},
    ]
    assert deltas[-1]["finish_reason"] == "stop"
    assert translator.usage.total_tokens == 10


def test_stream_chunks_reuse_the_anthropic_message_id() -> None:
    """Every chunk carries the same id, derived from the Anthropic message id."""
    raw, _ = stream(START, end("end_turn"), STOP)
    assert {payload["id"] for payload in chunks(raw)[:-1]} == {"chatcmpl-msg_s"}


def test_stream_max_tokens_finishes_with_length() -> None:
    """A stream cut by max_tokens ends with finish_reason length."""
    raw, _ = stream(START, end("max_tokens"), STOP)
    assert chunks(raw)[-2]["choices"][0]["finish_reason"] == "length"


def test_stream_parallel_tool_calls_get_successive_indexes() -> None:
    """Two tool_use blocks become tool calls 0 and 1, whatever their block index."""
    args = {
        "type": "content_block_delta",
        "index": 3,
        "delta": {"type": "input_json_delta", "partial_json": '{"x": 1}'},
    }
    raw, _ = stream(START, tool_block(1, "t1", "a"), tool_block(3, "t2", "b"), args, STOP)
    calls = [
        tool
        for payload in chunks(raw)[:-1]
        for choice in payload["choices"]
        for tool in choice["delta"].get("tool_calls", [])
    ]
    assert [(c["index"], c.get("id")) for c in calls] == [(0, "t1"), (1, "t2"), (1, None)]


def test_stream_tool_without_input_gets_empty_object_arguments() -> None:
    """A tool call that streams no input still ends with parseable `{}` arguments."""
    stop_block = {"type": "content_block_stop", "index": 0}
    raw, _ = stream(START, tool_block(0, "t1", "now"), stop_block, end("tool_use"), STOP)
    payloads = chunks(raw)
    assert payloads[2]["choices"][0]["delta"] == {
        "tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]
    }
    assert payloads[3]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_ignores_ping_thinking_and_unknown_events() -> None:
    """Events with no Chat Completions form produce no bytes."""
    translator = StreamTranslator(model=MODEL, created=CREATED)
    translator.feed("message_start", START)
    thinking = {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta"}}
    assert translator.feed("ping", {"type": "ping"}) == b""
    assert translator.feed("content_block_delta", thinking) == b""
    assert translator.feed("future_event", {"type": "future_event"}) == b""


def test_stream_error_event_becomes_an_openai_error_payload() -> None:
    """An Anthropic error mid-stream is relayed in OpenAI's error shape, then the stream stops."""
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    raw, translator = stream(START, error, end("end_turn"), STOP)
    payloads = chunks(raw)
    assert payloads[1] == {
        "error": {
            "message": "Overloaded",
            "type": "service_unavailable_error",
            "param": None,
            "code": None,
        }
    }
    assert payloads[2:] == ["[DONE]"]
    assert translator.failed
    assert not translator.complete


def test_stream_event_that_is_not_json_becomes_an_error_payload() -> None:
    """A garbled provider event is reported to the caller rather than crashing the relay."""
    translator = StreamTranslator(model=MODEL, created=CREATED)
    out = translator.feed_event(SSEEvent("content_block_delta", "{not json"))
    assert chunks(out)[0]["error"]["type"] == "server_error"
    assert translator.failed


def test_stream_without_message_delta_still_finishes() -> None:
    """message_stop alone closes the choice with a finish chunk and the usage chunk."""
    raw, translator = stream(START, STOP, include_usage=True)
    payloads = chunks(raw)
    assert payloads[1]["choices"][0]["finish_reason"] == "stop"
    assert payloads[2]["choices"] == []
    assert payloads[2]["usage"]["prompt_tokens"] == 7
    assert translator.complete


def test_truncated_stream_is_not_complete() -> None:
    """A stream that ends before message_stop is flagged so the relay can report it."""
    raw, translator = stream(START)
    assert raw.endswith(DONE)
    assert not translator.complete
    assert not translator.failed


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "anthropic_type", "openai_type"),
    [
        (400, "invalid_request_error", "invalid_request_error"),
        (401, "authentication_error", "authentication_error"),
        (403, "permission_error", "permission_error"),
        (404, "not_found_error", "not_found_error"),
        (413, "request_too_large", "invalid_request_error"),
        (429, "rate_limit_error", "rate_limit_error"),
        (500, "api_error", "server_error"),
        (529, "overloaded_error", "service_unavailable_error"),
        (418, "teapot_error", "invalid_request_error"),
        (502, "gateway_error", "server_error"),
    ],
)
def test_anthropic_error_types_map_to_openai_types(
    status: int, anthropic_type: str, openai_type: str
) -> None:
    """Each Anthropic error type maps to an OpenAI one; unknown types fall back on the status."""
    body = {
        "type": "error",
        "error": {"type": anthropic_type, "message": "boom"},
        "request_id": "r",
    }
    assert from_anthropic_error(status, json.dumps(body).encode()) == ("boom", openai_type)


def test_non_json_error_body_keeps_a_short_excerpt() -> None:
    """A non-Anthropic error page is summarised with its status and a bounded excerpt."""
    message, type_ = from_anthropic_error(502, b"<html>\n  Bad   gateway " + b"x" * 1000)
    assert message.startswith("Anthropic answered HTTP 502: <html> Bad gateway x")
    assert len(message) < 340
    assert type_ == "server_error"


def test_empty_error_body_still_explains_the_status() -> None:
    """An empty error body yields a message naming the status."""
    assert from_anthropic_error(429, b"") == ("Anthropic answered HTTP 429.", "rate_limit_error")


def test_openai_error_has_openais_shape() -> None:
    """openai_error builds the {"error": {message, type, param, code}} body."""
    assert openai_error(404, "No such instance.", "not_found_error", "instance_not_found") == {
        "error": {
            "message": "No such instance.",
            "type": "not_found_error",
            "param": None,
            "code": "instance_not_found",
        }
    }


def test_openai_error_without_type_derives_it_from_the_status() -> None:
    """An empty type is filled in from the HTTP status."""
    assert openai_error(503, "down", "")["error"]["type"] == "service_unavailable_error"
