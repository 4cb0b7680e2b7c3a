"""Uncommitted blocks left by unfinished uploads: finding them and clearing them.

Azure keeps one list of uncommitted blocks per blob name, whoever staged them, and has
no call that deletes it; see the package docstring's abort caveat. ``AzureStore``'s
``list_pending_uploads`` and ``abort_pending_upload`` are these methods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

from datamover.errors import NotFound, PreconditionFailed, StoreError, Unsupported
from datamover.stores.azure import sdk
from datamover.stores.azure.errors import error_code, http_error, map_error
from datamover.stores.azure.listing import guarded_pages
from datamover.stores.base import PendingUpload
from datamover.stores.bounds import PageGuard

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, ContainerClient

#: Get Block List probes of committed blobs, in flight / per batch (cleanup listings).
_PROBE_WORKERS = 8
_PROBE_BATCH = 256


def _items(paged: Any, guard: PageGuard, page_size: int) -> Iterator[Any]:
    for page in guarded_pages(paged, guard, page_size):
        yield from page


class PendingUploads:
    """The pending uploads of one container (on the SDK, asked of ``client`` when a
    call needs it); ``page_size`` is blobs per List Blobs request."""

    def __init__(
        self, client: Callable[[], ContainerClient], container: str, page_size: int
    ) -> None:
        self._client = client
        self._container = container
        self._page_size = page_size

    def _url(self, key: str) -> str:
        return f"az://{self._container}/{key}"

    def _blob(self, key: str) -> BlobClient:
        return self._client().get_blob_client(key)

    def _error(self, e: BaseException, key: str | None) -> StoreError:
        return map_error(e, self._container, key)

    def list(self, prefix: str) -> Iterator[PendingUpload]:
        """Blobs under ``prefix`` holding uncommitted blocks, one ``PendingUpload`` per
        blob (Azure keeps one uncommitted list per blob name, whoever staged it).

        Two listings, merged by name: List Blobs with ``uncommittedblobs`` and without.
        A name only the first shows has no committed blob: its pieces can be removed
        (see ``abort``); ``initiated`` is its creation time and ``size`` the sum of its
        uncommitted blocks (one Get Block List each). A committed blob may hold
        uncommitted blocks too, which only Get Block List reveals: that is one request
        per committed blob under the prefix (``_PROBE_WORKERS`` at a time, in batches,
        so memory stays bounded). Such blocks can't be removed without rewriting the
        blob, so they come back with ``cannot_abort`` set and ``initiated`` None; Azure
        discards them at the blob's next commit or after 7 days."""
        client = self._client()
        where = self._url(prefix)
        with ThreadPoolExecutor(max_workers=_PROBE_WORKERS) as pool:
            try:
                with_uncommitted = _items(
                    client.list_blobs(
                        name_starts_with=prefix or None,
                        include=["uncommittedblobs"],
                        results_per_page=self._page_size,
                    ),
                    PageGuard(where, prefix=prefix),
                    self._page_size,
                )
                committed = _items(
                    client.list_blobs(
                        name_starts_with=prefix or None, results_per_page=self._page_size
                    ),
                    PageGuard(where, prefix=prefix),
                    self._page_size,
                )
                batch: list[str] = []
                current = next(committed, None)
                for props in with_uncommitted:
                    while current is not None and current.name < props.name:
                        current = next(committed, None)
                    if current is not None and current.name == props.name:
                        batch.append(props.name)
                        if len(batch) >= _PROBE_BATCH:
                            yield from self._committed_with_blocks(pool, batch)
                            batch = []
                        continue
                    blocks = self._uncommitted_blocks(props.name)
                    if not blocks:
                        continue  # committed or discarded since the listing
                    created = props.creation_time or props.last_modified
                    yield PendingUpload(
                        key=props.name,
                        initiated=created.timestamp() if isinstance(created, datetime) else None,
                        size=self._total(props.name, blocks),
                        token={"blob": props.name},
                    )
                yield from self._committed_with_blocks(pool, batch)
            except Exception as e:
                raise self._error(e, prefix) from e

    def _uncommitted_blocks(self, key: str) -> Sequence[Any] | None:
        """The blob's uncommitted blocks; None when there is no blob at all."""
        try:
            _committed, uncommitted = self._blob(key).get_block_list("uncommitted")
        except Exception as e:
            error = self._error(e, key)
            if isinstance(error, NotFound):
                return None
            raise error from e
        return list(uncommitted)

    def _total(self, key: str, blocks: Sequence[Any]) -> int:
        """The bytes ``blocks`` (from Get Block List) hold; ``StoreError`` when a block
        has no plain size."""
        sizes = [b.size for b in blocks]
        if not all(type(n) is int and n >= 0 for n in sizes):
            raise StoreError(f"{self._url(key)}: the server listed a block without a size")
        return sum(sizes)

    def _committed_with_blocks(
        self, pool: ThreadPoolExecutor, names: Sequence[str]
    ) -> Iterator[PendingUpload]:
        for name, blocks in zip(names, pool.map(self._uncommitted_blocks, names), strict=True):
            if blocks:
                yield PendingUpload(
                    key=name,
                    initiated=None,
                    size=self._total(name, blocks),
                    token={"blob": name, "committed": True},
                    cannot_abort=(
                        "a committed blob exists at this name; its uncommitted blocks can't "
                        "be removed without rewriting it (Azure drops them at the blob's "
                        "next commit or after 7 days)"
                    ),
                )

    def abort(self, upload: PendingUpload) -> None:
        """Clear a blob name that holds uncommitted blocks and no committed blob: a Put
        Block List with an empty list and ``If-None-Match: *`` (which fails if a
        committed blob exists, so one is never replaced) discards every uncommitted
        block of the name and leaves an empty blob, which is then deleted if it is still
        the one just written (``If-Match`` on its ETag). That empty blob exists for a
        moment: a BlobCreated event fires for it, and with versioning on it leaves a
        (zero-byte) version. Uncommitted blocks next to a committed blob raise
        ``Unsupported``. A writer still staging blocks at that name loses them; its
        commit then fails. (Put Block List rather than Put Blob: its discarding of
        unlisted blocks is documented, and Azurite honours ``If-None-Match`` for it.)"""
        key = upload.token.get("blob")
        if not isinstance(key, str) or not key:
            raise ValueError(f"{self._url(upload.key)}: not an Azure upload token")
        blob = self._blob(key)
        try:
            response = blob.commit_block_list([], if_none_match="*")
        except Exception as e:
            http = http_error(e)
            exists = http is not None and (
                error_code(http) == "BlobAlreadyExists" or http.status_code == 412
            )
            if not exists:
                raise self._error(e, key) from e
            if self._uncommitted_blocks(key):
                raise Unsupported(
                    f"{self._url(key)}: a committed blob exists at this name; its "
                    "uncommitted blocks expire after 7 days",
                    key=key,
                ) from e
            return  # committed meanwhile: nothing pending any more
        try:
            blob.delete_blob(
                etag=str(response["etag"]), match_condition=sdk.core().MatchConditions.IfNotModified
            )
        except Exception as e:
            error = self._error(e, key)
            if not isinstance(error, NotFound | PreconditionFailed):
                raise error from e
