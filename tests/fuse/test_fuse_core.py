"""``FsCore`` driven directly, without a kernel: against the in-memory store (which
counts requests and injects failures) and against the POSIX store."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from datamover.errors import Unsupported, UsageError
from datamover.posixmeta import PosixAttrs
from datamover.stores.base import MiB, ObjectInfo
from datamover.stores.posix import PosixStore
from datamover_fuse.core import FsCore
from datamover_fuse.fserrors import FsError
from datamover_fuse.inodes import ROOT_INO, Attr, SetAttrs
from datamover_fuse.options import MountOptions

from corekit import (
    GID,
    UID,
    FakeClock,
    core_options,
    errno_of,
    listdir,
    parent_of,
    payload,
    read_file,
    run,
    walk,
    write_file,
)
from memstore import MemoryStore

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def options(tmp_path: Path) -> MountOptions:
    return core_options(tmp_path)


# -- writes -------------------------------------------------------------------------------


def test_small_file_is_one_put_with_posix_metadata_and_digest(options: MountOptions) -> None:
    store = MemoryStore()
    data = payload(100_000)

    async def body(core: FsCore) -> None:
        await write_file(core, "a.txt", data)
        assert await read_file(core, "a.txt") == data

    run(store, options, body)
    assert store.data("a.txt") == data
    meta = store.meta("a.txt")
    attrs = PosixAttrs.from_metadata(meta)
    assert attrs.mode == 0o100640 and attrs.uid == UID and attrs.gid == GID
    assert meta["datamover-sha256"] == hashlib.sha256(data).hexdigest()
    assert store.calls["put"] == 1 and store.calls["open_writer"] == 0


def test_sequential_write_streams_parts_before_close(options: MountOptions) -> None:
    store = MemoryStore(accepts_unknown_size=True)
    data = payload(21 * MiB + 5)
    parts_before_close: list[int] = []

    async def body(core: FsCore) -> None:
        parent, name = await parent_of(core, "big.bin")
        fh, _ = await core.create(parent, name, 0o100644, os.O_WRONLY, UID, GID)
        for off in range(0, len(data), MiB):
            await core.write(fh, off, data[off : off + MiB])
        with trio.move_on_after(10):
            while store.calls["write_part"] < 2:
                await trio.sleep(0.01)
        parts_before_close.append(store.calls["write_part"])
        await core.flush(fh)
        await core.release(fh)

    run(store, options, body)
    assert parts_before_close[0] >= 2  # 8 MiB parts went up while writing
    assert store.data("big.bin") == data
    assert store.calls["put"] == 0
    assert store.writers[0].state == "committed"
    assert store.meta("big.bin")["datamover-sha256"] == hashlib.sha256(data).hexdigest()


def test_out_of_order_write_switches_a_stream_to_staging(options: MountOptions) -> None:
    store = MemoryStore(accepts_unknown_size=True)
    data = bytearray(payload(20 * MiB))

    async def body(core: FsCore) -> None:
        parent, name = await parent_of(core, "h5like")
        fh, _ = await core.create(parent, name, 0o100644, os.O_RDWR, UID, GID)
        for off in range(0, len(data), MiB):
            await core.write(fh, off, bytes(data[off : off + MiB]))
        await core.write(fh, 10, b"SUPERBLOCK")  # HDF5 rewrites its header at close
        data[10:20] = b"SUPERBLOCK"
        assert await core.read(fh, 0, 32) == bytes(data[:32])
        await core.flush(fh)
        await core.release(fh)

    run(store, options, body)
    assert store.data("h5like") == bytes(data)
    assert store.writers[0].state == "aborted"
    assert store.writers[-1].state == "committed"
    assert store.meta("h5like")["datamover-sha256"] == hashlib.sha256(data).hexdigest()


def test_store_without_unknown_size_stages_and_uploads_exact_size(
    options: MountOptions,
) -> None:
    store = MemoryStore(accepts_unknown_size=False)
    data = payload(19 * MiB)

    async def body(core: FsCore) -> None:
        await write_file(core, "d.bin", data)

    run(store, options, body)
    assert store.data("d.bin") == data
    assert [w.size for w in store.writers] == [len(data)]


def test_random_writes_into_an_existing_object(options: MountOptions) -> None:
    store = MemoryStore()
    original = payload(3 * MiB)
    store.put("obj", original, metadata={"mode": str(0o100600), "uid": "7", "gid": "8"})

    async def body(core: FsCore) -> None:
        ino = await walk(core, "obj")
        fh, _ = await core.open(ino, os.O_RDWR)
        assert store.calls["readinto"] == 0  # nothing downloaded just for opening
        await core.write(fh, MiB, b"middle")
        await core.write(fh, len(original), b"appended")
        await core.flush(fh)
        await core.release(fh)

    run(store, options, body)
    expected = bytearray(original)
    expected[MiB : MiB + 6] = b"middle"
    expected += b"appended"
    assert store.data("obj") == bytes(expected)
    attrs = PosixAttrs.from_metadata(store.meta("obj"))
    assert (attrs.mode, attrs.uid, attrs.gid) == (0o100600, 7, 8)


def test_open_read_write_without_writing_uploads_nothing(options: MountOptions) -> None:
    store = MemoryStore()
    store.put("obj", b"hello")
    puts = store.calls["put"]

    async def body(core: FsCore) -> None:
        fh, _ = await core.open(await walk(core, "obj"), os.O_RDWR)
        assert await core.read(fh, 0, 100) == b"hello"
        await core.flush(fh)
        await core.release(fh)

    run(store, options, body)
    assert store.calls["put"] == puts and store.calls["open_writer"] == 0


def test_truncate_by_path_commits_at_once(options: MountOptions) -> None:
    store = MemoryStore()
    store.put("obj", b"0123456789")

    async def body(core: FsCore) -> None:
        ino = await walk(core, "obj")
        await core.setattr(ino, SetAttrs(size=4))
        assert store.data("obj") == b"0123"
        await core.setattr(ino, SetAttrs(size=0))

    run(store, options, body)
    assert store.data("obj") == b""


def test_open_with_o_trunc_replaces_content(options: MountOptions) -> None:
    store = MemoryStore()
    store.put("obj", b"old content")

    async def body(core: FsCore) -> None:
        fh, _ = await core.open(await walk(core, "obj"), os.O_WRONLY | os.O_TRUNC)
        await core.write(fh, 0, b"new")
        await core.flush(fh)
        await core.release(fh)

    run(store, options, body)
    assert store.data("obj") == b"new"


@pytest.mark.parametrize("size", [1000, 12 * MiB])
def test_failed_upload_is_an_error_at_close_and_nothing_is_visible(
    options: MountOptions, size: int
) -> None:
    store = MemoryStore(accepts_unknown_size=False)
    store.put("keep", b"old")
    store.fail("put", 5)
    store.fail("commit", 5)

    async def body(core: FsCore) -> None:
        parent, name = await parent_of(core, "new")
        fh, _ = await core.create(parent, name, 0o100644, os.O_WRONLY, UID, GID)
        await core.write(fh, 0, payload(size))
        with pytest.raises(FsError) as e:
            await core.flush(fh)
        assert errno_of(e) == errno.EIO
        with pytest.raises(FsError):
            await core.fsync(fh)
        await core.release(fh)
        assert await core.lookup(ROOT_INO, "new") is None
        fh, _ = await core.open(await walk(core, "keep"), os.O_WRONLY | os.O_TRUNC)
        await core.write(fh, 0, payload(size, 2))
        with pytest.raises(FsError):
            await core.flush(fh)
        await core.release(fh)

    run(store, options, body)
    assert "new" not in store.objects
    assert store.data("keep") == b"old"
    assert all(w.state == "aborted" for w in store.writers)


def test_failed_stream_part_is_reported_and_aborted(options: MountOptions) -> None:
    store = MemoryStore(accepts_unknown_size=True)
    store.fail("write_part", 100)

    async def body(core: FsCore) -> None:
        parent, name = await parent_of(core, "s")
        fh, _ = await core.create(parent, name, 0o100644, os.O_WRONLY, UID, GID)
        with pytest.raises(FsError) as e:
            for off in range(0, 40 * MiB, MiB):
                await core.write(fh, off, payload(MiB))
                await trio.sleep(0.001)
        assert errno_of(e) == errno.EIO
        with pytest.raises(FsError):
            await core.flush(fh)
        await core.release(fh)

    run(store, options, body)
    assert "s" not in store.objects
    assert store.writers and all(w.state == "aborted" for w in store.writers)


def test_cache_full_is_enospc_unless_a_stream_can_free_uploaded_parts(tmp_path: Path) -> None:
    options = MountOptions(
        cache_dir=str(tmp_path),
        cache_size=64 * MiB,
        write_buffer=32 * MiB,
        stream_size_hint=64 * MiB,
    )
    staged = MemoryStore(accepts_unknown_size=False)

    async def too_big(core: FsCore) -> None:
        with pytest.raises(FsError) as e:
            await write_file(core, "x", payload(70 * MiB))
        assert errno_of(e) == errno.ENOSPC

    run(staged, options, too_big)
    assert "x" not in staged.objects

    streamed = MemoryStore(accepts_unknown_size=True)
    data = payload(100 * MiB)

    async def streams(core: FsCore) -> None:
        await write_file(core, "x", data)

    run(streamed, options, streams)
    assert streamed.data("x") == data


# -- reads --------------------------------------------------------------------------------


def test_sequential_read_prefetches_in_growing_parallel_ranges(options: MountOptions) -> None:
    store = MemoryStore()
    data = payload(40 * MiB)
    store.put("big", data)

    async def body(core: FsCore) -> None:
        assert await read_file(core, "big", chunk=128 * 1024) == data

    core = run(store, options, body)
    assert store.calls["readinto"] == 6  # 1+2+4+8 MiB, then 16 MiB parts: 16, 9
    assert store.calls["read"] == 0
    assert core.rt.prefetch.used == 0
    assert core.rt.prefetch.peak <= 64 * MiB + 16 * MiB


class RangeLog(MemoryStore):
    """Records the (offset, length) of every ``readinto``."""

    def __init__(self) -> None:
        super().__init__()
        self.ranges: list[tuple[int, int]] = []

    def readinto(
        self, key: str, offset: int, buf: memoryview, *, expect: ObjectInfo | None = None
    ) -> int:
        self.ranges.append((offset, len(buf)))
        return super().readinto(key, offset, buf, expect=expect)


def test_read_part_size_and_window_bound_the_ranged_gets(tmp_path: Path) -> None:
    options = MountOptions(cache_dir=str(tmp_path), read_part_size=4 * MiB, read_window=8 * MiB)
    store = RangeLog()
    data = payload(30 * MiB + 7)
    store.put("big", data)
    peaks: list[int] = []

    async def body(core: FsCore) -> None:
        ino = await walk(core, "big")
        fh, _ = await core.open(ino, os.O_RDONLY)
        out = []
        for off in range(0, len(data), MiB):
            out.append(bytes(await core.read(fh, off, MiB)))
            peaks.append(core.rt.prefetch.used)
        await core.release(fh)
        assert b"".join(out) == data

    core = run(store, options, body)
    sizes = [n for _, n in sorted(store.ranges)]
    assert sizes == [MiB, 2 * MiB] + [4 * MiB] * 6 + [3 * MiB + 7]
    assert store.calls["read"] == 0
    # The window (8 MiB) ahead, the part being read, what is kept for stragglers.
    assert max(peaks) <= 8 * MiB + 4 * MiB + 16 * MiB
    assert core.rt.prefetch.used == 0


def test_a_sequential_read_is_answered_with_views_of_the_read_ahead(
    options: MountOptions,
) -> None:
    """No copy in Python: 1 MiB requests inside a segment are memoryviews of it."""
    store = MemoryStore()
    data = payload(40 * MiB)
    store.put("big", data)

    async def body(core: FsCore) -> None:
        fh, _ = await core.open(await walk(core, "big"), os.O_RDONLY)
        for off in range(0, len(data), MiB):
            got = await core.read(fh, off, MiB)
            assert isinstance(got, memoryview) and got == data[off : off + MiB]
        await core.release(fh)

    run(store, options, body)


@pytest.mark.parametrize(
    "changes",
    [
        {"read_part_size": MiB - 1},
        {"read_part_size": 512 * MiB},
        {"read_part_size": 16 * MiB, "read_window": 8 * MiB},
        {"max_background": 0},
    ],
)
def test_read_bounds_are_checked(tmp_path: Path, changes: dict[str, int]) -> None:
    with pytest.raises(UsageError):
        MountOptions(cache_dir=str(tmp_path), **changes)  # type: ignore[arg-type]


def test_random_reads_are_exact_ranged_reads(options: MountOptions) -> None:
    """Without the read cache (``--no-read-cache``; with it, test_mount_cache.py)."""
    options = options.with_(read_cache=False)
    store = MemoryStore()
    data = payload(32 * MiB)
    store.put("big", data)

    async def body(core: FsCore) -> None:
        fh, _ = await core.open(await walk(core, "big"), os.O_RDONLY)
        for off in (20 * MiB, 3 * MiB, 30 * MiB, 100, 11 * MiB):
            assert await core.read(fh, off, 4096) == data[off : off + 4096]
        await core.release(fh)

    run(store, options, body)
    # Exact ranged reads, each pinned to the version opened (``readinto``'s ``expect``).
    assert store.calls["readinto"] == 5 and store.calls["read"] == 0


def test_exhausted_prefetch_budget_falls_back_to_direct_reads(tmp_path: Path) -> None:
    options = MountOptions(cache_dir=str(tmp_path), prefetch_budget=0)
    store = MemoryStore()
    data = payload(5 * MiB)
    store.put("f", data)

    async def body(core: FsCore) -> None:
        assert await read_file(core, "f", chunk=MiB) == data

    run(store, options, body)
    assert store.calls["readinto"] == 5 and store.calls["read"] == 0  # one at a time


def test_keep_cache_while_the_object_is_unchanged(options: MountOptions, clock: FakeClock) -> None:
    store = MemoryStore()
    store.put("f", b"one")

    async def body(core: FsCore) -> None:
        ino = await walk(core, "f")
        keeps = []
        for _ in range(2):
            fh, keep = await core.open(ino, os.O_RDONLY)
            keeps.append(keep)
            await core.release(fh)
        store.put("f", b"two!")
        clock.now += 60
        fh, keep = await core.open(ino, os.O_RDONLY)
        keeps.append(keep)
        assert await core.read(fh, 0, 10) == b"two!"
        await core.release(fh)
        assert keeps == [False, True, False]

    run(store, options, body, clock=clock)


# -- namespace ------------------------------------------------------------------------------


def test_readdir_heads_a_listing_batch_once_and_gives_final_attributes(
    options: MountOptions,
) -> None:
    store = MemoryStore(listing_has_metadata=False)
    for i in range(50):
        store.put(f"d/f{i:03d}", b"x" * i, metadata={"mode": str(0o100600), "mtime": "1.0"})
    store.put("d/sub/inner", b"")

    async def body(core: FsCore) -> None:
        d = await walk(core, "d")
        stats = store.calls["stat"]
        entries = await listdir(core, "d")
        assert len(entries) == 51
        assert stat.S_ISDIR(entries["sub"].mode) and entries["sub"].attr_ttl > 0
        f7 = entries["f007"]
        assert f7.size == 7 and stat.S_IMODE(f7.mode) == 0o600 and f7.mtime_ns == 10**9
        assert f7.attr_ttl == f7.entry_ttl == options.attr_ttl  # final: no lookup follows
        # one HEAD per object, one marker read (here a stat of "d/sub/") per directory
        assert store.calls["stat"] - stats == 51
        for name, a in entries.items():
            assert (await core.lookup(d, name)) is not None
            await core.getattr(a.ino)
        assert store.calls["stat"] - stats == 51  # never two

    run(store, options, body)


class SlowStatStore(MemoryStore):
    """HEADs take a while; records how many run at once."""

    def __init__(self) -> None:
        super().__init__(listing_has_metadata=False)
        self.running = 0
        self.peak = 0

    def stat(self, key: str) -> ObjectInfo:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            time.sleep(0.005)
            return super().stat(key)
        finally:
            with self._lock:
                self.running -= 1


def test_listing_heads_stay_within_stat_concurrency(options: MountOptions) -> None:
    store = SlowStatStore()
    for i in range(40):
        store.put(f"a/f{i:02d}", b"a")
        store.put(f"b/f{i:02d}", b"b")

    async def body(core: FsCore) -> None:
        await walk(core, "a")  # lookups (the kernel waits for them) are not bounded here
        await walk(core, "b")
        store.peak = 0
        async with trio.open_nursery() as nursery:  # two directories listed at once
            nursery.start_soon(listdir, core, "a")
            nursery.start_soon(listdir, core, "b")

    run(store, options.with_(stat_concurrency=3), body)
    assert store.calls["stat"] >= 80
    assert 2 <= store.peak <= 3  # parallel, and bounded across directories


def test_failed_listing_head_leaves_the_entry_provisional(options: MountOptions) -> None:
    store = MemoryStore(listing_has_metadata=False)
    for i in range(20):
        store.put(f"d/f{i:02d}", b"x", metadata={"mode": str(0o100600)})

    async def body(core: FsCore) -> None:
        d = await walk(core, "d")
        store.fail("stat", times=20)
        entries = await listdir(core, "d")
        assert len(entries) == 20  # the listing itself does not fail
        assert all(a.attr_ttl == 0 for a in entries.values())  # provisional
        stats = store.calls["stat"]
        attr = await core.lookup(d, "f00")  # HEADs it, and the next siblings ahead
        assert attr is not None and stat.S_IMODE(attr.mode) == 0o600 and attr.attr_ttl > 0
        with trio.move_on_after(10):
            while store.calls["stat"] < stats + 20:
                await trio.sleep(0.01)
        for i in range(20):
            assert (await core.lookup(d, f"f{i:02d}")) is not None
        await trio.sleep(0.05)
        assert store.calls["stat"] - stats == 20  # statahead: one HEAD each, never two

    run(store, options, body)


def test_attrs_from_list_trusts_the_listing_and_heads_only_when_needed(
    options: MountOptions,
) -> None:
    store = MemoryStore(listing_has_metadata=False)
    meta = PosixAttrs(stat.S_IFREG | 0o600, 7, 8, 10**9).to_metadata()
    for i in range(10):
        store.put(f"d/f{i}", b"x" * i, metadata={**meta, "datamover-sha256": f"{i:064x}"})
    store.put("d/link", b"f1", metadata=PosixAttrs(stat.S_IFLNK | 0o777).to_metadata())
    store.put("d/sub/inner", b"")
    listed = {i.key: i for i in store.list("d/", recursive=False)}
    mode = 0o666 & ~options.umask

    async def body(core: FsCore) -> None:
        d = await walk(core, "d")
        before = dict(store.calls)
        entries = await listdir(core, "d")
        # Zero-byte objects are HEADed even so: they may be special files or links.
        a = entries["f0"]
        assert (stat.S_IMODE(a.mode), a.uid, a.gid, a.mtime_ns) == (0o600, 7, 8, 10**9)
        for i in range(1, 10):
            a = entries[f"f{i}"]
            assert (a.size, a.mtime_ns) == (i, int(listed[f"d/f{i}"].mtime * 1e9))  # type: ignore[operator]
            assert (stat.S_IMODE(a.mode), a.uid, a.gid) == (mode, os.getuid(), os.getgid())
            assert a.attr_ttl == a.entry_ttl == options.attr_ttl
        assert stat.S_ISREG(entries["link"].mode)  # a LIST can't tell a symlink
        assert stat.S_ISDIR(entries["sub"].mode) and entries["sub"].attr_ttl > 0
        for name, a in entries.items():
            assert (await core.lookup(d, name)) is not None
            await core.getattr(a.ino)
        assert store.calls["stat"] == before.get("stat", 0) + 1  # f0's
        assert store.calls["read"] == before.get("read", 0)  # no marker read either
        # needed: the digest xattr, an open (etag); each of one file, no statahead
        assert await core.getxattr(entries["f3"].ino, "user.datamover.sha256") == (
            f"{3:064x}".encode()
        )
        fh, _ = await core.open(entries["f5"].ino, os.O_RDONLY)
        assert await core.read(fh, 0, 100) == b"x" * 5
        await core.release(fh)
        fh, _ = await core.open(entries["link"].ino, os.O_RDONLY)  # still a file
        assert await core.read(fh, 0, 100) == b"f1"
        await core.release(fh)
        await trio.sleep(0.05)
        assert store.calls["stat"] - before.get("stat", 0) == 4
        # once HEADed, the stored attributes are known and shown
        attr = await core.getattr(entries["f3"].ino)
        assert (stat.S_IMODE(attr.mode), attr.uid, attr.gid, attr.mtime_ns) == (0o600, 7, 8, 10**9)

    run(store, options.with_(attrs_from_list=True), body)


def test_readdir_in_kernel_sized_chunks_with_read_ahead_and_rewind(
    options: MountOptions,
) -> None:
    """The kernel reads a directory in buffer-sized pieces, continuing at the offset
    of the first entry that did not fit, and may start again at 0 (rewinddir)."""
    store = MemoryStore(listing_has_metadata=False)
    names = [f"f{i:04d}" for i in range(1750)]
    for name in names:
        store.put(f"d/{name}", b"x")

    async def read_all(core: FsCore, fh: int, chunk: int) -> list[str]:
        got: list[str] = []
        start = 0
        while True:
            batch: list[tuple[str, int]] = []

            def reply(
                name: str, attr: Attr, next_id: int, batch: list[tuple[str, int]] = batch
            ) -> bool:
                if len(batch) == chunk:
                    return False
                batch.append((name, next_id))
                return True

            await core.readdir(fh, start, reply)
            if not batch:
                return got
            got += [name for name, _ in batch]
            start = batch[-1][1]

    async def body(core: FsCore) -> None:
        fh = await core.opendir(await walk(core, "d"))
        assert await read_all(core, fh, 300) == names
        lists = store.calls["list"]
        assert await read_all(core, fh, 999) == names  # from 0 again: a new LIST
        assert store.calls["list"] == lists + 1
        await core.releasedir(fh)

    run(store, options.with_(attrs_from_list=True), body)


def test_other_xattr_namespaces_are_not_supported_without_a_request(
    options: MountOptions,
) -> None:
    store = MemoryStore(listing_has_metadata=False)
    store.put("f", b"x")

    async def body(core: FsCore) -> None:
        ino = await walk(core, "f")
        before = sum(store.calls.values())
        for name in ("security.selinux", "system.posix_acl_access", "trusted.x"):
            with pytest.raises(FsError) as e:
                await core.getxattr(ino, name)
            assert errno_of(e) == errno.ENOTSUP
        assert sum(store.calls.values()) == before

    run(store, options, body)


def test_listing_with_metadata_needs_no_head(options: MountOptions) -> None:
    store = MemoryStore(listing_has_metadata=True)
    for i in range(10):
        store.put(f"f{i}", b"abc", metadata={"mode": str(0o100751)})

    async def body(core: FsCore) -> None:
        started = store.calls["stat"]  # the root's attributes, read at mount time
        entries = await listdir(core, "")
        assert all(stat.S_IMODE(a.mode) == 0o751 and a.attr_ttl > 0 for a in entries.values())
        for i in range(10):
            assert (await core.lookup(ROOT_INO, f"f{i}")) is not None
        assert await core.lookup(ROOT_INO, "missing") is None
        assert store.calls["stat"] == started

    run(store, options, body)


def test_negative_lookups_are_cached_for_their_ttl(options: MountOptions, clock: FakeClock) -> None:
    store = MemoryStore()

    async def body(core: FsCore) -> None:
        assert await core.lookup(ROOT_INO, "nope") is None
        first = sum(store.calls.values())
        assert await core.lookup(ROOT_INO, "nope") is None
        assert sum(store.calls.values()) == first
        clock.now += options.negative_ttl + 0.1
        store.put("nope", b"now here")
        assert await core.lookup(ROOT_INO, "nope") is not None

    run(store, options, body, clock=clock)


def test_mkdir_writes_a_marker_and_rmdir_only_when_empty(options: MountOptions) -> None:
    store = MemoryStore()

    async def body(core: FsCore) -> None:
        attr = await core.mkdir(ROOT_INO, "d", 0o750, UID, GID)
        assert stat.S_ISDIR(attr.mode)
        assert PosixAttrs.from_metadata(store.meta("d/")).mode == stat.S_IFDIR | 0o750
        await write_file(core, "d/f", b"x")
        with pytest.raises(FsError) as e:
            await core.rmdir(ROOT_INO, "d")
        assert errno_of(e) == errno.ENOTEMPTY
        with pytest.raises(FsError) as e:
            await core.mkdir(ROOT_INO, "d", 0o750, UID, GID)
        assert errno_of(e) == errno.EEXIST
        await core.unlink(await walk(core, "d"), "f")
        await core.rmdir(ROOT_INO, "d")
        assert await core.lookup(ROOT_INO, "d") is None

    run(store, options, body)
    assert store.objects == {}


def test_rename_file_over_existing_and_directory_tree(options: MountOptions) -> None:
    store = MemoryStore()
    store.put("a", b"new", metadata={"mode": str(0o100600)})
    store.put("b", b"old")
    for key in ("t/1", "t/sub/2", "t/sub/deeper/3", "t/empty/"):
        store.put(key, key.encode())

    async def body(core: FsCore) -> None:
        await core.rename(ROOT_INO, "a", ROOT_INO, "b")
        assert await core.lookup(ROOT_INO, "a") is None
        assert await read_file(core, "b") == b"new"
        await core.rename(ROOT_INO, "t", ROOT_INO, "u")
        assert await read_file(core, "u/sub/deeper/3") == b"t/sub/deeper/3"
        with pytest.raises(FsError) as e:
            await core.rename(ROOT_INO, "u", await walk(core, "u/sub"), "x")
        assert errno_of(e) == errno.EINVAL

    run(store, options, body)
    assert store.data("b") == b"new" and "a" not in store.objects
    assert PosixAttrs.from_metadata(store.meta("b")).mode == 0o100600
    assert sorted(k for k in store.objects if k.startswith(("t", "u"))) == [
        "u/1",
        "u/empty/",
        "u/sub/2",
        "u/sub/deeper/3",
    ]


def test_rename_of_a_file_still_being_written(options: MountOptions) -> None:
    store = MemoryStore()

    async def body(core: FsCore) -> None:
        fh, _ = await core.create(ROOT_INO, ".tmp123", 0o100644, os.O_WRONLY, UID, GID)
        await core.write(fh, 0, b"payload")
        await core.rename(ROOT_INO, ".tmp123", ROOT_INO, "final")
        await core.flush(fh)
        await core.release(fh)

    run(store, options, body)
    assert list(store.objects) == ["final"] and store.data("final") == b"payload"


def test_symlink_is_stored_the_s3fs_way(options: MountOptions) -> None:
    store = MemoryStore()

    async def body(core: FsCore) -> None:
        attr = await core.symlink(ROOT_INO, "ln", b"../target/file", UID, GID)
        assert stat.S_ISLNK(attr.mode)
        assert await core.readlink(attr.ino) == b"../target/file"

    run(store, options, body)
    assert store.data("ln") == b"../target/file"
    assert int(store.meta("ln")["mode"]) == stat.S_IFLNK | 0o777

    async def again(core: FsCore) -> None:
        attr = await core.lookup(ROOT_INO, "ln")
        assert attr is not None and stat.S_ISLNK(attr.mode)
        assert await core.readlink(attr.ino) == b"../target/file"

    run(store, options, again)


def test_chmod_chown_utime_are_stored_in_metadata(options: MountOptions) -> None:
    store = MemoryStore()
    store.put("f", b"data", metadata={"datamover-sha256": "abc"})

    async def body(core: FsCore) -> None:
        ino = await walk(core, "f")
        await core.setattr(ino, SetAttrs(mode=0o100711))
        await core.setattr(ino, SetAttrs(uid=42, gid=43))
        await core.setattr(ino, SetAttrs(mtime_ns=1_600_000_000_123_456_789))
        await core.mkdir(ROOT_INO, "d", 0o755, UID, GID)
        await core.setattr(await walk(core, "d"), SetAttrs(mode=0o700))

    run(store, options, body)
    meta = store.meta("f")
    assert meta["mode"] == str(0o100711) and meta["uid"] == "42" and meta["gid"] == "43"
    assert meta["mtime"] == "1600000000.123456789"
    assert meta["datamover-sha256"] == "abc"
    assert store.data("f") == b"data"
    assert int(store.meta("d/")["mode"]) == stat.S_IFDIR | 0o700


def test_metadata_change_that_cant_be_stored_is_an_error(
    options: MountOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MemoryStore()
    store.put("small", b"x")
    store.put("large", payload(9 * MiB))

    def no_copy(*args: object, **kwargs: object) -> ObjectInfo:
        raise Unsupported("no server-side copy here")

    monkeypatch.setattr(store, "copy_object", no_copy)

    async def body(core: FsCore) -> None:
        await core.setattr(await walk(core, "small"), SetAttrs(mode=0o100700))
        large = await walk(core, "large")
        with pytest.raises(FsError) as e:
            await core.setattr(large, SetAttrs(mode=0o100700))
        assert errno_of(e) == errno.EPERM
        assert stat.S_IMODE((await core.getattr(large)).mode) != 0o700

    run(store, options, body)
    assert store.meta("small")["mode"] == str(0o100700)
    assert "mode" not in store.meta("large")


def test_xattr_exposes_the_stored_digest_read_only(options: MountOptions) -> None:
    store = MemoryStore()

    async def body(core: FsCore) -> None:
        await write_file(core, "f", b"hello")
        ino = await walk(core, "f")
        assert await core.listxattr(ino) == ["user.datamover.sha256"]
        value = await core.getxattr(ino, "user.datamover.sha256")
        assert value == hashlib.sha256(b"hello").hexdigest().encode()
        with pytest.raises(FsError) as e:
            await core.getxattr(ino, "user.other")
        assert errno_of(e) == errno.ENODATA
        with pytest.raises(FsError) as e:
            await core.setxattr(ino, "user.x", b"1")
        assert errno_of(e) == errno.ENOTSUP

    run(store, options, body)


def test_hard_links_through_a_posix_tree_are_refused(options: MountOptions, tmp_path: Path) -> None:
    """Object stores keep links as markers (test_fuse_conformance.py); a mount of a
    POSIX tree refuses them (EPERM) until it shows the tree's own link counts."""
    root = tmp_path / "tree"
    root.mkdir()
    (root / "f").write_bytes(b"x")

    async def body(core: FsCore) -> None:
        with pytest.raises(FsError) as e:
            await core.link(await walk(core, "f"), ROOT_INO, "g")
        assert errno_of(e) == errno.EPERM

    run(PosixStore(), options, body, root=str(root).lstrip("/"))
    assert not (root / "g").exists()


