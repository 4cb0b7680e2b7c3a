"""The mount's local block cache of object data: the disk side (``BlockStore``).

One sparse file per object *version* holds the blocks fetched of it, each at its own
offset; its name is a digest of (key, ETag/generation, size), so a block is only
ever found for the version it was fetched from: when the object changes in the store
the mount learns a new ETag (at the latest when the attribute TTL runs out) and looks
under a new name. Blocks are ``BLOCK`` bytes (the last one of an object shorter);
each one's CRC32C is kept beside the index and checked on every read, so a block that
changed on disk (a flipped bit, another process writing the file) is dropped and
fetched again, never returned.

Bound: the blocks held, together with the staging files of files being written,
never exceed ``--cache-size`` (``CacheDir``'s budget). Blocks are evicted least
recently used first (their range of the file is punched out); staging files come
first: a write that needs room evicts blocks (``CacheDir.reclaim``).

Where: by default ``<private state dir>/blocks`` (0700, removed at unmount with the
rest). With ``--cache-keep`` the blocks live in ``<cache-dir>/datamover-blocks``
(0700, ours, locked against a second mount) and are kept, index included, for the
next mount of the same cache dir; what a kept block says is still checked by its
CRC32C before it is served.

Everything here blocks (``pread``/``pwrite``/``fallocate``); the mount calls it on
worker threads. One lock guards the index; file I/O runs outside it on descriptors
opened under it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from datamover.crcfast import crc32c
from datamover.errors import UsageError
from datamover_fuse import native
from datamover_fuse.staging import CacheDir, punch_hole

KiB = 1024
#: Bytes per cached block: the unit of checking and eviction (fetches take several).
#: A random 64 KiB read reads and checks one block from disk, no more.
BLOCK = 64 * KiB
#: Cache files kept open for reads (a random reader hits one file many thousand times
#: a second: an ``open``/``close`` per read was a tenth of the mount's time per read).
MAX_OPEN = 64
KEPT_DIR = "datamover-blocks"
_INDEX = ".index.json"
_LOCK = ".lock"


def version_name(key: str, etag: str, size: int) -> str:
    return hashlib.sha256(f"{size}\0{etag}\0{key}".encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(eq=False)
class _File:
    name: str
    path: str
    size: int
    crcs: dict[int, int] = field(default_factory=dict)  # block index -> CRC32C
    lengths: dict[int, int] = field(default_factory=dict)  # block index -> bytes charged
    pending: set[int] = field(default_factory=set)
    dropped: bool = False
    rfd: int | None = None  # kept open for reads (``MAX_OPEN`` of them at most)
    readers: int = 0  # reads using ``rfd`` now: it is closed only when none is


class BlockStore:
    """See the module docstring. ``staging`` is the budget shared with staging files."""

    def __init__(self, staging: CacheDir, path: str, *, keep: bool, block: int = BLOCK) -> None:
        self.staging = staging
        self.path = path
        self.keep = keep
        self.block = block
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}
        self._lru: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._open: OrderedDict[str, _File] = OrderedDict()  # files with ``rfd``
        self.used = 0
        self.hits = 0
        self.corrupt = 0
        self.evicted = 0
        self._lock_fd: int | None = None
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise UsageError(f"{path} is not a directory of ours: choose another --cache-dir")
        os.chmod(path, 0o700)
        if keep:
            fd = os.open(os.path.join(path, _LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise UsageError(
                    f"{path} is used by another mount: give this one its own --cache-dir"
                ) from None
            self._lock_fd = fd
            self._load()
        staging.reclaim = self.reclaim

    # -- reading and writing blocks -----------------------------------------------------

    def has(self, name: str, first: int, last: int) -> bool:
        """Whether blocks ``first..last`` of the version are all cached."""
        f = self._files.get(name)
        return f is not None and all(i in f.crcs for i in range(first, last + 1))

    def missing(self, name: str, first: int, last: int) -> list[int]:
        f = self._files.get(name)
        if f is None:
            return list(range(first, last + 1))
        return [i for i in range(first, last + 1) if i not in f.crcs and i not in f.pending]

    def read(
        self, name: str, offset: int, length: int, *, nowait: bool = False
    ) -> bytes | memoryview | None:
        """Bytes ``[offset, offset+length)`` of the version if every block under them
        is cached and checks out; else None (a block that failed its check is dropped).
        ``nowait``: raise ``BlockingIOError`` rather than wait for the disk (the blocks
        are not all in the page cache), so the caller may read inline, off a thread."""
        block = self.block
        first, last = offset // block, (offset + length - 1) // block
        with self._lock:
            f = self._files.get(name)
            if f is None or f.dropped:
                return None
            if first == last:  # the common case (a random 64 KiB read): no lists
                crc = f.crcs.get(first)
                if crc is None:
                    return None
                expect = [crc]
                self._lru.move_to_end((name, first))
            else:
                expect = [f.crcs.get(i) for i in range(first, last + 1)]
                if None in expect:
                    return None
                for i in range(first, last + 1):
                    self._lru.move_to_end((name, i))
            fd = self._reader(f)
        start = first * block
        span = min(f.size, (last + 1) * block) - start
        try:
            if nowait:
                data: bytes | bytearray = bytearray(span)
                if os.preadv(fd, [data], start, os.RWF_NOWAIT) != span:
                    raise BlockingIOError
            else:
                data = os.pread(fd, span, start)
        finally:
            with self._lock:
                f.readers -= 1
                if f.dropped or self._open.get(f.name) is not f:
                    self._close_reader(f)
        lengths = f.lengths
        if first == last:
            bad = [] if crc32c(data) == expect[0] and len(data) == lengths.get(first) else [first]
        else:
            view = memoryview(data)
            bad = [
                first + j
                for j, crc in enumerate(expect)
                if crc32c(view[j * block : (j + 1) * block]) != crc
                or len(view[j * block : (j + 1) * block]) != lengths.get(first + j)
            ]
        if bad:
            with self._lock:
                for i in bad:
                    if f.crcs.get(i) == expect[i - first]:
                        self._evict(f, i)
                self.corrupt += len(bad)
            return None
        self.hits += 1
        rel = offset - start
        if rel == 0 and length >= len(data):
            return data  # FUSE replies from any buffer
        return memoryview(data)[rel : rel + length]  # no copy

    def _reader(self, f: _File) -> int:
        """``f``'s read descriptor, opened if need be (under the lock); the caller
        gives it back by ``readers -= 1`` under the lock."""
        if f.rfd is None:
            f.rfd = os.open(f.path, os.O_RDONLY | os.O_CLOEXEC)
        fd = f.rfd
        self._open[f.name] = f  # back in if a bound let it go while a read used it
        self._open.move_to_end(f.name)
        f.readers += 1  # before the bound: ``f`` may be the one let go (closed after)
        while len(self._open) > MAX_OPEN:
            _, old = self._open.popitem(last=False)
            self._close_reader(old)
        return fd

    def _close_reader(self, f: _File) -> None:
        """Close ``f``'s read descriptor unless a read is using it (that read closes it
        when done: ``f`` is out of ``_open`` or dropped by then)."""
        if f.rfd is not None and f.readers == 0:
            os.close(f.rfd)
            f.rfd = None
            if self._open.get(f.name) is f:
                del self._open[f.name]

    def store(self, name: str, size: int, offset: int, data: bytes | memoryview) -> int:
        """Cache the whole blocks of ``data`` (which starts at block-aligned ``offset``
        of the version; a short last block only at the object's end). Blocks already
        cached, or with no room left, are skipped. Returns the bytes stored."""
        view = memoryview(data).cast("B")
        first = offset // self.block
        count = -(-len(view) // self.block)
        take: list[int] = []
        with self._lock:
            f = self._files.get(name)
            if f is None:
                f = self._files[name] = _File(name, os.path.join(self.path, name), size)
            for j in range(count):
                i = first + j
                n = min(self.block, len(view) - j * self.block)
                if n < self.block and offset + j * self.block + n < size:
                    break  # a short piece inside the object: not a whole block
                if i in f.crcs or i in f.pending:
                    continue
                f.pending.add(i)  # first: an eviction to make room must not drop ``f``
                if not self._reserve(n):
                    f.pending.discard(i)
                    break
                f.lengths[i] = n
                take.append(j)
            if not take:
                return 0
            fd = os.open(f.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        crcs: dict[int, int] = {}
        try:
            for j in take:
                piece = view[j * self.block : (j + 1) * self.block]
                pos = offset + j * self.block
                while piece:
                    n = os.pwrite(fd, piece, pos)
                    piece, pos = piece[n:], pos + n
                crcs[first + j] = crc32c(view[j * self.block : (j + 1) * self.block])
        finally:
            os.close(fd)
            with self._lock:
                stored = 0
                ext = native.ext
                for j in take:
                    i = first + j
                    f.pending.discard(i)
                    if i in crcs and not f.dropped:
                        f.crcs[i] = crcs[i]
                        self._lru[(name, i)] = None
                        stored += f.lengths[i]
                        if ext is not None:
                            n = f.lengths[i]
                            ext.set_block(name, f.path, f.size, self.block, i, crcs[i], n)
                    else:
                        self._unreserve(f.lengths.pop(i, 0))
        return stored

    def drop(self, name: str) -> None:
        """Forget every block of a version (the object changed)."""
        with self._lock:
            f = self._files.pop(name, None)
            if f is None:
                return
            f.dropped = True
            if native.ext is not None:
                native.ext.drop(name)
            self._open.pop(name, None)
            self._close_reader(f)
            for i in list(f.crcs):
                self._lru.pop((name, i), None)
                self._unreserve(f.lengths.pop(i, 0))
            f.crcs.clear()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f.path)

    # -- the bound ------------------------------------------------------------------------

    def reclaim(self, n: int) -> int:
        """Evict least recently used blocks until ``n`` bytes are freed (or none are
        left); returns the bytes freed. Called by ``CacheDir`` for staging files."""
        freed = 0
        with self._lock:
            while freed < n and self._lru:
                freed += self._evict_lru()
        return freed

    def _reserve(self, n: int) -> bool:
        while not self.staging.try_reserve(n, reclaim=False):
            if not self._lru:
                return False
            self._evict_lru()
        self.used += n
        return True

    def _unreserve(self, n: int) -> None:
        self.used -= n
        self.staging.release(n)

    def _evict_lru(self) -> int:
        """Evict the least recently used block. Hits served by ``_native`` do not pass
        here: a block it served since last asked gets a second chance (CLOCK)."""
        ext = native.ext
        key = next(iter(self._lru))
        if ext is not None:
            for _ in range(len(self._lru)):
                key = next(iter(self._lru))
                if not ext.referenced(*key):
                    break
                self._lru.move_to_end(key)
        name, i = key
        f = self._files[name]
        n = f.lengths.get(i, 0)
        self._evict(f, i)
        return n

    def _evict(self, f: _File, i: int) -> None:
        self._lru.pop((f.name, i), None)
        f.crcs.pop(i, None)
        ext = native.ext
        if ext is not None:
            ext.clear_block(f.name, i)
        self._unreserve(f.lengths.pop(i, 0))
        self.evicted += 1
        with contextlib.suppress(OSError):
            fd = os.open(f.path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                punch_hole(fd, i * self.block, self.block)
            finally:
                os.close(fd)
        if not f.crcs and not f.pending:
            self._files.pop(f.name, None)
            f.dropped = True
            if ext is not None:
                ext.drop(f.name)
            self._open.pop(f.name, None)
            self._close_reader(f)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f.path)

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """At unmount: keep the blocks and their index (``keep``), else remove them."""
        with self._lock:
            if native.ext is not None:
                native.ext.clear()
            if self.keep:
                index = {
                    f.name: {"size": f.size, "crcs": {str(i): c for i, c in f.crcs.items()}}
                    for f in self._files.values()
                }
                tmp = os.path.join(self.path, _INDEX + ".tmp")
                with open(tmp, "w", encoding="utf-8") as out:
                    json.dump(index, out)
                os.replace(tmp, os.path.join(self.path, _INDEX))
            else:
                shutil.rmtree(self.path, ignore_errors=True)
            for f in list(self._open.values()):
                f.readers = 0
                self._close_reader(f)
            self._open.clear()
            self._files.clear()
            self._lru.clear()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _load(self) -> None:
        """The index a previous mount kept. Anything it does not vouch for is removed;
        what it does is charged to the budget (oldest first out)."""
        index_path = os.path.join(self.path, _INDEX)
        try:
            with open(index_path, encoding="utf-8") as src:
                index = json.load(src)
            os.unlink(index_path)  # rewritten at unmount; a crash must not trust it
        except (OSError, ValueError):
            index = {}
        if not isinstance(index, dict):
            index = {}
        for entry in os.listdir(self.path):
            if entry == _LOCK:
                continue
            info: Any = index.get(entry)
            try:
                f = _File(entry, os.path.join(self.path, entry), int(info["size"]))
                blocks = {int(i): int(c) for i, c in info["crcs"].items()}
            except (TypeError, KeyError, ValueError, AttributeError):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.path, entry))
                continue
            self._files[entry] = f
            for i, crc in sorted(blocks.items()):
                n = min(self.block, f.size - i * self.block)
                if n <= 0 or not self._reserve(n):
                    continue
                f.crcs[i] = crc
                f.lengths[i] = n
                if native.ext is not None:
                    native.ext.set_block(entry, f.path, f.size, self.block, i, crc, n)
                self._lru[(entry, i)] = None
