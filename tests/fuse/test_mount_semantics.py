"""What the mount promises (docs/SEMANTICS.md, "The mount"), checked on real mounts:
metadata persistence, links, xattrs, read-only mounts, big listings, big files."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from datamover.checksums import digest_bytes
from datamover.errors import NotFound
from datamover.posixmeta import PosixAttrs
from datamover.stores.base import DIR_META_NAME, MiB

from mounting import MountPool, Target, make_target, run

pytestmark = [pytest.mark.fuse, pytest.mark.cloud, pytest.mark.timeout(180)]


def test_chmod_chown_utime_persist_in_the_object_metadata(target: Target) -> None:
    path = target.path / "m.txt"
    path.write_bytes(b"metadata")
    os.chmod(path, 0o751)
    os.chown(path, 1001, 1002)
    os.utime(path, ns=(1_600_000_000_000_000_000, 1_500_000_000_123_456_789))
    info = target.store.stat(target.key("m.txt"))
    attrs = PosixAttrs.from_metadata(info.metadata)
    assert attrs == PosixAttrs(stat.S_IFREG | 0o751, 1001, 1002, 1_500_000_000_123_456_789)
    assert info.checksums["sha256"] == hashlib.sha256(b"metadata").hexdigest()
    st = path.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o751, 1001, 1002)
    assert st.st_mtime_ns == 1_500_000_000_123_456_789

    d = target.path / "dd"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o700)
    os.utime(d, ns=(1_600_000_000_000_000_000, 1_500_000_000_123_456_789))
    # SeaweedFS drops the metadata of markers: there it goes to the directory's
    # metadata object instead (docs/SEMANTICS.md, "Metadata").
    key = target.key("dd/")
    if not target.backend.markers_keep_metadata:
        key += DIR_META_NAME
    _, info = target.store.read_object(key)
    dir_attrs = PosixAttrs.from_metadata(info.metadata)
    assert (dir_attrs.mode, dir_attrs.mtime_ns) == (stat.S_IFDIR | 0o700, 1_500_000_000_123_456_789)


def test_links_symlinks_and_the_digest_xattr(target: Target) -> None:
    path = target.path / "f"
    path.write_bytes(b"hello")
    os.link(path, target.path / "hard")
    assert os.stat(path).st_nlink == 2 and (target.path / "hard").read_bytes() == b"hello"

    os.symlink("f", target.path / "ln")
    assert os.readlink(target.path / "ln") == "f"
    assert (target.path / "ln").read_bytes() == b"hello"
    assert target.store.read(target.key("ln")) == b"f"
    mode = PosixAttrs.from_metadata(target.store.stat(target.key("ln")).metadata).mode
    assert mode is not None and stat.S_ISLNK(mode)

    digest = hashlib.sha256(b"hello").hexdigest().encode()
    assert os.getxattr(path, "user.datamover.sha256") == digest
    assert "user.datamover.sha256" in os.listxattr(path)
    with pytest.raises(OSError) as e:
        os.setxattr(path, "user.other", b"1")
    assert e.value.errno == errno.ENOTSUP


def test_symlink_and_modes_survive_a_remount(target: Target, tmp_path: Path) -> None:
    (target.path / "data").write_bytes(b"x")
    os.chmod(target.path / "data", 0o640)
    os.symlink("data", target.path / "alias")
    with target.remount(tmp_path) as fresh:
        base = fresh.path / target.prefix
        assert os.readlink(base / "alias") == "data"
        assert stat.S_IMODE((base / "data").stat().st_mode) == 0o640
        listing = {p.name: p.lstat() for p in base.iterdir()}
        assert stat.S_ISLNK(os.lstat(base / "alias").st_mode)
        assert set(listing) == {"data", "alias"}


def test_read_only_mount_refuses_writes_with_erofs(s3_target: Target, tmp_path: Path) -> None:
    (s3_target.path / "f").write_bytes(b"keep")
    (s3_target.path / "d").mkdir()
    with s3_target.remount(tmp_path, "--read-only") as ro:
        base = ro.path / s3_target.prefix
        assert (base / "f").read_bytes() == b"keep"
        attempts = [
            lambda: open(base / "f", "r+b"),  # noqa: SIM115
            lambda: open(base / "new", "wb"),  # noqa: SIM115
            lambda: (base / "d2").mkdir(),
            lambda: (base / "f").unlink(),
            lambda: (base / "d").rmdir(),
            lambda: os.rename(base / "f", base / "g"),
            lambda: os.chmod(base / "f", 0o600),
            lambda: os.truncate(base / "f", 0),
            lambda: os.symlink("f", base / "l"),
        ]
        for attempt in attempts:
            with pytest.raises(OSError) as e:
                attempt()
            assert e.value.errno == errno.EROFS
    assert s3_target.store.read(s3_target.key("f")) == b"keep"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_ls_l_and_find_on_a_10000_object_prefix(s3_target: Target) -> None:
    count = 10_000
    key = s3_target.fresh_key("")
    client = s3_target.backend.server.client(max_pool_connections=32)  # type: ignore[attr-defined]

    def put(i: int) -> None:
        client.put_object(
            Bucket=s3_target.backend.bucket, Key=f"{key}f{i:05d}", Body=b"x" * (i % 97)
        )

    start = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, range(count)))
    made = time.monotonic() - start
    path = s3_target.mount.path / key.rstrip("/")
    start = time.monotonic()
    listing = run(["ls", "-l", str(path)]).stdout.splitlines()
    ls_seconds = time.monotonic() - start
    assert listing[0].startswith("total") and len(listing) == count + 1
    sizes = {line.split()[-1]: int(line.split()[4]) for line in listing[1:]}
    assert sizes["f00096"] == 96 and sizes["f09999"] == 9999 % 97
    start = time.monotonic()
    found = run(["find", str(path)]).stdout.splitlines()
    find_seconds = time.monotonic() - start
    assert len(found) == count + 1
    print(
        f"\n10,000 objects: made in {made:.1f}s, ls -l {ls_seconds:.1f}s, find {find_seconds:.1f}s"
    )
    client.close()


@pytest.mark.slow
def test_big_file_streams_up_and_reads_back_through_a_fresh_mount(
    s3_target: Target, tmp_path: Path
) -> None:
    size = 200 * MiB
    local = tmp_path / "big.bin"
    with open(local, "wb") as fh:
        for _ in range(size // MiB):
            fh.write(os.urandom(MiB))
    digest = hashlib.sha256(local.read_bytes()).hexdigest()
    start = time.monotonic()
    run(["dd", f"if={local}", f"of={s3_target.path / 'big.bin'}", "bs=1M"])
    write_seconds = time.monotonic() - start
    key = s3_target.key("big.bin")
    info = s3_target.store.stat(key)
    assert info.size == size
    assert info.etag is not None and "-" in info.etag  # a multipart upload, streamed
    # One write: S3 took the metadata when the stream started, before the digest was
    # known; the store's full-object CRC64NVME (SeaweedFS checks it) stands for it.
    assert "sha256" not in info.checksums
    assert (
        info.provider_checksums["crc64nvme"] == digest_bytes("crc64nvme", local.read_bytes()).hex()
    )

    start = time.monotonic()
    direct = s3_target.store.read(key)
    direct_seconds = time.monotonic() - start
    assert len(direct) == size
    del direct
    with s3_target.remount(tmp_path) as fresh:  # a new mount: nothing in the page cache
        start = time.monotonic()
        run(["dd", f"if={fresh.path / key}", "of=/dev/null", "bs=1M"])
        mount_seconds = time.monotonic() - start
        out = run(["sha256sum", str(fresh.path / key)]).stdout.split()[0]
    assert out == digest
    rate = size / MiB
    print(
        f"\n200 MiB: write through mount {rate / write_seconds:.0f} MiB/s, "
        f"read through mount {rate / mount_seconds:.0f} MiB/s, "
        f"direct store.read {rate / direct_seconds:.0f} MiB/s"
    )
    assert rate / mount_seconds > 20  # a floor that catches a broken read-ahead


def test_unlinked_file_is_gone_from_the_store(target: Target) -> None:
    path = target.path / "gone"
    path.write_bytes(b"x")
    path.unlink()
    with pytest.raises(NotFound):
        target.store.stat(target.key("gone"))
    (target.path / "d").mkdir()
    (target.path / "d/f").write_bytes(b"x")
    with pytest.raises(OSError) as e:
        (target.path / "d").rmdir()
    assert e.value.errno == errno.ENOTEMPTY
    subprocess.run(["rm", "-r", str(target.path / "d")], check=True, timeout=60)
    assert not (target.path / "d").exists()
    assert [i.key for i in target.store.list(target.key("d/"), recursive=True)] == []


@pytest.mark.parametrize("name, kept", [("s3", False), ("az", False), ("moto", True), ("gs", True)])
def test_a_backslash_name_only_where_the_store_keeps_it(
    mount_pool: MountPool, name: str, kept: bool
) -> None:
    """SeaweedFS and Azure Blob store ``a\\b`` as ``a/b`` (answering 200): the mount
    refuses such a name (EINVAL) rather than let it land on ``a/b``. moto (like AWS,
    Ceph RGW) and GCS keep it: there it is a name like any other."""
    t = make_target(mount_pool, name)
    (t.path / "a").mkdir()
    (t.path / "a" / "b").write_bytes(b"slash")
    odd = t.path / "a\\b"
    if kept:
        odd.write_bytes(b"backslash")
        (t.path / "a" / "b").rename(t.path / "c\\d")
        assert sorted(os.listdir(t.path)) == ["a", "a\\b", "c\\d"]
        assert odd.read_bytes() == b"backslash"
        assert (t.path / "c\\d").read_bytes() == b"slash"
        return
    for attempt in (
        lambda: odd.write_bytes(b"backslash"),
        lambda: (t.path / "c\\d").mkdir(),
        lambda: os.symlink("a/b", t.path / "c\\d"),
        lambda: os.link(t.path / "a" / "b", t.path / "c\\d"),
        lambda: (t.path / "a" / "b").rename(t.path / "c\\d"),
    ):
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno == errno.EINVAL
    assert sorted(os.listdir(t.path)) == ["a"]
    assert (t.path / "a" / "b").read_bytes() == b"slash"
    keys = [i.key for i in t.store.list(t.prefix)]  # less markers and directory metadata
    assert [k for k in keys if not k.endswith(("/", DIR_META_NAME))] == [t.key("a/b")]


def test_appends_land_at_the_end_of_an_object_another_client_replaced(target: Target) -> None:
    """Within the attribute cache's time, another client replaced the object: an
    append (``>>``, O_APPEND) was written at the size the kernel had cached, over the
    new object's bytes (a blend of two versions, or NULs when it shrank); so was a
    write after ``lseek(SEEK_END)``. A writer's open now sees the object as it is."""
    path, key = target.path / "log", target.key("log")
    path.write_bytes(b"0123456789")
    assert path.stat().st_size == 10  # the kernel caches this size for attr_ttl
    target.store.put(key, b"ABCDEFGHIJKLMNOPQRST")
    with open(path, "ab") as f:
        f.write(b"appended\n")
    assert target.store.read(key) == b"ABCDEFGHIJKLMNOPQRST" + b"appended\n"
    assert path.stat().st_size == 29
    target.store.put(key, b"short")
    fd = os.open(path, os.O_RDWR)
    try:
        assert os.fstat(fd).st_size == 5
        assert os.lseek(fd, 0, os.SEEK_END) == 5
        os.write(fd, b"X")
    finally:
        os.close(fd)
    assert target.store.read(key) == b"shortX"


