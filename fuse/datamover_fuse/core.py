"""The filesystem itself, without a kernel: ``FsCore``.

The pyfuse3 ``Operations`` class (``datamover_fuse.ops``) only translates between the
kernel and this class; tests drive ``FsCore`` directly inside ``trio.run``. Every
method here is a trio coroutine that never blocks: store calls and staging-file I/O
run on worker threads (``Runtime.call`` / ``Runtime.disk``).

``FsCore`` owns the open handles and answers the file calls (open, create, read,
write, flush, release); the other calls go to the part that owns their state. Each
module imports only the ones below it::

    core        FsCore: lifecycle, handles, lookup/getattr, the file calls
    namespace   mkdir, mknod, rmdir, unlink, rename, symlink, readlink, link
    metadata    setattr (truncate, chmod, chown, utime), the xattrs
    permissions who may change an owner or a mode; set-group-ID directories
    readdir     directories read for the kernel: batches, read-ahead, their HEADs
    localfiles  an inode's write state (``LocalFile``) and its commit
    lookup      finding a name; HEADs shared, statahead
    listing     listings, listing order, negative lookups, names not uploaded yet
    inodes      the inode table and what the kernel is told about each inode

**Directories** exist implicitly when a key has their prefix, or explicitly as a
zero-byte ``dir/`` marker object (which ``mkdir`` writes and which carries the
directory's mode/owner/times; where the store drops the metadata of markers, and at
a bucket's root, a ``DIR_META_NAME`` object inside the directory carries them). A
directory and a file of the same name: the directory wins and the file is hidden
(as mountpoint-s3 does), in lookups and listings alike.

**Caches** (``inodes``, ``listing``; all bounded, all with TTLs, clock injected): the
inode attributes (``attr_ttl``), complete directory listings used to answer lookups
(``dir_ttl``, at most ``max_cached_entries`` names in all), negative lookups
(``negative_ttl``, 100,000 names). The core's own writes update them, so a mount sees
its own changes at once; changes made by others appear when the TTLs run out.

**Versions**: every GET of a file's bytes is pinned to the version the inode names
(``inodes.pin_of``; the store's ``If-Match`` / ``ifGenerationMatch``). A refused GET
(``SourceChanged``) makes the mount HEAD the object: another client's version
(``Inode.replaced`` moves on) ends the reads of every handle opened before it
(``ESTALE``), so one open file never returns two versions' bytes. While the file is
open, that version gets a new inode (``InodeTable.supersede``): the old one keeps its
size and the kernel's pages of the old version, and the kernel is told to look the
name up again. A version the mount made itself (``inodes.set_version``) is read on.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat as statmod
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from datamover.errors import NotFound, SourceChanged
from datamover.stores.base import Store
from datamover.stores.fsops import FsOps, OpenFile, for_store
from datamover_fuse import native
from datamover_fuse.cache import Clock
from datamover_fuse.fserrors import FsError, check_writable
from datamover_fuse.inodes import (
    BLKSIZE,
    NAME_MAX,
    Attr,
    Inode,
    InodeTable,
    Kind,
    SetAttrs,
    pin_of,
)
from datamover_fuse.listing import DirCache
from datamover_fuse.localfiles import LocalFiles
from datamover_fuse.lookup import Resolver
from datamover_fuse.metadata import Metadata
from datamover_fuse.namespace import Namespace
from datamover_fuse.options import MountOptions
from datamover_fuse.permissions import Caller, new_owner
from datamover_fuse.prefetch import Prefetcher
from datamover_fuse.randomread import new_read_cache
from datamover_fuse.readdir import DirHandle, DirReader
from datamover_fuse.runtime import Runtime
from datamover_fuse.writes import WriteManager

log = logging.getLogger(__name__)


@dataclass(eq=False)
class FileHandle:
    node: Inode
    writable: bool
    reader: Prefetcher | None = None
    #: What the store pinned at open/create (``FsOps.open_file``; POSIX: the file's
    #: descriptor and its directory's), read instead of the key, closed at release.
    file: OpenFile | None = None
    #: ``node.stored`` when ``file`` was opened.
    stored: int = 0
    #: Opened with ``O_APPEND``: each write lands at the file's end as this mount
    #: holds it, whatever offset the kernel's (perhaps stale) size gave it.
    append: bool = False
    #: ``node.replaced`` at open: once another client's version is found, this handle
    #: reads no more (ESTALE) rather than mix two versions' bytes.
    epoch: int = 0


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
        # Every key of the mount is reached beneath the root, opened once (POSIX:
        # no symlink below it is followed; object stores: nothing to do).
        store.confine(root_key)
        self.options = options
        #: Called with an inode whose attributes the kernel may hold stale (its size
        #: changed behind the kernel's cache): the FUSE adapter tells the kernel.
        self.attrs_changed: Callable[[int], None] = lambda ino: None
        self._refusal_told = False
        self.rt = Runtime(
            store,
            fsops or for_store(store),
            options,
            clock=clock,
            wall_clock=wall_clock,
        )
        self.store = store
        self.writes = WriteManager(self.rt)
        self.reads = new_read_cache(self.rt)
        self.mount_ns = wall_clock()
        self.table = InodeTable(root_key, options, clock, self.mount_ns)
        self.dirs = DirCache(options, clock)
        self.resolver = Resolver(self.rt, self.table, self.dirs)
        self.local = LocalFiles(self.rt, self.writes, self.table, self.dirs)
        self.dir_reader = DirReader(self.rt, self.table, self.dirs, self.resolver)
        self.metadata = Metadata(self.rt, self.writes, self.table, self.resolver, self.local)
        self.namespace = Namespace(
            self.rt, self.writes, self.table, self.dirs, self.resolver, self.local, self.metadata
        )
        self._handles: dict[int, FileHandle | DirHandle] = {}
        self._fh_numbers = itertools.count(1)

    # -- lifecycle ------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FsCore]:
        """Run background work (read-ahead, part uploads) while the body runs; on exit
        upload what is still dirty, then clean the staging directory."""
        try:
            async with trio.open_nursery() as nursery:
                self.rt.nursery = nursery
                try:
                    await self.metadata.load_root()
                    yield self
                finally:
                    with trio.CancelScope(shield=True):
                        await self.shutdown()
                    nursery.cancel_scope.cancel()
        finally:
            self.rt.nursery = None
            if self.reads is not None:
                self.reads.close()
            self.rt.cache.remove()
            self.rt.fsops.close()

    async def shutdown(self) -> None:
        """Commit dirty files still open (the kernel went away without releasing)."""
        for node in list(self.table.by_ino.values()):
            if node.local is None:
                continue
            try:
                await self.local.commit(node)
            except FsError as e:
                log.error("%s: lost at unmount: %s", node.key, e)
            await self.writes.discard(node.local)
            node.local = None
        for handle in self._handles.values():
            if isinstance(handle, FileHandle):
                if handle.reader is not None:
                    handle.reader.close()
                await self._close_file(handle)
        self._handles.clear()
        await self.writes.idle()

    # -- handles ----------------------------------------------------------------------------

    def _new_fh(self, handle: FileHandle | DirHandle) -> int:
        fh = next(self._fh_numbers)
        self._handles[fh] = handle
        return fh

    async def _close_file(self, handle: FileHandle) -> None:
        file, handle.file = handle.file, None
        if file is not None:
            try:
                await self.rt.call(file.close)
            except OSError as e:
                log.warning("%s: closing its backing file: %s", handle.node.key, e)

    async def _check_opened(self, handle: FileHandle) -> None:
        """The kernel checked the caller's permissions against the node's mode and
        owner: the file opened must have them. One that does not (changed, or another
        file linked in at the name, since the node was looked up) is not used: the
        node takes its attributes and the open fails with ``ESTALE``, which makes the
        kernel look the name up again and check the caller against them."""
        file, node = handle.file, handle.node
        got = None if file is None else await self.rt.call(file.attrs)
        if got is None or node.local is not None:
            return
        if (got.mode, got.uid, got.gid) == (node.mode, node.uid, node.gid):
            return
        await self._close_file(handle)
        if got.mode is not None:
            node.mode = got.mode
        node.uid = node.uid if got.uid is None else got.uid
        node.gid = node.gid if got.gid is None else got.gid
        raise FsError(errno.ESTALE, f"{node.key}: not the file looked up (mode or owner)")

    async def _pinned(self, handle: FileHandle) -> OpenFile | None:
        """The handle's file to read, if the store pinned one. This mount's own upload
        of the file since (another handle's ``close``) replaced it: the file stored
        then is opened instead, as a local filesystem shows a handle the writes made
        through others."""
        file = handle.file
        if file is None or not file.readable:
            return None
        node = handle.node
        if handle.stored != node.stored and node.remote and not node.detached:
            await self._close_file(handle)
            handle.stored = node.stored
            handle.file = file = await self.rt.call(
                self.rt.fsops.open_file, node.key, existing=True
            )
            native.invalidate()
        return file

    def _file_handle(self, fh: int) -> FileHandle:
        handle = self._handles.get(fh)
        if not isinstance(handle, FileHandle):
            raise FsError(errno.EBADF)
        return handle

    # -- lookups -------------------------------------------------------------------------

    async def lookup(self, parent_ino: int, name: str) -> Attr | None:
        """Attributes of ``name`` (its lookup count goes up), or None: no such entry."""
        parent = self.table.directory(parent_ino)
        if name == ".":
            node: Inode | None = parent
        elif name == "..":
            node = self.table.node(parent.parent)
        else:
            node = await self.resolver.resolve(parent, name)
        if node is None:
            return None
        node.lookups += 1
        return self.table.attr(node)

    def forget(self, pairs: list[tuple[int, int]]) -> None:
        for ino, count in pairs:
            node = self.table.by_ino.get(ino)
            if node is None:
                continue
            node.lookups -= count
            self.table.maybe_drop(node)

    async def getattr(self, ino: int) -> Attr:
        node = self.table.node(ino)
        if (
            node.local is None
            and node.kind is not Kind.DIR
            and node.remote
            and not node.detached
            and (self.table.provisional(node) or node.expires <= self.rt.clock())
        ):
            await self.resolver.refresh_file(node)
        return self.table.attr(node)

    async def setattr(
        self, ino: int, changes: SetAttrs, fh: int | None = None, caller: Caller | None = None
    ) -> Attr:
        """``caller`` (None: the core's own tests, root) is checked by
        ``datamover_fuse.permissions``. With ``fh`` (``ftruncate``), a truncate builds
        on the file that handle opened."""
        handle = self._handles.get(fh) if fh is not None else None
        source = await self._pinned(handle) if isinstance(handle, FileHandle) else None
        return await self.metadata.setattr(ino, changes, caller, source)

    # -- files: open, read, write, close --------------------------------------------------

    async def open(self, ino: int, flags: int) -> tuple[int, bool]:
        """Returns ``(fh, keep_cache)``: the page cache is kept when the object's
        etag, size and mtime are what they were at the previous open."""
        node = self.table.node(ino)
        if node.kind is Kind.DIR:
            raise FsError(errno.EISDIR)
        access = flags & os.O_ACCMODE
        writing = access in (os.O_WRONLY, os.O_RDWR) or bool(flags & os.O_TRUNC)
        if writing:
            check_writable(self.options)
        if self._superseded(node):
            raise FsError(errno.ESTALE, f"{node.key}: replaced by another client")
        fresh = node.exact and node.expires > self.rt.clock()
        if node.local is None and node.remote and not node.detached and (writing or not fresh):
            # A writer always sees the object as it is now (close-to-open, as NFS),
            # attributes cached or not: its writes build on that object's bytes.
            try:
                await self.resolver.refresh_file(node)
            except FsError as e:
                if e.errno != errno.ENOENT:
                    raise
                # Deleted since the kernel looked it up: forgotten here, and ESTALE
                # makes the kernel look the name up again (then O_CREAT creates it,
                # as on a local disk).
                parent = self.table.parent_of(node)
                if parent is not None:
                    self.dirs.remove(parent, node.name)
                self.dirs.negative.put(node.key, True)
                raise FsError(errno.ESTALE, f"{node.key}: gone since it was looked up") from e
            if self._superseded(node):
                # Open elsewhere, and another client's version found: the name has a new
                # inode, which the kernel finds when it looks the name up again.
                raise FsError(errno.ESTALE, f"{node.key}: replaced by another client")
        changed = node.seen is not None and node.seen != (node.etag, node.size, node.mtime_ns)
        if changed or (node.told is not None and node.told != (node.size, node.mtime_ns)):
            # Another version since the last open, or attributes the kernel was not
            # told (a refresh here, a listing; readdirplus's may be dropped by a
            # kernel racing another request): it reads to the size it holds, and
            # appends land there, until told.
            self.attrs_changed(ino)
        handle = FileHandle(
            node,
            writable=writing,
            stored=node.stored,
            append=writing and bool(flags & os.O_APPEND),
            epoch=node.replaced,
        )
        if (
            self.rt.fsops.pins_files
            and not node.detached
            and (node.remote or node.local is not None)
        ):
            handle.file = await self.rt.call(
                self.rt.fsops.open_file, node.key, existing=node.remote
            )
            native.invalidate()
            await self._check_opened(handle)
        if writing:
            lf = self.local.get(node, truncate=bool(flags & os.O_TRUNC))
            if flags & os.O_TRUNC:
                if lf.size or not lf.base_loaded:
                    async with lf.lock:
                        try:
                            await self.writes.truncate(lf, 0)
                        except BaseException:
                            await self._close_file(handle)
                            raise
                lf.dirty = True
                node.mtime_ns = node.ctime_ns = self.rt.wall_ns()
            lf.handles += 1
        version = (node.etag, node.size, node.mtime_ns)
        keep = node.local is None and node.seen == version
        node.seen = version
        node.opens += 1
        return self._new_fh(handle), keep

    def _superseded(self, node: Inode) -> bool:
        """``node`` is a file's old inode: its name now has another (``supersede``)."""
        if not node.detached or node.kind is not Kind.FILE or node.local is not None:
            return False
        current = self.table.at(node.key)
        return current is not None and current is not node

    async def create(
        self, parent_ino: int, name: str, mode: int, flags: int, uid: int, gid: int
    ) -> tuple[int, Attr]:
        check_writable(self.options)
        parent = self.table.directory(parent_ino)
        key = await self.namespace.new_key(parent, name)
        file = None
        if self.rt.fsops.pins_files:
            file = await self.rt.call(self.rt.fsops.open_file, key, existing=False)
        old = self.table.at(key)
        if old is not None:
            if old.key != key:  # a hard link's name (the kernel found it absent)
                self.table.unalias(old, key)
            else:
                if old.local is not None:
                    old.local.unlinked = True
                self.table.detach(old)
        node = self.table.add(Kind.FILE, key, parent.ino, name)
        now = self.rt.wall_ns()
        gid, mode = new_owner(parent, mode, gid, is_dir=False)
        node.mode = statmod.S_IFREG | statmod.S_IMODE(mode)
        node.uid, node.gid = uid, gid
        node.mtime_ns = node.ctime_ns = now
        node.exact = True
        node.remote = False
        native.invalidate()
        node.expires = self.rt.clock() + self.options.attr_ttl
        lf = self.local.get(node, truncate=True)
        lf.handles += 1
        node.opens += 1
        node.lookups += 1
        self.dirs.negative.pop(key)
        self.dirs.add_local(parent, name)
        self.table.touch_dir(parent, now)
        fh = self._new_fh(FileHandle(node, writable=True, file=file))
        return fh, self.table.attr(node)

    def read_hit(self, fh: int, offset: int, length: int) -> bytes | memoryview | None:
        """The bytes if the read cache holds them, checked, in the page cache: no await,
        no thread. None for anything else (``read`` then does the read, errors included).
        A random reader hitting the cache pays the least Python per request."""
        reads = self.reads
        handle = self._handles.get(fh)
        if reads is None or not isinstance(handle, FileHandle):
            return None
        node = handle.node
        if (
            node.local is not None
            or not node.remote
            or handle.file is not None
            or handle.epoch != node.replaced
            or node.detached
        ):
            return None
        v = reads.version(node.key, node.etag, node.size, node.generation)
        if v is None:
            return None
        data = reads.cached_now(v, offset, length)
        if data is not None and native.ext is not None:
            reads.bind(fh, v)  # the next READs of this handle are answered in C
        return data

    async def read(self, fh: int, offset: int, length: int) -> bytes | memoryview:
        handle = self._file_handle(fh)
        node = handle.node
        lf = node.local
        if lf is not None and lf.base_loaded:
            return await self.writes.read(lf, offset, length)
        if not node.remote:
            return b""
        file = await self._pinned(handle)
        if file is not None:
            return await self.rt.call(file.read, offset, length)
        try:
            refused = 0
            while True:
                pinned = (node.etag, node.generation)  # what this read's GETs ask for
                try:
                    return await self._read_object(fh, handle, offset, length)
                except SourceChanged:
                    # The store holds another version than the one pinned.
                    if refused > 2:
                        raise
                    refused = await self._learn_version(handle, pinned, refused)
        except NotFound as e:
            raise FsError(errno.ESTALE, f"{node.key} vanished while open") from e
        except SourceChanged as e:
            raise FsError(errno.ESTALE, f"{node.key}: replaced while open") from e

    async def _read_object(
        self, fh: int, handle: FileHandle, offset: int, length: int
    ) -> bytes | memoryview:
        """``read`` from the object in the store: the read cache, else the handle's
        reader; every GET pinned to the version the mount knows (``pin_of``)."""
        node = handle.node
        if handle.epoch != node.replaced:
            # Another client replaced the object since this handle opened it: the rest
            # of its bytes would be of another file (the page cache may still answer
            # what it holds of the old one). Reopening reads the new one.
            raise FsError(
                errno.ESTALE, f"{node.key}: replaced by another client while open for reading"
            )
        if self._superseded(node):
            # Its name's blocks are the new version's: never read them for this one.
            raise FsError(errno.ESTALE, f"{node.key}: replaced by another client while open")
        reads = self.reads
        version = reads.version(node.key, node.etag, node.size, node.generation) if reads else None
        if reads is not None and version is not None:
            if native.ext is not None and node.local is None and handle.file is None:
                reads.bind(fh, version)
            data = await reads.cached(version, offset, length)
            if data is not None:
                return data
        if node.detached:
            # Unlinked, or replaced at its name, through this mount: the key now
            # names another object or none, never the bytes this handle opened.
            raise FsError(errno.ESTALE, f"{node.key}: deleted or replaced while open")
        if handle.reader is None or handle.reader.made_for != (node.etag, node.size):
            if handle.reader is not None:
                handle.reader.close()
            random_read = reads.random_reader(node) if reads else None
            # The version now, kept: a read under way when another client's version
            # is learnt never fetches that one (its GETs are refused instead).
            handle.reader = Prefetcher(
                self.rt,
                lambda: node.key,
                node.size,
                random_read,
                pin=pin_of(node),
                made_for=(node.etag, node.size),
            )
        return await handle.reader.read(offset, length)

    async def _learn_version(
        self, handle: FileHandle, pinned: tuple[str | None, str | None], refused: int
    ) -> int:
        """A GET pinned to ``pinned`` was refused: HEAD the object. Another client's
        version (``node.replaced`` moves on) ends this handle's reads (the caller's next
        try is ESTALE); one this mount made without learning it is read from now on.
        The very version the server reports, refused twice (``refused`` counts the
        times before): the read fails with ESTALE rather than go unpinned. Returns the
        new count."""
        node = handle.node
        if handle.reader is not None:
            handle.reader.close()  # its segments hold the refusal
            handle.reader = None
        told = (node.size, node.mtime_ns)
        try:
            await self.resolver.refresh_file(node)
        except FsError as e:
            if e.errno == errno.ENOENT:
                raise FsError(errno.ESTALE, f"{node.key}: deleted while open") from e
            raise
        if (node.size, node.mtime_ns) != told:
            self.attrs_changed(node.ino)  # the kernel's size is the old one's
        if node.replaced != handle.epoch or (node.etag, node.generation) != pinned:
            return refused
        if refused:
            # Integrity first: never read unpinned. The read fails (ESTALE), once said.
            if not self._refusal_told:
                self._refusal_told = True
                log.warning(
                    "%s: the store refused, twice, a read of the version it reports; "
                    "such reads fail with ESTALE",
                    self.store.url(node.key),
                )
            raise FsError(errno.ESTALE, f"{node.key}: the store refused its own version")
        return refused + 1

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self._file_handle(fh)
        if not handle.writable:
            raise FsError(errno.EBADF)
        node = handle.node
        lf = node.local
        assert lf is not None
        async with lf.lock:
            if lf.failed:
                raise FsError(lf.failed_errno, lf.failed)
            try:
                if not lf.base_loaded:
                    source = await self._pinned(handle)
                    if source is not None:  # the file opened, whatever its name is now
                        node.size = await self.rt.call(source.size)
                        native.invalidate()
                    elif node.remote and not node.detached:
                        await self.resolver.refresh_file(node)  # its size now, not cached
                    await self.writes.load_base(lf, node.size, source, pin_of(node))
                if handle.append:
                    # The kernel placed it at the size it knew (O_APPEND is the
                    # filesystem's to apply without a writeback cache); the file may
                    # have grown since, through another handle or another client.
                    offset = lf.size
                await self.writes.write(lf, offset, data)
            except Exception as e:
                # The file can't hold what the program wrote: never upload it.
                lf.failed = f"write to {lf.key} failed: {e}"
                if isinstance(e, FsError) and e.errno == errno.ENOSPC:
                    lf.failed_errno = errno.ENOSPC
                raise
        node.mtime_ns = node.ctime_ns = self.rt.wall_ns()
        return len(data)

    async def flush(self, fh: int) -> None:
        handle = self._file_handle(fh)
        if handle.writable:
            await self.local.commit(handle.node)

    async def fsync(self, fh: int) -> None:
        await self.flush(fh)

    async def release(self, fh: int) -> None:
        if native.ext is not None:
            native.ext.unbind(fh)
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
                    await self.local.commit(node)
                except FsError as e:
                    log.error("%s: not stored: %s", node.key, e.reason)
                if not node.remote:
                    self.dirs.forget_local(self.table.parent_of(node), node.name)
                    self.table.detach(node)
                await self.local.drop(node)
        await self._close_file(handle)  # after the upload: it went into the held directory
        self.table.maybe_drop(node)

    # -- names (``namespace``) -----------------------------------------------------------

    async def mkdir(self, parent_ino: int, name: str, mode: int, uid: int, gid: int) -> Attr:
        return await self.namespace.mkdir(parent_ino, name, mode, uid, gid)

    async def mknod(
        self, parent_ino: int, name: str, mode: int, rdev: int, uid: int, gid: int
    ) -> Attr:
        """A regular file (created empty and stored at once), FIFO, socket or device."""
        if not statmod.S_ISREG(mode) and statmod.S_IFMT(mode) != 0:
            return await self.namespace.mknod(parent_ino, name, mode, rdev, uid, gid)
        parent = self.table.directory(parent_ino)
        if await self.resolver.resolve(parent, name) is not None:
            raise FsError(errno.EEXIST)
        fh, attr = await self.create(parent_ino, name, mode, os.O_WRONLY, uid, gid)
        try:
            await self.flush(fh)
        finally:
            await self.release(fh)
        return attr

    async def symlink(self, parent_ino: int, name: str, target: bytes, uid: int, gid: int) -> Attr:
        return await self.namespace.symlink(parent_ino, name, target, uid, gid)

    async def readlink(self, ino: int) -> bytes:
        return await self.namespace.readlink(ino)

    async def link(self, ino: int, parent_ino: int, name: str) -> Attr:
        return await self.namespace.link(ino, parent_ino, name)

    async def unlink(self, parent_ino: int, name: str) -> None:
        await self.namespace.unlink(parent_ino, name)

    async def rmdir(self, parent_ino: int, name: str) -> None:
        await self.namespace.rmdir(parent_ino, name)

    async def rename(
        self, old_parent: int, old_name: str, new_parent: int, new_name: str, flags: int = 0
    ) -> None:
        await self.namespace.rename(old_parent, old_name, new_parent, new_name, flags)

    # -- directories (``readdir``) ----------------------------------------------------------

    async def opendir(self, ino: int) -> int:
        return self._new_fh(DirHandle(self.table.directory(ino)))

    async def readdir(self, fh: int, start: int, reply: Callable[[str, Attr, int], bool]) -> None:
        """Call ``reply(name, attr, next)`` for entries from position ``start`` until it
        returns False; each accepted entry's lookup count goes up (readdirplus)."""
        handle = self._handles.get(fh)
        if not isinstance(handle, DirHandle):
            raise FsError(errno.EBADF)
        await self.dir_reader.readdir(handle, start, reply)

    def dot_entries(self, fh: int) -> tuple[Attr, Attr]:
        """The attributes of "." and ".." of the directory open as ``fh`` (the root's
        ".." is itself)."""
        handle = self._handles.get(fh)
        if not isinstance(handle, DirHandle):
            raise FsError(errno.EBADF)
        node = handle.node
        return self.table.attr(node), self.table.attr(self.table.by_ino.get(node.parent, node))

    async def releasedir(self, fh: int) -> None:
        handle = self._handles.get(fh)
        if isinstance(handle, DirHandle):  # a file's handle is release()'s business
            del self._handles[fh]
            handle.closed = True  # stops its read-ahead

    # -- xattrs (``metadata``) --------------------------------------------------------------

    async def listxattr(self, ino: int) -> list[str]:
        return await self.metadata.listxattr(ino)

    async def getxattr(self, ino: int, name: str) -> bytes:
        return await self.metadata.getxattr(ino, name)

    async def setxattr(self, ino: int, name: str, value: bytes) -> None:
        await self.metadata.setxattr(ino, name, value)

    async def removexattr(self, ino: int, name: str) -> None:
        await self.metadata.removexattr(ino, name)

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
