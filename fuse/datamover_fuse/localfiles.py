"""An inode's write state (its ``LocalFile``) and its commit to the store.

The file calls (open, write, flush, release), truncate and rename share these; how
a ``LocalFile`` stages its bytes and uploads them is ``datamover_fuse.writes``. A
commit updates what the mount knows (the inode, the parent's listing), so the mount
sees its own writes at once.
"""

from __future__ import annotations

import errno
import logging

from datamover.stores.base import ObjectInfo
from datamover_fuse import native
from datamover_fuse.fserrors import FsError
from datamover_fuse.inodes import Inode, InodeTable, posix_meta, set_version
from datamover_fuse.listing import DirCache
from datamover_fuse.runtime import Runtime
from datamover_fuse.writes import LocalFile, WriteManager

log = logging.getLogger(__name__)


class LocalFiles:
    """Creates, commits and drops the ``LocalFile`` of inodes."""

    def __init__(
        self, rt: Runtime, writes: WriteManager, table: InodeTable, dirs: DirCache
    ) -> None:
        self.rt = rt
        self.writes = writes
        self.table = table
        self.dirs = dirs

    def get(self, node: Inode, *, truncate: bool) -> LocalFile:
        """The node's write state, created on first need."""
        if node.local is not None:
            return node.local
        fresh = truncate or not node.remote
        lf = self.writes.new_file(
            node.key,
            lambda: posix_meta(node),
            size=0 if fresh else node.size,
            base_loaded=fresh,
            streamable=fresh,
        )
        if fresh:
            lf.dirty = True
        node.local = lf
        native.invalidate()  # reads of the node now go through the local copy
        return lf

    async def drop(self, node: Inode) -> None:
        lf = node.local
        if lf is None or lf.handles > 0:
            return
        node.local = None
        await self.writes.discard(lf)
        self.table.maybe_drop(node)

    async def commit(self, node: Inode) -> None:
        lf = node.local
        if lf is None:
            return
        async with lf.lock:
            if lf.unlinked or not lf.dirty:
                return
            if lf.failed:
                raise FsError(lf.failed_errno, lf.failed)
            try:
                info = await self.writes.commit(lf, posix_meta(node))
            except Exception as e:
                lf.failed = f"upload of {lf.key} failed: {e}"
                log.error("%s", lf.failed)
                raise FsError(errno.EIO, lf.failed) from e
            lf.dirty = False
        self._committed(node, info, lf.size)

    def _committed(self, node: Inode, info: ObjectInfo, size: int) -> None:
        native.invalidate()
        node.remote = True
        node.stored += 1
        node.size = size
        set_version(node, info)
        node.metadata = dict(info.metadata)
        node.exact = True
        node.expires = self.rt.clock() + self.rt.options.attr_ttl
        parent = self.table.parent_of(node)
        if parent is not None:
            self.dirs.forget_local(parent, node.name)
            self.dirs.add(parent, node.name, ObjectInfo(key=node.key, size=size, etag=node.etag))
