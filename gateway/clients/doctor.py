"""`powermem-gateway doctor`: each step of the chain with a verdict, its real cause and the fix.

Every check here is a plain function of what was observed, so it can be read and tested on
its own; `gateway.clients.doctorrun` gathers the observations from a running gateway. A FAIL
names its cause in words a user can act on: no `.env`, storage not initialised,
instrumentation missing, relay not reached, provider refused, a tool's knob not set or not
answering. No verdict ever shows a key or an instance secret.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.proxy.envcheck import EnvProblem

__all__ = [
    "Verdict",
    "as_json",
    "env_verdict",
    "gateway_verdict",
    "provider_verdict",
    "ready_verdict",
    "render",
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
INSTRUMENTATION_FIX = (
    "run powermem as `opentelemetry-instrument powermem-server` with the OTEL_* settings "
    "`powermem-gateway upstream-env` prints (propagators tracecontext,baggage), or let "
    "`powermem-gateway serve` run it"
)
WIRING = "upstream LLM wired to the relay"


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


def env_verdict(path: Path, problems: list[EnvProblem]) -> Verdict:
    """The cause behind a managed powermem that does not work: what its `.env` lacks."""
    fatal = [p for p in problems if p.fatal] or problems
    first = fatal[0]
    cause = "no .env" if not path.is_file() else "storage not initialised"
    more = f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else ""
    return Verdict("powermem's .env", "fail", f"{cause}: {first.problem}{more}", first.fix)


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


def ready_verdict(ready: bool, reason: str, upstream_status: int | None) -> Verdict:
    """`/gateway/ready`: a memory call through to powermem, with its API key if auth is on."""
    step = "memory service ready"
    if ready:
        return Verdict(step, "ok", "a memory listing through the gateway answered 200")
    if upstream_status in (401, 403):
        return Verdict(
            step,
            "fail",
            f"powermem's API-key auth refused the gateway: {reason}",
            "put powermem's key in POWERMEM_SERVER_API_KEYS of the .env the gateway reads",
        )
    if upstream_status is None:
        return Verdict(
            step, "fail", f"powermem not answering: {reason}", "see the upstream step above"
        )
    return Verdict(
        step,
        "fail",
        f"storage not initialised: {reason}",
        "check DATABASE_PROVIDER and EMBEDDING_PROVIDER in powermem's .env (`powermem-gateway "
        "init` writes a working SQLite setup), then see powermem's log",
    )


def wiring_verdict(
    status: dict[str, Any],
    probe: dict[str, Any] | None,
    probe_error: str = "",
    *,
    unproxied_rose: bool = False,
) -> Verdict:
    """Proven by the probe's answer, else by relay calls that carried an instance.

    The probe comes first because it is definitive: the relay's counters also count calls
    that did not come from powermem. `probe` is None when no probe ran (no endpoint, or no
    admin token); `probe_error` says why. `unproxied_rose`: a relay call without the
    gateway's baggage arrived while the probe ran (powermem reached it, uninstrumented).
    """
    if probe is not None:
        detail = str(probe.get("detail") or "")
        if probe.get("wired"):
            return Verdict(WIRING, "ok", detail or "the probe reached the relay")
        if unproxied_rose:
            return Verdict(
                WIRING, "fail", f"instrumentation missing: {detail}", INSTRUMENTATION_FIX
            )
        upstream_status = probe.get("upstream_status")
        if isinstance(upstream_status, int) and upstream_status >= 400:
            return Verdict(
                WIRING,
                "fail",
                f"powermem refused the probe's memory add ({upstream_status}): {detail}",
                "fix the memory service first (see the step above and powermem's log)",
            )
        return Verdict(WIRING, "fail", f"relay not reached: {detail}", UPSTREAM_ENV_FIX)
    relay = status.get("relay") or {}
    calls = int(relay.get("instance_calls") or 0)
    if calls > 0:
        last = relay.get("last_instance_call_at") or "?"
        return Verdict(
            WIRING, "ok", f"the relay has seen {calls} call(s) with baggage (last {last})"
        )
    return Verdict(
        WIRING,
        "warn",
        "unknown: no relay call seen yet" + (f" ({probe_error})" if probe_error else ""),
        "add a memory through the gateway with an X-PowerMem-Instance header, then run "
        "doctor again",
    )


def saved_id_verdict(
    label: str, path: Path, instance_id: str | None, known: bool, instance: dict[str, Any] | None
) -> Verdict:
    step = f"{label} id"
    client = label.split()[0]
    if instance_id is None:
        return Verdict(step, "fail", f"{path} cannot be read", "fix or remove that file")
    if not known:
        return Verdict(
            step,
            "fail",
            f"{instance_id} (in {path}) is not registered on this gateway",
            f"run `powermem-gateway register --client {client}`",
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
        return Verdict(step, "ok", "a one-token call to its provider answered")
    # The gateway answers 502/504 itself when the provider cannot be reached at all.
    cause = "provider not reached" if status in (502, 504) else "provider refused"
    return Verdict(
        step,
        "fail",
        f"{cause} (HTTP {status}): {detail}",
        f"check the key, model and base URL, then `powermem-gateway register --client "
        f"{label.split()[0]}` again",
    )


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


def as_json(url: str, verdicts: list[Verdict]) -> str:
    """The same report for scripts: `{gateway, ok, checks: [{step, state, detail, fix}]}`."""
    ok = not any(v.state == "fail" for v in verdicts)
    return json.dumps({"gateway": url, "ok": ok, "checks": [asdict(v) for v in verdicts]}, indent=2)
