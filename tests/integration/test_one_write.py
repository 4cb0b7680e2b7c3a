"""One write per object (docs/SEMANTICS.md, ``datamover/stores/base.py``): every object
datamover writes (small, multipart, cloud-to-cloud streamed, server-side copy, the
mount's streamed and staged uploads) is created by exactly one PUT /
CompleteMultipartUpload / Put Block List / compose / copy, never copied onto itself
afterwards.

Shown where each store can show it: on a moto bucket with versioning enabled, one
version per key; on Azurite (no blob versioning) by counting, through a proxy, the
requests that create a blob (Put Blob, Copy Blob, Put Block List) per key, seen by
the fault proxy (no faults, recording); on
fake-gcs-server, metageneration 1 and a single generation per object.
"""

from __future__ import annotations

import collections
import os
import urllib.parse
from pathlib import Path

import pytest

import datamover
from datamover.checksums import PartDigests
from datamover.options import MiB
from datamover.posixmeta import MODE, MTIME
from datamover.stores import open_store
from datamover.stores.fsops import for_store

from faultproxy import FaultProxy
from serverenv import ServerEnv, use_server

pytestmark = pytest.mark.cloud

PART = 5 * MiB
SIZES = {"tiny.txt": 10, "below.bin": PART - 1, "at.bin": PART, "above.bin": 2 * PART + 3}


def _tree(root: Path) -> dict[str, bytes]:
    files = {name: os.urandom(size) for name, size in SIZES.items()}
    files["sub/empty.bin"] = b""
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "empty-dir").mkdir()
    return files


def _copy(src: str, dst: str, **options: object) -> None:
    report = datamover.copy(src, dst, part_size=PART, multipart_threshold=PART - 1, **options)
    assert report.ok, report.failures


def _stream_through_fsops(url: str, key: str, data: bytes) -> None:
    """What the mount does for a file written sequentially (``writes.py``): a stream
    of unknown size, committed with its final metadata and digest."""
    store, _ = open_store(url)
    try:
        ops = for_store(store)
        meta = {MODE: str(0o100644), MTIME: "1700000000.5"}
        part = store.limits.choose_part_size(len(data), PART)
        writer = ops.open_stream(key, part, 10 * len(data), meta) if ops.can_stream else None
        if writer is None:
            writer = store.open_writer(key, size=len(data), part_size=part, metadata=meta)
        for i, offset in enumerate(range(0, len(data), part)):
            chunk = memoryview(data)[offset : offset + part]
            writer.write_part(i, chunk, PartDigests(chunk))
        ops.finish_stream(writer, len(data))
        ops.commit_stream(writer, {**meta, "datamover-sha256": "00" * 32}, attrs_changed=False)
    finally:
        store.close()


