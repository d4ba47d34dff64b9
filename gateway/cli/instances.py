"""`powermem-gateway instances list | show | remove`: the registry, read where it lives."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from gateway.cli.common import load_settings, run, storage_options
from gateway.instances.paging import MAX_LIMIT
from gateway.settings import Settings

__all__ = ["instances"]

T = TypeVar("T")
PAGE = 100


@click.group()
def instances() -> None:
    """Inspect and remove registered instances (keys are always masked)."""


async def _with_registry(settings: Settings, action: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from gateway.instances.registry import Registry

    registry = await Registry.open(settings)
    try:
        return await action(registry)
    finally:
        await registry.close()


def _line(row: dict[str, Any]) -> str:
    flag = " (instances.yaml)" if row["read_only"] else ""
    return (
        f"{row['instance_id']}  {row['client'] or '-':<12} {row['provider']:<10} "
        f"{row['model']:<28} key {row['api_key'] or '-'}{flag}"
    )


@instances.command("list")
@storage_options
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=PAGE, show_default=True)
@click.option("--cursor", help="Where the previous page ended (printed at its end).")
@click.option("--all", "everything", is_flag=True, help="Every page, one after the other.")
@click.option("--client", help="Only instances of this client label.")
@click.option("--provider", help="Only instances of this provider.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the instances as one JSON array (masked)."
)
def instances_list(
    limit: int,
    cursor: str | None,
    everything: bool,
    client: str | None,
    provider: str | None,
    as_json: bool,
    **values: Any,
) -> None:
    """List instances, a page at a time (instances.yaml first, then by creation).

    Pages come from the registry's own paging (SQL), so a listing never holds every instance
    in memory; --all streams page after page. What follows a page (its count and the command
    for the next one) goes to stderr, so stdout stays the rows for scripts.
    """

    async def action(registry: Any) -> None:
        for problem in registry.file_problems:  # bad entries are skipped, never hidden
            click.echo(f"warning: instances.yaml: {problem}", err=True)
        total = await registry.total(client=client, provider=provider)
        after, shown = cursor, 0
        if as_json:
            click.echo("[", nl=False)
        while True:
            page = await registry.page(limit, after, client=client, provider=provider)
            for record in page.items:
                row = record.public()
                if as_json:
                    click.echo(("," if shown else "") + "\n" + json.dumps(row, indent=2), nl=False)
                else:
                    click.echo(_line(row))
                shown += 1
            after = page.next_cursor
            if not (everything and after):
                break
        if as_json:
            click.echo("\n]" if shown else "]")
        elif not total:
            click.echo("No instances registered.")
        if after:
            click.echo(
                f"-- {shown} of {total}; next page: powermem-gateway instances list "
                f"--cursor {after} (or --all)",
                err=True,
            )

    run(_with_registry(load_settings(**values), action))


@instances.command("show")
@click.argument("instance_id")
@storage_options
def instances_show(instance_id: str, **values: Any) -> None:
    """Show one instance with its usage counters."""

    async def action(registry: Any) -> dict[str, Any]:
        record = await registry.get(instance_id)
        data: dict[str, Any] = record.public(await registry.usage(instance_id))
        return data

    click.echo(json.dumps(run(_with_registry(load_settings(**values), action)), indent=2))


@instances.command("remove")
@click.argument("instance_id")
@storage_options
def instances_remove(instance_id: str, **values: Any) -> None:
    """Delete an instance; clients using its id get a clear error from then on."""

    async def action(registry: Any) -> None:
        await registry.delete(instance_id, source="cli")

    run(_with_registry(load_settings(**values), action))
    click.echo(f"Removed {instance_id}.")
