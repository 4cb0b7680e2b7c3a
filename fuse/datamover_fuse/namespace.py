"""Names: mkdir, rmdir, unlink, rename, symlink, readlink, link (``Namespace``).

A directory is made explicit by a zero-byte ``dir/`` marker carrying its mode,
owner and mtime; a symlink is an object whose body is the target (as s3fs writes
them). A rename is a copy and a delete per object: a directory's is not atomic
(docs/SEMANTICS.md). Hard links are refused. Every change updates what the mount
knows (inodes, listings, negative entries) so the mount sees it at once.
"""

from __future__ import annotations

import errno
import stat as statmod

import trio

from datamover.posixmeta import PosixAttrs
from datamover.stores.base import ObjectInfo
from datamover_fuse.fserrors import FsError, check_writable, errno_for
from datamover_fuse.inodes import Attr, Inode, InodeTable, Kind, child_key
from datamover_fuse.listing import LIST_BATCH, DirCache, DirListing, take
from datamover_fuse.localfiles import LocalFiles
from datamover_fuse.lookup import Resolver
from datamover_fuse.metadata import Metadata
from datamover_fuse.runtime import Runtime
from datamover_fuse.writes import WriteManager


class Namespace:
    """The calls that add, remove or move names."""

    def __init__(
        self,
        rt: Runtime,
        writes: WriteManager,
        table: InodeTable,
        dirs: DirCache,
        resolver: Resolver,
        local: LocalFiles,
        metadata: Metadata,
    ) -> None:
        self.rt = rt
        self.options = rt.options
        self.store = rt.store
        self.writes = writes
        self.table = table
        self.dirs = dirs
        self.resolver = resolver
        self.local = local
        self.metadata = metadata

    def _forget_local_name(self, node: Inode) -> None:
        self.dirs.forget_local(self.table.parent_of(node), node.name)

    async def mkdir(self, parent_ino: int, name: str, mode: int, uid: int, gid: int) -> Attr:
        check_writable(self.options)
        parent = self.table.directory(parent_ino)
        if await self.resolver.resolve(parent, name) is not None:
            raise FsError(errno.EEXIST)
        key = child_key(parent, name) + "/"
        now = self.rt.wall_ns()
        meta = PosixAttrs(statmod.S_IFDIR | statmod.S_IMODE(mode), uid, gid, now).to_metadata()
        try:
            info = await self.rt.call(self.rt.fsops.make_dir, key, meta)
        except Exception as e:
            raise FsError(errno_for(e), str(e)) from e
        # The directory exists either way; where markers can't carry metadata its mode
        # lasts as long as this mount (docs/SEMANTICS.md).
        await self.metadata.marker_metadata_kept(key)
        node = self.table.dir_node(
            parent, name, ObjectInfo(key=key, size=0, metadata=meta), exact=True
        )
        node.marker = True
        node.metadata = dict(info.metadata or meta)
        node.lookups += 1
        self.dirs.negative.pop(key[:-1])
        empty = DirListing()
        empty.complete = True
        self.dirs.listings.put(key, empty)
        self.dirs.add(parent, name, ObjectInfo(key=key, size=0, is_dir=True))
        return self.table.attr(node)

    async def symlink(self, parent_ino: int, name: str, target: bytes, uid: int, gid: int) -> Attr:
        """A symlink is an object whose body is the target and whose ``mode`` metadata
        has ``S_IFLNK``, as s3fs writes them."""
        check_writable(self.options)
        parent = self.table.directory(parent_ino)
        if await self.resolver.resolve(parent, name) is not None:
            raise FsError(errno.EEXIST)
        key = child_key(parent, name)
        now = self.rt.wall_ns()
        meta = PosixAttrs(statmod.S_IFLNK | 0o777, uid, gid, now).to_metadata()
        try:
            info = await self.rt.call(self.store.put, key, target, metadata=meta)
        except Exception as e:
            raise FsError(errno_for(e), str(e)) from e
        node = self.table.file_node(
            parent,
            name,
            ObjectInfo(key=key, size=len(target), etag=info.etag, metadata=meta),
            exact=True,
        )
        node.target = target
        node.lookups += 1
        self.dirs.negative.pop(key)
        self.dirs.add(parent, name, ObjectInfo(key=key, size=len(target), metadata=meta))
        return self.table.attr(node)

    async def readlink(self, ino: int) -> bytes:
        node = self.table.node(ino)
        if node.kind is not Kind.LINK:
            raise FsError(errno.EINVAL)
        if node.target is None:
            node.target = await self.rt.call(self.store.read, node.key)
        return node.target

    async def link(self, ino: int, parent_ino: int, name: str) -> Attr:
        raise FsError(errno.EPERM, "hard links are not supported")

    async def unlink(self, parent_ino: int, name: str) -> None:
        check_writable(self.options)
        parent = self.table.directory(parent_ino)
        node = await self.resolver.resolve(parent, name)
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
        self.dirs.remove(parent, name)
        self.dirs.negative.put(node.key, True)

    async def _is_empty(self, node: Inode) -> bool:
        prefix = node.key
        if self.dirs.has_local_under(prefix):
            return False
        return not await self.rt.call(self.rt.fsops.has_child, prefix)

    async def rmdir(self, parent_ino: int, name: str) -> None:
        check_writable(self.options)
        parent = self.table.directory(parent_ino)
        node = await self.resolver.resolve(parent, name)
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
        self.dirs.listings.pop(node.key)
        self.dirs.remove(parent, name)
        self.dirs.negative.put(node.key[:-1], True)

    async def rename(
        self, old_parent: int, old_name: str, new_parent: int, new_name: str, flags: int = 0
    ) -> None:
        check_writable(self.options)
        if flags & 2:  # RENAME_EXCHANGE
            raise FsError(errno.EINVAL, "RENAME_EXCHANGE is not supported")
        src_parent = self.table.directory(old_parent)
        dst_parent = self.table.directory(new_parent)
        src = await self.resolver.resolve(src_parent, old_name)
        if src is None:
            raise FsError(errno.ENOENT)
        dst = await self.resolver.resolve(dst_parent, new_name)
        if dst is src:
            return
        if dst is not None and flags & 1:  # RENAME_NOREPLACE
            raise FsError(errno.EEXIST)
        new_key = child_key(dst_parent, new_name)
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
            self.dirs.add_local(dst_parent, new_name)
        self.table.rekey(
            src, new_key + ("/" if src.kind is Kind.DIR else ""), dst_parent.ino, new_name
        )
        src.index = -1
        self.dirs.remove(src_parent, old_name)
        if src.remote:
            self.dirs.add(
                dst_parent,
                new_name,
                ObjectInfo(key=src.key, size=src.size, etag=src.etag, is_dir=src.kind is Kind.DIR),
            )
        self.dirs.negative.pop(new_key)
        self.dirs.negative.put(src_parent.key + old_name, True)

    async def _rename_file(self, src: Inode, new_key: str) -> None:
        lf = src.local
        if lf is not None:
            if lf.stream is not None:
                if lf.punched:
                    raise FsError(errno.EBUSY, "renaming a file larger than the cache while open")
                async with lf.lock:
                    self.writes._forget_stream(lf)
            if src.remote and lf.dirty:
                await self.local.commit(src)
            lf.key = new_key
        if not src.remote:
            return
        if not src.exact:
            await self.resolver.refresh_file(src)
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
        self.dirs.moved(old_prefix, new_prefix)

    async def _move_tree(self, old_prefix: str, new_prefix: str) -> None:
        rt = self.rt
        source = iter(rt.store.list(old_prefix, recursive=False))
        subdirs: list[str] = []
        while batch := await rt.call(take, source, LIST_BATCH):
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
