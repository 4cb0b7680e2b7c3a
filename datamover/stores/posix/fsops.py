"""The mount's operations on a POSIX tree (``PosixFsOps``): real directories and real
attributes instead of marker objects and metadata rewrites, each made beneath the
store's tree for the key (``PosixStore.beneath``): a symlink at the name, or below a
confined root above it, is never followed, so ``chmod``/``chown``/``utime``/``mkdir``/
``rmdir``/``rename`` act on the entry named, not on what a link points to.

Metadata here comes from the mount's own callers (the kernel checked their
permissions), so set-ID bits are applied as asked."""

from __future__ import annotations

import contextlib
import errno
import os
import stat as statmod
from collections.abc import Mapping
from typing import TYPE_CHECKING

from datamover.errors import NotFound, StoreError, Unsupported, UsageError
from datamover.posixmeta import RDEV, PosixAttrs
from datamover.stores.base import ObjectInfo
from datamover.stores.fsops import FsOps
from datamover.stores.posix.attrs import apply_attrs, apply_attrs_at, parse_attrs
from datamover.stores.posix.beneath import split
from datamover.stores.posix.errors import map_oserror

if TYPE_CHECKING:
    from datamover.stores.posix.store import PosixStore


def _dir_info(key: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=0,
        mtime=st.st_mtime_ns / 1e9,
        mode=st.st_mode,
        is_dir=True,
        metadata=PosixAttrs.from_stat(st).to_metadata(),
    )


class PosixFsOps(FsOps):
    """A POSIX tree has real directories and real attributes: use them."""

    store: PosixStore

    def make_dir(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        """``mkdir`` (mode ``0700`` until the metadata's is set), or the attributes of
        the directory already there; a symlink or a file there is refused."""
        attrs = parse_attrs(metadata, key)
        try:
            with self.store.beneath(key) as (tree, rel):
                d = tree.mkdir(rel, 0o700)
                try:
                    return _dir_info(
                        key, apply_attrs(d.fd, attrs, key, setid=True, lenient_owner=False)
                    )
                finally:
                    tree.release(d)
        except OSError as e:
            raise map_oserror(e, key) from e

    def stat_dir(self, key: str) -> ObjectInfo | None:
        try:
            with self.store.beneath(key) as (tree, rel):
                st = tree.stat(rel)
        except OSError:
            return None
        return _dir_info(key, st) if statmod.S_ISDIR(st.st_mode) else None

    def remove_dir(self, key: str) -> None:
        try:
            with self.store.beneath(key) as (tree, rel):
                tree.rmdir(rel)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise UsageError(f"/{key}: directory not empty") from e
            raise map_oserror(e, key) from e

    def rename_dir(self, old_prefix: str, new_prefix: str) -> bool:
        self.store.rename(old_prefix.rstrip("/"), new_prefix.rstrip("/"))
        return True

    def update_metadata(self, info: ObjectInfo, metadata: Mapping[str, str]) -> ObjectInfo:
        attrs = parse_attrs(metadata, info.key)
        try:
            with self.store.beneath(info.key) as (tree, rel):
                head, name = split(rel)
                with tree.directory(head) as d:
                    apply_attrs_at(d.fd, name, attrs, info.key, setid=True, lenient_owner=False)
        except FileNotFoundError as e:
            raise NotFound(f"/{info.key}: no such file", key=info.key) from e
        except OSError as e:
            raise StoreError(f"/{info.key}: {e.strerror}", key=info.key) from e
        return self.store.stat(info.key)

    def update_dir_metadata(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        return self.make_dir(key, metadata)

    def make_special(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        """A real FIFO, socket or device node (``mknod``)."""
        attrs = parse_attrs(metadata, key)
        mode = attrs.mode or 0
        try:
            with self.store.beneath(key) as (tree, rel):
                head, name = split(rel)
                with tree.directory(head) as d:
                    # Replace whatever is at the name (a link is removed, never followed).
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=d.fd)
                    os.mknod(
                        name,
                        statmod.S_IFMT(mode) | 0o600,
                        int(metadata.get(RDEV, "0")),
                        dir_fd=d.fd,
                    )
                    apply_attrs_at(d.fd, name, attrs, key, setid=True, lenient_owner=False)
        except OSError as e:
            raise map_oserror(e, key) from e
        return self.store.stat(key)

    def make_link(self, key: str, target: str, metadata: Mapping[str, str]) -> ObjectInfo:
        """Not through this mount yet: a link count on a POSIX tree is the
        filesystem's, which this mount does not show."""
        raise Unsupported("hard links through a mount of a POSIX tree", key=key)
