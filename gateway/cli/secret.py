"""`powermem-gateway secret rotate | reset`: the master key that encrypts stored API keys."""

from __future__ import annotations

from typing import Any

import click

from gateway.cli.common import load_settings, run, storage_options
from gateway.cli.instances import _with_registry

__all__ = ["secret"]


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
    command is interrupted, run it again to finish.
    """

    async def action(registry: Any) -> Any:
        return await registry.rotate_master_key(source="cli")

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
