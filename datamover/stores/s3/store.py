"""S3 and S3-compatible stores (AWS, Ceph RGW, MinIO, SeaweedFS, moto) over boto3.

Endpoint: ``StoreSettings.endpoint``, else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``
(which botocore also reads); any custom endpoint gets path-style addressing, which every
S3-compatible server accepts. Credentials and region come from the standard chain
(env, profile, SSO, instance role); ``StoreSettings.profile`` picks a profile.

Integrity in flight: every part and every small put carries ``x-amz-checksum-crc32c``
computed by the engine from the source bytes, so the server rejects bytes that changed
on the way (SeaweedFS and AWS enforce it; moto does not). botocore's own automatic
checksums are switched to ``when_required`` so nothing is hashed twice.

The whole-object digest can only be known after the last part is read, but S3 takes
metadata when a multipart upload is *created*. So a multipart object is completed with
the POSIX metadata known up front, then copied onto itself server-side with the final
metadata (``MetadataDirective=REPLACE``, guarded by ``CopySourceIfMatch`` on the
completed ETag so a concurrent writer's object is never relabelled). The object is
complete and correct from ``CompleteMultipartUpload`` on; the digest metadata follows a
moment later. If that copy fails, the object stays without the digest metadata and the
manifest still has the digest.
"""

from __future__ import annotations

import email.utils
import os
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from datamover.checksums import PartDigests, b64, unb64
from datamover.errors import (
    AuthError,
    BucketNotFound,
    ConfigError,
    IntegrityError,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    StoreError,
    Throttled,
    TransientError,
    Unsupported,
)
from datamover.posixmeta import MTIME, PosixAttrs, parse_mtime_ns
from datamover.stores import StoreSettings, referenced_secret
from datamover.stores.base import (
    Buffer,
    ChunkWriter,
    Features,
    GiB,
    MiB,
    ObjectInfo,
    PartLimits,
    PartReceipt,
    PendingUpload,
    Store,
    TiB,
    digests_from_metadata,
)
from datamover.stores.fsops import FsOps
from datamover.stores.s3.lean import LeanS3, LeanUnavailable, Response, lean_enabled
from datamover.urls import Location

S3_LIMITS = PartLimits(
    min_part_size=5 * MiB, max_part_size=5 * GiB, max_parts=10_000, max_single_put=5 * GiB
)
MAX_OBJECT_SIZE = 5 * TiB

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
_INTEGRITY = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "InvalidChecksum"}
_THROTTLE = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "503"}
_TRANSIENT = {"InternalError", "ServiceUnavailable", "RequestTimeout", "500", "502", "504"}
_PRECONDITION = {"PreconditionFailed", "412"}


