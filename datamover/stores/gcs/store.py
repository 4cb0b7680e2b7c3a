"""Google Cloud Storage store (``gs://bucket/key``), on google-cloud-storage's JSON API.

Credentials come from Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``,
``gcloud auth application-default login``, the metadata server). When
``STORAGE_EMULATOR_HOST`` is set, or an endpoint is configured, the client talks to that
endpoint with anonymous credentials: that is how the local fake-gcs-server is used.

Multipart writes: GCS has no S3-style multipart upload on its JSON API (the XML API has
one, but the emulators lack it, and a resumable upload takes its bytes in order only).
So each part is uploaded as its own *temporary object*, in parallel, and ``commit``
concatenates them server-side with ``compose``. Temporary objects live under one
bucket-level prefix, by default ``.datamover-tmp/``::

    .datamover-tmp/<YYYYmmddTHHMMSSZ>-<16 hex>/part-<index:06d>
    .datamover-tmp/<YYYYmmddTHHMMSSZ>-<16 hex>/compose-<level>-<index:06d>

Each part object carries the key it is for in its metadata (``datamover-upload-key``),
so ``list_pending_uploads`` can say which key a leftover upload was writing.

One prefix (rather than parts next to each key) keeps them out of users' directories,
lets ``abort`` find every trace of an upload with one listing, and lets an operator add
one lifecycle rule (``matchesPrefix: [".datamover-tmp/"]``, age 7 days) as the net under
uploads whose process died. The timestamp in the upload id says how old debris is.
``list`` never shows objects under that prefix; user keys starting with it are
reserved. Where IAM only allows writing under some prefix, set
``settings.extra["temp_prefix"]`` to a prefix the credentials may write (it must end in
``/``).

Resume: a writer's ``state()`` is its upload id (and its open-time metadata);
``resume_writer`` reopens it and ``verify_parts`` lists the upload's part objects,
keeping a journaled part only when its object is there with the receipt's size, CRC32C
and ETag (the verified parts are composed with the generation the listing reports).
An upload none of whose parts remain (committed, aborted, cleaned up) is ``NotFound``.

Compose takes at most 32 sources, so more parts are composed in levels: groups of 32
become intermediate temporary objects, which are composed again, until one compose
writes the final key with its metadata. 10,000 parts need three levels.

Integrity: each part is uploaded with its CRC32C in the object resource, so GCS verifies
it on arrival; the CRC32C the server reports back is also compared with ours (the
emulator does not verify). At commit the parts' CRC32Cs are combined (``crc32c_combine``)
into the whole object's CRC32C, and the composite object's CRC32C must equal it.
Composite objects have no md5Hash: their ``checksums`` carry ``crc32c`` only (plus
datamover's own ``datamover-<alg>`` metadata).

Costs and caveats: an upload of up to 8 MiB is one request (the SDK's multipart
upload); above that the SDK uses a resumable session (one request to start it, one PUT
per 100 MiB). A payload that is not ``bytes`` is copied once to ``bytes``, and the SDK
copies it again into the request body. Each part and each intermediate is a billed
Class A operation, and deleting temporaries is one request per object (done in
parallel, ``connections`` at a time). ``abort`` must not race ``write_part``: a part
that lands after abort's listing stays behind (for the lifecycle rule).

fake-gcs-server differs from GCS (tests run on it): it accepts a wrong CRC32C in the
upload resource (the comparison with the reported CRC32C catches that), ignores
generation preconditions on compose and delete, reports an md5Hash for composite
objects, and sends every prefix of a delimited listing on the first page.

Retries: the SDK retries transient failures (429, 5xx, connection errors) with its
exponential backoff up to a bounded deadline (``settings.extra["retry_deadline"]``,
default 60 s); what survives that is mapped to ``TransientError`` for the engine.
Writes here are idempotent in effect (temporary parts have unique names; a repeated
compose or delete gives the same result), so they are retried too, which the SDK does
not do by default without generation preconditions.
"""

from __future__ import annotations

import base64
import binascii
import functools
import http.client
import logging
import mimetypes
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from heapq import heappop, heappush
from typing import Any, TypeVar

import google.auth
import google.auth.exceptions
import requests
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption
from google.cloud.storage.retry import DEFAULT_RETRY
from requests.adapters import HTTPAdapter

from datamover.checksums import PartDigests
from datamover.errors import (
    AuthError,
    BucketNotFound,
    ConfigError,
    IntegrityError,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    SourceChanged,
    StoreError,
    Throttled,
    TransientError,
)
from datamover.posixmeta import MTIME, PosixAttrs, parse_mtime_ns
from datamover.stores import StoreSettings
from datamover.stores.base import (
    Buffer,
    ChunkWriter,
    Features,
    GiB,
    ObjectInfo,
    PartLimits,
    PartReceipt,
    PendingUpload,
    Store,
    digests_from_metadata,
)
from datamover.urls import Location

