"""``--processes N`` (``datamover.engine.procs``): small files over worker processes,
one journal and one manifest, against SeaweedFS (S3) and Azurite / fake-gcs-server.

What a run with workers must show beside a one-process run: the same manifest (files,
sizes, digests, statuses), a passing verify, a failing file reported failed (exit 1),
and after a SIGKILL of the parent mid-job, no worker left running and a re-run that
finishes the one manifest.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import datamover
from datamover.engine.procs import runner
from datamover.manifest import read_manifest
from datamover.options import KiB, MiB
from datamover.stores import open_store
from datamover.stores.base import digest_metadata_key

from serverenv import ServerEnv, use_server

pytestmark = [pytest.mark.cloud, pytest.mark.timeout(240)]
DM = [sys.executable, "-m", "datamover"]
SMALL = 300
WORKER = "datamover.engine.procs"


@pytest.fixture(params=["seaweed", "azurite", "gcs"])
def cloud(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    return use_server(request.getfixturevalue(request.param), monkeypatch)


def _tree(root: Path, small: int) -> dict[str, bytes]:
    files = {f"d{i % 5}/f{i:04d}.bin": os.urandom(4 * KiB + i) for i in range(small)}
    files["big.bin"] = os.urandom(1 * MiB + 7)  # by parts, in the parent
    files["empty.bin"] = b""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _content(manifest: str) -> set[tuple[Any, ...]]:
    """What a manifest says about its files, without timings."""
    return {
        (e.path, e.size, e.digest, e.status, e.mode, e.mtime)
        for e in read_manifest(manifest).entries
    }


def _workers_of(pid: int) -> list[int]:
    """Live worker processes whose parent is ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        state = stat.rsplit(")", 1)[1].split()[0]
        if ppid == pid and WORKER.encode() in cmdline and state != "Z":
            out.append(int(entry))
    return out


def _worker_pids(state_home: str | Path | None = None) -> list[int]:
    """Live worker processes started with ``XDG_STATE_HOME=state_home`` (by default
    this test's): workers of jobs in other tests running beside this one don't count."""
    mark = f"XDG_STATE_HOME={state_home or os.environ['XDG_STATE_HOME']}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
                environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if WORKER.encode() in cmdline and state != "Z" and mark in environ:
                pids.append(int(entry))
    return pids


