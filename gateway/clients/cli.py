"""`powermem-gateway register | unregister | doctor`: the client side of the gateway.

These commands talk to a running gateway over HTTP (`--gateway`, `POWERMEM_GATEWAY_URL`,
default http://127.0.0.1:8848), with `POWERMEM_GATEWAY_ADMIN_TOKEN` as the admin token when
the gateway needs one. A provider key is read from a variable or stdin, never from the command
line, and only ever sent in the body of a register or update call.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from gateway.clients.defaults import Found, defaults_for
from gateway.clients.doctor import Verdict, render, run_doctor
from gateway.clients.errors import ClientSetupError, MissingSetting
from gateway.clients.gatewayapi import GatewayAPI, gateway_url
from gateway.clients.locations import (
    FILE_CLIENTS,
    MCP_SERVER_NAME,
    CursorMcpJson,
    location_for,
    mcp_snippet,
)
from gateway.clients.register import checked_fields
from gateway.clients.register import register as register_instance
from gateway.clients.register import unregister as unregister_instance
from gateway.instances.model import mask_key
from gateway.providers import PROVIDERS, provider_names
from gateway.settings import Settings, default_data_dir
from gateway.tokens import RELAY_TOKEN_FILE, TokenError, read_admin_token

__all__ = ["doctor", "register", "unregister"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
KNOWN_CLIENTS = (*FILE_CLIENTS, "cursor")
_HINTS = {
    "claude-code": {
        "model": "or set ANTHROPIC_MODEL in the env block of ~/.claude/settings.json",
        "api_key": "or set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) in the env block of "
        "~/.claude/settings.json or in the environment",
    },
    "codex": {
        "model": "or set model in ~/.codex/config.toml",
        "api_key": "or set OPENAI_API_KEY (or the env_key of your model provider in "
        "~/.codex/config.toml)",
    },
    "opencode": {
        "model": 'or set "model": "provider/model" in ~/.config/opencode/opencode.json',
        "api_key": "or set <PROVIDER>_API_KEY, e.g. ANTHROPIC_API_KEY",
    },
}


def _gateway_option(fn: F) -> F:
    return click.option(
        "--gateway",
        "gateway",
        metavar="URL",
        help="The running gateway. [default: $POWERMEM_GATEWAY_URL or http://127.0.0.1:8848]",
    )(fn)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except ClientSetupError as exc:
        raise click.ClickException(exc.message) from None


def _api(gateway: str | None) -> GatewayAPI:
    try:
        url = gateway_url(gateway)
        # The gateway is closed by default: on its own machine the CLI finds the admin token
        # where the gateway keeps it (or where POWERMEM_GATEWAY_ADMIN_TOKEN[_FILE] says).
        admin_token = read_admin_token(Settings.from_env())
    except (ClientSetupError, TokenError) as exc:
        raise click.ClickException(exc.message) from None
    return GatewayAPI(url, admin_token=admin_token)


def _api_key(api_key_env: str | None, api_key_stdin: bool, found: Found) -> str:
    if api_key_env and api_key_stdin:
        raise click.UsageError("Give either --api-key-env or --api-key-stdin, not both.")
    if api_key_env:
        value = os.environ.get(api_key_env, "").strip()
        if not value:
            raise MissingSetting(f"--api-key-env {api_key_env}: that variable is not set.")
        found.where["api_key"] = f"{api_key_env} (--api-key-env)"
        return value
    if api_key_stdin:
        value = sys.stdin.readline().strip()
        if not value:
            raise MissingSetting("--api-key-stdin: no key on the first line of stdin.")
        found.where["api_key"] = "stdin"
        return value
    return found.api_key


def _settings(
    client: str, flags: Mapping[str, str | None], environ: Mapping[str, str]
) -> tuple[dict[str, str], Found]:
    """The register body from flags over the tool's own settings; clear errors when missing."""
    found = defaults_for(client, home=Path.home(), environ=environ)
    provider = (flags["provider"] or "").strip().lower()
    if provider and provider != found.provider:
        # The tool's URL, key and model belong to its own provider, not to this one.
        found = Found(warnings=found.warnings)
        found.provider = provider
    for name in ("model", "base_url"):
        if flags[name] is not None:
            setattr(found, name, flags[name])
            found.where.pop(name, None)
    api_key = _api_key(flags["api_key_env"], bool(flags["api_key_stdin"]), found)
    hints = _HINTS.get(client, {})
    if not found.provider:
        raise MissingSetting(
            f"No provider: pass --provider (one of {', '.join(provider_names())})."
        )
    if not found.model:
        raise MissingSetting(f"No model: pass --model {hints.get('model', '')}".strip() + ".")
    spec = PROVIDERS.get(found.provider)
    if not api_key and found.missing_key:
        raise MissingSetting(
            f"No API key: {found.missing_key}, the variable your {client} configuration names "
            "for its key, is not set in this shell. Export it, or pass --api-key-env VAR or "
            "--api-key-stdin; nothing was changed."
        )
    if not api_key and spec is not None and not spec.keyless:
        raise MissingSetting(
            f"No API key for provider {found.provider}: pass --api-key-env VAR (a variable "
            f"holding it) or --api-key-stdin {hints.get('api_key', '')}".strip()
            + "."
        )
    fields = checked_fields(
        client=client,
        provider=found.provider,
        model=found.model,
        api_key=api_key,
        base_url=found.base_url,
    )
    return fields, found


