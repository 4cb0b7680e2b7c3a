"""Names: mkdir, mknod, symlink, link, unlink, rmdir, rename, readlink (``Namespace``).

A directory is made explicit by ``FsOps.make_dir`` (a ``dir/`` marker, or its
``DIR_META_NAME`` object where markers drop metadata) carrying its mode, owner and
times; a symlink is an object whose body is the target, a FIFO, socket or device a
zero-byte object whose ``mode`` (and ``rdev``) metadata say what it is (as s3fs
writes them). A rename is a copy and a delete per object: a directory's is not
atomic (docs/SEMANTICS.md). Every change updates what the mount knows (inodes,
listings, negative entries, the parent's times) so the mount sees it at once.

**Hard links.** ``link`` writes a zero-byte *marker* at the new name whose
``datamover-hardlink`` metadata names the file's object (as the engine stores the
hard links of a tree), and adds the marker's key to the file's ``datamover-links``
metadata, so every name shows the link count and one inode. Unlinking the object's
own name while markers remain moves the object to one of them (a copy) and points
the others at it; renaming either kind of name rewrites what names it. The list is
checked against the markers before it is used (a marker another tool removed or
moved is dropped from it). A link that would not fit the store's metadata limit is
refused with EMLINK; a store that can't hold markers (a POSIX tree) refuses with
EPERM.
"""

from __future__ import annotations

import errno
import logging
import stat as statmod
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import trio

from datamover.posixmeta import CTIME, GID, MODE, RDEV, UID, PosixAttrs, format_mtime_ns
from datamover.stores.base import ObjectInfo, is_dir_meta
from datamover_fuse.fserrors import FsError, check_writable, errno_for
from datamover_fuse.inodes import (
    KEY_MAX,
    LINKS_KEY,
    TARGET_MAX,
    Attr,
    Inode,
    InodeTable,
    Kind,
    child_key,
    format_links,
    link_target,
    new_key,
    parse_links,
    posix_meta,
    set_version,
)
from datamover_fuse.listing import LIST_BATCH, DirCache, DirListing, take
from datamover_fuse.localfiles import LocalFiles
from datamover_fuse.lookup import Resolver
from datamover_fuse.metadata import Metadata
from datamover_fuse.permissions import new_owner
from datamover_fuse.runtime import Runtime
from datamover_fuse.writes import WriteManager

log = logging.getLogger(__name__)

T = TypeVar("T")

_DEVICES = (statmod.S_IFCHR, statmod.S_IFBLK)
_SPECIAL = (statmod.S_IFIFO, statmod.S_IFSOCK, *_DEVICES)


def _new_meta(mode: int, uid: int, gid: int, now: int, rdev: int = 0) -> dict[str, str]:
    meta = PosixAttrs(mode, uid, gid, now).to_metadata()
    meta[CTIME] = format_mtime_ns(now)
    if rdev:
        meta[RDEV] = str(rdev)
    return meta


def _rebase(key: str, old_prefix: str, new_prefix: str) -> str:
    return new_prefix + key[len(old_prefix) :] if key.startswith(old_prefix) else key


