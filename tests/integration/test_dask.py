"""One transfer spread over a Dask cluster (``datamover.dask``), against SeaweedFS.

The cluster is a real ``distributed.LocalCluster`` of worker *processes*, so a worker
can be killed with SIGKILL mid-run, as a node would be lost.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import datamover
from datamover.engine.observer import Listener
from datamover.engine.results import FileResult
from datamover.errors import ConfigError, UsageError
from datamover.manifest import read_manifest
from datamover.options import DaskOptions, KiB, MiB, parse_cluster
from datamover.stores import open_store

from serverenv import ServerEnv, use_server

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.cloud
DM = [sys.executable, "-m", "datamover"]


def _tree(root: Path, small: int, sizes: dict[str, int]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for i in range(small):
        files[f"d{i % 7}/f{i:04d}.bin"] = os.urandom(4 * KiB + i)
    for name, size in sizes.items():
        files[name] = os.urandom(size)
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _check_destination(env: ServerEnv, prefix: str, files: dict[str, bytes]) -> None:
    store, _ = open_store(env.url())
    try:
        keys = sorted(i.key for i in store.list(prefix + "/"))
        assert keys == sorted(f"{prefix}/{rel}" for rel in files)
        for rel, data in files.items():
            assert store.read(f"{prefix}/{rel}") == data, rel
        uploads = store.client.list_multipart_uploads(Bucket=env.bucket)  # type: ignore[attr-defined]
        assert not uploads.get("Uploads"), "an unfinished multipart upload was left behind"
    finally:
        store.close()


def _check_manifest(path: str, files: dict[str, bytes]) -> None:
    manifest = read_manifest(path)
    paths = [e.path for e in manifest.entries]
    assert sorted(paths) == sorted(files), "every file exactly once"
    assert all(e.status == "ok" for e in manifest.entries)
    assert all(e.size == len(files[e.path]) for e in manifest.entries)


@pytest.fixture
def dask_client(seaweed_env: ServerEnv) -> Iterator[distributed.Client]:
    """Two worker processes with two threads each. Made after ``seaweed_env`` set the
    S3 environment, which the worker processes inherit. Closed client first, then the
    cluster, so no worker is left talking to a closed scheduler."""
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=2, processes=True, dashboard_address=":0"
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


class _Counter(Listener):
    def __init__(self) -> None:
        self.done = 0
        self.lock = threading.Lock()

    def file_finished(self, result: FileResult) -> None:
        with self.lock:
            self.done += 1


@pytest.mark.timeout(120)
def test_worker_killed_mid_run_leaves_a_complete_copy_and_manifest(
    seaweed_env: ServerEnv, dask_client: distributed.Client, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    # big.bin: 4 parts, split over the workers; mid.bin: 2 parts, one task.
    files = _tree(src, 240, {"big.bin": 3 * 5 * MiB + 777, "mid.bin": 7 * MiB})
    pids: dict[str, int] = dask_client.run(os.getpid)
    counter = _Counter()
    outcome: dict[str, object] = {}
    manifest = str(tmp_path / "m.jsonl")

    def run() -> None:
        try:
            outcome["report"] = datamover.copy(
                str(src),
                seaweed_env.url("k"),
                client=dask_client,
                dask_options=DaskOptions(shard_files=12, split_threshold=10 * MiB),
                listener=counter,
                manifest=manifest,
                part_size="5MiB",
                multipart_threshold="5MiB",
                # Per task: slows the part uploads to seconds, so the kill lands mid-run.
                bwlimit="1MiB",
                transfers=2,
            )
        except BaseException as e:
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    victim: str | None = None
    deadline = time.monotonic() + 60
    while thread.is_alive() and time.monotonic() < deadline:
        if counter.done >= 24:
            busy = {w: keys for w, keys in dask_client.processing().items() if keys}
            # Prefer a worker in the middle of a file's parts: the hardest case.
            parts = [w for w, keys in busy.items() if any("write_parts" in k for k in keys)]
            victim = (parts or list(busy) or [None])[0]
            if victim is not None:
                break
        time.sleep(0.02)
    assert victim is not None and thread.is_alive(), "the run ended before a worker was killed"
    os.kill(pids[victim], signal.SIGKILL)
    thread.join(90)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")
    report = outcome["report"]
    assert isinstance(report, datamover.TransferReport)
    assert report.ok, report.failures
    assert report.files_ok == len(files)

    _check_manifest(manifest, files)
    _check_destination(seaweed_env, "k", files)
    assert datamover.verify(manifest).passed
    assert pids[victim] not in dask_client.run(os.getpid).values()  # it really died

    # sync on the same cluster: nothing to copy, then only what changed.
    again = datamover.sync(str(src), seaweed_env.url("k"), client=dask_client)
    assert again.ok and again.files_ok == 0 and again.files_skipped == len(files)
    (src / "d0" / "f0000.bin").write_bytes(b"changed")
    files["d0/f0000.bin"] = b"changed"
    changed = datamover.sync(str(src), seaweed_env.url("k"), client=dask_client)
    assert changed.ok and changed.files_ok == 1 and changed.bytes_moved == len(b"changed")
    _check_destination(seaweed_env, "k", files)


@pytest.mark.timeout(120)
def test_cli_dask_local_cluster_copy_then_verify(seaweed_env: ServerEnv, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = _tree(src, 60, {"big.bin": 11 * MiB})
    manifest = tmp_path / "m.jsonl"
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    run = subprocess.run(
        [
            *DM,
            "copy",
            str(src),
            seaweed_env.url("c"),
            "--dask",
            "local:2",
            "--shard-files",
            "16",
            "--part-size",
            "5MiB",
            "--manifest",
            str(manifest),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"copied {len(files)} files" in run.stdout
    _check_manifest(str(manifest), files)
    _check_destination(seaweed_env, "c", files)
    check = subprocess.run(
        [*DM, "verify", str(manifest)], env=env, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


def _parts_journaled(state: Path) -> int:
    db = state / "datamover" / "journal.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM parts").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.timeout(120)
def test_single_node_run_killed_then_resumed_on_dask(
    seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    """The journal is the same either way: a run killed on one node is finished by a
    Dask run, which skips the files done and keeps the parts the store holds."""
    src = tmp_path / "src"
    files = _tree(src, 20, {"big.bin": 4 * 5 * MiB})
    manifest = tmp_path / "m.jsonl"
    state = tmp_path / "state"
    env = {**os.environ, "XDG_STATE_HOME": str(state)}
    cmd = [*DM, "copy", str(src), seaweed_env.url("r"), "--manifest", str(manifest)]
    cmd += ["--part-size", "5MiB", "--transfers", "2"]
    proc = subprocess.Popen(
        [*cmd, "--bwlimit", "3MiB"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while proc.poll() is None and _parts_journaled(state) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the first run ended before it was killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    run = subprocess.run(
        [*cmd, "--dask", "local:2"], env=env, capture_output=True, text=True, timeout=100
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "resumed job" in run.stdout
    _check_manifest(str(manifest), files)
    _check_destination(seaweed_env, "r", files)
    lines = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]
    assert int(lines[-1]["bytes_moved"]) < sum(len(b) for b in files.values())


def test_cluster_argument_and_options_are_checked() -> None:
    assert parse_cluster("local:3") == ("local", 3)
    assert parse_cluster("local") == ("local", None)
    assert parse_cluster("tcp://scheduler:8786") == ("address", None)
    with pytest.raises(UsageError, match="local:N"):
        parse_cluster("local:zero")
    with pytest.raises(UsageError, match="shard-files"):
        DaskOptions(shard_files=0)


def test_an_unreachable_scheduler_is_one_config_error(tmp_path: Path) -> None:
    """A scheduler address nothing answers at raised distributed's raw OSError."""
    import dask

    (tmp_path / "a.txt").write_text("a")
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "2s"}),
        pytest.raises(
            ConfigError, match=r"could not reach the Dask scheduler at tcp://127\.0\.0\.1:9"
        ),
    ):
        datamover.copy(
            str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), cluster="tcp://127.0.0.1:9"
        )


