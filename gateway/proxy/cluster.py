"""The request ledger across replicas: a relay call may reach another replica than its request.

In a team deployment one external powermem calls the relay through the load balancer, so the
LLM call of a request forwarded by replica A may land on replica B, which cannot read A's
shared memory (gateway.proxy.ledger). Here each nonce names the replica that issued it
(`<replica>.<worker>-<slot>-<tag>`), and B asks A: one NOTIFY to the channel of the worker
that holds the slot, one NOTIFY back, on the registry's own PostgreSQL (no other service
needed). A checks the nonce against its table exactly as for a local call, and B writes the
call's outcome back the same way, awaiting A's answer before it answers powermem, so A's
`X-PowerMem-LLM-Error` and the wiring probe see it as if the call had been local.

Nothing changes on the proxy path: issuing and releasing a slot stay in shared memory, with no
network call. Only a relay call that lands on another replica pays the two round trips (about
a millisecond, next to an LLM call of a second or more; see benchmarks/). A replica that is
gone, or a database that cannot be reached, means the call is refused: the request it belonged
to cannot be answered anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from gateway.files import write_private_file_once
from gateway.proxy.ledger import REASONS, Entry, Ledger

__all__ = ["REPLICA_FILE", "ClusterLedger", "replica_id"]

log = logging.getLogger("gateway.ledger")

REPLICA_FILE = "replica.id"
CHANNEL = "powermem_gateway_ledger_{replica}_{worker:x}"
ASK_TIMEOUT = 5.0  # seconds a replica has to answer about its nonce
REMOTE_SLOTS = 4096  # remote admissions remembered until their outcome is written


def replica_id(run_dir: Path | None) -> str:
    """This `serve`'s name among the replicas: one for all its workers, new at every start."""
    if run_dir is None:
        return secrets.token_hex(8)
    return write_private_file_once(run_dir / REPLICA_FILE, secrets.token_hex(8) + "\n").strip()


@dataclass(frozen=True, slots=True)
class _Remote:
    nonce: str
    instance_id: str | None
    probe: bool