def _endpoint(settings: StoreSettings) -> str | None:
    return (
        settings.endpoint
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or None
    )


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
        return BucketNotFound(
            f"{where}: bucket {bucket!r} does not exist; create it or check the name",
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
    if code in _PRECONDITION or status == 412:
        return PreconditionFailed(f"{where}: precondition failed", key=key)
    if code in _THROTTLE or status in (429, 503):
        return Throttled(
            f"{where}: server asked to slow down ({code or status})",
            key=key,
            retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
        )
    if code in _TRANSIENT or (isinstance(status, int) and status >= 500):
        return TransientError(f"{where}: {reason}", key=key)
    return StoreError(f"{where}: {reason}", key=key)


def map_error(e: BaseException, bucket: str, key: str | None) -> StoreError:
    """Map a botocore exception to the datamover tree (no secrets in messages)."""
    import botocore.exceptions as bce

    where = f"s3://{bucket}/{key}" if key is not None else f"s3://{bucket}"
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
    import http.client

    import urllib3.exceptions

    # Body reads go straight to urllib3 (readinto), so its errors arrive unwrapped.
    if isinstance(
        e,
        ConnectionError | TimeoutError | urllib3.exceptions.HTTPError | http.client.HTTPException,
    ):
        return TransientError(f"{where}: connection problem ({type(e).__name__})", key=key)
    return StoreError(f"{where}: {type(e).__name__}: {e}", key=key)


def _error_code(e: BaseException) -> str:
    response = getattr(e, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _checksums(metadata: Mapping[str, str], etag: str | None, sse: str | None) -> dict[str, str]:
    out = digests_from_metadata(metadata)
    # A plain ETag (no "-N" suffix) is the object's MD5 unless SSE-KMS/SSE-C changed it.
    if etag and "-" not in etag and len(etag) == 32 and sse in (None, "AES256"):
        out.setdefault("md5", etag)
    return out


def _body(data: Buffer) -> bytes | bytearray:
    """``data`` as botocore takes a body (bytes or bytearray, not memoryview), without
    a copy when it is a view of a whole bytes/bytearray: the engine's part buffers are
    ``memoryview(bytearray(n))``, and copying each part cost a pass over every byte
    and a second part-sized buffer per thread."""
    if isinstance(data, bytes | bytearray):
        return data
    view = memoryview(data)
    base = view.obj
    if isinstance(base, bytes | bytearray) and view.c_contiguous and view.nbytes == len(base):
        return base
    return view.tobytes()


def _mtime(metadata: Mapping[str, str], last_modified: datetime | None) -> float | None:
    raw = metadata.get(MTIME)
    if raw:
        ns = parse_mtime_ns(raw)
        if ns is not None:
            return ns / 1e9
    return last_modified.timestamp() if last_modified else None


def _object_info(
    key: str,
    size: int,
    meta: dict[str, str],
    etag: str | None,
    modified: datetime | None,
    version: str | None,
    sse: str | None,
) -> ObjectInfo:
    """An object as a HEAD or GET describes it (boto3's parsed answer or the lean
    path's headers alike)."""
    tag = (etag or "").strip('"') or None
    return ObjectInfo(
        key=key,
        size=size,
        mtime=_mtime(meta, modified),
        etag=tag,
        version=version,
        checksums=_checksums(meta, tag, sse),
        metadata=meta,
        mode=PosixAttrs.from_metadata(meta).mode,
    )


def _listed(key: str, size: int, etag: str | None, mtime: float | None) -> ObjectInfo:
    """An object as a listing describes it: no user metadata."""
    tag = (etag or "").strip('"') or None
    return ObjectInfo(
        key=key,
        size=size,
        mtime=mtime,
        etag=tag,
        checksums=_checksums({}, tag, None),
        is_dir=key.endswith("/"),
    )


def _put_info(
    key: str,
    size: int,
    metadata: Mapping[str, str] | None,
    etag: str | None,
    version: str | None,
    sse: str | None,
) -> ObjectInfo:
    """What a PutObject wrote: the metadata sent, the ETag and version returned."""
    tag = (etag or "").strip('"') or None
    meta = dict(metadata or {})
    return ObjectInfo(
        key=key,
        size=size,
        etag=tag,
        version=version,
        metadata=meta,
        checksums=_checksums(meta, tag, sse),
    )


def _virtual_host_ok(bucket: str) -> bool:
    """A bucket name usable as a TLS host label (no dots, lower case, 3-63 chars)."""
    return (
        3 <= len(bucket) <= 63
        and bucket.isascii()
        and all(c.islower() or c.isdigit() or c == "-" for c in bucket)
        and bucket[0].isalnum()
        and bucket[-1].isalnum()
    )


def _parse_list_page(body: bytes) -> tuple[list[ObjectInfo], str | None]:
    """One ListObjectsV2 result (``encoding-type=url``): its entries in key order and
    the continuation token, or None on the last page."""
    import xml.etree.ElementTree as ET
    from urllib.parse import unquote_plus

    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise TransientError(f"listing: malformed response ({e})") from e
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    url_encoded = (root.findtext(f"{ns}EncodingType") or "") == "url"

    def decode(value: str) -> str:
        return unquote_plus(value) if url_encoded else value

    entries = [
        ObjectInfo(key=decode(cp.findtext(f"{ns}Prefix") or ""), size=0, is_dir=True)
        for cp in root.iterfind(f"{ns}CommonPrefixes")
    ]
    for obj in root.iterfind(f"{ns}Contents"):
        modified = obj.findtext(f"{ns}LastModified")
        entries.append(
            _listed(
                decode(obj.findtext(f"{ns}Key") or ""),
                int(obj.findtext(f"{ns}Size") or 0),
                obj.findtext(f"{ns}ETag"),
                _parse_timestamp(modified).timestamp() if modified else None,
            )
        )
    entries.sort(key=lambda info: info.key)
    truncated = (root.findtext(f"{ns}IsTruncated") or "").lower() == "true"
    token = root.findtext(f"{ns}NextContinuationToken") if truncated else None
    return entries, token or None


def _parse_timestamp(value: str) -> datetime:
    """Response timestamps without dateutil. botocore's default parser (dateutil) took
    ~50 us a value: a tenth of the client CPU of a small GET (its Last-Modified header)
    and of a listing (every object's LastModified). The standard library reads both
    forms S3 sends, ISO 8601 in XML bodies and RFC 7231 dates in headers; anything else
    goes to botocore's parser, so results never differ."""
    try:
        if value[:4].isdigit():
            parsed = datetime.fromisoformat(value)
        else:
            parsed = email.utils.parsedate_to_datetime(value)
        if parsed.tzinfo is not None:
            return parsed
    except (TypeError, ValueError, IndexError):
        pass
    from botocore.utils import parse_timestamp

    result: datetime = parse_timestamp(value)
    return result


class S3Store(Store):
    scheme = "s3"
    limits = S3_LIMITS
    features = Features(streaming_writes=True)

    def __init__(self, bucket: str, settings: StoreSettings, *, page_size: int = 1000) -> None:
        import boto3
        import botocore.config
        import botocore.session

        self.bucket = bucket
        self.page_size = page_size
        self._bucket_seen = False
        endpoint = _endpoint(settings)
        # A remote may name env vars holding the keys; otherwise the standard chain.
        key_id = referenced_secret(settings, "access_key_env")
        secret = referenced_secret(settings, "secret_key_env")
        token = referenced_secret(settings, "session_token_env")
        core = botocore.session.get_session()
        core.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=_parse_timestamp
        )
        try:
            session = boto3.session.Session(
                botocore_session=core,
                profile_name=settings.profile,
                aws_access_key_id=key_id,
                aws_secret_access_key=secret,
                aws_session_token=token,
            )
        except Exception as e:  # botocore ProfileNotFound and friends
            raise ConfigError(f"AWS profile {settings.profile!r}: {e}") from e
        config = botocore.config.Config(
            max_pool_connections=max(10, settings.connections),
            retries={"mode": "standard", "max_attempts": 3},
            s3={"addressing_style": "path" if endpoint else "auto"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            tcp_keepalive=True,
            connect_timeout=10,
            read_timeout=60,
        )
        credentials = session.get_credentials()
        self._identity = (settings.profile, credentials.access_key if credentials else None)
        self._region = settings.region or session.region_name or "us-east-1"
        self._session, self._config, self._endpoint = session, config, endpoint
        self._boto: Any = None
        self._boto_lock = threading.Lock()
        if endpoint is None:
            self._boto = self._new_client()  # AWS: its endpoint URL comes from the client
        self._lean: LeanS3 | None = None
        if lean_enabled() and credentials is not None:
            self._lean = self._make_lean(endpoint, credentials, core)

    def _new_client(self) -> Any:
        return self._session.client(
            "s3", endpoint_url=self._endpoint, region_name=self._region, config=self._config
        )

    @property
    def _client(self) -> Any:
        """The boto3 client, made on first use: with a custom endpoint the lean path
        may do all the work, and making a client costs ~0.14 s of CPU."""
        client = self._boto
        if client is None:
            with self._boto_lock:
                if self._boto is None:
                    self._boto = self._new_client()
                client = self._boto
        return client

    def _make_lean(self, endpoint: str | None, credentials: Any, core: Any) -> LeanS3 | None:
        """The lean request path (``lean.py``) for this bucket, or None where it can't
        promise to behave as boto3 does here."""
        from botocore.httpsession import get_cert_path

        url = endpoint or self._client.meta.endpoint_url
        if endpoint is None:
            # AWS itself: virtual-hosted addressing as boto3's "auto" picks it, and only
            # for names that are valid TLS host labels; FIPS/dual-stack/accelerate stay
            # on boto3.
            if any(
                core.get_config_variable(v) for v in ("use_fips_endpoint", "use_dualstack_endpoint")
            ) or not _virtual_host_ok(self.bucket):
                return None
            if "fips" in url or "dualstack" in url or "accelerate" in url:
                return None
        verify = core.get_config_variable("ca_bundle") or get_cert_path(True)
        try:
            return LeanS3(
                endpoint=url,
                bucket=self.bucket,
                region=self._client.meta.region_name if endpoint is None else self._region,
                path_style=endpoint is not None,
                credentials=credentials.get_frozen_credentials,
                ca_bundle=verify if isinstance(verify, str) else None,
                connect_timeout=10,
                read_timeout=60,
            )
        except LeanUnavailable:
            return None

    def _lean_request(self, method: str, key: str, **kwargs: Any) -> Response | None:
        """The request over the lean path, or None: boto3 should do it."""
        lean = self._lean
        if lean is None:
            return None
        try:
            return lean.request(method, key, **kwargs)
        except LeanUnavailable:
            if lean.disabled:
                self._lean = None
            return None

    def _lean_error(self, r: Response, key: str) -> StoreError:
        code, message = r.error()
        return classify_error(
            code, r.status, message, r.headers.get("retry-after"), self.bucket, key
        )

    @staticmethod
    def _boto_info(key: str, r: Mapping[str, Any], size: int) -> ObjectInfo:
        return _object_info(
            key,
            size,
            r.get("Metadata", {}),
            r.get("ETag"),
            r.get("LastModified"),
            r.get("VersionId"),
            r.get("ServerSideEncryption"),
        )

    def _lean_info(self, key: str, r: Response, size: int) -> ObjectInfo:
        headers = r.headers
        meta = {k[11:]: v for k, v in headers.items() if k.startswith("x-amz-meta-")}
        modified = headers.get("last-modified")
        return _object_info(
            key,
            size,
            meta,
            headers.get("etag"),
            _parse_timestamp(modified) if modified else None,
            headers.get("x-amz-version-id"),
            headers.get("x-amz-server-side-encryption"),
        )

    @classmethod
    def from_location(cls, loc: Location, settings: StoreSettings) -> S3Store:
        return cls(loc.bucket, settings)

    @property
    def client(self) -> Any:
        return self._client

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def _call(self, key: str | None, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except Exception as e:
            raise map_error(e, self.bucket, key) from e

    def _check_bucket(self, key: str) -> None:
        """Raise ``BucketNotFound`` if the bucket is missing. A HEAD's 404 has no body,
        so it can't say whether the key or the bucket is missing; HeadBucket tells. When
        that can't be asked (no permission) the caller's ``NotFound`` stands. A bucket
        seen once is not asked about again."""
        if self._bucket_seen:
            return
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except Exception as e:
            if isinstance(map_error(e, self.bucket, key), NotFound):
                raise BucketNotFound(
                    f"{self.url(key)}: bucket {self.bucket!r} does not exist; create it or "
                    "check the name",
                    key=key,
                ) from e
            return
        self._bucket_seen = True

    def stat(self, key: str) -> ObjectInfo:
        if key == "" or key.endswith("/"):
            raise NotFound(f"{self.url(key)}: not an object", key=key)
        lean = self._lean_request("HEAD", key)
        if lean is not None:
            if lean.status == 200:
                return self._lean_info(key, lean, int(lean.headers.get("content-length", 0)))
            error = self._lean_error(lean, key)
            if isinstance(error, NotFound):
                self._check_bucket(key)
            raise error
        try:
            r = self._call(key, self._client.head_object, Key=key)
        except NotFound:
            self._check_bucket(key)
            raise
        return self._boto_info(key, r, int(r["ContentLength"]))

    def list(self, prefix: str, *, recursive: bool = True) -> Iterator[ObjectInfo]:
        if not recursive and prefix and not prefix.endswith("/"):
            prefix += "/"  # one level down means "this directory", never a name prefix
        if self._lean is not None:
            lean = self._lean_list(prefix, recursive)
            if lean is not None:
                yield from lean
                return
        kwargs: dict[str, Any] = {"Prefix": prefix, "MaxKeys": self.page_size}
        if not recursive:
            kwargs["Delimiter"] = "/"
        token: str | None = None
        while True:
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(prefix, self._client.list_objects_v2, **kwargs)
            # A page holds its prefixes and its objects in two lists; one page spans one
            # key range, so merging the two by key keeps the whole listing in key order.
            entries = [
                ObjectInfo(key=cp["Prefix"], size=0, is_dir=True)
                for cp in page.get("CommonPrefixes", ())
            ]
            for obj in page.get("Contents", ()):
                entries.append(
                    _listed(
                        obj["Key"], obj["Size"], obj.get("ETag"), obj["LastModified"].timestamp()
                    )
                )
            entries.sort(key=lambda info: info.key)
            yield from entries
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
            if not token:
                return

    def _lean_list(self, prefix: str, recursive: bool) -> Iterator[ObjectInfo] | None:
        """ListObjectsV2 over the lean path, as ``list`` yields it; None if the first
        page must go through boto3. Keys come URL-encoded (``encoding-type=url``, as
        boto3 asks and decodes), so control characters survive the XML."""
        query = {
            "list-type": "2",
            "prefix": prefix,
            "max-keys": str(self.page_size),
            "encoding-type": "url",
        }
        if not recursive:
            query["delimiter"] = "/"
        first = self._lean_request("GET", "", query=query)
        if first is None:
            return None
        return self._lean_pages(prefix, query, first)

    def _lean_pages(
        self, prefix: str, query: dict[str, str], page: Response | None
    ) -> Iterator[ObjectInfo]:
        while True:
            if page is None:
                page = self._lean_request("GET", "", query=query)
                if page is None:  # the lean path was switched off between pages
                    raise TransientError(f"{self.url(prefix)}: listing interrupted", key=prefix)
            if page.status != 200:
                raise self._lean_error(page, prefix)
            entries, token = _parse_list_page(bytes(page.body))
            yield from entries
            if not token:
                return
            query["continuation-token"] = token
            page = None

    def _get(self, key: str, offset: int, length: int | None) -> Any:
        if length is not None and length <= 0:
            return None
        end = "" if length is None else str(offset + length - 1)
        try:
            return self._client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{end}"
            )
        except Exception as e:
            if _error_code(e) == "InvalidRange":
                return None  # at or past the end (or an empty object)
            raise map_error(e, self.bucket, key) from e

    def _lean_range(
        self, key: str, offset: int, length: int | None, into: memoryview | None = None
    ) -> Response | None:
        """A ranged lean GET; None: boto3 should do it. Raises the mapped error; an
        answer of 416 (at or past the end) comes back as it is."""
        end = "" if length is None else str(offset + length - 1)
        r = self._lean_request("GET", key, headers={"range": f"bytes={offset}-{end}"}, into=into)
        if r is None or r.status == 206 or r.status == 416:
            return r
        if r.status == 200 and offset == 0:
            return r  # the whole object fit the range
        if r.status == 200:
            raise TransientError(f"{self.url(key)}: server ignored the Range header", key=key)
        raise self._lean_error(r, key)

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        if length is not None and length <= 0:
            return b""
        lean = self._lean_range(key, offset, length)
        if lean is not None:
            return b"" if lean.status == 416 else bytes(lean.body)
        r = self._get(key, offset, length)
        if r is None:
            return b""
        try:
            data: bytes = r["Body"].read()
            return data
        except Exception as e:
            raise map_error(e, self.bucket, key) from e
        finally:
            r["Body"].close()

    def read_object(
        self, key: str, info: ObjectInfo | None = None
    ) -> tuple[bytes | bytearray, ObjectInfo]:
        lean = self._lean_request("GET", key)
        if lean is not None:
            if lean.status != 200:
                raise self._lean_error(lean, key)
            return lean.body, self._lean_info(key, lean, len(lean.body))
        r = self._call(key, self._client.get_object, Key=key)
        try:
            data: bytes = r["Body"].read()
        except Exception as e:
            raise map_error(e, self.bucket, key) from e
        finally:
            r["Body"].close()
        return data, self._boto_info(key, r, int(r["ContentLength"]))

    def readinto(self, key: str, offset: int, buf: memoryview) -> int:
        if len(buf) == 0:
            return 0
        view = buf.cast("B") if buf.format != "B" else buf
        lean = self._lean_range(key, offset, view.nbytes, into=view)
        if lean is not None:
            return 0 if lean.status == 416 else lean.length
        r = self._get(key, offset, len(buf))
        if r is None:
            return 0
        expected = int(r["ContentLength"])
        raw = r["Body"]._raw_stream  # the urllib3 response
        # urllib3's readinto reads into a new bytes object and copies that into the
        # buffer; the http.client response under it fills the buffer straight from
        # the socket. botocore asks urllib3 not to decode, so the bytes are the same.
        reader = getattr(raw, "_fp", None) or raw
        view = buf.cast("B") if buf.format != "B" else buf
        total = 0
        try:
            while total < expected:
                n = reader.readinto(view[total:expected])
                if not n:
                    break
                total += n
            if reader is not raw and total == expected and reader.isclosed():
                # Body read to its end: hand the connection back to the pool, as
                # urllib3 does itself when its own reads reach the end.
                raw.release_conn()
        except Exception as e:
            raise map_error(e, self.bucket, key) from e
        finally:
            r["Body"].close()
        if total != expected:
            raise TransientError(
                f"{self.url(key)}: body ended after {total} of {expected} bytes", key=key
            )
        return total

    def put(
        self,
        key: str,
        data: Buffer,
        *,
        metadata: Mapping[str, str] | None = None,
        digests: PartDigests | None = None,
    ) -> ObjectInfo:
        digests = digests or PartDigests(data)
        headers = {f"x-amz-meta-{k}": v for k, v in (metadata or {}).items()}
        headers["x-amz-checksum-crc32c"] = b64(digests.get("crc32c"))
        view = memoryview(data)
        lean = self._lean_request(
            "PUT", key, headers=headers, body=view.cast("B") if view.format != "B" else view
        )
        if lean is not None:
            if lean.status != 200:
                raise self._lean_error(lean, key)
            h = lean.headers
            return _put_info(
                key,
                view.nbytes,
                metadata,
                h.get("etag"),
                h.get("x-amz-version-id"),
                h.get("x-amz-server-side-encryption"),
            )
        body = _body(data)
        r = self._call(
            key,
            self._client.put_object,
            Key=key,
            Body=body,
            Metadata=dict(metadata or {}),
            ChecksumCRC32C=b64(digests.get("crc32c")),
        )
        return _put_info(
            key,
            len(body),
            metadata,
            r.get("ETag"),
            r.get("VersionId"),
            r.get("ServerSideEncryption"),
        )

    def open_writer(
        self,
        key: str,
        *,
        size: int,
        part_size: int,
        metadata: Mapping[str, str] | None = None,
    ) -> ChunkWriter:
        if size > MAX_OBJECT_SIZE:
            raise StoreError(f"{self.url(key)}: {size} bytes exceeds S3's 5 TiB limit", key=key)
        return S3Writer(self, key, size, part_size, dict(metadata or {}))

    def resume_writer(
        self,
        key: str,
        *,
        size: int,
        part_size: int,
        state: Mapping[str, Any],
        metadata: Mapping[str, str] | None = None,
    ) -> S3Writer:
        upload_id = state.get("upload_id")
        if not isinstance(upload_id, str):
            raise NotFound(f"{self.url(key)}: no upload to resume", key=key)
        initial = state.get("metadata")
        writer = S3Writer(
            self,
            key,
            size,
            part_size,
            dict(initial if isinstance(initial, dict) else {}),
            upload_id=upload_id,
        )
        writer.verify_parts({})  # NoSuchUpload -> NotFound now, not at the first part
        return writer

    def delete(self, key: str) -> None:
        lean = self._lean_request("DELETE", key)
        if lean is not None:
            if not 200 <= lean.status < 300:
                raise self._lean_error(lean, key)
            return
        self._call(key, self._client.delete_object, Key=key)

    def list_pending_uploads(self, prefix: str) -> Iterator[PendingUpload]:
        """ListMultipartUploads under ``prefix``, page by page. ``initiated`` is the
        server's Initiated time; ``size`` is None (it would take a ListParts each)."""
        kwargs: dict[str, Any] = {"Prefix": prefix, "MaxUploads": self.page_size}
        while True:
            page = self._call(prefix, self._client.list_multipart_uploads, **kwargs)
            for u in page.get("Uploads", ()):
                initiated = u.get("Initiated")
                yield PendingUpload(
                    key=u["Key"],
                    initiated=initiated.timestamp() if isinstance(initiated, datetime) else None,
                    size=None,
                    token={"upload_id": u["UploadId"]},
                )
            markers = {
                "KeyMarker": page.get("NextKeyMarker") or "",
                "UploadIdMarker": page.get("NextUploadIdMarker") or "",
            }
            if not page.get("IsTruncated") or not markers["KeyMarker"]:
                return
            if all(kwargs.get(k) == v for k, v in markers.items()):
                return  # a server repeating its markers would loop forever
            kwargs.update(markers)

    def abort_pending_upload(self, upload: PendingUpload) -> None:
        upload_id = upload.token.get("upload_id")
        if not isinstance(upload_id, str):
            raise ValueError(f"{self.url(upload.key)}: not an S3 upload token")
        self._abort(upload.key, upload_id)

    def can_copy_from(self, source: Store) -> bool:
        # One endpoint, one set of credentials: CopyObject works across its buckets.
        return (
            isinstance(source, S3Store)
            and source._client.meta.endpoint_url == self._client.meta.endpoint_url
            and source._identity == self._identity
        )

    def copy_from(
        self,
        source: Store,
        src_key: str,
        dst_key: str,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        if not isinstance(source, S3Store) or not self.can_copy_from(source):
            raise Unsupported(f"no server-side copy from {source.url('')} to {self.url('')}")
        return self.copy_object(src_key, dst_key, metadata=metadata, src_bucket=source.bucket)

    def copy_object(
        self,
        src_key: str,
        dst_key: str,
        *,
        metadata: Mapping[str, str] | None = None,
        if_match: str | None = None,
        size: int | None = None,
        src_bucket: str | None = None,
    ) -> ObjectInfo:
        """Server-side copy: CopyObject up to 5 GiB, UploadPartCopy beyond."""
        src_bucket = src_bucket or self.bucket
        if size is None:
            head = (
                self._call(src_key, self._client.head_object, Key=src_key)
                if (src_bucket == self.bucket)
                else self._head_other(src_bucket, src_key)
            )
            size = int(head["ContentLength"])
        extra: dict[str, Any] = {}
        if metadata is not None:
            extra["Metadata"] = dict(metadata)
            extra["MetadataDirective"] = "REPLACE"
        if if_match:
            extra["CopySourceIfMatch"] = f'"{if_match}"'
        source = {"Bucket": src_bucket, "Key": src_key}
        if size <= S3_LIMITS.max_single_put:
            r = self._call(
                dst_key, self._client.copy_object, Key=dst_key, CopySource=source, **extra
            )
            etag = r.get("CopyObjectResult", {}).get("ETag", "").strip('"') or None
            return ObjectInfo(
                key=dst_key,
                size=size,
                etag=etag,
                version=r.get("VersionId"),
                metadata=dict(metadata or {}),
            )
        return self._multipart_copy(source, dst_key, size, metadata, if_match)

    def _head_other(self, bucket: str, key: str) -> Any:
        try:
            return self._client.head_object(Bucket=bucket, Key=key)
        except Exception as e:
            raise map_error(e, bucket, key) from e

    def _multipart_copy(
        self,
        source: dict[str, str],
        dst_key: str,
        size: int,
        metadata: Mapping[str, str] | None,
        if_match: str | None,
    ) -> ObjectInfo:
        if metadata is None:
            metadata = self._head_other(source["Bucket"], source["Key"]).get("Metadata", {})
        part_size = S3_LIMITS.choose_part_size(size, 1 * GiB)
        mpu = self._call(
            dst_key, self._client.create_multipart_upload, Key=dst_key, Metadata=dict(metadata)
        )
        upload_id = mpu["UploadId"]
        cond = {"CopySourceIfMatch": f'"{if_match}"'} if if_match else {}

        def copy_part(n: int) -> dict[str, Any]:
            start = n * part_size
            end = min(size, start + part_size) - 1
            r = self._call(
                dst_key,
                self._client.upload_part_copy,
                Key=dst_key,
                UploadId=upload_id,
                PartNumber=n + 1,
                CopySource=source,
                CopySourceRange=f"bytes={start}-{end}",
                **cond,
            )
            return {"PartNumber": n + 1, "ETag": r["CopyPartResult"]["ETag"]}

        try:
            count = -(-size // part_size)
            with ThreadPoolExecutor(max_workers=8) as pool:
                parts = list(pool.map(copy_part, range(count)))
            r = self._call(
                dst_key,
                self._client.complete_multipart_upload,
                Key=dst_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            self._abort(dst_key, upload_id)
            raise
        return ObjectInfo(
            key=dst_key,
            size=size,
            etag=r.get("ETag", "").strip('"') or None,
            version=r.get("VersionId"),
            metadata=dict(metadata),
        )

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as e:
            mapped = map_error(e, self.bucket, key)
            if not isinstance(mapped, NotFound):  # NoSuchUpload: already gone
                raise mapped from e

    def close(self) -> None:
        if self._lean is not None:
            self._lean.close()
        if self._boto is not None:
            self._boto.close()


class S3Writer:
    """One multipart upload. Parts carry CRC32C checksums the server verifies."""

    def __init__(
        self,
        store: S3Store,
        key: str,
        size: int,
        part_size: int,
        metadata: dict[str, str],
        *,
        upload_id: str | None = None,
    ) -> None:
        limits = store.limits
        limits.check_part_size(part_size) if size > part_size else None
        if -(-size // part_size) > limits.max_parts:
            raise StoreError(
                f"{store.url(key)}: {size} bytes in {part_size}-byte parts exceeds "
                f"{limits.max_parts} parts; use a larger part size",
                key=key,
            )
        self.store = store
        self.key = key
        self.size = size
        self.part_size = part_size
        self._initial_metadata = metadata
        self._parts: dict[int, PartReceipt] = {}
        self._lock = threading.Lock()
        self._closed = False
        if upload_id is not None:
            self.upload_id = upload_id
            return
        r = store._call(
            key,
            store.client.create_multipart_upload,
            Key=key,
            Metadata=metadata,
            ChecksumAlgorithm="CRC32C",
        )
        self.upload_id = r["UploadId"]

    def state(self) -> dict[str, Any]:
        return {"upload_id": self.upload_id, "metadata": self._initial_metadata}

    def verify_parts(self, claimed: Mapping[int, PartReceipt]) -> set[int]:
        """ListParts, and keep the claimed parts whose ETag and size the server agrees
        with; those become this writer's parts as if written now."""
        held: dict[int, dict[str, Any]] = {}
        marker = 0
        while True:
            r = self.store._call(
                self.key,
                self.store.client.list_parts,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumberMarker=marker,
            )
            for p in r.get("Parts", ()):
                held[int(p["PartNumber"]) - 1] = p
            if not r.get("IsTruncated"):
                break
            marker = int(r["NextPartNumberMarker"])
        valid = set()
        for index, receipt in claimed.items():
            p = held.get(index)
            if (
                p
                and p["ETag"].strip('"') == (receipt.etag or "").strip('"')
                and (int(p["Size"]) == receipt.size)
            ):
                valid.add(index)
                with self._lock:
                    self._parts[index] = receipt
        return valid

    def write_part(self, index: int, data: Buffer, digests: PartDigests) -> PartReceipt:
        crc = b64(digests.get("crc32c"))
        body = _body(data)
        r = self.store._call(
            self.key,
            self.store.client.upload_part,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=index + 1,
            Body=body,
            ChecksumCRC32C=crc,
        )
        returned = r.get("ChecksumCRC32C")
        if returned and unb64(returned) != unb64(crc):
            raise IntegrityError(
                f"{self.store.url(self.key)}: part {index + 1} stored with CRC32C {returned}, "
                f"sent {crc}",
                key=self.key,
            )
        receipt = PartReceipt(index, len(body), r["ETag"], crc)
        with self._lock:
            self._parts[index] = receipt
        return receipt

    def commit(self, metadata: Mapping[str, str]) -> ObjectInfo:
        with self._lock:
            parts = [self._parts[i] for i in sorted(self._parts)]
        expected = -(-self.size // self.part_size)
        if len(parts) != expected:
            raise StoreError(
                f"{self.store.url(self.key)}: commit with {len(parts)} of {expected} parts",
                key=self.key,
            )
        r = self.store._call(
            self.key,
            self.store.client.complete_multipart_upload,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={
                "Parts": [
                    {"PartNumber": p.index + 1, "ETag": p.etag, "ChecksumCRC32C": p.checksum}
                    for p in parts
                ]
            },
        )
        self._closed = True
        etag = r.get("ETag", "").strip('"') or None
        info = ObjectInfo(
            key=self.key,
            size=self.size,
            etag=etag,
            version=r.get("VersionId"),
            metadata=dict(self._initial_metadata),
        )
        # commit's metadata is merged over open_writer's (the ChunkWriter contract).
        final = {**self._initial_metadata, **metadata}
        if final != self._initial_metadata:
            try:
                info = self.store.copy_object(
                    self.key, self.key, metadata=final, if_match=etag, size=self.size
                )
            except Unsupported:
                pass
        return info

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.store._abort(self.key, self.upload_id)


class S3FsOps(FsOps):
    """S3: a LIST carries no user metadata; ``stat`` refuses ``dir/`` keys, so the
    marker is read with a GET; ``S3Writer`` uses ``size`` only to check the part count
    at ``__init__`` and ``commit``, so a stream opens with the hint and sets the real
    size before committing."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        assert isinstance(store, S3Store)
        self._s3 = store

    def stat_dir(self, key: str) -> ObjectInfo | None:
        try:
            _, info = self.store.read_object(key)
        except NotFound:
            return None
        return info

    def warm(self) -> None:
        """The store makes its boto3 client on first use (~0.1-0.15 s of CPU loading
        service models), and the first lookup of a cold mount needs it (``has_child``
        below; the store's HeadBucket after a 404): make it now."""
        self._s3.client  # noqa: B018 - made on first use, wanted now

    def has_child(self, prefix: str) -> bool:
        """One LIST of at most 2 keys (the marker sorts first), not a 1,000-key page:
        every lookup of a name no listing has shown asks this."""
        bucket = self._s3.bucket
        try:
            page = self._s3.client.list_objects_v2(
                Bucket=bucket, Prefix=prefix, Delimiter="/", MaxKeys=2
            )
        except Exception as e:
            raise map_error(e, bucket, prefix) from e
        keys = [p["Prefix"] for p in page.get("CommonPrefixes", ())]
        keys += [o["Key"] for o in page.get("Contents", ())]
        return any(k != prefix for k in keys)


S3Store.fs_ops_class = S3FsOps
