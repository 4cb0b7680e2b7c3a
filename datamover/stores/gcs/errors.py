"""Error mapping: the one place google-cloud-storage, google-auth, requests and
transport exceptions become datamover errors (``datamover.errors``). The SDK's
classes are looked up only where the SDK is loaded (``sdk.loaded``): mapping an
error never imports it.

What survives the SDK's own retries (see the package docstring) is mapped here:
429 to ``Throttled`` (with ``Retry-After``), 408, 5xx and connection errors to
``TransientError``, 401 and rejected credentials to ``AuthError``, 403 to
``PermissionDenied``, 412 to ``PreconditionFailed``, a refused checksum to
``IntegrityError``, and a 404 to ``NotFound`` or ``BucketNotFound``.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

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
from datamover.stores.gcs.sdk import loaded

if TYPE_CHECKING:
    from google.api_core import exceptions as gexc

_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    http.client.HTTPException,
)


def _transient_types() -> tuple[type[BaseException], ...]:
    """Connection-level failures: the built-in ones, and requests' and google-auth's
    when those are loaded (none of theirs can be raised before)."""
    found = _TRANSIENT_TYPES
    rexc = loaded("requests.exceptions")
    if rexc is not None:
        found += (rexc.ConnectionError, rexc.Timeout, rexc.ChunkedEncodingError)
    aexc = loaded("google.auth.exceptions")
    if aexc is not None:
        found += (aexc.TransportError,)
    return found


def _retry_after(e: gexc.GoogleAPICallError) -> float | None:
    response = e.response
    headers = getattr(response, "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _code_text(e: gexc.GoogleAPICallError) -> str:
    reason = None
    if e.errors and isinstance(e.errors[0], Mapping):
        reason = e.errors[0].get("reason")
    if not reason and e.code is not None:
        try:
            reason = http.client.responses[int(e.code)]
        except (KeyError, ValueError):
            reason = None
    return f"{e.code} {reason}" if reason else f"{e.code}"


def map_error(
    e: BaseException,
    key: str | None,
    *,
    bucket: str,
    bucket_is_there: Callable[[], bool],
    missing: str = "object",
) -> StoreError:
    """``e`` as the datamover error for ``key`` in ``bucket``.

    ``missing`` says what a 404 means: ``"object"`` (the key or the bucket:
    ``bucket_is_there`` is asked to tell which) or ``"bucket"`` (a listing).
    """
    if isinstance(e, StoreError):
        return e
    where = f"gs://{bucket}/{key or ''}"
    # The SDK's exception classes, where the SDK is loaded: an exception can't be one
    # of them before (``sdk.loaded``), and importing it here would cost its start-up.
    gexc = loaded("google.api_core.exceptions")
    storage_exc = loaded("google.cloud.storage.exceptions")
    aexc = loaded("google.auth.exceptions")
    if gexc is not None and isinstance(e, gexc.RetryError):
        cause = e.cause
        if cause is not None and cause is not e:
            mapped = map_error(
                cause, key, bucket=bucket, bucket_is_there=bucket_is_there, missing=missing
            )
            if isinstance(mapped, TransientError):
                return mapped
        return TransientError(f"{where}: gave up after retries", key=key)
    if storage_exc is not None and isinstance(e, storage_exc.DataCorruption):
        return IntegrityError(f"{where}: downloaded bytes failed their checksum", key=key)
    if aexc is not None and isinstance(e, aexc.RefreshError):
        return refresh_error(e, bucket, key)
    if gexc is not None and isinstance(e, gexc.GoogleAPICallError):
        return _map_status(e, key, where, missing, bucket, bucket_is_there)
    if isinstance(e, _transient_types()):
        return TransientError(f"{where}: {type(e).__name__}", key=key)
    return StoreError(f"{where}: {type(e).__name__}", key=key)


def refresh_error(e: BaseException, bucket: str, key: str | None = None) -> StoreError:
    """What google-auth raised refreshing the credentials (a token endpoint refusing
    them, or not answering), as the datamover error: never its own exception, whose
    text may quote the token endpoint's answer."""
    where = f"gs://{bucket}/{key or ''}"
    aexc = loaded("google.auth.exceptions")
    if isinstance(e, StoreError):
        return e
    if aexc is not None and isinstance(e, aexc.RefreshError) and not getattr(e, "retryable", False):
        return AuthError(
            f"{where}: Google credentials were rejected or expired; check "
            "GOOGLE_APPLICATION_CREDENTIALS (or the remote's credentials_file_env), or run "
            "`gcloud auth application-default login`",
            key=key,
        )
    if (aexc is not None and isinstance(e, aexc.GoogleAuthError)) or isinstance(
        e, _transient_types()
    ):
        # A RefreshError marked retryable (the metadata server did not answer), or
        # the token endpoint out of reach.
        return TransientError(
            f"{where}: could not refresh Google credentials ({type(e).__name__})", key=key
        )
    return StoreError(
        f"{where}: refreshing Google credentials failed ({type(e).__name__})", key=key
    )


def _map_status(
    e: gexc.GoogleAPICallError,
    key: str | None,
    where: str,
    missing: str,
    bucket: str,
    bucket_is_there: Callable[[], bool],
) -> StoreError:
    code = int(e.code) if e.code is not None else 0
    return status_error(
        code,
        _code_text(e),
        e.message,
        _retry_after(e),
        key=key,
        bucket=bucket,
        bucket_is_there=bucket_is_there,
        missing=missing,
    )


def status_error(
    code: int,
    text: str,
    message: str,
    retry_after: float | None,
    *,
    key: str | None,
    bucket: str,
    bucket_is_there: Callable[[], bool],
    missing: str = "object",
) -> StoreError:
    """The error for an HTTP status; ``text`` is "<code> <reason>" (shown), ``message``
    the service's (never shown: it only tells a refused checksum apart)."""
    where = f"gs://{bucket}/{key or ''}"
    if code == 404:
        if missing == "bucket" or not bucket_is_there():
            return BucketNotFound(
                f"gs://{bucket}: bucket does not exist; create it or check the name", key=key
            )
        return NotFound(f"{where}: no such object", key=key)
    if code == 401:
        return AuthError(f"{where}: {text}: credentials rejected", key=key)
    if code == 403:
        return PermissionDenied(f"{where}: {text}: access denied", key=key)
    if code == 412:
        return PreconditionFailed(f"{where}: {text}", key=key)
    if code == 429:
        return Throttled(f"{where}: {text}", key=key, retry_after=retry_after)
    if code == 400 and any(s in message.lower() for s in ("crc32c", "md5")):
        return IntegrityError(f"{where}: {text}: the server rejected the checksum", key=key)
    if code in (408,) or code >= 500:
        return TransientError(f"{where}: {text}", key=key)
    return StoreError(f"{where}: {text}", key=key)
