"""``jobs clean``: each job is cleaned on its own; one whose destination can't be
opened stays in the journal, named in one line, and the others are cleaned."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from datamover.journal import Journal, journal_path

DM = [sys.executable, "-m", "datamover"]


def _dead_job(state: Path, job_id: str, destination: str) -> None:
    journal = Journal(journal_path(str(state)))
    try:
        journal.create_job(job_id, f"key-{job_id}", "copy", "/src", destination, {}, None)
        journal.finish_job(job_id, "aborted", 0, 0, 0)
    finally:
        journal.close()


def test_clean_all_cleans_each_job_and_keeps_one_it_could_not(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (tmp_path / "dst").mkdir()
    _dead_job(state, "posixjob", str(tmp_path / "dst"))
    _dead_job(state, "azurejob", "az://container/x")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg")

    run = subprocess.run(
        [*DM, "jobs", "clean", "--all", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert run.returncode == 1, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("datamover: job azurejob: its uploads on az://container/x")
    assert "no Azure credentials" in lines[0]
    assert "run `datamover jobs clean azurejob` again" in lines[0]
    assert "removed 1 jobs" in run.stdout
    journal = Journal(journal_path(str(state)))
    try:
        assert [job.job_id for job in journal.jobs()] == ["azurejob"]  # to clean later
    finally:
        journal.close()

    named = subprocess.run(
        [*DM, "jobs", "clean", "azurejob", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert named.returncode == 1 and "no Azure credentials" in named.stderr
    assert "removed 0 jobs" in named.stdout
