"""rclone's ``--links`` objects (``NAME.rclonelink``, body = target) from an untrusted
bucket, through the CLI against moto: with ``--links`` they become symlinks inside the
destination that nothing in the run follows, as datamover's own (s3fs-style) link
objects do; a body no link can have fails that one file, named."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import datamover
from datamover.options import TransferOptions
from datamover.stores import open_store

from serverenv import ServerEnv, use_server
from servers import MotoServer

pytestmark = pytest.mark.cloud
DM = [sys.executable, "-m", "datamover"]
LINK = str(stat.S_IFLNK | 0o777)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DM, *args], capture_output=True, text=True)


@pytest.fixture
def bucket(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    return use_server(moto, monkeypatch)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    (out / "keep.txt").write_bytes(b"keep")
    return out


def test_hostile_rclonelinks_stay_links_inside_the_destination(
    bucket: ServerEnv, outside: Path, tmp_path: Path
) -> None:
    store, _ = open_store(bucket.url())
    store.put("t/a.txt", b"a")
    store.put("t/up.rclonelink", b"../../etc/passwd")
    store.put("t/abs.rclonelink", b"/etc/passwd")
    store.put("t/out.rclonelink", str(outside).encode())
    for i in range(5):  # written, if at all, only as entries of a real directory out/
        store.put(f"t/out/victim{i}", b"owned")
    store.put("t/huge.rclonelink", b"x" * 5000)
    store.put("t/nul.rclonelink", b"a\0b")
    store.put("t/s3fs", b"a.txt", metadata={"mode": LINK})  # datamover's own kind
    store.put("t/both", b"plain")  # a plain NAME beside NAME.rclonelink: no renaming
    store.put("t/both.rclonelink", b"a.txt")
    dst = tmp_path / "dst"
    proc = run("copy", "--links", bucket.url("t"), str(dst))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    assert (dst / "a.txt").read_bytes() == b"a"
    assert os.readlink(dst / "up") == "../../etc/passwd"
    assert os.readlink(dst / "abs") == "/etc/passwd"
    assert os.readlink(dst / "s3fs") == "a.txt"
    assert (dst / "both").read_bytes() == b"plain"
    assert (dst / "both.rclonelink").read_bytes() == b"a.txt"
    assert "FAILED huge:" in proc.stderr and "5000 bytes" in proc.stderr, proc.stderr
    assert "FAILED nul:" in proc.stderr and "NUL" in proc.stderr, proc.stderr
    for name in ("huge", "nul", "huge.rclonelink", "nul.rclonelink"):
        assert not os.path.lexists(dst / name), name
    # Never written through: out/ is either the link (its entries failed) or a directory.
    assert sorted(os.listdir(outside)) == ["keep.txt"]
    if (dst / "out").is_symlink():
        assert os.readlink(dst / "out") == str(outside)
        assert "FAILED out/victim0" in proc.stderr
    else:
        assert "FAILED out:" in proc.stderr


def test_without_links_rclonelink_objects_are_plain_objects(
    bucket: ServerEnv, tmp_path: Path
) -> None:
    store, _ = open_store(bucket.url())
    store.put("p/l.rclonelink", b"target")
    store.put("p/s3fs", b"target", metadata={"mode": LINK})
    dst = tmp_path / "dst"
    assert datamover.copy(bucket.url("p"), str(dst)).ok
    assert (dst / "l.rclonelink").read_bytes() == b"target"
    assert os.readlink(dst / "s3fs") == "target"


def test_links_up_and_sync_delete_remove_only_the_link_object(
    bucket: ServerEnv, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    (src / "a-b").write_bytes(b"sorts between a and a.rclonelink")
    (src / "link").symlink_to("a")
    opts = TransferOptions(links=True)
    assert datamover.copy(str(src), bucket.url("u"), opts).ok
    store, _ = open_store(bucket.url())
    keys = sorted(i.key for i in store.list("u/"))
    assert keys == ["u/a", "u/a-b", "u/link.rclonelink"], keys
    assert store.read("u/link.rclonelink") == b"a"
    # a symlink named like a plain object it replaces: the plain one goes.
    (src / "a-b").unlink()
    (src / "a-b").symlink_to("a")
    (src / "link").unlink()
    report = datamover.sync(str(src), bucket.url("u"), opts, delete=True)
    assert report.ok, report
    keys = sorted(i.key for i in store.list("u/"))
    assert keys == ["u/a", "u/a-b.rclonelink"], keys


def test_verify_reads_links_the_way_the_copy_wrote_them(bucket: ServerEnv, tmp_path: Path) -> None:
    """A ``copy --links`` up records ``links`` in its manifest; ``verify`` (with or
    without download) then finds ``link`` as ``link.rclonelink``, not missing."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a")
    os.symlink("a.txt", src / "link")
    manifest = tmp_path / "m.jsonl"
    done = run("copy", "--links", str(src), bucket.url("v"), "--manifest", str(manifest))
    assert done.returncode == 0, done.stderr
    store, _ = open_store(bucket.url())
    assert sorted(o.key for o in store.list("v/")) == ["v/a.txt", "v/link.rclonelink"]
    for extra in ([], ["--no-download"]):
        check = run("verify", *extra, str(manifest))
        assert check.returncode == 0, (extra, check.stdout + check.stderr)
        assert "2 of 2 files match" in check.stdout, check.stdout
