"""Changing what is stored about an inode, and reading its extended attributes.

``setattr``: a size change truncates through the file's ``LocalFile`` and commits at
once unless the file is open; mode, owner and mtime are rewritten as the object's (or
the directory marker's) POSIX metadata, or go with the upload when the file is being
written. atime is not stored (docs/SEMANTICS.md). Some stores drop the metadata of
``dir/`` markers; that is learnt once, from the first marker written
(``marker_metadata_kept``), and directories then refuse chmod/chown/utime with EPERM.

Extended attributes are the stored digests, read-only: ``user.datamover.<alg>``.
"""

from __future__ import annotations

import errno
import logging
import stat as statmod

from datamover.errors import Unsupported
from datamover.posixmeta import MODE
from datamover.stores.base import ObjectInfo, digests_from_metadata
from datamover_fuse.fserrors import FsError, check_writable, errno_for
from datamover_fuse.inodes import ROOT_INO, Attr, Inode, InodeTable, Kind, SetAttrs, posix_meta
from datamover_fuse.localfiles import LocalFiles
from datamover_fuse.lookup import Resolver
from datamover_fuse.runtime import Runtime
from datamover_fuse.writes import WriteManager

log = logging.getLogger(__name__)

XATTR_PREFIX = "user.datamover."
#: The only xattr namespace the mount has names in. Others (``security.``, ``system.``
#: ``trusted.``) are answered ENOTSUP without touching the store, as a filesystem
#: without that namespace does: ``ls -l`` then stops asking for SELinux labels and
#: ACLs on this mount after the first file instead of asking for every file.
XATTR_NAMESPACE = "user."


class Metadata:
    """setattr and the xattrs; knows whether the store keeps markers' metadata."""

    def __init__(
        self,
        rt: Runtime,
        writes: WriteManager,
        table: InodeTable,
        resolver: Resolver,
        local: LocalFiles,
    ) -> None:
        self.rt = rt
        self.writes = writes
        self.table = table
        self.resolver = resolver
        self.local = local
        self._markers_keep_metadata: bool | None = None

    # -- attributes -----------------------------------------------------------------------

    async def setattr(self, ino: int, changes: SetAttrs) -> Attr:
        node = self.table.node(ino)
        meta_change = any(
            v is not None for v in (changes.mode, changes.uid, changes.gid, changes.mtime_ns)
        )
        if changes.size is None and not meta_change:
            return self.table.attr(node)  # atime alone: not stored (see docs/SEMANTICS.md)
        check_writable(self.rt.options)
        if changes.size is not None:
            await self._truncate(node, changes.size)
        if meta_change:
            await self._change_metadata(node, changes)
        return self.table.attr(node)

    async def _truncate(self, node: Inode, size: int) -> None:
        if node.kind is Kind.DIR:
            raise FsError(errno.EISDIR)
        if node.kind is Kind.LINK:
            raise FsError(errno.EINVAL)
        was_open = node.local is not None
        lf = self.local.get(node, truncate=size == 0)
        try:
            async with lf.lock:
                if not lf.base_loaded and size > 0:
                    await self.writes.load_base(lf, node.size)
                await self.writes.truncate(lf, size)
            node.mtime_ns = node.ctime_ns = self.rt.wall_ns()
            if not was_open:
                await self.local.commit(node)
        finally:
            if not was_open:
                await self.local.drop(node)

    async def _change_metadata(self, node: Inode, changes: SetAttrs) -> None:
        old = (node.mode, node.uid, node.gid, node.mtime_ns)
        if node.kind is not Kind.DIR and node.remote and node.local is None and not node.exact:
            await self.resolver.refresh_file(node)
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
            node.local.attrs_changed = True
            return  # goes with the upload at close; an upload error is returned there
        meta = {**node.metadata, **posix_meta(node)}
        try:
            if node.kind is Kind.DIR:
                if node.ino == ROOT_INO and not node.key:
                    raise Unsupported("the bucket root has no marker to carry metadata")
                if self._markers_keep_metadata is False:
                    raise Unsupported("this store drops the metadata of directory markers")
                info = await self.rt.call(self.rt.fsops.update_dir_metadata, node.key, meta)
                node.marker = True
                if not await self.marker_metadata_kept(node.key):
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
        node.expires = self.rt.clock() + self.rt.options.attr_ttl

    async def marker_metadata_kept(self, key: str) -> bool:
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

    # -- xattrs -----------------------------------------------------------------------------

    async def _digests(self, node: Inode) -> dict[str, str]:
        if node.kind is Kind.DIR or (node.local is not None and node.local.dirty):
            return {}
        if node.remote and not node.exact:
            await self.resolver.refresh_file(node)
        # Only digests: other datamover-* keys (a hard-link marker's target, an
        # upload's bookkeeping) are not checksums of the bytes.
        return digests_from_metadata(node.metadata)

    async def listxattr(self, ino: int) -> list[str]:
        node = self.table.node(ino)
        return [XATTR_PREFIX + alg for alg in sorted(await self._digests(node))]

    async def getxattr(self, ino: int, name: str) -> bytes:
        if not name.startswith(XATTR_NAMESPACE):
            raise FsError(errno.ENOTSUP)  # see XATTR_NAMESPACE
        node = self.table.node(ino)
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
