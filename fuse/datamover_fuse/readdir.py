"""Reading a directory for the kernel: ``DirReader``.

**What the kernel is told and for how long.** Attributes and entries are cached by the
kernel for ``attr_ttl``; negative lookups for ``negative_ttl``. A LIST that carries no
user metadata (S3) can't tell a file's stored mode/owner/mtime, so ``readdir`` fetches
them before answering: each batch of entries is HEADed by at most ``stat_concurrency``
tasks at once (``Runtime.stat_limiter``, all directories together; directory entries
read their marker), and the kernel gets the entries with the real TTL, so ``ls -l``
sends no lookup or getattr for them. Batches are listed and completed up to
``LIST_AHEAD`` ahead of the kernel's requests, in the background. An entry whose
HEAD failed stays *provisional* (zero TTL): a ``stat`` looks it up again, and the
lookup HEADs it, with "statahead" HEADing the next siblings in listing order in
parallel. With ``attrs_from_list`` the LIST is trusted instead (size, LastModified,
default mode and owner), no HEAD per entry; metadata is fetched only when something
needs it (open, the digest xattr, chmod, rename) and is shown from then on; only
zero-byte objects are still HEADed (they may be special files or hard links).

A name that is both an object and a prefix (``x`` and ``x/…``) is the directory: the
object is hidden (as in lookups). A hard-link marker is listed as the file it names.
A complete listing tells the directory's link count (2 + its subdirectories).
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import trio

from datamover.stores.base import ObjectInfo
from datamover_fuse.fserrors import FsError, errno_for
from datamover_fuse.inodes import Attr, Inode, InodeTable
from datamover_fuse.listing import LIST_BATCH, DirCache, DirListing, entry_name, take
from datamover_fuse.lookup import Resolver
from datamover_fuse.runtime import Runtime

log = logging.getLogger(__name__)

#: Batches of a listing read ahead of readdir per open directory (2 S3 LIST pages).
LIST_AHEAD = 4
#: HEADs of a listing batch made one after the other per worker-thread call.
STAT_CHUNK = 8


@dataclass(eq=False)
class DirHandle:
    node: Inode
    listing: DirListing | None = None
    rows: list[tuple[str, Inode]] = field(default_factory=list)
    base: int = 0
    source: Iterator[ObjectInfo] | None = None
    order: list[str] = field(default_factory=list)
    done: bool = False
    seen: set[str] = field(default_factory=set)
    #: The next batches of ``source``, read (one at a time) while these are answered.
    ahead: deque[_Batch] = field(default_factory=deque)
    #: The batch read last: the next one fetches its attributes after it.
    tail: _Batch | None = None
    reading: bool = False
    exhausted: bool = False
    closed: bool = False
    #: Names listed as directories so far (a file of the same name is then hidden).
    dirs_seen: set[str] = field(default_factory=set)


class _Batch:
    """One ``take`` of a listing and the attributes fetched for it (index in
    ``items`` -> HEAD or marker info; None: file gone, or directory without marker),
    made ready by a background task (``DirReader._pull``)."""

    __slots__ = ("done", "error", "fetched", "items")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.items: list[ObjectInfo] = []
        self.fetched: dict[int, ObjectInfo | None] = {}
        self.error: BaseException | None = None


class DirReader:
    """Answers ``readdir`` for open ``DirHandle``s, filling the ``DirCache``."""

    def __init__(self, rt: Runtime, table: InodeTable, dirs: DirCache, resolver: Resolver) -> None:
        self.rt = rt
        self.table = table
        self.dirs = dirs
        self.resolver = resolver
        #: Attributes from a LIST are final for the kernel (``--attrs-from-list``).
        self._trust_list = rt.options.attrs_from_list

    async def readdir(
        self, handle: DirHandle, start: int, reply: Callable[[str, Attr, int], bool]
    ) -> None:
        """Call ``reply(name, attr, next)`` for entries from position ``start`` until it
        returns False; each accepted entry's lookup count goes up (readdirplus)."""
        if start == 0 and handle.source is not None:
            handle.rows, handle.base, handle.source, handle.done = [], 0, None, False
            handle.seen = set()
            handle.dirs_seen = set()
            handle.ahead, handle.reading, handle.exhausted = deque(), False, False
            handle.tail = None
        if handle.source is None and not handle.done:
            handle.source = iter(self.rt.store.list(handle.node.key, recursive=False))
            handle.listing = DirListing()
            handle.order = []
            self.dirs.listings.put(handle.node.key, handle.listing, weight=1)
            self.dirs.orders.put(handle.node.key, handle.order, weight=1)
        index = start
        while True:
            while index >= handle.base + len(handle.rows):
                if handle.done:
                    return
                await self._fill(handle)
            if index < handle.base:
                index = handle.base  # rewound past what we kept: continue from here
            name, node = handle.rows[index - handle.base]
            if node.detached and node.local is None:
                index += 1
                continue
            if not reply(name, self.table.attr(node), index + 1):
                return
            node.lookups += 1
            index += 1
            drop = index - handle.base - 1
            if drop > LIST_BATCH:
                del handle.rows[:drop]
                handle.base += drop

    async def _fill(self, handle: DirHandle) -> None:
        assert handle.source is not None and handle.listing is not None
        prefix = handle.node.key
        try:
            batch = await self._next_batch(handle)
        except Exception as e:
            handle.done = True
            raise FsError(errno_for(e), str(e)) from e
        listing = handle.listing
        cap = self.rt.options.max_cached_entries
        parent = handle.node
        if batch is None:
            handle.done = True
            for name in sorted(self.dirs.local_only.get(prefix, ())):
                if name not in handle.seen:
                    node = self.table.at(prefix + name)
                    if node is not None:
                        handle.rows.append((name, node))
            listing.complete = len(listing.entries) < cap
            if listing.complete:
                self.dirs.listings.put(prefix, listing, weight=max(1, len(listing.entries)))
                parent.subdirs = len(handle.dirs_seen)
            else:
                self.dirs.listings.pop(prefix)
            self.dirs.orders.put(prefix, handle.order, weight=max(1, len(handle.order)))
            return
        exact = self.rt.fsops.listing_has_metadata
        # The directory wins over an object of the same name, in this batch or later.
        dirs_here = {info.key[len(prefix) : -1] for info in batch.items if info.is_dir}
        for i, info in enumerate(batch.items):
            entry = entry_name(prefix, info)
            if entry is None:
                continue
            name = entry
            if not info.is_dir and (name in dirs_here or name in handle.dirs_seen):
                continue
            if name in handle.seen and not (info.is_dir and name not in handle.dirs_seen):
                continue
            fetched = i in batch.fetched
            got = batch.fetched.get(i)
            if info.is_dir:
                node = self.table.dir_node(parent, name, got, exact=fetched)
                info = ObjectInfo(key=info.key, size=0, is_dir=True)
                if len(handle.dirs_seen) < cap:
                    handle.dirs_seen.add(name)
                if name in handle.seen:  # listed as an object in an earlier batch
                    self._replace_row(handle, name, node)
                    listing.add(name, info)
                    continue
            elif fetched and got is None:
                node = self.table.at(info.key)
                if node is None or node.local is None:
                    if node is not None and node.key == info.key:
                        self.table.detach(node)
                    self.dirs.negative.put(info.key, True)
                    continue  # deleted between the LIST and its HEAD
                node = self.table.file_node(parent, name, info, exact=exact)
            elif got is not None:
                info = got
                node = await self.resolver.entry(parent, name, info, exact=True)
            else:
                node = await self.resolver.entry(parent, name, info, exact=exact)
            if len(handle.seen) < cap:
                handle.seen.add(name)
            if len(listing.entries) < cap:
                node.index = len(handle.order)
                handle.order.append(name)
                listing.add(name, info)
            handle.rows.append((name, node))

    def _replace_row(self, handle: DirHandle, name: str, node: Inode) -> None:
        """A directory listed after an object of its name: the directory wins, in
        the rows not yet answered (an answered one is corrected by the next lookup)."""
        for i, (row_name, old) in enumerate(handle.rows):
            if row_name == name:
                handle.rows[i] = (name, node)
                if old.kind is not node.kind and old.local is None:
                    self.table.detach(old)
                return

    async def _next_batch(self, handle: DirHandle) -> _Batch | None:
        """The next batch of the listing, None at its end. Up to ``LIST_AHEAD`` batches
        are read ahead in the background: LIST pages one at a time (the source is an
        iterator), and on S3 (unless ``attrs_from_list``) each batch's HEADs right
        after its LIST, batch after batch in listing order. So requests keep going
        while the kernel and the program (``ls``) work on the entries answered."""
        self._read_ahead(handle)
        if not handle.ahead:
            return None
        batch = handle.ahead.popleft()
        await batch.done.wait()
        self._read_ahead(handle)
        if batch.error is not None:
            raise batch.error
        return batch if batch.items else None

    def _read_ahead(self, handle: DirHandle) -> None:
        if (
            handle.reading
            or handle.exhausted
            or handle.closed
            or handle.source is None
            or len(handle.ahead) >= LIST_AHEAD
        ):
            return
        batch = _Batch()
        prev, handle.tail = handle.tail, batch
        handle.ahead.append(batch)
        handle.reading = True
        self.rt.spawn(self._pull, handle, handle.source, batch, prev)

    async def _pull(
        self,
        handle: DirHandle,
        source: Iterator[ObjectInfo],
        batch: _Batch,
        prev: _Batch | None,
    ) -> None:
        try:
            try:
                batch.items = await self.rt.call(take, source, LIST_BATCH)
            except Exception as e:
                batch.error = e
            if handle.source is source:  # not rewound meanwhile
                handle.reading = False
                if batch.error is not None or not batch.items:
                    handle.exhausted = True
                else:
                    self._read_ahead(handle)  # the next LIST page while this one is HEADed
            if batch.items:
                if prev is not None:
                    await prev.done.wait()  # the batch the kernel wants first goes first
                await self._fetch_batch(handle, source, batch)
        except Exception as e:  # never let a listing's helper take the mount down
            log.warning("%s: listing attributes not fetched: %s", handle.node.key or "/", e)
        finally:
            batch.done.set()

    def _needs_fetch(self, prefix: str, info: ObjectInfo, now: float) -> bool:
        """Whether the entry's attributes must be fetched before it is answered: a
        directory's marker; an S3 object (no metadata in a LIST). Trusting the LIST,
        only zero-byte objects (special files and hard-link markers look like empty
        files in a listing)."""
        if entry_name(prefix, info) is None:
            return False
        if info.is_dir:
            if self._trust_list:
                return False
            d = self.table.at(info.key)
            return d is None or not d.exact or d.expires <= now
        if self.rt.fsops.listing_has_metadata or (self._trust_list and info.size > 0):
            return False
        f = self.table.at(info.key)
        if f is None:
            return True
        if f.local is not None or not f.remote:
            return False
        if f.key != info.key:  # a hard link's name: its file's attributes are what count
            return not (f.exact and f.expires > now)
        return not (f.exact and f.etag == (info.etag or info.version) and f.expires > now)

    async def _fetch_batch(
        self, handle: DirHandle, source: Iterator[ObjectInfo], batch: _Batch
    ) -> None:
        """Complete a listing batch's attributes into ``batch.fetched``: HEAD the files
        whose LIST carried no metadata, read the directories' markers. At most
        ``stat_concurrency`` tasks, each holding one ``stat_limiter`` slot (shared by
        every directory) per request in flight; files go ``STAT_CHUNK`` keys per
        worker-thread call, HEADed one after the other (a thread hand-off costs about
        as much CPU as a lean HEAD). A request that fails leaves its entry out of
        ``fetched`` (shown provisional; a lookup retries it); a file found gone is
        None there. Stops early when the directory is closed or read again from 0."""
        prefix = handle.node.key
        now = self.rt.clock()
        todo = [i for i, info in enumerate(batch.items) if self._needs_fetch(prefix, info, now)]
        if not todo:
            return
        pending = iter(todo)

        async def worker() -> None:
            while chunk := list(itertools.islice(pending, STAT_CHUNK)):
                if handle.closed or handle.source is not source:
                    return
                await self._fetch_chunk(batch, chunk)

        async with trio.open_nursery() as nursery:
            for _ in range(min(self.rt.options.stat_concurrency, len(todo))):
                nursery.start_soon(worker)

    async def _fetch_chunk(self, batch: _Batch, chunk: list[int]) -> None:
        heads: list[int] = []
        for i in chunk:
            info = batch.items[i]
            if not info.is_dir and not self.resolver.in_flight(info.key):
                heads.append(i)
                continue
            try:  # a marker, or a HEAD a lookup already has in flight: on their own
                async with self.rt.stat_limiter:
                    if info.is_dir:
                        batch.fetched[i] = await self.rt.call(self.rt.fsops.stat_dir, info.key)
                    else:
                        batch.fetched[i] = await self.resolver.stat(info.key)
            except Exception as e:
                log.debug("%s: attributes not fetched for the listing: %s", info.key, e)
        if not heads:
            return
        keys = [batch.items[i].key for i in heads]
        results = await self.resolver.head_many(keys)  # lookups of these keys share them
        for i, got in zip(heads, results, strict=True):
            if not isinstance(got, BaseException):
                batch.fetched[i] = got