def test_a_handle_on_an_unlinked_then_recreated_name_never_reads_the_new_file(
    target: Target,
) -> None:
    """A file opened, unlinked and its name reused before the handle read anything:
    the handle read the new file's bytes (cut to the old size). It reads the old
    bytes where the mount still holds them, else fails with ESTALE."""
    path = target.path / "u"
    path.write_bytes(b"OLD-CONTENT-1234")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.unlink(path)
        path.write_bytes(b"brand-new-file-with-other-bytes")
        try:
            data = os.pread(fd, 100, 0)
        except OSError as e:
            assert e.errno == errno.ESTALE, e
        else:
            assert data == b"OLD-CONTENT-1234", data
    finally:
        os.close(fd)
    assert path.read_bytes() == b"brand-new-file-with-other-bytes"


def test_a_listing_starts_with_dot_and_dot_dot(s3_target: Target) -> None:
    """readdir gave neither "." nor "..": C or Fortran code that skips the first two
    entries (as it may on ext4, tmpfs and s3fs) skipped two files."""
    d = s3_target.path / "dots"
    d.mkdir()
    for name in ("a", "b", "c"):
        (d / name).write_bytes(b"x")
    listed = subprocess.run(["ls", "-f", "-a", str(d)], capture_output=True, text=True, check=True)
    names = listed.stdout.split()
    assert names[:2] == [".", ".."] and sorted(names[2:]) == ["a", "b", "c"], names
    assert sorted(os.listdir(d)) == ["a", "b", "c"]  # Python leaves them out, as ever
    # (Not the shared mount's root: a listing of it, cached, would hide the new
    # top-level prefixes other tests' objects are put under, ``Target.fresh_key``.)


def test_an_append_to_a_file_another_client_deleted_creates_it_again(target: Target) -> None:
    """``>>`` to a name the kernel still had cached after another client deleted the
    object: the open looks the name up again (ESTALE) and O_CREAT makes a new file,
    as on a local disk, instead of a failed write."""
    path, key = target.path / "gone.log", target.key("gone.log")
    path.write_bytes(b"old\n")
    assert path.stat().st_size == 4
    target.store.delete(key)
    with open(path, "ab") as f:
        f.write(b"new\n")
    assert target.store.read(key) == b"new\n"
