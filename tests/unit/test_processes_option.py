"""``--processes`` at the edge: validated, recorded for resume, parsed by the CLI, and
the front door's choice of runner (``engine.procs``); the runs themselves are in
tests/integration/test_processes.py."""

from __future__ import annotations

import os

import pytest

from datamover.cli.main import build_parser
from datamover.engine.procs import auto_processes
from datamover.engine.procs.runner import AUTO_MAX
from datamover.errors import UsageError
from datamover.job import TransferJob
from datamover.options import TransferOptions


@pytest.mark.parametrize("n", [0, -1, 65])
def test_processes_out_of_range_is_refused(n: int) -> None:
    with pytest.raises(UsageError, match="--processes"):
        TransferOptions(processes=n)


def test_processes_survives_the_journal_record_and_is_not_the_jobs_identity() -> None:
    options = TransferOptions(processes=3)
    job = TransferJob("copy", "/a", "s3://b/c", options)
    assert TransferJob.from_record(job.to_record()).options.processes == 3
    # A resume with another --processes is the same job.
    assert options.identity() == TransferOptions(processes=1).identity()
    assert options.public()["processes"] == 3
    assert "processes" not in TransferOptions().public()


def test_cli_parses_processes() -> None:
    parser = build_parser()
    args = parser.parse_args(["copy", "/a", "/b", "--processes", "2"])
    assert args.processes == 2
    assert parser.parse_args(["sync", "/a", "/b"]).processes is None


def test_auto_processes_is_bounded_by_the_cores() -> None:
    n = auto_processes()
    assert 1 <= n <= AUTO_MAX


@pytest.mark.parametrize(
    ("cores", "load", "expected"),
    [
        (2, 0.0, 1),  # idle 2-core machine: the parent keeps one core busy
        (3, 0.0, 2),
        (4, 0.2, 3),
        (4, 2.6, 1),  # one idle core besides the parent's: no workers
        (8, 1.0, AUTO_MAX),
        (16, 0.0, AUTO_MAX),
        (1, 0.0, 1),
        (4, 9.0, 1),  # overloaded
    ],
)
def test_auto_processes_leaves_the_parent_a_core(
    monkeypatch: pytest.MonkeyPatch, cores: int, load: float, expected: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert auto_processes() == expected
