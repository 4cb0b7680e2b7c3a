"""``BlockStore``, the disk side of the mount's read cache, without a mount: its bound
(shared with staging files, which come first), its checks and what ``--cache-keep``
keeps."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from datamover.errors import UsageError
from datamover_fuse.blocks import BlockStore, version_name
from datamover_fuse.staging import CacheDir

BLOCK = 4096


def new_store(tmp_path: Path, capacity: int, *, keep: bool = False) -> BlockStore:
    staging = CacheDir(str(tmp_path / "cache"), capacity)
    path = str(tmp_path / "kept") if keep else os.path.join(staging.path, "blocks")
    return BlockStore(staging, path, keep=keep, block=BLOCK)


def test_lru_eviction_holds_the_bound(tmp_path: Path) -> None:
    blocks = new_store(tmp_path, 8 * BLOCK)
    data = os.urandom(32 * BLOCK)
    name = version_name("k", "etag", len(data))
    for i in range(0, 32, 4):
        assert blocks.store(name, len(data), i * BLOCK, data[i * BLOCK : (i + 4) * BLOCK])
        assert blocks.used <= 8 * BLOCK and blocks.staging.used <= 8 * BLOCK
    assert blocks.read(name, 0, BLOCK) is None  # the oldest went first
    assert blocks.read(name, 28 * BLOCK + 5, 100) == data[28 * BLOCK + 5 : 28 * BLOCK + 105]
    assert blocks.evicted == 24
    assert stat.S_IMODE(os.stat(blocks.path).st_mode) == 0o700


def test_staging_files_evict_blocks(tmp_path: Path) -> None:
    blocks = new_store(tmp_path, 8 * BLOCK)
    data = os.urandom(8 * BLOCK)
    name = version_name("k", "etag", len(data))
    blocks.store(name, len(data), 0, data)
    assert blocks.staging.try_reserve(6 * BLOCK)  # a write needs room: blocks give way
    assert blocks.used <= 2 * BLOCK


def test_a_corrupt_block_is_dropped_not_returned(tmp_path: Path) -> None:
    blocks = new_store(tmp_path, 64 * BLOCK)
    data = os.urandom(3 * BLOCK + 100)  # a short last block
    name = version_name("k", "etag", len(data))
    assert blocks.store(name, len(data), 0, data) == len(data)
    assert blocks.read(name, 0, len(data)) == data
    with open(os.path.join(blocks.path, name), "r+b") as f:
        f.seek(BLOCK + 1)
        f.write(b"\x00" if data[BLOCK + 1] else b"\x01")
    assert blocks.read(name, BLOCK, 10) is None
    assert blocks.corrupt == 1 and not blocks.has(name, 1, 1)
    assert blocks.read(name, 3 * BLOCK, 100) == data[3 * BLOCK :]  # the others stay


def test_another_version_finds_nothing(tmp_path: Path) -> None:
    blocks = new_store(tmp_path, 64 * BLOCK)
    data = os.urandom(2 * BLOCK)
    blocks.store(version_name("k", "v1", len(data)), len(data), 0, data)
    assert blocks.read(version_name("k", "v2", len(data)), 0, 10) is None
    blocks.drop(version_name("k", "v1", len(data)))
    assert blocks.used == 0 and blocks.staging.used == 0


def test_kept_blocks_survive_and_the_dir_is_locked(tmp_path: Path) -> None:
    blocks = new_store(tmp_path, 64 * BLOCK, keep=True)
    data = os.urandom(2 * BLOCK)
    name = version_name("k", "etag", len(data))
    blocks.store(name, len(data), 0, data)
    with pytest.raises(UsageError, match="used by another mount"):
        new_store(tmp_path, 64 * BLOCK, keep=True)
    blocks.close()
    again = new_store(tmp_path, 64 * BLOCK, keep=True)
    assert again.read(name, 0, len(data)) == data
    assert again.used == len(data)
    again.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_read_descriptors_are_kept_within_their_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads keep their cache file open (no open/close per read), at most ``MAX_OPEN``
    files at once; dropping a version or evicting its last block closes its file."""
    from datamover_fuse import blocks as blocks_mod

    monkeypatch.setattr(blocks_mod, "MAX_OPEN", 3)
    blocks = new_store(tmp_path, 64 * BLOCK)
    before = open_fds()
    datas = {}
    for k in range(6):
        data = os.urandom(2 * BLOCK)
        name = version_name(f"k{k}", "etag", len(data))
        datas[name] = data
        blocks.store(name, len(data), 0, data)
    for _ in range(3):
        for name, data in datas.items():
            assert blocks.read(name, BLOCK + 7, 100) == data[BLOCK + 7 : BLOCK + 107]
            assert open_fds() - before <= 3
    for name in datas:
        blocks.drop(name)
    assert open_fds() == before
    blocks.close()
    assert open_fds() == before


