"""What covered each file's bytes, recorded (docs/SEMANTICS.md, "What ok means"):

* the manifest says per file which check covered its stored bytes (``verified``) and
  the provider's whole-object checksums (``provider_checksums``);
* a write no check covered (moto checks nothing) is read back by default, failed
  with ``--unverified fail``, recorded ``verified: none`` with ``accept``;
* ``verify --no-download`` proves a destination by the store's own checksums alone,
  and catches an object overwritten (by the SDK) with other bytes of the same size on
  S3 (SeaweedFS), Azure (Azurite) and GCS (fake-gcs-server);
* ``verify`` counts a digest mismatch as mismatched, not unreadable.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

import datamover
from datamover import cli
from datamover.manifest import read_manifest
from datamover.options import MiB

from serverenv import ServerEnv, use_server

pytestmark = pytest.mark.cloud

PART = 5 * MiB


def _tree(root: Path) -> dict[str, bytes]:
    files = {
        "small.bin": os.urandom(1000),
        "sub/other.bin": os.urandom(70_000),
        "big.bin": os.urandom(2 * PART + 3),
        "empty.bin": b"",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def _copy(tmp_path: Path, dst: str, **options: Any) -> tuple[Any, dict[str, Any]]:
    files = _tree(tmp_path / "src")
    manifest = str(tmp_path / "m.jsonl")
    report = datamover.copy(
        str(tmp_path / "src"),
        dst,
        manifest=manifest,
        part_size=PART,
        multipart_threshold=PART,
        **options,
    )
    entries = {e.path: e for e in read_manifest(manifest).entries}
    return report, {"files": files, "entries": entries, "manifest": manifest}


def test_seaweed_records_the_store_check_and_its_checksums(
    seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    report, got = _copy(tmp_path, seaweed_env.url("t"))
    assert report.ok, report.failures
    for name, e in got["entries"].items():
        assert e.verified in ("crc64nvme", "crc32c", "md5"), (name, e.verified)
        assert e.provider_checksums, name  # what verify --no-download compares


def test_moto_checks_nothing_so_every_file_is_read_back(
    moto_env: ServerEnv, tmp_path: Path
) -> None:
    report, got = _copy(tmp_path, moto_env.url("t"))
    assert report.ok, report.failures
    assert {e.verified for e in got["entries"].values()} == {"readback"}
    assert report.files_unverified == 0
    # bytes_moved counts what was sent (the read-back is not a transfer)
    assert report.bytes_moved == sum(len(d) for d in got["files"].values())


def test_unverified_accept_says_none_and_counts_them(moto_env: ServerEnv, tmp_path: Path) -> None:
    report, got = _copy(tmp_path, moto_env.url("t"), unverified="accept")
    assert report.ok
    assert {e.verified for e in got["entries"].values()} == {"none"}
    assert all(not e.provider_checksums for e in got["entries"].values())
    assert report.files_unverified == len(got["files"])
    summary = read_manifest(got["manifest"]).summary
    assert summary is not None and summary["files_unverified"] == len(got["files"])


def test_unverified_fail_fails_each_file_named_and_leaves_nothing(
    moto_env: ServerEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _tree(tmp_path / "src")
    code = cli.main(
        [
            "copy",
            str(tmp_path / "src"),
            moto_env.url("t"),
            "--unverified",
            "fail",
            "--manifest",
            str(tmp_path / "m.jsonl"),
            "--part-size",
            "5MiB",
            "--multipart-threshold",
            "5MiB",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    for name in ("small.bin", "sub/other.bin", "big.bin"):
        assert name in err
    assert "--unverified fail" in err
    client = moto_env.server.client()  # type: ignore[attr-defined]
    try:
        listed = client.list_objects_v2(Bucket=moto_env.bucket).get("Contents", [])
    finally:
        client.close()
    assert listed == []  # nothing unproven stays visible


def _overwrite(env: ServerEnv, key: str, data: bytes) -> None:
    """Replace ``key`` with ``data`` through the provider's own SDK (not datamover)."""
    server: Any = env.server
    if env.scheme == "s3":
        client = server.client()
        try:
            client.put_object(Bucket=env.bucket, Key=key, Body=data)
        finally:
            client.close()
    elif env.scheme == "az":
        service = server.client()
        try:
            blob = service.get_blob_client(env.bucket, key)
            blob.upload_blob(data, overwrite=True)
        finally:
            service.close()
    else:
        client = server.client()
        client.bucket(env.bucket).blob(key).upload_from_string(data)


def _verify(
    manifest: str, url: str, *flags: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["verify", manifest, url, *flags])
    return code, capsys.readouterr().out


