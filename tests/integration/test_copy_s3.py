"""POSIX -> S3 -> POSIX round trips against SeaweedFS, moto and Ceph RGW over HTTP, and
Ceph RGW over https (its self-signed CA in ``AWS_CA_BUNDLE``, issue #21)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

import datamover
from datamover.checksums import digest_bytes
from datamover.engine import copy_between
from datamover.errors import SourceChanged, TransientError
from datamover.options import MiB, RetryPolicy, TransferOptions
from datamover.stores import open_store
from datamover.stores.base import ObjectInfo, Store

from faults import FaultyStore
from serverenv import ServerEnv, use_server

pytestmark = pytest.mark.cloud

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "manifests" / "manifest.schema.json").read_text())
PART = 5 * MiB
DM = [sys.executable, "-m", "datamover"]


@pytest.fixture(
    params=[
        "seaweed",
        "moto",
        pytest.param("ceph", marks=pytest.mark.ceph),
        pytest.param("ceph_tls", marks=pytest.mark.ceph, id="ceph-tls"),
    ]
)
def s3(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    """The session's ``s3`` servers, plus Ceph RGW over https: copy and verify (the CLI
    subprocesses too) over TLS."""
    return use_server(request.getfixturevalue(request.param), monkeypatch)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _validate(manifest: str) -> list[dict]:
    lines = [json.loads(line) for line in Path(manifest).read_text().splitlines()]
    for line in lines:
        jsonschema.validate(line, SCHEMA)
    assert lines[0]["type"] == "header" and lines[-1]["type"] == "summary"
    return lines


def _opts(tmp_path: Path, name: str, **kw: object) -> TransferOptions:
    return TransferOptions(manifest=str(tmp_path / f"{name}.jsonl"), **kw)  # type: ignore[arg-type]


def test_round_trip_edge_sizes_and_names(s3: ServerEnv, tmp_path: Path) -> None:
    src = tmp_path / "src"
    sizes = {
        "zero.bin": 0,
        "one.bin": 1,
        "part-minus-1.bin": PART - 1,
        "part.bin": PART,
        "part-plus-1.bin": PART + 1,
        "two-parts-plus-1.bin": 2 * PART + 1,
    }
    for name, size in sizes.items():
        _write(src / name, os.urandom(size))
    _write(src / "deep" / "er" / "and deeper" / "x.txt", b"nested\n")
    _write(src / "ünïcødé dir" / "naïve file ☃.txt", "snow ☃\n".encode())
    _write(src / "with space.txt", b"space\n")
    opts = _opts(tmp_path, "up", part_size=PART, multipart_threshold=PART - 1)

    up = datamover.copy(str(src), s3.url("run"), opts)
    assert up.ok and up.files_ok == len(sizes) + 3
    lines = _validate(up.manifest)
    files = {line["path"]: line for line in lines if line["type"] == "file"}
    assert files["two-parts-plus-1.bin"]["part_size"] == PART
    assert len(files["two-parts-plus-1.bin"]["parts"]) == 3
    for name in sizes:
        assert files[name]["digest"] == hashlib.sha256((src / name).read_bytes()).hexdigest()

    back = tmp_path / "back"
    down = datamover.copy(s3.url("run"), str(back), _opts(tmp_path, "down", part_size=PART))
    assert down.ok
    _validate(down.manifest)
    assert _tree(back) == _tree(src)
    assert datamover.verify(up.manifest).passed
    assert datamover.verify(down.manifest).passed

    # The whole-file digest lives on an object written by one PutObject, so later runs
    # need not re-read it. S3 takes a multipart object's metadata when its upload
    # starts, before a local file's digest is known, and nothing writes it twice: a
    # digest there is right when present, and the store's full-object CRC (where it
    # checks one) is the object's own.
    store, _ = open_store(s3.url())
    info = store.stat("run/part-minus-1.bin")
    assert info.checksums["sha256"] == files["part-minus-1.bin"]["digest"]
    big = store.stat("run/two-parts-plus-1.bin")
    data = (src / "two-parts-plus-1.bin").read_bytes()
    assert (
        big.checksums.get("sha256", files["two-parts-plus-1.bin"]["digest"])
        == hashlib.sha256(data).hexdigest()
    )
    for alg, value in big.provider_checksums.items():
        assert value == digest_bytes(alg, data).hex()
    # POSIX mtime travelled in metadata and came back to the nanosecond.
    assert (back / "one.bin").stat().st_mtime_ns == (src / "one.bin").stat().st_mtime_ns


@pytest.mark.slow
def test_100mib_file_with_8mib_parts(s3: ServerEnv, tmp_path: Path) -> None:
    src = _write(tmp_path / "big" / "data.h5", os.urandom(100 * MiB))
    up = datamover.copy(str(src.parent), s3.url("big"), _opts(tmp_path, "up", part_size=8 * MiB))
    assert up.ok
    entry = next(line for line in _validate(up.manifest) if line["type"] == "file")
    assert entry["part_size"] == 8 * MiB and len(entry["parts"]) == 13
    back = tmp_path / "back"
    assert datamover.copy(s3.url("big"), str(back), _opts(tmp_path, "down")).ok
    assert (back / "data.h5").read_bytes() == src.read_bytes()


def test_sha256sum_export_checks_with_coreutils(s3: ServerEnv, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(5):
        _write(src / f"d{i % 2}" / f"f{i}.dat", os.urandom(1000 * i))
    up = datamover.copy(str(src), s3.url("s"), _opts(tmp_path, "m"))
    back = tmp_path / "back"
    down = datamover.copy(s3.url("s"), str(back), _opts(tmp_path, "d"))
    assert up.ok and down.ok
    sums = tmp_path / "SHA256SUMS"
    rc = subprocess.run(
        [*DM, "manifest", "export", up.manifest, "--format", "sha256sum", "-o", str(sums)],
        capture_output=True,
        text=True,
    )
    assert rc.returncode == 0, rc.stderr
    check = subprocess.run(["sha256sum", "-c", str(sums)], cwd=back, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count(": OK") == 5


def test_verify_names_overwritten_object(s3: ServerEnv, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write(src / "keep.txt", b"a" * 100)
    _write(src / "victim.txt", b"b" * 100)
    up = datamover.copy(str(src), s3.url("v"), _opts(tmp_path, "m"))
    assert datamover.verify(up.manifest).passed
    store, _ = open_store(s3.url())
    store.put("v/victim.txt", b"c" * 100)  # same size, other bytes
    report = datamover.verify(up.manifest)
    assert not report.passed
    assert [p for p, _ in report.mismatched] == ["victim.txt"]
    store.delete("v/keep.txt")
    cli = subprocess.run([*DM, "verify", up.manifest], capture_output=True, text=True)
    assert cli.returncode == 1
    assert "MISMATCH victim.txt" in cli.stdout and "MISSING keep.txt" in cli.stdout


def test_forced_part_failure_aborts_and_leaves_nothing(s3: ServerEnv, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write(src / "big.bin", os.urandom(3 * PART))
    _write(src / "small.txt", b"fine\n")
    dst_store, _ = open_store(s3.url())
    faulty = FaultyStore(dst_store)
    faulty.fail("write_part", 1, times=99, error=lambda: TransientError("injected"))
    src_store, src_key = open_store(str(src))
    opts = _opts(tmp_path, "m", part_size=PART, retry=RetryPolicy(attempts=3, base=0.0, cap=0.0))
    report = copy_between(src_store, src_key, faulty, "f/", opts, sleep=lambda s: None)
    assert report.files_failed == 1 and report.files_ok == 1
    assert faulty.injected == 3 and faulty.aborts == 1
    keys = [i.key for i in dst_store.list("f/")]
    assert keys == ["f/small.txt"]
    uploads = dst_store.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])  # type: ignore[attr-defined]
    assert uploads == []
    lines = _validate(report.manifest or "")
    failed = [x for x in lines if x.get("status") == "failed"]
    assert [x["path"] for x in failed] == ["big.bin"] and "injected" in failed[0]["error"]


def test_transient_part_failure_is_retried(s3: ServerEnv, tmp_path: Path) -> None:
    src = tmp_path / "src"
    data = os.urandom(2 * PART + 7)
    _write(src / "big.bin", data)
    dst_store, _ = open_store(s3.url())
    faulty = FaultyStore(dst_store)
    faulty.fail("write_part", 0, times=2, error=lambda: TransientError("blip"))
    src_store, src_key = open_store(str(src))
    opts = _opts(tmp_path, "m", part_size=PART, retry=RetryPolicy(attempts=3, base=0, cap=0))
    report = copy_between(src_store, src_key, faulty, "r/", opts, sleep=lambda s: None)
    assert report.ok and report.retries == 2
    assert dst_store.read("r/big.bin") == data


class _RecordsRefusals(FaultyStore):
    """Notes each read the store refused as of another version (``SourceChanged``)."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.refused = 0

    def readinto(
        self, key: str, offset: int, buf: memoryview, *, expect: ObjectInfo | None = None
    ) -> int:
        try:
            return super().readinto(key, offset, buf, expect=expect)
        except SourceChanged:
            self.refused += 1
            raise


