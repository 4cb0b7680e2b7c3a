"""S3's errors as datamover's: error codes by kind, and the mapping of an S3 error
response (``classify_error``, boto3's and the lean path's alike) and of any exception
boto3 raises (``map_error``). Messages never carry secrets."""

from __future__ import annotations

import re

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
    Unsupported,
)
from datamover.stores.s3.sdk import loaded

_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}
_NO_BUCKET = {"NoSuchBucket"}
_AUTH = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidClientTokenId",
    "AuthorizationHeaderMalformed",
}
_DENIED = {"AccessDenied", "403", "AllAccessDisabled", "AccountProblem"}
_INTEGRITY = {
    "BadDigest",
    "InvalidDigest",
    "XAmzContentSHA256Mismatch",
    "InvalidChecksum",
    "XAmzContentChecksumMismatch",
}
_THROTTLE = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "503"}
_TRANSIENT = {"InternalError", "ServiceUnavailable", "RequestTimeout", "500", "502", "504"}
_PRECONDITION = {"PreconditionFailed", "412"}
#: The request, as built, asks for something this server does not do.
_UNSUPPORTED = {"NotImplemented", "501"}


#: AWS's rules for bucket names (general purpose buckets, in every region today).
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_NAME_RULES = "it is not a valid S3 bucket name (3-63 lowercase letters, digits, '.', '-')"


def valid_bucket_name(bucket: str) -> bool:
    """Whether ``bucket`` follows AWS's naming rules: 3-63 characters of lowercase
    letters, digits, dots and hyphens, starting and ending with a letter or digit, no
    ``..``. Only ever used to explain an error: S3-compatible servers and legacy
    us-east-1 buckets allow other names, so no name is refused for breaking them."""
    return _BUCKET_NAME.fullmatch(bucket) is not None and ".." not in bucket


def no_such_bucket(bucket: str, key: str | None) -> BucketNotFound:
    """The server says ``bucket`` does not exist: say so, and when its name breaks the
    rules (so it can't be created either) say that instead of "create it"."""
    where = f"s3://{bucket}/{key}" if key is not None else f"s3://{bucket}"
    what = (
        "create it or check the name"
        if valid_bucket_name(bucket)
        else f"{_NAME_RULES}, so check the name"
    )
    return BucketNotFound(f"{where}: bucket {bucket!r} does not exist; {what}", key=key)


def classify_error(
    code: str,
    status: int | None,
    message: str,
    retry_after: str | None,
    bucket: str,
    key: str | None,
) -> StoreError:
    """An S3 error response (its XML ``Code``, HTTP status, ``Message`` and any
    ``Retry-After``) as a datamover error; boto3's and the lean path's errors alike."""
    where = f"s3://{bucket}/{key}" if key is not None else f"s3://{bucket}"
    reason = message or code or f"HTTP {status}"
    if code in _NO_BUCKET:
        return no_such_bucket(bucket, key)
    if code == "InvalidBucketName":
        return BucketNotFound(
            f"{where}: the server refused the bucket name {bucket!r} (InvalidBucketName)"
            + (f"; {_NAME_RULES}" if not valid_bucket_name(bucket) else "")
            + "; check the name",
            key=key,
        )
    if code in _NOT_FOUND or status == 404:
        return NotFound(f"{where}: not found", key=key)
    if code in _AUTH:
        return AuthError(
            f"{where}: credentials rejected ({code}); check AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY or the profile",
            key=key,
        )
    if code in _DENIED or status == 403:
        return PermissionDenied(f"{where}: access denied ({code or status})", key=key)
    if code in _INTEGRITY:
        return IntegrityError(f"{where}: checksum rejected by the server ({code})", key=key)
    if code in _UNSUPPORTED or status == 501:
        return Unsupported(f"{where}: not supported by this server ({reason})", key=key)
    if code in _PRECONDITION or status == 412:
        return PreconditionFailed(f"{where}: precondition failed", key=key)
    if code in _THROTTLE or status in (429, 503):
        return Throttled(
            f"{where}: server asked to slow down ({code or status})",
            key=key,
            retry_after=float(retry_after)
            if retry_after and retry_after.isascii() and retry_after.isdigit()
            else None,
        )
    if code in _TRANSIENT or (isinstance(status, int) and status >= 500):
        return TransientError(f"{where}: {reason}", key=key)
    return StoreError(f"{where}: {reason}", key=key)


def map_error(e: BaseException, bucket: str, key: str | None) -> StoreError:
    """Map a botocore exception to the datamover tree (no secrets in messages)."""
    if isinstance(e, StoreError):
        return e
    where = f"s3://{bucket}/{key}" if key is not None else f"s3://{bucket}"
    bce = loaded("botocore.exceptions")  # not loaded: e is none of its classes
    if bce is not None:
        if isinstance(e, bce.ClientError):
            err = e.response.get("Error", {})
            meta = e.response.get("ResponseMetadata", {})
            return classify_error(
                str(err.get("Code", "")),
                meta.get("HTTPStatusCode"),
                err.get("Message") or "",
                meta.get("HTTPHeaders", {}).get("retry-after"),
                bucket,
                key,
            )
        if isinstance(e, bce.NoCredentialsError | bce.PartialCredentialsError):
            return AuthError(
                f"{where}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or configure a remote",
                key=key,
            )
        if isinstance(e, bce.EndpointConnectionError):
            return TransientError(f"{where}: cannot connect to the endpoint", key=key)
        if isinstance(
            e,
            bce.ConnectionError
            # HTTPClientError covers ConnectionClosedError (a reset before the response),
            # ReadTimeoutError and ResponseStreamingError.
            | bce.HTTPClientError
            | bce.ConnectTimeoutError
            | bce.IncompleteReadError,
        ):
            return TransientError(f"{where}: connection problem ({type(e).__name__})", key=key)
        if isinstance(e, bce.FlexibleChecksumError):
            return IntegrityError(f"{where}: response checksum mismatch", key=key)
    # Body reads go straight to urllib3 (readinto), so its errors arrive unwrapped.
    urllib3 = loaded("urllib3.exceptions")
    client = loaded("http.client")  # an HTTPException only exists once it is imported
    if (
        isinstance(e, ConnectionError | TimeoutError)
        or (client is not None and isinstance(e, client.HTTPException))
        or (urllib3 is not None and isinstance(e, urllib3.HTTPError))
    ):
        return TransientError(f"{where}: connection problem ({type(e).__name__})", key=key)
    return StoreError(f"{where}: {type(e).__name__}: {e}", key=key)


def error_code(e: BaseException) -> str:
    """The S3 error code of a botocore ``ClientError`` (``""`` for anything else)."""
    response = getattr(e, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
