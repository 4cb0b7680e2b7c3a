"""The pyfuse3 ``Operations``: kernel requests to ``FsCore`` calls and back.

Nothing is decided here. Names arrive as bytes and are decoded with
``os.fsdecode`` (undecodable bytes survive as surrogates, which the core refuses
with ``EINVAL`` when they would become a key). ``FsError`` becomes ``FUSEError``;
a store error that escaped the core is mapped by ``errno_for``; anything else is
logged with its traceback and returned as ``EIO``, because a handler must never
raise anything but ``FUSEError``.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from datamover.errors import DatamoverError
from datamover_fuse import native
from datamover_fuse.core import FsCore
from datamover_fuse.fserrors import FsError, errno_for, first_leaf
from datamover_fuse.inodes import Attr, SetAttrs
from datamover_fuse.permissions import Caller

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


#: Requests that change nothing a read handle reads. Every other one unbinds the
#: handles ``_native`` answers READs for (native.py), before it runs; the places that
#: change a file's version or contents do too (a refreshed ETag, a local copy, a commit).
_KEEPS_BINDINGS = frozenset(
    {
        "lookup",
        "getattr",
        "readlink",
        "_read",
        "release",
        "opendir",
        "readdir",
        "releasedir",
        "fsyncdir",
        "statfs",
        "getxattr",
        "listxattr",
    }
)


def _translated(
    fn: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    invalidates = fn.__name__ not in _KEEPS_BINDINGS

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            if invalidates:
                native.invalidate()
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as caught:
            # A nursery's group (calls made side by side) is answered as its first.
            e = first_leaf(caught)
            if isinstance(e, pyfuse3.FUSEError):
                raise e from None
            if isinstance(e, FsError):
                if e.errno in (errno.EIO, errno.ENOSPC, errno.EFBIG) and e.reason:
                    log.warning("%s: %s", fn.__name__, e.reason)
                raise pyfuse3.FUSEError(e.errno) from None
            code = errno_for(e)
            if isinstance(e, DatamoverError):
                # The store's failure (after its retries): one line; the traceback
                # with -vv.
                if code == errno.EIO:
                    log.warning("%s failed: %s", fn.__name__, e)
                    log.debug("%s failed", fn.__name__, exc_info=True)
            elif code == errno.EIO:  # not a store's error: a bug, with its traceback
                log.exception("%s failed", fn.__name__)
            raise pyfuse3.FUSEError(code) from None

    return wrapper


def entry(attr: Attr) -> pyfuse3.EntryAttributes:
    e = pyfuse3.EntryAttributes()
    e.st_ino = attr.ino
    e.generation = 0
    e.entry_timeout = attr.entry_ttl
    e.attr_timeout = attr.attr_ttl
    e.st_mode = attr.mode
    e.st_nlink = attr.nlink
    e.st_uid = attr.uid
    e.st_gid = attr.gid
    e.st_rdev = attr.rdev
    e.st_size = attr.size
    e.st_blksize = attr.blksize
    e.st_blocks = attr.blocks
    e.st_atime_ns = attr.atime_ns
    e.st_mtime_ns = attr.mtime_ns
    e.st_ctime_ns = attr.ctime_ns
    return e


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, core: FsCore) -> None:
        super().__init__()
        self.core = core
        core.attrs_changed = self._attrs_changed
        core.rt.name_changed = self._name_changed

    @staticmethod
    def _attrs_changed(inode: int) -> None:
        """The kernel's attributes of ``inode`` are stale: it asks again at its next
        use of them (a ``stat``, an ``lseek(SEEK_END)``, a read past the size it
        knew). Attributes only, never pages: safe inside ``open``, which holds no
        page lock (libfuse's deadlock rule names lookups, getattr, read and write)."""
        try:
            pyfuse3.invalidate_inode(inode, attr_only=True)
        except OSError as e:  # ENOENT: the kernel holds no such inode any more
            log.debug("invalidating the attributes of inode %d: %s", inode, e)

    @staticmethod
    def _name_changed(parent: int, name: str) -> None:
        """The kernel's entry for ``name`` names an inode the name no longer has: it is
        dropped (queued, so safe inside any request), and the next use looks it up."""
        try:
            pyfuse3.invalidate_entry_async(parent, os.fsencode(name), ignore_enoent=True)
        except OSError as e:
            log.debug("invalidating the entry %r of inode %d: %s", name, parent, e)

    @_translated
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        attr = await self.core.lookup(parent_inode, os.fsdecode(name))
        if attr is None:
            negative = pyfuse3.EntryAttributes()
            negative.st_ino = 0
            negative.entry_timeout = self.core.options.negative_ttl
            return negative
        return entry(attr)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        try:
            self.core.forget(list(inode_list))
        except Exception:
            log.exception("forget failed")

    @_translated
    async def getattr(
        self, inode: int, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        return entry(await self.core.getattr(inode))

    @_translated
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        changes = SetAttrs(
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
        )
        caller = Caller.of(ctx.uid, ctx.gid, ctx.pid)
        return entry(await self.core.setattr(inode, changes, fh, caller))

    @_translated
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return await self.core.readlink(inode)

    @_translated
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return entry(
            await self.core.mknod(parent_inode, os.fsdecode(name), mode, rdev, ctx.uid, ctx.gid)
        )

    @_translated
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return entry(await self.core.mkdir(parent_inode, os.fsdecode(name), mode, ctx.uid, ctx.gid))

    @_translated
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.core.unlink(parent_inode, os.fsdecode(name))

    @_translated
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.core.rmdir(parent_inode, os.fsdecode(name))

    @_translated
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return entry(
            await self.core.symlink(parent_inode, os.fsdecode(name), target, ctx.uid, ctx.gid)
        )

    @_translated
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        await self.core.rename(
            parent_inode_old,
            os.fsdecode(name_old),
            parent_inode_new,
            os.fsdecode(name_new),
            flags,
        )

    @_translated
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return entry(await self.core.link(inode, new_parent_inode, os.fsdecode(new_name)))

    @_translated
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        fh, keep = await self.core.open(inode, flags)
        if self.core.options.direct_io and flags & os.O_ACCMODE == os.O_RDONLY:
            return pyfuse3.FileInfo(fh=fh, direct_io=True)  # MountOptions.direct_io
        if flags & os.O_APPEND and flags & os.O_ACCMODE != os.O_RDONLY:
            # Appends bypass the page cache: the mount puts them at the file's end
            # (FsCore.write), so the kernel must not keep them at the offset it chose.
            return pyfuse3.FileInfo(fh=fh, direct_io=True)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    @_translated
    async def create(
        self,
        parent_inode: int,
        name: bytes,
        mode: int,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        fh, attr = await self.core.create(
            parent_inode, os.fsdecode(name), mode, flags, ctx.uid, ctx.gid
        )
        return pyfuse3.FileInfo(fh=fh), entry(attr)

    # pyfuse3 replies from any buffer (PyObject_GetBuffer); its stub says bytes.
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:  # type: ignore[override]
        try:  # a hit in the read cache: the fewest frames per request
            data = self.core.read_hit(fh, off, size)
        except Exception:  # the full path below answers, errors included
            data = None
        if data is not None:
            return data
        return await self._read(fh, off, size)

    @_translated
    async def _read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        return await self.core.read(fh, off, size)

    @_translated
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.core.write(fh, off, buf)

    @_translated
    async def flush(self, fh: int) -> None:
        await self.core.flush(fh)

    @_translated
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.core.fsync(fh)

    @_translated
    async def release(self, fh: int) -> None:
        await self.core.release(fh)

    @_translated
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return await self.core.opendir(inode)

    @_translated
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        def reply(name: str, attr: Attr, next_id: int) -> bool:
            return bool(pyfuse3.readdir_reply(token, os.fsencode(name), entry(attr), next_id))

        # "." and ".." come first, as ext4, tmpfs and s3fs list them: code that skips
        # the first two entries must not skip two files. Positions 0 and 1; the
        # core's entries follow from 2. (The kernel takes no lookup of either from a
        # READDIRPLUS reply, so they count none.)
        if start_id < 2:
            dots = self.core.dot_entries(fh)
            for position in range(start_id, 2):
                if not reply("." * (position + 1), dots[position], position + 1):
                    return
            start_id = 2
        await self.core.readdir(
            fh, start_id - 2, lambda name, attr, after: reply(name, attr, after + 2)
        )

    @_translated
    async def releasedir(self, fh: int) -> None:
        await self.core.releasedir(fh)

    @_translated
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None

    @_translated
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        for name, value in self.core.statfs().items():
            setattr(data, name, value)
        return data

    @_translated
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        return await self.core.getxattr(inode, os.fsdecode(name))

    @_translated
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return [os.fsencode(n) for n in await self.core.listxattr(inode)]

    @_translated
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        await self.core.setxattr(inode, os.fsdecode(name), value)

    @_translated
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.core.removexattr(inode, os.fsdecode(name))