def test_read_only_refuses_every_write(options: MountOptions) -> None:
    store = MemoryStore()
    store.put("f", b"x")
    ro = options.with_(read_only=True)

    async def body(core: FsCore) -> None:
        ino = await walk(core, "f")
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: core.create(ROOT_INO, "g", 0o644, os.O_WRONLY, 0, 0),
            lambda: core.open(ino, os.O_WRONLY),
            lambda: core.open(ino, os.O_RDONLY | os.O_TRUNC),
            lambda: core.mkdir(ROOT_INO, "d", 0o755, 0, 0),
            lambda: core.unlink(ROOT_INO, "f"),
            lambda: core.rename(ROOT_INO, "f", ROOT_INO, "h"),
            lambda: core.setattr(ino, SetAttrs(mode=0o600)),
            lambda: core.symlink(ROOT_INO, "l", b"f", 0, 0),
        ]
        for call in calls:
            with pytest.raises(FsError) as e:
                await call()
            assert errno_of(e) == errno.EROFS
        assert await read_file(core, "f") == b"x"

    run(store, ro, body)


def test_mount_of_a_prefix_sees_only_that_prefix(options: MountOptions) -> None:
    store = MemoryStore()
    store.put("outside", b"no")
    store.put("pfx/inside", b"yes")

    async def body(core: FsCore) -> None:
        assert set(await listdir(core, "")) == {"inside"}
        await write_file(core, "new", b"n")

    run(store, options, body, root="pfx")
    assert store.data("pfx/new") == b"n"


