"""A POSIX tree through an object store and back comes back as it was (issue #6), and
hostile keys never write outside the destination."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import datamover
from datamover.engine import copy_between
from datamover.manifest import read_manifest
from datamover.options import MiB, TransferOptions
from datamover.stores import open_store
from datamover.stores.posix import LUSTRE_MAGIC, PosixStore

from serverenv import ServerEnv, use_server
from servers import MotoServer

pytestmark = pytest.mark.cloud
DM = [sys.executable, "-m", "datamover"]
MTIME_NS = 1_577_934_245_123_456_789  # 2020-01-02T03:04:05.123456789Z


def _fidelity_tree(root: Path) -> None:
    (root / "empty").mkdir(parents=True)
    (root / "sub" / "deeper_empty").mkdir(parents=True)
    (root / "outside").mkdir()
    a = root / "a.txt"
    a.write_bytes(b"hello\n")
    os.chown(a, 1234, 5678)
    a.chmod(0o640)
    os.setxattr(a, "user.project", b"climate-\xff")
    os.utime(a, ns=(MTIME_NS, MTIME_NS))
    (root / "exec.sh").write_text("#!/bin/sh\n")
    (root / "exec.sh").chmod(0o755)
    os.symlink("a.txt", root / "link_in")
    os.symlink("/etc/hostname", root / "link_out")
    os.link(a, root / "hard_a")
    with open(root / "sparse.bin", "wb") as f:
        f.truncate(64 * MiB)
        f.write(b"HEAD")
        f.seek(64 * MiB - 4)
        f.write(b"TAIL")


def _describe(root: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(root))
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(p))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", stat.S_IMODE(st.st_mode))
        else:
            out[rel] = (
                "file",
                p.read_bytes(),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                st.st_mtime_ns,
            )
    return out


def test_round_trip_keeps_modes_owners_times_links_dirs_holes_xattrs(
    seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    src, back = tmp_path / "src", tmp_path / "back"
    _fidelity_tree(src)
    url = seaweed_env.url("fid")
    up = datamover.copy(str(src), url, xattrs=True, manifest=str(tmp_path / "up.jsonl"))
    assert up.ok, up.failures
    down = datamover.copy(url, str(back), xattrs=True, manifest=str(tmp_path / "down.jsonl"))
    assert down.ok, down.failures
    assert _describe(back) == _describe(src)
    assert (back / "a.txt").stat().st_mtime_ns == MTIME_NS
    assert (back / "a.txt").stat().st_ino == (back / "hard_a").stat().st_ino
    assert os.getxattr(back / "a.txt", "user.project") == b"climate-\xff"
    # Holes stay holes: du far below the apparent size, as at the source.
    du = int(
        subprocess.run(
            ["du", "-k", str(back / "sparse.bin")], capture_output=True, text=True
        ).stdout.split()[0]
    )
    assert du < 1024 and (back / "sparse.bin").stat().st_size == 64 * MiB
    for m in (up.manifest, down.manifest):
        assert datamover.verify(m or "").passed
    entries = {e.path: e for e in read_manifest(up.manifest or "").entries}
    assert entries["hard_a"].kind == "hardlink" and entries["hard_a"].link_to == "a.txt"
    assert entries["link_out"].kind == "symlink"
    assert entries["empty/"].kind == "dir"
    assert (entries["a.txt"].uid, entries["a.txt"].gid, entries["a.txt"].mode) == (
        1234,
        5678,
        "0640",
    )
    # The objects carry the keys s3fs and rclone read.
    store, _ = open_store(url)
    meta = store.stat("fid/a.txt").metadata
    assert meta["mode"] == str(stat.S_IFREG | 0o640) and meta["uid"] == "1234"
    assert meta["mtime"] == "1577934245.123456789"
    link = store.stat("fid/link_out")
    assert (
        stat.S_ISLNK(int(link.metadata["mode"])) and store.read("fid/link_out") == b"/etc/hostname"
    )
    marker, _ = store.read_object("fid/empty/")  # empty directories travel as markers
    assert marker == b""


def test_objects_written_by_s3fs_and_rclone_read_back_with_their_metadata(
    seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    store, _ = open_store(seaweed_env.url())
    store.put(
        "t/s3fs.txt",
        b"from s3fs",
        metadata={"mode": "33261", "mtime": "1500000000", "uid": "0", "gid": "0"},
    )
    store.put("t/rclone.txt", b"from rclone", metadata={"mtime": "1600000000.5"})
    store.put("t/s3fs-link", b"s3fs.txt", metadata={"mode": str(stat.S_IFLNK | 0o777)})
    assert datamover.copy(seaweed_env.url("t"), str(tmp_path / "out")).ok
    assert (tmp_path / "out" / "s3fs.txt").stat().st_mtime_ns == 1_500_000_000 * 10**9
    assert stat.S_IMODE((tmp_path / "out" / "s3fs.txt").stat().st_mode) == 0o755
    assert (tmp_path / "out" / "rclone.txt").stat().st_mtime_ns == 1_600_000_000_500_000_000
    assert os.readlink(tmp_path / "out" / "s3fs-link") == "s3fs.txt"


def test_copy_links_follows_and_no_preserve_drops_attributes(
    seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "target.txt").write_text("pointed at")
    os.utime(src / "target.txt", ns=(MTIME_NS, MTIME_NS))
    os.symlink("target.txt", src / "link")
    url = seaweed_env.url("cl")
    assert datamover.copy(str(src), url, copy_links=True, preserve=False).ok
    store, _ = open_store(url)
    assert store.read("cl/link") == b"pointed at"
    assert "mode" not in store.stat("cl/link").metadata
    out = tmp_path / "out"
    assert datamover.copy(url, str(out), preserve=False).ok
    assert not (out / "link").is_symlink() and (out / "link").read_text() == "pointed at"
    assert abs((out / "target.txt").stat().st_mtime - time.time()) < 120


def test_hostile_keys_are_refused_per_file_and_never_escape(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # moto stores any key as given, as AWS does (SeaweedFS normalises '..' away).
    seaweed_env = use_server(moto, monkeypatch)
    store, _ = open_store(seaweed_env.url())
    good = {"h/ok.txt": b"fine", "h/dir/ok2.txt": b"fine too"}
    evil = {
        "h/../escaped.txt": b"x",  # '..' component
        "h/a//b.txt": b"x",  # empty component
        "h/" + "n" * 300: b"x",  # over-long name
        "h/clash": b"file",  # both a file ...
        "h/clash/inner.txt": b"and a dir",  # ... and a prefix
    }
    for key, data in {**good, **evil}.items():
        store.put(key, data)
    dst = tmp_path / "dst"
    proc = subprocess.run(
        [*DM, "copy", seaweed_env.url("h"), str(dst)], capture_output=True, text=True
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert (dst / "ok.txt").read_bytes() == b"fine"
    assert (dst / "dir" / "ok2.txt").read_bytes() == b"fine too"
    assert not (tmp_path / "escaped.txt").exists()
    assert "'../escaped.txt'" in proc.stderr and "'a//b.txt'" in proc.stderr
    assert "longer than 255" in proc.stderr
    assert "both a file and a prefix" in proc.stderr
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")}
    assert all(w.startswith("dst") for w in written), written


def _drop_dac_override() -> None:
    """In the child: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding
    set, so after exec even root gets EACCES on a mode-000 file."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop = 24
    for cap in (1, 2):
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_unreadable_and_growing_source_files_are_reported(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("ok")
    (src / "secret.txt").write_text("no")
    (src / "secret.txt").chmod(0)
    dst = tmp_path / "dst"
    proc = subprocess.run(  # root reads a mode-000 file anyway, unless it loses DAC override
        [*DM, "copy", str(src), str(dst)],
        capture_output=True,
        text=True,
        preexec_fn=_drop_dac_override,
    )
    assert proc.returncode == 1 and "secret.txt" in proc.stderr
    assert "Permission denied" in proc.stderr
    assert (dst / "ok.txt").read_text() == "ok" and not (dst / "secret.txt").exists()

    growing = src / "growing.log"
    growing.write_bytes(os.urandom(24 * MiB))
    stop = threading.Event()

    def append() -> None:
        with open(growing, "ab") as f:
            while not stop.is_set():
                f.write(b"more\n")
                f.flush()
                time.sleep(0.005)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        report = datamover.copy(
            str(growing), str(tmp_path / "g.log"), bwlimit=16 * MiB, part_size=8 * MiB
        )
    finally:
        stop.set()
        writer.join()
    assert not report.ok and "changed while being" in report.failures[0][1]
    assert not (tmp_path / "g.log").exists()  # never committed with wrong content


def test_lustre_layout_is_read_aligned_recorded_and_recreated(tmp_path: Path) -> None:
    calls = tmp_path / "lfs-calls"
    fake = tmp_path / "bin" / "lfs"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {calls}\n'
        'if [ "$1" = getstripe ]; then echo 4; echo 3145728; exit 0; fi\n'
        'if [ "$1" = setstripe ]; then for a; do last=$a; done; : > "$last"; exit 0; fi\n'
    )
    fake.chmod(0o755)
    os.environ["PATH"] = f"{fake.parent}:{os.environ['PATH']}"
    try:
        src = tmp_path / "src"
        src.mkdir()
        data = os.urandom(20 * MiB)
        (src / "big.h5").write_bytes(data)
        lustre = PosixStore(fs_type=lambda path: LUSTRE_MAGIC)
        report = copy_between(
            lustre,
            str(src).lstrip("/"),
            lustre,
            str(tmp_path / "dst").lstrip("/"),
            TransferOptions(manifest=str(tmp_path / "m.jsonl")),
        )
        assert report.ok, report.failures
        entry = read_manifest(str(tmp_path / "m.jsonl")).entries[0]
        assert entry.part_size == 9 * MiB  # 8 MiB raised to whole 3 MiB stripes
        assert (tmp_path / "dst" / "big.h5").read_bytes() == data
        log = calls.read_text()
        assert "getstripe -c -S" in log and "setstripe -c 4 -S 3145728" in log
    finally:
        os.environ["PATH"] = os.environ["PATH"].split(":", 1)[1]


