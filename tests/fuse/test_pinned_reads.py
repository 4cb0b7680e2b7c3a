"""Reads of an open file are pinned to one object version (``Store.readinto``'s
``expect``): a handle never returns bytes of two versions, and a writer's local copy
is never built from two. On the in-memory store, whose reads honour ``expect`` by
ETag as S3 and Azure do; tests/fuse/test_mount_pinned.py mounts the real servers."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from datamover.stores.base import MiB, ObjectInfo, replaced
from datamover_fuse.core import FsCore
from datamover_fuse.fserrors import FsError
from datamover_fuse.inodes import ROOT_INO
from datamover_fuse.options import MountOptions

from corekit import FakeClock, core_options, errno_of, payload, read_file, run, walk
from memstore import MemoryStore

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def options(tmp_path: Path) -> MountOptions:
    # No block cache: every read the kernel sends reaches the store.
    return core_options(tmp_path).with_(read_cache=False, attr_ttl=60.0)


def test_a_reader_never_mixes_two_versions(options: MountOptions) -> None:
    """Replaced while a program reads it sequentially: every read until then is the
    old bytes, the first that would reach the new object is ESTALE, the open inode
    keeps its size, and the name gets a new inode (the kernel is told to look it up
    again) whose open reads the new object whole."""
    store = MemoryStore(unique_etags=True)
    old, new = payload(40 * MiB, 1), payload(30 * MiB + 5, 2)
    store.put("f", old)
    names: list[str] = []

    async def body(core: FsCore) -> None:
        core.rt.name_changed = lambda parent, name: names.append(name)
        ino = await walk(core, "f")
        fh, _ = await core.open(ino, os.O_RDONLY)
        got = await core.read(fh, 0, MiB)
        assert got == old[:MiB]
        store.put("f", new)
        offset = MiB
        with pytest.raises(FsError) as err:
            while offset < len(old):
                chunk = await core.read(fh, offset, MiB)
                assert chunk == old[offset : offset + MiB]  # read ahead before the change
                offset += MiB
        assert errno_of(err) == errno.ESTALE
        assert offset < len(old)
        with pytest.raises(FsError) as again:
            await core.read(fh, 0, MiB)  # the store's answer, not the read-ahead's
        assert errno_of(again) == errno.ESTALE
        await core.release(fh)
        assert names == ["f"]
        assert (await core.getattr(ino)).size == len(old)
        again = await walk(core, "f")
        assert again != ino and (await core.getattr(again)).size == len(new)
        assert await read_file(core, "f", chunk=MiB) == new
        with pytest.raises(FsError) as stale:  # the kernel's entry, not yet dropped
            await core.open(ino, os.O_RDONLY)
        assert errno_of(stale) == errno.ESTALE

    run(store, options, body)


def test_an_open_within_the_ttl_reads_no_bytes_of_a_replacement(options: MountOptions) -> None:
    """Looked up, then replaced by another client, then opened within ``--attr-ttl``
    (no HEAD at open): the read is ESTALE, never the new bytes cut to the old size."""
    store = MemoryStore()
    store.put("f", b"old contents")

    async def body(core: FsCore) -> None:
        ino = await walk(core, "f")
        store.put("f", b"a longer, newer contents")
        fh, _ = await core.open(ino, os.O_RDONLY)
        with pytest.raises(FsError) as err:
            await core.read(fh, 0, 4096)
        assert errno_of(err) == errno.ESTALE
        await core.release(fh)
        assert await read_file(core, "f") == b"a longer, newer contents"

    run(store, options, body)


def test_renames_through_the_mount_keep_open_readers_reading(options: MountOptions) -> None:
    """The mount's own copies (a file's rename, a directory's) are new versions on
    stores whose every write is one (Azure, GCS): a handle open across them reads on."""
    store = MemoryStore(unique_etags=True)
    data = payload(6 * MiB, 3)
    store.put("d/f", data)

    async def body(core: FsCore) -> None:
        d = await walk(core, "d")
        fh, _ = await core.open(await walk(core, "d/f"), os.O_RDONLY)
        assert await core.read(fh, 0, MiB) == data[:MiB]
        await core.rename(d, "f", d, "g")
        assert await core.read(fh, 3 * MiB, MiB) == data[3 * MiB : 4 * MiB]
        await core.rename(ROOT_INO, "d", ROOT_INO, "e")
        assert await core.read(fh, 5 * MiB, MiB) == data[5 * MiB :]
        assert await core.read(fh, MiB, MiB) == data[MiB : 2 * MiB]
        await core.release(fh)
        assert await read_file(core, "e/g") == data

    run(store, options, body)
    assert "e/g" in store.objects and "d/f" not in store.objects


class RefusesItsOwnETags(MemoryStore):
    """A server whose conditional GETs fail even for the version it reports."""

    def readinto(
        self, key: str, offset: int, buf: memoryview, *, expect: ObjectInfo | None = None
    ) -> int:
        if expect is not None:
            self.calls["refused"] += 1
            raise replaced(self.url(key), key)
        return super().readinto(key, offset, buf)


def test_a_server_refusing_its_own_etags_fails_reads_rather_than_unpin_them(
    options: MountOptions, caplog: pytest.LogCaptureFixture
) -> None:
    """A server whose conditional GETs fail even for the version it reports (or an
    emulator that changes its versions behind its own HEAD): the mount turned pinning
    off for every file, and then read other clients' bytes into open files. Now such
    a read fails (ESTALE), with one warning for the mount."""
    store = RefusesItsOwnETags()
    data = payload(3 * MiB, 4)
    store.put("f", data)

    async def body(core: FsCore) -> None:
        with caplog.at_level(logging.WARNING, logger="datamover_fuse"):
            for _ in range(2):
                with pytest.raises(FsError) as err:
                    await read_file(core, "f", chunk=MiB)
                assert errno_of(err) == errno.ESTALE

    run(store, options, body)
    assert store.calls["refused"] >= 2
    warned = [r.getMessage() for r in caplog.records if "refused, twice" in r.getMessage()]
    assert len(warned) == 1 and "mem://f" in warned[0]


class ReplacedDuringLoad(MemoryStore):
    """Another client replaces the object just as the mount starts copying it down
    for a writer."""

    def readinto(
        self, key: str, offset: int, buf: memoryview, *, expect: ObjectInfo | None = None
    ) -> int:
        if self.calls["readinto"] == 0:
            self.put(key, b"B" * (3 * MiB))
        return super().readinto(key, offset, buf, expect=expect)


def test_a_writers_copy_is_never_built_from_two_versions(options: MountOptions) -> None:
    """An in-place write needs the object's bytes first; when the object changes while
    they come down, the write fails (ESTALE) and nothing is written back: the other
    client's version stays whole."""
    store = ReplacedDuringLoad()
    store.put("f", b"A" * (3 * MiB))

    async def body(core: FsCore) -> None:
        fh, _ = await core.open(await walk(core, "f"), os.O_RDWR)
        with pytest.raises(FsError) as err:
            await core.write(fh, MiB, b"x")
        assert errno_of(err) == errno.ESTALE
        await core.release(fh)

    run(store, options, body, clock=FakeClock())
    assert store.data("f") == b"B" * (3 * MiB)
    assert store.calls["put"] == 2 and store.calls["open_writer"] == 0  # the test's two


