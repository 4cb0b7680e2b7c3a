"""A multipart download from a bucket (SeaweedFS) is read back from its temp file
while later parts still arrive (``engine.proof.PrefixReadBack``, issue #18): a byte
that differs on disk from what arrived, in the first, a middle or the last part, is
found before the rename, the temp file goes and the file is downloaded again, ending
right and recorded ``verified: readback``; a download killed mid-way (its read-back
under way) leaves nothing visible under the file's name, and the next run finishes it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from killstorm import DM, temp_files

import datamover
from datamover.checksums import digest_bytes
from datamover.manifest import read_manifest
from datamover.options import MiB
from datamover.stores.posix.writer import PosixWriter

from serverenv import ServerEnv

pytestmark = [pytest.mark.cloud, pytest.mark.timeout(120)]

PART = 5 * MiB
SIZE = 6 * PART + 123


def _upload(env: ServerEnv, tmp_path: Path) -> bytes:
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(SIZE)
    (src / "big.bin").write_bytes(data)
    report = datamover.copy(str(src), env.url("d"), part_size=PART, multipart_threshold=PART)
    assert report.ok, report.failures
    return data


@pytest.mark.parametrize("flip", [0, 3, 6])
def test_a_byte_changed_on_disk_is_found_before_the_rename_and_redone(
    seaweed_env: ServerEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flip: int
) -> None:
    data = _upload(seaweed_env, tmp_path)
    real = PosixWriter.write_part
    writes: dict[int, int] = {}
    seen_at_flip: list[bool] = []

    def write_then_flip(self: PosixWriter, index: int, buf, digests):  # type: ignore[no-untyped-def]
        receipt = real(self, index, buf, digests)
        writes[index] = writes.get(index, 0) + 1
        if index == flip and writes[index] == 1:
            at = index * self.part_size + min(1000, len(buf) - 1)
            fd = self._fd  # the temp file this writer just wrote
            assert fd is not None
            byte = os.pread(fd, 1, at)
            os.pwrite(fd, bytes([byte[0] ^ 0x20]), at)
            seen_at_flip.append(os.path.exists(dst / "big.bin"))
        return receipt

    monkeypatch.setattr(PosixWriter, "write_part", write_then_flip)
    dst = tmp_path / "dst"
    manifest = tmp_path / "m.jsonl"
    report = datamover.copy(
        seaweed_env.url("d/big.bin"),
        str(dst) + "/",
        manifest=str(manifest),
        part_size=PART,
        multipart_threshold=PART,
        checksum="sha256",
    )
    assert report.ok, report.failures
    assert seen_at_flip == [False]  # the flip happened, with nothing yet visible
    assert writes[flip] == 2  # the whole file was downloaded again
    assert (dst / "big.bin").read_bytes() == data
    assert temp_files(dst) == []
    (entry,) = read_manifest(str(manifest)).entries
    assert entry.status == "ok" and entry.verified == "readback"
    assert entry.digest == digest_bytes("sha256", data).hex()


def test_a_download_killed_mid_way_leaves_nothing_visible_and_resumes(
    seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    data = _upload(seaweed_env, tmp_path)
    dst = tmp_path / "dst"
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    cmd = [
        *DM,
        "copy",
        seaweed_env.url("d/big.bin"),
        str(dst) + "/",
        "--part-size",
        "5MiB",
        "--multipart-threshold",
        "5MiB",
        "--transfers",
        "2",
        "--bwlimit",
        "8MiB",
        "-q",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    try:
        # Killed once the temp file holds a few parts' data (some already read back).
        while proc.poll() is None and time.monotonic() < deadline:
            temps = temp_files(dst) if dst.exists() else []
            if temps and os.stat(dst / temps[0]).st_blocks * 512 >= 2 * PART:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not (dst / "big.bin").exists()
    assert [p.name for p in dst.iterdir()] == temp_files(dst)  # only the hidden temp file
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert final.returncode == 0, final.stdout + final.stderr
    assert (dst / "big.bin").read_bytes() == data
    assert temp_files(dst) == []
