"""The mount's operations on a POSIX tree (``PosixFsOps``): real directories and real
attributes instead of marker objects and metadata rewrites."""

from __future__ import annotations

import contextlib
import errno
import os
import stat as statmod
from collections.abc import Mapping

from datamover.errors import NotFound, StoreError, Unsupported, UsageError
from datamover.posixmeta import RDEV, PosixAttrs
from datamover.stores.base import ObjectInfo
from datamover.stores.fsops import FsOps


class PosixFsOps(FsOps):
    """A POSIX tree has real directories and real attributes: use them."""

    @staticmethod
    def _path(key: str) -> str:
        return "/" + key.rstrip("/")

    def make_dir(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        path = self._path(key)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        self._apply(path, metadata)
        return self._dir_info(key)

    def _dir_info(self, key: str) -> ObjectInfo:
        st = os.stat(self._path(key))
        return ObjectInfo(
            key=key,
            size=0,
            mtime=st.st_mtime_ns / 1e9,
            mode=st.st_mode,
            is_dir=True,
            metadata=PosixAttrs.from_stat(st).to_metadata(),
        )

    def stat_dir(self, key: str) -> ObjectInfo | None:
        try:
            info = self._dir_info(key)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return info if info.mode is not None and statmod.S_ISDIR(info.mode) else None

    def remove_dir(self, key: str) -> None:
        try:
            os.rmdir(self._path(key))
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise UsageError(f"/{key}: directory not empty") from e
            raise StoreError(f"/{key}: {e.strerror}", key=key) from e

    def rename_dir(self, old_prefix: str, new_prefix: str) -> bool:
        os.rename(self._path(old_prefix), self._path(new_prefix))
        return True

    @staticmethod
    def _apply(path: str, metadata: Mapping[str, str]) -> None:
        attrs = PosixAttrs.from_metadata(metadata)
        if attrs.uid is not None or attrs.gid is not None:
            os.chown(
                path, -1 if attrs.uid is None else attrs.uid, -1 if attrs.gid is None else attrs.gid
            )
        if attrs.mode is not None:
            os.chmod(path, statmod.S_IMODE(attrs.mode))
        if attrs.mtime_ns is not None:
            os.utime(path, ns=(attrs.mtime_ns, attrs.mtime_ns))

    def update_metadata(self, info: ObjectInfo, metadata: Mapping[str, str]) -> ObjectInfo:
        try:
            self._apply(self._path(info.key), metadata)
        except FileNotFoundError as e:
            raise NotFound(f"/{info.key}: no such file", key=info.key) from e
        except OSError as e:
            raise StoreError(f"/{info.key}: {e.strerror}", key=info.key) from e
        return self.store.stat(info.key)

    def update_dir_metadata(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        return self.make_dir(key, metadata)

    def make_special(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        """A real FIFO, socket or device node (``mknod``)."""
        attrs = PosixAttrs.from_metadata(metadata)
        path = self._path(key)
        mode = attrs.mode or 0
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.mknod(path, statmod.S_IFMT(mode) | 0o600, int(metadata.get(RDEV, "0")))
            self._apply(path, metadata)
        except OSError as e:
            raise StoreError(f"/{key}: {e.strerror}", key=key) from e
        return self.store.stat(key)

    def make_link(self, key: str, target: str, metadata: Mapping[str, str]) -> ObjectInfo:
        """Not through this mount yet: a link count on a POSIX tree is the
        filesystem's, which this mount does not show."""
        raise Unsupported("hard links through a mount of a POSIX tree", key=key)
