"""One error family for the whole gateway.

Every failure a client can cause or see is a `GatewayError`; `gateway.http.envelope` turns it into
an HTTP response in one place (powermem's envelope on the API and proxy, OpenAI's error shape
on the relay). Messages say what was wrong and what to do, and never carry a secret.

Codes are powermem's own (`server/models/errors.py`: INTERNAL_ERROR, INVALID_REQUEST,
UNAUTHORIZED, FORBIDDEN, NOT_FOUND, RATE_LIMIT_EXCEEDED, SERVICE_UNAVAILABLE,
SYSTEM_STORAGE_ERROR) wherever the meaning is the same, so a client's handling of powermem's
errors covers the gateway's too; narrower meanings get their own code under the same status.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AdminAuthRequired",
    "AdminAuthThrottled",
    "BadRequest",
    "BaseUrlRefused",
    "ConfigConflict",
    "Forbidden",
    "GatewayError",
    "InstanceCapReached",
    "InvalidBody",
    "InvalidConfig",
    "InvalidHeader",
    "MasterKeyMissing",
    "MethodNotAllowed",
    "NotFound",
    "NotReady",
    "ProviderError",
    "RateLimited",
    "ReadOnlyInstance",
    "RelayAuthRequired",
    "ServiceUnavailable",
    "StorageError",
    "StoredKeyRejected",
    "StoredKeyUnavailable",
    "UnknownInstance",
    "UnsupportedMediaType",
    "UpstreamStarting",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class GatewayError(Exception):
    """Base of every error the gateway reports to a client."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


class BadRequest(GatewayError):
    """The client sent something we cannot use."""

    status = 400
    code = "INVALID_REQUEST"


class InvalidHeader(BadRequest):
    """An `X-PowerMem-*` header is malformed, too long or not UTF-8."""

    code = "INVALID_HEADER"


class InvalidConfig(BadRequest):
    """An instance configuration is incomplete or invalid."""

    code = "INVALID_CONFIG"


class InvalidBody(BadRequest):
    """A JSON request body is malformed or of the wrong shape."""

    code = "INVALID_BODY"


class UnsupportedMediaType(BadRequest):
    """A management write whose body is not declared `application/json`.

    Browsers may send `text/plain` or form bodies across origins without a preflight, so a
    JSON body under any other content type is refused rather than guessed at.
    """

    status = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


class Forbidden(GatewayError):
    """The caller is known but may not do this."""

    status = 403
    code = "FORBIDDEN"


class BaseUrlRefused(Forbidden):
    """A client-supplied base URL points where the gateway's base-URL policy forbids calling."""

    code = "BASE_URL_REFUSED"


class AdminAuthRequired(GatewayError):
    """The admin token is missing or wrong."""

    status = 401
    code = "UNAUTHORIZED"


class RelayAuthRequired(GatewayError):
    """The relay token is missing or wrong."""

    status = 401
    code = "UNAUTHORIZED"


class NotFound(GatewayError):
    """No such resource."""

    status = 404
    code = "NOT_FOUND"


class MethodNotAllowed(GatewayError):
    """The path is served here, but not for this method."""

    status = 405
    code = "METHOD_NOT_ALLOWED"


class UnknownInstance(NotFound):
    """The instance id is not registered (or was deleted)."""

    code = "INSTANCE_NOT_FOUND"


class ConfigConflict(GatewayError):
    """The change would clash with another instance."""

    status = 409
    code = "CONFLICT"


class ReadOnlyInstance(ConfigConflict):
    """The instance is managed in instances.yaml and cannot be changed through the API."""

    code = "INSTANCE_READ_ONLY"


class RateLimited(GatewayError):
    """The caller sent more requests than its limit allows."""

    status = 429
    code = "RATE_LIMIT_EXCEEDED"


class AdminAuthThrottled(RateLimited):
    """Too many failed admin authentications from this address; `Retry-After` says when."""


class InstanceCapReached(RateLimited):
    """No new instance now: the per-address or the total cap on new instances is reached."""


class ServiceUnavailable(GatewayError):
    """Something the gateway needs is not available right now; trying again later may work."""

    status = 503
    code = "SERVICE_UNAVAILABLE"


class StorageError(ServiceUnavailable):
    """The registry could not be written (disk full, read-only data dir, …)."""

    code = "SYSTEM_STORAGE_ERROR"


class MasterKeyMissing(StorageError):
    """Stored keys exist but the master key that encrypted them is gone (start refused)."""

    code = "MASTER_KEY_MISSING"


class StoredKeyRejected(GatewayError):
    """An instance's stored key fails its integrity check (its row was changed outside us)."""

    status = 409
    code = "INSTANCE_KEY_REJECTED"


class StoredKeyUnavailable(GatewayError):
    """An instance has no usable stored key (dropped by `secret reset`, or an old format)."""

    status = 409
    code = "INSTANCE_KEY_UNAVAILABLE"


class UpstreamUnavailable(GatewayError):
    """The powermem server could not be reached."""

    status = 502
    code = "UPSTREAM_UNAVAILABLE"


class UpstreamStarting(ServiceUnavailable):
    """The managed powermem server is (re)starting."""

    code = "UPSTREAM_STARTING"


class NotReady(ServiceUnavailable):
    """powermem answers, but its memory service does not work (yet)."""


class UpstreamTimeout(GatewayError):
    """The powermem server did not answer in time."""

    status = 504
    code = "UPSTREAM_TIMEOUT"


class ProviderError(GatewayError):
    """An LLM provider failed; `status` is the provider's own (or 502/504 when unreachable)."""

    code = "PROVIDER_ERROR"

    def __init__(
        self,
        message: str,
        *,
        status: int = 502,
        error_type: str = "provider_error",
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, details=details, headers=headers)
        self.status = status  # type: ignore[misc]  # per-instance status, by design
        self.error_type = error_type
