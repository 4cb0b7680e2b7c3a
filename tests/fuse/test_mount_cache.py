"""The mount's block cache of object data (issue #23; docs/SEMANTICS.md, "Read
cache"), through real mounts of real servers: its bound, its directory, its
consistency with the store, its checks, and that handles share it. GETs are counted
on the wire by ``CountingProxy`` in front of SeaweedFS.

Readers here ask the kernel for no read-ahead (``POSIX_FADV_RANDOM``, as fio does for
random jobs), so each ``pread`` reaches the mount as one random read.
"""

from __future__ import annotations

import os
import random
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from datamover.stores.base import MiB

from counting_proxy import CountingProxy
from mounting import Mount, Target, mount_through

pytestmark = [pytest.mark.fuse, pytest.mark.cloud, pytest.mark.timeout(300)]

CACHE = 64 * MiB
BLOCK = 64 * 1024
KiB = 1024
#: What the filesystem under the cache may add to the blocks' own bytes (extent maps).
SLACK = 1 * MiB


@pytest.fixture
def proxy(s3_target: Target) -> Iterator[CountingProxy]:
    with CountingProxy(s3_target.backend.server.endpoint) as p:
        yield p


def payload(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def random_fd(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    return fd


def pread_fresh(path: Path, offset: int, length: int) -> bytes:
    """Through a new handle, with the kernel's cached pages of the file dropped first,
    so the read reaches the mount."""
    fd = random_fd(path)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def disk_usage(root: Path) -> int:
    """Bytes of disk the files under ``root`` hold (sparse holes excluded)."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def block_files(cache: Path) -> list[Path]:
    return [p for p in cache.glob("datamover-mount-*/blocks/*") if p.is_file()]


def wait_cached(cache: Path, data: bytes, limit: float = 30) -> None:
    """Until a block file of the mount's ``cache`` holds all of ``data`` (the
    background fetch of the whole object is stored), then a moment more for the
    mirror in C to learn of its last blocks; a time-out fails."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for f in block_files(cache):
            with open(f, "rb") as fh:
                if fh.read(len(data) + 1) == data:
                    time.sleep(0.2)
                    return
        time.sleep(0.05)
    raise AssertionError(f"the object was not cached within {limit} s")


def gets(proxy: CountingProxy, path: str) -> int:
    """GETs of exactly ``path`` (``/bucket/key``), or of every key under a ``path``
    ending in ``/``."""
    return sum(
        1 for p in proxy.paths("GET") if p == path or (path.endswith("/") and p.startswith(path))
    )


def settle(proxy: CountingProxy, path: str, quiet: float = 0.5, limit: float = 30) -> int:
    """The GET count once no GET has arrived for ``quiet`` s (background fetches done)."""
    deadline = time.monotonic() + limit
    count = gets(proxy, path)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = gets(proxy, path)
        if now == count:
            return now
        count = now
    return count


def test_cache_bound_holds_under_three_times_the_working_set(
    s3_target: Target, proxy: CountingProxy, tmp_path: Path
) -> None:
    """24 objects of 8 MiB read at random (each fetched whole in the background) with
    a 64 MiB cache: the blocks on disk never exceed it, and every byte read is right."""
    prefix = f"bound-{uuid.uuid4().hex[:8]}/"
    size, count = 8 * MiB, 24
    for i in range(count):
        s3_target.store.put(f"{prefix}f{i:02d}", payload(size, i))
    cache = tmp_path / "m.cache"
    rng = random.Random(7)
    peak = 0
    with mount_through(proxy, s3_target, tmp_path, cache_size=CACHE) as m:
        private = next(cache.glob("datamover-mount-*"))
        blocks = private / "blocks"
        assert stat.S_IMODE(os.stat(private).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(blocks).st_mode) == 0o700
        for rounds in range(2):
            for i in range(count):
                data = payload(size, i)
                fd = random_fd(m.path / prefix / f"f{i:02d}")
                try:
                    for _ in range(8):
                        off = rng.randrange(1, size - 65536)
                        assert os.pread(fd, 65536, off) == data[off : off + 65536], (rounds, i)
                        peak = max(peak, disk_usage(blocks))
                finally:
                    os.close(fd)
        settle(proxy, f"/{s3_target.backend.bucket}/{prefix}")
        peak = max(peak, disk_usage(blocks))
        assert disk_usage(cache) <= CACHE + SLACK
    assert peak <= CACHE + SLACK, peak
    assert peak >= CACHE // 2  # it was used
    assert not list(cache.glob("datamover-mount-*")), "the cache dir outlived the mount"


def test_two_handles_share_blocks(s3_target: Target, proxy: CountingProxy, tmp_path: Path) -> None:
    """An object above the whole-fetch threshold (a quarter of the cache): blocks one
    handle fetched answer the other handle without a GET."""
    key = f"share-{uuid.uuid4().hex[:8]}/big"
    size = 20 * MiB
    data = payload(size, 1)
    s3_target.store.put(key, data)
    path_prefix = f"/{s3_target.backend.bucket}/{key}"
    with mount_through(proxy, s3_target, tmp_path, cache_size=CACHE) as m:
        path = m.path / key
        a, b = random_fd(path), random_fd(path)
        try:
            base = 10 * MiB  # far from where a fresh handle starts
            assert os.pread(a, 4096, base + 8192) == data[base + 8192 : base + 12288]
            before = settle(proxy, path_prefix)
            # Another page of the same block, and of the block fetched ahead of it.
            for off in (base + 100_000, base + BLOCK + 4096):
                assert os.pread(b, 4096, off) == data[off : off + 4096]
            assert gets(proxy, path_prefix) == before, proxy.ranges
            far = 17 * MiB + 512 * KiB  # not fetched yet: b's read goes to the store
            assert os.pread(b, 4096, far) == data[far : far + 4096]
            assert gets(proxy, path_prefix) > before
        finally:
            os.close(a)
            os.close(b)


def test_corrupt_block_is_detected_and_fetched_again(
    s3_target: Target, proxy: CountingProxy, tmp_path: Path
) -> None:
    key = f"corrupt-{uuid.uuid4().hex[:8]}/obj"
    size = 2 * MiB
    data = payload(size, 2)
    s3_target.store.put(key, data)
    cache = tmp_path / "m.cache"
    path_prefix = f"/{s3_target.backend.bucket}/{key}"
    with mount_through(proxy, s3_target, tmp_path, cache_size=CACHE) as m:
        path = m.path / key
        off = 16 * BLOCK + 5000  # 1 MiB on
        for o in (1792 * KiB, 1280 * KiB, off):  # random: the object is fetched whole
            assert pread_fresh(path, o, 4096) == data[o : o + 4096]
        wait_cached(cache, data)
        [blockfile] = block_files(cache)
        assert disk_usage(blockfile.parent) >= size
        before = gets(proxy, path_prefix)
        assert pread_fresh(path, off, 4096) == data[off : off + 4096]
        assert gets(proxy, path_prefix) == before  # served from the cache
        with open(blockfile, "r+b") as f:  # flip one byte of block 16
            f.seek(16 * BLOCK + 77)
            byte = f.read(1)
            f.seek(16 * BLOCK + 77)
            f.write(bytes([byte[0] ^ 0xFF]))
        assert pread_fresh(path, off, 4096) == data[off : off + 4096]
        assert gets(proxy, path_prefix) > before  # detected, fetched again
        # ... and stored again: the next read is local and right.
        again = gets(proxy, path_prefix)
        assert pread_fresh(path, 16 * BLOCK, BLOCK) == data[16 * BLOCK : 17 * BLOCK]
        assert gets(proxy, path_prefix) == again


def test_changed_object_is_fetched_again_after_the_attr_ttl(target: Target, tmp_path: Path) -> None:
    key = target.fresh_key("changing")
    size = 1 * MiB
    old, new = payload(size, 3), payload(size, 4)
    target.store.put(key, old)
    m = Mount(target.backend.url(), tmp_path / "m", target.backend.env, "--attr-ttl", "1")
    with m:
        path = m.path / key
        off = 600 * KiB + 123
        # Random reads: ``off`` is in the blocks the read at 384 KiB fetched; 200 KiB,
        # near where a fresh handle starts, fetches the MiB around it: all of it.
        for o in (768 * KiB, 384 * KiB, off, 200 * KiB):
            assert pread_fresh(path, o, 4096) == old[o : o + 4096]
        wait_cached(tmp_path / "m.cache", old)
        assert pread_fresh(path, 10, 4096) == old[10:4106]  # cached, and still current
        target.store.put(key, new)
        time.sleep(1.5)
        assert pread_fresh(path, off, 4096) == new[off : off + 4096]
        assert pread_fresh(path, 10, 4096) == new[10:4106]


def test_cache_keep_needs_a_cache_dir_and_keeps_blocks(
    s3_target: Target, proxy: CountingProxy, tmp_path: Path
) -> None:
    key = f"keep-{uuid.uuid4().hex[:8]}/obj"
    size = 1 * MiB
    data = payload(size, 5)
    s3_target.store.put(key, data)
    path_prefix = f"/{s3_target.backend.bucket}/{key}"
    kept = tmp_path / "m.cache" / "datamover-blocks"
    off = 512 * KiB + 99  # far from where a fresh handle starts: a random read
    with mount_through(proxy, s3_target, tmp_path, cache_size=CACHE, cache_keep=True) as m:
        assert pread_fresh(m.path / key, off, 4096) == data[off : off + 4096]
        settle(proxy, path_prefix)
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o700
    assert any(p.name != ".lock" for p in kept.iterdir())
    before = gets(proxy, path_prefix)
    with mount_through(proxy, s3_target, tmp_path, cache_size=CACHE, cache_keep=True) as m:
        assert pread_fresh(m.path / key, off, 4096) == data[off : off + 4096]
    assert gets(proxy, path_prefix) == before, proxy.ranges


def test_background_fetch_yields_to_reads(s3_target: Target, tmp_path: Path) -> None:
    """A server that serves requests in turn: the proxy holds each background range
    (4 MiB, less what is cached) back 1 s, and every other GET 0.15 s per background
    range in flight. While random reads keep missing, the background fetch of the
    whole object soon keeps one range in flight (the reads' GETs, slowed, cut it back
    from six); once reads stop it opens up to six again. A read of blocks a background range is
    fetching waits for it, without a GET of its own. The reads walk down from the end
    of the object while the background fetch works up from its start, so every read
    misses."""
    key = f"yield-{uuid.uuid4().hex[:8]}/obj"
    size = 160 * MiB  # 40 ranges of 4 MiB, below a quarter of the cache
    data = payload(size, 6)
    s3_target.store.put(key, data)
    path_prefix = f"/{s3_target.backend.bucket}/{key}"
    slow = CountingProxy(s3_target.backend.server.endpoint, slow_gets=(1 * MiB, 1.0, 0.15))
    options = {"cache_size": 1024 * MiB, "read_part_size": 4 * MiB}  # background ranges
    with slow as proxy, mount_through(proxy, s3_target, tmp_path, **options) as m:
        fd = random_fd(m.path / key)
        try:
            for off in (40 * MiB, 80 * MiB, 20 * MiB):  # far apart: fetched whole
                assert os.pread(fd, BLOCK, off) == data[off : off + BLOCK]
            # The background fetch has the first ranges in flight now: a read there
            # waits for them.
            off = MiB + 5 * BLOCK
            assert os.pread(fd, BLOCK, off) == data[off : off + BLOCK]
            reads = 0
            for off in range(size - 4 * BLOCK, size - 8 * MiB, -4 * BLOCK):  # each a miss
                assert os.pread(fd, BLOCK, off) == data[off : off + BLOCK]
                reads += 1
                if reads == 3:  # the first ranges went out before any read was slowed
                    proxy.max_in_flight.clear()
            busy = proxy.max_in_flight["slow GET"]
            proxy.max_in_flight.clear()
            stopped = len(proxy.ranges)
            settle(proxy, path_prefix, quiet=1.5)
            quiet = proxy.max_in_flight["slow GET"]
            for off in range(0, size, 4 * MiB):  # all local now, and right
                assert os.pread(fd, BLOCK, off + 999) == data[off + 999 : off + 999 + BLOCK]
        finally:
            os.close(fd)
    ranges = sorted(
        (first, last - first + 1) for p, first, last in proxy.ranges if p == path_prefix
    )
    assert [r for r in ranges if r[0] < 4 * MiB] == [(0, 4 * MiB)], ranges[:4]
    # One range while reads are busy (two or three if the machine stalled the reader
    # for more than YIELD_FOR between two misses), more once they stop.
    background = [first // MiB for first, length in ranges if length >= MiB]
    assert 1 <= busy <= 3, (busy, reads, background)
    # Once reads stop it opens up again, one more range per range that came back
    # unslowed: to four when enough ranges were left (a loaded machine leaves fewer,
    # the busy phase having lasted longer).
    after = [
        first
        for p, first, last in proxy.ranges[stopped:]
        if p == path_prefix and last - first >= MiB
    ]
    assert quiet >= min(4, len(after) - 2), (quiet, len(after), reads, background)
    assert len(after) >= 4, (len(after), reads, background)
    assert "1 objects fetched whole" in m.log.read_text()
