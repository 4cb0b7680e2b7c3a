"""Kill storms (#16): ``datamover copy`` killed with SIGKILL at least ten times at seeded
random moments, then run to completion, in each direction (POSIX -> S3, S3 -> POSIX,
S3 -> Azure). The result is byte-identical, the manifest complete and verified, no temp
file or pending upload is left, and the final run moves less than half the data."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from killstorm import DM, journal_progress, make_tree, read_tree, storm, temp_files

import datamover
from datamover.errors import NotFound
from datamover.options import MiB
from datamover.stores import open_store

from serverenv import ServerEnv, use_server

pytestmark = [pytest.mark.cloud, pytest.mark.timeout(240)]

#: 3 large files spanning several parts, many small ones: ~46 MiB.
BIG = [16 * MiB + 12345, 12 * MiB, 9 * MiB + 1]
SMALL = 300


def _committed_unjournaled(db: Path, dst: str) -> int:
    """Bytes of the files the journal has as being written whose upload was committed
    already (the whole file is at the destination): a kill landed between the commit
    and the journal's record of it."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        writing = conn.execute("SELECT rel, size FROM files WHERE state = 'writing'").fetchall()
    store, root = open_store(dst)
    total = 0
    with store:
        for rel, size in writing:
            try:
                if store.stat(root + rel).size == size:
                    total += size
            except NotFound:
                pass
    return total


def _summary(manifest: Path) -> dict[str, Any]:
    lines = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]
    summary: dict[str, Any] = lines[-1]
    return summary


