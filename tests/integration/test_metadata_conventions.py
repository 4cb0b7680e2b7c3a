"""POSIX metadata other tools wrote, read on every store; the styles datamover writes,
read back; ``sync`` sees an object another tool wrote as unchanged. Objects are planted
with each store's own SDK (boto3, azure-storage-blob, google-cloud-storage) with the
keys and value formats each tool's documentation gives, against SeaweedFS, Azurite
and fake-gcs-server."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import datamover
from datamover.options import TransferOptions

from serverenv import ServerEnv, use_server

pytestmark = pytest.mark.cloud

NS = 1_700_000_000_123_456_789
SEC = 1_700_000_000 * 10**9
#: (name, metadata as the tool writes it, the mtime it gives in ns). Mode 0640,
#: uid 1000, gid 100 in every one.
CONVENTIONS: list[tuple[str, dict[str, str], int]] = [
    ("s3fs", {"mode": "33184", "uid": "1000", "gid": "100", "mtime": "1700000000"}, SEC),
    (
        "rclone",
        {"mode": "100640", "uid": "1000", "gid": "100", "mtime": "1700000000.123456789"},
        NS,
    ),
    (
        "rclone-rfc3339",
        {
            "mode": "100640",
            "uid": "1000",
            "gid": "100",
            "mtime": "2023-11-14T22:13:20.123456789Z",
            "atime": "2023-11-14T22:13:20.123456789Z",
        },
        NS,
    ),
    (
        "gcloud",
        {
            "goog-reserved-posix-mode": "640",
            "goog-reserved-posix-uid": "1000",
            "goog-reserved-posix-gid": "100",
            "goog-reserved-file-mtime": "1700000000",
        },
        SEC,
    ),
    (
        "azcopy",
        {"permissions": "33184", "posix_owner": "1000", "posix_group": "100", "modtime": str(NS)},
        NS,
    ),
    (
        "amlfs",
        {
            "owner": "1000",
            "group": "100",
            "permissions": "0640",
            "modtime": "2023-11-14 22:13:20 +0000",
        },
        SEC,
    ),
    (
        "fsx-lustre",
        {
            "file-permissions": "0100640",
            "file-owner": "1000",
            "file-group": "100",
            "file-mtime": f"{NS}ns",
        },
        NS,
    ),
]

Planter = Callable[[str, bytes, dict[str, str]], None]


@pytest.fixture(params=["s3", "az", "gs"])
def where(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> tuple[ServerEnv, Planter]:
    """A fresh bucket on one store, and a planter writing objects with that store's SDK."""
    name = {"s3": "seaweed", "az": "azurite", "gs": "gcs"}[request.param]
    server: Any = request.getfixturevalue(name)
    env = use_server(server, monkeypatch)
    if request.param == "s3":

        def plant(key: str, body: bytes, meta: dict[str, str]) -> None:
            s3 = server.client()
            try:
                s3.put_object(Bucket=env.bucket, Key=key, Body=body, Metadata=meta)
            finally:
                s3.close()

    elif request.param == "az":

        def plant(key: str, body: bytes, meta: dict[str, str]) -> None:
            # Azure names are C# identifiers: tools there write "_", never "-".
            with server.client() as service:
                blob = service.get_blob_client(env.bucket, key)
                blob.upload_blob(
                    body,
                    metadata={k.replace("-", "_"): v for k, v in meta.items()},
                    overwrite=True,
                )

    else:

        def plant(key: str, body: bytes, meta: dict[str, str]) -> None:
            client = server.client()
            try:
                blob = client.bucket(env.bucket).blob(key)
                blob.metadata = meta
                blob.upload_from_string(body)
            finally:
                client.close()

    return env, plant


def test_objects_planted_with_each_conventions_keys_download_right(
    where: tuple[ServerEnv, Planter], tmp_path: Path
) -> None:
    env, plant = where
    for name, meta, _ in CONVENTIONS:
        plant(f"p/{name}", f"data {name}".encode(), meta)
    plant("p/link-gcloud", b"gcloud", {"goog-reserved-file-is-symlink": "true"})
    plant("p/link-azcopy", b"azcopy", {"is_symlink": "true", "permissions": str(0o120777)})
    plant("p/link-fsx", b"fsx-lustre", {"file-permissions": "0120777"})
    plant("p/suid-rclone", b"#!/bin/sh\n", {"mode": "104755"})
    plant("p/suid-azcopy", b"#!/bin/sh\n", {"permissions": str(0o106755)})
    dst = tmp_path / "dst"
    report = datamover.copy(env.url("p"), str(dst))
    assert report.ok and report.files_failed == 0, report
    for name, _, mtime in CONVENTIONS:
        st = (dst / name).lstat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1000, 100), name
        assert st.st_mtime_ns == mtime, name
    for name in ("gcloud", "azcopy", "fsx-lustre"):
        assert os.readlink(dst / f"link-{name.split('-')[0]}") == name
    # Set-id bits from a bucket are never restored unless asked.
    assert stat.S_IMODE((dst / "suid-rclone").stat().st_mode) == 0o755
    assert stat.S_IMODE((dst / "suid-azcopy").stat().st_mode) == 0o755
    kept = tmp_path / "kept"
    datamover.copy(env.url("p"), str(kept), TransferOptions(preserve_setid=True))
    assert stat.S_IMODE((kept / "suid-rclone").stat().st_mode) == 0o4755
    assert stat.S_IMODE((kept / "suid-azcopy").stat().st_mode) == 0o6755


