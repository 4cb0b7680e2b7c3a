"""When a committed file is durable (``Durability``): ``fsync`` per file, one
``syncfs`` per filesystem per job (through libc, which Python's ``os`` lacks), or
neither. Directories are named by their open descriptors (``beneath.Dir``), never by
path, so what is synced is the directory that was written in."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from typing import Protocol


class _Directory(Protocol):
    fd: int

    @property
    def dev(self) -> int: ...


def _fsync_dir(fd: int) -> None:
    os.fsync(fd)


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
        # st_dev -> a descriptor (our own dup) of a directory on it, bounded by mounts.
        self._dirty: dict[int, int] = {}

    def file_data(self, fd: int) -> None:
        """Before the rename of the file open at ``fd``."""
        if self.mode == "file":
            os.fsync(fd)

    def part_data(self, fd: int, directory: _Directory) -> None:
        """After a part was written into the temp file open at ``fd`` (in the open
        ``directory``), before the journal may record it: "file" makes it durable
        now (``fdatasync``); "job" notes its filesystem, so the journal's next batch
        (which would record the part) is committed only after a ``syncfs`` of it.
        Either way a journaled range of a temp file is on disk; with "none" it may
        not be, and a resume's CRC32C re-read of the part is what catches that."""
        if self.mode == "file":
            os.fdatasync(fd)
        elif self.mode == "job":
            self.renamed(directory)

    def renamed(self, directory: _Directory) -> None:
        """After a name was renamed (or made) in the open ``directory``."""
        if self.mode == "file":
            _fsync_dir(directory.fd)
        elif self.mode == "job":
            dev = directory.dev
            if dev not in self._dirty:
                with self._lock:
                    if dev not in self._dirty:
                        self._dirty[dev] = os.dup(directory.fd)

    def sync(self) -> None:
        """Make every commit noted so far durable. Concurrent callers are serialized,
        so none returns while a ``syncfs`` covering its commits is still running."""
        if self.mode != "job":
            return
        with self._sync_lock:
            with self._lock:
                dirty, self._dirty = self._dirty, {}
            try:
                for fd in dirty.values():
                    _syncfs(fd)
            finally:
                for fd in dirty.values():
                    os.close(fd)


def _syncfs(fd: int) -> None:
    """``syncfs`` of the filesystem holding the directory open at ``fd``."""
    libc = _libc()
    if libc is None or not hasattr(libc, "syncfs"):
        os.sync()
    elif libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syncfs: {os.strerror(err)}")


def _libc(cache: list[ctypes.CDLL | None] = []) -> ctypes.CDLL | None:  # noqa: B006 - memo
    if not cache:
        name = ctypes.util.find_library("c")
        cache.append(ctypes.CDLL(name, use_errno=True) if name else None)
    return cache[0]
