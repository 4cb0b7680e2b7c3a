"""What ``ls -l`` of an S3 prefix shows and costs through a fresh mount, in both modes
(docs/SEMANTICS.md, "Listing attributes"), counted on the wire: the mount talks to
SeaweedFS through ``CountingProxy``, which forwards every byte and counts requests.

* default: every object of a listing is HEADed once, at most ``stat_concurrency`` at
  once, so ``ls -l`` shows the stored mode, owner and mtime; nothing more is asked
  when the entries are then stat'ed.
* ``attrs_from_list``: no HEAD per entry; sizes and mtimes are the LIST's, mode and
  owner the mount's defaults; a HEAD only for what needs one (open, digest xattr).
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from datamover.posixmeta import PosixAttrs
from datamover.stores.base import DIR_META_NAME

from counting_proxy import CountingProxy
from mounting import Target, mount_through, run

pytestmark = [pytest.mark.fuse, pytest.mark.cloud, pytest.mark.timeout(180)]

STORED = PosixAttrs(stat.S_IFREG | 0o640, 1001, 1002, 1_500_000_000_250_000_000)
COUNT = 60


@pytest.fixture
def proxy(s3_target: Target) -> Iterator[CountingProxy]:
    with CountingProxy(s3_target.backend.server.endpoint, head_delay=0.02) as p:
        yield p


@pytest.fixture
def prefix(s3_target: Target) -> str:
    """A prefix no mount has seen: even objects carry POSIX metadata, odd ones none
    (as written by another tool), sizes differ."""
    prefix = f"ls-{uuid.uuid4().hex[:10]}/"
    for i in range(COUNT):
        meta = STORED.to_metadata() if i % 2 == 0 else {}
        s3_target.store.put(f"{prefix}f{i:03d}", b"x" * i, metadata=meta)
    return prefix


def ls_ln(path: Path) -> dict[str, tuple[str, int, int, int, int]]:
    """name -> (mode string, uid, gid, size, mtime s) from ``ls -ln``."""
    out = run(["ls", "-ln", "--time-style=+%s", str(path)]).stdout.splitlines()
    assert out[0].startswith("total")
    rows = {}
    for line in out[1:]:
        mode, _, uid, gid, size, mtime, name = line.split()
        rows[name] = (mode, int(uid), int(gid), int(size), int(mtime))
    return rows


def test_default_ls_l_shows_stored_metadata_with_bounded_parallel_heads(
    s3_target: Target, proxy: CountingProxy, prefix: str, tmp_path: Path
) -> None:
    # A long attribute TTL: the counts below must not depend on how long this takes.
    with mount_through(proxy, s3_target, tmp_path, stat_concurrency=3, attr_ttl=300) as mount:
        proxy.reset()
        rows = ls_ln(mount.path / prefix)
        inside = f"/{s3_target.backend.bucket}/{prefix}"
        # The directory's own metadata object (SeaweedFS's markers keep none): one.
        assert proxy.paths("HEAD").count(inside + DIR_META_NAME) <= 1
        heads = proxy.count("HEAD", inside + "f")
        assert len(rows) == COUNT
        for i in range(COUNT):
            mode, uid, gid, size, mtime = rows[f"f{i:03d}"]
            assert size == i
            if i % 2 == 0:
                assert (mode, uid, gid, mtime) == ("-rw-r-----", 1001, 1002, 1_500_000_000)
            else:
                assert (mode, uid, gid) == ("-rw-r--r--", os.getuid(), os.getgid())
        assert heads == COUNT  # one HEAD per object, in readdir
        assert 2 <= proxy.max_in_flight["HEAD"] <= 3  # in parallel, within --stat-concurrency
        # The kernel got final attributes with the entries: stat'ing them asks nothing.
        for name in rows:
            os.lstat(mount.path / prefix / name)
        assert proxy.count("HEAD", inside + "f") == heads
        with pytest.raises(OSError) as e:
            os.getxattr(mount.path / prefix / "f000", "security.selinux")
        assert e.value.errno == errno.ENOTSUP  # not a namespace the mount has
        with pytest.raises(OSError) as e:
            os.getxattr(mount.path / prefix / "f000", "user.other")
        assert e.value.errno == errno.ENODATA
        assert proxy.count("HEAD", inside + "f") == heads


def test_attrs_from_list_ls_l_costs_no_head_and_shows_the_list(
    s3_target: Target, proxy: CountingProxy, prefix: str, tmp_path: Path
) -> None:
    listed = {
        info.key[len(prefix) :]: info for info in s3_target.store.list(prefix, recursive=False)
    }
    assert len(listed) == COUNT
    with mount_through(proxy, s3_target, tmp_path, attrs_from_list=True) as mount:
        proxy.reset()
        base = mount.path / prefix
        rows = ls_ln(base)
        inside = f"/{s3_target.backend.bucket}/{prefix}"
        # Not one per entry: only the zero-byte f000 (it might have been a special file
        # or a hard link) and the directory's metadata object (SeaweedFS), once.
        heads = [p for p in proxy.paths("HEAD") if p.startswith(inside)]
        assert sorted(heads) in ([inside + "f000"], [inside + DIR_META_NAME, inside + "f000"])
        assert [p for p in proxy.paths("GET") if p.startswith(inside) and p != inside] == []
        assert len(rows) == COUNT
        for name, (mode, uid, gid, size, mtime) in rows.items():
            if name == "f000":
                assert (mode, uid, gid, mtime) == ("-rw-r-----", 1001, 1002, 1_500_000_000)
                continue
            info = listed[name]
            assert info.mtime is not None
            assert (size, mtime) == (info.size, int(info.mtime))  # LIST's LastModified
            # even objects carrying stored metadata show the mount's defaults
            assert (mode, uid, gid) == ("-rw-r--r--", os.getuid(), os.getgid())
        for name in rows:
            os.lstat(base / name)
        assert len([p for p in proxy.paths("HEAD") if p.startswith(inside)]) == len(heads)

        # A HEAD only where one is needed: opening a file, reading its digest xattr.
        proxy.reset()
        assert (base / "f007").read_bytes() == b"x" * 7
        assert proxy.paths("HEAD") == [inside + "f007"]
        digest = s3_target.store.stat(prefix + "f009").checksums.get("sha256")
        if digest is None:
            with pytest.raises(OSError) as e:
                os.getxattr(base / "f009", "user.datamover.sha256")
            assert e.value.errno == errno.ENODATA
        else:
            assert os.getxattr(base / "f009", "user.datamover.sha256") == digest.encode()
        assert proxy.paths("HEAD") == [inside + "f007", inside + "f009"]


def test_attrs_from_list_mount_still_writes_posix_metadata(
    s3_target: Target, proxy: CountingProxy, tmp_path: Path
) -> None:
    """What the fast mode gives up is reading metadata for listings, not storing it:
    a default mount afterwards shows what was set through the fast one."""
    prefix = f"w-{uuid.uuid4().hex[:10]}"
    with mount_through(proxy, s3_target, tmp_path, attrs_from_list=True) as mount:
        (mount.path / prefix).mkdir()
        path = mount.path / prefix / "new.txt"
        path.write_bytes(b"written")
        os.chmod(path, 0o600)
        os.utime(path, ns=(1_400_000_000_000_000_000, 1_400_000_000_000_000_000))
        st = path.stat()  # the mount sees its own changes
        assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o600, 1_400_000_000 * 10**9)
    attrs = PosixAttrs.from_metadata(s3_target.store.stat(f"{prefix}/new.txt").metadata)
    assert (attrs.mode, attrs.mtime_ns) == (stat.S_IFREG | 0o600, 1_400_000_000 * 10**9)
    with s3_target.remount(tmp_path) as fresh:
        rows = ls_ln(fresh.path / prefix)
        assert rows["new.txt"][0] == "-rw-------" and rows["new.txt"][4] == 1_400_000_000
