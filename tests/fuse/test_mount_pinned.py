"""An object replaced by another client while the mount reads it, on real mounts of
SeaweedFS, Azurite and fake-gcs-server: an open file never returns bytes of two
versions (its GETs carry ``If-Match`` / ``ifGenerationMatch``), and a new open reads
the new object whole. The same on the in-memory store: test_pinned_reads.py."""

from __future__ import annotations

import errno
import os
import time

import pytest

from datamover.stores.base import MiB

from corekit import payload
from mounting import Target

pytestmark = [pytest.mark.fuse, pytest.mark.cloud, pytest.mark.timeout(180)]


def test_a_file_open_across_a_replacement_never_reads_the_new_bytes(target: Target) -> None:
    """Before: the handle's next GET read the new object's bytes into the old file's
    (same size, so nothing looked wrong). Now every read is the old bytes (what the
    mount already held) or ESTALE; the GET of a far range is ESTALE."""
    key = target.fresh_key("replaced.bin")
    size = 24 * MiB
    old, new = payload(size, 31), payload(size, 32)
    target.store.put(key, old)
    path = target.root / key
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # the kernel reads no further
        assert os.pread(fd, 4096, 0) == old[:4096]
        target.store.put(key, new)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        with pytest.raises(OSError) as err:
            got = os.pread(fd, 4096, 20 * MiB)
            assert got == old[20 * MiB : 20 * MiB + 4096]  # never new bytes
        assert err.value.errno == errno.ESTALE
        for offset in (0, 4096, 10 * MiB):  # ESTALE, or what was read before
            try:
                got = os.pread(fd, 4096, offset)
            except OSError as e:
                assert e.errno == errno.ESTALE
            else:
                assert got == old[offset : offset + 4096]
    finally:
        os.close(fd)
    assert path.read_bytes() == new


def test_an_open_right_after_a_replacement_reads_all_or_nothing_of_it(target: Target) -> None:
    """Looked up, then replaced by another client with a longer object, then opened
    within ``--attr-ttl`` (no HEAD at that open): the read was the new bytes cut to
    the size the kernel had cached. It is now ESTALE (or, had the attributes
    expired, the whole new object), and the next open reads it whole."""
    key = target.fresh_key("grown.txt")
    target.store.put(key, b"old, short")
    path = target.root / key
    assert path.stat().st_size == 10
    target.store.put(key, b"new and longer contents")
    try:
        data = path.read_bytes()
    except OSError as e:
        assert e.errno == errno.ESTALE
    else:
        assert data == b"new and longer contents"
    assert path.read_bytes() == b"new and longer contents"
    assert path.stat().st_size == 23


def _old_or_estale(fd: int, offset: int, old: bytes, length: int = MiB) -> None:
    """Reads of ``[offset, offset + length)`` give the old bytes until one fails with
    ESTALE. A read may come back short (the kernel hands over the pages it holds
    before the one that failed), but never empty before the old size, and never with
    other bytes."""
    end = min(len(old), offset + length)
    while offset < end:
        try:
            got = os.pread(fd, end - offset, offset)
        except OSError as e:
            assert e.errno == errno.ESTALE
            return
        assert got, f"end of file at {offset} of {len(old)}"
        if got != old[offset : offset + len(got)]:  # never the new bytes
            good = [
                got[i : i + 4096] == old[offset + i : offset + i + 4096]
                for i in range(0, len(got), 4096)
            ]
            raise AssertionError(
                f"offset {offset}: {len(got)} bytes, {sum(good)}/{len(good)} pages old"
            )
        offset += len(got)


def test_a_second_reader_does_not_hand_the_first_the_new_pages(target: Target) -> None:
    """Reader A has the old version open; another client replaces it (smaller); once
    the attributes expired, reader B reads the new one whole. A shared the inode, so
    it read B's pages of the new object, or hit a silent end of file at the new size.
    Now the name has a new inode: A reads only old bytes or ESTALE, at its old size."""
    key = target.fresh_key("two-readers.bin")
    old, new = payload(24 * MiB, 33), payload(6 * MiB, 34)
    target.store.put(key, old)
    path = target.root / key
    a = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(a, MiB, 0) == old[:MiB]
        target.store.put(key, new)
        time.sleep(6)  # past the shared mount's --attr-ttl (5 s)
        assert path.read_bytes() == new
        assert path.stat().st_size == len(new)
        assert os.fstat(a).st_size == len(old)
        for offset in (0, 4 * MiB, 12 * MiB, 23 * MiB):
            _old_or_estale(a, offset, old)
    finally:
        os.close(a)


def test_files_open_across_a_directory_rename_stay_pinned(target: Target) -> None:
    """``mv`` of a directory through the mount, then another client replaces a file in
    it: the open file's reads were no longer pinned and went on into the new bytes."""
    top = target.fresh_key("tree").rstrip("/")
    old, new = payload(24 * MiB, 35), payload(24 * MiB, 36)
    target.store.put(f"{top}/sub/f.bin", old)
    fd = os.open(target.root / top / "sub" / "f.bin", os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        assert os.pread(fd, MiB, 0) == old[:MiB]
        os.rename(target.root / top, target.root / (top + "-moved"))
        target.store.put(f"{top}-moved/sub/f.bin", new)
        for offset in (8 * MiB, 16 * MiB, 20 * MiB):
            _old_or_estale(fd, offset, old)
    finally:
        os.close(fd)


def test_an_idle_writer_beside_a_reader_keeps_it_pinned(target: Target) -> None:
    """A handle open for writing (nothing written) beside a reader: the reader read
    another client's replacement into its file."""
    key = target.fresh_key("rw.bin")
    old, new = payload(24 * MiB, 37), payload(24 * MiB, 38)
    target.store.put(key, old)
    path = target.root / key
    w = os.open(path, os.O_RDWR)
    r = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(r, 0, 0, os.POSIX_FADV_RANDOM)
        assert os.pread(r, MiB, 0) == old[:MiB]
        target.store.put(key, new)
        for offset in (8 * MiB, 16 * MiB, 20 * MiB):
            _old_or_estale(r, offset, old)
    finally:
        os.close(r)
        os.close(w)
    assert target.store.read(key) == new
