"""Gather what `doctor` judges: the gateway's answers, powermem's `.env`, each tool's files.

The `.env` is read only to explain a managed powermem that does not work, and only when the
gateway runs on this machine (a loopback URL): elsewhere it is not the file that gateway
reads. Per tool, the knob must hold a scoped URL of this gateway, for an instance that exists,
and that URL must answer a request the way the tool would send it (no header at all).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.clients.doctor import (
    WIRING,
    Verdict,
    env_verdict,
    gateway_verdict,
    provider_verdict,
    ready_verdict,
    saved_id_verdict,
    upstream_verdict,
    wiring_verdict,
)
from gateway.clients.errors import ClientSetupError, GatewayRefused
from gateway.clients.gatewayapi import GatewayAPI
from gateway.clients.knobs import overriding_base_url
from gateway.clients.scoped import masked, parse_scoped
from gateway.clients.tools import Tool, tools
from gateway.proxy.envcheck import env_problems
from gateway.proxy.upstream_env import read_env_file

__all__ = ["knob_verdict", "run_doctor", "same_gateway"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _local(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in _LOOPBACK or host.startswith("127.")


def same_gateway(a: str, b: str) -> bool:
    """Whether two base URLs reach the same gateway (loopback names are interchangeable)."""
    pa, pb = urlsplit(a.rstrip("/")), urlsplit(b.rstrip("/"))
    host_a = "loopback" if _local(a) else pa.hostname
    host_b = "loopback" if _local(b) else pb.hostname
    return (pa.scheme, host_a, pa.port, pa.path) == (pb.scheme, host_b, pb.port, pb.path)


def _baggageless(status: dict[str, Any]) -> int:
    """Relay calls without the gateway's baggage: refused (managed) or served by the default
    LLM (external mode, where powermem may be run by hand)."""
    relay = status.get("relay") or {}
    served = int(relay.get("calls") or 0) - int(relay.get("proxied_calls") or 0)
    return int(relay.get("refused_without_baggage") or 0) + served


async def _wiring(api: GatewayAPI, status: dict[str, Any]) -> Verdict:
    before = _baggageless(status)
    try:
        probe = await api.probe()
    except ClientSetupError as exc:
        return wiring_verdict(status, None, exc.message)
    rose = False
    if probe is not None and not probe.get("wired"):
        try:
            rose = _baggageless(await api.status()) > before
        except ClientSetupError:
            rose = False
    return wiring_verdict(status, probe, unproxied_rose=rose)


async def _instance(api: GatewayAPI, instance_id: str) -> tuple[dict[str, Any] | None, bool]:
    """(the instance as the admin sees it, or None; whether the gateway knows the id)."""
    try:
        return await api.show(instance_id), True
    except GatewayRefused as exc:
        if exc.status == 401:
            return None, await api.is_known(instance_id)
        if exc.status in (400, 404):
            return None, False
        raise


async def knob_verdict(
    api: GatewayAPI, tool: Tool, *, home: Path, environ: Mapping[str, str]
) -> Verdict:
    """Whether the tool's knob holds a live scoped URL of this gateway."""
    assert tool.knob is not None
    knob, step = tool.knob, f"{tool.label} knob"
    where = f"{knob.file.setting} in {knob.file.path}"
    fix = f"run `powermem-gateway register --client {tool.client}`"
    try:
        url = knob.file.read()
        notes = knob.file.current_notes()
    except ClientSetupError as exc:
        return Verdict(step, "fail", exc.message, "fix that file, then " + fix)
    if url is None:
        return Verdict(step, "fail", f"{where} is not set: the tool uses the default LLM", fix)
    scoped = parse_scoped(url)
    if scoped is None:
        detail = f"{where} is {url}, not an instance-scoped URL: the tool uses the default LLM"
        return Verdict(step, "fail", detail, fix)
    if not same_gateway(scoped.gateway, api.url):
        detail = f"{where} points at another gateway ({scoped.gateway})"
        return Verdict(step, "fail", detail, fix + f" --gateway {api.url}, or check that one")
    if tool.client == "claude-code" and (override := overriding_base_url(home, environ)):
        source, value = override
        if value.rstrip("/") != url.rstrip("/"):
            detail = f"POWERMEM_BASE_URL={masked(value)} in {source} wins over {where}"
            return Verdict(step, "fail", detail, f"remove POWERMEM_BASE_URL from {source}")
    check = await api.scoped(scoped.base)
    shown = masked(url)
    if check.state == "unknown":
        return Verdict(
            step, "fail", f"{shown}: instance {scoped.instance_id} is not registered", fix
        )
    if check.state == "secret":
        return Verdict(
            step,
            "fail",
            f"{shown}: the gateway refuses it (missing or wrong instance secret)",
            fix + " (with the admin token, to issue a new secret)",
        )
    if check.status >= 400:
        detail = f"{shown} binds, but answered HTTP {check.status}: {check.message}"
        return Verdict(step, "fail", detail, "see the memory service step above")
    if notes:
        return Verdict(step, "warn", f"{shown} answers, but {'; '.join(notes)}", "enable it")
    return Verdict(step, "ok", f"{shown} answers ({where})")


async def _tool(
    api: GatewayAPI, tool: Tool, *, home: Path, environ: Mapping[str, str], probe: bool
) -> list[Verdict]:
    verdicts: list[Verdict] = []
    try:
        instance_id = tool.saved_id()
    except ClientSetupError:
        instance_id = None
    if tool.id_file is not None and tool.id_file.path.exists():
        try:
            saved = tool.id_file.read()
        except ClientSetupError:
            saved = None
        instance, known = await _instance(api, saved) if saved else (None, False)
        verdicts.append(saved_id_verdict(tool.label, tool.id_file.path, saved, known, instance))
    if tool.knob is not None:
        verdicts.append(await knob_verdict(api, tool, home=home, environ=environ))
    if instance_id is None or any(v.state == "fail" for v in verdicts):
        return verdicts
    if probe:
        verdicts.append(provider_verdict(tool.label, await api.provider_check(instance_id)))
    else:
        verdicts.append(provider_verdict(tool.label, None))
    return verdicts


async def run_doctor(
    api: GatewayAPI,
    *,
    home: Path,
    environ: Mapping[str, str],
    env_file: Path,
    cwd: Path | None = None,
    probe_providers: bool = False,
) -> list[Verdict]:
    """Every verdict, in the order of the chain; stops early when the gateway is unreachable."""
    try:
        health = await api.health()
    except ClientSetupError as exc:
        return [gateway_verdict(api.url, None, exc.message)]
    verdicts = [gateway_verdict(api.url, health)]
    status = await api.status()
    upstream = upstream_verdict(status)
    verdicts.append(upstream)
    ready, reason, upstream_status = await api.ready()
    managed = (status.get("upstream") or {}).get("mode") == "managed"
    problems = env_problems(env_file, read_env_file(env_file)) if managed else []
    if not ready and problems and _local(api.url):
        verdicts.append(env_verdict(env_file, problems))
    if upstream.state == "ok":
        verdicts.append(ready_verdict(ready, reason, upstream_status))
    if upstream.state == "ok" and ready:
        verdicts.append(await _wiring(api, status))
    else:
        verdicts.append(Verdict(WIRING, "skip", "needs a working memory service first"))
    found = tools(home=home, environ=environ, cwd=cwd)
    if not found:
        verdicts.append(
            Verdict(
                "coding tools",
                "warn",
                "no coding tool is registered here yet",
                "run `powermem-gateway register --client NAME`",
            )
        )
    for tool in found:
        verdicts += await _tool(api, tool, home=home, environ=environ, probe=probe_providers)
    return verdicts