def test_quiet_local_cluster_run_prints_nothing(tmp_path: Path) -> None:
    """``-q`` prints only errors: the local cluster's scheduler and nannies logged
    ~30 INFO lines through distributed's own handler (found by a new-user re-test)."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}").write_bytes(b"x" * i)
    cmd = [sys.executable, "-m", "datamover", "-q", "copy", str(src), str(tmp_path / "dst")]
    p = subprocess.run(
        [*cmd, "--dask", "local:2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert p.stderr == "" and p.stdout == ""
    assert sorted(os.listdir(tmp_path / "dst")) == ["f0", "f1", "f2"]


@pytest.mark.parametrize(
    ("ours", "inside"),
    [
        (logging.ERROR, logging.ERROR),
        (logging.WARNING, logging.WARNING),
        (logging.INFO, logging.WARNING),
    ],
    ids=["-q", "default", "-v"],
)
def test_local_cluster_logs_at_datamovers_level_or_warning(ours: int, inside: int) -> None:
    """Under -q a local cluster's ``distributed`` logs errors only (a nanny's "still
    alive after 4 s, killing" at close is a WARNING a loaded machine prints), else
    WARNING; its level is put back afterwards."""
    from datamover.engine.dask.runner import _quiet_local_cluster

    dm, dist = logging.getLogger("datamover"), logging.getLogger("distributed")
    saved = dm.level, dist.level
    try:
        dm.setLevel(ours)
        dist.setLevel(logging.NOTSET)
        root = logging.getLogger().getEffectiveLevel()  # what ``distributed`` inherits
        with _quiet_local_cluster():
            assert dist.level == max(inside, root)
        assert dist.level == logging.NOTSET
    finally:
        dm.setLevel(saved[0])
        dist.setLevel(saved[1])


@pytest.mark.timeout(300)
def test_library_local_cluster_leaves_the_callers_logging_as_it_was(tmp_path: Path) -> None:
    """A notebook's ``datamover.copy(..., cluster="local:2")`` quiets the local
    cluster it starts while it runs, but the ``distributed`` logger's level the caller
    chose (here stricter than WARNING) is never lowered, and is the same afterwards."""
    import logging

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}").write_bytes(b"x" * i)
    logger = logging.getLogger("distributed")
    before = logger.level
    seen: list[int] = []

    class Watch(Listener):
        def file_finished(self, result: FileResult) -> None:
            seen.append(logger.getEffectiveLevel())

    try:
        logger.setLevel(logging.ERROR)
        report = datamover.copy(
            str(src), str(tmp_path / "dst"), cluster="local:2", listener=Watch()
        )
        assert report.ok and report.files_ok == 3
        assert logger.level == logging.ERROR
        assert seen and min(seen) >= logging.ERROR
    finally:
        logger.setLevel(before)


@pytest.mark.parametrize("server", ["azurite", "gcs"])
@pytest.mark.timeout(150)
def test_dask_copies_large_files_to_azure_and_gcs(
    server: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Workers reopen the upload the client started (``resume_writer``) before any part
    of it exists: on Azure (uncommitted blocks) and GCS (part objects) that looked like
    an upload gone, and every file over the multipart threshold failed."""
    env_ = use_server(request.getfixturevalue(server), monkeypatch)
    src = tmp_path / "src"
    files = _tree(src, 6, {"big.bin": 11 * MiB, "d/big2.bin": 6 * MiB})
    manifest = tmp_path / "m.jsonl"
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    run = subprocess.run(
        [
            *DM,
            "copy",
            str(src),
            env_.url("dk"),
            "--dask",
            "local:2",
            "--part-size",
            "5MiB",
            "--manifest",
            str(manifest),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=130,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    _check_manifest(str(manifest), files)
    check = subprocess.run(
        [*DM, "verify", str(manifest)], env=env, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
