"""POSIX filesystem store (local disks, NFS, GPFS, Lustre).

Keys are paths relative to ``/``. Reads use ``preadv`` straight into the caller's
buffer; multipart writes ``pwrite`` each part at its offset into one temp file in the
destination directory (so the final ``rename`` never crosses a filesystem), and commit
is a ``rename``, made durable as ``Durability`` says (per file: ``fsync`` + ``rename`` +
``fsync`` of the directory; per job: one ``syncfs`` per filesystem before the journal
records files done). Readers of the final path see
the old file or the complete new one, never a partial one. Temp files are named
``.<name>.dmtmp-<suffix>`` (a random per-process prefix and a counter, created
``O_EXCL``) and ``abort`` removes them.

Many small files (issue #9): the store remembers the directories it made or found (a
bounded set, so ``makedirs`` runs once per directory, not per file), a whole small
file is one ``pwrite`` with no ``ftruncate`` unless it ends in a hole, ``fchown``
is skipped when the ``fstat`` of the new file shows it already has the wanted owner (and
that ``fstat`` of the open file, not a ``stat`` of the path after the rename, is what
the commit returns). Reading a file takes no ``lstat`` before the ``open``
(``O_NOFOLLOW`` tells a symlink) and no empty read after the last byte. The directory
``fsync`` stays one per file: sharing one among concurrent renames (group commit) cut
those syscalls by a third at 8 transfers but saved no CPU or time on ext4 (the block
layer already merges concurrent flushes) and cost CPU on tmpfs (thread wake-ups).

Fidelity (issue #6), all in this store so the engine stays store-agnostic:

* **Symlinks** are listed and read as links (``lstat``; the "content" is the link
  text, mode carries ``S_IFLNK``, as s3fs stores them) unless the store follows them
  (``--copy-links``); written back as symlinks (temp name + rename). A link is never
  followed when writing: the temp file is created ``O_EXCL`` and ``rename`` replaces a
  link rather than writing through it, and ``child_key`` refuses a key whose parent
  directory under the destination root is a symlink.
* **Empty directories** are listed as ``is_dir`` entries (``dir/``); putting ``dir/``
  makes the directory. **Hard links** carry ``link_id`` (``dev:ino``) when
  ``st_nlink > 1``; a put with ``datamover-hardlink`` metadata makes a hard link to
  that key.
* **Sparse files**: reads use ``SEEK_DATA`` to zero-fill holes without reading them;
  writes pre-size the temp file with ``ftruncate`` and skip parts that are all zeros,
  so holes stay holes.
* **Owners**: uid/gid from metadata are applied when running as root or when they are
  the caller's own; otherwise they stay recorded (manifest, metadata) and are reported.
* **xattrs** (``user.*``, with ``xattrs=True``) travel as ``xattr-<name>`` metadata,
  base64-encoded.
* **Lustre**: on a Lustre mount (statfs magic ``0x0BD00BD0``) with ``lfs`` on PATH, a
  large file's stripe layout is read with ``lfs getstripe`` into ``lustre-stripe-*``
  metadata, parts align to the stripe size, and a file written into Lustre with that
  metadata is created with ``lfs setstripe`` first. The filesystem probe is injectable.

Errors: a missing file is ``NotFound``; a permission problem on one file is a plain
``StoreError`` (that file fails, the run goes on); a full or read-only filesystem is
fatal.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import errno
import itertools
import logging
import os
import secrets
import shutil
import stat as statmod
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from crc32c import crc32c as _crc32c_extend

from datamover.checksums import PartDigests
from datamover.errors import (
    FatalStoreError,
    NotFound,
    SourceChanged,
    StoreError,
    UnsafePath,
    UsageError,
)
from datamover.posixmeta import GID, UID, PosixAttrs
from datamover.stores.base import (
    HARDLINK_KEY,
    Buffer,
    ChunkWriter,
    Features,
    GiB,
    ObjectInfo,
    PartLimits,
    PartReceipt,
    PendingUpload,
    Store,
    TiB,
)
from datamover.stores.fsops import FsOps
from datamover.urls import Location

TEMP_MARK = ".dmtmp-"
XATTR_PREFIX = "xattr-"
STRIPE_COUNT = "lustre-stripe-count"
STRIPE_SIZE = "lustre-stripe-size"
LUSTRE_MAGIC = 0x0BD00BD0
NAME_MAX = 255

log = logging.getLogger("datamover")

T = TypeVar("T")

_FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}

# Temp-file suffixes: a random prefix per process (drawn again in a forked child) and a
# counter, so a file costs no getrandom; the temp file is created O_EXCL and a clash (a
# leftover of another process) just takes the next name.
_temp_prefix = secrets.token_hex(5)
_temp_counter = itertools.count()


def _fresh_temp_prefix() -> None:
    global _temp_prefix, _temp_counter
    _temp_prefix = secrets.token_hex(5)
    _temp_counter = itertools.count()


os.register_at_fork(after_in_child=_fresh_temp_prefix)


def _temp_name(directory: str, name: str) -> str:
    suffix = f"{TEMP_MARK}{_temp_prefix}{next(_temp_counter):x}"
    raw = os.fsencode(name)
    room = 255 - 1 - len(suffix)  # NAME_MAX, the leading dot, the suffix
    if len(raw) > room:  # a long name: its temp file keeps only its start
        name = os.fsdecode(raw[:room])
    return os.path.join(directory, f".{name}{suffix}")


def map_oserror(e: OSError, key: str) -> StoreError:
    if isinstance(e, FileNotFoundError):
        return NotFound(f"/{key}: no such file", key=key)
    reason = e.strerror or type(e).__name__
    if e.errno in _FATAL_ERRNOS:
        return FatalStoreError(f"/{key}: {reason}", key=key)
    return StoreError(f"/{key}: {reason}", key=key)


def _info(key: str, st: os.stat_result, extra: Mapping[str, str] | None = None) -> ObjectInfo:
    meta = PosixAttrs.from_stat(st).to_metadata()
    if extra:
        meta.update(extra)
    linked = statmod.S_ISREG(st.st_mode) and st.st_nlink > 1
    return ObjectInfo(
        key=key,
        size=st.st_size,
        mtime=st.st_mtime_ns / 1e9,
        mode=st.st_mode,
        is_dir=statmod.S_ISDIR(st.st_mode),
        metadata=meta,
        link_id=f"{st.st_dev}:{st.st_ino}" if linked else None,
    )


def read_xattrs(path: str) -> dict[str, str]:
    """``user.*`` extended attributes as ``xattr-<name>`` metadata (base64 values)."""
    out: dict[str, str] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in names:
        if not name.startswith("user."):
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        out[XATTR_PREFIX + name[len("user.") :]] = base64.b64encode(value).decode()
    return out


def _apply_xattrs(path: str, metadata: Mapping[str, str]) -> None:
    for key, value in metadata.items():
        if key.startswith(XATTR_PREFIX):
            try:
                os.setxattr(
                    path,
                    "user." + key[len(XATTR_PREFIX) :],
                    base64.b64decode(value),
                    follow_symlinks=False,
                )
            except (OSError, ValueError) as e:
                log.warning("%s: could not set xattr %s: %s", path, key, e)


def _apply_owner(
    fd: int, path: str, metadata: Mapping[str, str], st: os.stat_result | None = None
) -> bool:
    """chown only where it can work: as root, or to the caller's own ids; and only
    where it changes something (``st``, the file's ``fstat``, shows its owner: a file
    just created usually has the wanted one already). True when it chowned."""
    attrs = PosixAttrs.from_metadata(metadata)
    uid = attrs.uid if UID in metadata else None
    gid = attrs.gid if GID in metadata else None
    if uid is None and gid is None:
        return False
    if st is not None and uid in (None, st.st_uid) and gid in (None, st.st_gid):
        return False
    if os.geteuid() != 0 and (
        uid not in (None, os.geteuid()) or gid not in (None, *os.getgroups(), os.getegid())
    ):
        log.info("%s: owner %s:%s recorded, not restored (not root)", path, uid, gid)
        return False
    os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
    return True


def _statfs_type(path: str) -> int | None:
    """f_type of the filesystem holding ``path`` (Linux statfs), or None."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on x86_64
    if libc.statfs(os.fsencode(path), buf) != 0:
        return None
    return int(ctypes.c_long.from_buffer(buf).value) & 0xFFFFFFFF


