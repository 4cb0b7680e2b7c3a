"""Symlinks are compared and moved as links: ``sync -c`` compares a link by its text
(never reading through it), and a link goes in one request whatever
``--multipart-threshold`` says. Both used to fail with "is a symlink now, not the file
it was when listed" (the sync run stopping with exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import datamover
from datamover.stores import open_store

from serverenv import ServerEnv, use_server

pytestmark = pytest.mark.cloud
DM = [sys.executable, "-m", "datamover"]
TARGET = "meta.json"  # 9 bytes: longer than the threshold the copies below use


def _tree(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "a.txt").write_text("a\n")
    (root / TARGET).write_text('{"k": 1}\n')
    (root / "b.txt").write_text("b\n")
    os.symlink("a.txt", root / "l")
    os.symlink(TARGET, root / "link.json")
    return root


def _links(root: Path) -> dict[str, str]:
    return {p.name: os.readlink(p) for p in root.iterdir() if p.is_symlink()}


def test_sync_checksum_twice_with_symlinks_posix(tmp_path: Path) -> None:
    src, dst = _tree(tmp_path / "src"), tmp_path / "dst"
    first = datamover.sync(str(src), str(dst), checksum=True)
    assert first.ok and first.files_ok == 5
    manifest = tmp_path / "second.jsonl"
    second = datamover.sync(str(src), str(dst), checksum=True, manifest=str(manifest))
    assert second.ok, second.failures
    assert (second.files_ok, second.files_skipped) == (0, 5)
    # Its skipped links are recorded as links: the verify does not read through them.
    verified = datamover.verify(str(manifest))
    assert verified.passed, (verified.mismatched, verified.errors)

    # Same length, another target: compared by the link's text, not what it points to.
    os.unlink(src / "l")
    os.symlink("b.txt", src / "l")
    third = datamover.sync(str(src), str(dst), checksum=True)
    assert third.ok and third.files_ok == 1
    assert _links(dst) == {"l": "b.txt", "link.json": TARGET}

    # A regular file holding the link's text is not the link: replaced by it.
    os.unlink(dst / "l")
    (dst / "l").write_text("b.txt")
    fourth = datamover.sync(str(src), str(dst), checksum=True)
    assert fourth.ok and fourth.files_ok == 1
    assert _links(dst) == {"l": "b.txt", "link.json": TARGET}


def test_sync_checksum_cli_second_run_exits_0(tmp_path: Path) -> None:
    src, dst = _tree(tmp_path / "src"), tmp_path / "dst"
    for _ in range(2):
        run = subprocess.run(
            [*DM, "sync", "-c", str(src), str(dst)], capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        assert "symlink now" not in run.stderr
    assert "5 unchanged" in run.stdout + run.stderr


@pytest.mark.parametrize("server", ["moto", "azurite"])
def test_sync_checksum_twice_with_symlinks_clouds(
    server: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = use_server(request.getfixturevalue(server), monkeypatch)
    src = _tree(tmp_path / "src")
    url = env.url("up")
    for expect_copied in (5, 0):
        report = datamover.sync(str(src), url, checksum=True)
        assert report.ok, report.failures
        assert report.files_ok == expect_copied
    back = tmp_path / "back"
    for expect_copied in (5, 0):
        report = datamover.sync(url, str(back), checksum=True)
        assert report.ok, report.failures
        assert report.files_ok == expect_copied
    assert _links(back) == _links(src)


@pytest.mark.parametrize("threshold", [0, 8])
def test_a_link_longer_than_the_threshold_is_one_request(
    moto_env: ServerEnv, tmp_path: Path, threshold: int
) -> None:
    src = _tree(tmp_path / "src")
    url = moto_env.url(f"th{threshold}")
    up = datamover.copy(str(src), url, multipart_threshold=threshold)
    assert up.ok, up.failures
    store, _ = open_store(url)
    assert store.read(f"th{threshold}/link.json") == TARGET.encode()
    # Down: an S3 listing names no modes, so only the stat before the parts shows it.
    back = tmp_path / "back"
    down = datamover.copy(url, str(back), multipart_threshold=threshold)
    assert down.ok, down.failures
    assert _links(back) == _links(src)
    assert (back / TARGET).read_text() == '{"k": 1}\n'
    # And POSIX to POSIX.
    local = datamover.copy(str(src), str(tmp_path / "local"), multipart_threshold=threshold)
    assert local.ok, local.failures
    assert _links(tmp_path / "local") == _links(src)
