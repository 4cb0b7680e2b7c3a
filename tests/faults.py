"""A fault-injecting Store wrapper for tests (as mountpoint-s3's failure client).

It wraps a real store and makes chosen operations fail or corrupt bytes, so engine
behaviour under failure is tested against real servers without touching the SDKs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from datamover.checksums import PartDigests
from datamover.errors import DatamoverError
from datamover.stores.base import Buffer, ChunkWriter, ObjectInfo, PartReceipt, Store


class FaultyWriter:
    def __init__(self, inner: ChunkWriter, store: FaultyStore) -> None:
        self.inner = inner
        self.store = store
        self.key = inner.key
        self.part_size = inner.part_size
        self.size = inner.size

    def write_part(self, index: int, data: Buffer, digests: PartDigests) -> PartReceipt:
        self.store.maybe_fail("write_part", index)
        return self.inner.write_part(index, data, digests)

    def commit(self, metadata: Mapping[str, str]) -> ObjectInfo:
        self.store.maybe_fail("commit", 0)
        return self.inner.commit(metadata)

    def abort(self) -> None:
        self.store.aborts += 1
        self.inner.abort()


class FaultyStore(Store):
    """``faults[(op, index)] = (count, error_factory)``: fail that many times.
    ``before(op, key)``, when set, runs before each ``put``/``open_writer``/
    ``read_object``/``readinto`` is passed on, one call at a time (so a test can change
    the filesystem between planning and writing, deterministically)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.scheme = inner.scheme
        self.limits = inner.limits
        self.features = inner.features
        self.fs_ops_class = inner.fs_ops_class
        self.faults: dict[tuple[str, int], list[Any]] = {}
        self.injected = 0
        self.aborts = 0
        self._lock = threading.Lock()
        self.before: Callable[[str, str], None] | None = None
        self._hook_lock = threading.Lock()

    def hook(self, op: str, key: str) -> None:
        if self.before is not None:
            with self._hook_lock:
                self.before(op, key)

    def fail(self, op: str, index: int, times: int, error: Callable[[], DatamoverError]) -> None:
        self.faults[(op, index)] = [times, error]

    def maybe_fail(self, op: str, index: int) -> None:
        with self._lock:
            fault = self.faults.get((op, index))
            if not fault or fault[0] <= 0:
                return
            fault[0] -= 1
            self.injected += 1
        raise fault[1]()

    def url(self, key: str = "") -> str:
        return self.inner.url(key)

    def local_path(self, key: str) -> str | None:
        return self.inner.local_path(key)

    def child_key(self, root: str, rel: str) -> str:
        return self.inner.child_key(root, rel)

    def confine(self, root: str) -> None:
        self.inner.confine(root)

    def sync(self) -> None:
        self.inner.sync()

    def stat(self, key: str) -> ObjectInfo:
        return self.inner.stat(key)

    def list(self, prefix: str, *, recursive: bool = True) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix, recursive=recursive)

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return self.inner.read(key, offset, length)

    def readinto(
        self, key: str, offset: int, buf: memoryview, *, expect: ObjectInfo | None = None
    ) -> int:
        self.hook("readinto", key)
        self.maybe_fail("readinto", offset)
        return self.inner.readinto(key, offset, buf, expect=expect)

    def read_object(self, key: str, info: ObjectInfo | None = None) -> tuple[Any, ObjectInfo]:
        self.hook("read_object", key)
        self.maybe_fail("read_object", 0)
        return self.inner.read_object(key, info)

    def put(
        self,
        key: str,
        data: Buffer,
        *,
        metadata: Mapping[str, str] | None = None,
        digests: PartDigests | None = None,
    ) -> ObjectInfo:
        self.hook("put", key)
        self.maybe_fail("put", 0)
        return self.inner.put(key, data, metadata=metadata, digests=digests)

    def open_writer(
        self, key: str, *, size: int, part_size: int, metadata: Mapping[str, str] | None = None
    ) -> ChunkWriter:
        self.hook("open_writer", key)
        return FaultyWriter(
            self.inner.open_writer(key, size=size, part_size=part_size, metadata=metadata), self
        )

    def delete(self, key: str) -> None:
        self.inner.delete(key)
