"""``write_sparse`` writes data in runs of at most ``WRITE_RUN`` bytes (so the kernel
copies them while they are still in the CPU cache) and still leaves all-zero 64 KiB
blocks as holes: the file holds exactly the bytes, the zero blocks stay unallocated."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from datamover.stores.posix import sparse
from datamover.stores.posix.sparse import SPARSE_BLOCK, WRITE_RUN, write_sparse


def test_long_runs_are_split_and_zero_blocks_stay_holes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bytearray(os.urandom(3 * WRITE_RUN + 5 * SPARSE_BLOCK + 123))
    hole_at = WRITE_RUN + 2 * SPARSE_BLOCK  # one aligned zero block inside a long run
    data[hole_at : hole_at + SPARSE_BLOCK] = bytes(SPARSE_BLOCK)
    offset = 7 * SPARSE_BLOCK
    writes: list[tuple[int, int]] = []
    real = os.pwrite

    def pwrite(fd: int, buf: memoryview, at: int) -> int:
        writes.append((at, len(buf)))
        return real(fd, buf, at)

    monkeypatch.setattr(sparse.os, "pwrite", pwrite)
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, offset + len(data))
        end = write_sparse(fd, memoryview(data), offset)
    finally:
        os.close(fd)
    assert end == offset + len(data)
    assert path.read_bytes()[offset:] == bytes(data)
    assert max(n for _, n in writes) <= WRITE_RUN + SPARSE_BLOCK
    written = sorted(writes)
    assert all(a + n <= b for (a, n), (b, _) in itertools.pairwise(written))
    assert not any(a <= offset + hole_at < a + n for a, n in written)  # never written
