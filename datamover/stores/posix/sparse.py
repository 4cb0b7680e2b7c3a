"""Sparse files: reads zero-fill holes found with ``SEEK_DATA`` instead of reading them;
writes skip all-zero blocks, so a pre-sized file keeps them as holes."""

from __future__ import annotations

import errno
import os
from contextlib import AbstractContextManager, nullcontext

from datamover.checksums import PartDigests
from datamover.crcfast import crc32c as _crc32c_extend
from datamover.stores.base import Buffer

SPARSE_BLOCK = 64 * 1024
#: Longest run of data blocks ``write_sparse`` holds before writing it: the blocks were
#: just read (their CRC32C), so the kernel's copy into the page cache reads them from
#: the CPU cache instead of from memory again.
WRITE_RUN = 256 * 1024


def read_sparse(fd: int, view: memoryview, offset: int) -> int:
    """``preadv`` into ``view`` from ``offset``, zero-filling holes found with
    ``SEEK_DATA`` instead of reading them from disk. Returns the count (short at EOF)."""
    size = os.fstat(fd).st_size
    want = max(0, min(len(view), size - offset))
    total = 0
    while total < want:
        pos = offset + total
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno != errno.ENXIO:  # ENXIO: only a hole from here to EOF
                raise
            data = offset + want
        if data > pos:  # a hole: zeros without touching the disk
            gap = min(data, offset + want) - pos
            view[total : total + gap] = bytes(gap)
            total += gap
            continue
        n = os.preadv(fd, [view[total:want]], pos)
        if n == 0:
            break
        total += n
    return total


def write_sparse(
    fd: int, view: memoryview, offset: int, lock: AbstractContextManager[object] | None = None
) -> int:
    """``pwrite`` the runs of ``view`` that aren't all-zero 64 KiB blocks, leaving the
    zero blocks of the pre-sized file as holes. A block whose first and last bytes
    are zero is a candidate (most data blocks stop there, unhashed: a CRC32C of every
    block was ~0.07 CPU-s per GiB); a candidate's CRC32C (hardware) must be that of
    zeros, and then it is compared byte for byte. Data goes out in runs of
    at most ``WRITE_RUN`` bytes, each right after its blocks were checked. Returns the
    file offset where the last bytes written end (``offset`` when all of it was holes).

    ``lock``: held around each ``pwrite`` (one per file, shared by the threads writing
    its parts). ext4 takes the inode's lock for every buffered write and its waiters
    spin (``rwsem_spin_on_owner``, the top kernel symbol of an 8-thread 1 GiB download
    in bench/RESULTS.md, eleventh session); waiting on a Python lock they sleep
    instead: system time 1.44-1.49 -> 1.21-1.28 s there."""
    guard = lock if lock is not None else nullcontext()
    zero_crc = int.from_bytes(_zero_crc(SPARSE_BLOCK), "big")
    start = None  # start of the pending run of data blocks
    pos = 0
    n = len(view)
    end = offset
    while pos < n:
        block = view[pos : pos + SPARSE_BLOCK]
        hole = (
            len(block) == SPARSE_BLOCK
            and not (block[0] or block[-1])  # most data blocks end here, unhashed
            and _crc32c_extend(block) == zero_crc
            and bytes(block) == bytes(SPARSE_BLOCK)
        )
        if hole and start is not None:
            with guard:
                _pwrite_all(fd, view[start:pos], offset + start)
            start = None
            end = offset + pos
        elif not hole:
            if start is None:
                start = pos
            if pos + len(block) - start >= WRITE_RUN:
                with guard:
                    _pwrite_all(fd, view[start : pos + len(block)], offset + start)
                start = None
                end = offset + pos + len(block)
        pos += SPARSE_BLOCK
    if start is not None:
        with guard:
            _pwrite_all(fd, view[start:], offset + start)
        end = offset + n
    return end


def _zero_crc(length: int, cache: dict[int, bytes] = {}) -> bytes:  # noqa: B006 - memo
    crc = cache.get(length)
    if crc is None:
        crc = cache[length] = PartDigests(bytes(length)).get("crc32c")
    return crc


def is_zeros(data: Buffer, digests: PartDigests) -> bool:
    """All-zero part? The CRC32C is already computed, so only a likely hole is compared."""
    view = memoryview(data).cast("B")
    if digests.get("crc32c") != _zero_crc(len(view)):
        return False
    return bytes(view) == bytes(len(view))


def _pwrite_all(fd: int, data: Buffer, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