@click.command()
@click.option(
    "--client",
    required=True,
    help="claude-code, codex, opencode, cursor, or any MCP client's name "
    "(with --print-mcp-config).",
)
@click.option("--provider", help="LLM provider, e.g. anthropic, openai, deepseek.")
@click.option("--model", help="Model name, e.g. claude-sonnet-4-6.")
@click.option("--base-url", help="Provider base URL (only for non-default endpoints).")
@click.option("--api-key-env", metavar="VAR", help="Read the key from this variable.")
@click.option("--api-key-stdin", is_flag=True, help="Read the key from the first line of stdin.")
@click.option(
    "--global",
    "cursor_global",
    is_flag=True,
    help="Cursor: write ~/.cursor/mcp.json instead of the project's .cursor/mcp.json.",
)
@click.option("--print-mcp-config", is_flag=True, help="Print the MCP server entry to paste.")
@click.option(
    "--force",
    is_flag=True,
    help="Allow an update that drops the stored key (a switch to a keyless provider).",
)
@_gateway_option
def register(
    client: str,
    gateway: str | None,
    cursor_global: bool,
    print_mcp_config: bool,
    force: bool,
    **flags: str | None,
) -> None:
    """Register a coding tool with the gateway and save its instance id where it looks.

    Without flags, provider, model, base URL and key come from the tool's own settings
    (Claude Code's ~/.claude/settings.json, Codex's ~/.codex/config.toml, OpenCode's
    opencode.json). Running it again with the same settings changes nothing; with a new key
    it updates the same instance.
    """
    client = client.strip()
    if client not in KNOWN_CLIENTS and not print_mcp_config:
        raise click.UsageError(
            f"Unknown client {client!r}: use one of {', '.join(KNOWN_CLIENTS)}, or add "
            "--print-mcp-config to get the MCP server entry to paste into its config."
        )
    say = _echo(print_mcp_config)
    api = _api(gateway)
    try:
        fields, found = _settings(client, flags, os.environ)
    except ClientSetupError as exc:
        raise click.ClickException(exc.message) from None
    location = location_for(client, home=Path.home(), gateway=api.url, cursor_global=cursor_global)

    async def action() -> Any:
        async with api:
            return await register_instance(api, fields, location, force=force)

    outcome = _run(action())
    for warning in found.warnings:
        say(f"note: {warning}")
    for name, where in sorted(found.where.items()):
        say(f"{name.replace('_', ' ')}: from {where}")
    what = f"{fields['provider']} / {fields['model']}, key {mask_key(fields['api_key']) or '-'}"
    iid = outcome.instance_id
    say(
        {
            "registered": f"Registered {client} as {iid} ({what}).",
            "unchanged": f"{client} is already registered as {iid} ({what}); nothing changed.",
            "updated": f"Updated {iid} for {client} ({what}); the id stays the same.",
            "replaced": f"{client} now uses {iid} ({what}).",
        }[outcome.action]
    )
    if outcome.note:
        say(f"note: {outcome.note}.")
    if isinstance(location, CursorMcpJson):
        say(f"{location.path}: mcpServers.{MCP_SERVER_NAME} sends X-PowerMem-Instance: {iid}")
    elif location is not None:
        say(f"Saved to {location.path} (mode 0600).")
    if print_mcp_config:
        snippet = {"mcpServers": {MCP_SERVER_NAME: mcp_snippet(api.url, iid)}}
        click.echo(json.dumps(snippet, indent=2))


def _echo(to_stderr: bool) -> Callable[[str], None]:
    def say(message: str) -> None:
        click.echo(message, err=to_stderr)

    return say


@click.command()
@click.option("--client", required=True, help=f"One of {', '.join(KNOWN_CLIENTS)}.")
@click.option("--global", "cursor_global", is_flag=True, help="Cursor: use ~/.cursor/mcp.json.")
@_gateway_option
def unregister(client: str, cursor_global: bool, gateway: str | None) -> None:
    """Delete a tool's instance from the gateway and remove its saved id."""
    api = _api(gateway)
    location = location_for(client, home=Path.home(), gateway=api.url, cursor_global=cursor_global)
    if location is None:
        raise click.UsageError(
            f"{client!r} has no saved id here (known: {', '.join(KNOWN_CLIENTS)}); remove its "
            "instance with `powermem-gateway instances remove ID`."
        )

    async def action() -> str | None:
        async with api:
            return await unregister_instance(api, location)

    removed = _run(action())
    if removed is None:
        click.echo(f"No instance id saved for {client} in {location.path}; nothing to do.")
    else:
        click.echo(f"Deleted {removed} and removed it from {location.path}.")


def _relay_token(data_dir: str | None) -> str | None:
    if token := os.environ.get("POWERMEM_GATEWAY_RELAY_TOKEN"):
        return token
    folder = Path(data_dir).expanduser() if data_dir else default_data_dir()
    try:
        return (folder / RELAY_TOKEN_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


@click.command()
@_gateway_option
@click.option(
    "--probe-providers",
    is_flag=True,
    help="Make a one-token LLM call through the relay for each saved instance.",
)
@click.option(
    "--data-dir",
    envvar="POWERMEM_GATEWAY_DATA_DIR",
    help="The gateway's data dir, for its relay token (--probe-providers). "
    "[default: ~/.powermem/gateway]",
)
def doctor(gateway: str | None, probe_providers: bool, data_dir: str | None) -> None:
    """Check the chain: gateway, upstream, relay wiring, saved ids, providers."""
    api = _api(gateway)

    async def action() -> list[Verdict]:
        async with api:
            return await run_doctor(
                api,
                home=Path.home(),
                probe_providers=probe_providers,
                relay_token=_relay_token(data_dir) if probe_providers else None,
            )

    verdicts = _run(action())
    click.echo(f"powermem-gateway doctor: {api.url}")
    click.echo(render(verdicts))
    if any(v.state == "fail" for v in verdicts):
        click.get_current_context().exit(1)
