"""The `powermem-gateway` command."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from gateway.errors import GatewayError
from gateway.settings import Settings

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def _storage_options(fn: F) -> F:
    """The options that say where the gateway keeps its data (shared by several commands)."""
    for option in reversed(
        [
            click.option(
                "--data-dir",
                envvar="POWERMEM_GATEWAY_DATA_DIR",
                help="Registry, keys and logs. [default: ~/.powermem/gateway]",
            ),
            click.option(
                "--instances-file",
                envvar="POWERMEM_GATEWAY_INSTANCES_FILE",
                help="Human-managed instances. [default: ~/.powermem/instances.yaml]",
            ),
            click.option(
                "--env-file",
                envvar="POWERMEM_ENV_FILE",
                help="powermem's global settings. [default: ~/.powermem/.env]",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def _settings(**values: Any) -> Settings:
    for name in ("data_dir", "instances_file", "env_file"):
        if name in values:
            values[name] = _path(values[name])
    return Settings.from_env(**values)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None


@click.group()
@click.version_option(package_name="powermem-gateway")
def cli() -> None:
    """Many AI coding tools, one powermem server, each with its own LLM."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="POWERMEM_GATEWAY_HOST")
@click.option("--port", default=8848, show_default=True, envvar="POWERMEM_GATEWAY_PORT")
@click.option(
    "--upstream",
    envvar="POWERMEM_GATEWAY_UPSTREAM",
    help="URL of an external powermem server; without it the gateway runs one itself.",
)
@_storage_options
@click.option(
    "--upstream-timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds to wait for powermem to start answering a request.",
)
@click.option(
    "--instance-rate-limit",
    type=int,
    envvar="POWERMEM_GATEWAY_INSTANCE_RATE_LIMIT",
    help="Requests per minute allowed per instance (default: no limit).",
)
@click.option(
    "--allow-private-base-urls/--deny-private-base-urls",
    "allow_private_base_urls",
    default=None,
    envvar="POWERMEM_GATEWAY_ALLOW_PRIVATE_BASE_URLS",
    help="Whether client base URLs may reach private, loopback and link-local addresses. "
    "[default: allowed only while listening on loopback]",
)
@click.option(
    "--allow-base-url-host",
    "allowed_base_url_hosts",
    multiple=True,
    help="A host name, address or CIDR block client base URLs may always reach, even a "
    "private or cloud-metadata one (repeatable; env POWERMEM_GATEWAY_ALLOWED_BASE_URL_HOSTS, "
    "comma-separated).",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    envvar="POWERMEM_GATEWAY_LOG_LEVEL",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--log-format",
    default="json",
    show_default=True,
    envvar="POWERMEM_GATEWAY_LOG_FORMAT",
    type=click.Choice(["json", "text"]),
    help="JSON lines (one object per line) or plain text.",
)
def serve(**values: Any) -> None:
    """Run the gateway (default 127.0.0.1:8848)."""
    from aiohttp import web

    from gateway.observe.logs import configure_logging

    values["allowed_base_url_hosts"] = tuple(values["allowed_base_url_hosts"]) or None
    settings = _settings(**values)
    from gateway.policy.baseurls import UrlPolicy

    try:
        UrlPolicy.from_settings(settings)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--allow-base-url-host") from None
    # Everything the gateway writes (registry, cache, logs) is for its own user alone.
    os.umask(0o077)
    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(_serve(settings))
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None