def test_a_second_open_after_the_ttl_gets_a_new_inode(
    options: MountOptions, clock: FakeClock
) -> None:
    """Two handles: A opened the old version; after another client replaced it and the
    attributes expired, B's lookup and open read the new one, through a new inode. A
    keeps the old inode, its old size (a shorter new version is no silent end of
    file for A), and gets ESTALE for what it had not read."""
    store = MemoryStore(unique_etags=True)
    old, new = payload(12 * MiB, 5), payload(4 * MiB, 6)
    store.put("f", old)

    async def body(core: FsCore) -> None:
        a_ino = await walk(core, "f")
        a, _ = await core.open(a_ino, os.O_RDONLY)
        assert await core.read(a, 0, MiB) == old[:MiB]
        store.put("f", new)
        clock.now += 61
        b_ino = await walk(core, "f")
        assert b_ino != a_ino
        b, keep = await core.open(b_ino, os.O_RDONLY)
        assert not keep and await core.read(b, 0, 8 * MiB) == new
        assert (await core.getattr(a_ino)).size == len(old)
        with pytest.raises(FsError) as err:
            await core.read(a, 6 * MiB, MiB)
        assert errno_of(err) == errno.ESTALE
        await core.release(a)
        await core.release(b)

    run(store, options, body, clock=clock)


