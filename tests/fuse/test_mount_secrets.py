"""The mount daemon's ``--log-file`` never holds a secret, even with every library's
debug logging on (``-vvv``), whichever S3 request path (lean or boto3) it uses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from servers import AzuriteServer, MotoServer

pytestmark = [pytest.mark.fuse, pytest.mark.cloud]
DM = [sys.executable, "-m", "datamover"]
TOKEN = "FAKEsessionTOKEN/abc+DEF0123456789xyz"
SECRET = "FAKE/secret+Key9876543210mount"


@pytest.mark.parametrize("lean", ["1", "0"])
def test_mount_log_file_is_redacted(moto: MotoServer, tmp_path: Path, lean: str) -> None:
    bucket = f"logs{lean}-bucket"
    moto.make_bucket(bucket)
    moto.client().put_object(Bucket=bucket, Key="hello.txt", Body=b"hello\n")
    env = moto.client_env()
    env.update(
        AWS_ACCESS_KEY_ID="AKIAFAKEMOUNT0000000",
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_SESSION_TOKEN=TOKEN,
        DATAMOVER_S3_LEAN=lean,
    )
    mnt, log = tmp_path / "mnt", tmp_path / "mount.log"
    mnt.mkdir()
    started = subprocess.run(
        [*DM, "-vvv", "mount", f"s3://{bucket}/", str(mnt), "--log-file", str(log)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr
    try:
        assert (mnt / "hello.txt").read_bytes() == b"hello\n"
        (mnt / "new.txt").write_bytes(b"written through the mount\n")
        assert sorted(os.listdir(mnt)) == ["hello.txt", "new.txt"]
    finally:
        subprocess.run([*DM, "umount", str(mnt)], env=env, capture_output=True, timeout=120)
    text = log.read_text(errors="replace")
    assert "DEBUG" in text  # the libraries' debug lines were really written
    for secret in (TOKEN, SECRET, TOKEN[8:-8], SECRET[6:-6]):
        assert secret not in text, f"{secret!r} in the mount log"


def test_a_mount_log_file_holds_datamovers_lines_not_every_request(
    azurite: AzuriteServer, tmp_path: Path
) -> None:
    """Without -v the log file had every Azure SDK request at INFO (4.4 MB for a
    ``cp -a``), but not datamover's own start-up line; and a store outage wrote a
    traceback per failed call. Now: datamover's INFO lines, others' warnings."""
    container = "quietlog"
    with azurite.client() as service:
        service.create_container(container)
        service.get_blob_client(container, "hello.txt").upload_blob(b"hello\n")
    env = azurite.client_env()
    mnt, log = tmp_path / "mnt", tmp_path / "mount.log"
    mnt.mkdir()
    started = subprocess.run(
        [*DM, "mount", f"az://{container}/", str(mnt), "--log-file", str(log)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr
    try:
        assert (mnt / "hello.txt").read_bytes() == b"hello\n"
        (mnt / "new.txt").write_bytes(b"written through the mount\n")
    finally:
        subprocess.run([*DM, "umount", str(mnt)], env=env, capture_output=True, timeout=120)
    text = log.read_text(errors="replace")
    assert "reads of cached blocks answered" in text, text[-2000:]
    assert "Request URL" not in text and "Request headers" not in text, text[-2000:]