def test_a_kept_descriptor_still_sees_a_flipped_byte(tmp_path: Path) -> None:
    blocks = new_store(tmp_path, 64 * BLOCK)
    data = os.urandom(4 * BLOCK)
    name = version_name("k", "etag", len(data))
    blocks.store(name, len(data), 0, data)
    assert blocks.read(name, 2 * BLOCK, 10, nowait=True) == data[2 * BLOCK : 2 * BLOCK + 10]
    with open(os.path.join(blocks.path, name), "r+b") as f:  # the file read is kept open
        f.seek(2 * BLOCK + 3)
        f.write(bytes([data[2 * BLOCK + 3] ^ 0xFF]))
    assert blocks.read(name, 2 * BLOCK, 10, nowait=True) is None
    assert blocks.corrupt == 1


def test_concurrent_reads_drops_and_a_bound_of_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads reading two versions through a one-descriptor bound while a third
    drops and re-stores one of them: every read returns the right bytes or None,
    never another file's, and no descriptor is left open."""
    import threading

    from datamover_fuse import blocks as blocks_mod

    monkeypatch.setattr(blocks_mod, "MAX_OPEN", 1)
    blocks = new_store(tmp_path, 256 * BLOCK)
    before = open_fds()
    a, b = os.urandom(8 * BLOCK), os.urandom(8 * BLOCK)
    na, nb = version_name("a", "e", len(a)), version_name("b", "e", len(b))
    blocks.store(na, len(a), 0, a)
    blocks.store(nb, len(b), 0, b)
    wrong: list[str] = []
    stop = threading.Event()

    def reader(name: str, data: bytes) -> None:
        for n in range(2000):
            i = n % 8
            got = blocks.read(name, i * BLOCK, BLOCK)
            if got is not None and bytes(got) != data[i * BLOCK : (i + 1) * BLOCK]:
                wrong.append(f"{name} block {i}")

    def churn() -> None:
        while not stop.is_set():
            blocks.drop(nb)
            blocks.store(nb, len(b), 0, b)

    threads = [threading.Thread(target=reader, args=(n, d)) for n, d in ((na, a), (nb, b))]
    threads += [threading.Thread(target=reader, args=(na, a))]
    spinner = threading.Thread(target=churn)
    spinner.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    stop.set()
    spinner.join(timeout=60)
    assert not wrong
    assert blocks.read(na, 0, 10) == a[:10]
    blocks.close()
    assert open_fds() == before


def test_a_cache_dir_a_killed_mount_left_is_removed_by_the_next_one(tmp_path: Path) -> None:
    """``kill -9`` of a mount left its ``datamover-mount-*`` directory (staged files
    included) for good; the next mount with that cache directory removes it, never a
    live mount's."""
    import subprocess
    import sys

    parent = tmp_path / "cache"
    code = (
        "import sys; from datamover_fuse.staging import CacheDir; "
        "d = CacheDir(sys.argv[1], 1 << 20); open(d.path + '/0', 'w').write('staged'); "
        "print(d.path)"
    )
    dead = subprocess.run(
        [sys.executable, "-c", code, str(parent)], capture_output=True, text=True, check=True
    ).stdout.strip()  # exits without remove(): as a killed mount
    live = CacheDir(str(parent), 1 << 20)
    assert not os.path.exists(dead) and os.path.isdir(live.path)
    other = CacheDir(str(parent), 1 << 20)
    assert os.path.isdir(live.path) and os.path.isdir(other.path)
    other.remove()
    live.remove()
    assert os.listdir(parent) == []
