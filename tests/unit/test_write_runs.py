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


def test_only_blocks_with_zero_ends_are_hashed_and_zero_ends_alone_are_no_hole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block is hashed (CRC32C) only when its first and last bytes are zero; such a
    block with data inside is written all the same, only all-zero blocks stay holes."""
    data = bytearray(os.urandom(6 * SPARSE_BLOCK))
    data[0:SPARSE_BLOCK] = bytes(SPARSE_BLOCK)  # a hole
    inner = 2 * SPARSE_BLOCK  # zero ends, one byte of data in the middle
    data[inner : inner + SPARSE_BLOCK] = bytes(SPARSE_BLOCK)
    data[inner + SPARSE_BLOCK // 2] = 1
    data[4 * SPARSE_BLOCK] = 0  # zero first byte only: no candidate
    data[4 * SPARSE_BLOCK + 5] = 7
    data[5 * SPARSE_BLOCK - 1] = 9
    for k in (1, 3, 5):
        data[k * SPARSE_BLOCK] |= 1  # random blocks: never a candidate
    hashed: list[int] = []
    real = sparse._crc32c_extend

    def counting(block: memoryview, *args: int) -> int:
        hashed.append(len(block))
        return real(block, *args)

    monkeypatch.setattr(sparse, "_crc32c_extend", counting)
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, len(data))
        write_sparse(fd, memoryview(data), 0)
        data_at = os.lseek(fd, 0, os.SEEK_DATA)
    finally:
        os.close(fd)
    assert path.read_bytes() == bytes(data)
    assert hashed == [SPARSE_BLOCK, SPARSE_BLOCK]  # the hole and the inner block only
    assert data_at >= SPARSE_BLOCK or os.statvfs(tmp_path).f_bsize > SPARSE_BLOCK


def test_every_pwrite_holds_the_files_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads writing one file's parts take turns at ``pwrite`` (a lock per file):
    ext4 serialises buffered writes to an inode anyway, and its waiters spin."""

    class Recording:
        held = False
        entered = 0

        def __enter__(self) -> None:
            assert not self.held
            self.held = True
            self.entered += 1

        def __exit__(self, *exc: object) -> None:
            self.held = False

    lock = Recording()
    real = os.pwrite

    def pwrite(fd: int, buf: memoryview, at: int) -> int:
        assert lock.held, "pwrite outside the file's write lock"
        return real(fd, buf, at)

    monkeypatch.setattr(sparse.os, "pwrite", pwrite)
    data = bytearray(os.urandom(3 * WRITE_RUN + 3 * SPARSE_BLOCK))
    data[WRITE_RUN : WRITE_RUN + SPARSE_BLOCK] = bytes(SPARSE_BLOCK)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, len(data))
        write_sparse(fd, memoryview(data), 0, lock)
    finally:
        os.close(fd)
    assert lock.entered >= 4 and not lock.held
    assert (tmp_path / "f").read_bytes() == bytes(data)
