"""Writing into the destination tree: ``PosixWriter`` (parts ``pwrite`` into a temp
file next to the target, committed by a rename), and the directories, symlinks and hard
links ``put`` makes. Every file and link is made under a fresh temp name, created
exclusively, and renamed into place, so a reader of the final path sees the old entry
or the new one, and a symlink already there is replaced, never written through.
"""

from __future__ import annotations

import os
import stat as statmod
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from datamover.checksums import PartDigests
from datamover.errors import NotFound, StoreError, UnsafePath
from datamover.posixmeta import PosixAttrs
from datamover.stores.base import Buffer, ObjectInfo, PartReceipt
from datamover.stores.posix.attrs import apply_attrs, apply_xattrs, info_from_stat
from datamover.stores.posix.durability import Durability
from datamover.stores.posix.errors import map_oserror
from datamover.stores.posix.lustre import lfs_setstripe
from datamover.stores.posix.paths import KnownDirs
from datamover.stores.posix.sparse import is_zeros, write_sparse


def _replace(temp: str, path: str, key: str, durability: Durability) -> None:
    """Atomically put ``temp`` at ``path`` (never writing through a link there), then
    make the rename durable as ``durability`` says (an ``fsync`` of the directory, or
    noted for the next ``sync``)."""
    try:
        os.rename(temp, path)
    except IsADirectoryError as e:
        os.unlink(temp)
        raise UnsafePath(
            f"/{key}: is a directory here (the source has a name that is both a file and "
            "a prefix); refusing this one",
            key=key,
        ) from e
    durability.renamed(path)


