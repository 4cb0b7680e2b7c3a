"""``datamover jobs resume ID`` continues that very job, wherever it is run from: the job
is recorded with absolute local paths (source, destination, manifest), the resume hint
after Ctrl-C names the ``--state-dir`` it needs, and a resume that can't continue the
named job (a record holding relative paths, its ``.partial`` manifest gone) refuses in
one line instead of starting another job."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from killstorm import DM, journal_progress, make_tree, read_tree

from datamover.options import MiB

pytestmark = pytest.mark.timeout(120)


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg")}


def _interrupted_copy(
    cwd: Path, state: str, env: dict[str, str], *extra: str, manifest: str = "m.jsonl"
) -> tuple[str, str]:
    """Start ``copy src rdst`` with relative paths in ``cwd`` (slowed down), stop it with
    SIGINT once the journal holds some progress; returns (job id, stderr)."""
    cmd = [
        *DM,
        "copy",
        "src",
        "rdst",
        "--manifest",
        manifest,
        "--state-dir",
        state,
        "--part-size",
        "256KiB",
        "--multipart-threshold",
        "256KiB",
        "--bwlimit",
        "512KiB",
        "--transfers",
        "2",
        *extra,
    ]
    db = cwd / state / "journal.db"
    before = journal_progress(db)
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while (
            journal_progress(db) <= before and time.monotonic() < deadline and proc.poll() is None
        ):
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    match = re.search(r"job (\S+) is saved in the journal", err)
    assert match, err
    return match.group(1), err


def _two_sources(tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """cwdA/src and cwdB/src: the same names, other bytes."""
    cwd_a, cwd_b = tmp_path / "cwdA", tmp_path / "cwdB"
    expected = make_tree(cwd_a / "src", big=[2 * MiB], small=6, seed=1)
    make_tree(cwd_b / "src", big=[2 * MiB], small=6, seed=2)
    return cwd_a, cwd_b, expected


def _jobs(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as conn:
        return [
            (str(a), str(b), str(c))
            for a, b, c in conn.execute("SELECT job_id, state, source FROM jobs ORDER BY created")
        ]


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("datamover: error: "), lines[0]
    return lines[0]


def test_resume_hint_run_from_another_directory_continues_that_job(tmp_path: Path) -> None:
    cwd_a, cwd_b, expected = _two_sources(tmp_path)
    env = _env(tmp_path)
    # a relative --files-from (in cwdA only), leaving one file out
    left_out = sorted(expected)[-1]
    del expected[left_out]
    (cwd_a / "list.txt").write_text("".join(f"{rel}\n" for rel in expected))
    job_id, err = _interrupted_copy(cwd_a, "my state", env, "--files-from", "list.txt")
    state_dir = cwd_a / "my state"
    # The hint names the state dir, quoted for a shell, absolute so it works anywhere.
    match = re.search(r"`(datamover jobs resume [^`]+)`", err)
    assert match, err
    hint = shlex.split(match.group(1))
    assert hint == ["datamover", "jobs", "resume", job_id, "--state-dir", str(state_dir)]

    resumed = subprocess.run(
        [*DM, *hint[1:]], cwd=cwd_b, env=env, capture_output=True, text=True, timeout=60
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed job {job_id}:" in resumed.stdout, resumed.stdout
    # cwdA/src was copied to cwdA/rdst; nothing of cwdB/src, and nothing under cwdB
    assert read_tree(cwd_a / "rdst") == expected
    assert sorted(p.name for p in cwd_b.iterdir()) == ["src"]
    assert _jobs(state_dir / "journal.db") == [(job_id, "done", str(cwd_a / "src") + "/")]
    summary = json.loads((cwd_a / "m.jsonl").read_text().splitlines()[-1])
    assert summary["files_ok"] == len(expected)


def test_resume_of_the_named_job_not_the_newest_with_the_same_command(tmp_path: Path) -> None:
    cwd_a, _cwd_b, expected = _two_sources(tmp_path)
    env = _env(tmp_path)
    first, _ = _interrupted_copy(cwd_a, "st", env, manifest="m1.jsonl")
    second, _ = _interrupted_copy(cwd_a, "st", env, "--new-job", manifest="m2.jsonl")
    assert first != second
    resumed = subprocess.run(
        [*DM, "jobs", "resume", first, "--state-dir", str(cwd_a / "st")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed job {first}:" in resumed.stdout, resumed.stdout
    # the second job, still unfinished, keeps its own temp file(s) of a partly written file
    copied = read_tree(cwd_a / "rdst")
    assert {k: v for k, v in copied.items() if ".dmtmp-" not in k} == expected
    states = {job: state for job, state, _ in _jobs(cwd_a / "st" / "journal.db")}
    assert states == {first: "done", second: "aborted"}
    assert (cwd_a / "m1.jsonl").exists() and (cwd_a / "m2.jsonl.partial").exists()


def test_resume_refuses_a_job_recorded_with_relative_paths(tmp_path: Path) -> None:
    cwd_a, cwd_b, _expected = _two_sources(tmp_path)
    env = _env(tmp_path)
    job_id, _ = _interrupted_copy(cwd_a, "st", env)
    db = cwd_a / "st" / "journal.db"
    # What an older datamover recorded: the paths as typed.
    with sqlite3.connect(db) as conn:
        (request,) = conn.execute("SELECT request FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        record = json.loads(request)
        record["src"], record["dst"] = "src", "rdst"
        conn.execute("UPDATE jobs SET request=? WHERE job_id=?", (json.dumps(record), job_id))
    resumed = subprocess.run(
        [*DM, "jobs", "resume", job_id, "--state-dir", str(cwd_a / "st")],
        cwd=cwd_b,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = _one_line_error(resumed)
    assert "relative path 'src'" in line and job_id in line, line
    assert not (cwd_b / "rdst").exists()
    assert [state for _, state, _ in _jobs(db)] == ["aborted"]


def test_resume_refuses_when_the_partial_manifest_is_missing(tmp_path: Path) -> None:
    cwd_a, _cwd_b, expected = _two_sources(tmp_path)
    env = _env(tmp_path)
    job_id, _ = _interrupted_copy(cwd_a, "st", env)
    partial = cwd_a / "m.jsonl.partial"
    partial.rename(cwd_a / "moved-away")
    cmd = [*DM, "jobs", "resume", job_id, "--state-dir", str(cwd_a / "st")]
    refused = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    line = _one_line_error(refused)
    assert str(partial) in line and job_id in line, line
    assert not partial.exists() and not (cwd_a / "m.jsonl").exists()
    assert [(j, s) for j, s, _ in _jobs(cwd_a / "st" / "journal.db")] == [(job_id, "aborted")]
    # Put back, the job resumes and finishes.
    (cwd_a / "moved-away").rename(partial)
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed job {job_id}:" in resumed.stdout, resumed.stdout
    assert read_tree(cwd_a / "rdst") == expected


def test_resume_refuses_a_job_whose_manifest_was_finished(tmp_path: Path) -> None:
    """The manifest of the job is complete but the journal never heard (killed at the
    very end): nothing to resume, and the finished manifest is left as it is."""
    cwd_a, _cwd_b, _expected = _two_sources(tmp_path)
    env = _env(tmp_path)
    job_id, _ = _interrupted_copy(cwd_a, "st", env)
    finished = b'{"finished": "by another run"}\n'
    (cwd_a / "m.jsonl.partial").unlink()
    (cwd_a / "m.jsonl").write_bytes(finished)
    refused = subprocess.run(
        [*DM, "jobs", "resume", job_id, "--state-dir", str(cwd_a / "st")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = _one_line_error(refused)
    assert str(cwd_a / "m.jsonl") in line, line
    assert (cwd_a / "m.jsonl").read_bytes() == finished
    assert len(_jobs(cwd_a / "st" / "journal.db")) == 1