log = logging.getLogger(__name__)

DEFAULT_TEMP_PREFIX = ".datamover-tmp/"
#: Metadata on each temporary part object: the key the upload is writing.
UPLOAD_KEY_METADATA = "datamover-upload-key"
_UPLOAD_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{16}$")
COMPOSE_MAX_SOURCES = 32
DEFAULT_PAGE_SIZE = 1000
DEFAULT_RETRY_DEADLINE = 60.0
DEFAULT_PROJECT = "datamover"

_T = TypeVar("_T")
_R = TypeVar("_R")

# -- CRC32C combination ------------------------------------------------------------------
#
# crc(A + B) = x^(8*len(B)) * crc(A) + crc(B) over GF(2) modulo the CRC polynomial; the
# pre- and post-inversion cancel out, as in zlib's crc32_combine. Multiplying by
# x^(8n) is done with zlib's current method (x2nmodp over a table of x^(2^k)), and the
# operator for a length is cached: all parts but the last share one length, so folding
# 10,000 part CRCs costs 10,000 multiplications of 32 steps each.

_CRC32C_POLY = 0x82F63B78  # Castagnoli polynomial, bit-reflected


def _multmodp(a: int, b: int) -> int:
    """a * b modulo the CRC polynomial, in the reflected bit order (x^0 is bit 31)."""
    if a == 0:
        return 0
    m = 1 << 31
    p = 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ _CRC32C_POLY if b & 1 else b >> 1


def _x2n_table() -> tuple[int, ...]:
    p = 1 << 30  # x^1
    table = [p]
    for _ in range(31):
        p = _multmodp(p, p)
        table.append(p)
    return tuple(table)


_X2N = _x2n_table()


@functools.lru_cache(maxsize=64)
def _shift_operator(nbytes: int) -> int:
    """x^(8 * nbytes) modulo the CRC polynomial."""
    p = 1 << 31  # x^0
    k = 3  # 8 * n = n << 3
    while nbytes:
        if nbytes & 1:
            p = _multmodp(_X2N[k & 31], p)
        nbytes >>= 1
        k += 1
    return p


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC32C of ``A + B`` from ``crc1 = crc32c(A)``, ``crc2 = crc32c(B)`` and ``len(B)``."""
    if len2 < 0:
        raise ValueError("len2 must be >= 0")
    return _multmodp(_shift_operator(len2), crc1) ^ crc2


# -- error mapping -----------------------------------------------------------------------

_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    ConnectionError,
    TimeoutError,
    http.client.HTTPException,
    google.auth.exceptions.TransportError,
)


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


def _b64_to_hex(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return base64.b64decode(value).hex()
    except (binascii.Error, ValueError):
        return None


def _crc_b64(crc: int) -> str:
    return base64.b64encode(crc.to_bytes(4, "big")).decode("ascii")


def _crc_from_b64(value: str | None) -> int | None:
    if not value:
        return None
    try:
        raw = base64.b64decode(value)
    except (binascii.Error, ValueError):
        return None
    return int.from_bytes(raw, "big") if len(raw) == 4 else None


def _content_type(key: str) -> str:
    # Only the type: an encoding such as gzip on the object would make GCS transcode.
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


def _blob_info(blob: Any, key: str | None = None) -> ObjectInfo:
    """ObjectInfo from a loaded blob resource."""
    metadata: dict[str, str] = dict(blob.metadata or {})
    checksums: dict[str, str] = {}
    md5 = _b64_to_hex(blob.md5_hash)
    if md5:
        checksums["md5"] = md5
    crc = _b64_to_hex(blob.crc32c)
    if crc:
        checksums["crc32c"] = crc
    checksums.update(digests_from_metadata(metadata))
    mtime: float | None = None
    mtime_ns = parse_mtime_ns(metadata[MTIME]) if MTIME in metadata else None
    if mtime_ns is not None:
        mtime = mtime_ns / 1e9
    elif blob.updated is not None:
        mtime = blob.updated.timestamp()
    return ObjectInfo(
        key=key if key is not None else blob.name,
        size=int(blob.size or 0),
        mtime=mtime,
        etag=blob.etag,
        version=str(blob.generation) if blob.generation is not None else None,
        checksums=checksums,
        metadata=metadata,
        mode=PosixAttrs.from_metadata(metadata).mode if metadata else None,
    )


class _ViewWriter:
    """A write-only file object over a caller's buffer, so a download lands in it with
    one copy (from the socket chunk) and no intermediate ``BytesIO``."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self.pos = 0

    def write(self, chunk: bytes) -> int:
        n = len(chunk)
        end = self.pos + n
        if end > len(self._view):
            raise StoreError("the server sent more bytes than the range asked for")
        self._view[self.pos : end] = chunk
        self.pos = end
        return n


