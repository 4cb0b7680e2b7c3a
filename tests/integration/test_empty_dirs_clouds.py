"""Empty directories and symlinks survive a round trip through Azure and GCS too
(S3 is covered in test_posix_fidelity.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import datamover

from serverenv import use_server

pytestmark = pytest.mark.cloud


@pytest.mark.parametrize("server", ["azurite", "gcs"])
def test_empty_dirs_and_links_round_trip(
    server: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = use_server(request.getfixturevalue(server), monkeypatch)
    src = tmp_path / "src"
    (src / "empty" / "nested_empty").mkdir(parents=True)
    (src / "f.txt").write_text("x")
    os.symlink("f.txt", src / "ln")
    up = datamover.copy(str(src), env.url("t"), manifest=str(tmp_path / "m.jsonl"))
    assert up.ok, up.failures
    assert datamover.verify(str(tmp_path / "m.jsonl")).passed
    back = tmp_path / "back"
    down = datamover.copy(env.url("t"), str(back))
    assert down.ok, down.failures
    assert (back / "empty" / "nested_empty").is_dir()
    assert os.readlink(back / "ln") == "f.txt"


@pytest.mark.parametrize("server", ["azurite", "gcs", "seaweed"])
def test_an_empty_directory_is_a_directory_to_stat_and_ls_and_keeps_its_mtime(
    server: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An empty directory's marker: ``stat`` and ``ls`` of it said "no such object,
    directory or prefix" on Azure (whose listing of a prefix leaves its own marker
    out), and a download gave it the time of the download instead of its mtime."""
    env = use_server(request.getfixturevalue(server), monkeypatch)
    src = tmp_path / "src"
    (src / "empty").mkdir(parents=True)
    (src / "f.txt").write_text("x")
    os.utime(src / "empty", (1_577_836_800, 1_577_836_800))
    assert datamover.copy(str(src), env.url("t")).ok
    dm = [sys.executable, "-m", "datamover"]
    for url in (env.url("t/empty"), env.url("t/empty/")):
        shown = subprocess.run([*dm, "stat", url], capture_output=True, text=True)
        assert shown.returncode == 0 and "directory" in shown.stdout, shown
        listed = subprocess.run([*dm, "ls", url], capture_output=True, text=True)
        assert listed.returncode == 0 and listed.stdout == "", listed
    back = tmp_path / "back"
    assert datamover.copy(env.url("t"), str(back)).ok
    if server != "seaweed":  # SeaweedFS keeps no metadata on a directory's marker
        assert (back / "empty").stat().st_mtime == 1_577_836_800
