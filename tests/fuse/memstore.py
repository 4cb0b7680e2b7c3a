"""An in-memory ``Store`` for driving ``FsCore`` without a kernel or a server.

It behaves like an object store (S3 flavour): keys are flat, ``list`` groups by ``/``
when not recursive, ``stat`` refuses nothing. ``listing_has_metadata`` and
``accepts_unknown_size`` let a test choose which features (and so which ``FsOps``
behaviours) it declares
(LIST with or without metadata; streamed writes or not). ``drops_marker_metadata``
makes it behave as SeaweedFS does with ``dir/`` keys: stored without their metadata,
and the store declares that it can't say in advance (``marker_metadata=None``).
``calls`` counts requests by name; ``fail`` makes the next calls of one operation
raise.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping

from datamover.checksums import PartDigests
from datamover.errors import DatamoverError, NotFound, StoreError, TransientError
from datamover.posixmeta import MTIME, parse_mtime_ns
from datamover.stores.base import (
    Buffer,
    ChunkWriter,
    Features,
    MiB,
    ObjectInfo,
    PartLimits,
    PartReceipt,
    Store,
    replaced,
)


class MemoryWriter:
    def __init__(
        self, store: MemoryStore, key: str, size: int, part_size: int, meta: dict[str, str]
    ) -> None:
        self.store = store
        self.key = key
        self.size = size
        self.part_size = part_size
        self._meta = meta
        self._parts: dict[int, bytes] = {}
        self.state = "open"
        store.writers.append(self)

    def write_part(self, index: int, data: Buffer, digests: PartDigests) -> PartReceipt:
        self.store.maybe_fail("write_part")
        if self.state != "open":
            raise StoreError(f"write after {self.state}", key=self.key)
        self._parts[index] = bytes(data)
        return PartReceipt(index, len(self._parts[index]))

    def commit(self, metadata: Mapping[str, str]) -> ObjectInfo:
        self.store.maybe_fail("commit")
        count = -(-self.size // self.part_size)
        if sorted(self._parts) != list(range(count)):
            raise StoreError(f"commit with parts {sorted(self._parts)} of {count}", key=self.key)
        for i in range(count - 1):
            if len(self._parts[i]) != self.part_size:
                raise StoreError(f"part {i} is short", key=self.key)
        data = b"".join(self._parts[i] for i in range(count))
        if len(data) != self.size:
            raise StoreError(f"{len(data)} bytes, expected {self.size}", key=self.key)
        self.state = "committed"
        return self.store._store(self.key, data, {**self._meta, **metadata})

    def abort(self) -> None:
        if self.state == "open":
            self.state = "aborted"


class MemoryStore(Store):
    scheme = "mem"
    limits = PartLimits(
        min_part_size=1 * MiB, max_part_size=1024 * MiB, max_parts=10_000, max_single_put=1 << 40
    )

    def __init__(
        self,
        *,
        listing_has_metadata: bool = False,
        accepts_unknown_size: bool = True,
        drops_marker_metadata: bool = False,
        unique_etags: bool = False,
    ) -> None:
        self.listing_has_metadata = listing_has_metadata
        #: Every write a new ETag, as Azure and GCS (S3's single-part ETag is the MD5).
        self.unique_etags = unique_etags
        self._writes = 0
        self.drops_marker_metadata = drops_marker_metadata
        self.features = Features(
            listing_metadata=listing_has_metadata,
            streaming_writes=accepts_unknown_size,
            marker_metadata=None if drops_marker_metadata else True,
        )
        self.objects: dict[str, tuple[bytes, dict[str, str], str, float]] = {}
        self.calls: Counter[str] = Counter()
        self.writers: list[MemoryWriter] = []
        self._failures: dict[str, tuple[int, Callable[[], DatamoverError]]] = {}
        self._lock = threading.Lock()

    # -- test helpers ------------------------------------------------------------------

    def fail(
        self, op: str, times: int = 1, error: Callable[[], DatamoverError] | None = None
    ) -> None:
        self._failures[op] = (times, error or (lambda: TransientError(f"injected {op} failure")))

    def maybe_fail(self, op: str) -> None:
        with self._lock:
            self.calls[op] += 1
            entry = self._failures.get(op)
            if entry is None or entry[0] <= 0:
                return
            self._failures[op] = (entry[0] - 1, entry[1])
        raise entry[1]()

    def data(self, key: str) -> bytes:
        return self.objects[key][0]

    def meta(self, key: str) -> dict[str, str]:
        return dict(self.objects[key][1])

    def _store(self, key: str, data: bytes, meta: Mapping[str, str]) -> ObjectInfo:
        if self.drops_marker_metadata and key.endswith("/"):
            meta = {}
        etag = hashlib.md5(data).hexdigest()
        with self._lock:
            self._writes += 1
            if self.unique_etags:
                etag = f"{etag}-{self._writes}"
            self.objects[key] = (data, dict(meta), etag, time.time())
        return self._info(key)

    def _info(self, key: str, *, with_meta: bool = True) -> ObjectInfo:
        data, meta, etag, when = self.objects[key]
        mtime_ns = parse_mtime_ns(meta[MTIME]) if MTIME in meta else None
        return ObjectInfo(
            key=key,
            size=len(data),
            mtime=mtime_ns / 1e9 if mtime_ns is not None and with_meta else when,
            etag=etag,
            checksums={
                k[len("datamover-") :]: v for k, v in meta.items() if k.startswith("datamover-")
            }
            if with_meta
            else {},
            metadata=dict(meta) if with_meta else {},
            is_dir=key.endswith("/"),
        )

    # -- Store -----------------------------------------------------------------------------

    def url(self, key: str = "") -> str:
        return f"mem://{key}"

    def stat(self, key: str) -> ObjectInfo:
        self.maybe_fail("stat")
        if key not in self.objects:
            raise NotFound(f"{key}: not found", key=key)
        return self._info(key)

    def list(self, prefix: str, *, recursive: bool = True) -> Iterator[ObjectInfo]:
        self.maybe_fail("list")
        keys = sorted(k for k in list(self.objects) if k.startswith(prefix))
        seen: set[str] = set()
        for key in keys:
            rest = key[len(prefix) :]
            if not recursive and "/" in rest:
                sub = prefix + rest.split("/", 1)[0] + "/"
                if sub not in seen:
                    seen.add(sub)
                    yield ObjectInfo(key=sub, size=0, is_dir=True)
                continue
            if key in self.objects:
                yield self._info(key, with_meta=self.listing_has_metadata)

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        self.maybe_fail("read")
        return self._read(key, offset, length)

    def _read(self, key: str, offset: int, length: int | None) -> bytes:
        if key not in self.objects:
            raise NotFound(f"{key}: not found", key=key)
        data = self.objects[key][0]
        end = len(data) if length is None else offset + length
        return data[offset:end]

    def readinto(
        self, key: str, offset: int, buf: memoryview, *, expect: ObjectInfo | None = None
    ) -> int:
        self.maybe_fail("readinto")
        held = self.objects.get(key)
        if expect is not None and expect.etag and held is not None and held[2] != expect.etag:
            raise replaced(self.url(key), key)  # If-Match, as S3 and Azure
        data = self._read(key, offset, len(buf))
        buf[: len(data)] = data
        return len(data)

    def put(
        self,
        key: str,
        data: Buffer,
        *,
        metadata: Mapping[str, str] | None = None,
        digests: PartDigests | None = None,
    ) -> ObjectInfo:
        self.maybe_fail("put")
        return self._store(key, bytes(data), dict(metadata or {}))

    def open_writer(
        self, key: str, *, size: int, part_size: int, metadata: Mapping[str, str] | None = None
    ) -> ChunkWriter:
        self.maybe_fail("open_writer")
        return MemoryWriter(self, key, size, part_size, dict(metadata or {}))

    def delete(self, key: str) -> None:
        self.maybe_fail("delete")
        with self._lock:
            self.objects.pop(key, None)

    def copy_object(
        self, src_key: str, dst_key: str, *, metadata: Mapping[str, str] | None = None
    ) -> ObjectInfo:
        self.maybe_fail("copy_object")
        if src_key not in self.objects:
            raise NotFound(f"{src_key}: not found", key=src_key)
        data, meta, _, _ = self.objects[src_key]
        return self._store(dst_key, data, dict(metadata) if metadata is not None else meta)
