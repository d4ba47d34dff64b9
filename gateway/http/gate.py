"""The admin token and the back-off of addresses that keep getting it wrong.

Failed admin authentications back off per address (`gateway.policy.backoff`): after a few
free tries an address waits 1 s, 2 s, … up to a minute between tries, answered 429 with
`Retry-After` without its token being looked at.
"""

from __future__ import annotations

import hmac
import math

from gateway.errors import AdminAuthThrottled
from gateway.policy.backoff import Backoff

__all__ = ["AdminGate", "bearer_matches"]


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an `Authorization: Bearer …` header carries exactly `token`."""
    scheme, _, value = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.encode()
    )


class AdminGate:
    """The admin token, and the back-off of addresses that keep getting it wrong."""

    def __init__(self, token: str, backoff: Backoff | None = None) -> None:
        self.token = token
        self.backoff = backoff or Backoff()

    def verify(self, authorization: str | None, remote: str | None) -> bool:
        """True for the right token, False for anything else (a wrong token counts as one
        more failure; no token at all is no guess, and counts for nothing).

        Raises `AdminAuthThrottled` while the address must wait, without looking at the token.
        """
        if not authorization:
            return False
        if (wait := self.backoff.wait(remote)) > 0:
            seconds = math.ceil(wait)
            raise AdminAuthThrottled(
                "Too many failed admin authentications from this address; "
                f"try again in {seconds} s.",
                headers={"Retry-After": str(seconds)},
            )
        if bearer_matches(authorization, self.token):
            self.backoff.succeeded(remote)
            return True
        self.backoff.failed(remote)
        return False
