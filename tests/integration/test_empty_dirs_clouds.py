"""Empty directories and symlinks survive a round trip through Azure and GCS too
(S3 is covered in test_posix_fidelity.py)."""

from __future__ import annotations

import os
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
