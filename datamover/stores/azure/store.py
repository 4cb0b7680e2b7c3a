"""``AzureStore``: one container as a ``Store``; the backend is described in the
package docstring (``datamover.stores.azure``).

The store reads, lists, puts, copies and deletes; it leaves client construction to
``client``, error mapping to ``errors``, metadata and properties to ``metadata``,
multipart writes to ``writer`` and leftover uncommitted blocks to ``pending``.

The SDK's clients (``_service``, ``_container_client``) are made when a call needs
them (``sdk.py`` says which): with the lean path on and plain credentials
(``client.plain_target``) a copy never imports azure-storage-blob.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import threading
import time
from collections.abc import Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from datamover.checksums import PartDigests
from datamover.errors import (
    NotFound,
    PreconditionFailed,
    StoreError,
    TransientError,
    Unsupported,
    UsageError,
)
from datamover.stores import StoreSettings
from datamover.stores.azure import sdk
from datamover.stores.azure.client import (
    LIMITS,
    LeanTarget,
    ServiceClient,
    make_service_client,
    plain_target,
)
from datamover.stores.azure.errors import error_code, http_error, is_invalid_range, map_error
from datamover.stores.azure.lean import LeanAzure, LeanUnavailable, lean_enabled
from datamover.stores.azure.listing import ListedPrefix, guarded_pages, lean_pages
from datamover.stores.azure.metadata import (
    headers_info,
    is_directory_marker,
    item_name,
    listed_info,
    properties_info,
    response_info,
    to_azure_metadata,
)
from datamover.stores.azure.pending import PendingUploads
from datamover.stores.azure.writer import TOKEN_RE, AzureBlockWriter, bytes_view
from datamover.stores.base import (
    PROBE_PAGE,
    Buffer,
    ChunkWriter,
    Features,
    ObjectInfo,
    PendingUpload,
    PipelinedReads,
    Store,
    check_whole_read,
    replaced,
    versions_differ,
    whole_read_limit,
)
from datamover.stores.bounds import PageGuard, ResponseTooLarge
from datamover.stores.conventions import Styles
from datamover.stores.leanhttp import content_range_total
from datamover.stores.urls import Location

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, BlobServiceClient, ContainerClient

#: Azure's own ceiling for one List Blobs page.
MAX_PAGE_SIZE = 5000
#: How long ``copy_object`` waits for a pending server-side copy before giving up.
DEFAULT_COPY_TIMEOUT = 600.0

# Container names: 3-63 of [a-z0-9-], starting with a letter or digit, no "--";
# plus the three reserved names the service defines.
_CONTAINER_RE = re.compile(r"^(?=.{3,63}$)[a-z0-9](?!.*--)[a-z0-9-]*$|^\$(root|logs|web)$")


class _ViewWriter:
    """A write-only stream over a memoryview, so downloads land in the caller's buffer.
    More bytes than it holds are refused (``ResponseTooLarge``) as they arrive."""

    def __init__(self, view: memoryview, where: str) -> None:
        self._view = view
        self._where = where
        self._pos = 0

    def write(self, data: bytes) -> int:
        n = len(data)
        if self._pos + n > len(self._view):
            raise ResponseTooLarge(
                f"{self._where}: the server sent more than the {len(self._view)} bytes asked for"
            )
        self._view[self._pos : self._pos + n] = data
        self._pos += n
        return n

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


class AzureStore(Store):
    """One Azure Blob Storage container. See the package docstring."""

    scheme = "az"
    features = Features(
        max_metadata_bytes=8192,
        listing_metadata=True,
        metadata_at_commit=True,
        metadata_styles=("azcopy", "rclone"),
        resumable_writes=True,
    )
    limits = LIMITS

    def __init__(
        self,
        container: str,
        service: BlobServiceClient | ServiceClient,
        *,
        page_size: int = MAX_PAGE_SIZE,
        copy_timeout: float = DEFAULT_COPY_TIMEOUT,
        metadata_style: object = None,
        lean_target: LeanTarget | None = None,
    ) -> None:
        """``service``: the SDK's client, or a ``ServiceClient`` that makes it on first
        need; ``page_size`` is blobs per List Blobs request (at most 5000);
        ``copy_timeout`` bounds the wait for a server-side copy, in seconds;
        ``metadata_style`` the POSIX-metadata styles written (``--metadata-style``;
        None: ``features.metadata_styles``); ``lean_target`` where the lean path sends
        (``client.plain_target``; None: the SDK client's)."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be in [1, {MAX_PAGE_SIZE}], not {page_size}")
        self.container = container
        self._services = (
            service if isinstance(service, ServiceClient) else ServiceClient(client=service)
        )
        self._containers: ContainerClient | None = None
        self._clients_lock = threading.Lock()
        self._page_size = page_size
        self._copy_timeout = copy_timeout
        self._pending = PendingUploads(lambda: self._container_client, container, page_size)
        self.styles = Styles.chosen(
            metadata_style, self.features.metadata_styles, rfc3339_mtime=True
        )
        self._lean: LeanAzure | None = None
        #: The container's URL (account and container), for ``place``.
        self._container_url: str | None = None
        if lean_enabled():
            try:
                target = lean_target or LeanTarget.of_client(self._container_client)
                self._container_url = target.url
                self._lean = LeanAzure(target, container)
            except LeanUnavailable:
                self._lean = None

    @classmethod
    def from_location(cls, loc: Location, settings: StoreSettings) -> AzureStore:
        if not _CONTAINER_RE.match(loc.bucket):
            raise UsageError(
                f"az://{loc.bucket}: not a valid container name (3-63 lower-case letters, "
                "digits and single hyphens)"
            )
        style = settings.extra.get("metadata_style")
        target = plain_target(settings, loc.bucket) if lean_enabled() else None
        # Without a plain target the SDK's client is made now, as it always was, so a
        # malformed setting fails before the transfer starts.
        service = (
            ServiceClient(settings)
            if target is not None
            else ServiceClient(client=make_service_client(settings))
        )
        return cls(loc.bucket, service, metadata_style=style, lean_target=target)

    @property
    def _service(self) -> BlobServiceClient:
        """The SDK's service client, made on first use."""
        return self._services.client

    @property
    def _container_client(self) -> ContainerClient:
        """The SDK's container client, made on first use."""
        client = self._containers
        if client is None:
            with self._clients_lock:
                if self._containers is None:
                    self._containers = self._service.get_container_client(self.container)
                client = self._containers
        return client

    def url(self, key: str = "") -> str:
        return f"az://{self.container}/{key}"

    def place(self, key: str, *, resolve: bool = False) -> str | None:
        # The account is in the container's URL (its host, or its path on Azurite and
        # private endpoints); a SAS query is no part of the place.
        url = self._container_url or str(self._container_client.url)
        return f"az+{urlsplit(url)._replace(query='', fragment='').geturl().rstrip('/')}/{key}"

    def _blob(self, key: str) -> BlobClient:
        return self._container_client.get_blob_client(key)

    def _error(self, e: BaseException, key: str | None) -> StoreError:
        return map_error(e, self.container, key)

    @staticmethod
    def _check_file_key(key: str) -> None:
        if key == "" or key.endswith("/"):
            raise UsageError(f"{key!r} names a directory, not a blob")

    def stat(self, key: str) -> ObjectInfo:
        if key == "":
            raise NotFound(f"{self.url(key)}: no such blob", key=key)
        if self._lean is not None:
            return self._lean.stat(key)
        try:
            props = self._blob(key).get_blob_properties()
        except Exception as e:
            raise self._error(e, key) from e
        return properties_info(props, key)

    def list(self, prefix: str, *, recursive: bool = True) -> Iterator[ObjectInfo]:
        yield from self._listing(prefix, recursive, self._page_size)

    def probe(self, prefix: str) -> None:
        next(iter(self._listing(prefix, False, PROBE_PAGE)), None)

    def _listing(self, prefix: str, recursive: bool, page_size: int) -> Iterator[ObjectInfo]:
        if not recursive and prefix and not prefix.endswith("/"):
            prefix += "/"  # one level down means "this directory", never a name prefix
        guard = PageGuard(self.url(prefix), prefix=prefix)
        if self._lean is not None:
            yield from self._lean_list(prefix, recursive, guard, page_size)
            return
        client = self._container_client
        try:
            if recursive:
                blobs = client.list_blobs(
                    name_starts_with=prefix or None,
                    include=["metadata"],
                    results_per_page=page_size,
                )
                for page in guarded_pages(blobs, guard, page_size):
                    for props in page:
                        if is_directory_marker(props):
                            # Listed so an empty directory can be recreated (base.py),
                            # with the mode and times its metadata holds.
                            yield _marker_info(properties_info(props))
                        else:
                            yield properties_info(props)
                return
            walk = client.walk_blobs(
                name_starts_with=prefix or None,
                include=["metadata"],
                delimiter="/",
                results_per_page=page_size,
            )
            blob_prefix = sdk.blob().BlobPrefix
            for page in guarded_pages(walk, guard, page_size):
                # The SDK hands each page's prefixes first, then its blobs; one page
                # spans one key range, so sorting the page restores key order.
                for item in sorted(page, key=item_name):
                    if isinstance(item, blob_prefix):
                        yield ObjectInfo(key=item.name, size=0, is_dir=True)
                    elif not is_directory_marker(item):
                        yield properties_info(item)
        except Exception as e:
            raise self._error(e, prefix) from e

    def _lean_list(
        self, prefix: str, recursive: bool, guard: PageGuard, page_size: int
    ) -> Iterator[ObjectInfo]:
        """``list`` on the lean path: the same entries, in key order, as the SDK's."""
        assert self._lean is not None
        pages = lean_pages(self._lean, prefix, None if recursive else "/", guard, page_size)
        for page in pages:
            for item in page:
                if isinstance(item, ListedPrefix):
                    yield ObjectInfo(key=item.name, size=0, is_dir=True)
                else:
                    info = listed_info(
                        item.name,
                        item.size,
                        item.metadata,
                        item.last_modified,
                        item.etag,
                        item.version_id,
                        item.content_md5,
                    )
                    if not is_directory_marker(item):
                        yield info
                    elif recursive:  # listed so an empty directory can be recreated
                        yield _marker_info(info)

    def _download(
        self,
        key: str,
        offset: int | None,
        length: int | None,
        limit: int,
        etag: str | None = None,
    ) -> Any:
        """The SDK's downloader after its first request (which the transport bounds to
        the range it asked for), refusing an object whose remaining size is over
        ``limit`` before any more of it is read; of that ``etag`` only, when given."""
        pin: dict[str, Any] = {}
        if etag:
            pin = {"etag": f'"{etag}"', "match_condition": sdk.core().MatchConditions.IfNotModified}
        downloader = self._blob(key).download_blob(
            offset=offset, length=length, max_concurrency=1, **pin
        )
        if downloader.size > limit:
            raise ResponseTooLarge(
                f"{self.url(key)}: {downloader.size} bytes, over the {limit} accepted",
                key=key,
                size=downloader.size,
            )
        return downloader

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        if length is not None and length <= 0:
            self.stat(key)  # a ranged GET can't ask for 0 bytes; still honour NotFound
            return b""
        try:
            limit = whole_read_limit(None, self.limits.max_single_put) if length is None else length
            if self._lean is not None:
                got = self._lean.get(key, offset, length, max_body=limit)
                if got.status == 416:
                    return b""
                total = content_range_total(got.headers) if got.status == 206 else None
                if length is None and total is not None and total - offset > limit:
                    check_whole_read(self.url(key), key, total, None, self.limits.max_single_put)
                return bytes(got.body)
            data: bytes = self._download(key, offset, length, limit).readall()
            return data
        except ResponseTooLarge as e:
            if length is None and e.size is not None:
                check_whole_read(self.url(key), key, e.size, None, self.limits.max_single_put)
            raise
        except Exception as e:
            if is_invalid_range(e):
                return b""
            raise self._error(e, key) from e

    def read_object(
        self, key: str, info: ObjectInfo | None = None
    ) -> tuple[bytes | bytearray, ObjectInfo]:
        """Bytes and properties from one Get Blob (the SDK pins any further ranges to
        the first response's ETag), so both describe the same blob even when it is
        replaced meanwhile; a stat and then a read could pair new bytes with old info.
        With ``info`` (a listing's), at most ``info.size`` + 1 bytes are asked for and
        a larger blob is ``SourceChanged``; without, at most ``MAX_WHOLE_READ``
        (``check_whole_read``). A blob listed empty is read with the SDK's first
        request (at most ``max_single_get_size``): a range can't start in an empty
        blob."""
        limit = whole_read_limit(info, self.limits.max_single_put)
        sized = info is not None and info.size > 0
        if self._lean is not None:
            return self._lean_read_object(key, info, limit, sized)
        try:
            downloader = self._download(
                key, 0 if sized else None, limit + 1 if sized else None, limit
            )
            data = downloader.readall()
        except ResponseTooLarge as e:
            if e.size is not None:
                check_whole_read(self.url(key), key, e.size, info, self.limits.max_single_put)
            raise
        except Exception as e:
            raise self._error(e, key) from e
        return data, properties_info(downloader.properties, key)

    def _lean_read_object(
        self, key: str, info: ObjectInfo | None, limit: int, sized: bool
    ) -> tuple[bytes | bytearray, ObjectInfo]:
        """``read_object`` on the lean path: a ranged Get Blob of ``limit`` + 1 bytes
        (the listed size and one more), or an unranged one of at most ``limit``; the
        listing's ``info`` when the answer's ETag and size are the listed ones."""
        assert self._lean is not None
        try:
            got = None
            if sized:
                got = self._lean.get(key, 0, limit + 1, max_body=limit + 1)
                if got.status == 416:  # emptied since it was listed
                    got = None
            if got is None:
                got = self._lean.get(key, 0, None, max_body=limit)
            total = content_range_total(got.headers) if got.status == 206 else len(got.body)
            if total is None:
                raise StoreError(f"{self.url(key)}: a ranged answer without a size", key=key)
            check_whole_read(self.url(key), key, total, info, self.limits.max_single_put)
        except ResponseTooLarge as e:
            if e.size is not None:
                check_whole_read(self.url(key), key, e.size, info, self.limits.max_single_put)
            raise
        etag = got.headers.get("etag", "").strip('"')
        if info is not None and info.etag and etag == info.etag and total == info.size:
            # The blob the listing described (any change to its bytes, properties or
            # metadata changes the ETag): its info as listed, without parsing the
            # metadata a second time from the headers.
            return got.body, info
        return got.body, headers_info(key, total, got.headers, whole=got.status == 200)

    def pipelined_reads(self, width: int) -> PipelinedReads | None:
        lean = self._lean
        return None if lean is None else lean.pipelined(width, self.limits.max_single_put)

    def readinto(
        self, key: str, offset: int, buf: memoryview, *, expect: ObjectInfo | None = None
    ) -> int:
        view = bytes_view(buf)
        if len(view) == 0:
            self.stat(key)
            return 0
        etag = expect.etag if expect is not None else None
        if self._lean is not None:
            try:
                got = self._lean.get(
                    key, offset, len(view), into=view, max_body=len(view), etag=etag
                )
            except ResponseTooLarge as e:
                raise ResponseTooLarge(
                    f"{self.url(key)}: the server answered with {e.size} bytes "
                    f"for a range of {len(view)}",
                    key=key,
                    size=e.size,
                ) from None
            except PreconditionFailed:
                if not etag:
                    raise
                raise replaced(self.url(key), key) from None
            if versions_differ(etag, got.headers.get("etag")):
                raise replaced(self.url(key), key)
            return 0 if got.status == 416 else got.length
        try:
            downloader = self._download(key, offset, len(view), len(view), etag)
            if versions_differ(etag, downloader.properties.etag):
                raise replaced(self.url(key), key)
            n: int = downloader.readinto(cast(IO[bytes], _ViewWriter(view, self.url(key))))
            return n
        except StoreError:
            raise
        except Exception as e:
            if is_invalid_range(e):
                return 0
            mapped = self._error(e, key)
            if etag and isinstance(mapped, PreconditionFailed):
                raise replaced(self.url(key), key) from None
            raise mapped from e

    def put(
        self,
        key: str,
        data: Buffer,
        *,
        metadata: Mapping[str, str] | None = None,
        digests: PartDigests | None = None,
    ) -> ObjectInfo:
        if key == "" or (key.endswith("/") and len(bytes_view(data))):
            # Only an empty blob may end in "/": a directory marker (empty directory).
            self._check_file_key(key)
        body = data if isinstance(data, bytes) else bytes(bytes_view(data))
        if len(body) > self.limits.max_single_put:
            raise ValueError(
                f"{self.url(key)}: {len(body)} bytes is over the single-put limit; use open_writer"
            )
        md5 = (digests if digests is not None else PartDigests(body)).get("md5")
        meta = self.styles.render(metadata)
        azure_metadata = to_azure_metadata(meta)  # UsageError for a name Azure can't take
        if self._lean is not None:
            try:
                return self._lean.put_blob(key, data, md5, azure_metadata, meta)
            except LeanUnavailable:
                pass  # a value the lean path can't send: the SDK's Put Blob
        try:
            response = self._blob(key).upload_blob(
                body,
                length=len(body),
                overwrite=True,
                metadata=azure_metadata,
                transactional_content_md5=md5,
            )
        except Exception as e:
            raise self._error(e, key) from e
        # Put Blob stores the (service-verified) MD5 as the blob's Content-MD5.
        return response_info(key, len(body), meta, response, md5, verified="md5")

    def open_writer(
        self,
        key: str,
        *,
        size: int,
        part_size: int,
        metadata: Mapping[str, str] | None = None,
    ) -> ChunkWriter:
        self._check_file_key(key)
        self.limits.check_part_size(part_size)
        if size < 0 or (size and math.ceil(size / part_size) > self.limits.max_parts):
            raise ValueError(
                f"{self.url(key)}: {size} bytes in {part_size}-byte parts is more than "
                f"{self.limits.max_parts} blocks"
            )
        return AzureBlockWriter(
            lambda: self._blob(key),
            self.container,
            key,
            size=size,
            part_size=part_size,
            metadata=self.styles.render(metadata),
            render=self.styles.render,
            lean=self._lean,
        )

    def resume_writer(
        self,
        key: str,
        *,
        size: int,
        part_size: int,
        state: Mapping[str, Any],
        metadata: Mapping[str, str] | None = None,
    ) -> AzureBlockWriter:
        token = state.get("token")
        if not isinstance(token, str) or not TOKEN_RE.match(token):
            raise NotFound(f"{self.url(key)}: no upload to resume", key=key)
        initial = state.get("metadata")
        writer = AzureBlockWriter(
            lambda: self._blob(key),
            self.container,
            key,
            size=size,
            part_size=part_size,
            metadata=initial if isinstance(initial, dict) else self.styles.render(metadata),
            token=token,
            render=self.styles.render,
            lean=self._lean,
        )
        # Not checked here: an upload no part has reached yet (a Dask worker's, handed
        # a fresh one) has nothing to list. A resume's ``verify_parts`` of the parts it
        # claims finds one that is gone.
        return writer

    def list_pending_uploads(self, prefix: str) -> Iterator[PendingUpload]:
        """Blobs under ``prefix`` holding uncommitted blocks, one ``PendingUpload`` per
        blob; see ``PendingUploads.list``."""
        return self._pending.list(prefix)

    def abort_pending_upload(self, upload: PendingUpload) -> None:
        """Clear a blob name that holds uncommitted blocks and no committed blob;
        ``Unsupported`` next to a committed blob. See ``PendingUploads.abort``."""
        self._pending.abort(upload)

    def delete(self, key: str) -> None:
        if key == "":
            return
        if self._lean is not None:
            self._lean.delete(key)
            return
        try:
            self._blob(key).delete_blob(delete_snapshots="include")
        except Exception as e:
            error = self._error(e, key)
            if not isinstance(error, NotFound):
                raise error from e

    def refused_key(self, key: str) -> str | None:
        """Never a backslash: Azure Blob (and Azurite) store ``a\\b`` as ``a/b``, over
        the blob that has that name, and answer 201."""
        if "\\" not in key:
            return None
        return (
            "Azure Blob stores '\\' in a blob name as '/' (over the blob with '/' there); "
            "rename the file (no '\\' in its name)"
        )

    def copy_object(
        self, src_key: str, dst_key: str, *, metadata: Mapping[str, str] | None = None
    ) -> ObjectInfo:
        """Async Copy Blob within the container, polled until done for at most
        ``copy_timeout`` seconds (then aborted: ``TransientError``). Without
        ``metadata`` the copy keeps the source's. ``Unsupported`` when the service
        can't verify or perform the copy."""
        self._check_file_key(dst_key)
        source, target = self._blob(src_key), self._blob(dst_key)
        options: dict[str, Any] = {}
        if metadata is not None:
            options["metadata"] = to_azure_metadata(self.styles.render(metadata))
        try:
            started = target.start_copy_from_url(source.url, **options)
        except Exception as e:
            http = http_error(e)
            if http is not None:
                code, status = error_code(http), http.status_code
                if status == 404 and code in ("BlobNotFound", "CannotVerifyCopySource"):
                    raise NotFound(f"{self.url(src_key)}: no such blob", key=src_key) from e
                if status == 501 or code in ("CannotVerifyCopySource", "NotImplemented"):
                    raise Unsupported(
                        f"{self.url(dst_key)}: server-side copy refused ({code or status})",
                        key=src_key,
                    ) from e
            raise self._error(e, dst_key) from e
        self._wait_for_copy(
            target, dst_key, str(started.get("copy_id", "")), str(started.get("copy_status", ""))
        )
        return self.stat(dst_key)

    def _wait_for_copy(self, target: BlobClient, key: str, copy_id: str, status: str) -> None:
        deadline = time.monotonic() + self._copy_timeout
        delay = 0.05
        try:
            while status == "pending":
                if time.monotonic() >= deadline:
                    # It may have finished meanwhile; the timeout error stands either way.
                    with contextlib.suppress(sdk.exceptions().AzureError):
                        target.abort_copy(copy_id)
                    raise TransientError(
                        f"{self.url(key)}: server-side copy still pending after "
                        f"{self._copy_timeout:.0f} s; aborted",
                        key=key,
                    )
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                copy = target.get_blob_properties().copy
                status = str(copy.status or "")
        except Exception as e:
            raise self._error(e, key) from e
        if status != "success":
            raise StoreError(
                f"{self.url(key)}: server-side copy ended {status or 'unknown'}", key=key
            )

    def drop_connections(self) -> None:
        if self._lean is not None:  # the SDK's pool recovers from a bad connection itself
            self._lean.http.drop_thread_connection()

    def close(self) -> None:
        if self._lean is not None:
            self._lean.close()
        self._services.close()


def _marker_info(info: ObjectInfo) -> ObjectInfo:
    """A directory marker blob (``dir/``, or ``dir`` with ``hdi_isfolder``) as the
    ``is_dir`` entry of its directory, keeping the mode and times of its metadata."""
    name = info.key if info.key.endswith("/") else info.key + "/"
    return dataclasses.replace(info, key=name, size=0, is_dir=True)
