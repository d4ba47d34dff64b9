"""`powermem-gateway instances list | show | remove`: the registry, read where it lives."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from gateway.cli.common import load_settings, run, storage_options
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


def _page(
    rows: list[dict[str, Any]],
    limit: int,
    cursor: str | None,
    client: str | None,
    provider: str | None,
) -> tuple[list[dict[str, Any]], int, str | None]:
    """One page in id order after `cursor`: (rows, total matching, next cursor or None).

    The registry lists everything at once today; paging here keeps the terminal and scripts
    usable at 50 000 instances until the registry pages in SQL (issue 11.8).
    """
    matching = sorted(
        (
            r
            for r in rows
            if (client is None or r["client"] == client)
            and (provider is None or r["provider"] == provider)
        ),
        key=lambda r: str(r["instance_id"]),
    )
    after = [r for r in matching if cursor is None or str(r["instance_id"]) > cursor]
    page = after[:limit]
    more = len(after) > limit
    return page, len(matching), str(page[-1]["instance_id"]) if more and page else None


@instances.command("list")
@storage_options
@click.option("--limit", type=click.IntRange(1, 10_000), default=PAGE, show_default=True)
@click.option("--cursor", help="Start after this instance id (printed at the end of a page).")
@click.option("--all", "everything", is_flag=True, help="Every page, one after the other.")
@click.option("--client", help="Only instances of this client label.")
@click.option("--provider", help="Only instances of this provider.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON: {instances, total, next_cursor}."
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
    """List instances, a page at a time (ordered by id)."""

    async def action(registry: Any) -> list[dict[str, Any]]:
        for problem in registry.file_problems:  # bad entries are skipped, never hidden
            click.echo(f"warning: instances.yaml: {problem}", err=True)
        return [r.public() for r in await registry.list()]

    rows = run(_with_registry(load_settings(**values), action))
    while True:
        page, total, next_cursor = _page(rows, limit, cursor, client, provider)
        if as_json:
            click.echo(json.dumps(page, indent=2))
        elif not total:
            click.echo("No instances registered.")
        else:
            for row in page:
                flag = " (instances.yaml)" if row["read_only"] else ""
                click.echo(
                    f"{row['instance_id']}  {row['client'] or '-':<12} {row['provider']:<10} "
                    f"{row['model']:<28} key {row['api_key'] or '-'}{flag}"
                )
        if next_cursor and not everything:
            # On stderr: stdout stays the rows (a JSON array with --json) for scripts.
            click.echo(
                f"-- {len(page)} of {total}; next page: powermem-gateway instances list "
                f"--cursor {next_cursor} (or --all)",
                err=True,
            )
        if not (everything and next_cursor):
            return
        cursor = next_cursor


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
