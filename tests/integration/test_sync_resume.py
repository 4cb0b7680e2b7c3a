"""sync, the job journal, resume after kill -9, and fatal-error handling, over HTTP.

The tests that drive the store (sync, sync --checksum, a fatal error then resume, kill
-9 then resume) run on SeaweedFS and on Ceph RGW over http and over https (issue #21).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import datamover
from datamover.engine import copy_between
from datamover.errors import AuthError, UsageError
from datamover.manifest import read_manifest
from datamover.options import MiB, TransferOptions
from datamover.stores import open_store

from faults import FaultyStore
from serverenv import ServerEnv, use_server

pytestmark = pytest.mark.cloud
DM = [sys.executable, "-m", "datamover"]
CEPH = pytest.mark.ceph


@pytest.fixture(
    params=[
        "seaweed",
        pytest.param("ceph", marks=CEPH),
        pytest.param("ceph_tls", marks=CEPH, id="ceph-tls"),
    ]
)
def store_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    """SeaweedFS, and Ceph RGW over http and over https (its CA in ``AWS_CA_BUNDLE``)."""
    return use_server(request.getfixturevalue(request.param), monkeypatch)


def _tree(root: Path, big: int = 0, small: int = 5) -> None:
    (root / "d").mkdir(parents=True, exist_ok=True)
    if big:
        (root / "big.bin").write_bytes(os.urandom(big))
    for i in range(small):
        (root / "d" / f"f{i:03d}.txt").write_bytes(os.urandom(100 + i))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_sync_copies_only_what_differs_and_deletes_with_guard(
    store_env: ServerEnv, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _tree(src, big=9 * MiB)
    url = store_env.url("mirror")
    first = datamover.sync(str(src), url)
    assert first.ok and first.files_ok == 6 and first.bytes_moved == 9 * MiB + 510
    second = datamover.sync(str(src), url)
    assert second.files_ok == 0 and second.bytes_moved == 0 and second.files_skipped == 6

    (src / "d" / "f001.txt").write_bytes(b"changed")
    os.utime(src / "d" / "f002.txt", ns=(1, 1_000_000_123))  # same size, other mtime
    (src / "d" / "f003.txt").unlink()
    (src / "d" / "f004.txt").unlink()
    with pytest.raises(UsageError, match="max-delete"):
        datamover.sync(str(src), url, delete=True, max_delete=1)
    store, _ = open_store(url)
    assert store.stat("mirror/d/f003.txt").size  # nothing deleted
    third = datamover.sync(str(src), url, delete=True, max_delete=2)
    assert sorted(third.deleted) == ["d/f003.txt", "d/f004.txt"]
    assert third.bytes_moved == 0  # the aborted run already copied the two changed files
    assert store.read("mirror/d/f001.txt") == b"changed"

    back = tmp_path / "back"
    assert datamover.sync(url, str(back)).files_ok == 4
    assert _files(back) == _files(src)
    assert datamover.sync(url, str(back)).bytes_moved == 0
    # POSIX mtimes came back, so a sync the other way finds nothing to do either.
    assert datamover.sync(str(back), url).bytes_moved == 0


def test_sync_checksum_compare_uses_stored_digest(store_env: ServerEnv, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src, small=3)
    url = store_env.url("c")
    datamover.sync(str(src), url)
    target = src / "d" / "f000.txt"
    st = target.stat()
    target.write_bytes(os.urandom(st.st_size))  # same size ...
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... same mtime
    assert datamover.sync(str(src), url).bytes_moved == 0  # size+mtime can't see it
    report = datamover.sync(str(src), url, checksum=True)
    assert report.files_ok == 1 and report.files_skipped == 2
    store, _ = open_store(url)
    assert store.read("c/d/f000.txt") == target.read_bytes()


def test_fatal_error_stops_run_and_resume_finishes_it(store_env: ServerEnv, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src, big=4 * 5 * MiB, small=3)
    dst_store, _ = open_store(store_env.url())
    faulty = FaultyStore(dst_store)
    faulty.fail("write_part", 2, times=1, error=lambda: AuthError("token expired"))
    src_store, src_key = open_store(str(src))
    opts = TransferOptions(part_size=5 * MiB, transfers=2, manifest=str(tmp_path / "m.jsonl"))
    with pytest.raises(AuthError):
        copy_between(src_store, src_key, faulty, "r/", opts)
    # Nothing half-written is visible, the manifest is left open for the resume.
    assert "r/big.bin" not in [i.key for i in dst_store.list("r/")]
    assert (tmp_path / "m.jsonl.partial").exists()
    report = datamover.copy(str(src), store_env.url("r"), opts)
    assert report.ok and report.resumed
    assert report.bytes_moved < 20 * MiB + 303  # parts the store still held were kept
    manifest = read_manifest(str(tmp_path / "m.jsonl"))
    assert sorted(e.path for e in manifest.entries if e.status == "ok") == sorted(_files(src))
    assert datamover.verify(str(tmp_path / "m.jsonl")).passed


def _parts_journaled(state: Path) -> int:
    db = state / "datamover" / "journal.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM parts").fetchone()[0])
    except sqlite3.Error:
        return 0


def _run_killed(cmd: list[str], env: dict[str, str], until: Callable[[], bool]) -> None:
    """Start ``cmd`` and SIGKILL it once ``until()`` holds (bounded: 30 s)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while proc.poll() is None and not until() and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _summary(manifest: Path) -> dict[str, object]:
    lines = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]
    return lines[-1]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("store_env", "direction"),
    [
        ("seaweed", "upload"),
        ("seaweed", "download"),
        pytest.param("ceph", "upload", marks=CEPH, id="ceph-upload"),
        pytest.param("ceph", "download", marks=CEPH, id="ceph-download"),
        # ~18 s each (the --bwlimit): https is tried where the store's multipart state
        # carries the resume; a download's resume is local, its GETs are the http ones.
        pytest.param("ceph_tls", "upload", marks=CEPH, id="ceph-tls-upload"),
    ],
    indirect=["store_env"],
)
def test_kill_9_at_several_points_then_resume(
    store_env: ServerEnv, tmp_path: Path, direction: str
) -> None:
    src = tmp_path / "src"
    _tree(src, big=40 * MiB, small=20)
    total = sum(len(b) for b in _files(src).values())
    url = store_env.url("k")
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    if direction == "download":
        assert datamover.copy(str(src), url).ok
        args = [url, str(tmp_path / "dst")]
    else:
        args = [str(src), url]
    manifest = tmp_path / "m.jsonl"
    cmd = [
        *DM,
        "copy",
        *args,
        "--manifest",
        str(manifest),
        "--part-size",
        "5MiB",
        "--bwlimit",
        "3MiB",
        "--transfers",
        "4",
    ]
    # Killed while starting up and planning, then once some parts are journaled, then
    # later in the upload: each run gets further, none finishes.
    state = Path(env["XDG_STATE_HOME"])
    started = time.monotonic
    t0 = started()
    _run_killed(cmd, env, lambda: started() - t0 > 0.3)
    for parts in (2, 4, 6):
        _run_killed(cmd, env, lambda n=parts: _parts_journaled(state) >= n)
    assert not manifest.exists()  # only a finished run renames the manifest
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "resumed job" in final.stdout
    summary = _summary(manifest)
    assert summary["files_ok"] == 21 and summary["files_failed"] == 0
    assert int(str(summary["bytes_moved"])) < total  # resume really resumed
    m = read_manifest(str(manifest))
    assert sorted(e.path for e in m.entries) == sorted(_files(src))
    if direction == "download":
        assert _files(tmp_path / "dst") == _files(src)
        assert not [p for p in (tmp_path / "dst").rglob("*dmtmp*")]
    else:
        store, _ = open_store(url)
        for rel, data in _files(src).items():
            assert store.read(f"k/{rel}") == data
        uploads = store.client.list_multipart_uploads(Bucket=store_env.bucket)  # type: ignore[attr-defined]
        assert not uploads.get("Uploads")
    check = subprocess.run([*DM, "verify", str(manifest)], env=env, capture_output=True)
    assert check.returncode == 0


