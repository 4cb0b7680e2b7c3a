"""Benchmark datasets, generated once under the data dir and reused.

Each dataset lives in its own directory with a ``.spec.json`` written last: a
directory whose spec matches what is asked for is complete and reused; anything else
is deleted and generated again. Contents are random bytes (``os.urandom``) so that no
tool or server gains from compression or deduplication.

===========  =====================================  ==========================
name         full                                   --quick
===========  =====================================  ==========================
large        one 1 GiB file                         one 256 MiB file
small        10,000 files x 4 KiB, one directory    2,000 files x 4 KiB
mixed        2 GiB tree: 4 big, ~50 medium,          512 MiB, same shape
             ~2,000 small files in 2 levels
sparse       one 10 GiB sparse file (all holes)     2 GiB
million      1,000,000 empty files, 1,000 dirs      100,000 files, 100 dirs
===========  =====================================  ==========================
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

_CHUNK = 16 * MiB


@dataclass(frozen=True)
class Sizes:
    large: int
    small_count: int
    small_size: int
    mixed_total: int
    sparse: int
    million_dirs: int
    million_per_dir: int

    @property
    def million_count(self) -> int:
        return self.million_dirs * self.million_per_dir


FULL = Sizes(
    large=1 * GiB,
    small_count=10_000,
    small_size=4 * KiB,
    mixed_total=2 * GiB,
    sparse=10 * GiB,
    million_dirs=1000,
    million_per_dir=1000,
)
QUICK = Sizes(
    large=256 * MiB,
    small_count=2_000,
    small_size=4 * KiB,
    mixed_total=512 * MiB,
    sparse=2 * GiB,
    million_dirs=100,
    million_per_dir=1000,
)


@dataclass(frozen=True)
class Dataset:
    """A generated dataset: its root and what it holds."""

    name: str
    path: Path  # a file for single-file datasets, else a directory
    bytes: int
    files: int


def _write_random(path: Path, size: int) -> None:
    with open(path, "wb", buffering=0) as f:
        left = size
        while left:
            n = min(_CHUNK, left)
            f.write(os.urandom(n))
            left -= n


def _ensure(root: Path, name: str, spec: dict[str, object], build: Callable[[Path], None]) -> Path:
    """``root/name`` built by ``build`` unless a complete one with this spec exists."""
    target = root / name
    marker = target / ".spec.json"
    if marker.exists():
        try:
            if json.loads(marker.read_text()) == spec:
                return target
        except ValueError:
            pass
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    began = time.monotonic()
    print(f"# generating dataset {name} {spec} ...", flush=True)
    build(target)
    marker.write_text(json.dumps(spec))
    print(f"# dataset {name} ready in {time.monotonic() - began:.1f} s", flush=True)
    return target


def large(root: Path, sizes: Sizes) -> Dataset:
    spec = {"kind": "large", "size": sizes.large}
    d = _ensure(root, "large", spec, lambda t: _write_random(t / "large.bin", sizes.large))
    return Dataset("large", d / "large.bin", sizes.large, 1)


def small(root: Path, sizes: Sizes) -> Dataset:
    """Flat: one directory, so it is also one S3 prefix of ``small_count`` keys."""
    spec = {"kind": "small", "count": sizes.small_count, "size": sizes.small_size}

    def build(t: Path) -> None:
        blob = os.urandom(sizes.small_count * sizes.small_size)
        files = t / "files"
        files.mkdir()
        for i in range(sizes.small_count):
            at = i * sizes.small_size
            (files / f"f{i:06d}.bin").write_bytes(blob[at : at + sizes.small_size])

    d = _ensure(root, "small", spec, build)
    return Dataset("small", d / "files", sizes.small_count * sizes.small_size, sizes.small_count)


def _mixed_layout(total: int, seed: int = 9) -> list[tuple[str, int]]:
    """(relative path, size) pairs: half the bytes in 4 big files, 3/8 in medium
    files of 1-32 MiB, 1/8 in small files of 4-256 KiB, spread over two levels."""
    rng = random.Random(seed)
    out: list[tuple[str, int]] = []
    for i in range(4):
        out.append((f"big/b{i}.bin", total // 8))
    left = total * 3 // 8
    i = 0
    while left > 0:
        size = min(left, rng.randint(1 * MiB, 32 * MiB))
        out.append((f"medium/m{i % 5}/m{i:04d}.bin", size))
        left -= size
        i += 1
    left = total - sum(s for _, s in out)
    i = 0
    while left > 0:
        size = min(left, rng.randint(4 * KiB, 256 * KiB))
        out.append((f"small/s{i % 20:02d}/s{i:05d}.bin", size))
        left -= size
        i += 1
    return out


def mixed(root: Path, sizes: Sizes) -> Dataset:
    layout = _mixed_layout(sizes.mixed_total)
    spec = {"kind": "mixed", "total": sizes.mixed_total, "files": len(layout), "seed": 9}

    def build(t: Path) -> None:
        tree = t / "tree"
        for rel, size in layout:
            path = tree / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_random(path, size)

    d = _ensure(root, "mixed", spec, build)
    return Dataset("mixed", d / "tree", sizes.mixed_total, len(layout))


def sparse(root: Path, sizes: Sizes) -> Dataset:
    spec = {"kind": "sparse", "size": sizes.sparse}

    def build(t: Path) -> None:
        with open(t / "sparse.bin", "wb") as f:
            f.truncate(sizes.sparse)

    d = _ensure(root, "sparse", spec, build)
    return Dataset("sparse", d / "sparse.bin", sizes.sparse, 1)


def million(root: Path, sizes: Sizes) -> Dataset:
    """Empty files made with bare ``os.open``/``os.close`` (two syscalls a file,
    ~100k files/s): planning reads names and stats, not contents."""
    spec = {"kind": "million", "dirs": sizes.million_dirs, "per_dir": sizes.million_per_dir}

    def build(t: Path) -> None:
        flags = os.O_CREAT | os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC
        tree = t / "tree"
        tree.mkdir()
        for d in range(sizes.million_dirs):
            dpath = tree / f"d{d:04d}"
            dpath.mkdir()
            dfd = os.open(dpath, os.O_RDONLY | os.O_DIRECTORY)
            try:
                for i in range(sizes.million_per_dir):
                    os.close(os.open(f"f{i:05d}", flags, 0o644, dir_fd=dfd))
            finally:
                os.close(dfd)

    d = _ensure(root, "million", spec, build)
    return Dataset("million", d / "tree", 0, sizes.million_count)


def describe(sizes: Sizes) -> dict[str, object]:
    return asdict(sizes)
