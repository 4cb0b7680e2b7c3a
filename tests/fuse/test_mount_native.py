"""Reads of cached blocks answered in C on reader threads (``datamover_fuse/_native.c``,
issue #23), through real mounts of SeaweedFS behind a GET-counting proxy.

The other cache tests open a fresh handle per read; every open unbinds the handles
``_native`` answers for, so those reads go through Python. These keep one handle
open, as fio, HDF5 and SQLite do, so that after its first read each READ of a cached
block is answered in C: the data must be right, a flipped byte in the cache must be
caught there too, and a changed object must not be served from the old blocks once
the mount has learned of the change.
"""

from __future__ import annotations

import ast
import errno
import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_mount_cache import (
    BLOCK,
    CACHE,
    block_files,
    gets,
    payload,
    random_fd,
    settle,
    wait_cached,
)

from datamover.stores.base import MiB

from counting_proxy import CountingProxy
from mounting import Mount, Target, mount_through

pytestmark = [pytest.mark.fuse, pytest.mark.cloud, pytest.mark.timeout(300)]


@pytest.fixture
def proxy(s3_target: Target) -> Iterator[CountingProxy]:
    with CountingProxy(s3_target.backend.server.endpoint) as p:
        yield p


def native_stats(m: Mount) -> tuple[str, dict[str, int]]:
    """How the unmounted mount answered cached reads, and its C counters (its log)."""
    mode, stats = "", {}
    for line in m.log.read_text(errors="replace").splitlines():
        if "reads of cached blocks answered: " in line:
            mode = line.rsplit(": ", 1)[1].strip()
        if "reads answered in C: " in line:
            stats = ast.literal_eval(line.split("reads answered in C: ", 1)[1])
    return mode, stats


def fresh_pread(fd: int, offset: int, length: int) -> bytes:
    """``pread`` on a kept handle after dropping the kernel's pages: reaches the mount."""
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    return os.pread(fd, length, offset)


@pytest.mark.parametrize("threads", [2, 0], ids=["threads", "inline"])
def test_kept_handle_reads_are_answered_in_c(
    s3_target: Target, proxy: CountingProxy, tmp_path: Path, threads: int
) -> None:
    key = f"native-{uuid.uuid4().hex[:8]}/obj"
    size = 4 * MiB + 12345  # a short last block
    data = payload(size, 11)
    s3_target.store.put(key, data)
    path_prefix = f"/{s3_target.backend.bucket}/{key}"
    rng = random.Random(3)
    with mount_through(proxy, s3_target, tmp_path, cache_size=CACHE, read_threads=threads) as m:
        fd = random_fd(m.path / key)
        try:
            for o in (4 * MiB, 512 * 1024, 3 * MiB, 7):  # random: fetched whole
                assert fresh_pread(fd, o, 4096) == data[o : o + 4096]
            settle(proxy, path_prefix)
            before = gets(proxy, path_prefix)
            for _ in range(300):
                off = rng.randrange(0, size)
                n = rng.choice((512, 4096, BLOCK, 3 * BLOCK + 17))
                assert fresh_pread(fd, off, n) == data[off : off + n], (off, n)
            tail = size - 100
            assert fresh_pread(fd, tail, BLOCK) == data[tail:]  # past the end: short
            assert fresh_pread(fd, size + 10, 4096) == b""
            assert gets(proxy, path_prefix) == before, proxy.ranges
        finally:
            os.close(fd)
    mode, stats = native_stats(m)
    assert mode == ("threads" if threads else "inline")
    assert stats["hits"] >= 250, stats
    assert stats["failed_check"] == 0, stats


def test_flipped_byte_is_caught_in_c_and_fetched_again(
    s3_target: Target, proxy: CountingProxy, tmp_path: Path
) -> None:
    key = f"native-bad-{uuid.uuid4().hex[:8]}/obj"
    size = 2 * MiB
    data = payload(size, 12)
    s3_target.store.put(key, data)
    cache = tmp_path / "m.cache"
    path_prefix = f"/{s3_target.backend.bucket}/{key}"
    off = 16 * BLOCK + 5000
    with mount_through(proxy, s3_target, tmp_path, cache_size=CACHE) as m:
        fd = random_fd(m.path / key)
        try:
            for o in (1792 * 1024, 1280 * 1024, off):
                assert fresh_pread(fd, o, 4096) == data[o : o + 4096]
            settle(proxy, path_prefix)
            for _ in range(3):  # answered in C, no GET
                before = gets(proxy, path_prefix)
                assert fresh_pread(fd, off, 4096) == data[off : off + 4096]
                assert gets(proxy, path_prefix) == before
            [blockfile] = block_files(cache)
            with open(blockfile, "r+b") as f:  # flip one byte of block 16
                f.seek(16 * BLOCK + 77)
                byte = f.read(1)
                f.seek(16 * BLOCK + 77)
                f.write(bytes([byte[0] ^ 0xFF]))
            assert fresh_pread(fd, off, 4096) == data[off : off + 4096]
            assert gets(proxy, path_prefix) > before  # caught, fetched again
            again = gets(proxy, path_prefix)
            for _ in range(3):  # stored again, and answered in C again
                assert fresh_pread(fd, 16 * BLOCK, BLOCK) == data[16 * BLOCK : 17 * BLOCK]
            assert gets(proxy, path_prefix) == again
        finally:
            os.close(fd)
    _, stats = native_stats(m)
    assert stats["failed_check"] >= 1, stats
    assert stats["hits"] >= 6, stats


