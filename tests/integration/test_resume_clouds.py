"""Resume of multipart uploads to Azure (Azurite) and GCS (fake-gcs-server): the
writer's state survives the process, a new store reopens it, and only parts the
store really holds with the journaled receipt are kept. Ends with kill -9 at several
points of a real ``datamover copy`` and a final run that resumes."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datamover.checksums import PartDigests
from datamover.errors import NotFound
from datamover.manifest import read_manifest
from datamover.options import KiB, MiB
from datamover.stores import open_store
from datamover.stores.base import PartReceipt, ResumableWriter, Store
from datamover.stores.gcs import DEFAULT_TEMP_PREFIX

from serverenv import ServerEnv, use_server

pytestmark = [pytest.mark.cloud, pytest.mark.timeout(120)]
DM = [sys.executable, "-m", "datamover"]
PART = 64 * KiB


@pytest.fixture(params=["azurite", "gcs"])
def cloud(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    return use_server(request.getfixturevalue(request.param), monkeypatch)


@pytest.fixture
def stores(cloud: ServerEnv) -> Iterator[list[Store]]:
    opened: list[Store] = []
    yield opened
    for store in opened:
        store.close()


def _open(cloud: ServerEnv, opened: list[Store]) -> Store:
    store, _ = open_store(cloud.url())
    opened.append(store)
    return store


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + PART] for i in range(0, len(data), PART)]


def leftovers(cloud: ServerEnv) -> list[str]:
    """Temporary pieces of uploads in the bucket, seen with a plain SDK client."""
    client: Any = cloud.server.client()  # type: ignore[attr-defined]
    try:
        if cloud.scheme == "gs":
            return [b.name for b in client.list_blobs(cloud.bucket, prefix=DEFAULT_TEMP_PREFIX)]
        container = client.get_container_client(cloud.bucket)
        out = []
        for props in container.list_blobs(include=["uncommittedblobs"]):
            _committed, uncommitted = container.get_blob_client(props.name).get_block_list(
                "uncommitted"
            )
            out += [f"{props.name}: block {b.id}" for b in uncommitted]
        return out
    finally:
        client.close()


def test_resume_keeps_verified_parts_and_commits(cloud: ServerEnv, stores: list[Store]) -> None:
    data = os.urandom(4 * PART + 1234)
    chunks = _chunks(data)
    key = "r/obj.bin"
    first = _open(cloud, stores)
    writer = first.open_writer(key, size=len(data), part_size=PART, metadata={"a": "1"})
    assert isinstance(writer, ResumableWriter)
    receipts = {i: writer.write_part(i, chunks[i], PartDigests(chunks[i])) for i in (0, 1, 3)}
    state = json.loads(json.dumps(writer.state()))  # as the journal keeps it
    del writer  # the process "dies": no abort, no commit

    second = _open(cloud, stores)
    resumed = second.resume_writer(key, size=len(data), part_size=PART, state=state)
    claimed = {
        0: receipts[0],
        1: dataclasses.replace(receipts[1], checksum="0" * len(receipts[1].checksum or "")),
        2: PartReceipt(2, PART, etag=receipts[0].etag, checksum=receipts[0].checksum),
        3: receipts[3],
        4: dataclasses.replace(receipts[3], index=4),
    }
    assert resumed.verify_parts(claimed) == {0, 3}
    assert resumed.verify_parts({3: dataclasses.replace(receipts[3], size=PART - 1)}) == set()
    if receipts[0].etag is not None:  # GCS: the ETag must agree too
        assert resumed.verify_parts({0: dataclasses.replace(receipts[0], etag="x")}) == set()
    for i in (1, 2, 4):
        resumed.write_part(i, chunks[i], PartDigests(chunks[i]))
    info = resumed.commit({"b": "2"})
    assert info.size == len(data)
    assert second.read(key) == data
    meta = second.stat(key).metadata
    assert meta.get("a") == "1" and meta.get("b") == "2"
    assert leftovers(cloud) == []  # GCS deletes its parts; Azure's commit drops blocks


def test_resume_of_finished_uploads_is_not_found(cloud: ServerEnv, stores: list[Store]) -> None:
    store = _open(cloud, stores)
    data = os.urandom(2 * PART)
    chunks = _chunks(data)

    committed = store.open_writer("f/committed", size=len(data), part_size=PART)
    assert isinstance(committed, ResumableWriter)
    for i, chunk in enumerate(chunks):
        committed.write_part(i, chunk, PartDigests(chunk))
    state = committed.state()
    committed.commit({})
    with pytest.raises(NotFound):  # at the resume's check of the parts it claims
        store.resume_writer(
            "f/committed", size=len(data), part_size=PART, state=state
        ).verify_parts({})

    # Gone another way: aborted (GCS deletes its parts) or cleaned up (Azure can only
    # drop uncommitted blocks through cleanup; a writer's abort leaves them to expire).
    gone = store.open_writer("f/gone", size=len(data), part_size=PART)
    assert isinstance(gone, ResumableWriter)
    gone.write_part(0, chunks[0], PartDigests(chunks[0]))
    state = gone.state()
    if cloud.scheme == "gs":
        gone.abort()
    else:
        [pending] = [u for u in store.list_pending_uploads("f/") if u.key == "f/gone"]
        store.abort_pending_upload(pending)
    with pytest.raises(NotFound):
        store.resume_writer("f/gone", size=len(data), part_size=PART, state=state).verify_parts({})
    with pytest.raises(NotFound):
        store.resume_writer("f/gone", size=len(data), part_size=PART, state={"x": 1})
    assert leftovers(cloud) == []
    assert store.read("f/committed") == data


# -- kill -9, then resume -------------------------------------------------------------


def _tree(root: Path, big: int, small: int) -> None:
    (root / "d").mkdir(parents=True, exist_ok=True)
    (root / "big.bin").write_bytes(os.urandom(big))
    for i in range(small):
        (root / "d" / f"f{i:03d}.txt").write_bytes(os.urandom(100 + i))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _journaled_bytes(db: Path) -> int:
    """Bytes of parts the journal records as written (0 before it exists)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            (n,) = conn.execute("SELECT COALESCE(SUM(size), 0) FROM parts").fetchone()
    except sqlite3.OperationalError:
        return 0  # no tables yet
    return int(n)


