"""The mount's operations on a POSIX tree (``PosixFsOps``): real directories and real
attributes instead of marker objects and metadata rewrites, each made beneath the
store's tree for the key (``PosixStore.beneath``): a symlink at the name, or below a
confined root above it, is never followed, so ``chmod``/``chown``/``utime``/``mkdir``/
``rmdir``/``rename`` act on the entry named, not on what a link points to.

An open file of the mount (``open_file``) is its descriptor, opened once with
``O_NOFOLLOW`` in its directory's descriptor, which is held from ``open``/``create``
to ``release``: every read of the handle is a ``pread`` of that descriptor, and the
upload at ``flush``/``release`` (a temp file and a ``renameat``, by the store's
writer) goes into that held directory, whatever has been renamed or replaced by a
symlink meanwhile (see ``PosixOpenFile``).

Metadata here comes from the mount's own callers (the kernel checked their
permissions), so set-ID bits are applied as asked."""

from __future__ import annotations

import contextlib
import errno
import os
import stat as statmod
from collections.abc import Mapping
from typing import TYPE_CHECKING

from datamover.errors import NotFound, SourceChanged, StoreError, Unsupported, UsageError
from datamover.posixmeta import RDEV, PosixAttrs
from datamover.stores.base import ObjectInfo
from datamover.stores.fsops import FsOps, OpenFile
from datamover.stores.posix.attrs import apply_attrs, apply_attrs_at, parse_attrs
from datamover.stores.posix.beneath import Beneath, Dir, split
from datamover.stores.posix.errors import map_oserror
from datamover.stores.posix.sparse import read_sparse

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from datamover.stores.posix.store import PosixStore

#: NONBLOCK: a FIFO swapped in for the file can't hang the open.
_O_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


def _dir_info(key: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=0,
        mtime=st.st_mtime_ns / 1e9,
        mode=st.st_mode,
        is_dir=True,
        metadata=PosixAttrs.from_stat(st).to_metadata(),
    )


class PosixOpenFile(OpenFile):
    """One handle's file: ``fd`` (None for a file being created, or one this
    process may not read) and its directory ``held`` in the store's tree. While the
    directory is held, the tree hands that very descriptor (``Beneath.hold``) to
    every operation on a name in it (the writer that uploads the file included), so
    nothing done to the file's path after ``open`` changes which directory is used
    or which file is read."""

    def __init__(
        self,
        key: str,
        place: AbstractContextManager[tuple[Beneath, str]],
        tree: Beneath,
        held: Dir,
        fd: int | None,
        error: OSError | None,
    ) -> None:
        self.key = key
        self._place = place
        self._tree = tree
        self._held: Dir | None = held
        self.fd = fd
        self._error = error

    @property
    def readable(self) -> bool:
        return self.fd is not None or self._error is not None

    def size(self) -> int:
        fd = self._fd()
        try:
            return os.fstat(fd).st_size
        except OSError as e:
            raise map_oserror(e, self.key) from e

    def _fd(self) -> int:
        if self.fd is None:
            e = self._error or OSError(errno.EBADF, os.strerror(errno.EBADF))
            raise map_oserror(e, self.key) from e
        return self.fd

    def attrs(self) -> PosixAttrs | None:
        if self.fd is None:
            return None
        try:
            return PosixAttrs.from_stat(os.fstat(self.fd))
        except OSError as e:
            raise map_oserror(e, self.key) from e

    def readinto(self, offset: int, buf: memoryview) -> int:
        fd = self._fd()
        view = buf.cast("B") if buf.format != "B" else buf
        try:
            return read_sparse(fd, view, offset)
        except OSError as e:
            raise map_oserror(e, self.key) from e

    def read(self, offset: int, length: int) -> bytes:
        """One ``pread`` (a kernel read request: no ``fstat``/``SEEK_DATA``, no copy);
        more only if it came back short before the end."""
        fd = self._fd()
        try:
            data = os.pread(fd, length, offset)
            if 0 < len(data) < length:
                parts, got = [data], len(data)
                while got < length and (more := os.pread(fd, length - got, offset + got)):
                    parts.append(more)
                    got += len(more)
                data = b"".join(parts)
        except OSError as e:
            raise map_oserror(e, self.key) from e
        return data

    def close(self) -> None:
        fd, self.fd = self.fd, None
        held, self._held = self._held, None
        try:
            if fd is not None:
                os.close(fd)
        finally:
            if held is not None:
                self._tree.release(held)
                self._place.__exit__(None, None, None)


class PosixFsOps(FsOps):
    """A POSIX tree has real directories and real attributes: use them."""

    store: PosixStore

    def __init__(self, store: PosixStore) -> None:
        super().__init__(store)
        self.pins_files = True

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

    def open_file(self, key: str, *, existing: bool) -> PosixOpenFile:
        """Hold ``key``'s directory (reached beneath the mount's root, no symlink
        followed) and, when ``existing``, open the file in it with ``O_NOFOLLOW``: a
        symlink or anything but a regular file there now is refused (``ESTALE``:
        it is not the file the mount knew). A file this process may not read is
        held without a descriptor (a write-only open needs none; a read fails)."""
        place = self.store.beneath(key)
        tree, rel = place.__enter__()
        try:
            head, name = split(rel)
            held = tree.hold(head)
        except OSError as e:
            place.__exit__(None, None, None)
            raise map_oserror(e, key) from e
        fd: int | None = None
        error: OSError | None = None
        try:
            if existing:
                try:
                    fd = os.open(name, _O_READ, dir_fd=held.fd)
                except PermissionError as e:
                    error = e
                except OSError as e:
                    if e.errno != errno.ELOOP:
                        raise map_oserror(e, key) from e
                    raise SourceChanged(
                        f"/{key}: is a symlink now, not the file that was looked up", key=key
                    ) from e
                if fd is not None and not statmod.S_ISREG(os.fstat(fd).st_mode):
                    os.close(fd)
                    fd = None
                    raise SourceChanged(f"/{key}: is not a regular file any more", key=key)
        except BaseException:
            tree.release(held)
            place.__exit__(None, None, None)
            raise
        return PosixOpenFile(key, place, tree, held, fd, error)

    def rename_file(self, src_key: str, dst_key: str) -> bool:
        """``renameat`` beneath the tree (neither name followed): the same inode at the
        new name, special files and open descriptors included, no bytes copied."""
        self.store.rename(src_key, dst_key)
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
