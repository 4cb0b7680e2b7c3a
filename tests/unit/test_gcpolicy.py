"""The collector settings a datamover process runs with (``datamover.gcpolicy``): the
command line and ``--processes`` workers tune them; a library caller (or a test that
calls ``cli.main`` with its own argv) keeps its own."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from datamover import gcpolicy
from datamover.cli import main


def _in_child(code: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_command_line_process_tunes_the_collector() -> None:
    got = _in_child(
        """
        import contextlib, gc, io, json, sys
        from datamover.cli import main
        sys.argv = ["datamover", "ls", sys.prefix]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                main()
            except SystemExit:
                pass
        print(json.dumps({"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
        """
    )
    assert got["threshold"] == [
        gcpolicy.YOUNG_THRESHOLD,
        gcpolicy.MIDDLE_THRESHOLD,
        gcpolicy.OLD_THRESHOLD,
    ]
    assert isinstance(got["frozen"], int) and got["frozen"] > 1000  # the imports


def test_the_worker_process_tunes_the_collector() -> None:
    got = _in_child(
        """
        import gc, json
        from datamover.engine.procs import worker
        worker._die_with_parent = lambda pid: None
        worker.serve = lambda conn: None
        worker.Connection = lambda fd: type("C", (), {"close": lambda self: None})()
        worker.main(["1", "0"])
        print(json.dumps({"threshold": gc.get_threshold()}))
        """
    )
    assert got["threshold"] == [
        gcpolicy.YOUNG_THRESHOLD,
        gcpolicy.MIDDLE_THRESHOLD,
        gcpolicy.OLD_THRESHOLD,
    ]


def test_main_called_with_its_own_argv_leaves_the_callers_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = gc.get_threshold(), gc.get_freeze_count()
    assert main(["ls", str(tmp_path)]) == 0
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