def _read_sparse(fd: int, view: memoryview, offset: int) -> int:
    """``preadv`` into ``view`` from ``offset``, zero-filling holes found with
    ``SEEK_DATA`` instead of reading them from disk. Returns the count (short at EOF)."""
    size = os.fstat(fd).st_size
    want = max(0, min(len(view), size - offset))
    total = 0
    while total < want:
        pos = offset + total
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno != errno.ENXIO:  # ENXIO: only a hole from here to EOF
                raise
            data = offset + want
        if data > pos:  # a hole: zeros without touching the disk
            gap = min(data, offset + want) - pos
            view[total : total + gap] = bytes(gap)
            total += gap
            continue
        n = os.preadv(fd, [view[total:want]], pos)
        if n == 0:
            break
        total += n
    return total


def with_suppressed_unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


SPARSE_BLOCK = 64 * 1024


def _write_sparse(fd: int, view: memoryview, offset: int) -> int:
    """``pwrite`` the runs of ``view`` that aren't all-zero 64 KiB blocks, leaving the
    zero blocks of the pre-sized file as holes. A block's CRC32C (hardware, ~14 GB/s)
    picks candidates; only those are compared byte for byte. Returns the file offset
    where the last bytes written end (``offset`` when all of it was holes)."""
    zero_crc = int.from_bytes(_zero_crc(SPARSE_BLOCK), "big")
    start = None  # start of the pending run of data blocks
    pos = 0
    n = len(view)
    end = offset
    while pos < n:
        block = view[pos : pos + SPARSE_BLOCK]
        hole = (
            len(block) == SPARSE_BLOCK
            and _crc32c_extend(block) == zero_crc
            and bytes(block) == bytes(SPARSE_BLOCK)
        )
        if hole and start is not None:
            _pwrite_all(fd, view[start:pos], offset + start)
            start = None
            end = offset + pos
        elif not hole and start is None:
            start = pos
        pos += SPARSE_BLOCK
    if start is not None:
        _pwrite_all(fd, view[start:], offset + start)
        end = offset + n
    return end