async def _serve(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM (aiohttp's runner turns them into `GracefulExit`)."""
    from aiohttp import web

    from gateway.front.runner import GatewayRunner
    from gateway.http.app import create_app

    runner = GatewayRunner(create_app(settings), handle_signals=True, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        click.echo(f"powermem-gateway listening on http://{settings.host}:{settings.port}")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


@cli.group()
def instances() -> None:
    """Inspect and remove registered instances (keys are always masked)."""


async def _with_registry(settings: Settings, action: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from gateway.instances.registry import Registry

    registry = await Registry.open(settings)
    try:
        return await action(registry)
    finally:
        await registry.close()


@instances.command("list")
@_storage_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def instances_list(as_json: bool, **values: Any) -> None:
    """List every instance."""

    async def action(registry: Any) -> list[dict[str, Any]]:
        for problem in registry.file_problems:  # bad entries are skipped, never hidden
            click.echo(f"warning: instances.yaml: {problem}", err=True)
        return [r.public() for r in await registry.list()]

    rows = _run(_with_registry(_settings(**values), action))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No instances registered.")
        return
    for row in rows:
        flag = " (instances.yaml)" if row["read_only"] else ""
        click.echo(
            f"{row['instance_id']}  {row['client'] or '-':<12} {row['provider']:<10} "
            f"{row['model']:<28} key {row['api_key'] or '-'}{flag}"
        )


@instances.command("show")
@click.argument("instance_id")
@_storage_options
def instances_show(instance_id: str, **values: Any) -> None:
    """Show one instance with its usage counters."""

    async def action(registry: Any) -> dict[str, Any]:
        record = await registry.get(instance_id)
        data: dict[str, Any] = record.public(await registry.usage(instance_id))
        return data

    click.echo(json.dumps(_run(_with_registry(_settings(**values), action)), indent=2))


@instances.command("remove")
@click.argument("instance_id")
@_storage_options
def instances_remove(instance_id: str, **values: Any) -> None:
    """Delete an instance; clients using its id get a clear error from then on."""

    async def action(registry: Any) -> None:
        await registry.delete(instance_id, source="cli")

    _run(_with_registry(_settings(**values), action))
    click.echo(f"Removed {instance_id}.")


@cli.group()
def secret() -> None:
    """Manage the master key that encrypts stored API keys."""


@secret.command("rotate")
@_storage_options
def secret_rotate(**values: Any) -> None:
    """Re-encrypt every stored API key under a new master key.

    With a generated master.key (the default) this makes a new key and retires the old one
    once no stored key needs it. With POWERMEM_GATEWAY_SECRET: first restart every gateway
    with the new secret in POWERMEM_GATEWAY_SECRET and the old one in
    POWERMEM_GATEWAY_PREVIOUS_SECRET, run this with the same two variables, then drop
    POWERMEM_GATEWAY_PREVIOUS_SECRET. Running gateways keep working throughout; if this
    command is interrupted, run it again to finish.
    """

    async def action(registry: Any) -> Any:
        return await registry.rotate_master_key(source="cli")

    settings = _settings(**values)
    report = _run(_with_registry(settings, action))
    verb = "Finished the interrupted rotation to" if report.resumed else "Rotated to"
    click.echo(
        f"{verb} master key {report.key_id}: {report.reencrypted} stored key(s) re-encrypted"
        + (f", retired key(s) {', '.join(report.retired)}." if report.retired else ".")
    )
    if settings.secret and not report.previous_key_ids and not report.retired:
        click.echo(
            "Every stored key already uses POWERMEM_GATEWAY_SECRET. To change the secret: "
            "restart the gateways with the new secret in POWERMEM_GATEWAY_SECRET and the old "
            "one in POWERMEM_GATEWAY_PREVIOUS_SECRET, run this command with both set, then "
            "drop POWERMEM_GATEWAY_PREVIOUS_SECRET."
        )
    elif settings.secret:
        click.echo("POWERMEM_GATEWAY_PREVIOUS_SECRET is no longer needed.")


@cli.command("upstream-env")
@_storage_options
@click.option(
    "--relay-url",
    help="Where that powermem server reaches this gateway's relay. "
    "[default: http://127.0.0.1:8848/relay/v1]",
)
def upstream_env(relay_url: str | None, **values: Any) -> None:
    """Print the environment an external powermem server needs to use the relay.

    Use it as that server's .env (it holds the relay token and the storage settings of
    your global .env); then run it as `opentelemetry-instrument powermem-server`.
    """
    from gateway.proxy.upstream_env import read_env_file, render_env, upstream_environment
    from gateway.relay.token import load_relay_token

    settings = _settings(**values)
    env = upstream_environment(
        read_env_file(settings.env_file),
        relay_url=relay_url or settings.relay_url,
        relay_token=load_relay_token(settings),
        data_dir=None,
    )
    click.echo(render_env(env), nl=False)


from gateway.clients.cli import doctor, register, unregister  # noqa: E402

cli.add_command(register)
cli.add_command(unregister)
cli.add_command(doctor)


def main() -> None:
    cli(prog_name="powermem-gateway")


if __name__ == "__main__":  # pragma: no cover
    main()