def with_suppressed_unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class PosixWriter:
    """Parts ``pwrite`` into ``.<name>.dmtmp-<suffix>`` next to the target.

    ``dirs`` is the store's set of known directories (a writer without one makes the
    directory itself). ``presize=False`` (whole files written at once by
    ``put``) leaves out the ``ftruncate`` to the final size unless the bytes written
    end short of it (a trailing hole); resumable writers keep it, since a resume
    checks the temp file's size."""

    #: Metadata given to ``open_writer``; ``commit``'s is merged over it.
    initial_metadata: Mapping[str, str] = MappingProxyType({})

    def __init__(
        self,
        key: str,
        size: int,
        part_size: int,
        *,
        resume_from: str | None = None,
        layout: tuple[int, int] | None = None,
        dirs: KnownDirs | None = None,
        presize: bool = True,
        durability: Durability | None = None,
    ) -> None:
        self.durability = durability or Durability("file")
        self.key = key
        self.size = size
        self.part_size = part_size
        self.path = "/" + key
        self._lock = threading.Lock()
        self._written: set[int] = set()
        self._dirs = dirs if dirs is not None else KnownDirs()
        self._end = size  # where the written bytes end, when not pre-sized
        if resume_from is not None:
            self.temp_path = resume_from
            try:
                self._fd: int | None = os.open(resume_from, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError as e:
                raise NotFound(f"{resume_from}: partial download is gone", key=key) from e
            except OSError as e:
                raise map_oserror(e, key) from e
            if os.fstat(self._fd).st_size != size:
                os.close(self._fd)
                raise NotFound(f"{resume_from}: partial download has the wrong size", key=key)
            return

        def make(temp: str) -> int:
            if layout is not None:
                lfs_setstripe(temp, layout)
            return os.open(
                temp,
                os.O_RDWR
                | os.O_CREAT
                | os.O_CLOEXEC
                | os.O_NOFOLLOW
                | (0 if layout is not None else os.O_EXCL),
                0o600,
            )

        try:
            self.temp_path, fd = self._dirs.create(key, make)
        except OSError as e:
            raise map_oserror(e, key) from e
        self._fd = fd
        if presize:
            try:
                os.ftruncate(fd, size)
            except OSError as e:
                self.abort()
                raise map_oserror(e, key) from e
        else:
            self._end = 0

    def state(self) -> dict[str, Any]:
        return {"temp_path": self.temp_path}

    def verify_parts(self, claimed: Mapping[int, PartReceipt]) -> set[int]:
        """Re-read each claimed part from the temp file and check its CRC32C."""
        fd = self._fd
        if fd is None:
            return set()
        valid = set()
        for index, receipt in claimed.items():
            length = min(self.part_size, self.size - index * self.part_size)
            if receipt.checksum is None or receipt.size != length or length <= 0:
                continue
            buf = os.pread(fd, length, index * self.part_size)
            if len(buf) == length and PartDigests(buf).get("crc32c").hex() == receipt.checksum:
                valid.add(index)
        with self._lock:
            self._written |= valid
        return valid

    def read_part(self, index: int, buf: memoryview) -> int:
        """Bytes of an already written part, for hashing on resume (no network)."""
        fd = self._fd
        if fd is None:
            raise StoreError(f"/{self.key}: read after commit or abort", key=self.key)
        return os.preadv(fd, [buf], index * self.part_size)

    def write_part(self, index: int, data: Buffer, digests: PartDigests) -> PartReceipt:
        fd = self._fd
        if fd is None:
            raise StoreError(f"/{self.key}: write after commit or abort", key=self.key)
        end = 0
        try:
            if not is_zeros(data, digests):  # the temp file is pre-sized: zeros stay holes
                end = write_sparse(fd, memoryview(data).cast("B"), index * self.part_size)
        except OSError as e:
            raise map_oserror(e, self.key) from e
        with self._lock:
            self._written.add(index)
            self._end = max(self._end, end)
        return PartReceipt(index, len(data), checksum=digests.get("crc32c").hex())

    def commit(self, metadata: Mapping[str, str]) -> ObjectInfo:
        with self._lock:
            # A part never written would be a hole of zeros in the file: refuse, and
            # leave the temp file to abort().
            missing = [i for i in range(-(-self.size // self.part_size)) if i not in self._written]
            if missing and self._fd is not None:
                raise StoreError(
                    f"/{self.key}: commit with {len(missing)} part(s) never written "
                    f"(first: {missing[0]})",
                    key=self.key,
                )
            fd, self._fd = self._fd, None
        if fd is None:
            raise StoreError(f"/{self.key}: commit after commit or abort", key=self.key)
        try:
            merged = {**self.initial_metadata, **metadata}
            try:
                if self._end < self.size:  # not pre-sized, and it ends in a hole
                    os.ftruncate(fd, self.size)
                apply_xattrs(self.temp_path, merged)
                # The committed file's attributes come from the file itself (a stat of
                # the path after the rename could see somebody else's file).
                st = apply_attrs(fd, merged, self.path)
                self.durability.file_data(fd)
            finally:
                os.close(fd)
            _replace(self.temp_path, self.path, self.key, self.durability)
            return info_from_stat(self.key, st)
        except OSError as e:
            raise map_oserror(e, self.key) from e

    def abort(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(self.temp_path)
        except FileNotFoundError:
            pass


def make_dir(key: str, meta: Mapping[str, str], durability: Durability) -> ObjectInfo:
    """Make the directory ``key`` (ending in ``/``) and its parents, with the mode and
    mtime in ``meta``."""
    path = "/" + key.rstrip("/")
    try:
        os.makedirs(path, exist_ok=True)
        attrs = PosixAttrs.from_metadata(meta)
        if attrs.mode is not None:
            os.chmod(path, statmod.S_IMODE(attrs.mode))
        if attrs.mtime_ns is not None:
            os.utime(path, ns=(attrs.mtime_ns, attrs.mtime_ns))
        if durability.mode == "job":
            durability.renamed(path)
        return info_from_stat(key, os.stat(path))
    except FileExistsError as e:
        raise UnsafePath(f"{path}: exists and is not a directory; refusing", key=key) from e
    except OSError as e:
        raise map_oserror(e, key) from e


def make_symlink(
    key: str, target: bytes, meta: Mapping[str, str], dirs: KnownDirs, durability: Durability
) -> ObjectInfo:
    """Make ``key`` a symlink to ``target`` (a temp name, then a rename)."""
    try:
        temp, _ = dirs.create(key, lambda temp: os.symlink(target, temp))
    except OSError as e:
        raise map_oserror(e, key) from e
    try:
        attrs = PosixAttrs.from_metadata(meta)
        if attrs.mtime_ns is not None:
            os.utime(temp, ns=(attrs.mtime_ns, attrs.mtime_ns), follow_symlinks=False)
        _replace(temp, "/" + key, key, durability)
        return info_from_stat(key, os.lstat("/" + key))
    except OSError as e:
        with_suppressed_unlink(temp)
        raise map_oserror(e, key) from e


def make_hardlink(key: str, target_key: str, dirs: KnownDirs, durability: Durability) -> ObjectInfo:
    """Make ``key`` a hard link to ``target_key`` (a temp name, then a rename)."""
    try:
        temp, _ = dirs.create(
            key, lambda temp: os.link("/" + target_key, temp, follow_symlinks=False)
        )
    except OSError as e:
        raise map_oserror(e, key) from e
    try:
        _replace(temp, "/" + key, key, durability)
        return info_from_stat(key, os.lstat("/" + key))
    except OSError as e:
        with_suppressed_unlink(temp)
        raise map_oserror(e, key) from e
