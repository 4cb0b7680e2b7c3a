"""``--checksum``: one algorithm per manifest, recorded in its header.

* a manifest from before the header named one reads as sha256;
* an entry naming another algorithm than its header, or a resumed ``.partial`` of
  another algorithm, is refused with a one-line error (no mixing);
* ``jobs resume`` keeps the interrupted job's algorithm;
* the exports say in one line why a crc32c/blake3 manifest can't be a ``sha256sum
  -c`` file or a BagIt bag;
* the read-back before a download's commit (``engine.proof.PrefixReadBack``)
  finds a byte the disk holds differently from what was received, and a short file.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from datamover import engine
from datamover.checksums import digest_bytes
from datamover.engine.proof import PrefixReadBack
from datamover.errors import AuthError, DigestMismatch, ManifestError, UsageError
from datamover.job import TransferJob
from datamover.journal import Journal, journal_path
from datamover.manifest import read_manifest
from datamover.manifest.format import make_header
from datamover.manifest.sums import export_sums
from datamover.manifest.writer import ManifestWriter
from datamover.options import TransferOptions
from datamover.stores import open_store

from faults import FaultyStore

DM = [sys.executable, "-m", "datamover"]


def _write(path: Path, lines: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def _header(algorithm: str | None) -> dict[str, object]:
    h: dict[str, object] = {"type": "header", "format": "datamover-manifest", "format_version": 1}
    if algorithm is not None:
        h["algorithm"] = algorithm
    return h


def _entry(path: str, data: bytes, alg: str, **extra: object) -> dict[str, object]:
    digest = digest_bytes(alg, data).hex()
    return {
        "type": "file",
        "path": path,
        "size": len(data),
        "status": "ok",
        "digest": digest,
        **extra,
    }


def test_a_manifest_without_an_algorithm_is_sha256(tmp_path: Path) -> None:
    m = tmp_path / "old.jsonl"
    _write(m, [_header(None), _entry("a", b"abc", "sha256")])
    manifest = read_manifest(str(m))
    assert manifest.algorithm == "sha256"
    out = io.StringIO()
    assert export_sums(manifest, out) == 1
    assert out.getvalue() == digest_bytes("sha256", b"abc").hex() + "  a\n"


def test_an_entry_of_another_algorithm_is_refused(tmp_path: Path) -> None:
    m = tmp_path / "mixed.jsonl"
    _write(
        m,
        [
            _header("crc32c"),
            _entry("a", b"abc", "crc32c"),
            _entry("b", b"xyz", "sha256", algorithm="sha256"),
        ],
    )
    with pytest.raises(ManifestError, match="has a 'sha256' digest in a crc32c manifest"):
        read_manifest(str(m))


def test_resuming_a_manifest_of_another_algorithm_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "m.jsonl")

    def header(alg: str) -> dict[str, object]:
        return make_header(
            operation="copy",
            source="/a",
            destination="/b",
            algorithm=alg,
            part_algorithm="crc32c",
            options={},
            job_id="j1",
        )

    w = ManifestWriter(path, header("blake3"))
    w.suspend({"files_ok": 0, "files_failed": 0, "bytes": 0, "aborted": "stopped"})
    with pytest.raises(ManifestError, match="holds blake3 digests and this run computes sha256"):
        ManifestWriter(path, header("sha256"), resume=True)
    ManifestWriter(path, header("blake3"), resume=True).close(
        {"files_ok": 0, "files_failed": 0, "bytes": 0}
    )
    assert read_manifest(path).algorithm == "blake3"


@pytest.mark.parametrize("algorithm", ["crc32c", "blake3"])
def test_exports_of_a_manifest_no_tool_checks_say_so_in_one_line(
    tmp_path: Path, algorithm: str
) -> None:
    m = tmp_path / "m.jsonl"
    (tmp_path / "a").write_bytes(b"abc")
    _write(m, [_header(algorithm), _entry("a", b"abc", algorithm)])
    with pytest.raises(UsageError, match=f"a {algorithm} manifest has no coreutils checker"):
        export_sums(read_manifest(str(m)), io.StringIO())
    for argv in (
        ["manifest", "export", str(m)],
        ["manifest", "export", str(m), "--output", str(tmp_path / "SUMS")],
        ["manifest", "export", str(m), "--format", "bagit", "--output", str(tmp_path / "bag")],
    ):
        done = subprocess.run([*DM, *argv], capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert algorithm in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "bag").exists()
    assert not (tmp_path / "SUMS").exists()  # refused before anything was written
    assert sorted(os.listdir(tmp_path)) == ["a", "m.jsonl"]


def test_jobs_resume_keeps_the_algorithm(tmp_path: Path) -> None:
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    dst.mkdir()
    files = {f"f{i}": os.urandom(100 + i) for i in range(4)}
    files["big"] = os.urandom(3 * 1024 * 1024 + 5)
    for name, data in files.items():
        (src / name).write_bytes(data)
    manifest = tmp_path / "m.jsonl"
    options = TransferOptions(
        transfers=1,
        state_dir=str(state),
        manifest=str(manifest),
        checksum="blake3",
        part_size=1024 * 1024,
        multipart_threshold=1024 * 1024,
    )
    job = TransferJob("copy", str(src), str(dst), options)
    src_store, src_key = open_store(str(src))
    dst_store, dst_key = open_store(str(dst))
    faulty = FaultyStore(dst_store)
    faulty.fail("put", 0, times=1, error=lambda: AuthError("token expired"))
    with pytest.raises(AuthError):
        engine.copy_between(src_store, src_key, faulty, dst_key, options, request=job.to_record())
    journal = Journal(journal_path(str(state)))
    (record,) = journal.jobs()
    journal.close()
    assert record.state == "aborted"
    resumed = subprocess.run(
        [*DM, "jobs", "resume", record.job_id, "--state-dir", str(state), "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
    m = read_manifest(str(manifest))
    assert m.algorithm == "blake3"
    assert {e.path: e.digest for e in m.entries} == {
        name: digest_bytes("blake3", data).hex() for name, data in files.items()
    }
    assert (dst / "big").read_bytes() == files["big"]


def _reader(data: bytearray):  # type: ignore[no-untyped-def]
    def read_at(offset: int, buf: memoryview) -> int:
        piece = data[offset : offset + len(buf)]
        buf[: len(piece)] = piece
        return len(piece)

    return read_at


def test_read_back_before_commit_checks_every_part_and_digests_once() -> None:
    part = 1000
    data = bytearray(os.urandom(3 * part + 7))
    received = [digest_bytes("crc32c", data[i : i + part]).hex() for i in range(0, len(data), part)]

    def run(disk: bytearray) -> dict[str, str]:
        return PrefixReadBack(
            _reader(disk),
            size=len(data),
            part_size=part,
            received=received,
            part_algorithm="crc32c",
            algorithms=("sha256", "crc32c"),
            buffer=lambda: memoryview(bytearray(384)),  # reads that straddle parts
            where="/x",
            key="x",
        ).digests()

    got = run(data)
    assert got == {a: digest_bytes(a, data).hex() for a in ("sha256", "crc32c")}
    flipped = bytearray(data)
    flipped[2 * part + 3] ^= 0x10
    with pytest.raises(DigestMismatch, match="part 2 holds crc32c"):
        run(flipped)
    with pytest.raises(DigestMismatch, match="it ends at"):
        run(data[:-1])


def test_a_part_the_disk_holds_differently_is_found_and_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first write of one part lands with a flipped byte: the read-back before the
    rename finds it (that part's CRC32C), the temp file goes, the file is sent again
    and ends right, recorded ``verified: readback`` with the digest of its bytes."""
    import datamover
    from datamover.stores.posix import writer as posix_writer

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    data = os.urandom(3 * 1024 * 1024 + 11)
    (src / "big").write_bytes(data)
    real = posix_writer.write_sparse
    flipped: list[int] = []
    offsets: list[int] = []

    def flipping(fd: int, view: memoryview, offset: int, lock: object = None) -> int:
        offsets.append(offset)
        if not flipped and offset > 0:
            flipped.append(offset)
            bad = bytearray(view)
            bad[5] ^= 0x04
            return real(fd, memoryview(bad), offset, lock)
        return real(fd, view, offset, lock)

    monkeypatch.setattr(posix_writer, "write_sparse", flipping)
    manifest = tmp_path / "m.jsonl"
    report = datamover.copy(
        str(src),
        str(dst),
        manifest=str(manifest),
        part_size=1024 * 1024,
        multipart_threshold=1024 * 1024,
        checksum="sha256",
    )
    assert flipped and report.ok, report.failures
    assert (dst / "big").read_bytes() == data
    (entry,) = read_manifest(str(manifest)).entries
    assert entry.verified == "readback"
    assert entry.digest == digest_bytes("sha256", data).hex()
    assert offsets.count(flipped[0]) == 2  # written again, by the redo
