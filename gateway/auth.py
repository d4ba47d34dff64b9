"""Bearer-token checks, in constant time."""

from __future__ import annotations

import hmac

__all__ = ["bearer_matches"]


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an `Authorization: Bearer …` header carries exactly `token`."""
    scheme, _, value = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.encode()
    )
