"""Nothing a bucket holds (keys, link targets, metadata) and nothing that changes under
a run makes datamover write, link, chmod or delete outside the POSIX destination named;
one bad object fails alone, named (exit 1). The reproductions of the security issue,
each against a real S3 server (moto stores keys as given, ``..`` included) or a POSIX
tree, through the CLI or the engine."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from datamover.engine import copy_between
from datamover.options import MiB, TransferOptions
from datamover.stores import open_store
from datamover.stores.posix import PosixStore

from faults import FaultyStore
from serverenv import ServerEnv, use_server
from servers import MotoServer

pytestmark = pytest.mark.cloud
DM = [sys.executable, "-m", "datamover"]
LINK = str(stat.S_IFLNK | 0o777)


def k(path: Path) -> str:
    return str(path).lstrip("/")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DM, *args], capture_output=True, text=True)


@pytest.fixture
def bucket(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    return use_server(moto, monkeypatch)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory the run must never touch: its entries, modes and times are checked."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "keep.txt").write_bytes(b"keep")
    os.chmod(out, 0o750)
    os.utime(out, ns=(10**18, 10**18))
    return out


def untouched(out: Path) -> None:
    assert sorted(os.listdir(out)) == ["keep.txt"]
    assert (out / "keep.txt").read_bytes() == b"keep"
    assert (out / "keep.txt").stat().st_nlink == 1
    st = out.stat()
    assert stat.S_IMODE(st.st_mode) == 0o750 and st.st_mtime_ns == 10**18


def test_links_made_in_the_same_run_never_open_a_way_out(
    bucket: ServerEnv, outside: Path, tmp_path: Path
) -> None:
    store, _ = open_store(bucket.url())
    store.put("payload", b"payload bytes")
    store.put("s", str(outside).encode(), metadata={"mode": LINK})
    store.put("s/victim.conf", b"", metadata={"datamover-hardlink": "payload"})
    for i in range(1, 21):
        store.put(f"s/t{i}", b"/etc/passwd", metadata={"mode": LINK})
    dst = tmp_path / "dst"
    proc = run("copy", bucket.url(), str(dst))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    untouched(outside)
    assert (dst / "payload").read_bytes() == b"payload bytes"
    # Links are made last, in the order their objects were read: whichever of "s"
    # (a link) and "s/..." (entries in a directory s) comes first wins, the other
    # fails; what is never possible is an entry made through the link.
    if (dst / "s").is_symlink():
        assert os.readlink(dst / "s") == str(outside)
        assert "FAILED s/victim.conf" in proc.stderr and "FAILED s/t20" in proc.stderr
        assert "symlink" in proc.stderr
    else:
        assert "FAILED s:" in proc.stderr and "is a directory here" in proc.stderr
        assert (dst / "s" / "victim.conf").stat().st_ino == (dst / "payload").stat().st_ino
    assert "internal error" not in proc.stderr


def test_hard_link_markers_name_files_of_the_destination_only(
    bucket: ServerEnv, outside: Path, tmp_path: Path
) -> None:
    store, _ = open_store(bucket.url())
    passwd_links = os.stat("/etc/passwd").st_nlink
    store.put("h/payload", b"payload bytes")
    store.put("h/dir/", b"")
    markers = {
        "h/good": "h/payload",
        "h/evil1": "h/../../../../../../etc/passwd",
        "h/evil2": "../../../../../../etc/passwd",  # not even under the copied prefix
        "h/evil3": "h//etc/passwd",
        "h/evil4": "h/dir",  # a directory
        "h/evil5": "h/missing",
    }
    for key, target in markers.items():
        store.put(key, b"", metadata={"datamover-hardlink": target})
    dst = tmp_path / "dst"
    proc = run("copy", bucket.url("h"), str(dst))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert (dst / "good").stat().st_ino == (dst / "payload").stat().st_ino
    for name in ("evil1", "evil2", "evil3", "evil4", "evil5"):
        assert f"FAILED {name}" in proc.stderr, proc.stderr
        assert not (dst / name).exists()
    assert os.stat("/etc/passwd").st_nlink == passwd_links
    assert "internal error" not in proc.stderr
    untouched(outside)


def test_one_object_with_bad_metadata_fails_alone(bucket: ServerEnv, tmp_path: Path) -> None:
    store, _ = open_store(bucket.url())
    store.put("m/good.txt", b"good", metadata={"mode": str(0o100640)})
    bad = {
        "stripe-small": {"lustre-stripe-size": "abc"},
        "mode": {"mode": "rw-r--r--"},
        "uid": {"uid": "root"},
        "gid": {"gid": str(1 << 40)},
        "mtime": {"mtime": "yesterday"},
    }
    for name, meta in bad.items():
        store.put(f"m/{name}", b"x", metadata=meta)
    store.put("m/stripe-large", os.urandom(2 * MiB), metadata={"lustre-stripe-size": "abc"})
    dst = tmp_path / "dst"
    proc = run("copy", bucket.url("m"), str(dst), "--multipart-threshold", "1M")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "internal error" not in proc.stderr
    assert (dst / "good.txt").read_bytes() == b"good"
    assert stat.S_IMODE((dst / "good.txt").stat().st_mode) == 0o640
    for name in ("mode", "uid", "gid", "mtime", "stripe-small", "stripe-large"):
        assert f"FAILED {name}:" in proc.stderr, proc.stderr
        assert not (dst / name).exists()
    assert "lustre-stripe-size='abc'" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="restoring owner 0 needs root")
def test_as_root_setid_bits_are_dropped_unless_asked_and_modes_follow_the_umask(
    bucket: ServerEnv, tmp_path: Path
) -> None:
    store, _ = open_store(bucket.url())
    store.put("x/suid", b"#!/bin/sh\n", metadata={"mode": str(0o106755), "uid": "0", "gid": "0"})
    store.put("x/plain", b"no metadata at all")
    store.put("x/emptydir/", b"")
    old = os.umask(0o027)
    try:
        proc = run("copy", bucket.url("x"), str(tmp_path / "a"))
        asked = run("copy", bucket.url("x"), str(tmp_path / "b"), "--preserve-setid")
    finally:
        os.umask(old)
    assert proc.returncode == 0 and asked.returncode == 0, proc.stderr + asked.stderr
    st = (tmp_path / "a" / "suid").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o755, 0, 0)
    assert stat.S_IMODE((tmp_path / "b" / "suid").stat().st_mode) == 0o6755
    assert stat.S_IMODE((tmp_path / "a" / "plain").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "a" / "emptydir").stat().st_mode) == 0o750


def test_sync_copy_links_delete_removes_destination_links_not_their_targets(
    outside: Path, tmp_path: Path
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "in-linked-dir").write_bytes(b"followed")
    src.mkdir()
    (src / "a").write_bytes(b"a")
    (src / "ln").symlink_to(tmp_path / "linked")  # -L follows this one (the source)
    dst.mkdir()
    (dst / "ext").symlink_to(outside)  # not in the source: to be deleted, as a link
    (dst / "extfile").symlink_to(outside / "keep.txt")
    proc = run("sync", "-L", "--delete", str(src), str(dst))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    untouched(outside)
    assert not os.path.lexists(dst / "ext") and not os.path.lexists(dst / "extfile")
    assert (dst / "ln" / "in-linked-dir").read_bytes() == b"followed"
    assert not (dst / "ln").is_symlink() and (dst / "a").read_bytes() == b"a"


def test_rm_r_removes_links_never_what_they_point_to(outside: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_bytes(b"f")
    (tree / "sub" / "out").symlink_to(outside)
    (tree / "top").symlink_to(outside)
    proc = run("rm", "-r", str(tree / "top"))
    assert proc.returncode == 0, proc.stderr
    assert not os.path.lexists(tree / "top")
    proc = run("rm", "-r", str(tree / "sub"))
    assert proc.returncode == 0, proc.stderr
    assert not os.path.lexists(tree / "sub")
    untouched(outside)


def test_an_empty_source_directory_never_chmods_through_a_destination_link(
    outside: Path, tmp_path: Path
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "d").mkdir(parents=True)
    os.chmod(src / "d", 0o777)
    dst.mkdir()
    (dst / "d").symlink_to(outside)
    proc = run("copy", str(src), str(dst))
    assert proc.returncode == 1 and "FAILED d/" in proc.stderr, proc.stderr
    untouched(outside)


def _swap_to_link(directory: Path, target: Path, keep_as: Path | None) -> None:
    if keep_as is None:
        for p in directory.iterdir():
            p.unlink()
        directory.rmdir()
    else:
        os.rename(directory, keep_as)
    directory.symlink_to(target)


@pytest.mark.parametrize("when", ["before-any-write", "after-ten-files"])
def test_a_destination_directory_swapped_for_a_link_mid_run(
    outside: Path, tmp_path: Path, when: str
) -> None:
    """A hook fires between planning and writing (the wrapper store runs it before
    the put it names, with every other put held back): ``dst/d`` becomes a symlink to
    ``outside``. Nothing may land there."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "d").mkdir(parents=True)
    names = [f"f{i:02d}" for i in range(30)]
    for name in names:
        (src / "d" / name).write_bytes(name.encode())
    (dst / "d").mkdir(parents=True)
    trigger = 0 if when == "before-any-write" else 10  # puts passed on before the swap
    moved = tmp_path / "dst" / "d.moved"
    inner = PosixStore()
    wrapped = FaultyStore(inner)
    puts = [0]

    def before(op: str, key: str) -> None:
        if puts[0] == trigger:
            _swap_to_link(dst / "d", outside, None if trigger == 0 else moved)
        puts[0] += 1

    wrapped.before = before
    report = copy_between(
        PosixStore(),
        k(src),
        wrapped,
        k(dst),
        TransferOptions(transfers=4, manifest=str(tmp_path / "m.jsonl")),
    )
    untouched(outside)
    failed = {path for path, _ in report.failures}
    if trigger == 0:
        assert failed == {f"d/{n}" for n in names}
        assert all("symlink" in why for _, why in report.failures), report.failures
    else:
        # Files headed for the directory that was opened follow it where it was moved
        # (inside the tree here); the rest fail. None went through the link.
        landed = set(os.listdir(moved))
        assert landed | {f.removeprefix("d/") for f in failed} == set(names)
        assert len(landed) >= 10 and not landed & {f.removeprefix("d/") for f in failed}
    inner.close()


