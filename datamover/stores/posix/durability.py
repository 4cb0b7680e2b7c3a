"""When a committed file is durable (``Durability``): ``fsync`` per file, one
``syncfs`` per filesystem per job (through libc, which Python's ``os`` lacks), or
neither."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading


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
