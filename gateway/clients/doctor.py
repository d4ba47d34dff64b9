"""`powermem-gateway doctor`: check the chain step by step, each with a verdict and a fix.

Every check is a plain function of what was observed (the gateway's answers), so it can be
read and tested on its own; `run_doctor` gathers those observations from a running gateway.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.clients.errors import ClientSetupError, GatewayRefused
from gateway.clients.gatewayapi import GatewayAPI
from gateway.clients.locations import IdLocation, saved_locations

__all__ = [
    "Verdict",
    "gateway_verdict",
    "provider_verdict",
    "render",
    "run_doctor",
    "saved_id_verdict",
    "upstream_verdict",
    "wiring_verdict",
]

State = Literal["ok", "warn", "fail", "skip"]
UPSTREAM_ENV_FIX = (
    "point powermem's LLM at the relay: run it with the environment printed by "
    "`powermem-gateway upstream-env`, as `opentelemetry-instrument powermem-server` "
    "(or let `powermem-gateway serve` run it, without --upstream)"
)


@dataclass(frozen=True)
class Verdict:
    step: str
    state: State
    detail: str
    fix: str = ""


def gateway_verdict(url: str, health: dict[str, Any] | None, error: str = "") -> Verdict:
    if health is None:
        return Verdict(
            "gateway reachable",
            "fail",
            error or f"no answer from {url}",
            "start it with `powermem-gateway serve`, or pass --gateway / POWERMEM_GATEWAY_URL",
        )
    return Verdict("gateway reachable", "ok", f"{url} (version {health.get('version', '?')})")


def upstream_verdict(status: dict[str, Any]) -> Verdict:
    if "upstream" not in status:
        # The gateway shows the upstream's details to the admin token holder only.
        if status.get("healthy"):
            return Verdict(
                "upstream healthy", "ok", "powermem answers (details need the admin token)"
            )
        return Verdict(
            "upstream healthy",
            "fail",
            "the gateway reports powermem unhealthy (details need the admin token)",
            "run doctor where the gateway's data dir is, or set POWERMEM_GATEWAY_ADMIN_TOKEN",
        )
    upstream = status.get("upstream") or {}
    mode = upstream.get("mode", "?")
    where = upstream.get("url") or "no URL yet"
    if upstream.get("healthy"):
        return Verdict("upstream healthy", "ok", f"{mode} powermem at {where}")
    why = upstream.get("error") or f"health answered {upstream.get('status', '?')}"
    fix = (
        "see the powermem log in the gateway's data dir (upstream.log); the gateway restarts it"
        if mode == "managed"
        else f"start the powermem server at {where}, or fix --upstream"
    )
    return Verdict("upstream healthy", "fail", f"{mode} powermem at {where}: {why}", fix)


def wiring_verdict(
    status: dict[str, Any], probe: dict[str, Any] | None, probe_error: str = ""
) -> Verdict:
    """Proven by the probe's answer, else by relay calls that carried an instance.

    The probe comes first because it is definitive: the relay's counters also count calls
    that did not come from powermem (such as doctor's own --probe-providers calls).
    `probe` is None when no probe ran (no endpoint, or no admin token); `probe_error` says why.
    """
    step = "upstream LLM wired to the relay"
    if probe is not None:
        if probe.get("wired"):
            return Verdict(step, "ok", str(probe.get("detail") or "the probe reached the relay"))
        return Verdict(step, "fail", str(probe.get("detail") or "not wired"), UPSTREAM_ENV_FIX)
    relay = status.get("relay") or {}
    calls = int(relay.get("instance_calls") or 0)
    if calls > 0:
        last = relay.get("last_instance_call_at") or "?"
        return Verdict(step, "ok", f"the relay has seen {calls} call(s) with baggage (last {last})")
    return Verdict(
        step,
        "warn",
        "unknown: no relay call seen yet" + (f" ({probe_error})" if probe_error else ""),
        "add a memory through the gateway with an X-PowerMem-Instance header, then run "
        "doctor again",
    )


def saved_id_verdict(
    label: str, path: Path, instance_id: str | None, known: bool, instance: dict[str, Any] | None
) -> Verdict:
    step = f"{label} id"
    if instance_id is None:
        return Verdict(step, "fail", f"{path} cannot be read", "fix or remove that file")
    if not known:
        return Verdict(
            step,
            "fail",
            f"{instance_id} (in {path}) is not registered on this gateway",
            f"run `powermem-gateway register --client {label.split()[0]}`",
        )
    what = f" ({instance['provider']} / {instance['model']})" if instance else ""
    return Verdict(step, "ok", f"{instance_id}{what} in {path}")


def provider_verdict(label: str, result: tuple[int, str] | None, reason: str = "") -> Verdict:
    step = f"{label} provider"
    if result is None:
        return Verdict(
            step, "skip", reason or "not checked (--probe-providers makes a 1-token call)"
        )
    status, detail = result
    if status < 400:
        return Verdict(step, "ok", "a one-token call through the relay answered")
    return Verdict(
        step,
        "fail",
        f"HTTP {status}: {detail}",
        f"check the key, model and base URL, then `powermem-gateway register --client "
        f"{label.split()[0]}` again",
    )


async def _wiring(api: GatewayAPI, status: dict[str, Any]) -> Verdict:
    try:
        return wiring_verdict(status, await api.probe())
    except GatewayRefused as exc:
        return wiring_verdict(status, None, exc.message)
    except ClientSetupError as exc:
        return wiring_verdict(status, None, exc.message)


async def _saved(
    api: GatewayAPI,
    label: str,
    location: IdLocation,
    *,
    probe_providers: bool,
    relay_token: str | None,
) -> list[Verdict]:
    try:
        instance_id = location.read()
    except ClientSetupError:
        return [saved_id_verdict(label, location.path, None, False, None)]
    assert instance_id is not None
    instance: dict[str, Any] | None = None
    try:
        instance, known = await api.show(instance_id), True
    except GatewayRefused as exc:
        if exc.status == 401:
            known = await api.is_known(instance_id)
        elif exc.status in (400, 404):
            known = False
        else:
            raise
    verdicts = [saved_id_verdict(label, location.path, instance_id, known, instance)]
    if not known:
        return verdicts
    if not probe_providers:
        verdicts.append(provider_verdict(label, None))
    elif not relay_token:
        verdicts.append(
            provider_verdict(
                label,
                None,
                "not checked: the relay token is not readable here (run doctor where the "
                "gateway runs, or set POWERMEM_GATEWAY_RELAY_TOKEN)",
            )
        )
    else:
        verdicts.append(provider_verdict(label, await api.provider_check(instance_id)))
    return verdicts


async def run_doctor(
    api: GatewayAPI,
    *,
    home: Path,
    cwd: Path | None = None,
    probe_providers: bool = False,
    relay_token: str | None = None,
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
    if upstream.state == "ok":
        verdicts.append(await _wiring(api, status))
    else:
        verdicts.append(
            Verdict("upstream LLM wired to the relay", "skip", "needs a healthy upstream first")
        )
    found = saved_locations(home=home, gateway=api.url, cwd=cwd)
    if not found:
        verdicts.append(
            Verdict(
                "saved instance ids",
                "warn",
                "no coding tool has an id saved yet",
                "run `powermem-gateway register --client NAME`",
            )
        )
    for label, location in found:
        verdicts += await _saved(
            api, label, location, probe_providers=probe_providers, relay_token=relay_token
        )
    return verdicts


_MARK = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def render(verdicts: list[Verdict]) -> str:
    """The report: one line per step, a fix under each problem, and the overall verdict."""
    width = max(len(v.step) for v in verdicts)
    lines = []
    for v in verdicts:
        lines.append(f"{_MARK[v.state]:<4}  {v.step:<{width}}  {v.detail}")
        if v.fix and v.state in ("fail", "warn"):
            lines.append(f"{'':<4}  {'':<{width}}  → {v.fix}")
    failed = sum(v.state == "fail" for v in verdicts)
    warned = sum(v.state == "warn" for v in verdicts)
    if failed:
        lines.append(f"Verdict: broken ({failed} problem(s) to fix).")
    else:
        lines.append("Verdict: good" + (f" ({warned} warning(s))." if warned else "."))
    return "\n".join(lines)
