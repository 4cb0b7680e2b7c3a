"""Reads served through the block cache (``blocks.BlockStore``): what the mount does
for random access.

Every read of an object first asks the block cache: when all the blocks under it are
there (and check out), they answer, whichever handle fetched them. Otherwise a
sequential reader goes on through its ``Prefetcher`` (memory only, as before), and a
read the ``Prefetcher`` finds random and far from the handle's previous read (or any
random read once the object has had ``WHOLE_AFTER`` far ones, or ``NEAR_AFTER`` near
ones) comes here (``read_random``; a near one is read exactly, as a sequential reader's
request that arrived out of order most likely is, until there are that many of them: a
code hopping a few pages at a time, as SQLite walking a B-tree does, never makes a far
read, and read exactly it cost a GET per 4 KiB page; a near read no larger than a block
(smaller than the mount's read-ahead requests) fetches the aligned ``NEAR_SPAN`` around
it into the cache from the first, so SQLite's next hops nearby are local):

- the blocks under the read are fetched with one ranged GET, together with the
  ``AHEAD_BLOCKS`` after them when they are missing, and stored; a block another read or the
  background fetch has in flight is waited for, not fetched twice;
- the third *far* random read (see ``Prefetcher``) of an object no larger than
  ``whole_max`` (a quarter of
  ``--cache-size``) starts a background fetch of the whole object in parallel ranged
  GETs of ``read_part_size`` bytes (16 MiB; Azurite serves 4 MiB ranges at half the
  rate of 16 MiB ones, a cost per request), at most ``WHOLE_WORKERS`` (and ``--fs-threads`` less
  4, left to reads) in flight, each into a buffer of the shared read-ahead budget
  (``--prefetch-budget``; a worker waits for a buffer when it is spent): what s3fs
  and gcsfuse's parallel downloads do, so later reads are all local;
- the background fetch yields to reads: while a read waits for its blocks, or one
  did less than ``YIELD_FOR`` ago, it keeps at most ``busy_workers`` ranges in
  flight, never none (reads that keep missing can't starve it). ``busy_workers``
  starts at ``WHOLE_WORKERS`` and follows what the reads see: a read's GET that took more than
  ``SLOWED`` times the fastest one seen while background ranges were in flight halves
  it, one that didn't adds one (up to the workers). A server that answers requests in
  turn (Azurite: one Node.js thread) would otherwise serve several background ranges
  before each read's few blocks; one that serves them side by side (S3) keeps all
  of them. A read of blocks a background range is fetching waits for it rather than
  asking the server for them again behind it.

Consistency: blocks are looked up by (key, ETag/generation, size) as the mount last
learnt them (``Inode``: at open, and when the attribute TTL has run out), so a
changed object is fetched anew after the TTL; the blocks of the version it replaced
are dropped. Every GET of blocks is pinned to their version (``Version.pin``, the
store's ``If-Match`` / ``ifGenerationMatch``): an object replaced between the HEAD and
a GET is refused (``SourceChanged``), never filed under the old version's name.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from datamover.errors import SourceChanged
from datamover.stores.base import ObjectInfo
from datamover_fuse import native
from datamover_fuse.blocks import KEPT_DIR, BlockStore, version_name
from datamover_fuse.fserrors import first_leaf
from datamover_fuse.inodes import Inode, pin_of
from datamover_fuse.runtime import PrefetchBudget, Runtime

log = logging.getLogger(__name__)

WHOLE_WORKERS = 6
#: Blocks fetched past the end of a random read (with it: 256 KiB in one GET).
AHEAD_BLOCKS = 3
#: What a near read no larger than a block fetches around itself (aligned).
NEAR_SPAN = 1024 * 1024
#: Far random reads of an object (all handles together) before it is fetched whole.
WHOLE_AFTER = 3
#: Near random reads of an object (all handles together) after which every further one
#: counts as far: many short hops are random access too.
NEAR_AFTER = 64
#: Object versions remembered (their in-flight fetches); their blocks outlive them.
MAX_VERSIONS = 10_000
#: How long after a read waited the background fetch stays at ``busy_workers``.
YIELD_FOR = 0.05
#: A read's GET this many times slower than the fastest was slowed by the background.
SLOWED = 3.0


def new_read_cache(rt: Runtime) -> ReadCache | None:
    """The mount's read cache, None when off (``read_cache``) or pointless (a store
    whose keys are local files)."""
    options = rt.options
    if not options.read_cache or rt.store.features.local:
        return None
    if options.cache_keep and options.cache_dir is not None:
        path = os.path.join(options.cache_dir, KEPT_DIR)
    else:
        path = os.path.join(rt.cache.path, "blocks")
    blocks = BlockStore(rt.cache, path, keep=options.cache_keep)
    return ReadCache(rt, blocks, whole_max=options.cache_size // 4)


@dataclass(eq=False)
class Version:
    """One object version as the cache knows it, shared by all handles on it."""

    key: str
    etag: str
    name: str
    size: int
    #: What every GET of these blocks is pinned to: bytes of another version are never
    #: filed under this one's name (``Store.readinto``'s ``expect``).
    pin: ObjectInfo | None = None
    #: Blocks a random read or a background range is fetching (reads wait for them).
    inflight: dict[int, trio.Event] = field(default_factory=dict)
    random_reads: int = 0
    near_reads: int = 0
    whole_started: bool = False
    dropped: bool = False


class ReadCache:
    """The block cache's async side. ``key_of`` is the node's current key (followed
    across renames)."""

    def __init__(self, rt: Runtime, blocks: BlockStore, whole_max: int) -> None:
        self.rt = rt
        self.blocks = blocks
        self.block = blocks.block
        self.whole_max = whole_max
        self._versions: OrderedDict[str, Version] = OrderedDict()
        self.fetches = 0
        self.whole_fetches = 0
        self._reads = 0  # reads fetching or waiting for their blocks
        self._last_read = -1e9  # when the last of them ended (trio clock)
        self._fastest = float("inf")  # the fastest GET of a read, seconds
        self.busy_workers = WHOLE_WORKERS  # background ranges in flight while reads wait
        self._background = 0  # background ranges in flight, all objects
        self._wake = trio.Event()  # set (and replaced) when either count drops

    def version(
        self, key: str, etag: str | None, size: int, generation: str | None = None
    ) -> Version | None:
        """The version to cache reads of, None when there is nothing to key it by.
        ``generation``: the store's version id beside the ETag (GCS)."""
        if etag is None or size <= 0:
            return None
        v = self._versions.get(key)
        if v is not None and v.etag == etag and v.size == size:
            self._versions.move_to_end(key)
            return v
        name = version_name(key, etag, size)
        if v is not None and v.name == name:
            self._versions.move_to_end(key)
            return v
        if v is not None:  # the object changed: its old blocks are never served again
            v.dropped = True
            if native.ext is not None:
                native.ext.drop(v.name)  # now: handles bound to it read through Python
            self.rt.spawn(self.rt.disk, self.blocks.drop, v.name)
        pin = ObjectInfo(key=key, size=size, etag=etag, version=generation)
        v = self._versions[key] = Version(key, etag, name, size, pin=pin)
        while len(self._versions) > MAX_VERSIONS:
            self._versions.popitem(last=False)
        return v

    def bind(self, fh: int, v: Version) -> None:
        """Let ``_native`` answer handle ``fh``'s READs from ``v``'s cached blocks (the
        caller checked that ``fh`` reads ``v``; see native.py)."""
        path = os.path.join(self.blocks.path, v.name)
        native.ext.bind(fh, v.name, path, v.size, self.block)

    def random_reader(
        self, node: Inode
    ) -> Callable[[int, int, bool], Awaitable[bytes | memoryview]]:
        """What a ``Prefetcher`` calls for a random read of ``node``: of the version
        the node names now (the reader is made anew when that changes)."""
        etag, size, generation, pin = node.etag, node.size, node.generation, pin_of(node)

        async def read(offset: int, length: int, far: bool) -> bytes | memoryview:
            v = self.version(node.key, etag, size, generation)
            if v is not None and not far:
                v.near_reads += 1
                far = v.near_reads >= NEAR_AFTER
            if v is None or (not far and v.random_reads < WHOLE_AFTER):
                if v is not None and length <= self.block:
                    # No bigger than a block: not a sequential reader's read-ahead
                    # (the mount's is larger) but a program hopping pages (SQLite
                    # walks them backwards 64 KiB at a time): the ``NEAR_SPAN``
                    # around it in one GET, cached, so the next hops are local.
                    return await self.read_random(v, offset, length, False, NEAR_SPAN)
                # Near and the object not known random: most likely a sequential
                # reader's request out of order, or past its spent window; exact.
                return await self.rt.read_range(node.key, offset, length, pin)
            return await self.read_random(v, offset, length, far)

        return read

    def close(self) -> None:
        b = self.blocks
        log.info(
            "read cache: %d reads from it, %d GETs around random reads, %d objects fetched "
            "whole, %d blocks evicted, %d failed their check",
            b.hits,
            self.fetches,
            self.whole_fetches,
            b.evicted,
            b.corrupt,
        )
        b.close()

    def forget(self, key: str) -> None:
        v = self._versions.pop(key, None)
        if v is not None:
            v.dropped = True
            self.rt.spawn(self.rt.disk, self.blocks.drop, v.name)

    def cached_now(self, v: Version, offset: int, length: int) -> bytes | memoryview | None:
        """``cached`` if that needs no wait for the disk; else None."""
        end = min(v.size, offset + length)
        if offset >= end:
            return None
        try:
            return self.blocks.read(v.name, offset, end - offset, nowait=True)
        except BlockingIOError:
            return None

    async def cached(self, v: Version, offset: int, length: int) -> bytes | memoryview | None:
        """The bytes if every block under them is cached and checks out, else None."""
        end = min(v.size, offset + length)
        if offset >= end:
            return b""
        try:  # inline when the blocks are in the page cache: no thread hop
            return self.blocks.read(v.name, offset, end - offset, nowait=True)
        except BlockingIOError:
            return await self.rt.disk(self.blocks.read, v.name, offset, end - offset)

    async def read_random(
        self, v: Version, offset: int, length: int, far: bool, around: int = 0
    ) -> bytes | memoryview:
        """``far``: the read is far from where its handle was reading (not merely one
        of the kernel's read-ahead requests arriving out of order)."""
        end = min(v.size, offset + length)
        if offset >= end:
            return b""
        v.random_reads += far
        if not v.whole_started and v.size <= self.whole_max and v.random_reads >= WHOLE_AFTER:
            v.whole_started = True
            self.rt.spawn(self._fetch_whole, v)
        first, last = offset // self.block, (end - 1) // self.block
        lo, hi = first, last + AHEAD_BLOCKS
        if around:  # the aligned span of ``around`` bytes the read is in
            span = max(1, around // self.block)
            lo = first - first % span
            hi = max(last, lo + span - 1)
        hi = min((v.size - 1) // self.block, hi)
        need = {i for i in self.blocks.missing(v.name, lo, hi) if i not in v.inflight}
        self._reads += 1  # the background fetch yields while this read waits
        try:
            i = lo if around else first
            while i <= (hi if around else last):  # a GET per run of missing blocks
                if i not in need:
                    i += 1
                    continue
                top = i
                while top + 1 in need:
                    top += 1
                await self._fetch(v, i, top)
                i = top + 1
            for i in range(first, last + 1):
                event = v.inflight.get(i)
                if event is not None:
                    await event.wait()
        finally:
            self._reads -= 1
            self._last_read = trio.current_time()
            self._poke()
        data = await self.cached(v, offset, end - offset)
        if data is None:  # no room, a store error elsewhere, or a block failed its check
            data = await self.rt.read_range(v.key, offset, end - offset, v.pin)
        return data

    async def _fetch(self, v: Version, lo: int, hi: int) -> None:
        """Blocks ``lo..hi`` in one GET, stored, waiters woken."""
        mine = [i for i in range(lo, hi + 1) if i not in v.inflight]
        event = trio.Event()
        for i in mine:
            v.inflight[i] = event
        try:
            start = lo * self.block
            stop = min(v.size, (hi + 1) * self.block)
            began = trio.current_time()
            data = await self.rt.read_range(v.key, start, stop - start, v.pin)
            self._took(trio.current_time() - began)
            self.fetches += 1
            if not v.dropped and len(data) == stop - start:
                await self.rt.disk(self.blocks.store, v.name, v.size, start, data)
        finally:
            for i in mine:
                if v.inflight.get(i) is event:
                    del v.inflight[i]
            event.set()

    def _took(self, seconds: float) -> None:
        """A read's GET took ``seconds``: adjust ``busy_workers``."""
        self._fastest = min(self._fastest, seconds)
        if not self._background:
            return
        if seconds > SLOWED * self._fastest:
            self.busy_workers = max(1, self.busy_workers // 2)
        else:
            self.busy_workers = min(WHOLE_WORKERS, self.busy_workers + 1)

    def _poke(self) -> None:
        self._wake.set()
        self._wake = trio.Event()

    async def _background_turn(self, workers: int) -> None:
        """Wait until the background fetch may start one more range: ``workers`` in
        flight when reads are quiet, ``busy_workers`` while they wait (``YIELD_FOR``)."""
        while True:
            quiet = not self._reads and trio.current_time() - self._last_read >= YIELD_FOR
            if self._background < (workers if quiet else min(workers, self.busy_workers)):
                self._background += 1
                return
            with trio.move_on_after(YIELD_FOR):
                await self._wake.wait()

    async def _fetch_whole(self, v: Version) -> None:
        """Every missing block of ``v`` in ranged GETs of ``read_part_size``, in parallel."""
        size = self.rt.options.read_part_size
        part = max(self.block, size - size % self.block)
        starts = list(range(0, v.size, part))
        workers = max(1, min(WHOLE_WORKERS, self.rt.options.fs_threads - 4, len(starts)))
        self.whole_fetches += 1
        began = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(workers):
                    nursery.start_soon(self._whole_worker, v, starts, part, workers)
        except Exception as e:  # the demand path still works: log and stop
            cause = first_leaf(e)
            if isinstance(cause, SourceChanged):  # replaced: its reads are ESTALE now
                log.info("%s: background fetch stopped: %s", v.key, cause)
            else:
                log.warning("%s: background fetch stopped: %s", v.key, cause)
            return
        log.info("%s: fetched whole in %.1f s", v.key, trio.current_time() - began)

    async def _whole_worker(self, v: Version, starts: list[int], part: int, workers: int) -> None:
        budget = self.rt.prefetch
        while starts and not v.dropped:
            await self._background_turn(workers)
            try:
                await self._whole_range(v, starts, part, budget)
            finally:
                self._background -= 1
                self._poke()

    async def _whole_range(
        self, v: Version, starts: list[int], part: int, budget: PrefetchBudget
    ) -> None:
        """The next range of ``starts`` with blocks still missing, fetched and stored."""
        mine: list[int] = []
        while starts and not mine and not v.dropped:
            start = starts.pop(0)
            stop = min(v.size, start + part)
            mine = self.blocks.missing(v.name, start // self.block, (stop - 1) // self.block)
        if not mine or v.dropped:
            return
        lo, hi = mine[0], mine[-1]
        start, stop = lo * self.block, min(v.size, (hi + 1) * self.block)
        buf = budget.take(stop - start)
        while buf is None:
            await trio.sleep(0.02)
            if v.dropped:
                return
            buf = budget.take(stop - start)
        view = memoryview(buf)[: stop - start]
        event = trio.Event()
        mine = [i for i in mine if i not in v.inflight]
        for i in mine:  # a read of these waits for them: no second GET behind this one
            v.inflight[i] = event
        try:
            n = await self.rt.call(self.rt.store.readinto, v.key, start, view, expect=v.pin)
            if n == stop - start and not v.dropped:
                await self.rt.disk(self.blocks.store, v.name, v.size, start, view)
        finally:
            for i in mine:
                if v.inflight.get(i) is event:
                    del v.inflight[i]
            event.set()
            view.release()
            budget.give(buf)
            del buf  # unmapped now, not when the next one is taken
