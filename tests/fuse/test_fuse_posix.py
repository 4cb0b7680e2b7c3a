"""POSIX behaviour of ``FsCore`` without a kernel (issue #17): directory metadata on a
store that drops the metadata of markers, special files, hard links, times and link
counts, ownership rules, and errors a program can act on. A second ``run`` over the
same store is a remount: nothing is shared but the store."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import trio

from datamover.errors import (
    NotFound,
    PermissionDenied,
    SourceChanged,
    TransientError,
    UnsafePath,
    Unsupported,
    UsageError,
)
from datamover.posixmeta import PosixAttrs
from datamover.stores.base import DIR_META_NAME, HARDLINK_KEY, MiB
from datamover_fuse.core import FsCore
from datamover_fuse.fserrors import FsError, errno_for
from datamover_fuse.inodes import ROOT_INO, SetAttrs
from datamover_fuse.options import MountOptions
from datamover_fuse.permissions import Caller

from corekit import (
    GID,
    UID,
    FakeClock,
    core_options,
    errno_of,
    listdir,
    parent_of,
    read_file,
    run,
    walk,
    write_file,
)
from memstore import MemoryStore

pytestmark = pytest.mark.timeout(60)

OLD = 1_500_000_000_123_456_789


@pytest.fixture
def options(tmp_path: Path) -> MountOptions:
    return core_options(tmp_path)


def mode_of(store: MemoryStore, key: str) -> int | None:
    return PosixAttrs.from_metadata(store.meta(key)).mode


# -- directory metadata ----------------------------------------------------------------


def test_directory_metadata_lives_in_a_metadata_object_where_markers_drop_it(
    options: MountOptions,
) -> None:
    """SeaweedFS keeps no metadata on ``dir/`` keys: the mount learns that from the
    first marker it writes and keeps each directory's mode, owner and times in
    ``dir/.datamover-dirmeta``, hidden from listings, carried by renames, removed
    by rmdir; a remount shows them."""
    store = MemoryStore(drops_marker_metadata=True)

    async def first(core: FsCore) -> None:
        d = (await core.mkdir(ROOT_INO, "d", 0o750, UID, GID)).ino
        await core.mkdir(d, "sub", 0o700, UID, GID)
        await core.setattr(d, SetAttrs(mode=0o711, uid=7, gid=8, mtime_ns=OLD))
        await write_file(core, "d/f", b"x")
        assert set(await listdir(core, "d")) == {"sub", "f"}

    run(store, options, first)
    meta = store.meta("d/" + DIR_META_NAME)
    assert PosixAttrs.from_metadata(meta) == PosixAttrs(stat.S_IFDIR | 0o711, 7, 8, OLD)
    assert mode_of(store, "d/sub/" + DIR_META_NAME) == stat.S_IFDIR | 0o700

    async def remount(core: FsCore) -> None:
        entries = await listdir(core, "")
        d = entries["d"]
        assert (stat.S_IMODE(d.mode), d.uid, d.gid, d.mtime_ns) == (0o711, 7, 8, OLD)
        assert set(await listdir(core, "d")) == {"sub", "f"}
        sub = await walk(core, "d/sub")
        assert stat.S_IMODE((await core.getattr(sub)).mode) == 0o700
        await core.rename(await walk(core, "d"), "sub", ROOT_INO, "moved")
        assert stat.S_IMODE((await core.getattr(await walk(core, "moved"))).mode) == 0o700
        await core.rmdir(ROOT_INO, "moved")

    run(store, options, remount)
    assert not [k for k in store.objects if k.startswith(("moved/", "d/sub/"))]


def test_markers_that_keep_metadata_get_no_metadata_object(options: MountOptions) -> None:
    store = MemoryStore()

    async def body(core: FsCore) -> None:
        d = (await core.mkdir(ROOT_INO, "d", 0o750, UID, GID)).ino
        await core.setattr(d, SetAttrs(mode=0o700, mtime_ns=OLD))

    run(store, options, body)
    assert mode_of(store, "d/") == stat.S_IFDIR | 0o700
    assert PosixAttrs.from_metadata(store.meta("d/")).mtime_ns == OLD
    assert not [k for k in store.objects if k.endswith(DIR_META_NAME)]


def test_the_bucket_root_keeps_its_metadata_in_a_metadata_object(options: MountOptions) -> None:
    """The root of a bucket has no marker: ``chmod .`` (which pjdfstest does all the
    time) goes to ``.datamover-dirmeta`` at the root, read back at mount time."""
    store = MemoryStore()

    async def first(core: FsCore) -> None:
        await core.setattr(ROOT_INO, SetAttrs(mode=0o777, uid=65534, gid=65533))
        assert set(await listdir(core, "")) == set()

    run(store, options, first)
    assert mode_of(store, DIR_META_NAME) == stat.S_IFDIR | 0o777

    async def remount(core: FsCore) -> None:
        attr = await core.getattr(ROOT_INO)
        assert (stat.S_IMODE(attr.mode), attr.uid, attr.gid) == (0o777, 65534, 65533)
        assert await core.lookup(ROOT_INO, DIR_META_NAME) is None

    run(store, options, remount)


def test_the_metadata_object_name_is_reserved(options: MountOptions) -> None:
    store = MemoryStore()

    async def body(core: FsCore) -> None:
        for make in (
            lambda: core.create(ROOT_INO, DIR_META_NAME, 0o644, os.O_WRONLY, UID, GID),
            lambda: core.mkdir(ROOT_INO, DIR_META_NAME, 0o755, UID, GID),
            lambda: core.symlink(ROOT_INO, DIR_META_NAME, b"x", UID, GID),
        ):
            with pytest.raises(FsError) as e:
                await make()
            assert errno_of(e) == errno.EPERM

    run(store, options, body)


def test_directory_metadata_a_store_cant_keep_is_kept_for_the_mounts_lifetime(
    options: MountOptions,
) -> None:
    """Where even the metadata object can't be written (its key would pass 1,024
    bytes), chmod/utime of a directory still succeed and hold while mounted."""
    store = MemoryStore(drops_marker_metadata=True)
    deep = "/".join(["x" * 250] * 4)

    async def body(core: FsCore) -> None:
        ino = ROOT_INO
        for part in deep.split("/"):
            ino = (await core.mkdir(ino, part, 0o755, UID, GID)).ino
        await core.setattr(ino, SetAttrs(mode=0o700, mtime_ns=OLD))
        attr = await core.getattr(ino)
        assert (stat.S_IMODE(attr.mode), attr.mtime_ns) == (0o700, OLD)
        parent, name = await parent_of(core, deep)
        assert (await core.lookup(parent, name)) is not None
        entries = await listdir(core, deep.rsplit("/", 1)[0])
        assert stat.S_IMODE(entries["x" * 250].mode) == 0o700

    run(store, options, body)


# -- special files --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "rdev"),
    [(stat.S_IFIFO, 0), (stat.S_IFSOCK, 0), (stat.S_IFCHR, os.makedev(1, 3)), (stat.S_IFBLK, 258)],
)
def test_special_files_are_zero_byte_objects_with_their_type(
    options: MountOptions, kind: int, rdev: int
) -> None:
    store = MemoryStore()

    async def first(core: FsCore) -> None:
        attr = await core.mknod(ROOT_INO, "n", kind | 0o640, rdev, UID, GID)
        assert stat.S_IFMT(attr.mode) == kind and attr.rdev == rdev and attr.size == 0
        await core.rename(ROOT_INO, "n", ROOT_INO, "m")
        with pytest.raises(FsError) as e:
            await core.mknod(ROOT_INO, "m", kind | 0o640, rdev, UID, GID)
        assert errno_of(e) == errno.EEXIST

    run(store, options, first)
    assert store.data("m") == b"" and "n" not in store.objects
    assert mode_of(store, "m") == kind | 0o640
    assert store.meta("m").get("rdev", "0") == str(rdev)

    async def remount(core: FsCore) -> None:
        attr = (await listdir(core, ""))["m"]
        assert (attr.mode, attr.rdev, attr.uid, attr.gid) == (kind | 0o640, rdev, UID, GID)
        await core.unlink(ROOT_INO, "m")

    run(store, options, remount)
    assert "m" not in store.objects


def test_mknod_of_a_regular_file_stores_an_empty_file(options: MountOptions) -> None:
    store = MemoryStore()

    async def body(core: FsCore) -> None:
        attr = await core.mknod(ROOT_INO, "r", stat.S_IFREG | 0o600, 0, UID, GID)
        assert stat.S_ISREG(attr.mode)

    run(store, options, body)
    assert store.data("r") == b"" and mode_of(store, "r") == stat.S_IFREG | 0o600


# -- hard links -------------------------------------------------------------------------


def test_hard_links_are_markers_naming_the_file_with_one_inode(options: MountOptions) -> None:
    store = MemoryStore()

    async def first(core: FsCore) -> None:
        await write_file(core, "a", b"data")
        a = await walk(core, "a")
        attr = await core.link(a, ROOT_INO, "b")
        assert attr.ino == a and attr.nlink == 2
        d = (await core.mkdir(ROOT_INO, "d", 0o755, UID, GID)).ino
        assert (await core.link(a, d, "c")).nlink == 3
        await core.setattr(await walk(core, "b"), SetAttrs(mode=0o100604, uid=1, gid=2))
        for name in ("a", "b", "d/c"):
            got = await core.getattr(await walk(core, name))
            assert (got.ino, got.nlink, stat.S_IMODE(got.mode), got.uid) == (a, 3, 0o604, 1)
        # writing through one name changes the one file
        fh, _ = await core.open(await walk(core, "d/c"), os.O_WRONLY | os.O_TRUNC)
        await core.write(fh, 0, b"new bytes")
        await core.release(fh)
        assert await read_file(core, "b") == b"new bytes"

    run(store, options, first)
    assert store.data("a") == b"new bytes"
    assert store.meta("b")[HARDLINK_KEY] == "a" and store.data("b") == b""
    assert store.meta("d/c")[HARDLINK_KEY] == "a"

    async def remount(core: FsCore) -> None:
        entries = await listdir(core, "")
        assert entries["a"].ino == entries["b"].ino and entries["b"].nlink == 3
        assert entries["b"].size == len(b"new bytes")
        assert await read_file(core, "d/c") == b"new bytes"
        # the object's own name goes: a link inherits the object, the others follow
        await core.unlink(ROOT_INO, "a")
        assert (await core.getattr(await walk(core, "b"))).nlink == 2
        assert await read_file(core, "d/c") == b"new bytes"
        await core.unlink(await walk(core, "d"), "c")
        attr = await core.getattr(await walk(core, "b"))
        assert attr.nlink == 1 and stat.S_IMODE(attr.mode) == 0o604

    run(store, options, remount)
    assert "a" not in store.objects and "d/c" not in store.objects
    assert store.data("b") == b"new bytes" and HARDLINK_KEY not in store.meta("b")


def test_renaming_either_name_of_a_linked_file(options: MountOptions) -> None:
    store = MemoryStore()

    async def body(core: FsCore) -> None:
        await write_file(core, "a", b"A")
        a = await walk(core, "a")
        await core.link(a, ROOT_INO, "b")
        await core.rename(ROOT_INO, "b", ROOT_INO, "b2")  # the marker moves
        await core.rename(ROOT_INO, "a", ROOT_INO, "a2")  # the object moves
        await core.rename(ROOT_INO, "a2", ROOT_INO, "b2")  # two names of one file: no-op
        for name in ("a2", "b2"):
            got = await core.getattr(await walk(core, name))
            assert (got.ino, got.nlink) == (a, 2)
        await core.mkdir(ROOT_INO, "d", 0o755, UID, GID)
        await core.rename(ROOT_INO, "a2", await walk(core, "d"), "a3")
        await core.rename(ROOT_INO, "d", ROOT_INO, "e")  # a directory holding the object
        assert await read_file(core, "b2") == b"A"

    run(store, options, body)
    assert sorted(k for k in store.objects if not k.endswith("/")) == ["b2", "e/a3"]
    assert store.meta("b2")[HARDLINK_KEY] == "e/a3"

    async def remount(core: FsCore) -> None:
        assert (await core.getattr(await walk(core, "e/a3"))).nlink == 2
        assert await read_file(core, "b2") == b"A"

    run(store, options, remount)


def test_a_link_that_does_not_fit_the_metadata_limit_is_emlink(options: MountOptions) -> None:
    store = MemoryStore()

    async def body(core: FsCore) -> None:
        await write_file(core, "a", b"A")
        a = await walk(core, "a")
        with pytest.raises(FsError) as e:
            for i in range(100):
                await core.link(a, ROOT_INO, f"{'l' * 200}{i}")
        assert errno_of(e) == errno.EMLINK
        assert 1 < (await core.getattr(a)).nlink < 100

    run(store, options, body)


def test_a_marker_whose_file_is_gone_shows_as_an_empty_file(options: MountOptions) -> None:
    store = MemoryStore()
    store.put("dangling", b"", metadata={HARDLINK_KEY: "nowhere"})

    async def body(core: FsCore) -> None:
        attr = (await listdir(core, ""))["dangling"]
        assert stat.S_ISREG(attr.mode) and attr.size == 0 and attr.nlink == 1

    run(store, options, body)


# -- times and link counts ------------------------------------------------------------


def test_times_ctime_and_atime_are_stored(options: MountOptions) -> None:
    store = MemoryStore()
    clock = FakeClock()
    wall = [2_000_000_000 * 10**9]

    async def first(core: FsCore) -> None:
        await write_file(core, "f", b"x")
        f = await walk(core, "f")
        wall[0] += 10**9
        await core.setattr(f, SetAttrs(atime_ns=OLD))
        attr = await core.getattr(f)
        assert attr.atime_ns == OLD and attr.ctime_ns == wall[0]

    core = FsCore(store, "", options, clock=clock, wall_clock=lambda: wall[0])

    async def main() -> None:
        async with core.running():
            await first(core)

    trio.run(main)
    meta = store.meta("f")
    assert meta["atime"] == "1500000000.123456789"
    assert meta["ctime"] == "2000000001.000000000"

    async def remount(core: FsCore) -> None:
        attr = await core.getattr(await walk(core, "f"))
        assert (attr.atime_ns, attr.ctime_ns) == (OLD, 2_000_000_001 * 10**9)

    run(store, options, remount)


def test_a_directorys_times_and_link_count_follow_its_entries(options: MountOptions) -> None:
    store = MemoryStore()
    wall = [2_000_000_000 * 10**9]

    async def body(core: FsCore) -> None:
        d = (await core.mkdir(ROOT_INO, "d", 0o755, UID, GID)).ino
        assert (await core.getattr(d)).nlink == 2
        steps = [
            lambda: core.mkdir(d, "sub", 0o755, UID, GID),
            lambda: write_file(core, "d/f", b"x"),
            lambda: core.symlink(d, "l", b"f", UID, GID),
            lambda: core.unlink(d, "l"),
            lambda: core.rename(d, "f", d, "g"),
            lambda: core.rmdir(d, "sub"),
        ]
        links = [3, 3, 3, 3, 3, 2]
        for step, nlink in zip(steps, links, strict=True):
            wall[0] += 10**9
            await step()
            attr = await core.getattr(d)
            assert attr.mtime_ns == attr.ctime_ns == wall[0]
            assert attr.nlink == nlink
        # an explicit time is stored and wins
        await core.setattr(d, SetAttrs(mtime_ns=OLD))
        assert (await core.getattr(d)).mtime_ns == OLD

    core = FsCore(store, "", options, clock=FakeClock(), wall_clock=lambda: wall[0])

    async def main() -> None:
        async with core.running():
            await body(core)

    trio.run(main)
    assert PosixAttrs.from_metadata(store.meta("d/")).mtime_ns == OLD


def test_an_open_file_that_was_unlinked_has_no_links(options: MountOptions) -> None:
    store = MemoryStore()
    store.put("f", b"x")

    async def body(core: FsCore) -> None:
        f = await walk(core, "f")
        fh, _ = await core.open(f, os.O_RDONLY)
        await core.unlink(ROOT_INO, "f")
        assert (await core.getattr(f)).nlink == 0
        await core.release(fh)

    run(store, options, body)


def test_a_failed_metadata_change_leaves_ctime_alone(options: MountOptions) -> None:
    store = MemoryStore()
    store.put("f", b"x")

    async def body(core: FsCore) -> None:
        f = await walk(core, "f")
        before = await core.getattr(f)
        store.fail("copy_object", times=5)
        with pytest.raises(FsError):
            await core.setattr(f, SetAttrs(mode=0o100600))
        after = await core.getattr(f)
        assert (after.mode, after.ctime_ns) == (before.mode, before.ctime_ns)

    run(store, options, body)


# -- ownership rules ---------------------------------------------------------------------


def test_ownership_rules_for_callers_other_than_root(options: MountOptions) -> None:
    store = MemoryStore()
    owner = Caller(1000, 1000, frozenset({1000, 2000}))
    other = Caller(1001, 1001)

    async def body(core: FsCore) -> None:
        await write_file(core, "f", b"x")
        f = await walk(core, "f")
        await core.setattr(f, SetAttrs(uid=1000, gid=1000))
        refused = [
            (other, SetAttrs(mode=0o100600)),
            (owner, SetAttrs(uid=1001)),
            (owner, SetAttrs(gid=3000)),
            (other, SetAttrs(gid=1001)),
        ]
        for caller, change in refused:
            with pytest.raises(FsError) as e:
                await core.setattr(f, change, caller=caller)
            assert errno_of(e) == errno.EPERM
        await core.setattr(f, SetAttrs(gid=2000), caller=owner)  # one of theirs
        attr = await core.setattr(f, SetAttrs(mode=0o102755), caller=other.__class__(1000, 1000))
        assert stat.S_IMODE(attr.mode) == 0o755  # not in group 2000: S_ISGID dropped
        await core.setattr(f, SetAttrs(mode=0o104755))
        # a writer who is not the owner may drop the set-ID bits (the kernel asks)
        attr = await core.setattr(f, SetAttrs(mode=0o100755), caller=other)
        assert stat.S_IMODE(attr.mode) == 0o755

    run(store, options, body)
    assert PosixAttrs.from_metadata(store.meta("f")).gid == 2000


def test_a_set_group_id_directory_passes_its_group_on(options: MountOptions) -> None:
    store = MemoryStore()

    async def body(core: FsCore) -> None:
        d = (await core.mkdir(ROOT_INO, "d", 0o2775, UID, GID)).ino
        await core.setattr(d, SetAttrs(mode=0o42775, gid=4242))
        fh, attr = await core.create(d, "f", 0o100644, os.O_WRONLY, 1, 1)
        await core.release(fh)
        assert attr.gid == 4242
        sub = await core.mkdir(d, "sub", 0o755, 1, 1)
        assert sub.gid == 4242 and sub.mode & stat.S_ISGID
        node = await core.mknod(d, "p", stat.S_IFIFO | 0o644, 0, 1, 1)
        assert node.gid == 4242

    run(store, options, body)


# -- errors a program can act on ----------------------------------------------------------


def test_errors_have_their_proper_errno(options: MountOptions) -> None:
    store = MemoryStore()

    async def body(core: FsCore) -> None:
        d = (await core.mkdir(ROOT_INO, "d", 0o755, UID, GID)).ino
        await write_file(core, "d/f", b"x")
        cases = [
            (lambda: core.mkdir(ROOT_INO, "d", 0o755, UID, GID), errno.EEXIST),
            (lambda: core.mknod(d, "f", stat.S_IFIFO | 0o644, 0, UID, GID), errno.EEXIST),
            (lambda: core.rmdir(ROOT_INO, "d"), errno.ENOTEMPTY),
            (lambda: core.mkdir(ROOT_INO, "n" * 256, 0o755, UID, GID), errno.ENAMETOOLONG),
            (lambda: core.symlink(ROOT_INO, "s", b"t" * 4096, UID, GID), errno.ENAMETOOLONG),
            (lambda: core.rename(ROOT_INO, "d", d, "inside"), errno.EINVAL),
            (lambda: core.unlink(ROOT_INO, "d"), errno.EISDIR),
            (lambda: core.rmdir(d, "f"), errno.ENOTDIR),
            (lambda: core.link(d, ROOT_INO, "dl"), errno.EPERM),
        ]
        for call, code in cases:
            with pytest.raises(FsError) as e:
                await call()
            assert errno_of(e) == code, call

    run(store, options, body)


def test_renaming_a_directory_to_a_place_where_a_key_is_too_long_moves_nothing(
    options: MountOptions,
) -> None:
    store = MemoryStore()
    store.put("d/" + "f" * 250, b"x")

    async def body(core: FsCore) -> None:
        long_name = "/".join(["y" * 250] * 3)
        ino = ROOT_INO
        for part in long_name.split("/"):
            ino = (await core.mkdir(ino, part, 0o755, UID, GID)).ino
        with pytest.raises(FsError) as e:
            await core.rename(ROOT_INO, "d", ino, "z" * 250)
        assert errno_of(e) == errno.ENAMETOOLONG

    run(store, options, body)
    assert store.data("d/" + "f" * 250) == b"x"


def test_a_full_cache_is_enospc_at_write_and_at_close(tmp_path: Path) -> None:
    store = MemoryStore(accepts_unknown_size=False)
    options = MountOptions(cache_dir=str(tmp_path / "c"), cache_size=64 * MiB)

    async def body(core: FsCore) -> None:
        fh, _ = await core.create(ROOT_INO, "big", 0o100644, os.O_WRONLY, UID, GID)
        with pytest.raises(FsError) as e:
            for off in range(0, 65 * MiB, MiB):
                await core.write(fh, off, b"x" * MiB)
        assert errno_of(e) == errno.ENOSPC
        with pytest.raises(FsError) as e:
            await core.flush(fh)
        assert errno_of(e) == errno.ENOSPC
        await core.release(fh)

    run(store, options, body)
    assert "big" not in store.objects


def test_store_errors_become_the_errno_they_mean() -> None:
    def raised_from(error: Exception, cause: BaseException) -> Exception:
        try:
            raise error from cause
        except Exception as e:
            return e

    not_empty = OSError(errno.ENOTEMPTY, "Directory not empty")
    assert errno_for(raised_from(UsageError("/d: directory not empty"), not_empty)) == (
        errno.ENOTEMPTY
    )
    assert errno_for(NotFound("k")) == errno.ENOENT
    assert errno_for(PermissionDenied("k")) == errno.EACCES
    assert errno_for(Unsupported("k")) == errno.ENOTSUP
    assert errno_for(UnsafePath("../k")) == errno.EINVAL
    assert errno_for(SourceChanged("k")) == errno.ESTALE
    assert errno_for(TransientError("503 after retries")) == errno.EIO


def test_readlink_of_an_object_too_long_to_be_a_target(options: MountOptions) -> None:
    store = MemoryStore()
    store.put("l", b"t" * 100_000, metadata={"mode": str(stat.S_IFLNK | 0o777)})

    async def body(core: FsCore) -> None:
        with pytest.raises(FsError) as e:
            await core.readlink(await walk(core, "l"))
        assert errno_of(e) == errno.ENAMETOOLONG

    run(store, options, body)
    assert store.calls["read"] == 1


def test_truncate_past_what_the_store_can_hold_is_efbig(options: MountOptions) -> None:
    store = MemoryStore()

    async def body(core: FsCore) -> None:
        await write_file(core, "f", b"")
        with pytest.raises(FsError) as e:
            await core.setattr(await walk(core, "f"), SetAttrs(size=999_999_999_999_999_999))
        assert errno_of(e) == errno.EFBIG

    run(store, options, body)


# -- bugs found while splitting core.py --------------------------------------------------


def test_renaming_a_directory_over_an_empty_one_shows_its_entries_at_once(
    options: MountOptions,
) -> None:
    store = MemoryStore()
    store.put("a/x", b"x")

    async def body(core: FsCore) -> None:
        await core.mkdir(ROOT_INO, "b", 0o755, UID, GID)  # known empty for dir_ttl
        assert await core.lookup(await walk(core, "b"), "x") is None
        await core.rename(ROOT_INO, "a", ROOT_INO, "b")
        assert await read_file(core, "b/x") == b"x"
        assert set(await listdir(core, "b")) == {"x"}

    run(store, options, body)


def test_the_directory_wins_in_listings_too(options: MountOptions) -> None:
    store = MemoryStore()
    store.put("x", b"file")
    store.put("x/inner", b"i")

    async def body(core: FsCore) -> None:
        entries = await listdir(core, "")
        assert list(entries) == ["x"] and stat.S_ISDIR(entries["x"].mode)
        assert stat.S_ISDIR((await core.getattr(await walk(core, "x"))).mode)
        assert await read_file(core, "x/inner") == b"i"

    run(store, options, body)


def test_releasedir_of_a_file_handle_leaves_it_open(options: MountOptions) -> None:
    store = MemoryStore()
    store.put("f", b"data")

    async def body(core: FsCore) -> None:
        fh, _ = await core.open(await walk(core, "f"), os.O_RDONLY)
        await core.releasedir(fh)
        assert await core.read(fh, 0, 4) == b"data"
        await core.release(fh)

    run(store, options, body)


def test_the_first_write_builds_on_the_object_as_it_is_now(
    options: MountOptions, clock: FakeClock
) -> None:
    store = MemoryStore()
    store.put("f", b"short")

    async def body(core: FsCore) -> None:
        f = await walk(core, "f")
        assert (await core.getattr(f)).size == 5
        store.put("f", b"much longer now")  # by someone else, within attr_ttl
        fh, _ = await core.open(f, os.O_WRONLY)
        await core.write(fh, 0, b"M")
        await core.release(fh)
        await core.setattr(f, SetAttrs(size=20))

    run(store, options, body, clock=clock)
    assert store.data("f") == b"Much longer now" + bytes(5)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_special_files_through_a_posix_tree_are_real_ones(
    options: MountOptions, tmp_path: Path
) -> None:
    from datamover.stores.posix import PosixStore

    root = tmp_path / "tree"
    root.mkdir()

    async def body(core: FsCore) -> None:
        await core.mknod(ROOT_INO, "p", stat.S_IFIFO | 0o640, 0, os.getuid(), os.getgid())

    run(PosixStore(), options, body, root=str(root).lstrip("/"))
    st = (root / "p").lstat()
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640


def test_handles_over_a_posix_tree_read_the_file_they_opened(
    options: MountOptions, tmp_path: Path
) -> None:
    """A mount of a POSIX tree (issue #20.4): a handle reads the descriptor it opened,
    so the file renamed away and replaced at its name (outside the mount) still
    reads as it was; after this mount stores the file through another handle, a
    handle open before that reads what was stored, as a local filesystem shows
    writes made through other descriptors. Every handle's descriptors are closed at
    release."""
    from datamover.stores.posix import PosixStore

    root = tmp_path / "tree"
    root.mkdir()
    (root / "f").write_bytes(b"first version")
    store = PosixStore()

    async def body(core: FsCore) -> None:
        ino = await walk(core, "f")
        reader, _ = await core.open(ino, os.O_RDONLY)
        (root / "f").rename(root / "f.away")
        (root / "f").write_bytes(b"planted by somebody else")
        assert await core.read(reader, 0, 100) == b"first version"
        writer, _ = await core.open(ino, os.O_WRONLY | os.O_TRUNC)
        await core.write(writer, 0, b"stored by the mount")
        await core.release(writer)
        assert (root / "f").read_bytes() == b"stored by the mount"
        assert await core.read(reader, 0, 100) == b"stored by the mount"
        await core.release(reader)

    before = len(os.listdir("/proc/self/fd"))
    run(store, options, body, root=str(root).lstrip("/"))
    store.close()
    assert len(os.listdir("/proc/self/fd")) == before
    assert (root / "f.away").read_bytes() == b"first version"


def test_renames_in_a_posix_tree_are_renameat(options: MountOptions, tmp_path: Path) -> None:
    """A file, a FIFO and a device node renamed through a mount of a POSIX tree keep
    their inode (``renameat``, no copy: a special file is never opened), and a handle
    open across the rename reads on."""
    from datamover.stores.posix import PosixStore

    root = tmp_path / "tree"
    (root / "d").mkdir(parents=True)
    (root / "f").write_bytes(b"bytes")
    os.mkfifo(root / "p")
    os.mknod(root / "b", stat.S_IFBLK | 0o600, os.makedev(7, 250))
    inodes = {name: (root / name).lstat().st_ino for name in ("f", "p", "b")}

    async def body(core: FsCore) -> None:
        fh, _ = await core.open(await walk(core, "f"), os.O_RDONLY)
        d = await walk(core, "d")
        for name in ("f", "p", "b"):
            await core.rename(ROOT_INO, name, d, name + "2")
        assert await core.read(fh, 0, 100) == b"bytes"
        await core.release(fh)

    run(PosixStore(), options, body, root=str(root).lstrip("/"))
    assert sorted(os.listdir(root)) == ["d"]
    for name, ino in inodes.items():
        assert (root / "d" / (name + "2")).lstat().st_ino == ino
