"""``datamover mount`` / ``datamover umount`` as users run them: background mode that
returns once the mount is live, and one-line errors with exit status 2."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datamover_fuse.mount import is_mounted

from mounting import Target

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(120)]


def datamover(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datamover", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("datamover: error: "), result.stderr
    return lines[0]


@pytest.mark.cloud
def test_background_mount_returns_when_live_and_umount_unmounts(
    s3_target: Target, tmp_path: Path
) -> None:
    (s3_target.path / "hello.txt").write_bytes(b"hi")
    mountpoint = tmp_path / "bg"
    mountpoint.mkdir()
    env = s3_target.backend.env
    try:
        result = datamover(
            "mount", s3_target.backend.url(s3_target.prefix), str(mountpoint), env=env
        )
        assert result.returncode == 0, result.stderr
        assert is_mounted(str(mountpoint))
        assert (mountpoint / "hello.txt").read_bytes() == b"hi"
        busy = subprocess.Popen(["sleep", "30"], cwd=mountpoint)
        try:
            line = one_error_line(datamover("umount", str(mountpoint)))
            assert "busy" in line.lower()
        finally:
            busy.kill()
            busy.wait(timeout=10)
        result = datamover("umount", str(mountpoint))
        assert result.returncode == 0, result.stderr
        assert not is_mounted(str(mountpoint))
    finally:
        if is_mounted(str(mountpoint)):
            subprocess.run(["fusermount3", "-uz", str(mountpoint)], check=False, timeout=30)
    deadline = time.monotonic() + 30
    while list(mountpoint.parent.glob("bg")) and is_mounted(str(mountpoint)):
        assert time.monotonic() < deadline
        time.sleep(0.1)


@pytest.mark.cloud
def test_mount_errors_are_one_line(s3_target: Target, tmp_path: Path) -> None:
    env = s3_target.backend.env
    missing = datamover("mount", "s3://no-such-bucket-here/", str(tmp_path), env=env)
    assert "no-such-bucket-here" in one_error_line(missing)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    line = one_error_line(datamover("mount", s3_target.backend.url(), str(not_a_dir), env=env))
    assert "not a directory" in line
    line = one_error_line(datamover("mount", s3_target.backend.url(), str(s3_target.mount.path)))
    assert "already" in line
    assert "not mounted" in one_error_line(datamover("umount", str(tmp_path)))
    url, where = s3_target.backend.url(), str(tmp_path)
    line = one_error_line(datamover("mount", url, where, "--read-threads", "9", env=env))
    assert "--read-threads must be between 0 and 8" in line


def test_mount_without_the_fuse_package_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['datamover_fuse'] = None\n"
        "from datamover.cli import main\n"
        f"sys.exit(main(['mount', 's3://bucket/', {str(tmp_path)!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert "datamover-fuse" in one_error_line(result)


@pytest.mark.cloud
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_foreground_mount_with_reader_threads_unmounts_on_a_signal(
    s3_target: Target, tmp_path: Path, signum: int
) -> None:
    """The C reader threads start with every signal blocked, so SIGTERM and SIGINT
    reach Python's thread, which unmounts and exits 0, after reads were answered."""
    data = bytes(range(256)) * 4096 * 8  # 8 MiB: read through the block cache
    s3_target.store.put(s3_target.key("obj"), data)
    mountpoint = tmp_path / "fg"
    mountpoint.mkdir()
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "datamover",
            "-v",
            "mount",
            s3_target.backend.url(s3_target.prefix),
            str(mountpoint),
            "--foreground",
            "--read-threads",
            "2",
        ],
        env=s3_target.backend.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not is_mounted(str(mountpoint)):
            assert daemon.poll() is None, daemon.stderr.read() if daemon.stderr else ""
            assert time.monotonic() < deadline, "mount not live after 60 s"
            time.sleep(0.1)
        fd = os.open(mountpoint / "obj", os.O_RDONLY)
        try:
            # random reads: the object is fetched whole into the read cache, and the
            # later passes are answered from it (in C, by the reader threads)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            for o in (7, 1, 5, 3):  # far random reads: the object is fetched whole
                assert os.pread(fd, 4096, o << 20) == data[o << 20 : (o << 20) + 4096]
            time.sleep(1)
            offsets = [(i * 37 % 128) * 65536 for i in range(24)]
            for _ in range(10):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                for off in offsets:
                    assert os.pread(fd, 65536, off) == data[off : off + 65536]
                time.sleep(0.3)
        finally:
            os.close(fd)
        daemon.send_signal(signum)
        _, err = daemon.communicate(timeout=60)
        assert daemon.returncode == 0, err
        assert not is_mounted(str(mountpoint))
        assert "reads of cached blocks answered: threads" in err, err[-2000:]
        hits = re.search(r"reads answered in C: .*'hits': (\d+)", err)
        assert hits and int(hits.group(1)) > 0, err[-2000:]
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=30)
        if is_mounted(str(mountpoint)):
            subprocess.run(["fusermount3", "-uz", str(mountpoint)], check=False, timeout=30)
