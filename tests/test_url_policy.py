"""The base-URL policy: where a client-supplied base URL may aim the relay's calls."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestClient, TestServer

from gateway.errors import BaseUrlRefused
from gateway.http.app import create_app
from gateway.policy.baseurls import AddressRefused, PolicyResolver, UrlPolicy, classify, parse_host
from gateway.providers import PROVIDERS
from gateway.relay.client import ProviderPool
from gateway.relay.target import Target
from gateway.settings import Settings
from tests.binding import in_flight
from tests.conftest import OperatorFactory
from tests.fakes.providers import FakeOpenAI
from tests.fakes.upstream import Recorder
from tests.frontserver import GatewayTestServer

Client = TestClient[web.Request, web.Application]
RELAY_TOKEN = "pgr-test-url-policy-token-0123456789"
DEFAULT_KEY = "sk-default-url-policy-0000111122223333"
INSTANCE_KEY = "sk-instance-url-policy-4444555566667777"
AUTH = {"Authorization": f"Bearer {RELAY_TOKEN}"}
# A listen address: the policy's default depends on it (nothing binds to it in these tests).
ALL_INTERFACES = "0.0.0.0"  # noqa: S104
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}

LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "2130706433",
    "0x7f000001",
    "0x7f.1",
    "0177.0.0.1",
    "127.1",
    "127.0.0.1.",
    "[::ffff:127.0.0.1]",
    "::ffff:7f00:1",
]
METADATA_SPELLINGS = [
    "169.254.169.254",
    "2852039166",
    "0xa9.0xfe.0xa9.0xfe",
    "::ffff:169.254.169.254",
    "::ffff:a9fe:a9fe",
    "2002:a9fe:a9fe::1",
    "64:ff9b::a9fe:a9fe",
    "fd00:ec2::254",
    "100.100.100.200",
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_obfuscated_loopback_spellings_parse_to_loopback(host: str) -> None:
    """Decimal, hex, octal, short, trailing-dot and IPv4-mapped forms all name 127.0.0.1."""
    ip = parse_host(host)
    assert ip is not None
    assert classify(ip) == "private"


@pytest.mark.parametrize("host", METADATA_SPELLINGS)
def test_metadata_addresses_are_recognised_in_any_spelling(host: str) -> None:
    """Cloud metadata addresses, also inside IPv6 (mapped, 6to4, NAT64), are `metadata`."""
    ip = parse_host(host)
    assert ip is not None and classify(ip) == "metadata"


@pytest.mark.parametrize(
    "address",
    [
        *("10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.1.1", "100.64.0.1", "0.0.0.0"),  # noqa: S104
        *("::1", "fe80::1", "fc00::1", "224.0.0.1", "240.0.0.1", "::", "2002:0a00:0001::1"),
    ],
)
def test_non_public_addresses_are_private(address: str) -> None:
    """RFC 1918, link-local, CGNAT, unspecified, ULA, multicast, reserved and 6to4-wrapped."""
    assert classify(ipaddress.ip_address(address)) == "private"


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_public(address: str) -> None:
    """Ordinary internet addresses are `public`."""
    assert classify(ipaddress.ip_address(address)) == "public"


def test_names_are_not_taken_for_addresses() -> None:
    """Host names, including hex-looking ones, parse to no address."""
    for host in ("api.openai.com", "cafe", "deadbeef.example", "localhost"):
        assert parse_host(host) is None


def test_loopback_gateway_allows_private_but_never_metadata() -> None:
    """Listening on loopback, private URLs pass and metadata URLs are refused."""
    policy = UrlPolicy.from_settings(Settings(host="127.0.0.1"))
    policy.check_url("http://localhost:11434/v1")
    policy.check_url("http://10.0.0.5:8000/v1")
    for host in ("169.254.169.254", "[fd00:ec2::254]", "metadata.google.internal"):
        with pytest.raises(BaseUrlRefused) as caught:
            policy.check_url(f"http://{host}/latest")
        assert caught.value.status == 403
        assert "metadata" in caught.value.message


def test_public_gateway_refuses_private_and_local_names() -> None:
    """Listening on all interfaces, private addresses and local names are refused."""
    policy = UrlPolicy.from_settings(Settings(host=ALL_INTERFACES))
    for host in [*LOOPBACK_SPELLINGS, "localhost", "ollama.localhost", "10.0.0.5"]:
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        with pytest.raises(BaseUrlRefused, match="--allow-private-base-urls"):
            policy.check_url(f"http://{host}:11434/v1")
    policy.check_url("https://api.example.com/v1")
    policy.check_url("http://8.8.8.8/v1")


def test_allow_list_admits_hosts_addresses_and_cidrs() -> None:
    """Allow-listed names, addresses and CIDR blocks pass, metadata included when named."""
    policy = UrlPolicy.from_settings(
        Settings(
            host=ALL_INTERFACES,
            allowed_base_url_hosts=("ollama.lan", "10.1.0.0/16", "169.254.169.254"),
        )
    )
    policy.check_url("http://ollama.lan:11434/v1")
    policy.check_url("http://10.1.200.3/v1")
    policy.check_url("http://169.254.169.254/v1")
    with pytest.raises(BaseUrlRefused):
        policy.check_url("http://10.2.0.1/v1")


def test_explicit_flag_overrides_the_listen_address_default() -> None:
    """`allow_private_base_urls` wins over the listen-address default, both ways."""
    assert UrlPolicy.from_settings(Settings(host=ALL_INTERFACES, allow_private_base_urls=True))
    UrlPolicy.from_settings(Settings(host=ALL_INTERFACES, allow_private_base_urls=True)).check_url(
        "http://10.0.0.1/v1"
    )
    with pytest.raises(BaseUrlRefused):
        UrlPolicy.from_settings(
            Settings(host="127.0.0.1", allow_private_base_urls=False)
        ).check_url("http://127.0.0.1/v1")


def test_settings_read_the_policy_from_the_environment() -> None:
    """The allow-list is comma-separated; the private switch reads true/false."""
    settings = Settings.from_env(
        {
            "POWERMEM_GATEWAY_ALLOWED_BASE_URL_HOSTS": "a.lan, 10.0.0.0/8,,",
            "POWERMEM_GATEWAY_ALLOW_PRIVATE_BASE_URLS": "false",
        }
    )
    assert settings.allowed_base_url_hosts == ("a.lan", "10.0.0.0/8")
    assert settings.private_base_urls_allowed is False


def test_bad_allow_list_entry_is_refused() -> None:
    """An allow-list entry that is neither name, address nor CIDR is a clear error."""
    with pytest.raises(ValueError, match="neither a host name"):
        UrlPolicy.build(allow_private=False, allowed=["http://x/"])


class HostsFile(AbstractResolver):
    """A resolver answering from a fixed table, like /etc/hosts; each name's answers rotate."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        answers = self.table[host]
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for a in addresses
        ]

    async def close(self) -> None:
        return None