def test_a_symlink_object_with_children_never_redirects_writes(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An object stored as a symlink (s3fs style) to a directory outside the
    destination, plus keys "under" it: nothing may be written through the link."""
    env = use_server(moto, monkeypatch)
    store, _ = open_store(env.url())
    outside = tmp_path / "outside"
    outside.mkdir()
    link_mode = str(stat.S_IFLNK | 0o777)
    store.put("s/link", str(outside).encode(), metadata={"mode": link_mode})
    store.put("s/link/inner.txt", b"must not land outside")
    store.put("s/zz/ok.txt", b"fine")
    dst = tmp_path / "dst"
    proc = subprocess.run([*DM, "copy", env.url("s"), str(dst)], capture_output=True, text=True)
    assert list(outside.iterdir()) == []
    assert (dst / "zz" / "ok.txt").read_bytes() == b"fine"
    # The key under the link lands in a real directory; the link itself is refused.
    assert (dst / "link" / "inner.txt").read_bytes() == b"must not land outside"
    assert not (dst / "link").is_symlink()
    assert proc.returncode == 1 and "link" in proc.stderr, proc.stderr


def test_a_name_that_is_not_utf8_fails_alone(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A POSIX name that is not UTF-8 (manifests, the journal and object keys can't
    hold it) fails by itself, recorded under its ``ls -b`` name; the rest is copied
    and the job ends (no traceback, no job left running, no ``.partial``)."""
    env = use_server(moto, monkeypatch)
    src = tmp_path / "nonutf"
    (src / os.fsdecode(b"d\xe9")).mkdir(parents=True)
    (src / "good.txt").write_text("ok\n")
    (src / os.fsdecode(b"lat\xe9.txt")).write_text("4\n")
    (src / os.fsdecode(b"d\xe9") / "inner.txt").write_text("inner\n")
    os.link(src / os.fsdecode(b"lat\xe9.txt"), src / "same.txt")  # its hard link: a file
    state = Path(os.environ["XDG_STATE_HOME"]) / "datamover"
    store, _ = open_store(env.url())
    for dst, copied in (
        (str(tmp_path / "out"), lambda: sorted(p.name for p in (tmp_path / "out").iterdir())),
        (env.url("nonutf"), lambda: sorted(o.key for o in store.list(""))),
    ):
        proc = subprocess.run([*DM, "copy", str(src), dst], capture_output=True, text=True)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
        for name in ("lat\\351.txt", "d\\351/inner.txt"):
            assert f"{name}: the name is not valid UTF-8; rename it" in proc.stderr
        if dst.startswith("s3://"):
            assert copied() == ["nonutf/good.txt", "nonutf/same.txt"]
        else:
            assert copied() == ["good.txt", "same.txt"]
            assert (tmp_path / "out" / "same.txt").read_text() == "4\n"
        manifests = list((state / "manifests").iterdir())
        assert not [m for m in manifests if m.name.endswith(".partial")]
        manifest = read_manifest(str(max(manifests, key=lambda m: m.stat().st_mtime_ns)))
        status = {e.path: e.status for e in manifest.entries}
        assert status == {
            "good.txt": "ok",
            "same.txt": "ok",
            "lat\\351.txt": "failed",
            "d\\351/inner.txt": "failed",
        }
    jobs = subprocess.run([*DM, "jobs", "list"], capture_output=True, text=True)
    assert jobs.returncode == 0 and jobs.stdout.count("incomplete") == 2, jobs.stdout
    assert "running" not in jobs.stdout


def test_sync_and_roots_with_names_that_are_not_utf8(tmp_path: Path) -> None:
    """Sync fails such a source file even when the destination has it already,
    ``--delete`` removes a destination-only one and records it escaped, and a root
    that is not UTF-8 is a usage error."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    for root in (src, dst):
        root.mkdir()
        (root / "good.txt").write_text("ok\n")
        (root / os.fsdecode(b"lat\xe9.txt")).write_text("4\n")
    proc = subprocess.run([*DM, "sync", str(src), str(dst)], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "lat\\351.txt: the name is not valid UTF-8; rename it" in proc.stderr
    (src / os.fsdecode(b"lat\xe9.txt")).unlink()
    (dst / os.fsdecode(b"a\\\xff")).write_text("stale\n")
    proc = subprocess.run(
        [*DM, "sync", "--delete", str(src), str(dst)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(dst)) == ["good.txt"]
    manifests = list((Path(os.environ["XDG_STATE_HOME"]) / "datamover" / "manifests").iterdir())
    manifest = read_manifest(str(max(manifests, key=lambda m: m.stat().st_mtime_ns)))
    assert {e.path: e.status for e in manifest.entries} == {
        "good.txt": "skipped",
        "a\\\\\\377": "deleted",
        "lat\\351.txt": "deleted",
    }
    bad_root = tmp_path / os.fsdecode(b"root\xe9")
    bad_root.mkdir()
    for args in ([str(src), str(tmp_path / os.fsdecode(b"out\xe9"))], [str(bad_root), "out"]):
        proc = subprocess.run([*DM, "copy", *args], capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert "\\351/: the name is not valid UTF-8; rename it" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_file_grown_after_planning_is_recorded_at_the_size_copied(tmp_path: Path) -> None:
    """A file that grows between the listing and its copy is copied as it is when its
    copy starts, and the manifest records that size with that digest (it recorded the
    listed size beside the digest of the grown file, which verify then failed)."""
    src = tmp_path / "src"
    src.mkdir()
    grows = src / "grows.bin"
    grows.write_bytes(os.urandom(24 * MiB))
    extra = os.urandom(1000)

    class Grower(datamover.Listener):
        def file_started(self, job: object) -> None:
            if grows.stat().st_size == 24 * MiB:
                with open(grows, "ab") as f:
                    f.write(extra)

    manifest = tmp_path / "m.jsonl"
    report = datamover.copy(
        str(src),
        str(tmp_path / "dst"),
        TransferOptions(manifest=str(manifest), part_size=8 * MiB),
        listener=Grower(),
    )
    assert report.ok, report.failures
    entry = next(e for e in read_manifest(manifest).entries if e.path == "grows.bin")
    assert entry.size == 24 * MiB + 1000 == (tmp_path / "dst" / "grows.bin").stat().st_size
    assert datamover.verify(str(manifest)).passed


def test_a_dangling_link_under_copy_links_fails_by_name_and_stops_deletes(
    tmp_path: Path,
) -> None:
    """With -L a link whose target is gone fails that entry, named (it was left out
    without a word, exit 0), and a sync --delete then deletes nothing: the copy of
    the file the link led to stays at the destination (as rsync -L does)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    (src / "target").write_text("content")
    (src / "link").symlink_to("target")
    dst = tmp_path / "dst"
    assert datamover.sync(str(src), str(dst), copy_links=True).ok
    assert (dst / "link").read_text() == "content"
    (src / "target").unlink()
    proc = subprocess.run(
        [*DM, "sync", "-L", "--delete", str(src), str(dst)], capture_output=True, text=True
    )
    assert proc.returncode == 1, proc.stderr
    assert "FAILED link" in proc.stderr and "dangling symlink" in proc.stderr
    assert (dst / "link").read_text() == "content" and (dst / "target").exists()
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "gone").symlink_to("/nonexistent/file")
    report = datamover.copy(str(lone), str(tmp_path / "out"), copy_links=True)
    assert [p for p, _ in report.failures] == ["gone"], report