def _zero_crc(length: int, cache: dict[int, bytes] = {}) -> bytes:  # noqa: B006 - memo
    crc = cache.get(length)
    if crc is None:
        crc = cache[length] = PartDigests(bytes(length)).get("crc32c")
    return crc


def _is_zeros(data: Buffer, digests: PartDigests) -> bool:
    """All-zero part? The CRC32C is already computed, so only a likely hole is compared."""
    view = memoryview(data).cast("B")
    if digests.get("crc32c") != _zero_crc(len(view)):
        return False
    return bytes(view) == bytes(len(view))


def _apply_attrs(fd: int, metadata: Mapping[str, str], path: str = "") -> os.stat_result:
    """Apply mode, mtime and owner carried in metadata to an open file, and return its
    ``fstat`` afterwards. That ``fstat`` also tells whether the owner needs a ``chown``
    (a new file usually has it already); when it does, the mode is set again after it
    (``chown`` clears setuid/setgid bits) and the file stat'ed again."""
    attrs = PosixAttrs.from_metadata(metadata)
    mode = None if attrs.mode is None else statmod.S_IMODE(attrs.mode)
    if mode is not None:
        os.fchmod(fd, mode)
    if attrs.mtime_ns is not None:
        os.utime(fd, ns=(attrs.mtime_ns, attrs.mtime_ns))
    st = os.fstat(fd)
    if _apply_owner(fd, path, metadata, st):
        if mode is not None:
            os.fchmod(fd, mode)
        st = os.fstat(fd)
    return st


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Durability:
    """When a committed file is durable (``TransferOptions.durability``).

    ``file``: ``fsync`` of the file before its rename and of its directory after, per
    file. ``job``: neither; the filesystem is noted as dirty and ``sync`` makes every
    commit so far durable with one ``syncfs`` per filesystem (the kernel's flusher
    threads write back, and a thousand small files cost one journal commit, not a
    thousand). The engine calls ``sync`` before the journal records files as done and
    before the manifest is closed. ``none``: the kernel writes back when it likes, as
    after ``cp``.
    """

    def __init__(self, mode: str = "file") -> None:
        if mode not in ("file", "job", "none"):
            raise ValueError(f"durability {mode!r}")
        self.mode = mode
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._dirty: dict[int, str] = {}  # st_dev -> a directory on it (bounded by mounts)
        self._devs: dict[str, int] = {}  # directory -> st_dev, bounded cache

    def file_data(self, fd: int) -> None:
        """Before the rename of the file open at ``fd``."""
        if self.mode == "file":
            os.fsync(fd)

    def renamed(self, path: str) -> None:
        """After ``path`` was renamed (or made) in its directory."""
        directory = os.path.dirname(path) or "/"
        if self.mode == "file":
            _fsync_dir(directory)
        elif self.mode == "job":
            dev = self._devs.get(directory)
            if dev is None:
                dev = os.stat(directory).st_dev
                if len(self._devs) >= 4096:
                    self._devs.clear()
                self._devs[directory] = dev
            if dev not in self._dirty:
                with self._lock:
                    self._dirty.setdefault(dev, directory)

    def sync(self) -> None:
        """Make every commit noted so far durable. Concurrent callers are serialized,
        so none returns while a ``syncfs`` covering its commits is still running."""
        if self.mode != "job":
            return
        with self._sync_lock:
            with self._lock:
                dirty, self._dirty = self._dirty, {}
            for directory in dirty.values():
                _syncfs(directory)