async def test_resolver_drops_refused_addresses_and_keeps_the_rest() -> None:
    """A name resolving to a public and a metadata address connects to the public one only."""
    inner = HostsFile({"mixed.test": [["169.254.169.254", "8.8.8.8"]]})
    resolver = PolicyResolver(UrlPolicy.build(allow_private=True), inner)
    found = await resolver.resolve("mixed.test", 443)
    assert [r["host"] for r in found] == ["8.8.8.8"]


async def test_resolver_fails_when_every_address_is_refused() -> None:
    """A name whose every address is refused raises `AddressRefused` naming the policy."""
    inner = HostsFile({"rebind.test": [["8.8.8.8"], ["169.254.169.254"]]})
    resolver = PolicyResolver(UrlPolicy.build(allow_private=True), inner)
    assert [r["host"] for r in await resolver.resolve("rebind.test", 80)] == ["8.8.8.8"]
    with pytest.raises(AddressRefused) as caught:
        await resolver.resolve("rebind.test", 80)  # the second answer: DNS rebinding
    assert "metadata" in str(caught.value)


def _target(url: str, *, client_url: bool = True) -> Target:
    return Target(
        spec=PROVIDERS["openai"],
        model="gpt-4o",
        api_key=INSTANCE_KEY,
        base_url=url,
        instance_id="pmem-0123456789abcdef",
        client_url=client_url,
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as provider:
        yield provider  # type: ignore[misc]


async def test_pool_connects_only_to_addresses_the_policy_approved(fake: FakeOpenAI) -> None:
    """A name resolving to loopback is refused at call time when private addresses are."""
    port = fake.url.split(":")[-1].split("/")[0]
    hosts = HostsFile({"provider.test": [["127.0.0.1"]]})
    denied = ProviderPool(
        timeout=2, retries=0, policy=UrlPolicy.build(allow_private=False), resolver=hosts
    )
    try:
        with pytest.raises(BaseUrlRefused, match="resolves to a private"):
            await denied.post(_target(f"http://provider.test:{port}/v1"), CHAT)
        # The operator's own URLs (default LLM, instances.yaml) are not subject to it.
        answer = await denied.post(_target(fake.url, client_url=False), CHAT)
        answer.release()
    finally:
        await denied.close()
    assert len(fake.calls) == 1
    allowed = ProviderPool(
        timeout=2, retries=0, policy=UrlPolicy.build(allow_private=True), resolver=hosts
    )
    try:
        answer = await allowed.post(_target(f"http://provider.test:{port}/v1"), CHAT)
        answer.release()
    finally:
        await allowed.close()
    assert len(fake.calls) == 2
    assert fake.calls[-1]["authorization"] == f"Bearer {INSTANCE_KEY}"


async def test_pool_checks_address_literals_that_skip_the_resolver(fake: FakeOpenAI) -> None:
    """An IP-literal base URL is checked before the call: refused, nothing is sent."""
    pool = ProviderPool(timeout=2, retries=0, policy=UrlPolicy.build(allow_private=False))
    try:
        with pytest.raises(BaseUrlRefused):
            await pool.post(_target(fake.url), CHAT)
    finally:
        await pool.close()
    assert fake.calls == []


# -- through the gateway -----------------------------------------------------------------------


def _env_file(tmp_path: Path, default: FakeOpenAI) -> Path:
    path = tmp_path / "powermem.env"
    path.write_text(
        f"LLM_PROVIDER=openai\nLLM_API_KEY={DEFAULT_KEY}\nLLM_MODEL=default-model\n"
        f"OPENAI_LLM_BASE_URL={default.url}\n"
    )
    return path


@pytest.fixture
async def public_gateway(
    operator: OperatorFactory,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    fake: FakeOpenAI,
) -> Client:
    """A gateway configured as listening on all interfaces (private base URLs refused)."""
    settings = make_settings(
        host=ALL_INTERFACES, relay_token=RELAY_TOKEN, env_file=_env_file(tmp_path, fake)
    )
    client: Client = await operator(create_app(settings))
    return client


@pytest.mark.parametrize(
    "body",
    [
        {"provider": "openai", "model": "m", "api_key": "k", "base_url": "http://10.0.0.5/v1"},
        {"provider": "openai", "model": "m", "api_key": "k", "base_url": "http://0x7f.1:9/v1"},
        {"provider": "openai", "model": "m", "api_key": "k", "base_url": "http://localhost:1"},
        {"provider": "openai", "model": "m", "api_key": "k", "base_url": "http://[::1]:1/v1"},
        {"provider": "ollama", "model": "llama3"},  # its default URL is localhost
    ],
)
async def test_registration_of_a_refused_base_url_is_403_and_stores_nothing(
    public_gateway: Client, body: dict[str, str]
) -> None:
    """A refused base URL answers 403 BASE_URL_REFUSED and no instance is created."""
    response = await public_gateway.post("/api/v1/instances", json=body)
    assert response.status == 403
    error = (await response.json())["error"]
    assert error["code"] == "BASE_URL_REFUSED"
    listed = await (await public_gateway.get("/api/v1/instances")).json()
    assert listed["data"]["total"] == 0


async def test_implicit_registration_of_a_refused_url_is_not_forwarded(
    public_gateway: Client, recorder: Recorder
) -> None:
    """LLM headers naming a refused base URL get 403 and nothing reaches powermem."""
    response = await public_gateway.get(
        "/api/v1/memories",
        headers={
            "X-PowerMem-LLM-Provider": "openai",
            "X-PowerMem-LLM-Model": "gpt-4o",
            "X-PowerMem-LLM-Api-Key": INSTANCE_KEY,
            "X-PowerMem-LLM-Base-Url": "http://169.254.169.254/v1",
        },
    )
    assert response.status == 403
    assert recorder.requests == []


async def test_update_to_a_refused_base_url_leaves_the_instance_as_it_was(
    public_gateway: Client,
) -> None:
    """A PUT aiming an instance at a private address is 403 and changes nothing."""
    body = {"provider": "openai", "model": "m", "api_key": INSTANCE_KEY}
    created = await (await public_gateway.post("/api/v1/instances", json=body)).json()
    instance_id = created["data"]["instance_id"]
    response = await public_gateway.put(
        f"/api/v1/instances/{instance_id}",
        json={"base_url": "http://192.168.1.10/v1", "api_key": INSTANCE_KEY},
    )
    assert response.status == 403
    shown = await (await public_gateway.get(f"/api/v1/instances/{instance_id}")).json()
    assert shown["data"]["base_url"] == ""


async def test_name_resolving_to_a_private_address_is_refused_at_call_time(
    public_gateway: Client, fake: FakeOpenAI
) -> None:
    """A name that passes registration but resolves to loopback is refused by the relay."""
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, 80)}
    except OSError:
        pytest.skip("this machine's host name does not resolve")
    if name == "localhost" or not all(
        classify(ipaddress.ip_address(a.split("%")[0])) == "private" for a in addresses
    ):
        pytest.skip("this machine's host name does not resolve to a private address")
    port = fake.url.split(":")[-1].split("/")[0]
    body = {
        "provider": "openai",
        "model": "gpt-4o",
        "api_key": INSTANCE_KEY,
        "base_url": f"http://{name}:{port}/v1",
    }
    response = await public_gateway.post("/api/v1/instances", json=body)
    assert response.status == 201
    instance_id = (await response.json())["data"]["instance_id"]
    headers = {**AUTH, "baggage": in_flight(public_gateway.server.app, instance_id)}
    response = await public_gateway.post("/relay/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status == 403
    assert (await response.json())["error"]["type"] == "permission_error"
    assert fake.calls == []


async def test_instance_registered_under_a_looser_policy_is_refused_after_restart(
    aiohttp_client: Any, make_settings: Callable[..., Settings], tmp_path: Path, fake: FakeOpenAI
) -> None:
    """The policy applies at call time too: a stored loopback URL stops working on 0.0.0.0."""
    env_file = _env_file(tmp_path, fake)
    local: Client = await aiohttp_client(
        GatewayTestServer(create_app(make_settings(relay_token=RELAY_TOKEN, env_file=env_file)))
    )
    body = {"provider": "openai", "model": "gpt-4o", "api_key": INSTANCE_KEY, "base_url": fake.url}
    instance_id = (await (await local.post("/api/v1/instances", json=body)).json())["data"][
        "instance_id"
    ]
    headers = {**AUTH, "baggage": in_flight(local.server.app, instance_id)}
    response = await local.post("/relay/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status == 200
    public: Client = await aiohttp_client(
        GatewayTestServer(
            create_app(
                make_settings(host=ALL_INTERFACES, relay_token=RELAY_TOKEN, env_file=env_file)
            )
        )
    )
    response = await public.post("/relay/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status == 403
    assert len(fake.calls) == 1


async def test_allow_listed_host_works_on_a_public_gateway(
    aiohttp_client: Any, make_settings: Callable[..., Settings], tmp_path: Path, fake: FakeOpenAI
) -> None:
    """`--allow-base-url-host 127.0.0.1` lets a 0.0.0.0 gateway call a local provider."""
    settings = make_settings(
        host=ALL_INTERFACES,
        relay_token=RELAY_TOKEN,
        env_file=_env_file(tmp_path, fake),
        allowed_base_url_hosts=("127.0.0.1",),
    )
    client: Client = await aiohttp_client(GatewayTestServer(create_app(settings)))
    body = {"provider": "openai", "model": "gpt-4o", "api_key": INSTANCE_KEY, "base_url": fake.url}
    response = await client.post("/api/v1/instances", json=body)
    assert response.status == 201
    instance_id = (await response.json())["data"]["instance_id"]
    headers = {**AUTH, "baggage": in_flight(client.server.app, instance_id)}
    response = await client.post("/relay/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status == 200


# -- which secret goes where ---------------------------------------------------------------------


async def test_each_key_goes_only_to_its_own_url_and_the_relay_token_to_none(
    aiohttp_client: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """The default key reaches only the default URL; no provider ever sees the relay token."""
    async with FakeOpenAI() as default, FakeOpenAI() as chosen:
        settings = make_settings(relay_token=RELAY_TOKEN, env_file=_env_file(tmp_path, default))
        client: Client = await aiohttp_client(GatewayTestServer(create_app(settings)))
        body = {
            "provider": "openai",
            "model": "gpt-4o",
            "api_key": INSTANCE_KEY,
            "base_url": chosen.url,
        }
        instance_id = (await (await client.post("/api/v1/instances", json=body)).json())["data"][
            "instance_id"
        ]
        keyless = {"provider": "vllm", "model": "local", "base_url": chosen.url}
        keyless_id = (await (await client.post("/api/v1/instances", json=keyless)).json())["data"][
            "instance_id"
        ]
        for baggage in (None, instance_id, keyless_id, None, instance_id):
            headers = dict(AUTH)
            if baggage:
                headers["baggage"] = in_flight(client.server.app, baggage)
            response = await client.post("/relay/v1/chat/completions", json=CHAT, headers=headers)
            assert response.status == 200
        default_seen = [str(c["headers"]) for c in default.calls]
        chosen_seen = [str(c["headers"]) for c in chosen.calls]
    assert len(default_seen) == 2 and len(chosen_seen) == 3
    assert all(DEFAULT_KEY in seen and INSTANCE_KEY not in seen for seen in default_seen)
    assert all(DEFAULT_KEY not in seen for seen in chosen_seen)
    assert [INSTANCE_KEY in seen for seen in chosen_seen] == [True, False, True]
    assert not any(RELAY_TOKEN in seen for seen in default_seen + chosen_seen)


async def test_provider_redirects_are_not_followed(
    aiohttp_client: Any,
    aiohttp_server: Any,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    fake: FakeOpenAI,
) -> None:
    """A provider answering 307 elsewhere gets a 502 back; the other host sees nothing."""
    redirector = web.Application()

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(fake.url + "/chat/completions")

    redirector.router.add_post("/v1/chat/completions", redirect)
    server: TestServer = await aiohttp_server(redirector)
    settings = make_settings(relay_token=RELAY_TOKEN, env_file=_env_file(tmp_path, fake))
    client: Client = await aiohttp_client(GatewayTestServer(create_app(settings)))
    body = {
        "provider": "openai",
        "model": "gpt-4o",
        "api_key": INSTANCE_KEY,
        "base_url": str(server.make_url("/v1")),
    }
    instance_id = (await (await client.post("/api/v1/instances", json=body)).json())["data"][
        "instance_id"
    ]
    headers = {**AUTH, "baggage": in_flight(client.server.app, instance_id)}
    response = await client.post("/relay/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status == 502
    assert "redirect" in (await response.json())["error"]["message"]
    assert fake.calls == []
