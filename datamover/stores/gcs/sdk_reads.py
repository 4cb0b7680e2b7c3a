"""Downloads through the SDK (``DATAMOVER_GCS_LEAN=0``, or a client the lean path
can't serve): ``GCSStore.read``, ``read_object`` and ``readinto`` when the store has
no lean path. The SDK is imported by the store's ``_bucket`` on first use
(``sdk.py``). Downloads land in sinks that refuse bytes past the caller's buffer or
bound (see the package docstring)."""

from __future__ import annotations

from typing import Any, Protocol

from datamover.checksums import PartDigests
from datamover.errors import SourceChanged, StoreError
from datamover.stores.base import (
    ObjectInfo,
    PartLimits,
    check_whole_read,
    replaced,
    versions_differ,
)
from datamover.stores.bounds import ResponseTooLarge
from datamover.stores.gcs import sdk
from datamover.stores.gcs.crc import crc_from_b64
from datamover.stores.gcs.metadata import blob_info


class ReadStore(Protocol):
    """What these reads use of their store (``GCSStore``)."""

    limits: PartLimits

    @property
    def _bucket(self) -> Any: ...

    @property
    def retry(self) -> Any: ...

    def url(self, key: str = "") -> str: ...

    def map_error(
        self, e: BaseException, key: str | None, *, missing: str = "object"
    ) -> StoreError: ...


class _ViewWriter:
    """A write-only file object over a caller's buffer, so a download lands in it with
    one copy (from the socket chunk) and no intermediate ``BytesIO``. More bytes than
    the buffer holds are refused (``ResponseTooLarge``) as they arrive."""

    def __init__(self, view: memoryview, where: str) -> None:
        self._view = view
        self._where = where
        self.pos = 0

    def write(self, chunk: bytes) -> int:
        n = len(chunk)
        end = self.pos + n
        if end > len(self._view):
            raise ResponseTooLarge(
                f"{self._where}: the server sent more than the {len(self._view)} bytes asked for"
            )
        self._view[self.pos : end] = chunk
        self.pos = end
        return n


class _Sink:
    """A write-only file object that keeps at most ``limit`` bytes; more is refused
    (``ResponseTooLarge``) as it arrives, so an answer never outgrows the caller's
    bound whatever length the server gives."""

    def __init__(self, limit: int, where: str) -> None:
        self.data = bytearray()
        self._limit = limit
        self._where = where

    def write(self, chunk: bytes) -> int:
        if len(self.data) + len(chunk) > self._limit:
            raise ResponseTooLarge(
                f"{self._where}: the server sent more than the {self._limit} bytes accepted"
            )
        self.data += chunk
        return len(chunk)


def read(
    store: ReadStore, key: str, offset: int, length: int | None, limit: int, whole: bool
) -> bytes:
    """``Store.read``: at most ``limit`` bytes (more raises ``ResponseTooLarge``); a
    ``whole`` read checked by the SDK against the CRC32C GCS reports. A range past the
    end is ``b""``; other errors are the SDK's, for the store to map."""
    sink = _Sink(limit, store.url(key))
    blob = store._bucket.blob(key)
    gexc = sdk.api_exceptions()
    try:
        blob.download_to_file(
            sink,
            start=offset or None,
            end=offset + length - 1 if length is not None else None,
            raw_download=True,
            checksum="crc32c" if whole else None,
            retry=store.retry,
        )
    except gexc.RequestRangeNotSatisfiable:
        return b""
    return bytes(sink.data)


def read_object(
    store: ReadStore, key: str, info: ObjectInfo | None
) -> tuple[bytes | bytearray, ObjectInfo]:
    """``Store.read_object`` (its docstring says what it promises)."""
    gexc = sdk.api_exceptions()
    for _ in range(3):
        blob = store._bucket.blob(key)
        try:
            blob.reload(retry=store.retry)
        except Exception as e:
            raise store.map_error(e, key) from e
        got = blob_info(blob, key)
        check_whole_read(store.url(key), key, got.size, info, store.limits.max_single_put)
        data = bytearray(got.size)
        if not got.size:
            return data, got
        sink = _ViewWriter(memoryview(data), store.url(key))
        try:
            # A fresh handle, without the mediaLink the reload set: the bytes come
            # from the configured endpoint, not from whatever host the server names
            # (an emulator's external URL, the public host behind a private endpoint).
            store._bucket.blob(key).download_to_file(
                sink,
                start=0,
                end=got.size - 1,
                raw_download=True,
                checksum=None,  # compared below with the resource's CRC32C
                if_generation_match=blob.generation,
                retry=store.retry,
            )
        except gexc.PreconditionFailed:
            continue
        except Exception as e:
            raise store.map_error(e, key) from e
        crc = int.from_bytes(PartDigests(data).get("crc32c"), "big")
        expected = crc_from_b64(blob.crc32c)
        if sink.pos == got.size and expected in (None, crc):
            return data, got
    raise SourceChanged(f"{store.url(key)}: replaced while being read", key=key)


def readinto(
    store: ReadStore, key: str, offset: int, view: memoryview, generation: int | None = None
) -> int:
    """``Store.readinto`` into ``view`` (a non-empty byte view); of that
    ``generation`` only, when given."""
    sink = _ViewWriter(view, store.url(key))
    blob = store._bucket.blob(key)
    gexc = sdk.api_exceptions()
    try:
        blob.download_to_file(
            sink,
            start=offset,
            end=offset + len(view) - 1,
            raw_download=True,
            checksum=None,
            if_generation_match=generation,
            retry=store.retry,
        )
    except gexc.RequestRangeNotSatisfiable:
        return 0
    except gexc.PreconditionFailed as e:
        if generation is None:
            raise store.map_error(e, key) from e
        raise replaced(store.url(key), key) from None
    except Exception as e:
        raise store.map_error(e, key) from e
    # The SDK keeps the answer's x-goog-generation: an emulator that ignored the
    # precondition still names the generation it sent.
    if generation is not None and versions_differ(str(generation), str(blob.generation or "")):
        raise replaced(store.url(key), key)
    return sink.pos
