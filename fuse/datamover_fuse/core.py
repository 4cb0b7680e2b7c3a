"""The filesystem itself, without a kernel: ``FsCore``.

The pyfuse3 ``Operations`` class (``datamover_fuse.ops``) only translates between the
kernel and this class; tests drive ``FsCore`` directly inside ``trio.run``. Every
method here is a trio coroutine that never blocks: store calls and staging-file I/O
run on worker threads (``Runtime.call`` / ``Runtime.disk``).

**Inodes.** One ``Inode`` per key the kernel knows: a file or symlink is an object
key, a directory a prefix ending in ``/`` (``""`` or the mount's prefix for the root).
Inode numbers are never reused. The kernel's lookup count keeps an inode in the table;
``forget`` drops it once no handle or pending write needs it, so the table is bounded
by the kernel's own inode cache.

**Directories** exist implicitly when a key has their prefix, or explicitly as a
zero-byte ``dir/`` marker object (which ``mkdir`` writes and which carries the
directory's mode/owner/mtime). A directory and a file of the same name: the
directory wins and the file is hidden (as mountpoint-s3 does).

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
needs it (open, the digest xattr, chmod, rename) and is shown from then on.

**Caches here** (all bounded, all with TTLs, clock injected): the inode attributes
(``attr_ttl``), complete directory listings used to answer lookups (``dir_ttl``,
at most ``max_cached_entries`` names in all), negative lookups (``negative_ttl``,
100,000 names). The core's own writes update them, so a mount sees its own changes at
once; changes made by others appear when the TTLs run out.
"""

from __future__ import annotations

import enum
import errno
import itertools
import logging
import math
import os
import stat as statmod
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from datamover.errors import NotFound, Unsupported
from datamover.posixmeta import MODE, PosixAttrs
from datamover.stores.base import DIGEST_KEY_PREFIX, MiB, ObjectInfo, Store
from datamover.stores.fsops import FsOps, for_store
from datamover_fuse.cache import Clock, TTLCache
from datamover_fuse.fserrors import FsError, errno_for
from datamover_fuse.options import MountOptions
from datamover_fuse.prefetch import Prefetcher
from datamover_fuse.runtime import Runtime
from datamover_fuse.writes import LocalFile, WriteManager

log = logging.getLogger(__name__)

ROOT_INO = 1
NAME_MAX = 255
KEY_MAX = 1024
BLKSIZE = 1 * MiB
#: Siblings HEADed ahead when a provisional entry is looked up.
STATAHEAD = 64
#: Entries pulled from a listing per worker-thread call.
LIST_BATCH = 500
#: Batches of a listing read ahead of readdir per open directory (2 S3 LIST pages).
LIST_AHEAD = 4
#: HEADs of a listing batch made one after the other per worker-thread call.
STAT_CHUNK = 8
NEGATIVE_ENTRIES = 100_000
ORDER_TTL = 600.0
XATTR_PREFIX = "user.datamover."
#: The only xattr namespace the mount has names in. Others (``security.``, ``system.``
#: ``trusted.``) are answered ENOTSUP without touching the store, as a filesystem
#: without that namespace does: ``ls -l`` then stops asking for SELinux labels and
#: ACLs on this mount after the first file instead of asking for every file.
XATTR_NAMESPACE = "user."
_NO_ATTRS = PosixAttrs()


class Kind(enum.Enum):
    FILE = "file"
    DIR = "dir"
    LINK = "link"


@dataclass(slots=True)
class Attr:
    """What the kernel is told about an inode."""

    ino: int
    mode: int
    size: int
    uid: int
    gid: int
    mtime_ns: int
    ctime_ns: int
    nlink: int
    blksize: int
    blocks: int
    attr_ttl: float
    entry_ttl: float


