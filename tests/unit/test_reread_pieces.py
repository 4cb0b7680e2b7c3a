"""A range whose reads keep disagreeing is re-read in smaller pieces, and every engine
retry asks the stores for a fresh connection (issue 15.5). POSIX to POSIX, with the
source wrapped so that long reads come back corrupted (as a fault per forwarded chunk
hits a long read far more often than a short one) and it carries the file's digest
(so the whole-file check catches the first attempt and the redo confirms reads)."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

from datamover.engine import copy_between
from datamover.errors import TransientError
from datamover.options import MiB, RetryPolicy, TransferOptions
from datamover.stores import open_store
from datamover.stores.base import ObjectInfo, Store

from faults import FaultyStore

PART = 4 * MiB


class LongReadsFlip(FaultyStore):
    """Every read longer than ``limit`` has one bit flipped; the source says its
    sha256; ``drops`` counts ``drop_connections`` calls."""

    def __init__(self, inner: Store, digests: dict[str, str], limit: int) -> None:
        super().__init__(inner)
        self.digests, self.limit = digests, limit
        self.rng = random.Random(7)
        self.drops = 0
        self.reads: list[int] = []

    def _with_digest(self, info: ObjectInfo) -> ObjectInfo:
        digest = self.digests.get(info.key.rsplit("/", 1)[-1])
        if digest is None:
            return info
        return dataclasses.replace(info, checksums={**info.checksums, "sha256": digest})

    def stat(self, key: str) -> ObjectInfo:
        return self._with_digest(self.inner.stat(key))

    def list(self, prefix: str, *, recursive: bool = True) -> Iterator[ObjectInfo]:
        return (self._with_digest(i) for i in self.inner.list(prefix, recursive=recursive))

    def readinto(
        self, key: str, offset: int, buf: memoryview, *, expect: ObjectInfo | None = None
    ) -> int:
        n = super().readinto(key, offset, buf, expect=expect)
        self.reads.append(n)
        if n > self.limit:
            bit = self.rng.randrange(n * 8)
            buf[bit // 8] ^= 1 << (bit % 8)
        return n

    def drop_connections(self) -> None:
        self.drops += 1


def test_disagreeing_reads_are_split_until_they_agree(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    data = random.Random(1).randbytes(3 * PART + 12345)
    (src / "big.bin").write_bytes(data)
    inner, src_key = open_store(str(src))
    flaky = LongReadsFlip(inner, {"big.bin": hashlib.sha256(data).hexdigest()}, 512 * 1024)
    flaky.fail("readinto", PART, times=2, error=lambda: TransientError("blip"))
    dst_store, dst_key = open_store(str(dst))
    opts = TransferOptions(
        manifest=str(tmp_path / "m.jsonl"),
        part_size=PART,
        multipart_threshold=PART,
        retry=RetryPolicy(attempts=5, base=0, cap=0),
    )
    report = copy_between(flaky, src_key, dst_store, dst_key, opts, sleep=lambda s: None)
    assert report.ok, report.failures
    assert (dst / "big.bin").read_bytes() == data
    assert min(flaky.reads) <= 512 * 1024  # the redo went down to pieces that read clean
    assert report.retries >= 2 and flaky.injected == 2
    assert flaky.drops >= 2  # each retry dropped the connection that failed


def test_reads_that_never_agree_fail_the_file_bounded(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    data = random.Random(2).randbytes(2 * PART)
    (src / "big.bin").write_bytes(data)
    (src / "small.txt").write_bytes(b"fine\n")
    inner, src_key = open_store(str(src))
    # Every read of any length is corrupted: nothing ever agrees.
    flaky = LongReadsFlip(inner, {"big.bin": hashlib.sha256(data).hexdigest()}, 0)
    dst_store, dst_key = open_store(str(dst))
    opts = TransferOptions(
        manifest=str(tmp_path / "m.jsonl"),
        part_size=PART,
        multipart_threshold=PART,
        retry=RetryPolicy(attempts=3, base=0, cap=0, file_attempts=2),
    )
    report = copy_between(flaky, src_key, dst_store, dst_key, opts, sleep=lambda s: None)
    assert [path for path, _ in report.failures] == ["big.bin"]
    assert "keep disagreeing" in str(report.failures[0][1])
    assert sorted(p.name for p in dst.rglob("*")) == ["small.txt"]  # nothing half-written
    # Bounded: per part, 2 + 4 x (2 + 4 x (2 + 4 x 3)) confirming reads at most.
    assert len(flaky.reads) < 2 * 2 * (1 + 2 + 4 * (2 + 4 * (2 + 4 * 3))) + 10
