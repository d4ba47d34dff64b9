"""Outbound calls to LLM providers: pooled sessions, bounded retries, bounded time.

One `ClientSession` per provider origin keeps connections (and TLS sessions) warm across
calls. Requests are built from scratch, so nothing the caller sent (its `baggage`,
`traceparent`, or our relay token) can reach a provider, and redirects are never followed:
a redirect could carry the key to a host nobody registered.

Calls to a client-chosen base URL go through sessions of their own, whose resolver applies the
base-URL policy (`gateway.policy.baseurls`) to every address a name resolves to; address literals,
which aiohttp never hands to a resolver, are checked before the call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from gateway.errors import ProviderError
from gateway.policy.baseurls import AddressRefused, PolicyResolver, UrlPolicy
from gateway.relay.anthropic import from_anthropic_error
from gateway.relay.target import Target

__all__ = ["ProviderPool"]

log = logging.getLogger("gateway.relay")

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
MAX_RETRY_AFTER = 10.0


def _retry_delay(attempt: int, response: aiohttp.ClientResponse | None) -> float:
    if response is not None:
        try:
            after = float(response.headers.get("Retry-After", ""))
            return min(max(after, 0.0), MAX_RETRY_AFTER)
        except ValueError:
            pass
    backoff: float = min(0.25 * 2.0**attempt, 4.0)
    return backoff * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not cryptography


class ProviderPool:
    def __init__(
        self,
        *,
        timeout: float,
        retries: int,
        policy: UrlPolicy | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._timeout = timeout
        self._retries = retries
        self._policy = policy if policy is not None else UrlPolicy(allow_private=True)
        # The name resolution under the policy (a test may hand in its own records).
        self._resolver = resolver
        self._sessions: dict[tuple[str, bool], aiohttp.ClientSession] = {}

    def _session(self, url: URL, *, guarded: bool) -> aiohttp.ClientSession:
        origin = (str(url.origin()), guarded)
        session = self._sessions.get(origin)
        if session is None or session.closed:
            resolver = PolicyResolver(self._policy, self._resolver) if guarded else None
            session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=min(10.0, self._timeout), sock_read=self._timeout
                ),
                connector=aiohttp.TCPConnector(limit=64, ttl_dns_cache=60, resolver=resolver),
                # Nothing from the environment: no proxy variables, no .netrc credentials.
                trust_env=False,
            )
            self._sessions[origin] = session
        return session

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    async def post(self, target: Target, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """POST `body` to the target; a 2xx response (body unread) or a `ProviderError`.

        Retries 429/5xx and connection failures a bounded number of times with backoff,
        honouring Retry-After. The caller must release the returned response.
        """
        url = URL(target.url)
        payload = json.dumps(body, ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if body.get("stream") else "application/json",
            "User-Agent": "powermem-gateway",
            **target.auth_headers(),
        }
        if target.spec.wire == "anthropic":
            headers["anthropic-version"] = "2023-06-01"
        if target.client_url:
            self._policy.check_host(url.host or "")
        session = self._session(url, guarded=target.client_url)
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            response: aiohttp.ClientResponse | None = None
            try:
                async with asyncio.timeout(self._timeout):
                    answer = await session.post(
                        url, data=payload, headers=headers, allow_redirects=False
                    )
            except TimeoutError:
                if last:
                    raise ProviderError(
                        f"{target.spec.name} did not answer within {self._timeout:g}s.",
                        status=504,
                        error_type="timeout",
                    ) from None
            except aiohttp.ClientError as exc:
                refused = getattr(exc, "os_error", None)
                if isinstance(refused, AddressRefused):
                    raise refused.error from None  # the policy's answer, never retried
                if last:
                    raise ProviderError(
                        f"Cannot reach {target.spec.name} at {url.origin()} "
                        f"({type(exc).__name__}); check the instance's base_url.",
                        status=502,
                    ) from None
            else:
                if answer.status < 300:
                    return answer
                if answer.status not in RETRY_STATUSES or last:
                    raise await self._error(target, answer)
                answer.release()
                response = answer
            delay = _retry_delay(attempt, response)
            log.info(
                "%s answered %s, retry %d in %.2fs",
                target.spec.name,
                response.status if response is not None else "no response",
                attempt + 1,
                delay,
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _error(self, target: Target, response: aiohttp.ClientResponse) -> ProviderError:
        async with response:
            if 300 <= response.status < 400:
                return ProviderError(
                    f"{target.spec.name} answered with a redirect ({response.status}); "
                    "redirects are not followed: fix the instance's base_url.",
                    status=502,
                )
            raw = await response.content.read(64 * 1024)
        if target.spec.wire == "anthropic":
            message, error_type = from_anthropic_error(response.status, raw)
        else:
            message, error_type = _openai_error_text(raw)
        # A provider may echo what it was sent; never let the key travel back in a message.
        if target.api_key:
            message = message.replace(target.api_key, "[redacted]")
        return ProviderError(
            f"{target.spec.name} returned {response.status}: {message[:500]}",
            status=response.status,
            error_type=error_type,
        )


def _openai_error_text(raw: bytes) -> tuple[str, str]:
    try:
        error = json.loads(raw)["error"]
        if isinstance(error, dict):
            return str(error.get("message") or "no message"), str(error.get("type") or "api_error")
        return str(error), "api_error"
    except (ValueError, KeyError, TypeError):
        text = raw.decode("utf-8", "replace").strip()
        return (text[:200] or "no message"), "api_error"
