"""Listing instances: pages, totals and (for the CLI) everything, all counted by the store.

Nothing here walks the stored instances on the event loop (issue 12.2): pages and counts are
SQL on the registry's worker thread. The instances.yaml entries are held in memory anyway
(bounded by `yamlfile.MAX_ENTRIES`) and come first, in id order.
"""

from __future__ import annotations

from bisect import bisect_right

from gateway.instances.cached_store import CachedStore, to_record
from gateway.instances.model import InstanceRecord
from gateway.instances.paging import MAX_LIMIT, Cursor, Page, decode_cursor, encode_cursor
from gateway.instances.yamlfile import InstancesFile

__all__ = ["everything", "page", "total"]


def _matches(record: InstanceRecord, client: str | None, provider: str | None) -> bool:
    return (client is None or record.client == client) and (
        provider is None or record.provider == provider
    )


async def page(
    data: CachedStore,
    file: InstancesFile,
    limit: int,
    cursor: str | None,
    client: str | None,
    provider: str | None,
) -> Page:
    """Up to `limit` instances after `cursor`, and the cursor of the next page (if any)."""
    limit = max(1, min(int(limit), MAX_LIMIT))
    after = decode_cursor(cursor)
    want = limit + 1  # one more than asked: is there a next page?
    items: list[InstanceRecord] = []
    ids = file.sorted_ids
    if after.stored is None:
        start = bisect_right(ids, after.yaml) if after.yaml is not None else 0
        for instance_id in ids[start:]:
            record = file.records[instance_id]
            if _matches(record, client, provider):
                items.append(record)
                if len(items) == want:
                    break
    if len(items) < want:
        rows = await data.run(
            data.store.page,
            limit=want - len(items),
            after=after.stored,
            client=client,
            provider=provider,
            exclude=ids,
        )
        items.extend(to_record(r) for r in rows)
    if len(items) <= limit:
        return Page(items)
    items = items[:limit]
    last = items[-1]
    if last.source == "yaml":
        next_cursor = Cursor(yaml=last.instance_id)
    else:
        next_cursor = Cursor(stored=(last.created_at, last.instance_id))
    return Page(items, encode_cursor(next_cursor))


async def total(
    data: CachedStore, file: InstancesFile, client: str | None, provider: str | None
) -> int:
    in_file = sum(1 for r in file.records.values() if _matches(r, client, provider))
    stored = await data.run(
        data.store.total, client=client, provider=provider, exclude=file.sorted_ids
    )
    return in_file + stored


async def everything(data: CachedStore, file: InstancesFile) -> list[InstanceRecord]:
    """Every instance, a page at a time (the CLI's full listing; the API pages)."""
    found = [file.records[i] for i in file.sorted_ids]
    after: tuple[str, str] | None = None
    while True:
        rows = await data.run(
            data.store.page,
            limit=MAX_LIMIT,
            after=after,
            client=None,
            provider=None,
            exclude=file.sorted_ids,
        )
        found.extend(to_record(r) for r in rows)
        if len(rows) < MAX_LIMIT:
            return found
        after = (rows[-1].created_at, rows[-1].instance_id)
