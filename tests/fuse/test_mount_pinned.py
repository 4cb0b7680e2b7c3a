"""An object replaced by another client while the mount reads it, on real mounts of
SeaweedFS, Azurite and fake-gcs-server: an open file never returns bytes of two
versions (its GETs carry ``If-Match`` / ``ifGenerationMatch``), and a new open reads
the new object whole. The same on the in-memory store: test_pinned_reads.py."""

from __future__ import annotations

import errno
import os

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
