"""A small download into a local file is read back from its temp file before the
rename (``PosixStore.put_read_back``), not reopened by name after it: nothing
unchecked is ever visible, and the engine's own read-back (``engine.proof``) is not
needed for it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

import datamover.stores.posix.writer as posix_writer
from datamover.engine import copy_between
from datamover.engine.proof import Prover
from datamover.errors import DigestMismatch
from datamover.manifest import read_manifest
from datamover.options import TransferOptions
from datamover.stores.posix import TEMP_MARK, PosixStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuse"))
from memstore import MemoryStore


def k(path: Path) -> str:
    return str(path).lstrip("/")


def test_put_read_back_says_readback_and_writes_what_it_was_given(tmp_path: Path) -> None:
    store = PosixStore()
    assert store.features.reads_back_puts
    data = os.urandom(4096)
    info = store.put_read_back(k(tmp_path / "f"), data, metadata={"mode": str(0o100640)})
    assert info.verified == "readback"
    assert (tmp_path / "f").read_bytes() == data
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640
    # a file of zeros (written as a hole) and an empty one read back as they are
    zeros = bytes(64 * 1024)
    assert store.put_read_back(k(tmp_path / "z"), zeros).verified == "readback"
    assert (tmp_path / "z").read_bytes() == zeros
    assert store.put_read_back(k(tmp_path / "e"), b"").verified == "readback"
    assert (tmp_path / "e").read_bytes() == b""
    # plain put is unchanged: nothing read back, nothing claimed
    assert store.put(k(tmp_path / "p"), data).verified is None


def _flipping_pwrite(monkeypatch: pytest.MonkeyPatch, flips: int = 1_000_000) -> list[int]:
    """The disk takes other bytes than it is given (one bit flipped), the first
    ``flips`` times; returns the count left."""
    real = posix_writer.write_sparse
    left = [flips]

    def flipped(fd: int, view: memoryview, offset: int, lock: object = None) -> int:
        body = bytearray(view)
        if left[0] > 0:
            left[0] -= 1
            body[len(body) // 2] ^= 0x10
        return int(real(fd, memoryview(body), offset, lock))

    monkeypatch.setattr(posix_writer, "write_sparse", flipped)
    return left


def test_bytes_that_differ_on_disk_fail_before_anything_is_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PosixStore()
    (tmp_path / "f").write_bytes(b"the old file")
    _flipping_pwrite(monkeypatch)
    with pytest.raises(DigestMismatch, match="read back before its rename"):
        store.put_read_back(k(tmp_path / "f"), os.urandom(4096))
    assert (tmp_path / "f").read_bytes() == b"the old file"  # never replaced
    assert not [p for p in os.listdir(tmp_path) if TEMP_MARK in p]  # no temp left


def _download(tmp_path: Path, **options: Any) -> tuple[Any, Path]:
    src = MemoryStore()
    for i in range(20):
        src.put(f"src/f{i}", bytes([i + 1]) * (100 + i))
    out = tmp_path / "out"
    opts = TransferOptions(
        state_dir=str(tmp_path / "state"), manifest=str(tmp_path / "m.jsonl"), **options
    )
    report = copy_between(src, "src/", PosixStore(), k(out) + "/", opts)
    return report, out


def test_the_engine_reads_small_downloads_back_before_the_rename_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    after: list[str] = []
    real = Prover._read_back

    def counted(self: Prover, job: Any, size: int, retrying: Any) -> tuple[str, int]:
        after.append(job.dst_key)
        return real(self, job, size, retrying)

    monkeypatch.setattr(Prover, "_read_back", counted)
    report, out = _download(tmp_path)
    assert report.files_ok == 20 and after == []
    entries = read_manifest(str(tmp_path / "m.jsonl")).entries
    assert {e.verified for e in entries} == {"readback"}
    assert (out / "f7").read_bytes() == bytes([8]) * 107


def test_a_flipped_small_download_is_sent_again_before_anything_is_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    left = _flipping_pwrite(monkeypatch, flips=3)
    report, out = _download(tmp_path, transfers=1)
    assert left == [0]
    assert report.files_ok == 20 and report.files_failed == 0, report.failures
    for i in range(20):
        assert (out / f"f{i}").read_bytes() == bytes([i + 1]) * (100 + i)
    entries = read_manifest(str(tmp_path / "m.jsonl")).entries
    assert {e.verified for e in entries} == {"readback"}


def test_other_policies_keep_plain_puts(tmp_path: Path) -> None:
    report, _ = _download(tmp_path, unverified="accept")
    assert report.files_ok == 20 and report.files_unverified == 20