def test_changed_object_is_not_served_from_old_blocks(target: Target, tmp_path: Path) -> None:
    """A handle kept open across a change in the store: once the mount learns the new
    ETag (a stat after the attribute TTL), that handle reads no more (ESTALE: neither
    the old version's blocks nor the new bytes mixed into what it read), and a new
    open reads the new bytes."""
    key = target.fresh_key("native-changing")
    size = 1 * MiB
    old, new = payload(size, 13), payload(size, 14)
    target.store.put(key, old)
    m = Mount(target.backend.url(), tmp_path / "m", target.backend.env, "--attr-ttl", "1")
    with m:
        path = m.path / key
        fd = random_fd(path)
        try:
            off = 600 * 1024 + 123
            # Far from the read before, but ``off``: the third far read (10) starts the
            # fetch of the whole object.
            for o in (768 * 1024, 384 * 1024, off, 10):
                assert fresh_pread(fd, o, 4096) == old[o : o + 4096]
            wait_cached(tmp_path / "m.cache", old)
            for _ in range(3):  # answered in C
                assert fresh_pread(fd, 10, 4096) == old[10:4106]
            target.store.put(key, new)
            time.sleep(1.5)
            os.stat(path)  # the kernel asks again: the mount sees the new ETag
            for o in (off, 10):
                with pytest.raises(OSError) as err:
                    fresh_pread(fd, o, 4096)
                assert err.value.errno == errno.ESTALE
            again = random_fd(path)
            try:
                assert fresh_pread(again, off, 4096) == new[off : off + 4096]
                assert fresh_pread(again, 10, 4096) == new[10:4106]
            finally:
                os.close(again)
        finally:
            os.close(fd)
    mode, stats = native_stats(m)
    assert mode == "threads"
    assert stats["hits"] >= 3, stats


def test_write_through_the_mount_is_seen_by_a_kept_reader(
    s3_target: Target, proxy: CountingProxy, tmp_path: Path
) -> None:
    """One handle reads (answered in C), another writes the same file through the
    mount: the reader's next read is the written bytes, not the cached ones."""
    key = f"native-rw-{uuid.uuid4().hex[:8]}/obj"
    size = 1 * MiB
    data = payload(size, 15)
    s3_target.store.put(key, data)
    path_prefix = f"/{s3_target.backend.bucket}/{key}"
    with mount_through(proxy, s3_target, tmp_path, cache_size=CACHE) as m:
        path = m.path / key
        fd = random_fd(path)
        try:
            for o in (768 * 1024, 384 * 1024, 100):
                assert fresh_pread(fd, o, 4096) == data[o : o + 4096]
            settle(proxy, path_prefix)
            for _ in range(3):
                assert fresh_pread(fd, 100, 4096) == data[100:4196]
            wfd = os.open(path, os.O_WRONLY)
            try:
                os.pwrite(wfd, b"X" * 4096, 100)
            finally:
                os.close(wfd)
            assert fresh_pread(fd, 100, 4096) == b"X" * 4096
            assert fresh_pread(fd, 8192, 4096) == data[8192:12288]
        finally:
            os.close(fd)


def _reader(path: str, seed: int, size: int, seconds: float) -> int:
    """Random reads of a kept handle for ``seconds``, pages dropped now and then;
    returns the reads done (raises on a wrong byte)."""
    data = payload(size, 16)
    rng = random.Random(seed)
    fd = random_fd(Path(path))
    done = 0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if done % 64 == 0:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            off = rng.randrange(0, size - BLOCK) & ~4095
            got = os.pread(fd, BLOCK, off)
            if got != data[off : off + BLOCK]:
                raise AssertionError(f"wrong bytes at {off}")
            done += 1
    finally:
        os.close(fd)
    return done


def test_readers_in_c_beside_other_requests(
    s3_target: Target, proxy: CountingProxy, tmp_path: Path
) -> None:
    """Four processes read one cached object at random (answered in C) while this one
    creates, writes, lists, stats and removes other files through the same mount (all
    handed to Python): every byte read is right and every other request is answered."""
    from concurrent.futures import ProcessPoolExecutor

    prefix = f"native-mix-{uuid.uuid4().hex[:8]}/"
    size = 8 * MiB
    s3_target.store.put(prefix + "obj", payload(size, 16))
    path_prefix = f"/{s3_target.backend.bucket}/{prefix}obj"
    with mount_through(proxy, s3_target, tmp_path, cache_size=CACHE) as m:
        path = m.path / prefix / "obj"
        fd = random_fd(path)
        try:
            for o in (7 * MiB, 1 * MiB, 5 * MiB, 3 * MiB):
                os.pread(fd, 4096, o)
        finally:
            os.close(fd)
        settle(proxy, path_prefix)
        with ProcessPoolExecutor(4) as pool:
            futures = [pool.submit(_reader, str(path), i, size, 6.0) for i in range(4)]
            n = 0
            while not all(f.done() for f in futures):
                other = m.path / prefix / f"other-{n}"
                other.write_bytes(b"x" * (n + 1) * 1000)
                assert other.read_bytes() == b"x" * (n + 1) * 1000
                assert other.stat().st_size == (n + 1) * 1000
                assert f"other-{n}" in os.listdir(m.path / prefix)
                other.unlink()
                n += 1
            reads = [f.result() for f in futures]
        assert n >= 3, n
        assert sum(reads) >= 400, reads
    mode, stats = native_stats(m)
    assert mode == "threads"
    assert stats["hits"] >= 100, stats
    assert stats["failed_check"] == 0, stats
