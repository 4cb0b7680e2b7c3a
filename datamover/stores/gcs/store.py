"""``GCSStore``: one bucket, through google-cloud-storage's JSON API. The design
(credentials, temporary part objects and compose, resume, integrity, retries, the
emulator's differences) is in the package docstring. The SDK client, its bucket
handle and its retry policy are made on first use (``sdk.py``): on the lean path with
anonymous credentials a copy never imports the SDK.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from heapq import heappop, heappush
from typing import Any

from datamover.checksums import PartDigests
from datamover.errors import (
    BucketNotFound,
    ConfigError,
    IntegrityError,
    NotFound,
    StoreError,
)
from datamover.stores import StoreSettings
from datamover.stores.base import (
    PROBE_PAGE,
    Buffer,
    ChunkWriter,
    Features,
    GiB,
    ObjectInfo,
    PartLimits,
    PendingUpload,
    PipelinedReads,
    Store,
    whole_read_limit,
)
from datamover.stores.bounds import MAX_EMPTY_PAGES, PageGuard, Recurrence, ResponseTooLarge
from datamover.stores.conventions import Styles
from datamover.stores.gcs import sdk, sdk_reads
from datamover.stores.gcs.client import Connection, make_client, pool_map
from datamover.stores.gcs.crc import crc_b64, crc_from_b64
from datamover.stores.gcs.errors import map_error as map_gcs_error
from datamover.stores.gcs.lean import LeanGCS, LeanUnavailable, lean_enabled
from datamover.stores.gcs.listing import lean_pages, sdk_pages
from datamover.stores.gcs.metadata import blob_info, content_type_for
from datamover.stores.gcs.uploads import DEFAULT_TEMP_PREFIX, UPLOAD_ID_RE, pending_uploads
from datamover.stores.gcs.writer import GCSWriter
from datamover.stores.urls import Location

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 1000
#: Prefixes of a delimited listing held back to be released in key order.
MAX_HELD_PREFIXES = 10_000
DEFAULT_RETRY_DEADLINE = 60.0
_UNSET = object()


class GCSStore(Store):
    """One GCS bucket. See the package docstring for credentials and multipart writes."""

    scheme = "gs"
    features = Features(
        max_metadata_bytes=8192,
        listing_metadata=True,
        metadata_at_commit=True,
        metadata_styles=("gcloud", "gcsfuse", "rclone"),
        resumable_writes=True,
    )
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
        metadata_style: object = None,
    ) -> None:
        if not temp_prefix.endswith("/") or temp_prefix == "/":
            raise ConfigError(f"gs temp_prefix {temp_prefix!r} must be a prefix ending in '/'")
        # ``client``: a ``Connection`` (``make_client``) or an SDK client made elsewhere.
        self._conn = client if isinstance(client, Connection) else Connection.of(client)
        self._bucket_handle: Any = None
        self.bucket_name = bucket
        self.connections = connections
        self.page_size = page_size
        self.temp_prefix = temp_prefix
        self._retry_deadline = retry_deadline
        self._retry: Any = _UNSET
        self._bucket_exists = False
        self._closed = False
        self.styles = Styles.chosen(
            metadata_style, self.features.metadata_styles, rfc3339_mtime=True
        )
        self._conn.size(connections, page_size)
        self._lean: LeanGCS | None = None
        if lean_enabled():
            try:
                self._lean = LeanGCS(self._conn, bucket, self._bucket_is_there)
            except LeanUnavailable:
                self._lean = None

    @classmethod
    def from_location(cls, loc: Location, settings: StoreSettings) -> GCSStore:
        """Client for ``loc.bucket``. An endpoint (``settings.endpoint``, else
        ``STORAGE_EMULATOR_HOST``; ``http://`` assumed without a scheme) means anonymous
        credentials, as emulators want, unless ``settings.extra["anonymous"]`` is false
        (a private endpoint that still needs ADC). ``extra`` also takes ``project``,
        ``retry_deadline`` (s), ``page_size``, ``temp_prefix`` and ``metadata_style``."""
        extra = settings.extra
        client = make_client(loc.bucket, settings)
        return cls(
            client,
            loc.bucket,
            connections=settings.connections,
            retry_deadline=float(extra.get("retry_deadline", DEFAULT_RETRY_DEADLINE)),
            page_size=int(extra.get("page_size", DEFAULT_PAGE_SIZE)),
            temp_prefix=str(extra.get("temp_prefix", DEFAULT_TEMP_PREFIX)),
            metadata_style=extra.get("metadata_style"),
        )

    # -- the SDK, made on first use ---------------------------------------------------------

    @property
    def _client(self) -> Any:
        """The ``storage.Client`` (the SDK imported and the client made on first use)."""
        return self._conn.client

    @property
    def _bucket(self) -> Any:
        """The SDK's bucket handle, made on first use."""
        if self._bucket_handle is None:
            self._bucket_handle = self._client.bucket(self.bucket_name)
        return self._bucket_handle

    @property
    def retry(self) -> Any:
        """The SDK's retry policy for every SDK call (``DEFAULT_RETRY`` with the
        store's deadline), made on first use; a test may set another (or None)."""
        if self._retry is _UNSET:
            self._retry = sdk.storage().retry.DEFAULT_RETRY.with_timeout(self._retry_deadline)
        return self._retry

    @retry.setter
    def retry(self, value: Any) -> None:
        self._retry = value

    # -- errors ---------------------------------------------------------------------------

    def map_error(
        self, e: BaseException, key: str | None, *, missing: str = "object"
    ) -> StoreError:
        """The one place SDK and transport exceptions become datamover errors
        (``errors.map_error``, for this bucket).

        ``missing`` says what a 404 means: ``"object"`` (the key or the bucket: the
        bucket is probed once to tell which) or ``"bucket"`` (a listing).
        """
        return map_gcs_error(
            e,
            key,
            bucket=self.bucket_name,
            bucket_is_there=self._bucket_is_there,
            missing=missing,
        )

    def _bucket_is_there(self) -> bool:
        """Whether the bucket exists; True when we can't tell (no permission to ask).
        A positive answer is kept: buckets rarely vanish under a running transfer."""
        if self._bucket_exists:
            return True
        try:
            if self._lean is not None:
                exists = self._lean.bucket_exists()
            else:
                exists = bool(self._bucket.exists(retry=self.retry))
        except Exception:
            return True
        self._bucket_exists = exists
        return exists

    # -- Store ----------------------------------------------------------------------------

    def url(self, key: str = "") -> str:
        return f"gs://{self.bucket_name}/{key}"

    def place(self, key: str, *, resolve: bool = False) -> str | None:
        # Bucket names are global to a service: its endpoint (GCS's, or an emulator's).
        endpoint = (self._conn.api_endpoint or "https://storage.googleapis.com").rstrip("/")
        return f"gs+{endpoint}/{self.bucket_name}/{key}"

    def stat(self, key: str) -> ObjectInfo:
        if not key:
            raise NotFound(f"{self.url(key)}: no object named by an empty key", key=key)
        if self._lean is not None:
            return blob_info(self._lean.stat(key), key)
        blob = self._bucket.blob(key)
        try:
            blob.reload(retry=self.retry)
        except Exception as e:
            raise self.map_error(e, key) from e
        return blob_info(blob, key)

    def list(self, prefix: str, *, recursive: bool = True) -> Iterator[ObjectInfo]:
        if not recursive and prefix and not prefix.endswith("/"):
            prefix += "/"
        return self._list(prefix, delimiter=None if recursive else "/", hide_temp=True)

    def probe(self, prefix: str) -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        next(iter(self._pages(prefix, "/", PROBE_PAGE)), None)  # one request

    def _pages(
        self, prefix: str, delimiter: str | None, page_size: int | None = None
    ) -> Iterator[tuple[Sequence[Any], Sequence[str]]]:
        """The listing's pages as (blobs, prefixes), checked as they come: every name
        is text under ``prefix``, a page holds at most ``page_size`` objects, and the
        chain of pages does not loop (``PageGuard``; a prefix named again, as GCS may
        on a later page, is not new and so not progress)."""
        page_size = page_size or self.page_size
        guard = PageGuard(self.url(prefix), prefix=prefix)
        if self._lean is not None:
            pages = lean_pages(self._lean, prefix, delimiter, page_size)
        else:
            pages = sdk_pages(
                self._client,
                self._bucket,
                prefix,
                delimiter,
                page_size,
                self.retry,
                lambda e: self.map_error(e, prefix, missing="bucket"),
            )
        named = Recurrence()  # prefixes seen: the last ones exactly, constant memory
        for blobs, prefixes, token in pages:
            if len(blobs) > page_size:
                raise guard.error(f"returned {len(blobs)} objects in a page of {page_size}")
            names = [blob.name for blob in blobs]
            for name in (*names, *prefixes):
                if not isinstance(name, str) or not name:
                    raise guard.error(f"named an entry without a name ({name!r:.40})")
                guard.key(name)
            new = [p for p in prefixes if not named.seen(p.encode("utf-8", "surrogatepass"))]
            fresh = names + new
            if fresh:
                guard.page(len(fresh), token, fresh[0], fresh[-1])
            else:
                guard.page(0, token)
            yield blobs, prefixes

    def _list(self, prefix: str, *, delimiter: str | None, hide_temp: bool) -> Iterator[ObjectInfo]:
        """Stream a listing in key order. Prefixes are held in a heap and released just
        before the first item that sorts after them: GCS sends them in order, but the
        emulator puts every prefix on the first page. A prefix that sorts before what was
        already yielded is taken for a repeat. At most ``MAX_HELD_PREFIXES`` are held:
        past that the smallest is released early (a server's prefixes can't grow the
        heap without bound; the listing then comes out slightly out of order, which
        the engine's reordering window absorbs)."""

        def hidden(name: str) -> bool:
            return hide_temp and name.startswith(self.temp_prefix)

        pending: list[str] = []
        queued: set[str] = set()
        last = ""
        for blobs, prefixes in self._pages(prefix, delimiter):
            for p in prefixes:
                if p > last and p not in queued and not hidden(p):
                    heappush(pending, p)
                    queued.add(p)
                    if len(pending) > MAX_HELD_PREFIXES:
                        last = heappop(pending)
                        queued.discard(last)
                        yield ObjectInfo(key=last, size=0, is_dir=True)
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
                    yield ObjectInfo(key=name, size=0, mtime=blob_info(blob).mtime, is_dir=True)
                else:
                    yield blob_info(blob)
        while pending:
            yield ObjectInfo(key=heappop(pending), size=0, is_dir=True)

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must be >= 0")
        if length == 0:
            self.stat(key)
            return b""
        whole = offset == 0 and length is None
        limit = whole_read_limit(None, self.limits.max_single_put) if length is None else length
        try:
            if self._lean is not None:
                return self._lean.read(key, offset, length, limit)
            return sdk_reads.read(self, key, offset, length, limit, whole)
        except ResponseTooLarge as e:
            if length is None:
                raise StoreError(
                    f"{self.url(key)}: over the {limit}-byte limit of a whole-object read; "
                    "read it in ranges",
                    key=key,
                ) from e
            raise
        except Exception as e:
            raise self.map_error(e, key) from e

    def read_object(
        self, key: str, info: ObjectInfo | None = None
    ) -> tuple[bytes | bytearray, ObjectInfo]:
        """The object's resource, then its bytes pinned to that generation and checked
        against its size and CRC32C, so data and info describe one generation; an
        object replaced in between is read again (``SourceChanged`` if it keeps
        changing). A stat and a plain read could pair new bytes with old info. At
        most ``info.size`` bytes, else ``MAX_WHOLE_READ`` (``whole_read_limit``),
        into a buffer of the resource's size that refuses more."""
        if self._lean is not None:
            return self._lean.read_object(key, info, self.limits.max_single_put)
        return sdk_reads.read_object(self, key, info)

    def pipelined_reads(self, width: int) -> PipelinedReads | None:
        lean = self._lean
        return None if lean is None else lean.pipelined(width, self.limits.max_single_put)

    def readinto(
        self, key: str, offset: int, buf: memoryview, *, expect: ObjectInfo | None = None
    ) -> int:
        if offset < 0:
            raise ValueError("offset must be >= 0")
        view = buf.cast("B") if buf.format != "B" or buf.ndim != 1 else buf
        if len(view) == 0:
            self.stat(key)
            return 0
        # A generation names the bytes (the ETag changes with metadata alone).
        version = expect.version if expect is not None else None
        generation = int(version) if version and version.isdigit() else None
        if self._lean is not None:
            return self._lean.readinto(key, offset, view, generation)
        return sdk_reads.readinto(self, key, offset, view, generation)

    def put(
        self,
        key: str,
        data: Buffer,
        *,
        metadata: Mapping[str, str] | None = None,
        digests: PartDigests | None = None,
    ) -> ObjectInfo:
        blob = self._upload(key, data, digests or PartDigests(data), metadata=metadata)
        # _upload compared the CRC32C the store computed of what it holds with ours.
        return blob_info(blob, key, verified="crc32c")

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
        crc = int.from_bytes(digests.get("crc32c"), "big")
        rendered = self.styles.render(metadata) if metadata else None
        payload: Any
        blob: Any
        try:
            if self._lean is not None:  # the keys of the chosen styles, as the SDK's
                # The caller's buffer as it is: the lean upload sends it without a copy.
                payload = data if isinstance(data, bytes) else memoryview(data).cast("B")
                blob = self._lean.upload(
                    name, payload, crc_b64(crc), content_type_for(name), rendered
                )
            else:
                payload = data if isinstance(data, bytes) else memoryview(data).cast("B").tobytes()
                blob = self._bucket.blob(name)
                blob.crc32c = crc_b64(crc)
                if rendered:
                    blob.metadata = rendered
                blob.upload_from_string(
                    payload,
                    content_type=content_type_for(name),
                    checksum=None,  # ours is already in the resource; don't hash twice
                    retry=self.retry,
                )
        except Exception as e:
            raise self.map_error(e, name) from e
        got = crc_from_b64(blob.crc32c)
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
            if self._lean is not None:
                response = self._lean.delete(name, generation)
                if response.status >= 300:
                    raise self._lean.error(response, name)
            else:
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
        if not isinstance(upload_id, str) or not UPLOAD_ID_RE.match(upload_id):
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
        # Not checked here: an upload no part has reached yet (a Dask worker's, handed
        # a fresh one) has nothing to list. A resume's ``verify_parts`` of the parts it
        # claims finds one that is gone.
        return writer

    def list_pending_uploads(self, prefix: str) -> Iterator[PendingUpload]:
        """Groups of temporary objects under the temp prefix, one per upload, whose key
        (from the parts' metadata) starts with ``prefix``. The whole temp prefix is
        listed once, whatever ``prefix`` is. ``initiated`` is the oldest object's
        creation time, ``size`` the bytes the group holds. An upload whose key can't be
        told (only compose intermediates left, or parts without the metadata) is listed
        with key ``""``, and only when ``prefix`` is empty."""
        yield from pending_uploads(self._temp_blobs(self.temp_prefix), prefix)

    def abort_pending_upload(self, upload: PendingUpload) -> None:
        temp_dir = upload.token.get("temp_dir")
        if (
            not isinstance(temp_dir, str)
            or not temp_dir.startswith(self.temp_prefix)
            or not UPLOAD_ID_RE.match(temp_dir[len(self.temp_prefix) :].rstrip("/"))
        ):
            raise ValueError(f"{self.url(upload.key)}: not a GCS upload token")
        self._delete_under(temp_dir)

    def _temp_blobs(self, prefix: str) -> Iterator[Any]:
        """Raw blob resources (metadata, generation, CRC32C) under ``prefix``, which is
        under the temp prefix, in name order."""
        for blobs, _prefixes in self._pages(prefix, None):
            yield from blobs

    def delete(self, key: str) -> None:
        if self._lean is not None:
            response = self._lean.delete(key)
            if response.status >= 300:
                err = self._lean.error(response, key)
                if not isinstance(err, NotFound):
                    raise err
            return
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
            dst.metadata = self.styles.render(metadata)
            dst.content_type = content_type_for(dst_key)
        token: str | None = None
        # Each call names the token for the next and how far the copy got: a token
        # named before, or a long run of calls that got no further, is a server that
        # would keep us calling for ever.
        tokens = Recurrence()
        done, stalled = -1, 0
        try:
            while True:
                token, rewritten, _total = dst.rewrite(src, token=token, retry=self.retry)
                if token is None:
                    break
                stalled = stalled + 1 if not isinstance(rewritten, int) or rewritten <= done else 0
                done = rewritten if isinstance(rewritten, int) else done
                if tokens.seen(token.encode("utf-8", "surrogatepass")) or stalled > MAX_EMPTY_PAGES:
                    raise StoreError(
                        f"{self.url(dst_key)}: the server's rewrite did not progress (a repeated "
                        f"token, or {stalled} calls without progress); a server bug",
                        key=dst_key,
                    )
        except Exception as e:
            raise self.map_error(e, src_key) from e
        return blob_info(dst, dst_key)

    def drop_connections(self) -> None:
        if self._lean is not None:  # the SDK's pool recovers from a bad connection itself
            self._lean.http.drop_thread_connection()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._lean is not None:
                self._lean.close()
            self._conn.close()  # the SDK client, if one was made

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
        rendered = self.styles.render(metadata) if metadata else None
        if self._lean is not None:
            try:
                return self._lean.compose(name, sources, content_type_for(name), rendered)
            except NotFound as e:
                if type(e) is not NotFound:
                    raise
                raise StoreError(  # a source, not the target: say so
                    f"{self.url(name)}: a part to compose has vanished", key=name
                ) from e
        dst = self._bucket.blob(name)
        dst.content_type = content_type_for(name)
        if rendered:
            dst.metadata = rendered
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
        pool_map(self.delete, names, self.connections)
