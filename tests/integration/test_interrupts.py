"""Interrupted runs (#16): SIGINT / SIGTERM stop a ``datamover copy`` within 2 s with the
journal saved and a resume hint (exit 130 / 143), a second Ctrl-C stops at once, a
second run of the same job is refused while one runs, the journal survives kill -9
while it is being written, a symlink planted under a job's temp name is removed, never
written through, and ``jobs clean`` never touches a live job."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from killstorm import DM, journal_progress, make_tree, read_tree, storm, temp_files

from datamover.options import MiB

pytestmark = pytest.mark.timeout(120)


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}


def _db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "datamover" / "journal.db"


def _slow_copy(tmp_path: Path, bwlimit: str = "2MiB") -> tuple[list[str], dict[str, bytes]]:
    src = tmp_path / "src"
    expected = make_tree(src, big=[8 * MiB, 6 * MiB], small=20)
    cmd = [
        *DM,
        "copy",
        str(src),
        str(tmp_path / "dst"),
        "--manifest",
        str(tmp_path / "m.jsonl"),
        "--part-size",
        "256KiB",
        "--multipart-threshold",
        "256KiB",
        "--bwlimit",
        bwlimit,
        "--transfers",
        "4",
    ]
    return cmd, expected


def _unlimited(cmd: list[str]) -> list[str]:
    """``cmd`` without its ``--bwlimit``: the run that finishes the job need not crawl."""
    i = cmd.index("--bwlimit")
    return cmd[:i] + cmd[i + 2 :]


def _start_and_wait_for_progress(
    cmd: list[str], env: dict[str, str], db: Path
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while journal_progress(db) == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    return proc


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_within_2s_saves_journal_and_resumes(
    tmp_path: Path, signum: int, code: int
) -> None:
    cmd, expected = _slow_copy(tmp_path)
    env, db = _env(tmp_path), _db(tmp_path)
    proc = _start_and_wait_for_progress(cmd, env, db)
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=30)
    took = time.monotonic() - sent
    assert proc.returncode == code, err
    assert took < 2.0, took
    match = re.search(r"`datamover jobs resume (\S+)`", err)
    assert match, err
    job_id = match.group(1)
    with sqlite3.connect(db) as conn:
        (state,) = conn.execute("SELECT state FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        (kept,) = conn.execute("SELECT COALESCE(SUM(size), 0) FROM parts").fetchone()
    assert state == "aborted"
    assert kept > 0  # the parts written so far are journaled, not thrown away
    assert not (tmp_path / "m.jsonl").exists()  # suspended, not finished
    resumed = subprocess.run(
        [*DM, "jobs", "resume", job_id], env=env, capture_output=True, text=True, timeout=60
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert re.search(r"\d+ files? / [\d.]+ \w+ already done", resumed.stdout), resumed.stdout
    assert read_tree(tmp_path / "dst") == expected
    summary = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[-1])
    assert summary["files_ok"] == len(expected)
    assert int(summary["bytes_moved"]) < sum(map(len, expected.values()))


def test_second_ctrl_c_stops_at_once(tmp_path: Path) -> None:
    cmd, expected = _slow_copy(tmp_path)
    env, db = _env(tmp_path), _db(tmp_path)
    proc = _start_and_wait_for_progress(cmd, env, db)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    final = subprocess.run(_unlimited(cmd), env=env, capture_output=True, text=True, timeout=60)
    assert final.returncode == 0, final.stdout + final.stderr
    assert read_tree(tmp_path / "dst") == expected


def test_second_run_of_the_same_job_is_refused(tmp_path: Path) -> None:
    cmd, expected = _slow_copy(tmp_path, "512KiB")  # still running at the end
    env, db = _env(tmp_path), _db(tmp_path)
    proc = _start_and_wait_for_progress(cmd, env, db)
    try:
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert re.match(r"datamover: error: job \S+ \(pid \d+\) is already running", lines[0])
        with sqlite3.connect(db) as conn:
            (job_id,) = conn.execute("SELECT job_id FROM jobs").fetchone()
        assert job_id in lines[0]
        # jobs resume of it is refused the same way, and jobs clean leaves it alone
        again = subprocess.run(
            [*DM, "jobs", "resume", job_id], env=env, capture_output=True, text=True, timeout=60
        )
        assert again.returncode == 2 and "already running" in again.stderr
        clean = subprocess.run(
            [*DM, "jobs", "clean", "--all"], env=env, capture_output=True, text=True, timeout=60
        )
        assert clean.returncode == 0 and "removed 0 jobs" in clean.stdout
        named = subprocess.run(
            [*DM, "jobs", "clean", job_id], env=env, capture_output=True, text=True, timeout=60
        )
        assert named.returncode == 2 and "running now" in named.stderr
        assert proc.poll() is None  # it was running all along
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    final = subprocess.run(_unlimited(cmd), env=env, capture_output=True, text=True, timeout=60)
    assert final.returncode == 0, final.stdout + final.stderr
    assert read_tree(tmp_path / "dst") == expected


def test_journal_survives_kills_during_its_own_writes(tmp_path: Path) -> None:
    """Thousands of tiny files: the journal commits all the time, so the kills land in
    its writes; after each, the database is intact, and a final run finishes the job."""
    src = tmp_path / "src"
    expected = make_tree(src, big=[], small=3000, seed=6)
    env, db = _env(tmp_path), _db(tmp_path)
    manifest = tmp_path / "m.jsonl"
    cmd = [*DM, "copy", str(src), str(tmp_path / "dst"), "--manifest", str(manifest)]
    for seed in range(10):
        s = storm(cmd, env, db, seed=seed, kills=1, max_kills=1, delay=(0.0, 0.4))
        assert s.kills == 1
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert final.returncode == 0, final.stdout + final.stderr
    assert read_tree(tmp_path / "dst") == expected
    assert temp_files(tmp_path / "dst") == []
    check = subprocess.run(
        [*DM, "verify", str(manifest)], env=env, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_symlink_planted_at_a_temp_name_is_never_followed(tmp_path: Path) -> None:
    """Kill a run, then plant symlinks at every temp name it left (and at the final
    names' would-be temps): the next run removes the links, writes none of its bytes
    through them, and leaves no temp file."""
    cmd, expected = _slow_copy(tmp_path)
    env, db = _env(tmp_path), _db(tmp_path)
    proc = _start_and_wait_for_progress(cmd, env, db)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    dst = tmp_path / "dst"
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    planted = temp_files(dst)
    assert planted, "the killed run left no temp file to plant over"
    for rel in planted:
        (dst / rel).unlink()
        (dst / rel).symlink_to(victim)
    final = subprocess.run(_unlimited(cmd), env=env, capture_output=True, text=True, timeout=60)
    assert final.returncode == 0, final.stdout + final.stderr
    assert victim.read_bytes() == b"precious"
    assert read_tree(dst) == expected
    assert temp_files(dst) == []


def test_jobs_clean_removes_a_dead_jobs_temp_files(tmp_path: Path) -> None:
    """Killed runs leave temp files (multipart ones the journal names, and whole-file
    ones it does not); ``jobs clean --all`` removes every one of them."""
    cmd, _expected = _slow_copy(tmp_path)
    cmd[cmd.index("--multipart-threshold") + 1] = "2MiB"  # small files: whole-file writes
    env, db = _env(tmp_path), _db(tmp_path)
    for _ in range(2):
        proc = _start_and_wait_for_progress(cmd, env, db)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    dst = tmp_path / "dst"
    assert temp_files(dst)
    clean = subprocess.run(
        [*DM, "jobs", "clean", "--all"], env=env, capture_output=True, text=True, timeout=60
    )
    assert clean.returncode == 0, clean.stderr
    assert "aborted unfinished upload" in clean.stdout and "removed 1 jobs" in clean.stdout
    assert temp_files(dst) == []


def test_a_closed_stdout_stops_the_run_resumable_and_exits_141(tmp_path: Path) -> None:
    """``--json`` into a reader that went away (``| head -1``, a dead ``jq``): the run
    stops the orderly way, says so on stderr and exits 141 (it exited 0, having copied
    nothing, and left the job "running"); the job resumes. A listing cut short by its
    reader still exits 0."""
    cmd, expected = _slow_copy(tmp_path)
    env, db = _env(tmp_path), _db(tmp_path)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first event
    try:
        proc = subprocess.run(
            [*DM, "--json", *cmd[len(DM) :]],
            env=env,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert "standard output was closed" in proc.stderr
    match = re.search(r"`datamover jobs resume (\S+)`", proc.stderr)
    assert match, proc.stderr
    with sqlite3.connect(db) as conn:
        (state,) = conn.execute(
            "SELECT state FROM jobs WHERE job_id=?", (match.group(1),)
        ).fetchone()
    assert state == "aborted"
    resumed = subprocess.run(
        [*DM, "jobs", "resume", match.group(1)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert read_tree(tmp_path / "dst") == expected
    listing = subprocess.Popen(
        [*DM, "ls", "-R", str(tmp_path / "src")], env=env, stdout=subprocess.PIPE
    )
    assert listing.stdout is not None
    listing.stdout.readline()
    listing.stdout.close()
    assert listing.wait(timeout=30) == 0
    # `jobs list` only prints: a closed pipe ends it quietly, as a listing's.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        jobs = subprocess.run(
            [*DM, "jobs", "list"], env=env, stdout=write_end, stderr=subprocess.PIPE, text=True
        )
    finally:
        os.close(write_end)
    assert (jobs.returncode, jobs.stderr) == (0, "")