def test_an_idle_writer_does_not_let_a_reader_see_a_replacement(options: MountOptions) -> None:
    """A handle open for writing (nothing written yet) beside a reader: another
    client's version was read into the reader's file."""
    store = MemoryStore(unique_etags=True)
    old, new = payload(12 * MiB, 7), payload(12 * MiB, 8)
    store.put("f", old)

    async def body(core: FsCore) -> None:
        ino = await walk(core, "f")
        w, _ = await core.open(ino, os.O_RDWR)
        r, _ = await core.open(ino, os.O_RDONLY)
        assert await core.read(r, 0, MiB) == old[:MiB]
        store.put("f", new)
        with pytest.raises(FsError) as err:
            offset = MiB
            while offset < len(old):
                assert await core.read(r, offset, MiB) == old[offset : offset + MiB]
                offset += MiB
        assert errno_of(err) == errno.ESTALE
        await core.release(r)
        await core.release(w)

    run(store, options, body)
    assert store.data("f") == new  # the idle writer wrote nothing back


def test_a_tree_renamed_through_the_mount_then_replaced_is_estale(
    options: MountOptions,
) -> None:
    """A directory renamed through the mount, then a file in it replaced by another
    client: the open file's reads went on, unpinned, into the new bytes."""
    store = MemoryStore(unique_etags=True)
    old, new = payload(12 * MiB, 9), payload(12 * MiB, 10)
    store.put("d/sub/f", old)

    async def body(core: FsCore) -> None:
        fh, _ = await core.open(await walk(core, "d/sub/f"), os.O_RDONLY)
        assert await core.read(fh, 0, MiB) == old[:MiB]
        await core.rename(ROOT_INO, "d", ROOT_INO, "e")
        assert await core.read(fh, MiB, MiB) == old[MiB : 2 * MiB]
        store.put("e/sub/f", new)
        with pytest.raises(FsError) as err:
            offset = 2 * MiB
            while offset < len(old):
                assert await core.read(fh, offset, MiB) == old[offset : offset + MiB]
                offset += MiB
        assert errno_of(err) == errno.ESTALE
        await core.release(fh)

    run(store, options, body)


def test_an_open_after_a_listing_saw_a_new_version_tells_the_kernel(
    options: MountOptions, clock: FakeClock
) -> None:
    """A listing updated the inode to another client's new, longer version; the kernel
    still held the old size, so a new open read the new bytes cut to it. The open now
    tells the kernel the attributes changed."""
    store = MemoryStore(unique_etags=True, listing_has_metadata=True)
    store.put("d/f", b"short")
    told: list[int] = []

    async def body(core: FsCore) -> None:
        core.attrs_changed = told.append
        ino = await walk(core, "d/f")
        fh, _ = await core.open(ino, os.O_RDONLY)
        await core.release(fh)
        store.put("d/f", b"a longer new version")
        clock.now += 61
        d = await walk(core, "d")
        dh = await core.opendir(d)
        await core.readdir(dh, 0, lambda name, attr, nxt: True)
        await core.releasedir(dh)
        told.clear()
        fh, keep = await core.open(ino, os.O_RDONLY)
        assert not keep and told == [ino]
        assert await core.read(fh, 0, 100) == b"a longer new version"
        await core.release(fh)

    run(store, options, body, clock=clock)
