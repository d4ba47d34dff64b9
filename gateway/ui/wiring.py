"""The wiring panel: is powermem up and ready, do its LLM calls carry the baggage, and does
each coding tool's saved id point at a live instance?

The tools' knobs are files in the home folder of whoever runs the tool (see
`gateway.clients.locations`); the gateway can read them only where it runs as that user on
that machine, as a local gateway does. Elsewhere (a container, a shared gateway) the panel
says so, and each instance's "last used" column is what tells a live tool from a dead one.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from aiohttp import web

from gateway.clients.errors import ClientSetupError
from gateway.clients.tools import tools as local_tools
from gateway.errors import GatewayError
from gateway.http.appkeys import REGISTRY, RELAY, SETTINGS
from gateway.http.ready import check_ready
from gateway.http.status import UPSTREAM_HEALTH
from gateway.instances.model import INSTANCE_ID_RE

__all__ = ["LIVE_WITHIN", "Check", "ToolKnob", "Wiring", "age", "gather"]

State = Literal["ok", "warn", "fail", "unknown"]
# How long the readiness check may hold the page up (it answers from memory once ready).
READY_WAIT = 3.0
# A saved id counts as live when its instance was used this recently (seconds).
LIVE_WITHIN = 24 * 3600


@dataclass(frozen=True)
class Check:
    name: str
    state: State
    detail: str


@dataclass(frozen=True)
class ToolKnob:
    tool: str
    where: str
    instance_id: str | None
    state: State
    detail: str


@dataclass(frozen=True)
class Wiring:
    checks: list[Check]
    tools: list[ToolKnob]
    tools_note: str


def _when(stamp: str | None) -> str:
    """`2025-01-02T03:04:05.678Z` → `2025-01-02 03:04:05 UTC`."""
    return f"{stamp[:10]} {stamp[11:19]} UTC" if stamp else "never"


def age(stamp: str | None, now: datetime | None = None) -> float | None:
    """Seconds since an ISO-8601 UTC time stamp, or None when there is none."""
    if not stamp:
        return None
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ((now or datetime.now(UTC)) - then).total_seconds()


async def _upstream(app: web.Application) -> list[Check]:
    report = await app[UPSTREAM_HEALTH].get(app)
    where = f"{report.get('mode', '?')} powermem at {report.get('url') or 'no address yet'}"
    if report.get("healthy"):
        health = Check("powermem answers", "ok", where)
    else:
        why = report.get("error") or f"health answered {report.get('status', '?')}"
        health = Check("powermem answers", "fail", f"{where}: {why}")
    try:
        async with asyncio.timeout(READY_WAIT):
            await check_ready(app)
        ready = Check("memory service ready", "ok", "a memory listing through to powermem works")
    except GatewayError as exc:
        ready = Check("memory service ready", "fail", exc.message)
    except TimeoutError:
        ready = Check("memory service ready", "unknown", "powermem is slow to answer; reload")
    return [health, ready]


def _relay(app: web.Application) -> list[Check]:
    relay = app[RELAY]
    stats = relay.stats
    scope = "since this gateway process started"
    if stats.unproxied:
        baggage = Check(
            "LLM calls carry baggage",
            "fail",
            f"{stats.unproxied} LLM call(s) arrived without the gateway's baggage and were "
            f"refused ({scope}): powermem runs without opentelemetry-instrument or without the "
            "baggage propagator; see `powermem-gateway upstream-env`.",
        )
    elif stats.proxied_calls:
        baggage = Check(
            "LLM calls carry baggage",
            "ok",
            f"{stats.proxied_calls} LLM call(s) carried the baggage of the request that caused "
            f"them ({scope}; the last at {_when(stats.last_call_at)}).",
        )
    else:
        baggage = Check(
            "LLM calls carry baggage",
            "unknown",
            f"no LLM call seen {scope}: run the probe.",
        )
    default = relay.default_llm
    fallback = (
        Check("default LLM (.env)", "ok", f"{default['provider']} / {default['model']}")
        if default
        else Check(
            "default LLM (.env)",
            "warn",
            "none: powermem's LLM calls for requests without an instance are refused.",
        )
    )
    return [baggage, fallback]


def _read_knobs(home: Path, gateway: str) -> list[tuple[str, str, str | None, bool]]:
    """(tool, where, saved id, readable) for each tool set up for this user (its knob file,
    else its id file), as `powermem-gateway register` left them."""
    found = []
    for tool in local_tools(home=home, environ=os.environ, cwd=home):
        where_path = tool.knob.file.path if tool.knob is not None else None
        if (where_path is None or not where_path.exists()) and tool.id_file is not None:
            where_path = tool.id_file.path
        try:
            saved, readable = tool.saved_id(), True
        except ClientSetupError:
            saved, readable = None, False
        where = str(where_path) if where_path is not None else tool.label
        if where_path is not None and where_path.is_relative_to(home):
            where = "~/" + str(where_path.relative_to(home))
        found.append((tool.label, where, saved, readable))
    return found


async def _tools(app: web.Application) -> tuple[list[ToolKnob], str]:
    settings = app[SETTINGS]
    registry = app[REGISTRY]
    home = Path.home()
    knobs = await asyncio.to_thread(_read_knobs, home, settings.local_url)
    valid = [s for _, _, s, _ in knobs if s and INSTANCE_ID_RE.match(s)]
    usage = await registry.usage_many(valid) if valid else {}
    tools: list[ToolKnob] = []
    for label, where, saved, readable in knobs:
        if not readable or saved is None:
            tools.append(ToolKnob(label, where, None, "fail", "cannot be read"))
            continue
        try:
            record = await registry.get(saved)
        except GatewayError:
            detail = "not registered on this gateway: run `powermem-gateway register` again"
            tools.append(ToolKnob(label, where, saved, "fail", detail))
            continue
        used = usage.get(saved, {}).get("last_used_at")
        seconds = age(used)
        what = f"{record.provider} / {record.model}"
        if seconds is not None and seconds <= LIVE_WITHIN:
            tools.append(ToolKnob(label, where, saved, "ok", f"{what}, last used {_when(used)}"))
        else:
            state_detail = f"{what}, registered but not used in the last 24 h"
            tools.append(ToolKnob(label, where, saved, "warn", state_detail))
    note = (
        "Read from the home folder of the user the gateway runs as, where "
        "`powermem-gateway register` saves each tool's id on this machine."
    )
    if settings.is_shared:
        note += (
            " This gateway is shared: tools on other machines keep their ids there; "
            "`powermem-gateway doctor` checks them, and each instance's last use shows here."
        )
    elif not tools:
        note += " No tool has an id saved there yet."
    return tools, note


async def gather(app: web.Application) -> Wiring:
    upstream, (tools, note) = await asyncio.gather(_upstream(app), _tools(app))
    return Wiring(upstream + _relay(app), tools, note)
