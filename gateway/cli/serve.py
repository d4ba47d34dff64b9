"""`powermem-gateway serve`: check, bind, lock, then hand over to the supervisor."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import click

from gateway.cli.common import load_settings, storage_options
from gateway.errors import GatewayError
from gateway.observe.logs import configure_logging
from gateway.policy.baseurls import UrlPolicy
from gateway.process.datalock import DataDirLock
from gateway.process.errors import ServeError
from gateway.process.listen import bind_listeners
from gateway.process.loop import run
from gateway.process.progress import Console
from gateway.process.supervisor import supervise
from gateway.proxy.envcheck import env_problems
from gateway.proxy.upstream_env import read_env_file
from gateway.settings import MAX_DEFAULT_WORKERS, Settings, unknown_variables

__all__ = ["exposure_problem", "serve"]


def exposure_problem(settings: Settings) -> str | None:
    """Why listening where this gateway would listen is refused (issue 9.2), or None."""
    if settings.listens_on_loopback or settings.admin_token:
        return None
    return (
        f"Refusing to listen on {settings.host} without an admin token: anyone who can reach "
        "it could list, change and spend every instance. Set POWERMEM_GATEWAY_ADMIN_TOKEN "
        "(or POWERMEM_GATEWAY_ADMIN_TOKEN_FILE), or listen on 127.0.0.1."
    )


def _preflight(settings: Settings, console: Console) -> None:
    for name in unknown_variables(os.environ):
        console.shout(f"{name} is not a setting of this gateway and is ignored (misspelt?)")
    if settings.upstream is not None:
        return
    problems = env_problems(settings.env_file, read_env_file(settings.env_file))
    fatal = [p for p in problems if p.fatal]
    for problem in problems:
        if not problem.fatal:
            console.shout(f"{problem.problem}; to fix: {problem.fix}.")
    if fatal:
        raise click.ClickException(
            "powermem cannot work with its .env as it is:\n"
            + "\n".join(f"  - {p.problem}.\n    Fix: {p.fix}." for p in fatal)
        )


@click.command()
@click.option("--host", help="Address to listen on. [default: 127.0.0.1]")
@click.option("--port", type=int, help="Port to listen on. [default: 8848]")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help=f"Processes serving the port. [default: one per core, at most {MAX_DEFAULT_WORKERS}]",
)
@click.option(
    "--upstream",
    help="URL of an external powermem server; without it the gateway runs one itself.",
)
@storage_options
@click.option(
    "--upstream-timeout", type=float, help="Seconds to wait for powermem to start answering."
)
@click.option(
    "--relay-deadline",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds one relayed LLM call may take in all, retries included. [default: 120]",
)
@click.option(
    "--instance-rate-limit",
    type=int,
    help="Requests per minute allowed per instance. [default: no limit]",
)
@click.option(
    "--allow-private-base-urls/--deny-private-base-urls",
    "allow_private_base_urls",
    default=None,
    help="Whether client base URLs may reach private, loopback and link-local addresses. "
    "[default: allowed only while listening on loopback]",
)
@click.option(
    "--allow-base-url-host",
    "allowed_base_url_hosts",
    multiple=True,
    help="A host, address or CIDR block client base URLs may always reach (repeatable).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="A Host name the gateway also answers to, besides loopback (repeatable).",
)
@click.option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    help="A browser origin allowed cross-origin requests (repeatable). [default: none]",
)
@click.option(
    "--shared/--not-shared",
    default=None,
    help="Require instance secrets with ids. [default: shared when listening beyond loopback]",
)
@click.option(
    "--redis-url",
    help="Redis shared by the replicas: rate limits then hold across all of them "
    "(POWERMEM_GATEWAY_REDIS_URL, or _FILE). [default: limits per process]",
)
@click.option(
    "--registry-cache/--no-registry-cache",
    "registry_cache",
    default=None,
    help="With --database-url: cache records in each process, invalidated by LISTEN/NOTIFY "
    "(default), or read one row per bound request.",
)
@click.option(
    "--loop",
    type=click.Choice(["auto", "uvloop", "asyncio"]),
    help="The event loop: uvloop when installed (auto), or asyncio's. [default: auto]",
)
@click.option(
    "--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False)
)
@click.option(
    "--log-format",
    type=click.Choice(["json", "text"]),
    help="JSON lines (one object per line) or plain text. [default: json]",
)
def serve(**flags: Any) -> None:
    """Run the gateway (default 127.0.0.1:8848) and, without --upstream, powermem behind it.

    Every option can also be set as POWERMEM_GATEWAY_<OPTION> (e.g. POWERMEM_GATEWAY_PORT);
    secrets as POWERMEM_GATEWAY_SECRET, _ADMIN_TOKEN, _RELAY_TOKEN, _DATABASE_URL, _REDIS_URL
    or their _FILE variants (a file holding the value). With --database-url, replicas on
    several hosts share one registry: each needs the same POWERMEM_GATEWAY_SECRET and
    POWERMEM_GATEWAY_RELAY_TOKEN.
    """
    settings = load_settings(**flags)
    try:
        UrlPolicy.from_settings(settings)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--allow-base-url-host") from None
    if problem := exposure_problem(settings):
        raise click.ClickException(problem)
    # Everything the gateway writes (registry, cache, logs) is for its own user alone.
    os.umask(0o077)
    configure_logging(settings.log_level, settings.log_format)
    console = Console()
    try:
        socks = bind_listeners(settings.host, settings.port, settings.workers)
        # --port 0: the kernel chose; everything after this needs the real one.
        settings = settings.model_copy(update={"port": socks[0].getsockname()[1]})
        with contextlib.ExitStack() as held, DataDirLock(settings.data_dir):
            for sock in socks:
                held.enter_context(sock)
            _preflight(settings, console)
            code = run(supervise(settings, socks, console), settings.loop)
    except (ServeError, GatewayError) as exc:
        raise click.ClickException(exc.message) from None
    sys.exit(code)
