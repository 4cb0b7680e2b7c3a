"""Changing what is stored about an inode, and reading its extended attributes.

``setattr``: a size change truncates through the file's ``LocalFile`` and commits at
once unless the file is open; mode, owner and times are rewritten as the object's
POSIX metadata (``store``), or go with the upload when the file is being written. A
directory's go where ``FsOps`` keeps directory metadata: its marker, or its
``DIR_META_NAME`` object on stores that drop the metadata of markers (SeaweedFS) and
at a bucket's root. Where a store keeps no metadata at all, a directory's is kept in
this mount for its lifetime (``kept``) and the call succeeds; a file's fails (EPERM).
Who may change what: ``datamover_fuse.permissions``.

Extended attributes are the stored digests, read-only: ``user.datamover.<alg>``.
"""

from __future__ import annotations

import errno
import logging
import math
import stat as statmod

from datamover.errors import Unsupported
from datamover.stores.base import ObjectInfo, digests_from_metadata
from datamover.stores.fsops import OpenFile
from datamover_fuse import native
from datamover_fuse.fserrors import FsError, check_writable, errno_for
from datamover_fuse.inodes import (
    LINKS_KEY,
    Attr,
    Inode,
    InodeTable,
    Kind,
    SetAttrs,
    pin_of,
    posix_meta,
    set_version,
)
from datamover_fuse.localfiles import LocalFiles
from datamover_fuse.lookup import Resolver
from datamover_fuse.permissions import Caller, check_setattr
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
    """setattr, storing an inode's metadata, and the xattrs."""

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
        self._warned = False

    async def load_root(self) -> None:
        """The mount root's stored attributes (its marker, or its metadata object at a
        bucket's root), read once at mount time."""
        root = self.table.root
        try:
            info = await self.rt.call(self.rt.fsops.stat_dir, root.key)
        except Exception as e:
            log.warning("%s: the mount root's attributes not read: %s", root.key or "/", e)
            return
        if info is not None and info.metadata:
            self.table.apply_info(root, info, exact=True)
            root.expires = math.inf

    # -- attributes -----------------------------------------------------------------------

    async def setattr(
        self,
        ino: int,
        changes: SetAttrs,
        caller: Caller | None = None,
        source: OpenFile | None = None,
    ) -> Attr:
        """``source``: the file the handle of an ``ftruncate`` opened, which a truncate
        builds on (``FsOps.open_file``); else the object at the key."""
        node = self.table.node(ino)
        meta_change = any(
            v is not None
            for v in (changes.mode, changes.uid, changes.gid, changes.mtime_ns, changes.atime_ns)
        )
        if changes.size is None and not meta_change:
            return self.table.attr(node)
        check_writable(self.rt.options)
        if caller is not None:
            check_setattr(node, changes, caller)
        if changes.size is not None:
            await self._truncate(node, changes.size, source)
        if meta_change:
            await self._change_metadata(node, changes)
        return self.table.attr(node)

    async def _truncate(self, node: Inode, size: int, source: OpenFile | None) -> None:
        if node.kind is Kind.DIR:
            raise FsError(errno.EISDIR)
        if node.kind is not Kind.FILE:
            raise FsError(errno.EINVAL)
        was_open = node.local is not None
        if not was_open and node.remote and size > 0:
            await self.resolver.refresh_file(node)  # build on the object as it is now
        lf = self.local.get(node, truncate=size == 0)
        try:
            async with lf.lock:
                if not lf.base_loaded and size > 0:
                    if source is not None:
                        node.size = await self.rt.call(source.size)
                        native.invalidate()
                    await self.writes.load_base(lf, node.size, source, pin_of(node))
                await self.writes.truncate(lf, size)
            node.mtime_ns = node.ctime_ns = self.rt.wall_ns()
            if not was_open:
                await self.local.commit(node)
        finally:
            if not was_open:
                await self.local.drop(node)

    async def _change_metadata(self, node: Inode, changes: SetAttrs) -> None:
        if node.kind is not Kind.DIR and node.remote and node.local is None and not node.exact:
            await self.resolver.refresh_file(node)
        old = (node.mode, node.uid, node.gid, node.mtime_ns, node.ctime_ns, node.atime_ns)
        if changes.mode is not None:
            node.mode = statmod.S_IFMT(node.mode) | statmod.S_IMODE(changes.mode)
        if changes.uid is not None:
            node.uid = changes.uid
        if changes.gid is not None:
            node.gid = changes.gid
        if changes.mtime_ns is not None:
            node.mtime_ns = changes.mtime_ns
        if changes.atime_ns is not None:
            node.atime_ns = changes.atime_ns
        node.ctime_ns = self.rt.wall_ns()
        if node.local is not None and (node.local.dirty or not node.remote):
            node.local.attrs_changed = True
            return  # goes with the upload at close; an upload error is returned there
        try:
            await self.store(node)
        except FsError:
            node.mode, node.uid, node.gid, node.mtime_ns, node.ctime_ns, node.atime_ns = old
            raise

    async def store(self, node: Inode) -> None:
        """Write the inode's POSIX metadata (and link list) where the store keeps it.
        Raises ``FsError`` (EPERM where the store can't keep a file's); the inode's
        attributes are the caller's to roll back."""
        meta = {**node.metadata, **posix_meta(node)}
        if not node.links:
            meta.pop(LINKS_KEY, None)
        try:
            if node.kind is Kind.DIR:
                info = await self.rt.call(self.rt.fsops.update_dir_metadata, node.key, meta)
                node.marker = True
            else:
                current = ObjectInfo(
                    key=node.key, size=node.size, etag=node.etag, metadata=node.metadata
                )
                info = await self.rt.call(self.rt.fsops.update_metadata, current, meta)
        except Unsupported as e:
            if node.kind is not Kind.DIR:
                log.warning("%s: metadata not stored: %s", node.key or "/", e)
                raise FsError(errno.EPERM, str(e)) from e
            self._keep(node, meta, e)
            info = ObjectInfo(key=node.key, size=0, metadata=meta, is_dir=True)
        except Exception as e:
            log.warning("%s: metadata not stored: %s", node.key or "/", e)
            raise FsError(errno_for(e), str(e)) from e
        node.metadata = meta
        if node.kind is Kind.DIR:
            self.table.dir_times.pop(node.key)  # what was stored now says it
        else:  # a copy in place may be a new version (None: not known, not pinned)
            set_version(node, info if info.etag or info.version else None)
        node.exact = True
        node.expires = max(node.expires, self.rt.clock() + self.rt.options.attr_ttl)

    def _keep(self, node: Inode, meta: dict[str, str], why: Exception) -> None:
        """A directory's metadata this store can't keep: kept here for the mount's
        lifetime (the call succeeds, as docs/SEMANTICS.md promises)."""
        if not self._warned:
            log.warning(
                "%s: directory metadata kept by this mount only (not stored): %s",
                node.key or "/",
                why,
            )
            self._warned = True
        self.table.kept_meta.put(node.key, meta)

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
