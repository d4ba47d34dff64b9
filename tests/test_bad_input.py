"""Bad input gets a clear 4xx in the envelope, is never forwarded, and changes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from gateway.http.app import create_app
from gateway.http.appkeys import REGISTRY
from gateway.settings import Settings
from tests.conftest import OperatorFactory
from tests.fakes.upstream import Recorder

Client = TestClient[web.Request, web.Application]
KEY = "sk-test-bad-input-0123456789abcdef"
GOOD_HEADERS = {
    "X-PowerMem-LLM-Provider": "openai",
    "X-PowerMem-LLM-Model": "gpt-4o-mini",
    "X-PowerMem-LLM-Api-Key": KEY,
}
GOOD_BODY = {"provider": "openai", "model": "gpt-4o-mini", "api_key": KEY}
AS_JSON = {"Content-Type": "application/json"}
Refused = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
async def refused(gateway: Client, recorder: Recorder) -> AsyncIterator[Refused]:
    """Checks a response is a 4xx envelope naming `code`, and that nothing moved meanwhile."""
    registry = gateway.server.app[REGISTRY]
    before = [r.public() for r in await registry.list()]
    forwarded = len(recorder.requests)

    async def check(response: ClientResponse, status: int, code: str) -> dict[str, Any]:
        body: dict[str, Any] = await response.json()
        assert response.status == status, body
        assert body["success"] is False
        assert body["error"]["code"] == code
        assert len(body["error"]["message"]) > 10
        assert len(recorder.requests) == forwarded, "a refused request reached powermem"
        assert [r.public() for r in await registry.list()] == before, "registry changed"
        assert KEY not in json.dumps(body)
        return body

    yield check


async def existing(gateway: Client) -> str:
    response = await gateway.post("/api/v1/instances", json=GOOD_BODY)
    instance_id: str = (await response.json())["data"]["instance_id"]
    return instance_id


# -- proxied requests: instance headers ----------------------------------------------------------


async def test_unknown_instance_id_is_404(gateway: Client, refused: Refused) -> None:
    """An id nobody registered is 404 and the request is not forwarded."""
    response = await gateway.post(
        "/api/v1/memories",
        json={"content": "x"},
        headers={"X-PowerMem-Instance": "pmem-00000000deadbeef"},
    )
    body = await refused(response, 404, "INSTANCE_NOT_FOUND")
    assert "pmem-00000000deadbeef" in body["error"]["message"]
    assert body["error"]["details"] == {"instance_id": "pmem-00000000deadbeef"}


async def test_deleted_instance_id_is_404(gateway: Client, recorder: Recorder) -> None:
    """Once deleted, an id is refused the same way, with no silent fallback."""
    instance_id = await existing(gateway)
    assert (await gateway.delete(f"/api/v1/instances/{instance_id}")).status == 200
    response = await gateway.get("/api/v1/memories", headers={"X-PowerMem-Instance": instance_id})
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "INSTANCE_NOT_FOUND"
    assert recorder.requests == []


@pytest.mark.parametrize(
    "value", ["", "not an id!", "../../etc/passwd", "-pmem", "p" * 65, "pmem-12345678;drop"]
)
async def test_malformed_instance_id_is_400(gateway: Client, refused: Refused, value: str) -> None:
    """An instance header that cannot be an id is 400 naming the header."""
    response = await gateway.get("/api/v1/memories", headers={"X-PowerMem-Instance": value})
    body = await refused(response, 400, "INVALID_HEADER")
    assert body["error"]["details"] == {"header": "X-PowerMem-Instance"}


# -- proxied requests: LLM headers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "header", "words"),
    [
        ({"X-PowerMem-LLM-Model": None}, "X-PowerMem-LLM-Model", "model is required"),
        ({"X-PowerMem-LLM-Provider": None}, "X-PowerMem-LLM-Provider", "provider is required"),
        ({"X-PowerMem-LLM-Provider": "skynet"}, "X-PowerMem-LLM-Provider", "unknown provider"),
        ({"X-PowerMem-LLM-Api-Key": None}, "X-PowerMem-LLM-Api-Key", "api_key is required"),
        ({"X-PowerMem-LLM-Api-Key": "  "}, "X-PowerMem-LLM-Api-Key", "api_key is required"),
        (
            {"X-PowerMem-LLM-Base-Url": "ftp://files.example.com"},
            "X-PowerMem-LLM-Base-Url",
            "http:// or https://",
        ),
        (
            {"X-PowerMem-LLM-Base-Url": "file:///etc/passwd"},
            "X-PowerMem-LLM-Base-Url",
            "http:// or https://",
        ),
        (
            {"X-PowerMem-LLM-Provider": "azure"},
            "X-PowerMem-LLM-Base-Url",
            "base_url is required",
        ),
        ({"X-PowerMem-LLM-Model": "m" * 300}, "X-PowerMem-LLM-Model", "at most 256"),
        ({"X-PowerMem-LLM-Model": "m" * 9000}, "X-PowerMem-LLM-Model", "longer than 8192"),
        ({"X-PowerMem-LLM-Api-Key": "k" * 20000}, "X-PowerMem-LLM-Api-Key", "longer than 8192"),
        ({"X-PowerMem-Client": "x" * 9000}, "X-PowerMem-Client", "longer than 8192"),
        ({"X-PowerMem-Client": "my client"}, "X-PowerMem-Client", "short label"),
    ],
)
async def test_incomplete_or_invalid_llm_headers_are_400(
    gateway: Client,
    refused: Refused,
    change: dict[str, str | None],
    header: str,
    words: str,
) -> None:
    """Each missing or invalid LLM header is 400 naming that header and what is wrong."""
    headers = {k: v for k, v in (GOOD_HEADERS | change).items() if v is not None}
    response = await gateway.post("/api/v1/memories", json={"content": "x"}, headers=headers)
    body = await refused(response, 400, "INVALID_HEADER")
    assert body["error"]["details"] == {"header": header}
    assert header in body["error"]["message"]
    assert words in body["error"]["message"]


async def test_empty_llm_headers_are_400_not_a_fallback(gateway: Client, refused: Refused) -> None:
    """LLM headers that are present but empty are an error, never a silent fallback."""
    headers = dict.fromkeys(GOOD_HEADERS, "")
    response = await gateway.get("/api/v1/memories", headers=headers)
    body = await refused(response, 400, "INVALID_HEADER")
    assert "provider is required" in body["error"]["message"]


async def test_unknown_llm_header_is_400(gateway: Client, refused: Refused) -> None:
    """A misspelt LLM header is refused instead of silently falling back."""
    response = await gateway.get("/api/v1/memories", headers={"X-PowerMem-LLM-Modle": "gpt-4o"})
    body = await refused(response, 400, "INVALID_HEADER")
    assert "x-powermem-llm-modle" in body["error"]["message"].lower()


async def raw_request(gateway: Client, head: bytes) -> tuple[int, bytes]:
    """Send bytes no HTTP client library would produce; return status and body."""
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    try:
        writer.write(head)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"X-PowerMem-LLM-Model", b"gpt-\xff\xfe"),
        (b"X-PowerMem-LLM-Api-Key", b"sk-\xe9\xe8-latin1"),
        (b"X-PowerMem-Instance", b"pmem-\xc3"),
    ],
)
async def test_non_utf8_header_value_is_400(
    gateway: Client, recorder: Recorder, name: bytes, value: bytes
) -> None:
    """A header value that is not UTF-8 is 400 naming the header, and nothing is forwarded."""
    headers = {k.encode(): v.encode() for k, v in GOOD_HEADERS.items()} | {name: value}
    head = b"GET /api/v1/memories HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    head += b"".join(k + b": " + v + b"\r\n" for k, v in headers.items()) + b"\r\n"
    status, raw_body = await raw_request(gateway, head)
    body = json.loads(raw_body)
    assert status == 400
    assert body["error"]["code"] == "INVALID_HEADER"
    assert body["error"]["details"] == {"header": name.decode()}
    assert "UTF-8" in body["error"]["message"]
    assert recorder.requests == []
    assert await gateway.server.app[REGISTRY].list() == []


async def test_utf8_header_value_is_accepted(gateway: Client, recorder: Recorder) -> None:
    """Proper UTF-8 (here in the model name) is fine and the request goes through."""
    head = b"GET /api/v1/memories HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    head += b"X-PowerMem-LLM-Provider: ollama\r\nX-PowerMem-LLM-Model: caf\xc3\xa9\r\n\r\n"
    status, _ = await raw_request(gateway, head)
    assert status == 200
    assert recorder.last.headers["baggage"].startswith("powermem.instance=pmem-")


async def test_header_beyond_the_parser_limit_is_refused_unforwarded(
    gateway: Client, recorder: Recorder
) -> None:
    """A header line over 32 KiB is stopped by the HTTP parser itself: 400, nothing forwarded."""
    head = b"GET /api/v1/memories HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    head += b"X-PowerMem-LLM-Model: " + b"m" * 40000 + b"\r\n\r\n"
    status, _ = await raw_request(gateway, head)
    assert status == 400
    assert recorder.requests == []
    assert await gateway.server.app[REGISTRY].list() == []


# -- management API bodies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (b"{not json", "INVALID_BODY", "not valid JSON"),
        (b"", "INVALID_BODY", "not valid JSON"),
        (b'{"provider": "openai", "api_key": "' + KEY.encode(), "INVALID_BODY", "not valid JSON"),
        (b"[1, 2]", "INVALID_BODY", "JSON object"),
        (b'"a string"', "INVALID_BODY", "JSON object"),
        (b"null", "INVALID_BODY", "JSON object"),
        (b'{"model": "caf\xe9"}', "INVALID_BODY", "UTF-8"),
        (b'{"provider": "openai", "colour": "red"}', "INVALID_CONFIG", "colour"),
        (b'{"provider": "openai", "model": "m", "api_key": 42}', "INVALID_CONFIG", "string"),
        (b'{"provider": "openai", "model": ["m"]}', "INVALID_CONFIG", "string"),
    ],
)
async def test_malformed_registration_body_is_400(
    gateway: Client, refused: Refused, data: bytes, code: str, words: str
) -> None:
    """Malformed JSON, a non-object or unknown fields are 400 saying which."""
    response = await gateway.post(
        "/api/v1/instances", data=data, headers={"Content-Type": "application/json"}
    )
    body = await refused(response, 400, code)
    assert words in body["error"]["message"]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (
            b'{"provider": "openai", "model": "m", "api_key": ' + b"7" * 5000 + b"}",
            "not valid JSON",
        ),
        (b'{"provider": ' + b"[" * 5000 + b"]" * 5000 + b"}", "not valid JSON"),
        (b'{"a": ' * 3000 + b"1" + b"}" * 3000, "not valid JSON"),
        (b'{"provider": "openai", "model": "m", "api_key": 1e999}', "api_key"),
        (b'{"provider": "openai", "model": "m", "api_key": NaN}', "api_key"),
    ],
)
async def test_hostile_json_is_a_400_never_a_500(
    gateway: Client, refused: Refused, data: bytes, words: str
) -> None:
    """Huge integers, deep nesting and non-JSON numbers are refused before any work is done."""
    response = await gateway.post("/api/v1/instances", data=data, headers=AS_JSON)
    body = await response.json()
    assert response.status == 400, body
    assert words in body["error"]["message"]
    await refused(response, 400, body["error"]["code"])


@pytest.mark.parametrize(
    ("base_url", "words"),
    [
        ("http://[127.0.0.1]/", "IPv6"),
        ("http://[::1%25lo]/v1", "IPv6"),
        ("http://[1::2::3]/", "IPv6"),
        ("http://api.example.com:65536/v1", "65535"),
        ("http://api.example.com:0x50/v1", "65535"),
        ("http://api example.com/v1", "without blanks"),
    ],
)
async def test_base_urls_that_crash_url_parsers_are_a_400(
    gateway: Client, refused: Refused, base_url: str, words: str
) -> None:
    """Hosts and ports a URL parser chokes on are refused with a reason, not a traceback."""
    response = await gateway.post("/api/v1/instances", json=GOOD_BODY | {"base_url": base_url})
    body = await refused(response, 400, "INVALID_CONFIG")
    assert body["error"]["details"] == {"field": "base_url"}
    assert words in body["error"]["message"]
    assert base_url not in body["error"]["message"]


async def test_oversized_registration_body_is_400(gateway: Client, refused: Refused) -> None:
    """A body beyond 64 KiB is refused without being parsed."""
    data = json.dumps(GOOD_BODY | {"model": "m" * 70000}).encode()
    response = await gateway.post("/api/v1/instances", data=data, headers=AS_JSON)
    body = await refused(response, 400, "INVALID_BODY")
    assert "larger than" in body["error"]["message"]


async def test_body_arriving_in_pieces_is_read_whole(gateway: Client) -> None:
    """A chunked body that trickles in is read to its end before it is parsed."""
    data = json.dumps(GOOD_BODY | {"base_url": "https://x.example.com/" + "v" * 2000}).encode()

    async def trickle() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 500):
            yield data[start : start + 500]
            await asyncio.sleep(0.01)

    response = await gateway.post("/api/v1/instances", data=trickle(), headers=AS_JSON)
    assert response.status == 201, await response.text()


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"model": None}, "model", "model is required"),
        ({"provider": None}, "provider", "provider is required"),
        ({"provider": "skynet"}, "provider", "unknown provider"),
        ({"api_key": None}, "api_key", "api_key is required"),
        ({"base_url": "ws://api.example.com"}, "base_url", "http:// or https://"),
        ({"base_url": "https://me:pw@api.example.com"}, "base_url", "credentials"),
    ],
)
async def test_invalid_registration_is_400_naming_the_field(
    gateway: Client, refused: Refused, fields: dict[str, str | None], field: str, words: str
) -> None:
    """Missing model/provider/key, an unknown provider or a bad base URL name their field."""
    data = {k: v for k, v in (GOOD_BODY | fields).items() if v is not None}
    response = await gateway.post("/api/v1/instances", json=data)
    body = await refused(response, 400, "INVALID_CONFIG")
    assert body["error"]["details"]["field"] == field
    assert words in body["error"]["message"]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"{}", "INVALID_BODY"),
        (b"{broken", "INVALID_BODY"),
        (b"[]", "INVALID_BODY"),
        (b'{"colour": "red"}', "INVALID_CONFIG"),
        (b'{"instance_id": "pmem-1111111111111111"}', "INVALID_CONFIG"),
        (b'{"provider": "skynet"}', "INVALID_CONFIG"),
        (b'{"base_url": "javascript:alert(1)"}', "INVALID_CONFIG"),
        (b'{"api_key": ""}', "INVALID_CONFIG"),
    ],
)
async def test_bad_update_is_400_and_leaves_the_instance(
    gateway: Client, recorder: Recorder, data: bytes, code: str
) -> None:
    """A bad PUT body is refused and the stored instance stays as it was."""
    instance_id = await existing(gateway)
    registry = gateway.server.app[REGISTRY]
    before = await registry.get(instance_id)
    response = await gateway.put(f"/api/v1/instances/{instance_id}", data=data, headers=AS_JSON)
    body = await response.json()
    assert response.status == 400 and body["error"]["code"] == code
    after = await registry.get(instance_id)
    assert after == before and registry.api_key(after) == KEY
    assert recorder.requests == []


@pytest.mark.parametrize("bad_id", ["-bad", "a" * 65, "bad%20id", "pmem-x!"])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_malformed_id_in_the_path_is_400(
    gateway: Client, refused: Refused, method: str, bad_id: str
) -> None:
    """A path id that cannot be an instance id is 400 on show, update and delete."""
    response = await gateway.request(method, f"/api/v1/instances/{bad_id}", json={"model": "m"})
    await refused(response, 400, "INVALID_CONFIG")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("PATCH", "/api/v1/instances/pmem-0000000000000000", 405),
        ("POST", "/api/v1/instances/pmem-0000000000000000", 405),
        ("PUT", "/api/v1/instances", 405),
        ("DELETE", "/api/v1/instances", 405),
        ("GET", "/api/v1/instances/pmem-0000000000000000/extra", 404),
        ("GET", "/api/v1/instances/", 404),
    ],
)
async def test_other_management_calls_are_refused_not_forwarded(
    gateway: Client, refused: Refused, method: str, path: str, status: int
) -> None:
    """Methods and paths under /api/v1/instances that do not exist never reach powermem."""
    response = await gateway.request(method, path, json=GOOD_BODY)
    await refused(response, status, "METHOD_NOT_ALLOWED" if status == 405 else "NOT_FOUND")
    if status == 405:
        assert response.headers["Allow"]


@pytest.mark.parametrize(
    "data",
    [
        b'{"messages": [{"role": "user", "content": ' + b"9" * 5000 + b"}]}",
        b'{"messages": [{"role": "user", "content": ' + b"[" * 5000 + b"]" * 5000 + b"}]}",
    ],
)
async def test_hostile_json_to_the_relay_is_a_400_in_openai_shape(
    operator: OperatorFactory, make_settings: Callable[..., Settings], data: bytes
) -> None:
    """The relay refuses the same hostile bodies with an OpenAI-shaped 400, not a 500."""
    token = "pgr-bad-input-relay-token-0123456789"
    client = await operator(create_app(make_settings(relay_token=token)))
    response = await client.post(
        "/relay/v1/chat/completions",
        data=data,
        headers=AS_JSON | {"Authorization": f"Bearer {token}"},
    )
    body = await response.json()
    assert response.status == 400, body
    assert "not valid JSON" in body["error"]["message"]
