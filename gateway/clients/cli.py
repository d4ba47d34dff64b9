"""`powermem-gateway register | unregister`: the client side of the gateway.

These commands talk to a running gateway over HTTP (`--gateway`, `POWERMEM_GATEWAY_URL`,
default http://127.0.0.1:8848), with the admin token of gateway.tokens when the
gateway needs one. A provider key is read from a variable or stdin, never from the command
line, and only ever sent in the body of a register or update call. An instance secret is
written only into the tool's own config file; messages show it masked.
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
from gateway.clients.errors import ClientSetupError, MissingSetting
from gateway.clients.gatewayapi import GatewayAPI, gateway_url
from gateway.clients.knobs import Records, overriding_base_url
from gateway.clients.register import Registered, checked_fields
from gateway.clients.register import register as register_instance
from gateway.clients.register import unregister as unregister_instance
from gateway.clients.scoped import MCP_SUFFIX, masked
from gateway.clients.tools import KNOWN_CLIENTS, Tool, mcp_config, tool_for
from gateway.instances.model import mask_key
from gateway.providers import PROVIDERS, provider_names
from gateway.settings import Settings
from gateway.tokens import TokenError, read_admin_token

__all__ = ["api_for", "gateway_option", "register", "run_client", "unregister"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
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


def gateway_option(fn: F) -> F:
    return click.option(
        "--gateway",
        "gateway",
        metavar="URL",
        help="The running gateway. [default: $POWERMEM_GATEWAY_URL or http://127.0.0.1:8848]",
    )(fn)


def run_client(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except ClientSetupError as exc:
        raise click.ClickException(exc.message) from None


def api_for(gateway: str | None, data_dir: str | None = None) -> GatewayAPI:
    try:
        url = gateway_url(gateway)
        # The gateway is closed by default: on its own machine the CLI finds the admin token
        # where the gateway keeps it (or where POWERMEM_GATEWAY_ADMIN_TOKEN[_FILE] says).
        settings = Settings.from_env()
        if data_dir:
            settings = settings.model_copy(update={"data_dir": Path(data_dir).expanduser()})
        token = read_admin_token(settings)
    except (ClientSetupError, TokenError) as exc:
        raise click.ClickException(exc.message) from None
    return GatewayAPI(url, admin_token=token)


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
@click.option(
    "--print-mcp-config",
    is_flag=True,
    help="Print the MCP server entry to paste (it holds the instance secret on a shared gateway).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Allow an update that drops the stored key (a switch to a keyless provider).",
)
@gateway_option
def register(
    client: str,
    gateway: str | None,
    cursor_global: bool,
    print_mcp_config: bool,
    force: bool,
    **flags: str | None,
) -> None:
    """Register a coding tool and point it at its own instance-scoped URL.

    Without flags, provider, model, base URL and key come from the tool's own settings
    (Claude Code's ~/.claude/settings.json, Codex's ~/.codex/config.toml, OpenCode's
    opencode.json). Then the setting the tool really reads gets the scoped URL: Claude Code's
    POWERMEM_BASE_URL in powermem's runtime.env, Cursor's and Codex's and OpenCode's MCP
    server entry; the id goes to the tool's id file as well. Running it again with the same
    settings changes nothing; with a new key it updates the same instance.
    """
    client = client.strip()
    if client not in KNOWN_CLIENTS and not print_mcp_config:
        raise click.UsageError(
            f"Unknown client {client!r}: use one of {', '.join(KNOWN_CLIENTS)}, or add "
            "--print-mcp-config to get the MCP server entry to paste into its config."
        )
    say = _echo(print_mcp_config)
    api = api_for(gateway)
    home = Path.home()
    try:
        fields, found = _settings(client, flags, os.environ)
        tool = tool_for(client, home=home, environ=os.environ, cursor_global=cursor_global)
    except ClientSetupError as exc:
        raise click.ClickException(exc.message) from None

    async def action() -> Registered:
        async with api:
            return await register_instance(api, fields, tool, Records(home), force=force)

    done = run_client(action())
    for warning in found.warnings:
        say(f"note: {warning}")
    for name, where in sorted(found.where.items()):
        say(f"{name.replace('_', ' ')}: from {where}")
    _report(say, client, fields, done, tool)
    if print_mcp_config:
        click.echo(json.dumps(mcp_config(done.base + MCP_SUFFIX), indent=2))


def _report(
    say: Callable[[str], None],
    client: str,
    fields: dict[str, str],
    done: Registered,
    tool: Tool | None,
) -> None:
    outcome = done.outcome
    what = f"{fields['provider']} / {fields['model']}, key {mask_key(fields['api_key']) or '-'}"
    iid = outcome.instance_id
    say(
        {
            "registered": f"Registered {client} as {iid} ({what}).",
            "unchanged": f"{client} is already registered as {iid} ({what})"
            + ("." if done.knob_changed else "; nothing changed."),
            "updated": f"Updated {iid} for {client} ({what}); the id stays the same.",
            "replaced": f"{client} now uses {iid} ({what}).",
        }[outcome.action]
    )
    for note in ([outcome.note] if outcome.note else []) + done.notes:
        say(f"note: {note}.")
    if tool is None:
        return
    if tool.id_file is not None:
        say(f"Saved the id to {tool.id_file.path} (mode 0600).")
    if tool.knob is not None:
        knob = tool.knob
        url = masked(knob.url_for(done.base))
        verb = "now points at" if done.knob_changed else "already points at"
        say(f"{knob.file.path}: {knob.file.setting} {verb} {url}")
    if client == "claude-code" and (override := overriding_base_url(Path.home(), os.environ)):
        where, value = override
        say(
            f"warning: POWERMEM_BASE_URL={masked(value)} is also set in {where}; powermem's "
            "hook launcher prefers it over runtime.env, so remove it there (or set it to the "
            "URL above)."
        )


def _echo(to_stderr: bool) -> Callable[[str], None]:
    def say(message: str) -> None:
        click.echo(message, err=to_stderr)

    return say


@click.command()
@click.option("--client", required=True, help=f"One of {', '.join(KNOWN_CLIENTS)}.")
@click.option("--global", "cursor_global", is_flag=True, help="Cursor: use ~/.cursor/mcp.json.")
@gateway_option
def unregister(client: str, cursor_global: bool, gateway: str | None) -> None:
    """Delete a tool's instance, put its knob back as it was and remove its saved id."""
    api = api_for(gateway)
    home = Path.home()
    tool = tool_for(client, home=home, environ=os.environ, cursor_global=cursor_global)
    if tool is None:
        raise click.UsageError(
            f"{client!r} has no saved id here (known: {', '.join(KNOWN_CLIENTS)}); remove its "
            "instance with `powermem-gateway instances remove ID`."
        )

    async def action() -> tuple[str | None, list[str]]:
        async with api:
            return await unregister_instance(api, tool, Records(home))

    removed, done = run_client(action())
    if removed is None:
        click.echo(f"No instance saved for {client} here; nothing to do.")
        return
    click.echo(f"Deleted {removed}.")
    for line in done:
        click.echo(line + ".")
