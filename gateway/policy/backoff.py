"""Per-address back-off after failures (failed admin authentications), in a bounded table.

The first `free` failures of an address cost nothing; then each further one blocks that
address for twice as long as the last (1 s, 2 s, 4 s, … up to `max_delay`). A blocked
address is answered without its attempt being looked at, so guessing runs at a few tries a
minute instead of hundreds a second. IPv6 clients are counted per /64, the smallest block a
single host usually holds. The table holds at most `max_addresses` (the least recently
failing is forgotten first); a success, or `forget_after` seconds without a failure, clears
an address.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff", "address_key"]


def address_key(remote: str | None) -> str:
    """The unit back-off and the rate limits count in: the address, or its /64 for IPv6."""
    if not remote:
        return ""
    try:
        address = ipaddress.ip_address(remote.partition("%")[0])
    except ValueError:
        return remote[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address), 64), strict=False))
    return str(address)


@dataclass
class _Failures:
    count: int = 0
    blocked_until: float = 0.0
    last: float = 0.0


class Backoff:
    """Failures per address and how long each address must wait; bounded."""

    def __init__(
        self,
        *,
        max_addresses: int = 4096,
        free: int = 5,
        first_delay: float = 1.0,
        max_delay: float = 60.0,
        forget_after: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_addresses = max_addresses
        self.free = free
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self._clock = clock
        self._table: OrderedDict[str, _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def wait(self, remote: str | None) -> float:
        """Seconds before this address's next attempt may be looked at (0: go ahead)."""
        key, now = address_key(remote), self._clock()
        state = self._table.get(key)
        if state is None:
            return 0.0
        if now - state.last > self.forget_after:
            del self._table[key]
            return 0.0
        return max(0.0, state.blocked_until - now)

    def succeeded(self, remote: str | None) -> None:
        self._table.pop(address_key(remote), None)

    def failed(self, remote: str | None) -> None:
        key, now = address_key(remote), self._clock()
        state = self._table.get(key)
        if state is None:
            state = self._table[key] = _Failures()
            while len(self._table) > self.max_addresses:
                self._table.popitem(last=False)
        else:
            self._table.move_to_end(key)
        state.count += 1
        state.last = now
        over = state.count - self.free
        if over > 0:
            state.blocked_until = now + min(self.first_delay * 2 ** (over - 1), self.max_delay)
