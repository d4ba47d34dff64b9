"""Instance secrets (issue 9.5): issued once, stored only as a hash, checked in constant time.

On a shared gateway an instance id is not a credential (it shows up in configs, logs and
URLs), so an explicit registration also gets a secret, sent with the id as a header or inside
the scoped base URL (`/i/<id>~<secret>`). A secret is 32 random bytes, so a plain SHA-256 is
as good as a slow hash here: there is nothing to guess from it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["SECRET_PREFIX", "hash_secret", "new_secret", "secret_matches"]

SECRET_PREFIX = "pmis-"  # noqa: S105 - a prefix, recognisable in a leak scanner
_DOMAIN = b"powermem-gateway instance secret v1\0"
_MAX_LEN = 256
# Compared against when an instance has no secret, so both paths cost the same.
_NO_HASH = hashlib.sha256(b"no secret").hexdigest()


def new_secret() -> str:
    """A fresh secret: URL-safe (no `~`, `/` or `%`), so it fits in a scoped base URL."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(_DOMAIN + secret.encode("utf-8", "surrogateescape")).hexdigest()


def secret_matches(stored_hash: str, secret: str) -> bool:
    """Whether `secret` is the one `stored_hash` was made from; constant time either way."""
    candidate = hash_secret(secret[:_MAX_LEN])
    expected = stored_hash or _NO_HASH
    same = hmac.compare_digest(candidate, expected)
    return same and bool(stored_hash) and len(secret) <= _MAX_LEN