def test_a_source_file_swapped_for_a_link_is_never_read_through(
    outside: Path, tmp_path: Path
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "small").write_bytes(b"small")
    (src / "large").write_bytes(os.urandom(3 * MiB))
    source = FaultyStore(PosixStore())

    def before(op: str, key: str) -> None:
        for name in ("small", "large"):
            path = src / name
            if key.endswith("/" + name) and not path.is_symlink():
                path.unlink()
                path.symlink_to(outside / "keep.txt")

    source.before = before
    report = copy_between(
        source,
        k(src),
        PosixStore(),
        k(dst),
        TransferOptions(multipart_threshold=1 * MiB, manifest=str(tmp_path / "m.jsonl")),
    )
    for name in ("small", "large"):
        path = dst / name
        assert not path.exists() or path.is_symlink()  # a link copied as one, or failed
        if path.exists() and not path.is_symlink():
            assert path.read_bytes() != b"keep"
    # The large one too is copied as the link it now is (its stat shows the link: a
    # link is never moved by parts), or fails as changed; never read through.
    large_failed = any(p == "large" and "symlink" in why for p, why in report.failures)
    assert large_failed or (dst / "large").is_symlink(), report.failures
    untouched(outside)


def test_link_loops_and_paths_past_path_max_fail_alone(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "ok").write_bytes(b"ok")
    (src / "sub" / "up").symlink_to("..")
    (src / "a").symlink_to("b")
    (src / "b").symlink_to("a")
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(20):
        os.mkdir("d" * 250, dir_fd=fd)
        nfd = os.open("d" * 250, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(os.open("leaf", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    os.close(fd)
    proc = run("copy", "-L", str(src), str(dst))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "internal error" not in proc.stderr
    assert (dst / "ok").read_bytes() == b"ok"
    assert "FAILED sub/up/" in proc.stderr and "loop" in proc.stderr
    assert "FAILED a:" in proc.stderr and "FAILED b:" in proc.stderr
    assert "PATH_MAX" in proc.stderr
    # Without -L the links are copied as links and only the deep part fails.
    proc = run("copy", str(src), str(tmp_path / "dst2"))
    assert proc.returncode == 1 and "PATH_MAX" in proc.stderr, proc.stderr
    assert os.readlink(tmp_path / "dst2" / "sub" / "up") == ".."
