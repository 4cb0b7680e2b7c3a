"""POSIX filesystem store (local disks, NFS, GPFS, Lustre).

Keys are paths relative to ``/``. Reads use ``preadv`` straight into the caller's
buffer; multipart writes ``pwrite`` each part at its offset into one temp file in the
destination directory (so the final ``rename`` never crosses a filesystem), and commit
is ``fsync`` + ``rename`` + ``fsync`` of the directory. Readers of the final path see
the old file or the complete new one, never a partial one. Temp files are named
``.<name>.dmtmp-<random>`` and ``abort`` removes them.

Errors: a missing file is ``NotFound``; a permission problem on one file is a plain
``StoreError`` (that file fails, the run goes on); a full or read-only filesystem is
fatal.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat as statmod
import threading
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from datamover.checksums import PartDigests
from datamover.errors import FatalStoreError, NotFound, SourceChanged, StoreError, UsageError
from datamover.posixmeta import PosixAttrs
from datamover.stores.base import (
    Buffer,
    ChunkWriter,
    GiB,
    ObjectInfo,
    PartLimits,
    PartReceipt,
    Store,
    TiB,
)
from datamover.urls import Location

TEMP_MARK = ".dmtmp-"

_FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def map_oserror(e: OSError, key: str) -> StoreError:
    if isinstance(e, FileNotFoundError):
        return NotFound(f"/{key}: no such file", key=key)
    reason = e.strerror or type(e).__name__
    if e.errno in _FATAL_ERRNOS:
        return FatalStoreError(f"/{key}: {reason}", key=key)
    return StoreError(f"/{key}: {reason}", key=key)


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=st.st_size,
        mtime=st.st_mtime_ns / 1e9,
        mode=st.st_mode,
        is_dir=statmod.S_ISDIR(st.st_mode),
        metadata=PosixAttrs.from_stat(st).to_metadata(),
    )


def _apply_attrs(fd: int, metadata: Mapping[str, str]) -> None:
    """Apply mode and mtime carried in metadata to an open file."""
    attrs = PosixAttrs.from_metadata(metadata)
    if attrs.mode is not None:
        os.fchmod(fd, statmod.S_IMODE(attrs.mode))
    if attrs.mtime_ns is not None:
        os.utime(fd, ns=(attrs.mtime_ns, attrs.mtime_ns))


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: Buffer, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


class PosixWriter:
    """Parts ``pwrite`` into ``.<name>.dmtmp-<rand>`` next to the target."""

    #: Metadata given to ``open_writer``; ``commit``'s is merged over it.
    initial_metadata: Mapping[str, str] = MappingProxyType({})

    def __init__(
        self, key: str, size: int, part_size: int, *, resume_from: str | None = None
    ) -> None:
        self.key = key
        self.size = size
        self.part_size = part_size
        self.path = "/" + key
        directory, name = os.path.split(self.path)
        self._lock = threading.Lock()
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
        self.temp_path = os.path.join(directory, f".{name}{TEMP_MARK}{secrets.token_hex(6)}")
        try:
            os.makedirs(directory, exist_ok=True)
            self._fd = os.open(
                self.temp_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
            )
            os.ftruncate(self._fd, size)
        except OSError as e:
            raise map_oserror(e, key) from e

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
        try:
            _pwrite_all(fd, data, index * self.part_size)
        except OSError as e:
            raise map_oserror(e, self.key) from e
        return PartReceipt(index, len(data), checksum=digests.get("crc32c").hex())

    def commit(self, metadata: Mapping[str, str]) -> ObjectInfo:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is None:
            raise StoreError(f"/{self.key}: commit after commit or abort", key=self.key)
        try:
            try:
                _apply_attrs(fd, {**self.initial_metadata, **metadata})
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(self.temp_path, self.path)
            _fsync_dir(os.path.dirname(self.path))
            return _info(self.key, os.stat(self.path))
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


class PosixStore(Store):
    scheme = "file"
    # No provider limits; these keep part counts and buffers sane.
    limits = PartLimits(
        min_part_size=1, max_part_size=4 * GiB, max_parts=1_000_000, max_single_put=64 * TiB
    )

    @classmethod
    def from_location(cls, loc: Location, settings: object) -> PosixStore:
        return cls()

    def url(self, key: str = "") -> str:
        return "/" + key

    def stat(self, key: str) -> ObjectInfo:
        try:
            return _info(key, os.stat("/" + key))
        except OSError as e:
            raise map_oserror(e, key) from e

    def list(self, prefix: str, *, recursive: bool = True) -> Iterator[ObjectInfo]:
        if not recursive and prefix and not prefix.endswith("/"):
            prefix += "/"  # one level down means "this directory", never a name prefix
        directory, _, name_prefix = prefix.rpartition("/")
        base = directory + "/" if directory else ""
        yield from self._walk(base, name_prefix, recursive)

    def _walk(self, base: str, name_prefix: str, recursive: bool) -> Iterator[ObjectInfo]:
        try:
            with os.scandir("/" + base) as it:
                # Key order, not name order: a directory's keys all carry its "/", so
                # "d.txt" < "d/..." < "d0" ("." < "/" < "0").
                entries = sorted(
                    (e for e in it if e.name.startswith(name_prefix)),
                    key=lambda e: e.name + "/" if e.is_dir() else e.name,
                )
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            raise map_oserror(e, base) from e
        for entry in entries:
            if TEMP_MARK in entry.name:
                continue
            key = base + entry.name
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue  # vanished between readdir and stat
            except OSError as e:
                raise map_oserror(e, key) from e
            if statmod.S_ISDIR(st.st_mode):
                if recursive:
                    yield from self._walk(key + "/", "", True)
                else:
                    yield ObjectInfo(key=key + "/", size=0, mtime=st.st_mtime_ns / 1e9, is_dir=True)
            elif statmod.S_ISREG(st.st_mode):
                yield _info(key, st)

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        if length is None:
            # Size and bytes from one open file: a file replaced meanwhile is read whole
            # (a stat, then an open, could read the new file cut to the old size).
            try:
                with open("/" + key, "rb", buffering=0) as f:
                    f.seek(offset)
                    return f.read()
            except OSError as e:
                raise map_oserror(e, key) from e
        buf = bytearray(length)
        n = self.readinto(key, offset, memoryview(buf))
        del buf[n:]
        return bytes(buf)

    def read_object(
        self, key: str, info: ObjectInfo | None = None
    ) -> tuple[bytes | bytearray, ObjectInfo]:
        try:
            fd = os.open("/" + key, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise map_oserror(e, key) from e
        try:
            before = os.fstat(fd)
            # One byte more than expected: a file that grew is noticed, not truncated.
            buf = bytearray(before.st_size + 1)
            view = memoryview(buf)
            total = 0
            while total < len(view):
                n = os.preadv(fd, [view[total:]], total)
                if n == 0:
                    break
                total += n
            after = os.fstat(fd)
        except OSError as e:
            raise map_oserror(e, key) from e
        finally:
            os.close(fd)
        if (
            total != before.st_size
            or after.st_size != before.st_size
            or after.st_mtime_ns != before.st_mtime_ns
        ):
            raise SourceChanged(
                f"/{key}: changed while being read (size {before.st_size} -> {after.st_size})",
                key=key,
            )
        del view
        del buf[total:]
        return buf, _info(key, before)

    def readinto(self, key: str, offset: int, buf: memoryview) -> int:
        try:
            fd = os.open("/" + key, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise map_oserror(e, key) from e
        try:
            total = 0
            view = buf.cast("B") if buf.format != "B" else buf
            while total < len(view):
                n = os.preadv(fd, [view[total:]], offset + total)
                if n == 0:
                    break
                total += n
            return total
        except OSError as e:
            raise map_oserror(e, key) from e
        finally:
            os.close(fd)

    def put(
        self,
        key: str,
        data: Buffer,
        *,
        metadata: Mapping[str, str] | None = None,
        digests: PartDigests | None = None,
    ) -> ObjectInfo:
        size = len(memoryview(data).cast("B"))
        writer = PosixWriter(key, size, max(size, 1))
        try:
            writer.write_part(0, data, digests or PartDigests(data))
            return writer.commit(metadata or {})
        except BaseException:
            writer.abort()
            raise

    def open_writer(
        self,
        key: str,
        *,
        size: int,
        part_size: int,
        metadata: Mapping[str, str] | None = None,
    ) -> ChunkWriter:
        if key == "" or key.endswith("/"):
            raise UsageError(f"/{key} is a directory, not a file name")
        writer = PosixWriter(key, size, part_size)
        writer.initial_metadata = dict(metadata or {})
        return writer

    def resume_writer(
        self,
        key: str,
        *,
        size: int,
        part_size: int,
        state: Mapping[str, Any],
        metadata: Mapping[str, str] | None = None,
    ) -> PosixWriter:
        temp = state.get("temp_path")
        directory = os.path.dirname("/" + key)
        if not isinstance(temp, str) or os.path.dirname(temp) != directory:
            raise NotFound(f"/{key}: no partial download to resume", key=key)
        return PosixWriter(key, size, part_size, resume_from=temp)

    def delete(self, key: str) -> None:
        try:
            os.unlink("/" + key)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise map_oserror(e, key) from e