def _storm_then_finish(
    tmp_path: Path,
    src: str,
    dst: str,
    total: int,
    *,
    seed: int,
    extra: list[str],
    cold_every: int = 3,
) -> tuple[subprocess.CompletedProcess[str], Path, dict[str, str]]:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    manifest = tmp_path / "m.jsonl"
    cmd = [*DM, "copy", src, dst, "--manifest", str(manifest), "--transfers", "4", *extra]
    db = tmp_path / "state" / "datamover" / "journal.db"
    s = storm(
        cmd,
        env,
        db,
        seed=seed,
        kills=10,
        max_kills=30,
        want_progress=total * 6 // 10,
        cold_every=cold_every,
    )
    assert s.kills >= 10
    assert not manifest.exists(), s  # never finished during the storm
    durable = journal_progress(db)
    committed = _committed_unjournaled(db, dst)
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stdout + final.stderr
    summary = _summary(manifest)
    assert summary["files_failed"] == 0
    # The final run moves less than half: the storm left 60 % durable (or, when a slow
    # machine's 30 kills left less, no more than what the journal lacks). A file a
    # kill caught between its commit and the journal's record of it is written again
    # (its upload is gone, so its parts can't be resumed): that much more is allowed.
    moved = int(summary["bytes_moved"])
    assert moved <= max(total / 2, total - durable) + committed, (summary, durable, committed, s)
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
    # Every run the storm waits on moves at least one 5 MiB part (S3's smallest), so
    # the upload gets more data than the others: ten kills must not finish the job.
    expected = make_tree(src, big=[*BIG, 24 * MiB + 7], small=SMALL)
    total = sum(map(len, expected.values()))
    url = seaweed_env.url("up/")
    _storm_then_finish(
        tmp_path,
        str(src),
        url,
        total,
        seed=1602,
        extra=["--part-size", "5MiB", "--bwlimit", "4MiB", "--transfers", "2"],
        cold_every=2,  # a 5 MiB part takes a while: half the kills from the start
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


def _kill_mid_upload(cmd: list[str], env: dict[str, str], db: Path) -> None:
    """Run ``cmd`` until the journal holds a written part of an open upload, then
    SIGKILL it."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if db.exists():
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2) as conn:
                try:
                    (n,) = conn.execute("SELECT COUNT(*) FROM parts").fetchone()
                except sqlite3.Error:
                    n = 0
            if n:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the upload finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _pending(client: Any, bucket: str) -> list[str]:
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def test_expired_upload_restarts_and_jobs_clean_aborts_dead_jobs_uploads(
    s3: ServerEnv, tmp_path: Path
) -> None:
    """An upload the store has since aborted (expired) is started again cleanly; after
    another kill, ``jobs clean --all`` lists and aborts the dead job's upload, and
    only that one (another job's open upload is left alone)."""
    src = tmp_path / "src"
    data = make_tree(src, big=[14 * MiB], small=0)["big0.bin"]
    url = s3.url("exp/")
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    db = tmp_path / "state" / "datamover" / "journal.db"
    cmd = [*DM, "copy", str(src), url, "--part-size", "5MiB", "--bwlimit", "5MiB"]
    cmd += ["--transfers", "1"]
    client: Any = s3.server.client()  # type: ignore[attr-defined]
    try:
        _kill_mid_upload(cmd, env, db)
        [(key, upload_id)] = [
            (u["Key"], u["UploadId"])
            for u in client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
        ]
        client.abort_multipart_upload(Bucket=s3.bucket, Key=key, UploadId=upload_id)  # expired
        final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90)
        assert final.returncode == 0, final.stdout + final.stderr
        got = client.get_object(Bucket=s3.bucket, Key="exp/big0.bin")["Body"].read()
        assert got == data
        assert _pending(client, s3.bucket) == []

        # Someone else's open upload under the same bucket: not ours to abort.
        other = client.create_multipart_upload(Bucket=s3.bucket, Key="exp/other.bin")
        cmd2 = [*cmd[:4], str(src), s3.url("exp2/"), *cmd[6:]]
        _kill_mid_upload(cmd2, env, db)
        assert sorted(_pending(client, s3.bucket)) == ["exp/other.bin", "exp2/big0.bin"]
        clean = subprocess.run(
            [*DM, "jobs", "clean", "--all"], env=env, capture_output=True, text=True, timeout=60
        )
        assert clean.returncode == 0, clean.stderr
        assert f"aborted unfinished upload {s3.url('exp2/big0.bin')}" in clean.stdout
        assert _pending(client, s3.bucket) == ["exp/other.bin"]
        client.abort_multipart_upload(
            Bucket=s3.bucket, Key="exp/other.bin", UploadId=other["UploadId"]
        )
    finally:
        client.close()


def test_download_resume_keeps_parts_unless_the_source_changed(
    seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    """A download killed mid-file resumes from its temp file's journaled parts; when the
    object changed meanwhile (same size, new ETag) the file starts over and the new
    bytes arrive, with no temp file left."""
    src = tmp_path / "src"
    make_tree(src, big=[12 * MiB], small=0)
    url = seaweed_env.url("dl/")
    assert datamover.copy(str(src), url).ok
    dst = tmp_path / "dst"
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    db = tmp_path / "state" / "datamover" / "journal.db"
    cmd = [*DM, "copy", url, str(dst), "--part-size", "1MiB", "--bwlimit", "3MiB"]
    _kill_mid_upload(cmd, env, db)  # (a download: its parts are journaled the same way)
    assert len(temp_files(dst)) == 1
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert re.search(r"0 files / [1-9][\d.]* MiB already done", resumed.stdout), resumed.stdout
    assert (dst / "big0.bin").read_bytes() == (src / "big0.bin").read_bytes()

    new = os.urandom(12 * MiB)  # the same size, other bytes: a new ETag
    (src / "big0.bin").write_bytes(new)
    dst2 = tmp_path / "dst2"
    cmd2 = [*cmd[:5], str(dst2), *cmd[6:]]
    store, _ = open_store(url)
    with store:
        before = store.stat("dl/big0.bin").etag
    _kill_mid_upload(cmd2, env, db)
    assert datamover.copy(str(src), url).ok  # the source object changes
    with open_store(url)[0] as store:
        assert store.stat("dl/big0.bin").etag != before
    final = subprocess.run(cmd2, env=env, capture_output=True, text=True, timeout=90)
    assert final.returncode == 0, final.stdout + final.stderr
    assert (dst2 / "big0.bin").read_bytes() == new
    assert temp_files(dst2) == []


def test_resumed_job_aborts_uploads_its_killed_runs_never_journaled(
    seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    """A kill between opening an upload and journaling it leaves an upload no journal
    names (made here by the SDK on one of the job's keys); the resumed job's end
    aborts it, and leaves an upload on a key not of this job alone."""
    s3 = seaweed_env
    src = tmp_path / "src"
    make_tree(src, big=[11 * MiB], small=3)
    url = s3.url("orph/")
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    db = tmp_path / "state" / "datamover" / "journal.db"
    cmd = [*DM, "copy", str(src), url, "--part-size", "5MiB", "--bwlimit", "5MiB"]
    cmd += ["--transfers", "1"]
    client: Any = s3.server.client()  # type: ignore[attr-defined]
    try:
        _kill_mid_upload(cmd, env, db)
        orphan = client.create_multipart_upload(Bucket=s3.bucket, Key="orph/d0/f0000.txt")
        other = client.create_multipart_upload(Bucket=s3.bucket, Key="orph/not-ours.bin")
        final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90)
        assert final.returncode == 0, final.stdout + final.stderr
        assert _pending(client, s3.bucket) == ["orph/not-ours.bin"]
        client.abort_multipart_upload(
            Bucket=s3.bucket, Key="orph/not-ours.bin", UploadId=other["UploadId"]
        )
        assert orphan["UploadId"]
    finally:
        client.close()