def _run_killed(
    cmd: list[str], env: dict[str, str], db: Path, *, after: float, progress: bool
) -> None:
    """Run ``cmd`` and kill -9 it ``after`` seconds after it started or, with
    ``progress``, after it journaled a part it wrote (so the kill point does not depend
    on how long Python takes to start on a busy machine)."""
    before = _journaled_bytes(db)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while progress and proc.poll() is None and time.monotonic() < deadline:
        if _journaled_bytes(db) > before:
            break
        time.sleep(0.05)
    time.sleep(after)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_kill_9_at_several_points_then_resume(cloud: ServerEnv, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src, big=24 * MiB, small=10)
    expected = _files(src)
    total = sum(len(b) for b in expected.values())
    url = cloud.url("k")
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    manifest = tmp_path / "m.jsonl"
    cmd = [
        *DM,
        "copy",
        str(src),
        url,
        "--manifest",
        str(manifest),
        # Parts larger than the bandwidth limit's one-second burst: the first part
        # can't land before the journal has recorded its upload (the journal commits
        # every 0.2 s), so no kill can orphan an upload the final run won't resume.
        "--part-size",
        "5MiB",
        "--bwlimit",
        "3MiB",
        "--transfers",
        "4",
    ]
    db = tmp_path / "state" / "datamover" / "journal.db"
    # Killed while starting, then right after a part, mid-part, a part or so later.
    _run_killed(cmd, env, db, after=0.4, progress=False)
    for after in (0.0, 0.4, 1.0):
        _run_killed(cmd, env, db, after=after, progress=True)
    assert not manifest.exists()  # only a finished run renames the manifest
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "resumed job" in final.stdout
    lines = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]
    summary = lines[-1]
    assert summary["files_ok"] == len(expected) and summary["files_failed"] == 0
    assert int(summary["bytes_moved"]) < total  # resume really resumed
    m = read_manifest(str(manifest))
    assert sorted(e.path for e in m.entries) == sorted(expected)
    store, _ = open_store(url)
    with store:
        for rel, data in expected.items():
            assert store.read(f"k/{rel}") == data
    assert leftovers(cloud) == []
