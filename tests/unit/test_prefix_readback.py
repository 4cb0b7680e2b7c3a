"""The read-back of a download's temp file runs while later parts still arrive
(``engine.proof.PrefixReadBack``, issue #18): parts written in any order are read back
in file order as the written prefix grows, each part checked against the digest it
arrived with; a difference found at any point fails the file before its commit, and
nothing reads the temp file once the file failed."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import datamover
from datamover.checksums import crc32c_combine, digest_bytes
from datamover.engine.proof import PrefixReadBack
from datamover.errors import DigestMismatch
from datamover.manifest import read_manifest

PART = 1000


def _setup(
    data: bytearray, buf: int = 384, algorithms: tuple[str, ...] = ("sha256", "crc32c")
) -> tuple[PrefixReadBack, list[int], list[str]]:
    reads: list[int] = []
    received = [digest_bytes("crc32c", data[i : i + PART]).hex() for i in range(0, len(data), PART)]

    def read_at(offset: int, view: memoryview) -> int:
        reads.append(offset)
        piece = data[offset : offset + len(view)]
        view[: len(piece)] = piece
        return len(piece)

    back = PrefixReadBack(
        read_at,
        size=len(data),
        part_size=PART,
        received=received,
        part_algorithm="crc32c",
        algorithms=algorithms,
        buffer=lambda: memoryview(bytearray(buf)),  # reads straddle parts
        where="/x",
        key="x",
    )
    return back, reads, received


def test_parts_written_out_of_order_are_read_back_in_order_as_the_prefix_grows() -> None:
    data = bytearray(os.urandom(5 * PART + 7))
    back, reads, _ = _setup(data)
    back.written(2)
    back.catch_up()
    assert reads == [] and back.done == 0  # part 0 not written: nothing to read yet
    back.written(0)
    back.catch_up()
    assert back.done == 1 and max(reads) < PART
    back.written(1)
    back.catch_up()
    assert back.done == 3  # parts 1 and 2, now contiguous
    back.written(4)
    back.written(5)
    back.catch_up()
    assert back.done == 3
    back.written(3)
    got = back.digests()  # the commit's caller reads what is left
    assert got == {a: digest_bytes(a, data).hex() for a in ("sha256", "crc32c")}
    assert sorted(set(reads)) == reads  # every byte once, in file order
    assert reads[-1] < len(data)


def test_a_difference_found_while_catching_up_fails_the_commit_too() -> None:
    data = bytearray(os.urandom(4 * PART))
    back, _, _ = _setup(data)
    data[PART + 10] ^= 0x01  # the disk holds other bytes than part 1 arrived with
    back.written(0)
    back.written(1)
    with pytest.raises(DigestMismatch, match="part 1 holds crc32c"):
        back.catch_up()
    back.written(2)
    back.catch_up()  # found already: nothing more is read
    back.written(3)
    with pytest.raises(DigestMismatch, match="part 1 holds crc32c"):
        back.digests()


def test_parts_not_yet_read_back_are_checked_by_the_commit() -> None:
    data = bytearray(os.urandom(3 * PART + 1))
    back, _, _ = _setup(data)
    back.written(0)
    back.catch_up()
    for i in (1, 2, 3):
        back.written(i)
    data[3 * PART] ^= 0x80  # the last part, never caught up: the commit's read finds it
    with pytest.raises(DigestMismatch, match="part 3 holds crc32c"):
        back.digests()


def test_a_file_shorter_than_received_is_caught() -> None:
    data = bytearray(os.urandom(3 * PART))
    back, _, _ = _setup(data)
    del data[-1]
    back.written(0)
    back.catch_up()
    back.written(1)
    back.written(2)
    with pytest.raises(DigestMismatch, match="it ends at 2999 bytes, not the 3000"):
        back.digests()


def test_close_waits_for_the_reader_and_ends_the_read_back() -> None:
    data = bytearray(os.urandom(2 * PART))
    started, release = threading.Event(), threading.Event()
    reads: list[int] = []
    received = [digest_bytes("crc32c", data[i : i + PART]).hex() for i in range(0, len(data), PART)]

    def slow(offset: int, view: memoryview) -> int:
        reads.append(offset)
        started.set()
        assert release.wait(10)
        view[:] = data[offset : offset + len(view)]
        return len(view)

    back = PrefixReadBack(
        slow,
        size=len(data),
        part_size=PART,
        received=received,
        part_algorithm="crc32c",
        algorithms=("sha256",),
        buffer=lambda: memoryview(bytearray(PART)),
        where="/x",
        key="x",
    )
    back.written(0)
    reader = threading.Thread(target=back.catch_up)
    reader.start()
    assert started.wait(10)
    closed = threading.Event()
    closer = threading.Thread(target=lambda: (back.close(), closed.set()))
    closer.start()
    assert not closed.wait(0.2)  # the reader still reads: close() waits
    release.set()
    reader.join(10)
    closer.join(10)
    assert closed.is_set()
    back.written(1)
    back.catch_up()
    assert reads == [0]  # nothing reads the temp file once the read-back ended


def test_a_download_reads_each_part_back_right_after_writing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One transfer thread: part i is read back before part i + 1 is written, so the
    commit waits for no whole-file pass; the manifest's digest is of the bytes read."""
    from datamover.stores.posix.writer import PosixWriter

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    data = os.urandom(4 * 1024 * 1024 + 5)
    (src / "big").write_bytes(data)
    events: list[tuple[str, int]] = []
    write, read_at = PosixWriter.write_part, PosixWriter.read_at

    def writing(self: PosixWriter, index: int, buf, digests):  # type: ignore[no-untyped-def]
        events.append(("w", index * self.part_size))
        return write(self, index, buf, digests)

    def reading(self: PosixWriter, offset: int, buf: memoryview) -> int:
        events.append(("r", offset))
        return read_at(self, offset, buf)

    monkeypatch.setattr(PosixWriter, "write_part", writing)
    monkeypatch.setattr(PosixWriter, "read_at", reading)
    manifest = tmp_path / "m.jsonl"
    report = datamover.copy(
        str(src),
        str(dst),
        manifest=str(manifest),
        part_size=1024 * 1024,
        multipart_threshold=1024 * 1024,
        transfers=1,
        checksum="sha256",
    )
    assert report.ok, report.failures
    assert (dst / "big").read_bytes() == data
    mib = 1024 * 1024
    writes = [o for kind, o in events if kind == "w"]
    assert writes == [i * mib for i in range(5)]
    for i in range(4):  # part i is read back before part i + 1 is written
        assert events.index(("r", i * mib)) < events.index(("w", (i + 1) * mib))
    (entry,) = read_manifest(str(manifest)).entries
    assert entry.verified == "readback"
    assert entry.digest == digest_bytes("sha256", data).hex()


