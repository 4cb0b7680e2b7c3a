"""The mount reads every POSIX-metadata convention (``ls -l`` shows the mode and owner
another tool recorded) and writes its store's default style (docs/METADATA.md)."""

from __future__ import annotations

import os
import stat
import subprocess
from typing import Any

import pytest

from mounting import Target

pytestmark = [pytest.mark.fuse, pytest.mark.cloud, pytest.mark.timeout(180)]

#: name -> (metadata as the tool writes it, the mode, uid and gid it means)
PLANTED: dict[str, tuple[dict[str, str], tuple[int, int, int]]] = {
    "s3fs": ({"mode": "33256", "uid": "1001", "gid": "101"}, (0o750, 1001, 101)),
    "rclone": ({"mode": "100604", "uid": "1002", "gid": "102"}, (0o604, 1002, 102)),
    "gcloud": (
        {
            "goog-reserved-posix-mode": "640",
            "goog-reserved-posix-uid": "1003",
            "goog-reserved-posix-gid": "103",
        },
        (0o640, 1003, 103),
    ),
    "azcopy": (
        {"permissions": "33184", "posix_owner": "1004", "posix_group": "104"},
        (0o640, 1004, 104),
    ),
    "amlfs": ({"permissions": "0600", "owner": "1005", "group": "105"}, (0o600, 1005, 105)),
    "fsx": (
        {"file-permissions": "0100754", "file-owner": "1006", "file-group": "106"},
        (0o754, 1006, 106),
    ),
}


def _raw(target: Target) -> Any:
    return target.backend.server.client()


def _plant(target: Target, key: str, body: bytes, meta: dict[str, str]) -> None:
    name, bucket = target.backend.name, target.backend.bucket
    if name == "az":
        with _raw(target) as service:
            service.get_blob_client(bucket, key).upload_blob(
                body, metadata={k.replace("-", "_"): v for k, v in meta.items()}
            )
        return
    client = _raw(target)
    try:
        if name == "gs":
            blob = client.bucket(bucket).blob(key)
            blob.metadata = meta
            blob.upload_from_string(body)
        else:
            client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta)
    finally:
        client.close()


def _stored(target: Target, key: str) -> dict[str, str]:
    name, bucket = target.backend.name, target.backend.bucket
    if name == "az":
        with _raw(target) as service:
            return dict(service.get_blob_client(bucket, key).get_blob_properties().metadata)
    client = _raw(target)
    try:
        if name == "gs":
            blob = client.bucket(bucket).get_blob(key)
            return dict(blob.metadata or {})
        return dict(client.head_object(Bucket=bucket, Key=key)["Metadata"])
    finally:
        client.close()


def test_ls_shows_the_mode_and_owner_each_tool_recorded(target: Target) -> None:
    prefix = target.fresh_key("")
    for name, (meta, _) in PLANTED.items():
        _plant(target, prefix + name, name.encode(), meta)
    where = target.mount.path / prefix
    listing = subprocess.run(
        ["ls", "-ln", str(where)], capture_output=True, text=True, check=True
    ).stdout
    for name, (_, (mode, uid, gid)) in PLANTED.items():
        st = os.stat(where / name)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, uid, gid), name
        line = next(x for x in listing.splitlines() if x.endswith(" " + name))
        fields = line.split()
        assert fields[0] == stat.filemode(stat.S_IFREG | mode), line
        assert (fields[2], fields[3]) == (str(uid), str(gid)), line


def test_the_mount_writes_its_stores_default_style(target: Target) -> None:
    path = target.path / "styled"
    path.write_bytes(b"x")
    os.chown(path, 1234, 567)
    os.chmod(path, 0o640)
    got = _stored(target, target.key("styled"))
    if target.backend.name == "s3":
        assert (got["mode"], got["uid"], got["gid"]) == (str(0o100640), "1234", "567")
    elif target.backend.name == "az":  # AzCopy's keys (and rclone's)
        assert (got["permissions"], got["posix_owner"], got["posix_group"]) == (
            str(0o100640),
            "1234",
            "567",
        )
        assert got["mode"] == "100640" and "modtime" in got
    else:  # gcloud's (and gcsfuse's, rclone's)
        assert got["goog-reserved-posix-mode"] == "640"
        assert got["goog-reserved-posix-uid"] == "1234"
        assert "goog-reserved-file-mtime" in got and "gcsfuse_mtime" in got
        assert got["mode"] == "100640"
    st = path.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 567)


def test_a_directory_marker_another_tool_wrote_shows_its_mode(target: Target) -> None:
    if not target.backend.markers_keep_metadata:
        pytest.skip("SeaweedFS drops the metadata of dir/ markers")
    prefix = target.fresh_key("")
    markers = {
        "gcloud": {"goog-reserved-posix-mode": "750", "goog-reserved-posix-uid": "1007"},
        "azcopy": {"hdi_isfolder": "true", "permissions": str(0o40750), "posix_owner": "1007"},
        "rclone": {"mode": "40750", "uid": "1007"},
    }
    for name, meta in markers.items():
        _plant(target, f"{prefix}{name}/", b"", meta)
    for name in markers:
        st = os.stat(target.mount.path / prefix / name)
        assert stat.S_ISDIR(st.st_mode), name
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o750, 1007), name