class ClusterLedger(Ledger):
    """This host's ledger, plus other replicas' nonces asked of them; `start()` to join."""

    replica = ""
    _url = ""

    def join(self, url: str, replica: str) -> None:
        self._url = url
        self.replica = replica
        self._remote: dict[int, _Remote] = {}
        self._numbers = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[list[str]]] = {}
        self._send: psycopg.AsyncConnection[Any] | None = None
        self._send_lock = asyncio.Lock()
        self._listening: asyncio.Task[None] | None = None
        self._listening_up = asyncio.Event()

    @property
    def channel(self) -> str:
        return CHANNEL.format(replica=self.replica, worker=self.worker)

    async def start(self) -> None:
        self._listening = asyncio.create_task(self._listen(), name="ledger-listen")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening_up.wait(), 10)

    async def stop(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listening
        if self._send is not None:
            await self._send.close()

    # -- the proxy's side: unchanged, but every nonce names this replica ---------------------

    def issue(self, instance_id: str | None, *, probe: bool = False) -> Entry | None:
        entry = super().issue(instance_id, probe=probe)
        if entry is None or not self.replica:
            return entry
        return Entry(entry.slot, entry.tag, f"{self.replica}.{entry.nonce}")

    def find(self, nonce: str, instance_id: str | None) -> int | None:
        replica, _, local = nonce.partition(".")
        if replica != self.replica or not local:
            return None
        return super().find(local, instance_id)

    # -- the relay's side --------------------------------------------------------------------

    async def admit(self, nonce: str, instance_id: str | None) -> int | None:
        replica, _, local = nonce.partition(".")
        if replica == self.replica or not local or not self.replica:
            return self.find(nonce, instance_id)
        parsed = local.split("-")
        if len(replica) != 16 or len(parsed) != 3 or len(nonce) > 96:
            return None
        try:
            worker = int(parsed[0], 16)
        except ValueError:
            return None
        answer = await self._ask(replica, worker, ["A", nonce, instance_id or "-"])
        if not answer or answer[0] != "1":
            return None
        handle = -next(self._numbers)
        self._remote[handle] = _Remote(nonce, instance_id, answer[1:2] == ["1"])
        if len(self._remote) > REMOTE_SLOTS:  # an admitted call that never recorded
            del self._remote[next(iter(self._remote))]
        return handle

    def is_probe(self, offset: int) -> bool:
        if offset < 0:
            remote = self._remote.get(offset)
            return remote is not None and remote.probe
        return super().is_probe(offset)

    async def record(self, slot: int, *, status: int = 0, reason: str = "") -> None:
        if slot >= 0:
            self.record_call(slot, status=status, reason=reason)
            return
        remote = self._remote.pop(slot, None)
        if remote is None:
            return
        replica, _, local = remote.nonce.partition(".")
        worker = int(local.split("-")[0], 16)
        fields = ["C", remote.nonce, remote.instance_id or "-", str(status), reason or "-"]
        if not await self._ask(replica, worker, fields):
            log.warning("could not tell replica %s how a relay call went", replica)

    # -- messages --------------------------------------------------------------------------------

    async def _ask(self, replica: str, worker: int, fields: list[str]) -> list[str]:
        """Send a question to a worker of another replica; its answer ([] on failure)."""
        number = f"{self.replica}{next(self._numbers):x}"
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._waiting[number] = future
        try:
            await self._notify(
                CHANNEL.format(replica=replica, worker=worker),
                " ".join([fields[0], number, self.channel, *fields[1:]]),
            )
            return await asyncio.wait_for(future, ASK_TIMEOUT)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("asking replica %s about a nonce failed (%s)", replica, type(exc).__name__)
            return []
        finally:
            self._waiting.pop(number, None)

    async def _notify(self, channel: str, payload: str) -> None:
        async with self._send_lock:
            conn = self._send
            if conn is None or conn.closed or conn.broken:
                conn = self._send = await self._connect()
            await conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(
            self._url,
            autocommit=True,
            connect_timeout=5,
            application_name="powermem-gateway ledger",
        )
        # These messages live for milliseconds: no reason to wait for a disk flush.
        await conn.execute("SET synchronous_commit TO off")
        return conn

    async def _listen(self) -> None:
        while True:
            try:
                conn = await self._connect()
            except (psycopg.Error, OSError):
                await asyncio.sleep(1.0)
                continue
            try:
                await conn.execute(f"LISTEN {self.channel}")
                self._listening_up.set()
                async for notice in conn.notifies():
                    await self._on_message(notice.payload.split(" "))
            except (psycopg.Error, OSError) as exc:
                log.warning("ledger messages interrupted (%s); reconnecting", type(exc).__name__)
            finally:
                self._listening_up.clear()
                await conn.close()
            await asyncio.sleep(0.5)

    async def _on_message(self, fields: list[str]) -> None:
        if fields[0] == "R" and len(fields) >= 2:
            future = self._waiting.get(fields[1])
            if future is not None and not future.done():
                future.set_result(fields[2:])
            return
        if len(fields) < 5 or fields[0] not in ("A", "C"):
            return
        kind, number, reply, nonce, instance = fields[:5]
        offset = self.find(nonce, None if instance == "-" else instance)
        if kind == "A":
            answer = ["1", "1" if self.is_probe(offset) else "0"] if offset is not None else ["0"]
        else:
            if offset is not None and len(fields) >= 7 and fields[5].isdigit():
                reason = fields[6] if fields[6] in REASONS else "provider-error"
                self.record_call(
                    offset, status=int(fields[5]), reason=reason if fields[6] != "-" else ""
                )
            answer = ["1"]
        with contextlib.suppress(psycopg.Error, OSError):
            await self._notify(reply, " ".join(["R", number, *answer]))