def test_up_and_down_match_one_process(
    cloud: ServerEnv, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = _tree(tmp_path / "src", SMALL)
    common = {"multipart_threshold": 256 * KiB, "part_size": 256 * KiB, "transfers": 4}
    one = datamover.copy(
        str(tmp_path / "src"), cloud.url("one/"), processes=1,
        manifest=str(tmp_path / "up1.jsonl"), **common,
    )  # fmt: skip
    assert one.ok
    with caplog.at_level(logging.INFO, logger="datamover"):
        two = datamover.copy(
            str(tmp_path / "src"), cloud.url("two/"), processes=2,
            manifest=str(tmp_path / "up2.jsonl"), **common,
        )  # fmt: skip
    assert two.ok and two.files_ok == len(files)
    assert "small files go to 2 worker processes" in caplog.text
    assert _content(str(tmp_path / "up1.jsonl")) == _content(str(tmp_path / "up2.jsonl"))
    assert datamover.verify(str(tmp_path / "up2.jsonl")).ok

    # Down again, through the CLI, with workers and without.
    for n in (1, 2):
        done = subprocess.run(
            [*DM, "copy", cloud.url("two/"), str(tmp_path / f"down{n}"), "--processes", str(n),
             "--manifest", str(tmp_path / f"down{n}.jsonl"), "--multipart-threshold", "256KiB",
             "--part-size", "256KiB", "--transfers", "4", "--quiet"],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    assert _content(str(tmp_path / "down1.jsonl")) == _content(str(tmp_path / "down2.jsonl"))
    for rel, data in files.items():
        assert (tmp_path / "down2" / rel).read_bytes() == data, rel
    check = subprocess.run(
        [*DM, "verify", str(tmp_path / "down2.jsonl")], capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert _worker_pids() == []


def test_a_file_failing_in_a_worker_is_reported_failed(
    seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    store, _ = open_store(seaweed_env.url())
    with store:
        for i in range(SMALL):
            store.put(f"in/f{i:04d}", os.urandom(2 * KiB))
        # Its recorded digest is not its bytes': every read of it mismatches.
        store.put("in/bad", b"x" * 100, metadata={digest_metadata_key("sha256"): "0" * 64})
    manifest = tmp_path / "m.jsonl"
    done = subprocess.run(
        [*DM, "copy", seaweed_env.url("in/"), str(tmp_path / "out"), "--processes", "2",
         "--manifest", str(manifest), "--quiet"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    entries = {e.path: e for e in read_manifest(str(manifest)).entries}
    assert len(entries) == SMALL + 1
    assert entries["bad"].status == "failed" and "the source says" in (entries["bad"].error or "")
    assert sum(e.status == "ok" for e in entries.values()) == SMALL
    assert not (tmp_path / "out" / "bad").exists()


def test_sigkill_of_the_parent_leaves_no_worker_and_resumes(
    seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    files = _tree(tmp_path / "src", 3000)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    manifest = tmp_path / "m.jsonl"
    cmd = [*DM, "copy", str(tmp_path / "src"), seaweed_env.url("out/"), "--processes", "2",
           "--manifest", str(manifest), "--multipart-threshold", "256KiB",
           "--part-size", "256KiB", "--transfers", "4", "--quiet"]  # fmt: skip
    db = tmp_path / "state" / "datamover" / "journal.db"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    done = 0
    while proc.poll() is None and time.monotonic() < deadline:
        if len(workers) < 2:  # the second may start a moment after the first
            workers = _workers_of(proc.pid)
        if db.exists():
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2) as conn:
                try:
                    (done,) = conn.execute(
                        "SELECT COUNT(*) FROM files WHERE state = 'done'"
                    ).fetchone()
                except sqlite3.Error:
                    done = 0
        if done >= 500 and len(workers) == 2:
            break
        time.sleep(0.05)
    if proc.poll() is None and len(workers) != 2:
        proc.kill()
        proc.wait()
    assert proc.poll() is None, "the copy finished before it could be killed"
    assert len(workers) == 2, workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in workers if pid in _worker_pids(env["XDG_STATE_HOME"])]
    assert left == [], "a worker outlived its parent"
    assert not manifest.exists()

    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert final.returncode == 0, final.stdout + final.stderr
    lines = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]
    assert lines[-1]["files_failed"] == 0 and lines[-1]["files_ok"] == len(files)
    entries = read_manifest(str(manifest)).entries
    last = {e.path: e for e in entries}
    assert set(last) == set(files) and all(e.status == "ok" for e in last.values())
    check = subprocess.run(
        [*DM, "verify", str(manifest)], env=env, capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert _worker_pids(env["XDG_STATE_HOME"]) == []


def test_sigint_stops_workers_the_orderly_way_and_resumes(tmp_path: Path) -> None:
    files = _tree(tmp_path / "src", 2000)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    manifest = tmp_path / "m.jsonl"
    cmd = [*DM, "copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--processes", "2",
           "--manifest", str(manifest), "--bwlimit", "1MiB", "--transfers", "4",
           "--quiet"]  # fmt: skip
    db = tmp_path / "state" / "datamover" / "journal.db"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while proc.poll() is None and time.monotonic() < deadline:
        if len(workers) < 2:  # the second may start a moment after the first
            workers = _workers_of(proc.pid)
        if len(workers) == 2 and db.exists():
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2) as conn:
                try:
                    (done,) = conn.execute(
                        "SELECT COUNT(*) FROM files WHERE state = 'done'"
                    ).fetchone()
                except sqlite3.Error:
                    done = 0
            if done >= 100:
                break
        time.sleep(0.05)
    if proc.poll() is None and len(workers) != 2:
        proc.kill()
        proc.communicate()
    assert proc.poll() is None and len(workers) == 2, workers
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    took = time.monotonic() - sent
    assert proc.returncode == 130, err
    # Orderly: the files in flight end (not the 5 s kill after STOP_WAIT); generous
    # bound for a loaded machine, the proof is the manifest matching the journal below.
    assert took < 15.0, took
    assert "jobs resume" in err
    assert [pid for pid in workers if pid in _worker_pids(env["XDG_STATE_HOME"])] == []
    partial = Path(str(manifest) + ".partial")
    recorded = {e.path for e in read_manifest(str(partial)).entries if e.status == "ok"}
    with sqlite3.connect(str(db)) as conn:
        journaled = {r for (r,) in conn.execute("SELECT rel FROM files WHERE state = 'done'")}
    assert recorded == journaled, "every file a worker finished is in both, and only those"
    unlimited = [*cmd[:-5], "--quiet"]  # (the same job: limits are not its identity)
    final = subprocess.run(unlimited, env=env, capture_output=True, text=True, timeout=180)
    assert final.returncode == 0, final.stdout + final.stderr
    last = {e.path: e for e in read_manifest(str(manifest)).entries}
    assert set(last) == set(files) and all(e.status == "ok" for e in last.values())
    for rel, data in files.items():
        assert (tmp_path / "dst" / rel).read_bytes() == data, rel


def test_default_starts_workers_only_for_many_small_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "auto_processes", lambda: 2)  # whatever the cores here
    few = _tree(tmp_path / "few", 50)
    many = _tree(tmp_path / "many", runner.AUTO_MIN_FILES + 300)
    with caplog.at_level(logging.INFO, logger="datamover"):
        report = datamover.copy(str(tmp_path / "few"), str(tmp_path / "out-few"))
    assert report.ok and report.files_ok == len(few)
    assert "worker processes" not in caplog.text
    with caplog.at_level(logging.INFO, logger="datamover"):
        report = datamover.copy(str(tmp_path / "many"), str(tmp_path / "out-many"))
    assert report.ok and report.files_ok == len(many)
    assert "small files go to 2 worker processes" in caplog.text
    with caplog.at_level(logging.INFO, logger="datamover"):
        caplog.clear()
        report = datamover.copy(str(tmp_path / "many"), str(tmp_path / "out-bw"), bwlimit="1G")
    assert report.ok and "worker processes" not in caplog.text  # a limit: one process
    for rel, data in many.items():
        assert (tmp_path / "out-many" / rel).read_bytes() == data, rel


def test_links_found_by_workers_are_written_by_the_parent_last(
    seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    """Symlinks and hard links, up with one process and down with workers: a worker
    only learns an object is a link by reading it, hands it back, and the parent
    writes it after every file; the manifest is the one-process run's."""
    src = tmp_path / "src"
    files = _tree(src, 60)
    (src / "d0" / "link").symlink_to("f0000.bin")
    os.link(src / "d1" / "f0001.bin", src / "d2" / "hard.bin")
    up = datamover.copy(str(src), seaweed_env.url("t/"), processes=1)
    assert up.ok, up.failures
    for n in (1, 2):
        report = datamover.copy(
            seaweed_env.url("t/"), str(tmp_path / f"down{n}"), processes=n,
            manifest=str(tmp_path / f"down{n}.jsonl"),
        )  # fmt: skip
        assert report.ok, report.failures
    assert _content(str(tmp_path / "down1.jsonl")) == _content(str(tmp_path / "down2.jsonl"))
    out = tmp_path / "down2"
    assert os.readlink(out / "d0" / "link") == "f0000.bin"
    assert os.stat(out / "d2" / "hard.bin").st_ino == os.stat(out / "d1" / "f0001.bin").st_ino
    for rel, data in files.items():
        assert (out / rel).read_bytes() == data, rel


def test_sync_with_workers_copies_only_what_changed(seaweed_env: ServerEnv, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = _tree(src, 80)
    first = datamover.sync(str(src), seaweed_env.url("s/"), processes=2)
    assert first.ok and first.files_ok == len(files)
    (src / "d3" / "f0003.bin").write_bytes(b"changed")
    second = datamover.sync(
        str(src), seaweed_env.url("s/"), processes=2, manifest=str(tmp_path / "s2.jsonl")
    )
    assert second.ok and second.files_ok == 1 and second.files_skipped == len(files) - 1
    store, _ = open_store(seaweed_env.url())
    with store:
        assert store.read("s/d3/f0003.bin") == b"changed"
