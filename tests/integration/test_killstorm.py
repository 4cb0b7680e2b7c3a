"""Kill storms (#16): ``datamover copy`` killed with SIGKILL at least ten times at seeded
random moments, then run to completion, in each direction (POSIX -> S3, S3 -> POSIX,
S3 -> Azure). The result is byte-identical, the manifest complete and verified, no temp
file or pending upload is left, and the final run moves less than half the data."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

import datamover
from datamover.manifest import read_manifest
from datamover.options import MiB
from datamover.stores import open_store

from killstorm import DM, make_tree, read_tree, storm, temp_files
from serverenv import ServerEnv, use_server

pytestmark = [pytest.mark.cloud, pytest.mark.timeout(240)]

#: 3 large files spanning several parts, many small ones: ~46 MiB.
BIG = [16 * MiB + 12345, 12 * MiB, 9 * MiB + 1]
SMALL = 300


def _summary(manifest: Path) -> dict[str, Any]:
    lines = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]
    summary: dict[str, Any] = lines[-1]
    return summary


def _storm_then_finish(
    tmp_path: Path, src: str, dst: str, total: int, *, seed: int, extra: list[str]
) -> tuple[subprocess.CompletedProcess[str], Path, dict[str, str]]:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    manifest = tmp_path / "m.jsonl"
    cmd = [*DM, "copy", src, dst, "--manifest", str(manifest), "--transfers", "4", *extra]
    db = tmp_path / "state" / "datamover" / "journal.db"
    s = storm(cmd, env, db, seed=seed, kills=10, max_kills=30, want_progress=total * 6 // 10)
    assert s.kills >= 10
    assert not manifest.exists(), s  # never finished during the storm
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stdout + final.stderr
    summary = _summary(manifest)
    assert summary["files_failed"] == 0
    assert int(summary["bytes_moved"]) < total / 2, (summary, s)
    assert "already done" in final.stdout
    check = subprocess.run(
        [*DM, "verify", str(manifest)], env=env, capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stdout + check.stderr
    return final, manifest, env


def test_storm_download_s3_to_posix(seaweed_env: ServerEnv, tmp_path: Path) -> None:
    src = tmp_path / "src"
    expected = make_tree(src, big=BIG, small=SMALL)
    total = sum(map(len, expected.values()))
    url = seaweed_env.url("tree/")
    assert datamover.copy(str(src), url).ok
    dst = tmp_path / "dst"
    _storm_then_finish(
        tmp_path,
        url,
        str(dst),
        total,
        seed=1601,
        extra=["--part-size", "1MiB", "--bwlimit", "2MiB"],
    )
    assert read_tree(dst) == expected
    assert temp_files(dst) == []


def test_storm_upload_posix_to_s3(seaweed_env: ServerEnv, tmp_path: Path) -> None:
    src = tmp_path / "src"
    expected = make_tree(src, big=BIG, small=SMALL)
    total = sum(map(len, expected.values()))
    url = seaweed_env.url("up/")
    _storm_then_finish(
        tmp_path,
        str(src),
        url,
        total,
        seed=1602,
        extra=["--part-size", "5MiB", "--bwlimit", "2MiB"],
    )
    store, _ = open_store(url)
    with store:
        for rel, data in expected.items():
            assert store.read(f"up/{rel}") == data
        assert list(store.list_pending_uploads("up/")) == []


def test_storm_cloud_to_cloud_s3_to_azure(
    seaweed_env: ServerEnv, azurite: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    az = use_server(azurite, monkeypatch)
    src = tmp_path / "src"
    expected = make_tree(src, big=BIG, small=SMALL // 3)
    total = sum(map(len, expected.values()))
    url = seaweed_env.url("c2c/")
    assert datamover.copy(str(src), url).ok
    dst = az.url("out/")
    _storm_then_finish(
        tmp_path,
        url,
        dst,
        total,
        seed=1603,
        extra=["--part-size", "1MiB", "--bwlimit", "2MiB"],
    )
    store, _ = open_store(dst)
    with store:
        for rel, data in expected.items():
            assert store.read(f"out/{rel}") == data
        assert list(store.list_pending_uploads("out/")) == []