def test_an_object_replaced_mid_download_is_redone_whole(s3: ServerEnv, tmp_path: Path) -> None:
    """A download's ranged GETs are pinned to the ETag its stat saw (If-Match): once
    another client replaces the object, the next GET of the old one is refused (before
    its bytes are mixed in, not after the whole object was read), and the file is
    downloaded again, the new object whole."""
    old, new = os.urandom(4 * PART + 11), os.urandom(4 * PART + 11)
    store, _ = open_store(s3.url())
    store.put("mid/big.bin", old)
    source = _RecordsRefusals(store)
    reads = [0]

    def before(op: str, key: str) -> None:
        if op == "readinto":
            reads[0] += 1
            if reads[0] == 2:
                store.put("mid/big.bin", new)

    source.before = before
    dst = tmp_path / "dst"
    dst_store, dst_key = open_store(str(dst))
    opts = _opts(tmp_path, "m", part_size=PART, multipart_threshold=PART)
    report = copy_between(source, "mid/", dst_store, dst_key, opts, sleep=lambda s: None)
    assert report.ok, report.failures
    assert source.refused >= 1
    assert (dst / "big.bin").read_bytes() == new
    (line,) = [x for x in _validate(report.manifest or "") if x.get("path") == "big.bin"]
    assert line["status"] == "ok" and line["digest"] == hashlib.sha256(new).hexdigest()


def test_datamover_open_reads_one_version(s3: ServerEnv) -> None:
    """``datamover.open(..., "rb")`` reads the version it opened: after another client
    replaced the object, its next read raises SourceChanged instead of handing the new
    object's bytes on after the old one's; opened again, it reads the new one."""
    old, new = os.urandom(3 * MiB), os.urandom(3 * MiB)
    store, _ = open_store(s3.url())
    store.put("open/v.bin", old)
    with datamover.open(s3.url("open/v.bin"), "rb", block_size=MiB) as fh:
        assert fh.read(MiB) == old[:MiB]
        store.put("open/v.bin", new)
        with pytest.raises(SourceChanged):
            fh.read(MiB)
    with datamover.open(s3.url("open/v.bin"), "rb", block_size=MiB) as fh:
        assert fh.read() == new
