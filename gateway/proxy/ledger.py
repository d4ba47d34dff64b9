"""Requests in flight, shared by every worker of one gateway: the relay's proof of origin.

Every request the gateway forwards to powermem takes a slot here and carries the slot's nonce
in its baggage. powermem's LLM calls for that request come back to the relay (in whichever
worker accepts them) carrying the same nonce; the relay honours the call only while that slot
is taken by that request, for that instance. So an instance can be spent only by a request the
gateway forwarded: forged baggage, an id copied from a log, or a nonce from a finished request
all fail. The relay also writes each call's outcome into the slot, which is how the proxy
learns that a request's LLM calls failed (`X-PowerMem-LLM-Error`).

The table is a fixed block of shared memory: `workers × slots` records of 64 bytes (2 MiB for 8
workers of 4 096 slots), an anonymous mapping for one process or a file in the run directory
for the workers of one `serve`. Each worker allocates only in its own segment, so no lock is
needed; the nonce names the worker and slot, and its 128-bit random tag must match. Record:

    0:16  tag (random; all zeros = free)      16:32 instance digest (all zeros = unbound)
    32:36 LLM calls                            36:40 failed LLM calls
    40:42 last failure's provider status      42    last failure's reason code
    43    flags (1 = wiring probe)
"""

from __future__ import annotations

import hashlib
import hmac
import mmap
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Self

__all__ = ["LEDGER_FILE", "REASONS", "Entry", "Ledger", "Outcome", "parse_nonce"]

RECORD = 64
# Its name in the run dir of one `serve` (see gateway.runtime).
LEDGER_FILE = "ledger"
_COUNTS = struct.Struct("<IIHBB")  # calls, failures, status, reason, flags at offset 32
_ZERO16 = bytes(16)
PROBE = 1

# Why an LLM call failed, as a short word safe to show a client (never provider text).
REASONS = (
    "",
    "unauthorized",
    "rate-limited",
    "timeout",
    "unreachable",
    "provider-error",
    "bad-request",
    "bad-answer",
    "refused",
    "key-unreadable",
)


def _digest(instance_id: str | None) -> bytes:
    if not instance_id:
        return _ZERO16
    return hashlib.blake2b(instance_id.encode(), digest_size=16).digest()


def parse_nonce(nonce: str) -> tuple[int, int, bytes] | None:
    """(worker, slot, tag) from `w-s-tag`, or None when it is not one of ours."""
    parts = nonce.split("-")
    if len(parts) != 3 or len(parts[2]) != 32 or len(nonce) > 64:
        return None
    try:
        return int(parts[0], 16), int(parts[1], 16), bytes.fromhex(parts[2])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Entry:
    """A taken slot: what the proxy holds while its request is in flight."""

    slot: int
    tag: bytes
    nonce: str


@dataclass(frozen=True, slots=True)
class Outcome:
    calls: int
    failures: int
    status: int
    reason: str
    probe: bool


class Ledger:
    def __init__(self, memory: mmap.mmap, *, worker: int, workers: int, slots: int) -> None:
        self._mem = memory
        self._view = memoryview(memory)
        self.worker = worker
        self.workers = workers
        self.slots = slots
        self._base = worker * slots
        self._free = list(range(slots - 1, -1, -1))
        self._view[self._base * RECORD : (self._base + slots) * RECORD] = bytes(slots * RECORD)

    @classmethod
    def anonymous(cls, *, slots: int = 4096) -> Self:
        """A ledger for one process."""
        return cls(mmap.mmap(-1, slots * RECORD), worker=0, workers=1, slots=slots)

    @classmethod
    def shared(cls, path: Path, *, worker: int, workers: int, slots: int = 4096) -> Self:
        """This worker's view of the file every worker of one `serve` maps."""
        size = workers * slots * RECORD
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            memory = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return cls(memory, worker=worker, workers=workers, slots=slots)

    @property
    def in_flight(self) -> int:
        return self.slots - len(self._free)

    def close(self) -> None:
        self._view.release()
        self._mem.close()

    def issue(self, instance_id: str | None, *, probe: bool = False) -> Entry | None:
        """Take a slot for one forwarded request; None when every slot of this worker is taken."""
        if not self._free:
            return None
        slot = self._free.pop()
        tag = secrets.token_bytes(16)
        offset = (self._base + slot) * RECORD
        self._view[offset + 16 : offset + 32] = _digest(instance_id)
        _COUNTS.pack_into(self._mem, offset + 32, 0, 0, 0, 0, PROBE if probe else 0)
        # The tag last: a reader in another worker never sees a tag with a half-written record.
        self._view[offset : offset + 16] = tag
        return Entry(slot, tag, f"{self.worker:x}-{slot:x}-{tag.hex()}")

    def release(self, entry: Entry) -> Outcome:
        """Free the slot; what its LLM calls did."""
        outcome = self.outcome(entry)
        offset = (self._base + entry.slot) * RECORD
        self._view[offset : offset + 16] = _ZERO16
        self._free.append(entry.slot)
        return outcome

    def outcome(self, entry: Entry) -> Outcome:
        return self._read((self._base + entry.slot) * RECORD)

    def find(self, nonce: str, instance_id: str | None) -> int | None:
        """The record offset for a nonce in flight for exactly this instance (or for no
        instance), from any worker's segment; None for a forged, stale or foreign nonce."""
        parsed = parse_nonce(nonce)
        if parsed is None:
            return None
        worker, slot, tag = parsed
        if worker >= self.workers or slot >= self.slots:
            return None
        offset = (worker * self.slots + slot) * RECORD
        stored = bytes(self._view[offset : offset + 16])
        if stored == _ZERO16 or not hmac.compare_digest(stored, tag):
            return None
        if not hmac.compare_digest(
            bytes(self._view[offset + 16 : offset + 32]), _digest(instance_id)
        ):
            return None
        return offset

    def is_probe(self, offset: int) -> bool:
        return bool(self._mem[offset + 43] & PROBE)

    def record_call(self, offset: int, *, status: int = 0, reason: str = "") -> None:
        """Count one LLM call of the request at `offset`; a `reason` marks it failed."""
        calls, failures, last_status, last_reason, flags = _COUNTS.unpack_from(
            self._mem, offset + 32
        )
        if reason:
            failures += 1
            last_status, last_reason = status, REASONS.index(reason)
        _COUNTS.pack_into(
            self._mem, offset + 32, calls + 1, failures, last_status, last_reason, flags
        )

    # -- the relay's side, awaited: the same on one host, remote for a cluster's foreign nonces
    # (gateway.proxy.cluster); slots it returns are only ever handed back to these methods.

    async def admit(self, nonce: str, instance_id: str | None) -> int | None:
        """`find`, for a relay call (a cluster asks the replica that issued the nonce)."""
        return self.find(nonce, instance_id)

    async def record(self, slot: int, *, status: int = 0, reason: str = "") -> None:
        """`record_call` on a slot `admit` gave."""
        self.record_call(slot, status=status, reason=reason)

    def _read(self, offset: int) -> Outcome:
        calls, failures, status, reason, flags = _COUNTS.unpack_from(self._mem, offset + 32)
        name = REASONS[reason] if reason < len(REASONS) else ""
        return Outcome(calls, failures, status, name, bool(flags & PROBE))