@dataclass(slots=True)
class SetAttrs:
    """The fields a ``setattr`` changes (None: unchanged)."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    mtime_ns: int | None = None
    atime_ns: int | None = None


@dataclass(eq=False, slots=True)
class Inode:
    ino: int
    kind: Kind
    key: str
    parent: int
    name: str
    size: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    etag: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    #: Attributes are complete (from HEAD, our own write, or a listing with metadata).
    exact: bool = False
    #: The object (or marker, or prefix) is in the store; False for a new local file.
    remote: bool = True
    marker: bool = False
    expires: float = 0.0
    lookups: int = 0
    opens: int = 0
    local: LocalFile | None = None
    seen: tuple[object, ...] | None = None
    target: bytes | None = None
    detached: bool = False
    #: Position in the parent's last listing, for statahead.
    index: int = -1


class InodeTable:
    def __init__(self) -> None:
        self.by_ino: dict[int, Inode] = {}
        self.by_key: dict[str, Inode] = {}
        self._numbers = itertools.count(ROOT_INO + 1)

    def add(self, kind: Kind, key: str, parent: int, name: str) -> Inode:
        node = Inode(next(self._numbers), kind, key, parent, name)
        self.insert(node)
        return node

    def insert(self, node: Inode) -> None:
        old = self.by_key.get(node.key)
        if old is not None and old is not node:
            old.detached = True
        self.by_ino[node.ino] = node
        self.by_key[node.key] = node

    def at(self, key: str) -> Inode | None:
        return self.by_key.get(key)

    def detach(self, node: Inode) -> None:
        if self.by_key.get(node.key) is node:
            del self.by_key[node.key]
        node.detached = True
        self.maybe_drop(node)

    def rekey(self, node: Inode, key: str, parent: int, name: str) -> None:
        if self.by_key.get(node.key) is node:
            del self.by_key[node.key]
        node.key, node.parent, node.name = key, parent, name
        self.insert(node)

    def maybe_drop(self, node: Inode) -> None:
        if node.ino == ROOT_INO or node.lookups > 0 or node.opens > 0 or node.local is not None:
            return
        self.by_ino.pop(node.ino, None)
        if self.by_key.get(node.key) is node:
            del self.by_key[node.key]


class DirListing:
    """Names under one prefix, in listing order; ``complete`` once fully read."""

    def __init__(self) -> None:
        self.entries: dict[str, ObjectInfo] = {}
        self.order: list[str] = []
        self.complete = False

    def add(self, name: str, info: ObjectInfo) -> None:
        if name not in self.entries:
            self.order.append(name)
        self.entries[name] = info

    def remove(self, name: str) -> None:
        if self.entries.pop(name, None) is not None:
            self.order.remove(name)


@dataclass(eq=False)
class FileHandle:
    node: Inode
    writable: bool
    reader: Prefetcher | None = None


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


class _Batch:
    """One ``_take`` of a listing and the attributes fetched for it (index in
    ``items`` -> HEAD or marker info; None: file gone, or directory without marker),
    made ready by a background task (``FsCore._pull``)."""

    __slots__ = ("done", "error", "fetched", "items")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.items: list[ObjectInfo] = []
        self.fetched: dict[int, ObjectInfo | None] = {}
        self.error: BaseException | None = None


class _Pending:
    __slots__ = ("done", "error", "info")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.info: ObjectInfo | None = None
        self.error: BaseException | None = None


def _kind_of(info: ObjectInfo) -> Kind:
    if info.is_dir:
        return Kind.DIR
    raw = info.metadata.get(MODE) if info.metadata else None
    mode = info.mode
    if raw is not None:
        try:
            mode = int(raw)
        except ValueError:
            mode = None
    if mode is not None and statmod.S_ISLNK(mode):
        return Kind.LINK
    return Kind.FILE


def _take(source: Iterator[ObjectInfo], n: int) -> list[ObjectInfo]:
    return list(itertools.islice(source, n))


def _head_many(store: Store, keys: list[str]) -> list[ObjectInfo | BaseException | None]:
    """HEAD each key in turn (on one worker thread): its info, None when it is gone,
    or the error."""
    out: list[ObjectInfo | BaseException | None] = []
    for key in keys:
        try:
            out.append(store.stat(key))
        except NotFound:
            out.append(None)
        except Exception as e:
            out.append(e)
    return out


def _entry_name(prefix: str, info: ObjectInfo) -> str | None:
    """The name a listed key has in the directory ``prefix``, or None: not shown
    (the marker itself, or a name no directory entry can have)."""
    rel = info.key[len(prefix) :]
    name = rel[:-1] if info.is_dir else rel
    if not name or "/" in name or name in (".", ".."):
        return None
    return name


class FsCore:
    """See the module docstring. Create, then ``async with core.running():``."""

    def __init__(
        self,
        store: Store,
        root_key: str,
        options: MountOptions,
        *,
        fsops: FsOps | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if root_key and not root_key.endswith("/"):
            root_key += "/"
        self.options = options
        self.rt = Runtime(
            store,
            fsops or for_store(store),
            options,
            clock=clock,
            wall_clock=wall_clock,
        )
        self.store = store
        self.writes = WriteManager(self.rt)
        self.table = InodeTable()
        self.mount_ns = wall_clock()
        self._modes = {kind: self._mode_for(kind) for kind in Kind}
        self._file_mode = self._modes[Kind.FILE]
        self._uid, self._gid = options.owner_uid, options.owner_gid
        root = Inode(ROOT_INO, Kind.DIR, root_key, ROOT_INO, "")
        root.mode = self._default_mode(Kind.DIR)
        root.uid, root.gid = options.owner_uid, options.owner_gid
        root.mtime_ns = root.ctime_ns = self.mount_ns
        root.exact = True
        root.expires = math.inf
        self.table.insert(root)
        self.listings: TTLCache[str, DirListing] = TTLCache(
            options.max_cached_entries, options.dir_ttl, clock
        )
        # Names in listing order per directory, for statahead; kept longer than the
        # listing itself because `ls -l` of a big directory outlasts --dir-ttl.
        self.orders: TTLCache[str, list[str]] = TTLCache(
            options.max_cached_entries, ORDER_TTL, clock
        )
        self.negative: TTLCache[str, bool] = TTLCache(NEGATIVE_ENTRIES, options.negative_ttl, clock)
        self._handles: dict[int, FileHandle | DirHandle] = {}
        self._fh_numbers = itertools.count(1)
        self._stats: dict[str, _Pending] = {}
        #: Keys queued for statahead (bounded by STATAHEAD per lookup, deduplicated).
        self._ahead: set[str] = set()
        self._local_only: dict[str, set[str]] = {}
        self._markers_keep_metadata: bool | None = None
        #: Attributes from a LIST are final for the kernel (``--attrs-from-list``).
        self._trust_list = options.attrs_from_list

    # -- lifecycle ------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FsCore]:
        """Run background work (read-ahead, part uploads) while the body runs; on exit
        upload what is still dirty, then clean the staging directory."""
        try:
            async with trio.open_nursery() as nursery:
                self.rt.nursery = nursery
                try:
                    yield self
                finally:
                    with trio.CancelScope(shield=True):
                        await self.shutdown()
                    nursery.cancel_scope.cancel()
        finally:
            self.rt.nursery = None
            self.rt.cache.remove()
            self.rt.fsops.close()

    async def shutdown(self) -> None:
        """Commit dirty files still open (the kernel went away without releasing)."""
        for node in list(self.table.by_ino.values()):
            if node.local is None:
                continue
            try:
                await self._commit(node)
            except FsError as e:
                log.error("%s: lost at unmount: %s", node.key, e)
            await self.writes.discard(node.local)
            node.local = None
        for handle in self._handles.values():
            if isinstance(handle, FileHandle) and handle.reader is not None:
                handle.reader.close()
        self._handles.clear()
        await self.writes.idle()

    # -- helpers ---------------------------------------------------------------------------

    def _mono(self) -> float:
        return self.rt.clock()

    def _default_mode(self, kind: Kind) -> int:
        return self._modes[kind]

    def _mode_for(self, kind: Kind) -> int:
        umask = self.options.umask
        if kind is Kind.DIR:
            return statmod.S_IFDIR | (0o777 & ~umask)
        if kind is Kind.LINK:
            return statmod.S_IFLNK | 0o777
        return statmod.S_IFREG | (0o666 & ~umask)

    def _node(self, ino: int) -> Inode:
        node = self.table.by_ino.get(ino)
        if node is None:
            raise FsError(errno.ENOENT, f"inode {ino} unknown")
        return node

    def _dir(self, ino: int) -> Inode:
        node = self._node(ino)
        if node.kind is not Kind.DIR:
            raise FsError(errno.ENOTDIR)
        return node

    def _writable(self) -> None:
        if self.options.read_only:
            raise FsError(errno.EROFS)

    @staticmethod
    def _check_name(name: str) -> None:
        if not name or name in (".", "..") or "/" in name:
            raise FsError(errno.EINVAL, f"bad name {name!r}")
        if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise FsError(errno.ENAMETOOLONG)

    def _child_key(self, parent: Inode, name: str) -> str:
        self._check_name(name)
        try:
            name.encode("utf-8")
        except UnicodeEncodeError as e:
            raise FsError(errno.EINVAL, "names must be UTF-8") from e
        key = parent.key + name
        if len(key.encode()) + 1 > KEY_MAX:
            raise FsError(errno.ENAMETOOLONG)
        return key

    def _attr(self, node: Inode) -> Attr:
        size = node.local.size if node.local is not None else node.size
        provisional = not node.exact and not self._trust_list and node.local is None and node.remote
        ttl = 0.0 if provisional else self.options.attr_ttl
        return Attr(
            ino=node.ino,
            mode=node.mode,
            size=size,
            uid=node.uid,
            gid=node.gid,
            mtime_ns=node.mtime_ns,
            ctime_ns=node.ctime_ns,
            nlink=2 if node.kind is Kind.DIR else 1,
            blksize=BLKSIZE,
            blocks=(size + 511) // 512,
            attr_ttl=ttl,
            entry_ttl=ttl,
        )

    def _apply_info(self, node: Inode, info: ObjectInfo, *, exact: bool) -> None:
        # Runs once per listed entry: kept lean (no PosixAttrs parse without metadata).
        meta = dict(info.metadata) if info.metadata else {}
        attrs = PosixAttrs.from_metadata(meta) if meta else _NO_ATTRS
        mode = attrs.mode if attrs.mode is not None else info.mode
        default = self._file_mode if node.kind is Kind.FILE else self._modes[node.kind]
        node.mode = statmod.S_IFMT(default) | statmod.S_IMODE(mode) if mode is not None else default
        node.uid = attrs.uid if attrs.uid is not None else self._uid
        node.gid = attrs.gid if attrs.gid is not None else self._gid
        if attrs.mtime_ns is not None:
            node.mtime_ns = attrs.mtime_ns
        elif info.mtime is not None:
            node.mtime_ns = int(info.mtime * 1e9)
        else:
            node.mtime_ns = self.mount_ns
        node.ctime_ns = node.mtime_ns
        if node.kind is not Kind.DIR:
            if node.etag is not None and node.etag != (info.etag or info.version):
                node.target = None
            node.size = info.size
            node.etag = info.etag or info.version
        node.metadata = meta
        node.exact = exact
        node.remote = True
        node.expires = self._mono() + self.options.attr_ttl

    def _posix_meta(self, node: Inode) -> dict[str, str]:
        return PosixAttrs(node.mode, node.uid, node.gid, node.mtime_ns).to_metadata()

    def _file_node(self, parent: Inode, name: str, info: ObjectInfo, *, exact: bool) -> Inode:
        """The inode for a file/symlink entry, created or refreshed from ``info``."""
        key = parent.key + name
        etag = info.etag or info.version
        node = self.table.at(key)
        if node is not None and (
            node.local is not None or (not exact and node.exact and node.etag == etag)
        ):
            return node
        kind = _kind_of(info)
        if not exact and node is not None and node.etag == etag:
            kind = node.kind  # a listing without metadata can't tell a symlink from a file
        if node is not None and node.kind is not kind:
            self.table.detach(node)
            node = None
        if node is None:
            node = self.table.add(kind, key, parent.ino, name)
        self._apply_info(node, info, exact=exact)
        return node

    def _dir_node(
        self, parent: Inode, name: str, marker: ObjectInfo | None, *, exact: bool
    ) -> Inode:
        key = parent.key + name + "/"
        node = self.table.at(key)
        if node is None:
            node = self.table.add(Kind.DIR, key, parent.ino, name)
        elif node.exact and not exact and node.expires > self._mono():
            return node
        self._apply_info(node, marker or ObjectInfo(key=key, size=0, is_dir=True), exact=exact)
        node.marker = marker is not None
        node.expires = self._mono() + self.options.dir_ttl
        return node

    async def _stat(self, key: str) -> ObjectInfo | None:
        """HEAD ``key``; concurrent asks for one key share one request."""
        pending = self._stats.get(key)
        if pending is not None:
            await pending.done.wait()
            if pending.error is not None:
                raise pending.error
            return pending.info
        pending = _Pending()
        self._stats[key] = pending
        try:
            pending.info = await self.rt.call(self.store.stat, key)
        except NotFound:
            pending.info = None
        except Exception as e:
            pending.error = e
            raise
        finally:
            del self._stats[key]
            pending.done.set()
        return pending.info

    async def _refresh_file(self, node: Inode) -> None:
        """HEAD a file or symlink; ENOENT (and detach) when it is gone or changed type."""
        self._statahead(node)
        info = await self._stat(node.key)
        if info is None or (
            _kind_of(info) is not node.kind and not self._listed_as_file(node, info)
        ):
            self.table.detach(node)
            raise FsError(errno.ENOENT, f"{node.key} is gone")
        self._apply_info(node, info, exact=True)

    def _listed_as_file(self, node: Inode, info: ObjectInfo) -> bool:
        """A trusted LIST showed a stored symlink as a file (it can't tell them apart)
        and the kernel was told so: it stays a file whose bytes are the target."""
        return self._trust_list and node.kind is Kind.FILE and _kind_of(info) is Kind.LINK

    def _statahead(self, node: Inode) -> None:
        if self._trust_list:
            return  # siblings are not provisional: a HEAD here is for this file alone
        parent = self.table.by_ino.get(node.parent)
        order = self.orders.get(parent.key) if parent is not None else None
        if order is None or node.index < 0 or parent is None:
            return
        for name in order[node.index + 1 : node.index + 1 + STATAHEAD]:
            sibling = self.table.at(parent.key + name)
            if (
                sibling is None
                or sibling.exact
                or sibling.local is not None
                or sibling.key in self._stats
                or sibling.key in self._ahead
            ):
                continue
            self._ahead.add(sibling.key)
            self.rt.spawn(self._stat_ahead, sibling)

    async def _stat_ahead(self, node: Inode) -> None:
        key = node.key
        try:
            async with self.rt.stat_limiter:
                if node.exact or node.detached:
                    return  # a listing batch or a lookup got it while this one queued
                info = await self._stat(key)
        except Exception:
            return
        finally:
            self._ahead.discard(key)
        if (
            info is not None
            and not node.detached
            and node.local is None
            and _kind_of(info) is node.kind
        ):
            self._apply_info(node, info, exact=True)

    # -- lookups -------------------------------------------------------------------------

    async def _resolve(self, parent: Inode, name: str) -> Inode | None:
        fkey = self._child_key(parent, name)
        dkey = fkey + "/"
        now = self._mono()
        trust = self._trust_list
        d = self.table.at(dkey)
        if d is not None and (not d.remote or ((d.exact or trust) and d.expires > now)):
            return d
        f = self.table.at(fkey)
        if f is not None and (f.local is not None or not f.remote):
            return f
        if d is None and f is not None and (f.exact or trust) and f.expires > now:
            return f
        if self.negative.get(fkey):
            return None
        listing = self.listings.get(parent.key)
        info = listing.entries.get(name) if listing is not None else None
        if info is None and listing is not None and listing.complete:
            return None
        if info is not None and info.is_dir:
            if trust:
                return self._dir_node(parent, name, None, exact=False)
            found = await self.rt.call(self.rt.fsops.stat_dir, dkey)
            return self._dir_node(parent, name, found, exact=True)
        if info is not None:
            f = self._file_node(
                parent, name, info, exact=self.rt.fsops.listing_has_metadata or info.metadata != {}
            )
            if f.exact or trust:
                return f
        if d is None and f is not None and f.remote:
            # A listing (maybe still being read) says it is a file: one HEAD for the
            # metadata, with the next siblings HEADed ahead as `ls -l` will want them.
            self._statahead(f)
            fresh = await self._stat(fkey)
            if fresh is None:
                self.table.detach(f)
                self.negative.put(fkey, True)
                return None
            return self._file_node(parent, name, fresh, exact=True)
        head: ObjectInfo | None = None
        marker: ObjectInfo | None = None
        has_child = False

        async def ask_head() -> None:
            nonlocal head
            head = await self._stat(fkey)

        async def ask_marker() -> None:
            nonlocal marker
            marker = await self.rt.call(self.rt.fsops.stat_dir, dkey)

        async def ask_child() -> None:
            nonlocal has_child
            has_child = await self.rt.call(self.rt.fsops.has_child, dkey)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_head)
            nursery.start_soon(ask_marker)
            nursery.start_soon(ask_child)
        if marker is not None or has_child:
            return self._dir_node(parent, name, marker, exact=True)
        if head is not None:
            return self._file_node(parent, name, head, exact=True)
        self.negative.put(fkey, True)
        return None

    async def lookup(self, parent_ino: int, name: str) -> Attr | None:
        """Attributes of ``name`` (its lookup count goes up), or None: no such entry."""
        parent = self._dir(parent_ino)
        if name == ".":
            node: Inode | None = parent
        elif name == "..":
            node = self._node(parent.parent)
        else:
            node = await self._resolve(parent, name)
        if node is None:
            return None
        node.lookups += 1
        return self._attr(node)

    def forget(self, pairs: list[tuple[int, int]]) -> None:
        for ino, count in pairs:
            node = self.table.by_ino.get(ino)
            if node is None:
                continue
            node.lookups -= count
            self.table.maybe_drop(node)

    async def getattr(self, ino: int) -> Attr:
        node = self._node(ino)
        if (
            node.local is None
            and node.kind is not Kind.DIR
            and node.remote
            and not node.detached
            and not ((node.exact or self._trust_list) and node.expires > self._mono())
        ):
            await self._refresh_file(node)
        return self._attr(node)

    # -- attributes -------------------------------------------------------------------------

    async def setattr(self, ino: int, changes: SetAttrs, fh: int | None = None) -> Attr:
        node = self._node(ino)
        meta_change = any(
            v is not None for v in (changes.mode, changes.uid, changes.gid, changes.mtime_ns)
        )
        if changes.size is None and not meta_change:
            return self._attr(node)  # atime alone: not stored (see docs/SEMANTICS.md)
        self._writable()
        if changes.size is not None:
            await self._truncate(node, changes.size)
        if meta_change:
            await self._change_metadata(node, changes)
        return self._attr(node)

    async def _truncate(self, node: Inode, size: int) -> None:
        if node.kind is Kind.DIR:
            raise FsError(errno.EISDIR)
        if node.kind is Kind.LINK:
            raise FsError(errno.EINVAL)
        was_open = node.local is not None
        lf = self._local(node, truncate=size == 0)
        try:
            async with lf.lock:
                if not lf.base_loaded and size > 0:
                    await self.writes.load_base(lf, node.size)
                await self.writes.truncate(lf, size)
            node.mtime_ns = node.ctime_ns = self.rt.wall_ns()
            if not was_open:
                await self._commit(node)
        finally:
            if not was_open:
                await self._drop_local(node)

    async def _change_metadata(self, node: Inode, changes: SetAttrs) -> None:
        old = (node.mode, node.uid, node.gid, node.mtime_ns)
        if node.kind is not Kind.DIR and node.remote and node.local is None and not node.exact:
            await self._refresh_file(node)
        if changes.mode is not None:
            node.mode = statmod.S_IFMT(node.mode) | statmod.S_IMODE(changes.mode)
        if changes.uid is not None:
            node.uid = changes.uid
        if changes.gid is not None:
            node.gid = changes.gid
        if changes.mtime_ns is not None:
            node.mtime_ns = changes.mtime_ns
        node.ctime_ns = self.rt.wall_ns()
        if node.local is not None and (node.local.dirty or not node.remote):
            return  # goes with the upload at close; an upload error is returned there
        meta = {**node.metadata, **self._posix_meta(node)}
        try:
            if node.kind is Kind.DIR:
                if node.ino == ROOT_INO and not node.key:
                    raise Unsupported("the bucket root has no marker to carry metadata")
                if self._markers_keep_metadata is False:
                    raise Unsupported("this store drops the metadata of directory markers")
                info = await self.rt.call(self.rt.fsops.update_dir_metadata, node.key, meta)
                node.marker = True
                if not await self._marker_metadata_kept(node.key):
                    raise Unsupported("this store drops the metadata of directory markers")
            else:
                current = ObjectInfo(
                    key=node.key, size=node.size, etag=node.etag, metadata=node.metadata
                )
                info = await self.rt.call(self.rt.fsops.update_metadata, current, meta)
        except Exception as e:
            node.mode, node.uid, node.gid, node.mtime_ns = old
            code = errno.EPERM if isinstance(e, Unsupported) else errno_for(e)
            log.warning("%s: metadata not stored: %s", node.key or "/", e)
            raise FsError(code, str(e)) from e
        node.metadata = meta
        if info.etag is not None and node.kind is not Kind.DIR:
            node.etag = info.etag
        node.exact = True
        node.expires = self._mono() + self.options.attr_ttl

    # -- files: open, read, write, close --------------------------------------------------

    def _local(self, node: Inode, *, truncate: bool) -> LocalFile:
        """The node's write state, created on first need."""
        if node.local is not None:
            return node.local
        fresh = truncate or not node.remote
        lf = self.writes.new_file(
            node.key,
            lambda: self._posix_meta(node),
            size=0 if fresh else node.size,
            base_loaded=fresh,
            streamable=fresh,
        )
        if fresh:
            lf.dirty = True
        node.local = lf
        return lf

    async def _drop_local(self, node: Inode) -> None:
        lf = node.local
        if lf is None or lf.handles > 0:
            return
        node.local = None
        await self.writes.discard(lf)
        self.table.maybe_drop(node)

    def _new_fh(self, handle: FileHandle | DirHandle) -> int:
        fh = next(self._fh_numbers)
        self._handles[fh] = handle
        return fh

    def _file_handle(self, fh: int) -> FileHandle:
        handle = self._handles.get(fh)
        if not isinstance(handle, FileHandle):
            raise FsError(errno.EBADF)
        return handle

    async def open(self, ino: int, flags: int) -> tuple[int, bool]:
        """Returns ``(fh, keep_cache)``: the page cache is kept when the object's
        etag, size and mtime are what they were at the previous open."""
        node = self._node(ino)
        if node.kind is Kind.DIR:
            raise FsError(errno.EISDIR)
        access = flags & os.O_ACCMODE
        writing = access in (os.O_WRONLY, os.O_RDWR) or bool(flags & os.O_TRUNC)
        if writing:
            self._writable()
        fresh = node.exact and node.expires > self._mono()
        if node.local is None and node.remote and not node.detached and not fresh:
            await self._refresh_file(node)
        handle = FileHandle(node, writable=writing)
        if writing:
            lf = self._local(node, truncate=bool(flags & os.O_TRUNC))
            if flags & os.O_TRUNC and (lf.size or not lf.base_loaded):
                async with lf.lock:
                    await self.writes.truncate(lf, 0)
            lf.handles += 1
        version = (node.etag, node.size, node.mtime_ns)
        keep = node.local is None and node.seen == version
        node.seen = version
        node.opens += 1
        return self._new_fh(handle), keep

    async def create(
        self, parent_ino: int, name: str, mode: int, flags: int, uid: int, gid: int
    ) -> tuple[int, Attr]:
        self._writable()
        parent = self._dir(parent_ino)
        key = self._child_key(parent, name)
        old = self.table.at(key)
        if old is not None:
            if old.local is not None:
                old.local.unlinked = True
            self.table.detach(old)
        node = self.table.add(Kind.FILE, key, parent.ino, name)
        now = self.rt.wall_ns()
        node.mode = statmod.S_IFREG | statmod.S_IMODE(mode)
        node.uid, node.gid = uid, gid
        node.mtime_ns = node.ctime_ns = now
        node.exact = True
        node.remote = False
        node.expires = self._mono() + self.options.attr_ttl
        lf = self._local(node, truncate=True)
        lf.handles += 1
        node.opens += 1
        node.lookups += 1
        self.negative.pop(key)
        self._local_only.setdefault(parent.key, set()).add(name)
        fh = self._new_fh(FileHandle(node, writable=True))
        return fh, self._attr(node)

    async def read(self, fh: int, offset: int, length: int) -> bytes | memoryview:
        handle = self._file_handle(fh)
        node = handle.node
        lf = node.local
        if lf is not None and lf.base_loaded:
            return await self.writes.read(lf, offset, length)
        if not node.remote:
            return b""
        if handle.reader is None or handle.reader.size != node.size:
            if handle.reader is not None:
                handle.reader.close()
            handle.reader = Prefetcher(self.rt, lambda: node.key, node.size)
        try:
            return await handle.reader.read(offset, length)
        except NotFound as e:
            raise FsError(errno.ESTALE, f"{node.key} vanished while open") from e

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self._file_handle(fh)
        if not handle.writable:
            raise FsError(errno.EBADF)
        node = handle.node
        lf = node.local
        assert lf is not None
        async with lf.lock:
            if lf.failed:
                raise FsError(errno.EIO, lf.failed)
            try:
                if not lf.base_loaded:
                    await self.writes.load_base(lf, node.size)
                await self.writes.write(lf, offset, data)
            except Exception as e:
                # The file can't hold what the program wrote: never upload it.
                lf.failed = f"write to {lf.key} failed: {e}"
                raise
        node.mtime_ns = node.ctime_ns = self.rt.wall_ns()
        return len(data)

    async def _commit(self, node: Inode) -> None:
        lf = node.local
        if lf is None:
            return
        async with lf.lock:
            if lf.unlinked or not lf.dirty:
                return
            if lf.failed:
                raise FsError(errno.EIO, lf.failed)
            try:
                info = await self.writes.commit(lf, self._posix_meta(node))
            except Exception as e:
                lf.failed = f"upload of {lf.key} failed: {e}"
                log.error("%s", lf.failed)
                raise FsError(errno.EIO, lf.failed) from e
            lf.dirty = False
        self._committed(node, info, lf.size)

    def _committed(self, node: Inode, info: ObjectInfo, size: int) -> None:
        node.remote = True
        node.size = size
        node.etag = info.etag or info.version
        node.metadata = dict(info.metadata)
        node.exact = True
        node.expires = self._mono() + self.options.attr_ttl
        parent = self.table.by_ino.get(node.parent)
        if parent is not None:
            names = self._local_only.get(parent.key)
            if names is not None:
                names.discard(node.name)
                if not names:
                    del self._local_only[parent.key]
            listing = self.listings.get(parent.key)
            if listing is not None:
                listing.add(node.name, ObjectInfo(key=node.key, size=size, etag=node.etag))

    async def flush(self, fh: int) -> None:
        handle = self._file_handle(fh)
        if handle.writable:
            await self._commit(handle.node)

    async def fsync(self, fh: int) -> None:
        await self.flush(fh)

    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if not isinstance(handle, FileHandle):
            return
        node = handle.node
        if handle.reader is not None:
            handle.reader.close()
        node.opens -= 1
        lf = node.local
        if handle.writable and lf is not None:
            lf.handles -= 1
            if lf.handles == 0:
                try:
                    await self._commit(node)
                except FsError as e:
                    log.error("%s: not stored: %s", node.key, e.reason)
                if not node.remote:
                    self._forget_local_name(node)
                    self.table.detach(node)
                await self._drop_local(node)
        self.table.maybe_drop(node)

    def _forget_local_name(self, node: Inode) -> None:
        parent = self.table.by_ino.get(node.parent)
        if parent is None:
            return
        names = self._local_only.get(parent.key)
        if names is not None:
            names.discard(node.name)
            if not names:
                del self._local_only[parent.key]

    # -- namespace ----------------------------------------------------------------------

    async def mkdir(self, parent_ino: int, name: str, mode: int, uid: int, gid: int) -> Attr:
        self._writable()
        parent = self._dir(parent_ino)
        if await self._resolve(parent, name) is not None:
            raise FsError(errno.EEXIST)
        key = self._child_key(parent, name) + "/"
        now = self.rt.wall_ns()
        meta = PosixAttrs(statmod.S_IFDIR | statmod.S_IMODE(mode), uid, gid, now).to_metadata()
        try:
            info = await self.rt.call(self.rt.fsops.make_dir, key, meta)
        except Exception as e:
            raise FsError(errno_for(e), str(e)) from e
        # The directory exists either way; where markers can't carry metadata its mode
        # lasts as long as this mount (docs/SEMANTICS.md).
        await self._marker_metadata_kept(key)
        node = self._dir_node(parent, name, ObjectInfo(key=key, size=0, metadata=meta), exact=True)
        node.marker = True
        node.metadata = dict(info.metadata or meta)
        node.lookups += 1
        self.negative.pop(key[:-1])
        empty = DirListing()
        empty.complete = True
        self.listings.put(key, empty)
        self._listing_add(parent, name, ObjectInfo(key=key, size=0, is_dir=True))
        return self._attr(node)

    async def _marker_metadata_kept(self, key: str) -> bool:
        """Whether the store keeps user metadata on ``dir/`` markers, learnt once by
        reading back the first marker written (SeaweedFS turns ``dir/`` keys into
        directories of its filer and drops their metadata)."""
        if self._markers_keep_metadata is None:
            try:
                marker = await self.rt.call(self.rt.fsops.stat_dir, key)
            except Exception as e:
                log.warning("%s: could not read back a directory marker: %s", key, e)
                return True
            self._markers_keep_metadata = marker is not None and MODE in marker.metadata
            if not self._markers_keep_metadata:
                log.warning(
                    "this store drops the metadata of directory markers: directory modes, "
                    "owners and mtimes can't be stored (chmod/chown/utime on directories "
                    "fail with EPERM)"
                )
        return self._markers_keep_metadata

    def _listing_add(self, parent: Inode, name: str, info: ObjectInfo) -> None:
        listing = self.listings.get(parent.key)
        if listing is not None:
            listing.add(name, info)

    def _listing_remove(self, parent: Inode, name: str) -> None:
        listing = self.listings.get(parent.key)
        if listing is not None:
            listing.remove(name)

    async def symlink(self, parent_ino: int, name: str, target: bytes, uid: int, gid: int) -> Attr:
        """A symlink is an object whose body is the target and whose ``mode`` metadata
        has ``S_IFLNK``, as s3fs writes them."""
        self._writable()
        parent = self._dir(parent_ino)
        if await self._resolve(parent, name) is not None:
            raise FsError(errno.EEXIST)
        key = self._child_key(parent, name)
        now = self.rt.wall_ns()
        meta = PosixAttrs(statmod.S_IFLNK | 0o777, uid, gid, now).to_metadata()
        try:
            info = await self.rt.call(self.store.put, key, target, metadata=meta)
        except Exception as e:
            raise FsError(errno_for(e), str(e)) from e
        node = self._file_node(
            parent,
            name,
            ObjectInfo(key=key, size=len(target), etag=info.etag, metadata=meta),
            exact=True,
        )
        node.target = target
        node.lookups += 1
        self.negative.pop(key)
        self._listing_add(parent, name, ObjectInfo(key=key, size=len(target), metadata=meta))
        return self._attr(node)

    async def readlink(self, ino: int) -> bytes:
        node = self._node(ino)
        if node.kind is not Kind.LINK:
            raise FsError(errno.EINVAL)
        if node.target is None:
            node.target = await self.rt.call(self.store.read, node.key)
        return node.target

    async def link(self, ino: int, parent_ino: int, name: str) -> Attr:
        raise FsError(errno.EPERM, "hard links are not supported")

    async def unlink(self, parent_ino: int, name: str) -> None:
        self._writable()
        parent = self._dir(parent_ino)
        node = await self._resolve(parent, name)
        if node is None:
            raise FsError(errno.ENOENT)
        if node.kind is Kind.DIR:
            raise FsError(errno.EISDIR)
        if node.local is not None:
            node.local.unlinked = True
            if node.local.stream is not None:
                self.writes._forget_stream(node.local)
        if node.remote:
            try:
                await self.rt.call(self.store.delete, node.key)
            except Exception as e:
                raise FsError(errno_for(e), str(e)) from e
        self._forget_local_name(node)
        self.table.detach(node)
        self._listing_remove(parent, name)
        self.negative.put(node.key, True)

    async def _is_empty(self, node: Inode) -> bool:
        prefix = node.key
        if any(n.startswith(prefix) for n in self._local_only):
            return False
        return not await self.rt.call(self.rt.fsops.has_child, prefix)

    async def rmdir(self, parent_ino: int, name: str) -> None:
        self._writable()
        parent = self._dir(parent_ino)
        node = await self._resolve(parent, name)
        if node is None:
            raise FsError(errno.ENOENT)
        if node.kind is not Kind.DIR:
            raise FsError(errno.ENOTDIR)
        if not await self._is_empty(node):
            raise FsError(errno.ENOTEMPTY)
        try:
            await self.rt.call(self.rt.fsops.remove_dir, node.key)
        except Exception as e:
            raise FsError(errno_for(e), str(e)) from e
        self.table.detach(node)
        self.listings.pop(node.key)
        self._listing_remove(parent, name)
        self.negative.put(node.key[:-1], True)

    async def rename(
        self, old_parent: int, old_name: str, new_parent: int, new_name: str, flags: int = 0
    ) -> None:
        self._writable()
        if flags & 2:  # RENAME_EXCHANGE
            raise FsError(errno.EINVAL, "RENAME_EXCHANGE is not supported")
        src_parent = self._dir(old_parent)
        dst_parent = self._dir(new_parent)
        src = await self._resolve(src_parent, old_name)
        if src is None:
            raise FsError(errno.ENOENT)
        dst = await self._resolve(dst_parent, new_name)
        if dst is src:
            return
        if dst is not None and flags & 1:  # RENAME_NOREPLACE
            raise FsError(errno.EEXIST)
        new_key = self._child_key(dst_parent, new_name)
        if src.kind is Kind.DIR:
            if dst is not None:
                if dst.kind is not Kind.DIR:
                    raise FsError(errno.ENOTDIR)
                if not await self._is_empty(dst):
                    raise FsError(errno.ENOTEMPTY)
            new_prefix = new_key + "/"
            if new_prefix.startswith(src.key):
                raise FsError(errno.EINVAL, "a directory can't move inside itself")
            if dst is not None:
                await self.rt.call(self.rt.fsops.remove_dir, dst.key)
                self.table.detach(dst)
            await self._rename_dir(src, new_prefix)
        else:
            if dst is not None and dst.kind is Kind.DIR:
                raise FsError(errno.EISDIR)
            await self._rename_file(src, new_key)
            if dst is not None:
                if dst.local is not None:
                    dst.local.unlinked = True
                self._forget_local_name(dst)
                self.table.detach(dst)
        if not src.remote:
            self._forget_local_name(src)
            self._local_only.setdefault(dst_parent.key, set()).add(new_name)
        self.table.rekey(
            src, new_key + ("/" if src.kind is Kind.DIR else ""), dst_parent.ino, new_name
        )
        src.index = -1
        self._listing_remove(src_parent, old_name)
        if src.remote:
            self._listing_add(
                dst_parent,
                new_name,
                ObjectInfo(key=src.key, size=src.size, etag=src.etag, is_dir=src.kind is Kind.DIR),
            )
        self.negative.pop(new_key)
        self.negative.put(src_parent.key + old_name, True)

    async def _rename_file(self, src: Inode, new_key: str) -> None:
        lf = src.local
        if lf is not None:
            if lf.stream is not None:
                if lf.punched:
                    raise FsError(errno.EBUSY, "renaming a file larger than the cache while open")
                async with lf.lock:
                    self.writes._forget_stream(lf)
            if src.remote and lf.dirty:
                await self._commit(src)
            lf.key = new_key
        if not src.remote:
            return
        if not src.exact:
            await self._refresh_file(src)
        info = ObjectInfo(key=src.key, size=src.size, etag=src.etag, metadata=src.metadata)
        try:
            await self.rt.call(self.rt.fsops.copy, info, new_key)
            await self.rt.call(self.store.delete, src.key)
        except Exception as e:
            if lf is not None:
                lf.key = src.key
            raise FsError(errno_for(e), str(e)) from e

    async def _rename_dir(self, src: Inode, new_prefix: str) -> None:
        """Copy every object under the prefix, then delete the originals: not atomic
        (see docs/SEMANTICS.md). Markers are rewritten at the new place."""
        old_prefix = src.key
        rt = self.rt
        try:
            if not await rt.call(rt.fsops.rename_dir, old_prefix, new_prefix):
                await self._move_tree(old_prefix, new_prefix)
        except FsError:
            raise
        except Exception as e:
            raise FsError(errno_for(e), str(e)) from e
        for node in list(self.table.by_key.values()):
            if node.key.startswith(old_prefix) and node is not src:
                new_key = new_prefix + node.key[len(old_prefix) :]
                self.table.rekey(node, new_key, node.parent, node.name)
                if node.local is not None:
                    if node.local.stream is not None:
                        self.writes._forget_stream(node.local)
                    node.local.key = new_key
        for key in list(self._local_only):
            if key.startswith(old_prefix):
                self._local_only[new_prefix + key[len(old_prefix) :]] = self._local_only.pop(key)
        for key in self.listings.keys():  # noqa: SIM118 - a TTLCache, not a dict
            if key.startswith(old_prefix):
                self.listings.pop(key)

    async def _move_tree(self, old_prefix: str, new_prefix: str) -> None:
        rt = self.rt
        source = iter(rt.store.list(old_prefix, recursive=False))
        subdirs: list[str] = []
        while batch := await rt.call(_take, source, LIST_BATCH):
            async with trio.open_nursery() as nursery:
                for info in batch:
                    if info.key == old_prefix:
                        continue
                    if info.is_dir:
                        subdirs.append(info.key)
                        continue
                    nursery.start_soon(
                        self._move_object, info, new_prefix + info.key[len(old_prefix) :]
                    )
        for sub in subdirs:
            await self._move_tree(sub, new_prefix + sub[len(old_prefix) :])
        marker = await rt.call(rt.fsops.stat_dir, old_prefix)
        if marker is not None:
            await rt.call(rt.fsops.make_dir, new_prefix, dict(marker.metadata))
            await rt.call(rt.fsops.remove_dir, old_prefix)

    async def _move_object(self, info: ObjectInfo, new_key: str) -> None:
        await self.rt.call(self.rt.fsops.copy, info, new_key)
        await self.rt.call(self.store.delete, info.key)

    # -- directories ----------------------------------------------------------------------

    async def opendir(self, ino: int) -> int:
        return self._new_fh(DirHandle(self._dir(ino)))

    async def readdir(self, fh: int, start: int, reply: Callable[[str, Attr, int], bool]) -> None:
        """Call ``reply(name, attr, next)`` for entries from position ``start`` until it
        returns False; each accepted entry's lookup count goes up (readdirplus)."""
        handle = self._handles.get(fh)
        if not isinstance(handle, DirHandle):
            raise FsError(errno.EBADF)
        if start == 0 and handle.source is not None:
            handle.rows, handle.base, handle.source, handle.done = [], 0, None, False
            handle.seen = set()
            handle.ahead, handle.reading, handle.exhausted = deque(), False, False
            handle.tail = None
        if handle.source is None and not handle.done:
            handle.source = iter(self.store.list(handle.node.key, recursive=False))
            handle.listing = DirListing()
            handle.order = []
            self.listings.put(handle.node.key, handle.listing, weight=1)
            self.orders.put(handle.node.key, handle.order, weight=1)
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
            if not reply(name, self._attr(node), index + 1):
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
        cap = self.options.max_cached_entries
        parent = handle.node
        if batch is None:
            handle.done = True
            for name in sorted(self._local_only.get(prefix, ())):
                if name not in handle.seen:
                    node = self.table.at(prefix + name)
                    if node is not None:
                        handle.rows.append((name, node))
            listing.complete = len(listing.entries) < cap
            if listing.complete:
                self.listings.put(prefix, listing, weight=max(1, len(listing.entries)))
            else:
                self.listings.pop(prefix)
            self.orders.put(prefix, handle.order, weight=max(1, len(handle.order)))
            return
        exact = self.rt.fsops.listing_has_metadata
        for i, info in enumerate(batch.items):
            entry = _entry_name(prefix, info)
            if entry is None or entry in handle.seen:
                continue
            name = entry
            fetched = i in batch.fetched
            got = batch.fetched.get(i)
            if info.is_dir:
                node = self._dir_node(parent, name, got, exact=fetched)
                info = ObjectInfo(key=info.key, size=0, is_dir=True)
            elif fetched and got is None:
                node = self.table.at(info.key)
                if node is None or node.local is None:
                    if node is not None:
                        self.table.detach(node)
                    self.negative.put(info.key, True)
                    continue  # deleted between the LIST and its HEAD
                node = self._file_node(parent, name, info, exact=exact)
            elif got is not None:
                info = got
                node = self._file_node(parent, name, info, exact=True)
            else:
                node = self._file_node(parent, name, info, exact=exact)
            if len(handle.seen) < cap:
                handle.seen.add(name)
            if len(listing.entries) < cap:
                node.index = len(handle.order)
                handle.order.append(name)
                listing.add(name, info)
            handle.rows.append((name, node))

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
                batch.items = await self.rt.call(_take, source, LIST_BATCH)
            except Exception as e:
                batch.error = e
            if handle.source is source:  # not rewound meanwhile
                handle.reading = False
                if batch.error is not None or not batch.items:
                    handle.exhausted = True
                else:
                    self._read_ahead(handle)  # the next LIST page while this one is HEADed
            if batch.items and not self._trust_list:
                if prev is not None:
                    await prev.done.wait()  # the batch the kernel wants first goes first
                await self._fetch_batch(handle, source, batch)
        except Exception as e:  # never let a listing's helper take the mount down
            log.warning("%s: listing attributes not fetched: %s", handle.node.key or "/", e)
        finally:
            batch.done.set()

    def _needs_fetch(self, prefix: str, info: ObjectInfo, now: float) -> bool:
        if _entry_name(prefix, info) is None:
            return False
        if info.is_dir:
            d = self.table.at(info.key)
            return d is None or not d.exact or d.expires <= now
        if self.rt.fsops.listing_has_metadata:
            return False
        f = self.table.at(info.key)
        if f is None:
            return True
        if f.local is not None or not f.remote:
            return False
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
        now = self._mono()
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
            for _ in range(min(self.options.stat_concurrency, len(todo))):
                nursery.start_soon(worker)

    async def _fetch_chunk(self, batch: _Batch, chunk: list[int]) -> None:
        heads: list[int] = []
        for i in chunk:
            info = batch.items[i]
            if not info.is_dir and info.key not in self._stats:
                heads.append(i)
                continue
            try:  # a marker, or a HEAD a lookup already has in flight: on their own
                async with self.rt.stat_limiter:
                    if info.is_dir:
                        batch.fetched[i] = await self.rt.call(self.rt.fsops.stat_dir, info.key)
                    else:
                        batch.fetched[i] = await self._stat(info.key)
            except Exception as e:
                log.debug("%s: attributes not fetched for the listing: %s", info.key, e)
        if not heads:
            return
        keys = [batch.items[i].key for i in heads]
        waiting = {key: _Pending() for key in keys}
        self._stats.update(waiting)  # lookups of these keys share these HEADs
        results: list[ObjectInfo | BaseException | None] = []
        try:
            async with self.rt.stat_limiter:
                results = await self.rt.call(_head_many, self.store, keys)
        except BaseException as e:
            results = [e] * len(keys)
            raise
        finally:
            for i, key, got in zip(heads, keys, results, strict=True):
                shared = waiting[key]
                if self._stats.get(key) is shared:
                    del self._stats[key]
                if isinstance(got, BaseException):
                    shared.error = got
                    log.debug("%s: attributes not fetched for the listing: %s", key, got)
                else:
                    shared.info = got
                    batch.fetched[i] = got
                shared.done.set()

    async def releasedir(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if isinstance(handle, DirHandle):
            handle.closed = True  # stops its read-ahead

    # -- xattrs -----------------------------------------------------------------------------

    async def _digests(self, node: Inode) -> dict[str, str]:
        if node.kind is Kind.DIR or (node.local is not None and node.local.dirty):
            return {}
        if node.remote and not node.exact:
            await self._refresh_file(node)
        return {
            k[len(DIGEST_KEY_PREFIX) :]: v
            for k, v in node.metadata.items()
            if k.startswith(DIGEST_KEY_PREFIX)
        }

    async def listxattr(self, ino: int) -> list[str]:
        node = self._node(ino)
        return [XATTR_PREFIX + alg for alg in sorted(await self._digests(node))]

    async def getxattr(self, ino: int, name: str) -> bytes:
        if not name.startswith(XATTR_NAMESPACE):
            raise FsError(errno.ENOTSUP)  # see XATTR_NAMESPACE
        node = self._node(ino)
        if not name.startswith(XATTR_PREFIX):
            raise FsError(errno.ENODATA)
        value = (await self._digests(node)).get(name[len(XATTR_PREFIX) :])
        if value is None:
            raise FsError(errno.ENODATA)
        return value.encode()

    async def setxattr(self, ino: int, name: str, value: bytes) -> None:
        raise FsError(errno.ENOTSUP, "extended attributes are read-only")

    async def removexattr(self, ino: int, name: str) -> None:
        raise FsError(errno.ENOTSUP, "extended attributes are read-only")

    def statfs(self) -> dict[str, int]:
        blocks = 1 << 40
        return {
            "f_bsize": BLKSIZE,
            "f_frsize": 4096,
            "f_blocks": blocks,
            "f_bfree": blocks,
            "f_bavail": blocks,
            "f_files": 1 << 32,
            "f_ffree": 1 << 32,
            "f_favail": 1 << 32,
            "f_namemax": NAME_MAX,
        }
