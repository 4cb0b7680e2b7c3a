"""--durability: "file" fsyncs each file, "job" syncs each filesystem once per journal
batch and at the end (a file is recorded done only after a sync that began after its
rename), "none" leaves write-back to the kernel."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import datamover.stores.posix.durability as posix_durability
from datamover.engine import copy_between
from datamover.errors import UsageError
from datamover.job import cluster_durability
from datamover.journal import Journal
from datamover.options import TransferOptions
from datamover.stores.posix import Beneath, Durability, PosixStore


def k(path: Path) -> str:
    return str(path).lstrip("/")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Count fsync and syncfs calls (and still make them)."""
    seen: dict[str, list[Any]] = {"fsync": [], "syncfs": []}
    real_fsync, real_syncfs = os.fsync, posix_durability._syncfs

    def fsync(fd: int) -> None:
        seen["fsync"].append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def syncfs(directory: str) -> None:
        seen["syncfs"].append(directory)
        real_syncfs(directory)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(posix_durability, "_syncfs", syncfs)
    return seen


@pytest.mark.parametrize(
    ("mode", "fsyncs", "syncfs"), [("file", 2 * 5, 0), ("job", 0, 1), ("none", 0, 0)]
)
def test_what_each_mode_syncs(
    tmp_path: Path, calls: dict[str, list[Any]], mode: str, fsyncs: int, syncfs: int
) -> None:
    store = PosixStore(durability=mode)
    for i in range(5):
        store.put(k(tmp_path / "d" / f"f{i}"), b"x" * i)
    assert len(calls["fsync"]) == fsyncs  # the file and its directory, per file
    store.sync()
    store.sync()  # nothing new: no second syncfs
    assert len(calls["syncfs"]) == syncfs
    assert sorted(os.listdir(tmp_path / "d")) == [f"f{i}" for i in range(5)]


def test_job_mode_sync_covers_commits_made_while_it_runs(tmp_path: Path) -> None:
    """A second sync() never returns while a syncfs covering its commits still runs."""
    durability = Durability("job")
    started, release = threading.Event(), threading.Event()
    order: list[str] = []
    real = posix_durability._syncfs

    def slow(directory: str) -> None:
        order.append("syncfs-start")
        started.set()
        release.wait(5)
        real(directory)
        order.append("syncfs-end")

    posix_durability._syncfs = slow  # type: ignore[assignment]
    try:
        (tmp_path / "a").write_bytes(b"1")
        durability.renamed(Beneath(str(tmp_path)).root())
        first = threading.Thread(target=durability.sync)
        first.start()
        assert started.wait(5)
        second = threading.Thread(target=lambda: (durability.sync(), order.append("second")))
        second.start()
        time.sleep(0.2)
        assert "second" not in order  # waits for the running syncfs
        release.set()
        first.join(60)  # a real syncfs: slow on a busy disk
        second.join(60)
        assert not first.is_alive() and not second.is_alive()
    finally:
        posix_durability._syncfs = real  # type: ignore[assignment]
    assert order.index("syncfs-end") < order.index("second")


def test_journal_commits_a_batch_only_after_its_barrier(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path / "j.sqlite"))
    seen: list[int] = []

    def barrier() -> None:
        # The rows of this batch are not committed yet when the barrier runs.
        seen.append(journal.file_counts("job").get("planned", 0))

    journal.set_barrier(barrier)
    for i in range(10):
        journal.planned("job", f"f{i}", 1, None, None)
    journal.flush()
    assert seen and seen[0] == 0
    assert journal.file_counts("job") == {"planned": 10}
    journal.close()


def test_a_failed_barrier_records_nothing(tmp_path: Path) -> None:
    journal = Journal(str(tmp_path / "j.sqlite"))

    def broken() -> None:
        raise OSError(5, "Input/output error")

    journal.set_barrier(broken)
    journal.planned("job", "f", 1, None, None)
    journal.flush()
    assert journal.file_counts("job") == {}
    assert isinstance(journal.barrier_error, OSError)
    journal.close()


def test_a_job_syncs_the_destination_before_it_ends(
    tmp_path: Path, calls: dict[str, list[Any]]
) -> None:
    src = tmp_path / "src"
    for i in range(20):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"f{i}").write_bytes(os.urandom(100 + i))
    dst = PosixStore(durability="job")
    options = TransferOptions(state_dir=str(tmp_path / "state"), manifest=str(tmp_path / "m"))
    report = copy_between(PosixStore(), k(src), dst, k(tmp_path / "dst"), options)
    assert report.ok and report.files_ok == 20
    # No file or directory of the destination was fsynced one by one.
    assert not [p for p in calls["fsync"] if p.startswith(str(tmp_path / "dst"))]
    assert calls["syncfs"], "the run must sync its destination"
    assert dst.durability._dirty == {}  # nothing committed after the last sync
    for i in range(20):
        got = (tmp_path / "dst" / f"d{i % 3}" / f"f{i}").read_bytes()
        assert got == (src / f"d{i % 3}" / f"f{i}").read_bytes()


def test_unknown_durability_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="durability"):
        TransferOptions(durability="sometimes")


def test_buffer_pool_stays_within_its_limit() -> None:
    from datamover.engine.budget import BufferPool

    pool = BufferPool(100)
    a, b = pool.take(40), pool.take(40)
    assert len(a) == 40 and len(b) == 40
    pool.give(a)
    c = pool.take(30)  # reuses the 40-byte buffer (n <= 40 <= 2n)
    assert c is a
    pool.give(b)
    pool.give(c)
    assert pool.idle_bytes == 80
    big = pool.take(90)  # nothing idle fits: a new one; idle ones make room for it
    pool.give(big)
    assert pool.idle_bytes <= 100
    assert pool.take(10) is not big  # 90 > 2 * 10: not handed out for a small part


def test_a_255_byte_name_gets_a_temp_file_that_fits(tmp_path: Path) -> None:
    name = "é" * 127 + "x"  # 255 bytes in UTF-8
    store = PosixStore(durability="job")
    store.put(k(tmp_path / name), b"long")
    assert (tmp_path / name).read_bytes() == b"long"
    assert os.listdir(tmp_path) == [name]


def test_a_dask_run_fsyncs_each_file() -> None:
    """Workers write into other page caches than the client's: no per-job syncfs."""
    opts = TransferOptions()
    assert opts.durability == "job"
    assert cluster_durability(opts, True).durability == "file"
    assert cluster_durability(opts, False).durability == "job"
    assert cluster_durability(opts.with_(durability="none"), True).durability == "none"