def _syncfs(directory: str) -> None:
    """``syncfs`` of the filesystem holding ``directory`` (``sync`` if it is gone)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        os.sync()  # the directory went away: everything, to be sure
        return
    try:
        libc = _libc()
        if libc is None or not hasattr(libc, "syncfs"):
            os.sync()
        elif libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}", directory)
    finally:
        os.close(fd)


def _libc(cache: list[ctypes.CDLL | None] = []) -> ctypes.CDLL | None:  # noqa: B006 - memo
    if not cache:
        name = ctypes.util.find_library("c")
        cache.append(ctypes.CDLL(name, use_errno=True) if name else None)
    return cache[0]


class _Dirs:
    """The directories a store has made or found, bounded (``MAX``; the set is simply
    emptied when full), so writing many files costs one ``makedirs`` per directory
    instead of one per file. A directory removed or replaced meanwhile is noticed by
    the create that fails in it (``ENOENT``/``ENOTDIR``), which forgets it and retries
    once through ``makedirs``."""

    MAX = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: set[str] = set()

    def ensure(self, directory: str, key: str) -> bool:
        """Make the directory unless known to exist; whether it was known."""
        if directory in self._known:
            return True
        try:
            os.makedirs(directory, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as e:
            raise UnsafePath(
                f"/{key}: a parent of it is a file, not a directory (the source has a "
                "name that is both a file and a prefix); refusing this one",
                key=key,
            ) from e
        except OSError as e:
            raise map_oserror(e, key) from e
        with self._lock:
            if len(self._known) >= self.MAX:
                self._known.clear()
            self._known.add(directory)
        return False

    def forget(self, directory: str) -> None:
        with self._lock:
            self._known.discard(directory)

    def clear(self) -> None:
        with self._lock:
            self._known.clear()

    def create(self, key: str, make: Callable[[str], T]) -> tuple[str, T]:
        """``make(temp)`` a fresh temp name next to ``key`` (which must create it
        exclusively: ``O_EXCL``, ``symlink``, ``link``), making the directory first if
        this store hasn't. Returns the temp path and what ``make`` returned. A name
        clash takes the next name; a directory gone meanwhile is made again."""
        directory, name = os.path.split("/" + key)
        retried = False
        for _ in range(8):
            known = self.ensure(directory, key)
            temp = _temp_name(directory, name)
            try:
                return temp, make(temp)
            except FileExistsError:
                continue  # somebody's leftover under this name: take the next one
            except (FileNotFoundError, NotADirectoryError):
                if not known or retried:
                    raise
                self.forget(directory)  # removed or replaced since: makedirs again
                retried = True
        raise StoreError(f"/{key}: no free temp file name in {directory}", key=key)


def _pwrite_all(fd: int, data: Buffer, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


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


def lfs_getstripe(path: str) -> tuple[int, int] | None:
    """(stripe count, stripe size) from ``lfs getstripe -c -S``, or None."""
    lfs = shutil.which("lfs")
    if lfs is None:
        return None
    try:
        out = subprocess.run(
            [lfs, "getstripe", "-c", "-S", path],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
        return int(out[0]), int(out[1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _lfs_setstripe(path: str, layout: tuple[int, int]) -> None:
    """Create ``path`` empty with this stripe layout (``lfs setstripe -c N -S SIZE``)."""
    lfs = shutil.which("lfs")
    if lfs is None:
        return
    count, size = layout
    try:
        subprocess.run(
            [lfs, "setstripe", "-c", str(count), "-S", str(size), path],
            capture_output=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("%s: lfs setstripe failed (%s); default layout used", path, e)


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
        dirs: _Dirs | None = None,
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
        self._dirs = dirs if dirs is not None else _Dirs()
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
                _lfs_setstripe(temp, layout)
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
            if not _is_zeros(data, digests):  # the temp file is pre-sized: zeros stay holes
                end = _write_sparse(fd, memoryview(data).cast("B"), index * self.part_size)
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
                _apply_xattrs(self.temp_path, merged)
                # The committed file's attributes come from the file itself (a stat of
                # the path after the rename could see somebody else's file).
                st = _apply_attrs(fd, merged, self.path)
                self.durability.file_data(fd)
            finally:
                os.close(fd)
            _replace(self.temp_path, self.path, self.key, self.durability)
            return _info(self.key, st)
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
    features = Features(
        local=True,
        real_dirs=True,
        hardlinks=True,
        max_metadata_bytes=1 << 20,
        listing_metadata=True,
        native_mtime=True,
    )
    # No provider limits; these keep part counts and buffers sane.
    limits = PartLimits(
        min_part_size=1, max_part_size=4 * GiB, max_parts=1_000_000, max_single_put=64 * TiB
    )

    def __init__(
        self,
        *,
        follow_symlinks: bool = False,
        xattrs: bool = False,
        fs_type: Callable[[str], int | None] = _statfs_type,
        case_insensitive: bool | None = None,
        durability: str = "file",
    ) -> None:
        self.follow_symlinks = follow_symlinks
        self.durability = Durability(durability)
        self.xattrs = xattrs
        #: None: probe each destination root; True/False: known (tests, odd mounts).
        self.case_insensitive = case_insensitive
        self._case_folding: dict[str, bool] = {}
        # Folded name -> first key, only for roots that ignore case (bounded by the tree).
        self._case_seen: dict[str, dict[str, str]] = {}
        self._fs_type = fs_type
        self._lustre: dict[int, bool] = {}
        self._dirs = _Dirs()
        # Parents child_key found to be real directories (not symlinks), bounded.
        self._real_dirs: set[str] = set()

    @classmethod
    def from_location(cls, loc: Location, settings: object) -> PosixStore:
        extra = getattr(settings, "extra", {}) or {}
        return cls(
            follow_symlinks=bool(extra.get("copy_links")),
            xattrs=bool(extra.get("xattrs")),
            durability=str(extra.get("durability") or "file"),
        )

    def sync(self) -> None:
        try:
            self.durability.sync()
        except OSError as e:
            raise map_oserror(e, "") from e

    def url(self, key: str = "") -> str:
        return "/" + key

    def local_path(self, key: str) -> str | None:
        return "/" + key.rstrip("/")

    def _stat(self, path: str) -> os.stat_result:
        return os.stat(path) if self.follow_symlinks else os.lstat(path)

    def _extra(self, path: str, st: os.stat_result) -> dict[str, str] | None:
        extra = read_xattrs(path) if self.xattrs else {}
        if statmod.S_ISREG(st.st_mode) and self.on_lustre(path, st.st_dev):
            layout = lfs_getstripe(path)
            if layout is not None:
                extra[STRIPE_COUNT], extra[STRIPE_SIZE] = str(layout[0]), str(layout[1])
        return extra or None

    def on_lustre(self, path: str, dev: int | None = None) -> bool:
        """Whether ``path`` is on Lustre (statfs magic), cached per device."""
        if dev is None:
            try:
                dev = os.stat(path).st_dev
            except OSError:
                return False
        known = self._lustre.get(dev)
        if known is None:
            known = self._lustre[dev] = self._fs_type(path) == LUSTRE_MAGIC
        return known

    def stat(self, key: str) -> ObjectInfo:
        path = "/" + key
        try:
            st = self._stat(path)
            return _info(key, st, self._extra(path, st))
        except OSError as e:
            raise map_oserror(e, key) from e

    def child_key(self, root: str, rel: str) -> str:
        """Refuse keys that can't be a path under ``root`` safely: absolute, empty or
        ``.``/``..`` components, NUL, components over 255 bytes, or a parent directory
        (below ``root``) that is a symlink, which writing would follow out of the tree."""
        trailing = rel.endswith("/")
        parts = (rel[:-1] if trailing else rel).split("/")
        why = None
        if rel.startswith("/"):
            why = "it is absolute"
        elif "\0" in rel:
            why = "it contains a NUL byte"
        elif any(p in ("", ".", "..") for p in parts):
            why = "it has an empty, '.' or '..' component that would leave the tree"
        elif any(len(p.encode("utf-8", "surrogateescape")) > NAME_MAX for p in parts):
            why = f"a component is longer than {NAME_MAX} bytes"
        if why is None:
            path = "/" + root
            for part in parts[:-1]:
                path = os.path.join(path, part)
                if path in self._real_dirs:
                    continue  # seen a real directory already (a tree's keys share parents)
                try:
                    st = os.lstat(path)
                except OSError:
                    break  # missing (made as a real directory when written) or unreadable
                if statmod.S_ISLNK(st.st_mode):
                    why = f"{path} is a symlink, and writing through it would leave the tree"
                    break
                if statmod.S_ISDIR(st.st_mode):
                    if len(self._real_dirs) >= _Dirs.MAX:
                        self._real_dirs.clear()
                    self._real_dirs.add(path)
        if why is None and self._folds_case(root):
            seen = self._case_seen.setdefault(root, {})
            other = seen.setdefault(rel.casefold(), rel)
            if other != rel:
                why = f"it differs from {other!r} only by case, and {root!r} ignores case"
        if why is not None:
            raise UnsafePath(f"refusing key {rel!r}: {why}", key=rel)
        return root + rel

    def _folds_case(self, root: str) -> bool:
        """Whether names under ``root`` are case-insensitive (vfat, SMB, casefold ext4):
        probed once per root by creating a name and looking it up in upper case."""
        known = self._case_folding.get(root)
        if known is None:
            if self.case_insensitive is not None:
                known = self.case_insensitive
            else:
                # Probe the nearest existing directory (same filesystem, in practice):
                # planning, a dry run included, must not create the destination.
                directory = "/" + root
                while not os.path.isdir(directory) and directory != "/":
                    directory = os.path.dirname(directory.rstrip("/")) or "/"
                probe = os.path.join(directory, f".dmcase-{secrets.token_hex(4)}")
                try:
                    with open(probe, "x"):
                        pass
                    known = os.path.exists(os.path.join(directory, os.path.basename(probe).upper()))
                    os.unlink(probe)
                except OSError:
                    known = False
            self._case_folding[root] = known
        return known

    def list(self, prefix: str, *, recursive: bool = True) -> Iterator[ObjectInfo]:
        if not recursive and prefix and not prefix.endswith("/"):
            prefix += "/"  # one level down means "this directory", never a name prefix
        directory, _, name_prefix = prefix.rpartition("/")
        base = directory + "/" if directory else ""
        yield from self._walk(base, name_prefix, recursive)

    def _walk(self, base: str, name_prefix: str, recursive: bool) -> Iterator[ObjectInfo]:
        follow = self.follow_symlinks
        try:
            with os.scandir("/" + base) as it:
                # Key order, not name order: a directory's keys all carry its "/", so
                # "d.txt" < "d/..." < "d0" ("." < "/" < "0").
                entries = sorted(
                    (e for e in it if e.name.startswith(name_prefix)),
                    key=lambda e: e.name + "/" if e.is_dir(follow_symlinks=follow) else e.name,
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
                st = entry.stat(follow_symlinks=follow)
            except FileNotFoundError:
                continue  # vanished between readdir and stat (or a dangling followed link)
            except OSError as e:
                raise map_oserror(e, key) from e
            if statmod.S_ISDIR(st.st_mode):
                if not recursive:
                    yield ObjectInfo(key=key + "/", size=0, mtime=st.st_mtime_ns / 1e9, is_dir=True)
                    continue
                found = 0
                for info in self._walk(key + "/", "", True):
                    found += 1
                    yield info
                if not found:  # an empty directory is listed so it can be recreated
                    yield _info(key + "/", st)
            elif statmod.S_ISREG(st.st_mode) or statmod.S_ISLNK(st.st_mode):
                extra = read_xattrs(entry.path) if self.xattrs else None
                yield _info(key, st, extra)

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
        path = "/" + key
        if key.endswith("/"):
            try:
                st = os.lstat(path.rstrip("/") or "/")
            except OSError as e:
                raise map_oserror(e, key) from e
            if statmod.S_ISLNK(st.st_mode) and not self.follow_symlinks:
                return os.fsencode(os.readlink(path)), _info(key, st)
            if statmod.S_ISDIR(st.st_mode):
                return b"", _info(key, st)
        # Not following links: O_NOFOLLOW refuses a link (ELOOP), which only then
        # costs an lstat and a readlink; files pay no lstat before their open.
        nofollow = 0 if self.follow_symlinks else os.O_NOFOLLOW
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | nofollow)
        except OSError as e:
            if e.errno == errno.ELOOP and nofollow:
                try:
                    st = os.lstat(path)
                    if statmod.S_ISLNK(st.st_mode):
                        return os.fsencode(os.readlink(path)), _info(key, st)
                except OSError as e2:
                    raise map_oserror(e2, key) from e2
            raise map_oserror(e, key) from e
        try:
            before = os.fstat(fd)
            if nofollow and statmod.S_ISDIR(before.st_mode):
                return b"", _info(key + "/", before)
            # One byte more than expected: a file that grew is noticed, not truncated.
            # A short read at the expected size is the end of the file (the fstat
            # after it still catches a change), so it takes no second, empty read.
            buf = bytearray(before.st_size + 1)
            view = memoryview(buf)
            total = 0
            while total < len(view):
                n = os.preadv(fd, [view[total:]], total)
                if n == 0:
                    break
                total += n
                if total == before.st_size:
                    break
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
        return buf, _info(key, before, self._extra(path, before) if self.xattrs else None)

    def readinto(self, key: str, offset: int, buf: memoryview) -> int:
        try:
            fd = os.open("/" + key, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise map_oserror(e, key) from e
        try:
            view = buf.cast("B") if buf.format != "B" else buf
            return _read_sparse(fd, view, offset)
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
        meta = metadata or {}
        mode = PosixAttrs.from_metadata(meta).mode
        if key.endswith("/"):
            return self._make_dir(key, meta)
        if HARDLINK_KEY in meta:
            return self._make_link(key, meta[HARDLINK_KEY], meta)
        if mode is not None and statmod.S_ISLNK(mode):
            return self._make_symlink(key, bytes(data), meta)
        size = len(memoryview(data).cast("B"))
        writer = PosixWriter(
            key, size, max(size, 1), dirs=self._dirs, presize=False, durability=self.durability
        )
        try:
            writer.write_part(0, data, digests or PartDigests(data))
            return writer.commit(metadata or {})
        except BaseException:
            writer.abort()
            raise

    def _make_dir(self, key: str, meta: Mapping[str, str]) -> ObjectInfo:
        path = "/" + key.rstrip("/")
        try:
            os.makedirs(path, exist_ok=True)
            attrs = PosixAttrs.from_metadata(meta)
            if attrs.mode is not None:
                os.chmod(path, statmod.S_IMODE(attrs.mode))
            if attrs.mtime_ns is not None:
                os.utime(path, ns=(attrs.mtime_ns, attrs.mtime_ns))
            if self.durability.mode == "job":
                self.durability.renamed(path)
            return _info(key, os.stat(path))
        except FileExistsError as e:
            raise UnsafePath(f"{path}: exists and is not a directory; refusing", key=key) from e
        except OSError as e:
            raise map_oserror(e, key) from e

    def _make_symlink(self, key: str, target: bytes, meta: Mapping[str, str]) -> ObjectInfo:
        try:
            temp, _ = self._dirs.create(key, lambda temp: os.symlink(target, temp))
        except OSError as e:
            raise map_oserror(e, key) from e
        try:
            attrs = PosixAttrs.from_metadata(meta)
            if attrs.mtime_ns is not None:
                os.utime(temp, ns=(attrs.mtime_ns, attrs.mtime_ns), follow_symlinks=False)
            _replace(temp, "/" + key, key, self.durability)
            return _info(key, os.lstat("/" + key))
        except OSError as e:
            with_suppressed_unlink(temp)
            raise map_oserror(e, key) from e

    def _make_link(self, key: str, target_key: str, meta: Mapping[str, str]) -> ObjectInfo:
        try:
            temp, _ = self._dirs.create(
                key, lambda temp: os.link("/" + target_key, temp, follow_symlinks=False)
            )
        except OSError as e:
            raise map_oserror(e, key) from e
        try:
            _replace(temp, "/" + key, key, self.durability)
            return _info(key, os.lstat("/" + key))
        except OSError as e:
            with_suppressed_unlink(temp)
            raise map_oserror(e, key) from e

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
        meta = metadata or {}
        layout = None
        if STRIPE_COUNT in meta and STRIPE_SIZE in meta:
            directory = os.path.dirname("/" + key)
            if self.on_lustre(directory if os.path.isdir(directory) else "/"):
                layout = (int(meta[STRIPE_COUNT]), int(meta[STRIPE_SIZE]))
        writer = PosixWriter(
            key, size, part_size, layout=layout, dirs=self._dirs, durability=self.durability
        )
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
        return PosixWriter(
            key, size, part_size, resume_from=temp, dirs=self._dirs, durability=self.durability
        )

    def list_pending_uploads(self, prefix: str) -> Iterator[PendingUpload]:
        """Temp files ``.NAME.dmtmp-*`` whose target key starts with ``prefix``, found
        by walking the prefix's directory tree (symlinks are not followed; directories
        that can't be read are passed over). ``initiated`` is the temp file's mtime,
        i.e. when it was last written; ``size`` its length."""
        directory, _, name_prefix = prefix.rpartition("/")
        yield from self._walk_temps(directory + "/" if directory else "", name_prefix)

    def _walk_temps(self, base: str, name_prefix: str) -> Iterator[PendingUpload]:
        try:
            with os.scandir("/" + base) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return  # missing, not a directory, or unreadable: nothing to find there
        for entry in entries:
            name = entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                is_file = entry.is_file(follow_symlinks=False)
            except OSError:
                continue
            if is_dir and name.startswith(name_prefix):
                yield from self._walk_temps(f"{base}{name}/", "")
                continue
            mark = name.find(TEMP_MARK)
            target = name[1:mark]
            if not (is_file and name.startswith(".") and mark > 1):
                continue
            if not target.startswith(name_prefix):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # vanished meanwhile
            yield PendingUpload(
                key=base + target,
                initiated=st.st_mtime_ns / 1e9,
                size=st.st_size,
                token={"temp_path": "/" + base + name},
            )

    def abort_pending_upload(self, upload: PendingUpload) -> None:
        temp = upload.token.get("temp_path")
        if not isinstance(temp, str) or TEMP_MARK not in os.path.basename(temp):
            raise ValueError(f"/{upload.key}: not a datamover temp file token")
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise map_oserror(e, upload.key) from e

    def delete(self, key: str) -> None:
        try:
            os.unlink("/" + key)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise map_oserror(e, key) from e

    def close(self) -> None:
        self._dirs.clear()
        self._real_dirs.clear()


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


PosixStore.fs_ops_class = PosixFsOps
