"""`powermem-gateway secret rotate | reset`: the master key that encrypts stored API keys."""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any, TextIO

import click

from gateway.cli.common import load_settings, run, storage_options
from gateway.cli.instances import _with_registry
from gateway.errors import GatewayError
from gateway.instances.reset import reset_stored_keys
from gateway.process.datalock import DataDirLock
from gateway.process.errors import ServeError

__all__ = ["ProgressBar", "secret"]


class ProgressBar:
    """`bar(done, total)` redraws one line on a terminal; elsewhere it stays silent (the
    final count is printed either way). Called from the registry's worker thread."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._label = label
        self.tty = self._stream.isatty()
        self._drawn = False
        self._started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if not self.tty or total <= 0:
            return
        width = max(10, min(40, shutil.get_terminal_size((80, 20)).columns - 50))
        filled = width * done // total
        elapsed = time.monotonic() - self._started
        line = (
            f"\r\x1b[2K{self._label} [{'#' * filled}{'-' * (width - filled)}] "
            f"{done}/{total} ({100 * done // total}%, {elapsed:.0f}s)"
        )
        self._stream.write(line)
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False


@click.group()
def secret() -> None:
    """Manage the master key that encrypts stored API keys."""


@secret.command("rotate")
@storage_options
def secret_rotate(**values: Any) -> None:
    """Re-encrypt every stored API key under a new master key.

    With a generated master.key (the default) this makes a new key and retires the old one
    once no stored key needs it. With POWERMEM_GATEWAY_SECRET: first restart every gateway
    with the new secret in POWERMEM_GATEWAY_SECRET and the old one in
    POWERMEM_GATEWAY_PREVIOUS_SECRET, run this with the same two variables, then drop
    POWERMEM_GATEWAY_PREVIOUS_SECRET. Running gateways keep working throughout; if this
    command is interrupted, run it again to finish. On a terminal a progress bar shows how
    many stored keys are done.
    """
    bar = ProgressBar("re-encrypting stored keys")

    async def action(registry: Any) -> Any:
        try:
            return await registry.rotate_master_key(source="cli", progress=bar)
        finally:
            bar.close()

    settings = load_settings(**values)
    report = run(_with_registry(settings, action))
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


@secret.command("reset")
@storage_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
def secret_reset(yes: bool, **values: Any) -> None:
    """Drop every stored API key, knowingly, when the master key is lost for good.

    Use it only when master.key (or POWERMEM_GATEWAY_SECRET) is gone and no backup exists:
    the stored keys cannot be read by anyone then. Every instance keeps its id; each gets a
    key again from its tool's next request with the same configuration, or from
    `register` / a PUT with api_key. Keyless instances (ollama, vllm) lose nothing. Stop the
    gateway first: a running one still holds the old key.
    """
    settings = load_settings(**values)
    if not yes:
        if not sys.stdin.isatty():
            raise click.ClickException(
                "secret reset drops every stored API key; confirm on a terminal, or pass --yes "
                "(nothing was changed)."
            )
        click.confirm(
            f"Drop every stored API key in {settings.data_dir}? Instances keep their ids, but "
            "each needs its key again",
            abort=True,
        )
    try:
        with DataDirLock(settings.data_dir):
            report = reset_stored_keys(settings)
    except ServeError as exc:
        raise click.ClickException(
            f"{exc.message} A running gateway still holds the old master key: stop it before "
            "secret reset (nothing was changed)."
        ) from None
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(
        f"Dropped {report.dropped} stored key(s); new keys are encrypted under master key "
        f"{report.key_id}."
        + (f" Removed {', '.join(report.removed_key_files)}." if report.removed_key_files else "")
    )
    click.echo(
        "Every instance keeps its id. Each gets its key back from its tool's next request "
        "with the same configuration, or from `powermem-gateway register` / a PUT with "
        "api_key; until then its calls are refused (409), never sent without a key."
    )
