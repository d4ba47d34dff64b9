"""OpenAI Chat Completions request → Anthropic Messages request.

Only fields with an Anthropic meaning are carried over; every other OpenAI field (`seed`,
`logprobs`, `user`, penalties, …) is dropped rather than forwarded, because Anthropic rejects
unknown fields. Input that cannot be translated without losing meaning raises `InvalidBody`
with a message naming the field, so the caller gets a 400 instead of a silently different call.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import unquote_to_bytes

from gateway.errors import InvalidBody

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "json_mode_requested",
    "stream_usage_requested",
    "to_anthropic_request",
]

JSON = dict[str, Any]

# Anthropic requires max_tokens; OpenAI callers usually leave it out.
DEFAULT_MAX_TOKENS = 4096

_JSON_INSTRUCTION = (
    "Answer with a single valid JSON object and nothing else: no prose before or after it, "
    "no markdown, no code fences."
)


def json_mode_requested(body: JSON) -> bool:
    """Whether the caller asked for JSON output (`response_format` json_object/json_schema)."""
    fmt = body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")


def stream_usage_requested(body: JSON) -> bool:
    """Whether a streaming caller asked for the final usage chunk."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def to_anthropic_request(body: JSON, *, model: str) -> JSON:
    """Translate an OpenAI chat request; `model` (the instance's) overrides `body["model"]`."""
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise InvalidBody("'messages' must be a non-empty list of chat messages.")
    if body.get("n") not in (None, 1):
        raise InvalidBody("'n' greater than 1 is not supported by the Anthropic provider.")

    system: list[str] = []
    turns: list[JSON] = []
    for position, message in enumerate(raw_messages):
        if not isinstance(message, dict):
            raise InvalidBody(f"messages[{position}] must be an object.")
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text_of(message.get("content"), f"messages[{position}]")
            if text:
                system.append(text)
            continue
        anthropic_role, blocks = _blocks_of(message, position)
        if not blocks:
            continue  # Anthropic rejects empty turns; an empty message carries nothing anyway.
        # Anthropic requires user/assistant alternation: consecutive same-role turns merge.
        if turns and turns[-1]["role"] == anthropic_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": anthropic_role, "content": blocks})

    out: JSON = {"model": model, "max_tokens": _max_tokens(body), "messages": turns}
    instruction = _json_instruction(body.get("response_format"))
    if instruction:
        system.append(instruction)
    if system:
        out["system"] = "\n\n".join(system)
    _sampling(body, out)
    if body.get("stream") is True:
        out["stream"] = True
    _tools(body, out)
    return out


def _blocks_of(message: JSON, position: int) -> tuple[str, list[JSON]]:
    role = message.get("role")
    where = f"messages[{position}]"
    if role == "user":
        return "user", _content_blocks(message.get("content"), where)
    if role == "assistant":
        blocks = _content_blocks(message.get("content"), where)
        for call in message.get("tool_calls") or []:
            blocks.append(_tool_use(call, where))
        return "assistant", blocks
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidBody(f"{where} (role 'tool') needs a 'tool_call_id'.")
        result: JSON = {"type": "tool_result", "tool_use_id": call_id}
        content = message.get("content")
        if isinstance(content, str):
            if content:
                result["content"] = content
        elif content is not None:
            parts = _content_blocks(content, where)
            if parts:
                result["content"] = parts
        # Tool results travel inside a user turn; merging keeps consecutive ones together.
        return "user", [result]
    raise InvalidBody(
        f"{where} has role {role!r}; expected system, developer, user, assistant or tool."
    )


def _content_blocks(content: Any, where: str) -> list[JSON]:
    if content is None:
        return []
    if isinstance(content, str):
        # Anthropic rejects empty text blocks.
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidBody(f"{where}.content must be a string or a list of content parts.")
    blocks: list[JSON] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if isinstance(text, str) and text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image(part, where))
        else:
            raise InvalidBody(
                f"{where}.content has a part of type {kind!r}, which the Anthropic provider "
                "cannot take; use text or image_url parts."
            )
    return blocks


def _text_of(content: Any, where: str) -> str:
    blocks = _content_blocks(content, where)
    if any(block["type"] != "text" for block in blocks):
        raise InvalidBody(f"{where}: a system message may only contain text.")
    return "\n".join(block["text"] for block in blocks)