def test_disagreeing_conventions_follow_the_precedence_and_are_reported(
    where: tuple[ServerEnv, Planter], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env, plant = where
    # s3fs says 0640, gcloud 0600: on S3 s3fs decides, on GCS gcloud, on Azure (AzCopy
    # and rclone first, neither here) the default order: s3fs.
    plant("c/f", b"x", {"mode": "33184", "goog-reserved-posix-mode": "600"})
    dst = tmp_path / "dst"
    with caplog.at_level("WARNING", logger="datamover"):
        datamover.copy(env.url("c"), str(dst))
    expected = 0o600 if env.scheme == "gs" else 0o640
    assert stat.S_IMODE((dst / "f").stat().st_mode) == expected
    assert "conventions disagree" in caplog.text and "/c/f" in caplog.text


def test_sync_sees_another_tools_object_as_unchanged(
    where: tuple[ServerEnv, Planter], tmp_path: Path
) -> None:
    env, plant = where
    for name, meta, _ in CONVENTIONS:
        plant(f"s/{name}", f"data {name}".encode(), meta)
    local = tmp_path / "local"
    assert datamover.copy(env.url("s"), str(local)).files_ok == len(CONVENTIONS)
    back = datamover.sync(env.url("s"), str(local))
    assert back.files_ok == 0 and back.files_skipped == len(CONVENTIONS), back
    there = datamover.sync(str(local), env.url("s"))
    assert there.files_ok == 0 and there.files_skipped == len(CONVENTIONS), there


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Files with modes 640/755/600 and nanosecond mtimes, an empty directory."""
    (root / "sub").mkdir(parents=True)
    (root / "empty").mkdir()
    want = {"a.txt": (0o640, NS), "b.sh": (0o755, NS + 1), "sub/c": (0o600, NS + 987_654_321)}
    for rel, (mode, mtime) in want.items():
        (root / rel).write_bytes(rel.encode() * 10)
        os.chmod(root / rel, mode)
        os.utime(root / rel, ns=(mtime, mtime))
    return want


@pytest.mark.parametrize(
    "style", [None, "s3fs,gcloud,fsx-lustre", "rclone", "azcopy", "amlfs"], ids=str
)
def test_each_style_written_reads_back(
    where: tuple[ServerEnv, Planter], tmp_path: Path, style: str | None
) -> None:
    env, _ = where
    want = _tree(tmp_path / "src")
    opts = TransferOptions(metadata_style=style)
    assert datamover.copy(str(tmp_path / "src"), env.url("t"), opts).ok
    back = tmp_path / "back"
    assert datamover.copy(env.url("t"), str(back)).ok
    exact = style is None or style in ("rclone", "azcopy") or "fsx" in style
    for rel, (mode, mtime) in want.items():
        st = (back / rel).stat()
        assert stat.S_IMODE(st.st_mode) == mode, (rel, style)
        assert st.st_mtime_ns == (mtime if exact else mtime // 10**9 * 10**9), (rel, style)
    assert (back / "empty").is_dir()


def test_a_bad_foreign_value_is_ignored_with_a_warning(
    where: tuple[ServerEnv, Planter], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env, plant = where
    plant("b/f", b"x", {"file-permissions": "0100640", "file-mtime": "soon"})
    with caplog.at_level("WARNING", logger="datamover"):
        report = datamover.copy(env.url("b"), str(tmp_path / "dst"))
    assert report.ok
    assert stat.S_IMODE((tmp_path / "dst" / "f").stat().st_mode) == 0o640
    assert "file-mtime" in caplog.text and "ignored" in caplog.text


@pytest.mark.parametrize(
    ("style", "said"), [("bogus", "unknown --metadata-style"), ("s3fs,rclone", "choose one")]
)
def test_a_bad_metadata_style_is_a_one_line_error(tmp_path: Path, style: str, said: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"x")
    args = ["copy", str(tmp_path / "src"), str(tmp_path / "d"), "--metadata-style", style]
    proc = subprocess.run(
        [sys.executable, "-m", "datamover", *args],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and said in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_a_disagreement_is_reported_once_per_object_in_a_verify(
    where: tuple[ServerEnv, Planter], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another tool replaced a copied object with keys that disagree: the verify that
    finds the change names the disagreement once, not once per request it made."""
    env, plant = where
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"y" * 300_000)
    manifest = tmp_path / "m.jsonl"
    report = datamover.copy(str(src), env.url("v"), TransferOptions(manifest=str(manifest)))
    assert report.ok, report
    plant("v/f", b"z" * 300_000, {"mode": "33184", "goog-reserved-posix-mode": "600"})
    with caplog.at_level("WARNING", logger="datamover"):
        result = datamover.verify(str(manifest))
    assert not result.passed
    assert caplog.text.count("conventions disagree") == 1, caplog.text