@pytest.fixture(params=["seaweed", "azurite", "gcs"])
def cloud(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    return use_server(request.getfixturevalue(request.param), monkeypatch)


def test_verify_no_download_catches_a_same_size_overwrite(
    cloud: ServerEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = cloud
    url = env.url("t")
    report, got = _copy(tmp_path, url)
    assert report.ok, report.failures
    manifest = got["manifest"]
    # Before: what the store's checksums prove passes; the rest is read on request.
    code, out = _verify(manifest, url, "--no-download", "--allow-download", capsys=capsys)
    assert code == 0, out
    report_nd = datamover.verify(manifest, url, no_download=True)
    names = set(got["files"])
    if env.scheme != "az":  # S3 and GCS report a checksum of every object they hold
        assert report_nd.passed, report_nd.unproven
        assert report_nd.by_checksum == len(names)
    else:  # Azure: a blob's Content-MD5 is settable by any client, never proof
        assert report_nd.by_checksum == 0
        assert {p for p, _ in report_nd.unproven} == names
    assert report_nd.bytes == 0  # nothing was read

    small = got["files"]["small.bin"]
    _overwrite(env, "t/small.bin", bytes(b ^ 0xFF for b in small))
    code, out = _verify(manifest, url, "--no-download", capsys=capsys)
    assert code == 1, out
    assert "MISMATCH small.bin" in out, out
    assert "unproven" in out
    after = datamover.verify(manifest, url, no_download=True)
    assert [p for p, _ in after.mismatched] == ["small.bin"]
    assert after.bytes == 0

    big = got["files"]["big.bin"]
    _overwrite(env, "t/big.bin", big[:-1] + bytes([big[-1] ^ 1]))
    again = datamover.verify(manifest, url, no_download=True)
    caught = {p for p, _ in again.mismatched} | {p for p, _ in again.unproven}
    assert {"big.bin", "small.bin"} <= caught, (again.mismatched, again.unproven)
    assert not again.passed
    read = datamover.verify(manifest, url, no_download=True, allow_download=True)
    assert {p for p, _ in read.mismatched} == {"big.bin", "small.bin"}


def test_verify_counts_a_digest_mismatch_as_mismatched(
    seaweed_env: ServerEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The object's own sha256 label says the sent bytes; its bytes are others (same
    size): the read fails with a DigestMismatch, which is a mismatch, not unreadable."""
    report, got = _copy(tmp_path, seaweed_env.url("t"))
    assert report.ok
    data = got["files"]["sub/other.bin"]
    client = seaweed_env.server.client()  # type: ignore[attr-defined]
    try:
        client.put_object(
            Bucket=seaweed_env.bucket,
            Key="t/sub/other.bin",
            Body=bytes(reversed(data)),
            Metadata={"datamover-sha256": hashlib.sha256(data).hexdigest()},
        )
    finally:
        client.close()
    code, out = _verify(got["manifest"], seaweed_env.url("t"), capsys=capsys)
    assert code == 1
    assert "MISMATCH sub/other.bin" in out, out
    assert "1 mismatched, 0 unreadable" in out, out


@pytest.mark.parametrize("server", ["azurite", "seaweed", "gcs"])
def test_small_downloads_are_read_back_before_their_rename(
    server: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Into local files, a small download is compared with what arrived while it is a
    temp file (``PosixStore.put_read_back``): recorded ``readback`` with no read of
    the renamed file; modes and times are restored as before."""
    from datamover.engine.proof import Prover

    env = use_server(request.getfixturevalue(server), monkeypatch)
    report, got = _copy(tmp_path, env.url("t/"))
    assert report.ok, report.failures
    after: list[str] = []
    real = Prover._read_back

    def counted(self: Prover, job: Any, size: int, retrying: Any) -> tuple[str, int]:
        after.append(job.dst_key)
        return real(self, job, size, retrying)

    monkeypatch.setattr(Prover, "_read_back", counted)
    out = tmp_path / "out"
    manifest = str(tmp_path / "down.jsonl")
    down = datamover.copy(
        env.url("t/"), str(out), manifest=manifest, part_size=PART, multipart_threshold=PART
    )
    assert down.ok, down.failures
    assert after == []  # small ones before the rename, the big one before its rename too
    entries = read_manifest(manifest).entries
    assert {e.path: e.verified for e in entries} == dict.fromkeys(got["files"], "readback")
    for name, data in got["files"].items():
        assert (out / name).read_bytes() == data
        src = (tmp_path / "src" / name).stat()
        assert (out / name).stat().st_mtime_ns == src.st_mtime_ns
        assert (out / name).stat().st_mode == src.st_mode