def test_jobs_commands(seaweed_env: ServerEnv, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src, small=2)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    run = subprocess.run(
        [*DM, "copy", str(src), seaweed_env.url("j")], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    listed = subprocess.run([*DM, "jobs", "list"], env=env, capture_output=True, text=True)
    job_id = listed.stdout.split()[0]
    assert "done" in listed.stdout
    shown = subprocess.run([*DM, "jobs", "show", job_id], env=env, capture_output=True, text=True)
    assert "2 done" in shown.stdout
    again = subprocess.run([*DM, "jobs", "resume", job_id], env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "already finished" in again.stderr
    cleaned = subprocess.run([*DM, "jobs", "clean"], env=env, capture_output=True, text=True)
    assert "removed 1" in cleaned.stdout


def test_sync_of_names_that_sort_around_a_directory(seaweed_env: ServerEnv, tmp_path: Path) -> None:
    # "d.txt" < "d/..." < "d0" in key order, but SeaweedFS lists the "d/" subtree first,
    # and with more than a page (1,000 keys) of it, "d.txt" arrives pages later.
    src = tmp_path / "src"
    names = ["d.txt", "d0", "d-1", "e", *(f"d/{i:04d}" for i in range(1050))]
    for rel in names:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    url = seaweed_env.url("order")
    assert datamover.sync(str(src), url, transfers=16).files_ok == len(names)
    again = datamover.sync(str(src), url, delete=True)
    assert again.bytes_moved == 0 and again.files_skipped == len(names) and not again.deleted
