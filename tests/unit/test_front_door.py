"""The front door (``datamover.job``): one job description for every face, kept whole
by the journal so ``jobs resume`` runs the very job that was interrupted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from datamover import engine
from datamover.errors import AuthError
from datamover.filters import FileFilter
from datamover.job import ScaleOut, SyncRules, TransferJob, recorded_job
from datamover.journal import Journal, journal_path
from datamover.options import DaskOptions, RetryPolicy, TransferOptions
from datamover.stores import open_store
from datamover.stores.base import ObjectInfo

from faults import FaultyStore

DM = [sys.executable, "-m", "datamover"]


def test_a_job_record_round_trips() -> None:
    job = TransferJob(
        "sync",
        "/src/",
        "s3://b/dst/",
        TransferOptions(
            transfers=3, bwlimit=4096, retry=RetryPolicy(attempts=7), command_line=("dm", "x")
        ),
        FileFilter.build(include=["*.h5"], exclude=["tmp/"], min_size="1k", max_age="7d"),
        SyncRules(checksum=True, delete=True, max_delete=5),
        report="/tmp/r.json",
    )
    back = TransferJob.from_record(json.loads(json.dumps(job.to_record())))
    assert back.sync == job.sync and back.report == job.report
    assert back.options == job.options
    assert back.filters is not None and job.filters is not None
    assert back.filters.rules == job.filters.rules
    assert back.filters.newer_than == job.filters.newer_than
    assert back.filters.allows("a/b.h5", _info(2048)) and not back.filters.allows(
        "a.txt", _info(2048)
    )
    assert not back.filters.allows("tmp/x.h5", _info(2048))
    # The Dask cluster is how a run was spread, not what it moves: not kept.
    spread = TransferJob("copy", "/a/", "/b/", scale_out=ScaleOut("local:2", DaskOptions()))
    assert TransferJob.from_record(spread.to_record()).scale_out is None


def _info(size: int) -> ObjectInfo:
    return ObjectInfo("x", size, mtime=None)


def test_resume_of_an_interrupted_sync_keeps_delete_and_checksum(tmp_path: Path) -> None:
    """An interrupted ``sync --delete --checksum`` resumed by ``jobs resume`` still
    deletes extras and still compares digests (it used to resume as a plain copy)."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    dst.mkdir()
    for i in range(4):
        (src / f"f{i}").write_bytes(b"new%d" % i)
    # Same size and mtime, other bytes: only a checksum comparison sees the change.
    (dst / "f0").write_bytes(b"old0")
    os.utime(dst / "f0", ns=(os.stat(src / "f0").st_mtime_ns,) * 2)
    (dst / "extra").write_bytes(b"only at the destination")

    job = TransferJob(
        "sync",
        str(src),
        str(dst),
        TransferOptions(transfers=1, state_dir=str(state), manifest=str(tmp_path / "m.jsonl")),
        sync=SyncRules(checksum=True, delete=True),
    )
    src_store, src_key = open_store(str(src))
    dst_store, dst_key = open_store(str(dst))
    faulty = FaultyStore(dst_store)
    faulty.fail("put", 0, times=1, error=lambda: AuthError("token expired"))
    with pytest.raises(AuthError):
        engine.sync_between(
            src_store,
            src_key,
            faulty,
            dst_key,
            job.options,
            checksum=True,
            delete=True,
            request=job.to_record(),
        )
    assert (dst / "extra").exists() and (dst / "f0").read_bytes() == b"old0"
    journal = Journal(journal_path(str(state)))
    (record,) = journal.jobs()
    journal.close()
    assert record.state == "aborted"
    assert recorded_job(record.job_id, str(state)).sync == SyncRules(checksum=True, delete=True)

    resumed = subprocess.run(
        [*DM, "jobs", "resume", record.job_id, "--state-dir", str(state), "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in dst.iterdir()) == ["f0", "f1", "f2", "f3"]
    assert (dst / "f0").read_bytes() == b"new0"


def test_global_flags_after_the_command(tmp_path: Path) -> None:
    """``-q``, ``-v`` and ``--json`` work after the subcommand, as in rclone."""
    src = tmp_path / "a"
    src.write_bytes(b"x")
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    quiet = subprocess.run(
        [*DM, "copy", str(src), str(tmp_path / "b"), "-q"], capture_output=True, text=True, env=env
    )
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "" and quiet.stderr == ""
    listed = subprocess.run([*DM, "ls", str(tmp_path), "--json"], capture_output=True, text=True)
    assert listed.returncode == 0 and json.loads(listed.stdout.splitlines()[0])["name"]
    verbose = subprocess.run(
        [*DM, "copy", str(src), str(tmp_path / "c"), "-v"], capture_output=True, text=True, env=env
    )
    assert verbose.returncode == 0 and "INFO" in verbose.stderr
    no_json = subprocess.run([*DM, "hash", str(src), "--json"], capture_output=True, text=True)
    assert no_json.returncode == 2 and "no JSON output" in no_json.stderr


def test_a_tree_copied_onto_a_file_is_one_usage_error(tmp_path: Path) -> None:
    """``copy DIR afile``: one line and exit 2 before anything starts, not a
    "Not a directory" failure per file (found by a new-user sweep)."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"a")
    (src / "sub" / "b.txt").write_bytes(b"b")
    afile = tmp_path / "afile"
    afile.write_bytes(b"keep")
    p = subprocess.run(
        [sys.executable, "-m", "datamover", "copy", str(src), str(afile)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        f"datamover: error: {afile} is a file, not a directory; "
        f"name a directory to copy {src}/ into"
    ]
    assert afile.read_bytes() == b"keep"
