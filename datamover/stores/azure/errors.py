"""Azure SDK and transport failures mapped to the ``datamover.errors`` tree.

``map_error`` is the one place an SDK exception becomes ours, and it takes any: the
SDK raises ``AzureError`` for what it expects, but plain Python errors
(``AttributeError``, ``TypeError``, ``UnicodeDecodeError``, its ``DeserializationError``,
a ``ValueError``) from its deserializers when a response is malformed, so the store
catches ``Exception`` around SDK calls and everything becomes a ``StoreError`` (a
malformed answer a plain one, naming the exception's type). A missing container is
``BucketNotFound`` (fatal), a missing blob ``NotFound``, rejected credentials
``AuthError``, other 403s ``PermissionDenied``, 429/503 ``Throttled`` (with the
Retry-After hint), other 5xx and network failures ``TransientError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from datamover.errors import (
    AuthError,
    BucketNotFound,
    IntegrityError,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    StoreError,
    Throttled,
    TransientError,
)
from datamover.stores.azure.sdk import loaded

if TYPE_CHECKING:
    from azure.core.exceptions import HttpResponseError


def http_error(e: BaseException) -> HttpResponseError | None:
    """``e`` when it is the SDK's ``HttpResponseError``, else None; asked without
    importing the SDK (not loaded: ``e`` can't be one)."""
    ace = loaded("azure.core.exceptions")
    if ace is not None and isinstance(e, ace.HttpResponseError):
        return cast("HttpResponseError", e)
    return None


def _headers(e: HttpResponseError) -> Mapping[str, str]:
    headers: Mapping[str, str] | None = getattr(e.response, "headers", None)
    return headers or {}


def error_code(e: HttpResponseError) -> str:
    """Azure's error code (``x-ms-error-code``, else the SDK's), or ``""``."""
    code: Any = _headers(e).get("x-ms-error-code")
    if not code:
        code = getattr(e, "error_code", None)
        code = getattr(code, "value", code)  # StorageErrorCode enum -> its string
    return str(code) if code else ""


def _retry_after(e: HttpResponseError) -> float | None:
    return retry_after(_headers(e))


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The service's wait hint in seconds (``x-ms-retry-after-ms``, ``Retry-After``)."""
    value = headers.get("x-ms-retry-after-ms")
    try:
        if value:
            return float(value) / 1000
        value = headers.get("Retry-After") or headers.get("retry-after")
        return float(value) if value else None
    except ValueError:
        return None  # an HTTP-date; the engine's own backoff applies


def _network_reason(e: BaseException) -> str:
    """A short cause for a transport failure, never the exception text (requests puts
    the request URL, SAS signature included, into its messages)."""
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        inner = getattr(cause, "inner_exception", None)
        cause = inner if isinstance(inner, BaseException) else cause.__cause__ or cause.__context__
    return type(e).__name__


def map_error(e: BaseException, container: str, key: str | None = None) -> StoreError:
    """The ``datamover.errors`` exception for an SDK or transport failure.

    Messages are ``az://container/key: <short reason>`` built from the container, the
    key, the HTTP status and Azure's error code only (service messages can echo request
    details; transport messages carry the URL with any SAS signature).
    """
    if isinstance(e, StoreError):
        return e
    where = f"az://{container}/{key}" if key is not None else f"az://{container}"
    ace = loaded("azure.core.exceptions")  # not loaded: e is none of its classes
    if ace is not None:
        if isinstance(e, ace.ClientAuthenticationError):
            reason = error_code(cast("HttpResponseError", e)) or "auth"
            return AuthError(f"{where}: credentials rejected ({reason})", key=key)
        network = (ace.IncompleteReadError, ace.ServiceRequestError, ace.ServiceResponseError)
        if isinstance(e, network):
            return TransientError(f"{where}: network error ({_network_reason(e)})", key=key)
        http = http_error(e)
        if http is not None:
            status = http.status_code
            if status is None:  # the SDK's re-raise of a body that could not be read
                return TransientError(f"{where}: network error ({_network_reason(e)})", key=key)
            return status_error(
                status, error_code(http), str(e), _retry_after(http), container=container, key=key
            )
    rex = loaded("requests.exceptions")
    if isinstance(e, ConnectionError | TimeoutError) or (
        rex is not None and isinstance(e, rex.ConnectionError)
    ):
        return TransientError(f"{where}: network error ({_network_reason(e)})", key=key)
    return StoreError(f"{where}: malformed answer from the service ({type(e).__name__})", key=key)


def status_error(
    status: int,
    code: str,
    text: str,
    retry_after: float | None,
    *,
    container: str,
    key: str | None = None,
) -> StoreError:
    """The error for an HTTP status and Azure error code (``x-ms-error-code``); ``text``
    (the service's message, never shown) only tells Azurite's variants apart."""
    where = f"az://{container}/{key}" if key is not None else f"az://{container}"
    reason = f"{code or 'HTTP'} ({status})"
    if status == 404:
        if code == "ContainerNotFound":
            return BucketNotFound(
                f"az://{container}: container does not exist; create it or check the name",
                key=key,
            )
        return NotFound(f"{where}: no such blob", key=key)
    if (
        status == 401
        or code in ("AuthenticationFailed", "InvalidAuthenticationInfo")
        # Azurite sends a bad signature as AuthorizationFailure with Azure's
        # AuthenticationFailed wording.
        or (status == 403 and "failed to authenticate" in text.lower())
    ):
        return AuthError(f"{where}: credentials rejected ({reason})", key=key)
    if status == 403:
        return PermissionDenied(f"{where}: access denied ({reason})", key=key)
    if code == "Md5Mismatch" or (code == "InvalidOperation" and "md5" in text.lower()):
        # Azurite reports a bad Content-MD5 as InvalidOperation.
        return IntegrityError(f"{where}: the service rejected the Content-MD5 ({reason})", key=key)
    if status == 412:
        return PreconditionFailed(f"{where}: the blob changed ({reason})", key=key)
    if status in (429, 503):
        return Throttled(f"{where}: throttled ({reason})", key=key, retry_after=retry_after)
    if status >= 500:
        return TransientError(f"{where}: server error ({reason})", key=key)
    return StoreError(f"{where}: {reason}", key=key)


def is_invalid_range(e: BaseException) -> bool:
    """Whether a ranged read failed only because it starts at or past the end."""
    http = http_error(e)
    return http is not None and (http.status_code == 416 or error_code(http) == "InvalidRange")