def test_core_over_the_posix_store(options: MountOptions, tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    (root / "existing").write_bytes(b"abc")

    async def body(core: FsCore) -> None:
        await core.mkdir(ROOT_INO, "d", 0o750, os.getuid(), os.getgid())
        await write_file(core, "d/f", payload(10 * MiB))
        await core.setattr(await walk(core, "d/f"), SetAttrs(mode=0o100604))
        await core.rename(ROOT_INO, "d", ROOT_INO, "e")
        assert await read_file(core, "existing") == b"abc"
        assert set(await listdir(core, "")) == {"existing", "e"}

    run(PosixStore(), options, body, root=str(root).lstrip("/"))
    assert (root / "e" / "f").read_bytes() == payload(10 * MiB)
    assert stat.S_IMODE((root / "e" / "f").stat().st_mode) == 0o604
    assert stat.S_IMODE((root / "e").stat().st_mode) == 0o750


def test_streamed_files_past_100_gib_stay_within_s3_part_limits(tmp_path: Path) -> None:
    from datamover.stores.s3 import S3_LIMITS

    store = MemoryStore()
    store.limits = S3_LIMITS
    core = FsCore(store, "", MountOptions(cache_dir=str(tmp_path)))
    part = core.writes.stream_part_size
    assert S3_LIMITS.min_part_size <= part <= 32 * MiB  # memory per part in flight stays small
    assert core.writes.stream_capacity >= 256 * 1024 * MiB > 100 * 1024 * MiB
    core.rt.cache.remove()


def test_a_hard_link_marker_is_not_shown_as_a_digest_xattr(options: MountOptions) -> None:
    """``datamover-hardlink`` names a link's target; only ``datamover-<algorithm>``
    keys are digests, so only they become ``user.datamover.*`` attributes."""
    store = MemoryStore(listing_has_metadata=True)
    digest = hashlib.sha256(b"").hexdigest()
    store.put("link", b"", metadata={"datamover-hardlink": "target", "datamover-sha256": digest})

    async def body(core: FsCore) -> None:
        ino = await walk(core, "link")
        assert await core.listxattr(ino) == ["user.datamover.sha256"]
        with pytest.raises(FsError) as e:
            await core.getxattr(ino, "user.datamover.hardlink")
        assert errno_of(e) == errno.ENODATA

    run(store, options, body)