def _marker_meta(node: Inode) -> dict[str, str]:
    """What a hard-link marker carries besides its target: the file's mode and
    owner when it was made, for tools that don't follow markers (s3fs shows them)."""
    meta = posix_meta(node)
    return {k: meta[k] for k in (MODE, UID, GID)}


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

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A store call (on a worker thread) whose errors become the errno they mean."""
        try:
            return await self.rt.call(fn, *args, **kwargs)
        except FsError:
            raise
        except Exception as e:
            raise FsError(errno_for(e), str(e)) from e

    def _forget_local_name(self, node: Inode) -> None:
        self.dirs.forget_local(self.table.parent_of(node), node.name)

    def _touched(self, *parents: Inode) -> None:
        now = self.rt.wall_ns()
        for parent in parents:
            self.table.touch_dir(parent, now)

    def _added(self, parent: Inode, name: str, key: str, info: ObjectInfo) -> None:
        self.dirs.negative.pop(key)
        self.dirs.add(parent, name, info)
        self._touched(parent)

    async def new_key(self, parent: Inode, name: str) -> str:
        """The key for a name about to be made in ``parent`` (``inodes.new_key``), one
        the store holds as it is: ``Store.refused_key`` names the others (EINVAL), e.g.
        a name with a backslash where the store would turn it into a slash."""
        key = new_key(parent, name)
        why = await self._call(self.store.refused_key, key)
        if why is not None:
            raise FsError(errno.EINVAL, why)
        return key

    async def _absent(self, parent: Inode, name: str) -> str:
        """The key for a new ``name`` in ``parent``; EEXIST when something has it."""
        key = await self.new_key(parent, name)
        if await self.resolver.resolve(parent, name) is not None:
            raise FsError(errno.EEXIST)
        return key

    # -- making names ---------------------------------------------------------------------

    async def mkdir(self, parent_ino: int, name: str, mode: int, uid: int, gid: int) -> Attr:
        check_writable(self.options)
        parent = self.table.directory(parent_ino)
        key = await self._absent(parent, name) + "/"
        gid, mode = new_owner(parent, mode, gid, is_dir=True)
        now = self.rt.wall_ns()
        meta = _new_meta(statmod.S_IFDIR | statmod.S_IMODE(mode), uid, gid, now)
        info = await self._call(self.rt.fsops.make_dir, key, meta)
        node = self.table.dir_node(
            parent, name, ObjectInfo(key=key, size=0, metadata=meta), exact=True
        )
        node.marker = True
        node.metadata = dict(info.metadata or meta)
        if not info.metadata:  # the store can't keep this one's: the mount does
            self.table.kept_meta.put(key, meta)
        node.subdirs = 0
        node.lookups += 1
        self.dirs.negative.pop(key[:-1])
        empty = DirListing()
        empty.complete = True
        self.dirs.listings.put(key, empty)
        self._added(parent, name, key[:-1], ObjectInfo(key=key, size=0, is_dir=True))
        if parent.subdirs is not None:
            parent.subdirs += 1
        return self.table.attr(node)

    async def mknod(
        self, parent_ino: int, name: str, mode: int, rdev: int, uid: int, gid: int
    ) -> Attr:
        """A FIFO, socket or device node (a regular file is ``FsCore.create``'s)."""
        check_writable(self.options)
        kind = statmod.S_IFMT(mode)
        if kind not in _SPECIAL:
            raise FsError(errno.EINVAL, f"mknod of type {kind:o}")
        parent = self.table.directory(parent_ino)
        key = await self._absent(parent, name)
        gid, mode = new_owner(parent, mode, gid, is_dir=False)
        now = self.rt.wall_ns()
        rdev = rdev if kind in _DEVICES else 0
        meta = _new_meta(kind | statmod.S_IMODE(mode), uid, gid, now, rdev)
        info = await self._call(self.rt.fsops.make_special, key, meta)
        stored = ObjectInfo(key=key, size=0, etag=info.etag, metadata=meta)
        node = self.table.file_node(parent, name, stored, exact=True)
        node.lookups += 1
        self._added(parent, name, key, stored)
        return self.table.attr(node)

    async def symlink(self, parent_ino: int, name: str, target: bytes, uid: int, gid: int) -> Attr:
        """A symlink is an object whose body is the target and whose ``mode`` metadata
        has ``S_IFLNK``, as s3fs writes them."""
        check_writable(self.options)
        if len(target) > TARGET_MAX:
            raise FsError(errno.ENAMETOOLONG)
        parent = self.table.directory(parent_ino)
        key = await self._absent(parent, name)
        gid, _ = new_owner(parent, 0, gid, is_dir=False)
        meta = _new_meta(statmod.S_IFLNK | 0o777, uid, gid, self.rt.wall_ns())
        info = await self._call(self.store.put, key, target, metadata=meta)
        stored = ObjectInfo(key=key, size=len(target), etag=info.etag, metadata=meta)
        node = self.table.file_node(parent, name, stored, exact=True)
        node.target = target
        node.lookups += 1
        self._added(parent, name, key, stored)
        return self.table.attr(node)

    async def readlink(self, ino: int) -> bytes:
        node = self.table.node(ino)
        if node.kind is not Kind.LINK:
            raise FsError(errno.EINVAL)
        if node.target is None:
            # One byte more than a target may have: a longer object is no symlink.
            data = await self._call(self.store.read, node.key, 0, TARGET_MAX + 1)
            if len(data) > TARGET_MAX:
                raise FsError(errno.ENAMETOOLONG, f"{node.key}: symlink target too long")
            node.target = bytes(data)
        return node.target

    # -- hard links -------------------------------------------------------------------------

    async def link(self, ino: int, parent_ino: int, name: str) -> Attr:
        check_writable(self.options)
        node = self.table.node(ino)
        if node.kind is Kind.DIR:
            raise FsError(errno.EPERM, "hard links to directories")
        parent = self.table.directory(parent_ino)
        key = await self._absent(parent, name)
        if node.detached and not node.links:
            raise FsError(errno.ENOENT, "the file was removed")
        if node.local is not None and (node.local.dirty or not node.remote):
            await self.local.commit(node)  # a link names a stored object
        await self._check_links(node)
        meta = {**node.metadata, **posix_meta(node), LINKS_KEY: format_links(node.links | {key})}
        if sum(len(k) + len(v) for k, v in meta.items()) > self.store.features.max_metadata_bytes:
            raise FsError(errno.EMLINK, "no room for another link in the file's metadata")
        try:
            info = await self.rt.call(self.rt.fsops.make_link, key, node.key, _marker_meta(node))
        except Exception as e:
            code = errno_for(e)
            raise FsError(errno.EPERM if code == errno.ENOTSUP else code, str(e)) from e
        old_ctime = node.ctime_ns
        self.table.alias(node, key)
        node.ctime_ns = self.rt.wall_ns()
        try:
            await self.metadata.store(node)
        except FsError:
            self.table.unalias(node, key)
            node.ctime_ns = old_ctime
            await self._quietly_delete(key)
            raise
        node.lookups += 1
        self._added(parent, name, key, ObjectInfo(key=key, size=0, etag=info.etag))
        return self.table.attr(node)

    async def _check_links(self, node: Inode) -> None:
        """Drop from ``node.links`` the markers that no longer name it (another tool
        removed or moved them): the list is a hint, the markers are the truth."""
        if not node.links:
            return
        stale: list[str] = []

        async def check(key: str) -> None:
            try:
                info = await self.resolver.stat(key)
            except Exception:
                return  # unknown: kept
            if info is None or link_target(info) != node.key:
                stale.append(key)

        async with trio.open_nursery() as nursery:
            for key in sorted(node.links):
                nursery.start_soon(check, key)
        for key in stale:
            self.table.unalias(node, key)

    async def _quietly_delete(self, key: str) -> None:
        try:
            await self.rt.call(self.store.delete, key)
        except Exception as e:
            log.warning("%s: not removed after a failed link: %s", key, e)

    async def _point_links(self, keys: Iterable[str], target: str, node: Inode) -> None:
        """(Re)write the markers ``keys`` to name ``target``."""
        meta = _marker_meta(node)
        async with trio.open_nursery() as nursery:
            for key in sorted(keys):
                nursery.start_soon(self._call, self.rt.fsops.make_link, key, target, meta)

    # -- removing names ---------------------------------------------------------------------

    async def unlink(self, parent_ino: int, name: str) -> None:
        check_writable(self.options)
        parent = self.table.directory(parent_ino)
        node = await self.resolver.resolve(parent, name)
        if node is None:
            raise FsError(errno.ENOENT)
        if node.kind is Kind.DIR:
            raise FsError(errno.EISDIR)
        key = parent.key + name
        await self._remove_name(key, node)
        self.dirs.remove(parent, name)
        self.dirs.negative.put(key, True)
        self._touched(parent)

    async def _remove_name(self, key: str, node: Inode) -> None:
        """Take the name ``key`` away from ``node``: a marker, the object (its links
        then keep the file), or the last name (the file goes)."""
        if key != node.key:  # a hard link's marker
            await self._call(self.store.delete, key)
            self.table.unalias(node, key)
            node.ctime_ns = self.rt.wall_ns()
            await self._store_links(node)
            return
        if node.links:
            await self._check_links(node)
        if node.links:
            await self._promote(node)
            return
        if node.local is not None:
            node.local.unlinked = True
            await self.writes.drop_stream(node.local)
        if node.remote:
            await self._call(self.store.delete, node.key)
        self._forget_local_name(node)
        self.table.detach(node)

    async def _store_links(self, node: Inode) -> None:
        """The file's link list (and ctime) changed: store it on its object. A failure
        is logged, not returned: the name is already gone, and the list is a hint
        (``_check_links``)."""
        if node.detached or not node.remote:
            return
        try:
            await self.metadata.store(node)
        except FsError as e:
            log.warning("%s: link list not updated: %s", node.key, e.reason)

    async def _promote(self, node: Inode) -> None:
        """The object's own name goes while links remain: move the object to one of
        its markers, and point the other markers at it."""
        if node.local is not None:
            if node.local.dirty and node.remote:
                await self.local.commit(node)
            await self.writes.drop_stream(node.local)
        heir = min(node.links)
        old_key = node.key
        rest = node.links - {heir}
        node.ctime_ns = self.rt.wall_ns()
        meta = {**node.metadata, **posix_meta(node), LINKS_KEY: format_links(rest)}
        if not rest:
            del meta[LINKS_KEY]
        info = ObjectInfo(
            key=old_key,
            size=node.size,
            etag=node.etag,
            version=node.generation,
            metadata=node.metadata,
        )
        copied = await self._call(self.rt.fsops.copy, info, heir, meta)
        if rest:
            await self._point_links(rest, heir, node)
        await self._call(self.store.delete, old_key)
        self._forget_local_name(node)
        holder = self.table.dir_holding(heir)
        self.table.unalias(node, heir)
        self.table.rekey(node, heir, holder.ino if holder else 0, heir.rsplit("/", 1)[-1])
        node.metadata = meta
        set_version(node, copied)  # open handles go on reading it at its new key
        if node.local is not None:
            node.local.key = heir

    async def _is_empty(self, node: Inode) -> bool:
        prefix = node.key
        if self.dirs.has_local_under(prefix):
            return False
        return not await self._call(self.rt.fsops.has_child, prefix)

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
        await self._call(self.rt.fsops.remove_dir, node.key)
        self._removed_dir(parent, name, node)

    def _removed_dir(self, parent: Inode, name: str, node: Inode) -> None:
        self.table.detach(node)
        self.dirs.listings.pop(node.key)
        self.dirs.remove(parent, name)
        self.dirs.negative.put(node.key[:-1], True)
        self.table.dir_times.pop(node.key)
        if parent.subdirs:
            parent.subdirs -= 1
        self._touched(parent)

    # -- rename ---------------------------------------------------------------------------

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
        await self.new_key(dst_parent, new_name)  # the reserved name is never a target
        dst = await self.resolver.resolve(dst_parent, new_name)
        src_key = src_parent.key + old_name
        dst_key = child_key(dst_parent, new_name)
        if dst is src:
            return  # the same name, or two hard links of one file: POSIX does nothing
        if dst is not None and flags & 1:  # RENAME_NOREPLACE
            raise FsError(errno.EEXIST)
        if src.kind is Kind.DIR:
            await self._rename_dir_to(src, src_parent, old_name, dst, dst_parent, new_name)
        else:
            if dst is not None and dst.kind is Kind.DIR:
                raise FsError(errno.EISDIR)
            await self._rename_file(src, src_key, dst, dst_key, dst_parent, new_name)
        self.dirs.remove(src_parent, old_name)
        self.dirs.negative.pop(dst_key)
        self.dirs.negative.put(src_key, True)
        self._touched(src_parent, dst_parent)

    async def _rename_dir_to(
        self,
        src: Inode,
        src_parent: Inode,
        old_name: str,
        dst: Inode | None,
        dst_parent: Inode,
        new_name: str,
    ) -> None:
        new_prefix = child_key(dst_parent, new_name) + "/"
        if dst is not None:
            if dst.kind is not Kind.DIR:
                raise FsError(errno.ENOTDIR)
            if not await self._is_empty(dst):
                raise FsError(errno.ENOTEMPTY)
        if new_prefix.startswith(src.key):
            raise FsError(errno.EINVAL, "a directory can't move inside itself")
        await self._check_key_lengths(src.key, new_prefix)
        if dst is not None:
            await self._call(self.rt.fsops.remove_dir, dst.key)
            self._removed_dir(dst_parent, new_name, dst)
        await self._rename_dir(src, new_prefix)
        if not src.remote:
            self._forget_local_name(src)
            self.dirs.add_local(dst_parent, new_name)
        self.table.rekey(src, new_prefix, dst_parent.ino, new_name)
        src.index = -1
        if src_parent.subdirs:
            src_parent.subdirs -= 1
        if dst_parent.subdirs is not None:
            dst_parent.subdirs += 1
        self.dirs.add(dst_parent, new_name, ObjectInfo(key=src.key, size=0, is_dir=True))

    async def _check_key_lengths(self, old_prefix: str, new_prefix: str) -> None:
        """ENAMETOOLONG before anything moves when a key under the directory would be
        too long at its new place (only a longer prefix can make one)."""
        grow = len(new_prefix.encode()) - len(old_prefix.encode())
        if grow <= 0:
            return
        source = iter(self.store.list(old_prefix, recursive=True))
        while batch := await self._call(take, source, LIST_BATCH):
            for info in batch:
                if len(info.key.encode()) + grow > KEY_MAX:
                    raise FsError(errno.ENAMETOOLONG, f"{info.key}: too long at its new place")

    async def _rename_file(
        self,
        src: Inode,
        src_key: str,
        dst: Inode | None,
        dst_key: str,
        dst_parent: Inode,
        new_name: str,
    ) -> None:
        replace_plain = dst is not None and dst.key == dst_key and not dst.links
        if dst is not None and not replace_plain:
            # The name is another file's link (or its object, with links): take it away
            # first. Not atomic; a plain file is replaced atomically by the copy below.
            await self._remove_name(dst_key, dst)
        if src_key != src.key:
            await self._move_link(src, src_key, dst_key)
            self.dirs.add(dst_parent, new_name, ObjectInfo(key=dst_key, size=0))
        else:
            await self._move_object(src, dst_key, dst_parent, new_name)
        if replace_plain:
            assert dst is not None
            if dst.local is not None:
                dst.local.unlinked = True
            self._forget_local_name(dst)
            self.table.detach(dst)

    async def _move_link(self, node: Inode, src_key: str, dst_key: str) -> None:
        """One of a file's markers moves: a marker at the new name, the list updated."""
        await self._call(self.rt.fsops.make_link, dst_key, node.key, _marker_meta(node))
        await self._call(self.store.delete, src_key)
        self.table.unalias(node, src_key)
        self.table.alias(node, dst_key)
        node.ctime_ns = self.rt.wall_ns()
        await self._store_links(node)

    async def _move_object(self, src: Inode, dst_key: str, dst_parent: Inode, name: str) -> None:
        lf = src.local
        if lf is not None:
            if lf.stream is not None:
                if lf.punched:
                    raise FsError(errno.EBUSY, "renaming a file larger than the cache while open")
                await self.writes.drop_stream(lf)
            if src.remote and lf.dirty:
                await self.local.commit(src)
            lf.key = dst_key
        if src.remote:
            if not src.exact:
                try:
                    await self.resolver.refresh_file(src)
                except FsError:
                    if lf is not None:
                        lf.key = src.key
                    raise
            src.ctime_ns = self.rt.wall_ns()
            meta = {**src.metadata, **posix_meta(src)}
            info = ObjectInfo(
                key=src.key,
                size=src.size,
                etag=src.etag,
                version=src.generation,
                metadata=src.metadata,
            )
            copied: ObjectInfo | None = None
            try:
                renamed = await self._call(self.rt.fsops.rename_file, src.key, dst_key)
                if not renamed:
                    copied = await self._call(self.rt.fsops.copy, info, dst_key, meta)
                if src.links:
                    await self._point_links(src.links, dst_key, src)
                if not renamed:
                    await self._call(self.store.delete, src.key)
            except FsError:
                if lf is not None:
                    lf.key = src.key
                raise
            src.metadata = meta
            if not renamed:  # a copy is another version: open handles read it now
                set_version(src, copied)
        else:
            self._forget_local_name(src)
            self.dirs.add_local(dst_parent, name)
        self.table.rekey(src, dst_key, dst_parent.ino, name)
        src.index = -1
        if src.remote:
            self.dirs.add(dst_parent, name, ObjectInfo(key=dst_key, size=src.size, etag=src.etag))

    async def _rename_dir(self, src: Inode, new_prefix: str) -> None:
        """Copy every object under the prefix, then delete the originals: not atomic
        (see docs/SEMANTICS.md). Markers are rewritten at the new place, hard links
        under it re-pointed."""
        old_prefix = src.key
        rt = self.rt
        src.ctime_ns = rt.wall_ns()
        top = {**src.metadata, **posix_meta(src)}
        moved_links: list[tuple[str, str, str]] = []
        try:
            if not await rt.call(rt.fsops.rename_dir, old_prefix, new_prefix):
                await self._move_tree(old_prefix, new_prefix, top, moved_links)
        except FsError:
            raise
        except Exception as e:
            raise FsError(errno_for(e), str(e)) from e
        src.metadata = top
        affected = {
            id(node): node
            for node in self.table.by_key.values()
            if node is not src
            and (
                node.key.startswith(old_prefix) or any(k.startswith(old_prefix) for k in node.links)
            )
        }
        for node in affected.values():
            await self._rebase_node(node, old_prefix, new_prefix)
        await self._fix_moved_links(moved_links, old_prefix, new_prefix)
        self.dirs.moved(old_prefix, new_prefix)

    async def _rebase_node(self, node: Inode, old_prefix: str, new_prefix: str) -> None:
        """An inode the mount knows had its object or links under a moved directory:
        its keys follow, its markers name its new key, its list names theirs."""
        links = {_rebase(k, old_prefix, new_prefix) for k in node.links}
        new = _rebase(node.key, old_prefix, new_prefix)
        links_moved = links != node.links
        for key in list(node.links):
            self.table.unalias(node, key)
        if new != node.key:
            self.table.rekey(node, new, node.parent, node.name)
            if node.local is not None:
                await self.writes.drop_stream(node.local)
                node.local.key = new
        for key in links:
            self.table.alias(node, key)
        if node.kind is Kind.DIR or not node.links:
            return
        try:
            await self._point_links(node.links, node.key, node)
        except FsError as e:
            log.warning("%s: hard links not re-pointed: %s", node.key, e.reason)
        if links_moved:
            await self._store_links(node)

    async def _fix_moved_links(
        self, moved: list[tuple[str, str, str]], old_prefix: str, new_prefix: str
    ) -> None:
        """Markers found while moving a tree whose file the mount does not know: point
        each at its file's new key, and rewrite the file's list."""
        by_target: dict[str, list[tuple[str, str]]] = {}
        for old_marker, new_marker, target in moved:
            known = self.table.at(_rebase(target, old_prefix, new_prefix))
            if known is not None and new_marker in known.links:
                continue  # done by _rebase_node
            by_target.setdefault(target, []).append((old_marker, new_marker))
        for target, pairs in by_target.items():
            new_target = _rebase(target, old_prefix, new_prefix)
            try:
                for _, new_marker in pairs:
                    found = await self.resolver.stat(new_marker)
                    meta = dict(found.metadata) if found is not None else {}
                    meta = {k: v for k, v in meta.items() if k in (MODE, UID, GID)}
                    await self._call(self.rt.fsops.make_link, new_marker, new_target, meta)
                info = await self.resolver.stat(new_target)
                if info is None:
                    continue
                links = parse_links(dict(info.metadata))
                links -= {old for old, _ in pairs}
                links |= {new for _, new in pairs}
                meta = {**info.metadata, LINKS_KEY: format_links(links)}
                await self._call(self.rt.fsops.update_metadata, info, meta)
            except FsError as e:
                log.warning("%s: hard links not re-pointed: %s", new_target, e.reason)

    async def _move_tree(
        self,
        old_prefix: str,
        new_prefix: str,
        top: dict[str, str] | None,
        links: list[tuple[str, str, str]],
    ) -> None:
        rt = self.rt
        source = iter(rt.store.list(old_prefix, recursive=False))
        subdirs: list[str] = []
        while batch := await rt.call(take, source, LIST_BATCH):
            async with trio.open_nursery() as nursery:
                for info in batch:
                    if info.key == old_prefix or is_dir_meta(info.key):
                        continue
                    if info.is_dir:
                        subdirs.append(info.key)
                        continue
                    nursery.start_soon(
                        self._move_one, info, new_prefix + info.key[len(old_prefix) :], links
                    )
        for sub in subdirs:
            await self._move_tree(sub, new_prefix + sub[len(old_prefix) :], None, links)
        marker = await rt.call(rt.fsops.stat_dir, old_prefix)
        if marker is not None:  # an implicit directory stays implicit
            meta = top if top is not None else dict(marker.metadata)
            await rt.call(rt.fsops.make_dir, new_prefix, meta)
            await rt.call(rt.fsops.remove_dir, old_prefix)

    async def _move_one(
        self, info: ObjectInfo, new_key: str, links: list[tuple[str, str, str]]
    ) -> None:
        if info.size == 0:
            # Zero bytes: maybe a hard-link marker, whose file must hear of the move.
            found = info if info.metadata else await self.resolver.stat(info.key)
            target = link_target(found) if found is not None else None
            if target is not None:
                links.append((info.key, new_key, target))
        copied = await self.rt.call(self.rt.fsops.copy, info, new_key)
        node = self.table.at(info.key)
        if node is not None and node.key == info.key and node.kind is not Kind.DIR:
            # Open handles follow the copy (``_rebase_node`` moves the key), unless what
            # was listed and copied is another client's version than theirs.
            if node.etag is not None and node.etag != (info.etag or info.version):
                node.replaced += 1
            set_version(node, copied)
        await self.rt.call(self.store.delete, info.key)