def _image(part: JSON, where: str) -> JSON:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise InvalidBody(f"{where}: an image_url part needs a 'url'.")
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    if url.startswith("data:") and "," in url:
        header, payload = url[5:].split(",", 1)
        media_type, *params = header.split(";")
        if "base64" not in params:
            # A percent-encoded data URL: Anthropic only takes base64.
            payload = base64.b64encode(unquote_to_bytes(payload)).decode("ascii")
        source = {"type": "base64", "media_type": media_type or "image/png", "data": payload}
        return {"type": "image", "source": source}
    raise InvalidBody(f"{where}: an image URL must be http(s) or a data: URL.")


def _tool_use(call: Any, where: str) -> JSON:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidBody(f"{where}.tool_calls entries need a function with a name.")
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidBody(f"{where}.tool_calls entries need an 'id'.")
    arguments = function.get("arguments")
    tool_input: JSON
    if arguments is None or arguments == "":
        tool_input = {}
    elif isinstance(arguments, dict):
        tool_input = arguments
    else:
        try:
            decoded = json.loads(arguments)
        except (TypeError, ValueError):
            decoded = None
        # Anthropic needs an object; anything else is kept verbatim rather than lost.
        tool_input = decoded if isinstance(decoded, dict) else {"raw_arguments": arguments}
    return {"type": "tool_use", "id": call_id, "name": function["name"], "input": tool_input}


def _max_tokens(body: JSON) -> int:
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidBody(f"'{field}' must be a positive integer.")
        return value
    return DEFAULT_MAX_TOKENS


def _sampling(body: JSON, out: JSON) -> None:
    temperature = _number(body, "temperature")
    top_p = _number(body, "top_p")
    if temperature is not None:
        # OpenAI allows 0..2, Anthropic 0..1: clamp rather than fail a valid OpenAI request.
        out["temperature"] = min(max(temperature, 0.0), 1.0)
    elif top_p is not None:
        # Recent Claude models refuse temperature and top_p together; temperature wins.
        out["top_p"] = top_p
    stop = body.get("stop")
    sequences = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    # Anthropic refuses whitespace-only stop sequences.
    sequences = [s for s in sequences if isinstance(s, str) and s.strip()]
    if sequences:
        out["stop_sequences"] = sequences


def _number(body: JSON, field: str) -> float | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidBody(f"'{field}' must be a number.")
    return float(value)


def _json_instruction(fmt: Any) -> str:
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_object", "json_schema"):
        return ""
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if schema is None:
        return _JSON_INSTRUCTION
    return (
        f"{_JSON_INSTRUCTION} The object must conform to this JSON Schema:\n"
        f"{json.dumps(schema, ensure_ascii=False, sort_keys=True)}"
    )


def _tools(body: JSON, out: JSON) -> None:
    tools = body.get("tools")
    if not tools:
        return
    if not isinstance(tools, list):
        raise InvalidBody("'tools' must be a list of function tools.")
    out["tools"] = [_tool(tool, index) for index, tool in enumerate(tools)]
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and choice.get("type") != "none":
        choice["disable_parallel_tool_use"] = True
    if choice != {"type": "auto"}:
        out["tool_choice"] = choice


def _tool(tool: Any, index: int) -> JSON:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise InvalidBody(f"tools[{index}] must be a function tool.")
    function = tool.get("function")
    if not isinstance(function, dict):
        raise InvalidBody(f"tools[{index}] must be a function tool.")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidBody(f"tools[{index}].function needs a name.")
    out: JSON = {"name": name}
    if function.get("description"):
        out["description"] = function["description"]
    schema = function.get("parameters")
    # Anthropic requires an object schema even for a tool without parameters.
    out["input_schema"] = (
        schema if isinstance(schema, dict) else {"type": "object", "properties": {}}
    )
    return out


def _tool_choice(choice: Any) -> JSON:
    if choice is None or choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        # Tools stay declared: Anthropic rejects tool_use blocks in history without them.
        return {"type": "none"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return {"type": "tool", "name": name}
    raise InvalidBody(
        "'tool_choice' must be 'auto', 'required', 'none' or "
        '{"type": "function", "function": {"name": ...}}.'
    )