def test_a_reader_that_breaks_leaves_nobody_waiting_and_no_digest() -> None:
    data = bytearray(os.urandom(2 * PART))
    back, _, _ = _setup(data)
    broken = [True]
    real = back._read_at

    def flaky(offset: int, view: memoryview) -> int:
        if broken and broken.pop():
            raise RuntimeError("a bug, not a mismatch")
        return real(offset, view)

    back._read_at = flaky
    back.written(0)
    with pytest.raises(RuntimeError):
        back.catch_up()
    back.written(1)
    back.catch_up()  # nothing more is read back
    with pytest.raises(RuntimeError):  # never digests of part of the file
        back.digests()


@pytest.mark.parametrize(
    "sizes", [(1, 1), (1000, 7), (5, 0), (0, 5), (4 * 1024 * 1024, 3), (3, 1 << 20)]
)
def test_crc32c_combine_is_the_crc32c_of_the_concatenation(sizes: tuple[int, int]) -> None:
    a, b = os.urandom(sizes[0]), os.urandom(sizes[1])

    def crc(data: bytes) -> int:
        return int(digest_bytes("crc32c", data).hex(), 16)

    assert crc32c_combine(crc(a), crc(b), len(b)) == crc(a + b)


def test_a_crc32c_manifest_takes_one_crc32c_pass_in_the_read_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole-file CRC32C is combined from the parts' CRC32Cs read back: each byte
    is CRC32C'd once there, and the digest is still that of the whole file."""
    from datamover import checksums

    data = bytearray(os.urandom(5 * PART + 7))
    back, _, _ = _setup(data, algorithms=("crc32c",))
    want = digest_bytes("crc32c", data).hex()
    passed: list[int] = []
    real = checksums._Crc32c.update

    def counting(self: object, piece: memoryview) -> None:
        passed.append(len(piece))
        real(self, piece)  # type: ignore[arg-type]

    monkeypatch.setattr(checksums._Crc32c, "update", counting)
    for i in range(6):
        back.written(i)
    back.catch_up()
    assert back.digests() == {"crc32c": want}
    assert sum(passed) == len(data)  # the part checks only