def _pool_map(fn: Callable[[_T], _R], items: Sequence[_T], workers: int) -> list[_R]:
    """``map`` over a bounded thread pool; inline for one item. Raises the first error."""
    if len(items) <= 1 or workers <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


# -- the store ---------------------------------------------------------------------------


class GCSStore(Store):
    """One GCS bucket. See the module docstring for credentials and multipart writes."""

    scheme = "gs"
    features = Features(max_metadata_bytes=8192, listing_metadata=True)
    limits = PartLimits(
        min_part_size=1, max_part_size=5 * GiB, max_parts=10_000, max_single_put=5 * GiB
    )

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        connections: int = 16,
        retry_deadline: float = DEFAULT_RETRY_DEADLINE,
        page_size: int = DEFAULT_PAGE_SIZE,
        temp_prefix: str = DEFAULT_TEMP_PREFIX,
    ) -> None:
        if not temp_prefix.endswith("/") or temp_prefix == "/":
            raise ConfigError(f"gs temp_prefix {temp_prefix!r} must be a prefix ending in '/'")
        self._client = client
        self._bucket = client.bucket(bucket)
        self.bucket_name = bucket
        self.connections = connections
        self.page_size = page_size
        self.temp_prefix = temp_prefix
        self.retry = DEFAULT_RETRY.with_timeout(retry_deadline)
        self._bucket_exists = False
        self._closed = False
        _size_pool(client, connections)

    @classmethod
    def from_location(cls, loc: Location, settings: StoreSettings) -> GCSStore:
        """Client for ``loc.bucket``. An endpoint (``settings.endpoint``, else
        ``STORAGE_EMULATOR_HOST``; ``http://`` assumed without a scheme) means anonymous
        credentials, as emulators want, unless ``settings.extra["anonymous"]`` is false
        (a private endpoint that still needs ADC). ``extra`` also takes ``project``,
        ``retry_deadline`` (s), ``page_size`` and ``temp_prefix``."""
        extra = settings.extra
        endpoint = settings.endpoint or os.environ.get("STORAGE_EMULATOR_HOST")
        if endpoint and "://" not in endpoint:
            endpoint = "http://" + endpoint
        project = extra.get("project") or os.environ.get("GOOGLE_CLOUD_PROJECT")
        credentials: Any
        if endpoint and extra.get("anonymous", True):
            credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
            project = project or DEFAULT_PROJECT
        else:
            try:
                credentials, adc_project = google.auth.default(scopes=list(storage.Client.SCOPE))
            except google.auth.exceptions.DefaultCredentialsError as e:
                raise ConfigError(
                    f"gs://{loc.bucket}: no usable Google credentials; set "
                    "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file or run "
                    "`gcloud auth application-default login`"
                ) from e
            project = project or adc_project
        client = storage.Client(
            project=project,
            credentials=credentials,
            client_options={"api_endpoint": endpoint} if endpoint else None,
        )
        return cls(
            client,
            loc.bucket,
            connections=settings.connections,
            retry_deadline=float(extra.get("retry_deadline", DEFAULT_RETRY_DEADLINE)),
            page_size=int(extra.get("page_size", DEFAULT_PAGE_SIZE)),
            temp_prefix=str(extra.get("temp_prefix", DEFAULT_TEMP_PREFIX)),
        )

    # -- errors ---------------------------------------------------------------------------

    def map_error(
        self, e: BaseException, key: str | None, *, missing: str = "object"
    ) -> StoreError:
        """The one place SDK and transport exceptions become datamover errors.

        ``missing`` says what a 404 means: ``"object"`` (the key or the bucket: the
        bucket is probed once to tell which) or ``"bucket"`` (a listing).
        """
        if isinstance(e, StoreError):
            return e
        where = self.url(key or "")
        if isinstance(e, gexc.RetryError):
            cause = e.cause
            if cause is not None and cause is not e:
                mapped = self.map_error(cause, key, missing=missing)
                if isinstance(mapped, TransientError):
                    return mapped
            return TransientError(f"{where}: gave up after retries", key=key)
        if isinstance(e, DataCorruption):
            return IntegrityError(f"{where}: downloaded bytes failed their checksum", key=key)
        if isinstance(e, google.auth.exceptions.RefreshError):
            if getattr(e, "retryable", False):  # e.g. the metadata server did not answer
                return TransientError(f"{where}: could not refresh Google credentials", key=key)
            return AuthError(f"{where}: Google credentials were rejected or expired", key=key)
        if isinstance(e, gexc.GoogleAPICallError):
            return self._map_status(e, key, where, missing)
        if isinstance(e, _TRANSIENT_TYPES):
            return TransientError(f"{where}: {type(e).__name__}", key=key)
        return StoreError(f"{where}: {type(e).__name__}", key=key)

    def _map_status(
        self, e: gexc.GoogleAPICallError, key: str | None, where: str, missing: str
    ) -> StoreError:
        code = int(e.code) if e.code is not None else 0
        text = _code_text(e)
        if code == 404:
            if missing == "bucket" or not self._bucket_is_there():
                return BucketNotFound(f"gs://{self.bucket_name}: bucket does not exist", key=key)
            return NotFound(f"{where}: no such object", key=key)
        if code == 401:
            return AuthError(f"{where}: {text}: credentials rejected", key=key)
        if code == 403:
            return PermissionDenied(f"{where}: {text}: access denied", key=key)
        if code == 412:
            return PreconditionFailed(f"{where}: {text}", key=key)
        if code == 429:
            return Throttled(f"{where}: {text}", key=key, retry_after=_retry_after(e))
        if code == 400 and any(s in e.message.lower() for s in ("crc32c", "md5")):
            return IntegrityError(f"{where}: {text}: the server rejected the checksum", key=key)
        if code in (408,) or code >= 500:
            return TransientError(f"{where}: {text}", key=key)
        return StoreError(f"{where}: {text}", key=key)

    def _bucket_is_there(self) -> bool:
        """Whether the bucket exists; True when we can't tell (no permission to ask).
        A positive answer is kept: buckets rarely vanish under a running transfer."""
        if self._bucket_exists:
            return True
        try:
            exists = bool(self._bucket.exists(retry=self.retry))
        except Exception:
            return True
        self._bucket_exists = exists
        return exists

    # -- Store ----------------------------------------------------------------------------

    def url(self, key: str = "") -> str:
        return f"gs://{self.bucket_name}/{key}"

    def stat(self, key: str) -> ObjectInfo:
        if not key:
            raise NotFound(f"{self.url(key)}: no object named by an empty key", key=key)
        blob = self._bucket.blob(key)
        try:
            blob.reload(retry=self.retry)
        except Exception as e:
            raise self.map_error(e, key) from e
        return _blob_info(blob, key)

    def list(self, prefix: str, *, recursive: bool = True) -> Iterator[ObjectInfo]:
        if not recursive and prefix and not prefix.endswith("/"):
            prefix += "/"
        return self._list(prefix, delimiter=None if recursive else "/", hide_temp=True)

    def _list(self, prefix: str, *, delimiter: str | None, hide_temp: bool) -> Iterator[ObjectInfo]:
        """Stream a listing in key order. Prefixes are held in a heap and released just
        before the first item that sorts after them: GCS sends them in order, but the
        emulator puts every prefix on the first page. A prefix that sorts before what was
        already yielded is taken for a repeat (so memory stays bounded)."""
        try:
            pages = iter(
                self._client.list_blobs(
                    self._bucket,
                    prefix=prefix or None,
                    delimiter=delimiter,
                    page_size=self.page_size,
                    retry=self.retry,
                ).pages
            )
        except Exception as e:
            raise self.map_error(e, prefix, missing="bucket") from e

        def hidden(name: str) -> bool:
            return hide_temp and name.startswith(self.temp_prefix)

        pending: list[str] = []
        queued: set[str] = set()
        last = ""
        while True:
            try:
                page = next(pages, None)
                if page is None:
                    break
                blobs = list(page)
            except Exception as e:
                raise self.map_error(e, prefix, missing="bucket") from e
            for p in getattr(page, "prefixes", ()):
                if p > last and p not in queued and not hidden(p):
                    heappush(pending, p)
                    queued.add(p)
            for blob in blobs:
                name: str = blob.name
                while pending and pending[0] < name:
                    last = heappop(pending)
                    queued.discard(last)
                    yield ObjectInfo(key=last, size=0, is_dir=True)
                if hidden(name) or (name == prefix and prefix.endswith("/")):
                    continue  # our temporaries; the listed directory's own placeholder
                last = name
                if name.endswith("/"):
                    yield ObjectInfo(key=name, size=0, mtime=_blob_info(blob).mtime, is_dir=True)
                else:
                    yield _blob_info(blob)
        while pending:
            yield ObjectInfo(key=heappop(pending), size=0, is_dir=True)

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must be >= 0")
        if length == 0:
            self.stat(key)
            return b""
        whole = offset == 0 and length is None
        blob = self._bucket.blob(key)
        try:
            data: bytes = blob.download_as_bytes(
                start=offset or None,
                end=offset + length - 1 if length is not None else None,
                raw_download=True,
                checksum="crc32c" if whole else None,
                retry=self.retry,
            )
        except gexc.RequestRangeNotSatisfiable:
            return b""
        except Exception as e:
            raise self.map_error(e, key) from e
        return data

    def read_object(
        self, key: str, info: ObjectInfo | None = None
    ) -> tuple[bytes | bytearray, ObjectInfo]:
        """The object's resource, then its bytes pinned to that generation and checked
        against its size and CRC32C, so data and info describe one generation; an
        object replaced in between is read again (``SourceChanged`` if it keeps
        changing). A stat and a plain read could pair new bytes with old info."""
        for _ in range(3):
            blob = self._bucket.blob(key)
            try:
                blob.reload(retry=self.retry)
                # A fresh handle, without the mediaLink the reload set: the bytes come
                # from the configured endpoint, not from whatever host the server names
                # (an emulator's external URL, the public host behind a private endpoint).
                data: bytes = self._bucket.blob(key).download_as_bytes(
                    raw_download=True,
                    checksum=None,  # compared below with the resource's CRC32C
                    if_generation_match=blob.generation,
                    retry=self.retry,
                )
            except gexc.PreconditionFailed:
                continue
            except Exception as e:
                raise self.map_error(e, key) from e
            crc = int.from_bytes(PartDigests(data).get("crc32c"), "big")
            expected = _crc_from_b64(blob.crc32c)
            if len(data) == int(blob.size or 0) and expected in (None, crc):
                return data, _blob_info(blob, key)
        raise SourceChanged(f"{self.url(key)}: replaced while being read", key=key)

    def readinto(self, key: str, offset: int, buf: memoryview) -> int:
        if offset < 0:
            raise ValueError("offset must be >= 0")
        view = buf.cast("B") if buf.format != "B" or buf.ndim != 1 else buf
        if len(view) == 0:
            self.stat(key)
            return 0
        sink = _ViewWriter(view)
        blob = self._bucket.blob(key)
        try:
            blob.download_to_file(
                sink,
                start=offset,
                end=offset + len(view) - 1,
                raw_download=True,
                checksum=None,
                retry=self.retry,
            )
        except gexc.RequestRangeNotSatisfiable:
            return 0
        except Exception as e:
            raise self.map_error(e, key) from e
        return sink.pos

    def put(
        self,
        key: str,
        data: Buffer,
        *,
        metadata: Mapping[str, str] | None = None,
        digests: PartDigests | None = None,
    ) -> ObjectInfo:
        blob = self._upload(key, data, digests or PartDigests(data), metadata=metadata)
        return _blob_info(blob, key)

    def _upload(
        self,
        name: str,
        data: Buffer,
        digests: PartDigests,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> Any:
        """Upload one object with its CRC32C in the resource, so GCS verifies the bytes,
        and check the CRC32C the server reports. Returns the loaded blob."""
        payload = data if isinstance(data, bytes) else memoryview(data).cast("B").tobytes()
        crc = int.from_bytes(digests.get("crc32c"), "big")
        blob = self._bucket.blob(name)
        blob.crc32c = _crc_b64(crc)
        if metadata:
            blob.metadata = dict(metadata)
        try:
            blob.upload_from_string(
                payload,
                content_type=_content_type(name),
                checksum=None,  # ours is already in the resource; don't hash twice
                retry=self.retry,
            )
        except Exception as e:
            raise self.map_error(e, name) from e
        got = _crc_from_b64(blob.crc32c)
        if got is None and not payload:
            got = crc  # an empty object (a "dir/" marker): nothing to check; emulators omit it
        if got != crc or int(blob.size or 0) != len(payload):
            self._delete_generation(name, blob.generation)
            raise IntegrityError(
                f"{self.url(name)}: stored object has crc32c {got or 0:08x} / "
                f"{blob.size} bytes, sent {crc:08x} / {len(payload)} bytes",
                key=name,
            )
        return blob

    def _delete_generation(self, name: str, generation: int | None) -> None:
        """Best-effort removal of one bad object we just wrote (only that generation)."""
        try:
            self._bucket.blob(name).delete(if_generation_match=generation, retry=self.retry)
        except Exception as e:
            log.warning("%s: could not remove a corrupt upload: %s", self.url(name), e)

    def open_writer(
        self,
        key: str,
        *,
        size: int,
        part_size: int,
        metadata: Mapping[str, str] | None = None,
    ) -> ChunkWriter:
        if not key or key.endswith("/"):
            raise ValueError(f"{self.url(key)} is not an object name")
        if key.startswith(self.temp_prefix):
            raise ValueError(f"{self.url(key)}: keys under {self.temp_prefix} are reserved")
        self.limits.check_part_size(part_size)
        return GCSWriter(self, key, size=size, part_size=part_size, metadata=metadata)

    def resume_writer(
        self,
        key: str,
        *,
        size: int,
        part_size: int,
        state: Mapping[str, Any],
        metadata: Mapping[str, str] | None = None,
    ) -> GCSWriter:
        upload_id = state.get("upload_id")
        if not isinstance(upload_id, str) or not _UPLOAD_ID_RE.match(upload_id):
            raise NotFound(f"{self.url(key)}: no upload to resume", key=key)
        initial = state.get("metadata")
        writer = GCSWriter(
            self,
            key,
            size=size,
            part_size=part_size,
            metadata=initial if isinstance(initial, dict) else metadata,
            upload_id=upload_id,
        )
        writer.verify_parts({})  # gone -> NotFound now, not at commit
        return writer

    def list_pending_uploads(self, prefix: str) -> Iterator[PendingUpload]:
        """Groups of temporary objects under the temp prefix, one per upload, whose key
        (from the parts' metadata) starts with ``prefix``. The whole temp prefix is
        listed once, whatever ``prefix`` is. ``initiated`` is the oldest object's
        creation time, ``size`` the bytes the group holds. An upload whose key can't be
        told (only compose intermediates left, or parts without the metadata) is listed
        with key ``""``, and only when ``prefix`` is empty."""
        group: list[Any] = []
        for blob in self._temp_blobs(self.temp_prefix):
            if group and _upload_dir(group[0].name) != _upload_dir(blob.name):
                upload = self._pending(group, prefix)
                if upload is not None:
                    yield upload
                group = []
            group.append(blob)
        if group:
            upload = self._pending(group, prefix)
            if upload is not None:
                yield upload

    def _pending(self, blobs: Sequence[Any], prefix: str) -> PendingUpload | None:
        keys = {
            (b.metadata or {}).get(UPLOAD_KEY_METADATA)
            for b in blobs
            if b.name.rsplit("/", 1)[-1].startswith("part-")
        }
        keys.discard(None)
        key = str(keys.pop()) if len(keys) == 1 else ""
        if not key.startswith(prefix) or (not key and prefix):
            return None
        created = [b.time_created.timestamp() for b in blobs if b.time_created is not None]
        return PendingUpload(
            key=key,
            initiated=min(created) if created else None,
            size=sum(int(b.size or 0) for b in blobs),
            token={"temp_dir": _upload_dir(blobs[0].name)},
        )

    def abort_pending_upload(self, upload: PendingUpload) -> None:
        temp_dir = upload.token.get("temp_dir")
        if (
            not isinstance(temp_dir, str)
            or not temp_dir.startswith(self.temp_prefix)
            or not _UPLOAD_ID_RE.match(temp_dir[len(self.temp_prefix) :].rstrip("/"))
        ):
            raise ValueError(f"{self.url(upload.key)}: not a GCS upload token")
        self._delete_under(temp_dir)

    def _temp_blobs(self, prefix: str) -> Iterator[Any]:
        """Raw blob resources (metadata, generation, CRC32C) under ``prefix``, which is
        under the temp prefix, in name order."""
        try:
            yield from self._client.list_blobs(
                self._bucket, prefix=prefix, page_size=self.page_size, retry=self.retry
            )
        except Exception as e:
            raise self.map_error(e, prefix, missing="bucket") from e

    def delete(self, key: str) -> None:
        try:
            self._bucket.blob(key).delete(retry=self.retry)
        except Exception as e:
            err = self.map_error(e, key)
            if not isinstance(err, NotFound):
                raise err from e

    def copy_object(
        self, src_key: str, dst_key: str, *, metadata: Mapping[str, str] | None = None
    ) -> ObjectInfo:
        """Server-side ``rewrite``, looped until GCS says it is done (large objects or a
        change of location/storage class take several calls). ``metadata`` replaces the
        source's; without it the source's metadata is kept."""
        src = self._bucket.blob(src_key)
        dst = self._bucket.blob(dst_key)
        if metadata is not None:
            dst.metadata = dict(metadata)
            dst.content_type = _content_type(dst_key)
        token: str | None = None
        try:
            while True:
                token, _done, _total = dst.rewrite(src, token=token, retry=self.retry)
                if token is None:
                    break
        except Exception as e:
            raise self.map_error(e, src_key) from e
        return _blob_info(dst, dst_key)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()

    # -- helpers for the writer -------------------------------------------------------------

    def _compose(
        self,
        name: str,
        sources: Sequence[tuple[str, int]],
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> Any:
        """Compose ``sources`` (name, generation) into ``name``; returns the loaded blob.
        The generations pin the exact parts we uploaded (GCS refuses if one changed)."""
        dst = self._bucket.blob(name)
        dst.content_type = _content_type(name)
        if metadata:
            dst.metadata = dict(metadata)
        try:
            dst.compose(
                [self._bucket.blob(n, generation=g) for n, g in sources],
                if_source_generation_match=[g for _n, g in sources],
                retry=self.retry,
            )
        except Exception as e:
            err = self.map_error(e, name)
            if type(err) is NotFound:  # a source, not the target: say so
                err = StoreError(f"{self.url(name)}: a part to compose has vanished", key=name)
            raise err from e
        return dst

    def _delete_under(self, prefix: str) -> None:
        """Delete every object under ``prefix`` (temporaries), in parallel. Missing
        objects and a missing bucket are fine: there is nothing left to remove."""
        try:
            names = [info.key for info in self._list(prefix, delimiter=None, hide_temp=False)]
        except (NotFound, BucketNotFound):
            return
        _pool_map(self.delete, names, self.connections)


def _upload_dir(name: str) -> str:
    """``<temp prefix><upload id>/`` of a temporary object's name."""
    return name.rsplit("/", 1)[0] + "/"


def _size_pool(client: Any, connections: int) -> None:
    """Let every thread hold a connection: requests' default pool keeps 10 per host and
    discards the rest after use, so more threads would reconnect on every request.
    Commits fan out compose/delete calls ``connections`` wide while other files' parts
    are in flight, hence the headroom. Adapters other than the plain one (mTLS) are
    left as they are."""
    session = client._http
    for prefix in ("https://", "http://"):
        if type(session.adapters.get(prefix)) is HTTPAdapter:
            adapter = HTTPAdapter(pool_maxsize=max(4 * connections, 32), max_retries=0)
            session.mount(prefix, adapter)


# -- the multipart writer ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Part:
    name: str
    generation: int
    size: int
    crc: int


class GCSWriter:
    """Parts as temporary objects, composed into ``key`` at commit.

    ``metadata`` given to ``open_writer`` and to ``commit`` are merged (``commit`` wins);
    nothing is written to the key before the final compose.
    """

    def __init__(
        self,
        store: GCSStore,
        key: str,
        *,
        size: int,
        part_size: int,
        metadata: Mapping[str, str] | None,
        upload_id: str | None = None,
    ) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        self.key = key
        self.size = size
        self.part_size = part_size
        self.nparts = max(1, -(-size // part_size))
        if self.nparts > store.limits.max_parts:
            raise ValueError(
                f"{store.url(key)}: {self.nparts} parts exceed the limit of "
                f"{store.limits.max_parts}; use a larger part size"
            )
        self._store = store
        self._metadata = dict(metadata or {})
        if upload_id is None:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            upload_id = f"{stamp}-{secrets.token_hex(8)}"
        self.upload_id = upload_id
        self.temp_dir = f"{store.temp_prefix}{self.upload_id}/"
        self._parts: dict[int, _Part] = {}
        self._lock = threading.Lock()
        self._state = "open"

    def _expected_size(self, index: int) -> int:
        if index == self.nparts - 1:
            return self.size - index * self.part_size
        return self.part_size

    def _part_name(self, index: int) -> str:
        return f"{self.temp_dir}part-{index:06d}"

    def state(self) -> dict[str, Any]:
        return {"upload_id": self.upload_id, "metadata": dict(self._metadata)}

    def verify_parts(self, claimed: Mapping[int, PartReceipt]) -> set[int]:
        """List this upload's part objects and keep the claimed parts whose object has
        the receipt's size, CRC32C and (when the receipt has one) ETag; those are
        composed at commit with the generation listed. Raises ``NotFound`` when no part
        of the upload is left, or the parts were written for another key."""
        held: dict[str, Any] = {}
        for blob in self._store._temp_blobs(self.temp_dir):
            if blob.name.rsplit("/", 1)[-1].startswith("part-"):
                held[blob.name] = blob
        owner = {(b.metadata or {}).get(UPLOAD_KEY_METADATA, self.key) for b in held.values()}
        if not held or owner != {self.key}:
            raise NotFound(
                f"{self._store.url(self.key)}: upload {self.upload_id} has no parts left "
                "(committed, aborted or cleaned up)",
                key=self.key,
            )
        valid = set()
        for index, receipt in claimed.items():
            if not 0 <= index < self.nparts or receipt.size != self._expected_size(index):
                continue
            blob = held.get(self._part_name(index))
            if blob is None or blob.generation is None:
                continue
            crc = _crc_from_b64(blob.crc32c)
            if (
                crc is None
                or f"{crc:08x}" != (receipt.checksum or "").lower()
                or int(blob.size or 0) != receipt.size
                or (receipt.etag is not None and blob.etag != receipt.etag)
            ):
                continue
            valid.add(index)
            with self._lock:
                self._parts[index] = _Part(blob.name, int(blob.generation), receipt.size, crc)
        return valid

    def write_part(self, index: int, data: Buffer, digests: PartDigests) -> PartReceipt:
        if not 0 <= index < self.nparts:
            raise ValueError(f"part {index} outside 0..{self.nparts - 1}")
        nbytes = memoryview(data).nbytes
        if nbytes != self._expected_size(index):
            raise ValueError(
                f"part {index} has {nbytes} bytes, expected {self._expected_size(index)}"
            )
        if self._state != "open":
            raise StoreError(
                f"{self._store.url(self.key)}: write after {self._state}", key=self.key
            )
        name = self._part_name(index)
        blob = self._store._upload(name, data, digests, metadata={UPLOAD_KEY_METADATA: self.key})
        part = _Part(
            name, int(blob.generation), nbytes, int.from_bytes(digests.get("crc32c"), "big")
        )
        with self._lock:
            self._parts[index] = part
        return PartReceipt(index, nbytes, etag=blob.etag, checksum=f"{part.crc:08x}")

    def commit(self, metadata: Mapping[str, str]) -> ObjectInfo:
        store = self._store
        with self._lock:
            if self._state != "open":
                raise StoreError(f"{store.url(self.key)}: commit after {self._state}", key=self.key)
            missing = [i for i in range(self.nparts) if i not in self._parts]
            if missing:
                raise StoreError(
                    f"{store.url(self.key)}: {len(missing)} part(s) not written, "
                    f"first {missing[0]}",
                    key=self.key,
                )
            parts = [self._parts[i] for i in range(self.nparts)]
            self._state = "committing"
        try:
            final = self._compose_all(parts, {**self._metadata, **metadata})
        except BaseException:
            with self._lock:
                self._state = "open"
            raise
        expected = _fold_crc(parts)
        got = _crc_from_b64(final.crc32c)
        if got != expected or int(final.size or 0) != self.size:
            store._delete_generation(self.key, final.generation)
            self._remove_temporaries(raise_errors=False)
            with self._lock:
                self._state = "aborted"
            raise IntegrityError(
                f"{store.url(self.key)}: composed object has crc32c {got or 0:08x} / "
                f"{final.size} bytes, parts add up to {expected:08x} / {self.size} bytes",
                key=self.key,
            )
        with self._lock:
            self._state = "committed"
        self._remove_temporaries(raise_errors=False)
        return _blob_info(final, self.key)

    def _compose_all(self, parts: Sequence[_Part], metadata: Mapping[str, str]) -> Any:
        store = self._store
        sources: list[tuple[str, int]] = [(p.name, p.generation) for p in parts]
        level = 0
        while len(sources) > COMPOSE_MAX_SOURCES:
            level += 1
            groups = [
                (
                    f"{self.temp_dir}compose-{level}-{i // COMPOSE_MAX_SOURCES:06d}",
                    sources[i : i + COMPOSE_MAX_SOURCES],
                )
                for i in range(0, len(sources), COMPOSE_MAX_SOURCES)
            ]

            def compose_group(group: tuple[str, list[tuple[str, int]]]) -> tuple[str, int]:
                blob = store._compose(group[0], group[1])
                return group[0], int(blob.generation)

            sources = _pool_map(compose_group, groups, store.connections)
        return store._compose(self.key, sources, metadata=metadata)

    def _remove_temporaries(self, *, raise_errors: bool) -> None:
        try:
            self._store._delete_under(self.temp_dir)
        except StoreError as e:
            if raise_errors:
                raise
            # The object is committed and correct; what is left is debris under the
            # temp prefix, which abort() or a lifecycle rule removes.
            log.warning("%s: temporary parts left behind: %s", self._store.url(self.temp_dir), e)

    def abort(self) -> None:
        with self._lock:
            if self._state == "open":
                self._state = "aborted"
        self._remove_temporaries(raise_errors=True)


def _fold_crc(parts: Iterable[_Part]) -> int:
    crc = 0
    for p in parts:
        crc = crc32c_combine(crc, p.crc, p.size)
    return crc
