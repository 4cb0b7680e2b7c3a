"""Small downloads to a local filesystem move on one thread with their reads in flight
(``engine/smallreads.py``, ``Store.pipelined_reads``): every file still arrives,
checked and recorded as by the worker pool; anything the reader does not answer goes
to the ordinary path; the number in flight stays within ``--transfers``; a bug in the
reader stops the run instead of hanging it."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from datamover.engine import copy_between
from datamover.engine.smallreads import MAX_SIZE
from datamover.errors import SourceChanged
from datamover.manifest import read_manifest
from datamover.options import TransferOptions
from datamover.stores.base import ObjectInfo, digest_metadata_key
from datamover.stores.posix import PosixStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuse"))
from memstore import MemoryStore

FILES = 200


class Reader:
    """A ``PipelinedReads`` over a ``MemoryStore`` that records what it was asked."""

    def __init__(self, store: PipelinedStore, width: int) -> None:
        self.store, self.width = store, width
        self.threads: set[int] = set()
        self.inflight = 0
        self.most = 0
        self.answered = 0
        self.closed = False

    def start(self, key: str, info: ObjectInfo) -> object | None:
        self.threads.add(threading.get_ident())
        if key in self.store.refuse_start:
            return None
        self.inflight += 1
        self.most = max(self.most, self.inflight)
        return (key, info)

    def finish(self, started: object) -> tuple[bytes | bytearray, ObjectInfo] | None:
        self.threads.add(threading.get_ident())
        self.inflight -= 1
        key, _ = started  # type: ignore[misc]
        if self.store.broken:
            raise RuntimeError("a bug in the reader")
        if key in self.store.refuse_finish:
            return None
        self.answered += 1
        data = self.store.data(key)
        if key in self.store.corrupt:
            data = b"X" + data[1:]  # the source's digest must catch it
        return data, self.store.stat(key)

    def abandon(self, started: object) -> None:
        self.inflight -= 1

    def close(self) -> None:
        self.closed = True


class PipelinedStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__(listing_has_metadata=True)
        self.readers: list[Reader] = []
        self.refuse_start: set[str] = set()
        self.refuse_finish: set[str] = set()
        self.corrupt: set[str] = set()
        self.broken = False

    def pipelined_reads(self, width: int) -> Reader:
        reader = Reader(self, width)
        self.readers.append(reader)
        return reader


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _source() -> PipelinedStore:
    src = PipelinedStore()
    for i in range(FILES):
        data = bytes([i % 251 + 1]) * (50 + i)
        digest = {digest_metadata_key("sha256"): _sha(data)}
        src.put(f"src/d{i % 3}/f{i:03d}", data, metadata=digest)
    return src


def _copy(src: PipelinedStore, tmp_path: Path, **options: Any) -> Any:
    opts = TransferOptions(
        state_dir=str(tmp_path / "state"),
        manifest=str(tmp_path / "m.jsonl"),
        processes=1,
        **options,
    )
    return copy_between(src, "src/", PosixStore(), str(tmp_path / "out").lstrip("/") + "/", opts)


def _check_tree(src: PipelinedStore, out: Path) -> None:
    for i in range(FILES):
        path = out / f"d{i % 3}" / f"f{i:03d}"
        assert path.read_bytes() == src.data(f"src/d{i % 3}/f{i:03d}")


def test_one_thread_moves_the_small_files_with_reads_in_flight(tmp_path: Path) -> None:
    src = _source()
    report = _copy(src, tmp_path, transfers=6)
    assert report.files_ok == FILES and report.files_failed == 0, report.failures
    (reader,) = src.readers
    assert reader.width == 6
    assert reader.answered == FILES and src.calls["read"] == 0
    assert 1 < reader.most <= 6  # reads were in flight together, never over --transfers
    assert len(reader.threads) == 1 and threading.get_ident() not in reader.threads
    assert reader.closed and reader.inflight == 0
    _check_tree(src, tmp_path / "out")
    entries = read_manifest(str(tmp_path / "m.jsonl")).entries
    assert len(entries) == FILES and {e.status for e in entries} == {"ok"}
    assert {e.verified for e in entries} == {"readback"}


def test_what_the_reader_does_not_answer_takes_the_ordinary_path(tmp_path: Path) -> None:
    src = _source()
    src.refuse_start = {f"src/d{i % 3}/f{i:03d}" for i in range(0, FILES, 7)}
    src.refuse_finish = {f"src/d{i % 3}/f{i:03d}" for i in range(3, FILES, 11)}
    src.corrupt = {"src/d1/f001", "src/d2/f005"}  # answered, then caught by their digest
    report = _copy(src, tmp_path, transfers=4)
    assert report.files_ok == FILES and report.files_failed == 0, report.failures
    handed = len(src.refuse_start | src.refuse_finish)
    # the pool's path reads each of those once; the corrupt two are read again
    assert src.calls["read"] == handed + len(src.corrupt)
    _check_tree(src, tmp_path / "out")
    assert not [p for p in (tmp_path / "out").rglob("*") if ".dmtmp-" in p.name]


def test_files_over_a_mebibyte_take_the_pool(tmp_path: Path) -> None:
    src = _source()
    big = os.urandom(MAX_SIZE + 1)
    src.put("src/big.bin", big, metadata={digest_metadata_key("sha256"): _sha(big)})
    report = _copy(src, tmp_path, transfers=4)
    assert report.files_ok == FILES + 1
    assert src.readers[0].answered == FILES and src.calls["read"] == 1
    assert (tmp_path / "out" / "big.bin").read_bytes() == big


def test_a_source_that_keeps_changing_fails_that_file_only(tmp_path: Path) -> None:
    src = _source()
    src.fail("read", times=10**6, error=lambda: SourceChanged("changed", key="x"))
    src.corrupt = {"src/d0/f000"}  # its re-reads fail: the file fails, the others don't
    report = _copy(src, tmp_path, transfers=4)
    assert report.files_ok == FILES - 1 and report.files_failed == 1
    assert not (tmp_path / "out" / "d0" / "f000").exists()


def test_a_bug_in_the_reader_stops_the_run(tmp_path: Path) -> None:
    src = _source()
    src.broken = True
    with pytest.raises(RuntimeError, match="a bug in the reader"):
        _copy(src, tmp_path, transfers=4)
    assert src.readers[0].closed


@pytest.mark.parametrize("local_dst", [True, False])
def test_not_used_with_a_bandwidth_limit_or_a_remote_destination(
    tmp_path: Path, local_dst: bool
) -> None:
    src = _source()
    opts = TransferOptions(state_dir=str(tmp_path / "state"), processes=1, transfers=4)
    if local_dst:
        dst: Any = PosixStore()
        key = str(tmp_path / "out").lstrip("/") + "/"
        opts = opts.with_(bwlimit=50 * 1024 * 1024)
    else:
        dst, key = MemoryStore(), "out/"
    report = copy_between(src, "src/", dst, key, opts)
    assert report.files_ok == FILES
    assert src.readers == [] and src.calls["read"] == FILES
