"""``--checksum sha256|crc32c|blake3`` end to end on a real S3 server (SeaweedFS): the
manifest records the algorithm, its digests are that algorithm's over the bytes
(a large file's computed once, in the read-back before its commit, on the way
down), and ``verify`` of either side finds a byte flipped after the copy."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import datamover
from datamover import cli
from datamover.checksums import digest_bytes
from datamover.manifest import read_manifest
from datamover.options import MiB

from serverenv import ServerEnv

pytestmark = pytest.mark.cloud

PART = 5 * MiB


def _tree(root: Path) -> dict[str, bytes]:
    files = {"small.bin": os.urandom(3000), "big.bin": os.urandom(2 * PART + 17)}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def _copy(src: str, dst: str, manifest: Path, algorithm: str) -> None:
    report = datamover.copy(
        src,
        dst,
        manifest=str(manifest),
        checksum=algorithm,
        part_size=PART,
        multipart_threshold=PART,
    )
    assert report.ok, report.failures


def _check_manifest(manifest: Path, files: dict[str, bytes], algorithm: str) -> None:
    m = read_manifest(str(manifest))
    assert m.algorithm == algorithm
    got = {e.path: e.digest for e in m.entries}
    assert got == {name: digest_bytes(algorithm, data).hex() for name, data in files.items()}


def _verify(manifest: Path, url: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["verify", str(manifest), url])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("algorithm", ["sha256", "crc32c", "blake3"])
def test_up_and_down_with_each_algorithm_and_verify_finds_a_flipped_byte(
    seaweed_env: ServerEnv,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    algorithm: str,
) -> None:
    files = _tree(tmp_path / "src")
    up, down = tmp_path / "up.jsonl", tmp_path / "down.jsonl"
    url = seaweed_env.url("t/")
    _copy(str(tmp_path / "src"), url, up, algorithm)
    _check_manifest(up, files, algorithm)
    _copy(url, str(tmp_path / "back") + "/", down, algorithm)
    _check_manifest(down, files, algorithm)
    assert {e.verified for e in read_manifest(str(down)).entries} == {"readback"}
    for name, data in files.items():
        assert (tmp_path / "back" / name).read_bytes() == data

    assert _verify(up, url, capsys)[0] == 0
    assert _verify(down, str(tmp_path / "back"), capsys)[0] == 0

    # A byte flipped in the local copy (same size, same mtime).
    big = tmp_path / "back" / "big.bin"
    st = big.stat()
    flipped = bytearray(files["big.bin"])
    flipped[PART + 1] ^= 0x01
    big.write_bytes(flipped)
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    code, out = _verify(down, str(tmp_path / "back"), capsys)
    assert code == 1 and "MISMATCH big.bin" in out, out

    # A byte flipped in the object (same size, its digest label left as it was).
    data = files["small.bin"]
    client = seaweed_env.server.client()  # type: ignore[attr-defined]
    try:
        client.put_object(
            Bucket=seaweed_env.bucket,
            Key="t/small.bin",
            Body=bytes([data[0] ^ 0x80]) + data[1:],
            Metadata={"datamover-sha256": hashlib.sha256(data).hexdigest()},
        )
    finally:
        client.close()
    code, out = _verify(up, url, capsys)
    assert code == 1 and "MISMATCH small.bin" in out, out
