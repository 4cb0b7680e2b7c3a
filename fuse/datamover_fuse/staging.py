"""Local staging files for files being written, and the disk budget they share.

Every file opened for writing is backed by one sparse file under the mount's cache
directory (``<cache_dir>/datamover-mount-XXXX/<n>``, mode 0600, removed on release and
the whole directory at unmount; a directory a killed mount left is removed by the next
mount with the same cache directory, ``remove_stale``). The budget counts the bytes a
staging file may hold: its size, less any range already uploaded and punched out
(``punch``, used by streamed uploads so a file larger than the cache can still be
written sequentially).

The methods here block (they are plain ``pread``/``pwrite``); the core calls them on
worker threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import itertools
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_fallocate = _libc.fallocate
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_fallocate.restype = ctypes.c_int


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Free the disk blocks of ``[offset, offset+length)``; reads there give zeros."""
    if length <= 0:
        return
    if _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class CacheDir:
    """A private directory under ``parent`` and a byte budget for what it holds.
    ``reclaim(n)``, when set (the block cache, ``datamover_fuse.blocks``), frees up
    to ``n`` bytes of the budget for a staging file that needs them."""

    def __init__(self, parent: str | None, capacity: int) -> None:
        if parent is not None:
            os.makedirs(parent, mode=0o700, exist_ok=True)
        remove_stale(parent if parent is not None else tempfile.gettempdir())
        self.path = tempfile.mkdtemp(prefix=PREFIX, dir=parent)
        # Held (flock) for this process's life: a later mount tells a live mount's
        # directory from a dead one's (remove_stale). Locked before it has its name,
        # so no other mount ever finds it unlocked while this one lives.
        locking = os.path.join(self.path, OWNER + ".new")
        self._owner = os.open(locking, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._owner, fcntl.LOCK_EX)
        os.rename(locking, os.path.join(self.path, OWNER))
        self.capacity = capacity
        self.used = 0
        self._names = itertools.count()
        self._lock = threading.Lock()
        self.reclaim: Callable[[int], int] | None = None

    def try_reserve(self, n: int, *, reclaim: bool = True) -> bool:
        with self._lock:
            if self.used + n <= self.capacity:
                self.used += n
                return True
            short = self.used + n - self.capacity
        if not reclaim or self.reclaim is None or not self.reclaim(short):
            return False
        return self.try_reserve(n, reclaim=False)

    def release(self, n: int) -> None:
        with self._lock:
            self.used = max(0, self.used - n)

    def new_file(self) -> StagedFile:
        return StagedFile(os.path.join(self.path, str(next(self._names))))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.close(self._owner)


PREFIX = "datamover-mount-"
#: The file in a cache directory its mount holds locked while it runs.
OWNER = ".owner"


def remove_stale(parent: str) -> list[str]:
    """Remove the cache directories under ``parent`` that mounts killed without an
    unmount left behind (``kill -9``, a lost node): ours (this user's, mode 0700, not
    a symlink), whose owner lock no process holds. Their staged writes were never
    uploaded and can't be. A directory another user made, or one without the lock
    file (another version's), is left alone. Returns what was removed."""
    removed = []
    try:
        names = [n for n in os.listdir(parent) if n.startswith(PREFIX)]
    except OSError:
        return removed
    for name in names:
        path = os.path.join(parent, name)
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
                continue
            fd = os.open(os.path.join(path, OWNER), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live mount's
        finally:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


class StagedFile:
    """One sparse local file. ``charged`` is what it holds against the budget."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.charged = 0

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            n = os.pwrite(self.fd, view, offset)
            view = view[n:]
            offset += n

    def pread(self, offset: int, length: int) -> bytes:
        chunks = []
        while length > 0:
            chunk = os.pread(self.fd, length, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def readinto(self, offset: int, buf: memoryview) -> int:
        total = 0
        while total < len(buf):
            n = os.preadv(self.fd, [buf[total:]], offset + total)
            if n == 0:
                break
            total += n
        return total

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def punch(self, offset: int, length: int) -> None:
        """Free the disk blocks of ``[offset, offset+length)``; reads there give zeros."""
        punch_hole(self.fd, offset, length)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
