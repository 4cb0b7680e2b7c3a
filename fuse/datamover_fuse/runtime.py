"""What every part of the mount shares: the store, worker threads, budgets, the clock.

pyfuse3 runs every request handler as a trio task on one thread, so nothing here may
block: a store call or a staging-file call runs on a worker thread
(``trio.to_thread.run_sync``) under a ``CapacityLimiter``. Store calls and disk calls
have separate limiters so a slow store never starves staging-file I/O.
"""

from __future__ import annotations

import functools
import mmap
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from datamover.stores.base import ObjectInfo, Store
from datamover.stores.fsops import FsOps
from datamover_fuse.cache import Clock
from datamover_fuse.options import MountOptions
from datamover_fuse.staging import CacheDir

T = TypeVar("T")

LARGE_BUFFER = 1024 * 1024


Buffer = bytearray | mmap.mmap


def new_buffer(n: int) -> Buffer:
    """``n`` zero bytes for a read-ahead segment. Large ones are anonymous mappings:
    the kernel's zero pages are filled by the store's ``recv_into`` directly (a
    ``bytearray`` is zeroed once more by ``memset``), and the memory goes back to
    the system as soon as the buffer is dropped. Not huge pages: in a VM a fresh
    2 MiB page is mostly memory the host has not backed yet, and faulting it in
    cost more than the 4 KiB faults it saves."""
    if n < LARGE_BUFFER:
        return bytearray(n)
    return mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE)


class PrefetchBudget:
    """One budget for the read-ahead buffers of all open files. Never waits: a
    handle that can't get bytes reads directly instead.

    Returned buffers of the common size (``MountOptions.read_part_size``) are kept
    for reuse, at most ``keep`` of them (a fresh buffer costs page faults and
    zeroing on every segment); kept buffers count against the limit too, and are
    dropped first when a request would not fit. A dropped buffer is never closed
    explicitly: a reply may still hold a view of it, and it is unmapped when the
    last view goes."""

    def __init__(self, limit: int, reuse_size: int = 16 * 1024 * 1024, keep: int = 4) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._reuse_size = reuse_size
        self._keep = keep
        self._free: list[Buffer] = []

    def take(self, n: int) -> Buffer | None:
        if n == self._reuse_size and self._free:
            self.used += n
            self.peak = max(self.peak, self.used)
            return self._free.pop()
        while self._free and self.used + n + len(self._free) * self._reuse_size > self.limit:
            self._free.pop()
        if self.used + n + len(self._free) * self._reuse_size > self.limit:
            return None
        self.used += n
        self.peak = max(self.peak, self.used)
        return new_buffer(n)

    def give(self, buf: Buffer) -> None:
        self.used -= len(buf)
        if len(buf) == self._reuse_size and len(self._free) < self._keep:
            self._free.append(buf)


class ByteBudget:
    """Bytes of write-side buffers in flight, granted first come first served.

    FIFO order matters: parts of one upload ask in part order, and a part waiting to
    be hashed in stream order holds its buffer, so a later part must never take the
    bytes an earlier part is waiting for. A request larger than the limit is granted
    alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._queue: deque[tuple[int, trio.Event]] = deque()

    async def acquire(self, n: int) -> int:
        n = min(n, self.limit)
        if not self._queue and (self.used == 0 or self.used + n <= self.limit):
            self._grant(n)
            return n
        event = trio.Event()
        entry = (n, event)
        self._queue.append(entry)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                self.release(n)
            else:
                self._queue.remove(entry)
                self._wake()
            raise
        return n

    def _grant(self, n: int) -> None:
        self.used += n
        self.peak = max(self.peak, self.used)

    def release(self, n: int) -> None:
        self.used -= n
        self._wake()

    def _wake(self) -> None:
        while self._queue:
            n, event = self._queue[0]
            if self.used and self.used + n > self.limit:
                return
            self._queue.popleft()
            self._grant(n)
            event.set()


class Runtime:
    """Shared state. ``nursery`` is set while the filesystem runs (``FsCore.running``)."""

    def __init__(
        self,
        store: Store,
        fsops: FsOps,
        options: MountOptions,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.store = store
        self.fsops = fsops
        self.options = options
        self.clock = clock
        self.wall_ns = wall_clock
        self.store_limiter = trio.CapacityLimiter(options.fs_threads)
        self.disk_limiter = trio.CapacityLimiter(max(2, options.fs_threads // 2))
        # HEADs made for listings (readdir batches, statahead), all directories
        # together; each also takes a store_limiter slot, so the effective bound is
        # min(stat_concurrency, fs_threads). Lookups the kernel waits for don't queue here.
        self.stat_limiter = trio.CapacityLimiter(options.stat_concurrency)
        # Kept for reuse: as many part buffers as one reader's window holds.
        self.prefetch = PrefetchBudget(
            options.prefetch_budget,
            options.read_part_size,
            keep=max(1, options.read_window // options.read_part_size),
        )
        self.write_budget = ByteBudget(options.write_buffer)
        self.cache = CacheDir(options.cache_dir, options.cache_size)
        self._nursery: trio.Nursery | None = None
        #: Called with (parent inode, name) when the name now has another inode: the
        #: FUSE adapter tells the kernel to look it up again.
        self.name_changed: Callable[[int, str], None] = lambda parent, name: None

    async def read_range(
        self, key: str, offset: int, length: int, version: ObjectInfo | None
    ) -> memoryview:
        """``length`` bytes of ``key`` from ``offset`` (fewer at its end), of that
        ``version`` only (``SourceChanged`` when the store now holds another)."""
        buf = bytearray(length)
        n = await self.call(self.store.readinto, key, offset, memoryview(buf), expect=version)
        return memoryview(buf)[:n]

    @property
    def nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("the filesystem is not running (use FsCore.running())")
        return self._nursery

    @nursery.setter
    def nursery(self, nursery: trio.Nursery | None) -> None:
        self._nursery = nursery

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store call on a worker thread."""
        return await trio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), limiter=self.store_limiter
        )

    async def disk(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a staging-file call (or hashing) on a worker thread."""
        return await trio.to_thread.run_sync(
            functools.partial(fn, *args), limiter=self.disk_limiter
        )

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self.nursery.start_soon(fn, *args)