def test_one_version_per_key_on_a_versioned_moto_bucket(
    moto_env: ServerEnv, tmp_path: Path
) -> None:
    client = moto_env.server.client()  # type: ignore[attr-defined]
    try:
        client.put_bucket_versioning(
            Bucket=moto_env.bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        _tree(tmp_path / "src")
        _copy(str(tmp_path / "src"), moto_env.url("up"))  # small and multipart
        _copy(moto_env.url("up"), moto_env.url("server-side"))  # CopyObject
        _copy(moto_env.url("up"), moto_env.url("streamed"), server_side_copy=False)
        _stream_through_fsops(moto_env.url(), "mount/streamed.bin", os.urandom(2 * PART + 1))
        versions: collections.Counter[str] = collections.Counter()
        markers = []
        for page in client.get_paginator("list_object_versions").paginate(Bucket=moto_env.bucket):
            versions.update(v["Key"] for v in page.get("Versions", ()))
            markers += page.get("DeleteMarkers", ())
    finally:
        client.close()
    assert not markers
    expected = {f"{p}/{n}" for p in ("up", "server-side", "streamed") for n in SIZES}
    assert expected | {"mount/streamed.bin"} <= set(versions)
    assert {k: n for k, n in versions.items() if n != 1} == {}, versions


def test_one_creating_request_per_blob_on_azurite(
    azurite: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = use_server(azurite, monkeypatch)  # type: ignore[arg-type]
    endpoint: str = azurite.endpoint  # type: ignore[attr-defined]
    with FaultProxy(endpoint, flavor="azure", record=True) as proxy:
        account = endpoint.split("/", 3)[3]
        conn: str = azurite.connection_string  # type: ignore[attr-defined]
        monkeypatch.setenv(
            "AZURE_STORAGE_CONNECTION_STRING", conn.replace(endpoint, f"{proxy.url}/{account}")
        )
        _tree(tmp_path / "src")
        _copy(str(tmp_path / "src"), env.url("up"))
        _copy(env.url("up"), env.url("server-side"))  # Copy Blob
        _stream_through_fsops(env.url(), "mount/staged.bin", os.urandom(2 * PART + 1))
        creating: collections.Counter[str] = collections.Counter()
        blocks = 0
        for method, target in proxy.seen:
            path, _, query = urllib.parse.unquote(target).partition("?")
            if method != "PUT" or "restype=container" in query:
                continue
            key = path.split("/", 3)[3]  # /account/container/key
            if "comp=block&" in query + "&":
                blocks += 1
            elif "comp=blocklist" in query or "comp=" not in query:
                creating[key] += 1  # Put Block List, Put Blob or Copy Blob
    assert blocks > 0  # multipart uploads did happen
    expected = {f"up/{n}" for n in SIZES} | {f"server-side/{n}" for n in SIZES}
    assert expected | {"mount/staged.bin"} <= set(creating)
    assert {k: n for k, n in creating.items() if n != 1} == {}, creating


def test_first_generation_only_on_fake_gcs(
    gcs: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = use_server(gcs, monkeypatch)  # type: ignore[arg-type]
    client = gcs.client()  # type: ignore[attr-defined]
    try:
        bucket = client.bucket(env.bucket)
        bucket.versioning_enabled = True
        bucket.patch()
        _tree(tmp_path / "src")
        _copy(str(tmp_path / "src"), env.url("up"))  # small, and parts + compose
        _copy(env.url("up"), env.url("server-side"))  # rewrite
        _stream_through_fsops(env.url(), "mount/staged.bin", os.urandom(2 * PART + 1))
        generations: dict[str, list[int]] = collections.defaultdict(list)
        for blob in client.list_blobs(env.bucket, versions=True):
            generations[blob.name].append(int(blob.generation))
            if not blob.name.startswith(".datamover-tmp/"):
                assert int(blob.metageneration) == 1, (blob.name, blob.metageneration)
    finally:
        client.close()
    expected = {f"up/{n}" for n in SIZES} | {f"server-side/{n}" for n in SIZES}
    assert expected | {"mount/staged.bin"} <= set(generations)
    assert {k: g for k, g in generations.items() if len(g) != 1} == {}, generations


def test_a_stream_keeps_its_opening_metadata_unless_attributes_changed(
    seaweed_env: ServerEnv,
) -> None:
    """The mount's streamed upload to S3: one write, with the metadata the stream
    opened with (no mtime: the upload's completion is the file's modification time);
    a chmod made while it was written is stored afterwards, as on a closed file."""
    store, _ = open_store(seaweed_env.url())
    try:
        ops = for_store(store)
        assert not store.features.metadata_at_commit and ops.can_stream
        opened = {MODE: str(0o100644), MTIME: "1700000000.5"}
        final = {MODE: str(0o100600), MTIME: "1700000009.5", "datamover-sha256": "ab" * 32}
        for key, changed in (("plain.bin", False), ("chmodded.bin", True)):
            data = os.urandom(PART + 1)
            writer = ops.open_stream(key, PART, 100 * PART, opened)
            for i, offset in enumerate(range(0, len(data), PART)):
                chunk = memoryview(data)[offset : offset + PART]
                writer.write_part(i, chunk, PartDigests(chunk))
            ops.finish_stream(writer, len(data))
            info = ops.commit_stream(writer, final, attrs_changed=changed)
            stored = store.stat(key).metadata
            assert dict(info.metadata) == dict(stored)
            assert store.read(key) == data
            if changed:
                assert stored == final
            else:
                assert stored == {MODE: opened[MODE]}
    finally:
        store.close()
