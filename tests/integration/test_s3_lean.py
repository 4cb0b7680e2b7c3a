"""The lean S3 request path (``datamover/stores/s3/lean.py``) against real servers: it
must read and write exactly what boto3 reads and writes, map errors the same way, and
survive connections the server closes."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator

import pytest

from datamover.errors import AuthError, BucketNotFound, NotFound
from datamover.stores import open_store
from datamover.stores.s3 import S3Store

from serverenv import ServerEnv

pytestmark = pytest.mark.cloud

KEYS = ["plain", "dir/a b+c~d", "unicodé/ünï", "per%cent/and&amp=eq?q#h", "x" * 200]


@pytest.fixture
def store(s3: ServerEnv) -> Iterator[S3Store]:
    st, _ = open_store(s3.url())
    assert isinstance(st, S3Store)
    assert st._s3.lean is not None, "the lean path should be on for a plain http endpoint"
    yield st
    st.close()


def test_round_trip_matches_boto3(store: S3Store, s3: ServerEnv) -> None:
    client = s3.server.client()  # type: ignore[attr-defined]
    for i, key in enumerate(KEYS):
        data = os.urandom(1000 + i)
        meta = {"mtime": f"{1700000000 + i}.25", "mode": "33188", "sha256": "ab" * 32}
        put = store.put(key, data, metadata=meta)
        theirs = client.head_object(Bucket=s3.bucket, Key=key)
        assert put.etag == theirs["ETag"].strip('"')
        assert theirs["Metadata"] == meta
        assert client.get_object(Bucket=s3.bucket, Key=key)["Body"].read() == data

        info = store.stat(key)
        assert (info.size, info.etag, info.metadata) == (len(data), put.etag, meta)
        assert info.mtime == pytest.approx(1700000000 + i + 0.25, abs=1e-6)
        assert info.mode == 33188
        body, got = store.read_object(key)
        assert bytes(body) == data and got.metadata == meta and got.size == len(data)
        assert store.read(key, 10, 20) == data[10:30]
        assert store.read(key, len(data) - 5) == data[-5:]
        assert store.read(key, len(data) + 10, 5) == b""
        buf = memoryview(bytearray(64))
        assert store.readinto(key, 7, buf) == 64 and bytes(buf) == data[7:71]
        tail = memoryview(bytearray(64))
        assert store.readinto(key, len(data) - 3, tail) == 3
        assert bytes(tail[:3]) == data[-3:]

    # Objects written by boto3 read the same through the lean path.
    client.put_object(Bucket=s3.bucket, Key="by-boto3", Body=b"abc", Metadata={"k": "v"})
    body, info = store.read_object("by-boto3")
    assert bytes(body) == b"abc" and info.metadata == {"k": "v"}

    for key in KEYS:
        store.delete(key)
        with pytest.raises(NotFound):
            store.stat(key)
        with pytest.raises(NotFound):
            store.read_object(key)


def test_empty_and_large_objects(store: S3Store) -> None:
    assert store.put("empty", b"").size == 0
    body, info = store.read_object("empty")
    assert bytes(body) == b"" and info.size == 0
    assert store.read("empty", 0, 10) == b""
    big = os.urandom(3 * 1024 * 1024 + 17)  # several socket buffers each way
    store.put("big", memoryview(bytearray(big)))
    body, _ = store.read_object("big")
    assert hashlib.sha256(body).digest() == hashlib.sha256(big).digest()
    view = memoryview(bytearray(len(big)))
    assert store.readinto("big", 0, view) == len(big) and bytes(view) == big


def test_multipart_parts_go_over_the_lean_path(
    store: S3Store, s3: ServerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """UploadPart is sent by the lean path, the part buffer as it is (botocore's
    signer copied every part: a second part-sized buffer per part in flight, outside
    --memory-budget). Awkward keys and the upload id travel in the query; what boto3
    then reads is what was written, with the two-part ETag."""
    from datamover.checksums import PartDigests

    def boto_upload_part(**kw: object) -> None:
        raise AssertionError("UploadPart went to boto3")

    monkeypatch.setattr(store._s3.client, "upload_part", boto_upload_part)
    client = s3.server.client()  # type: ignore[attr-defined]
    part = store.limits.min_part_size
    for key in (KEYS[1], KEYS[3]):
        data = os.urandom(part + 4321)
        view = memoryview(bytearray(data))
        w = store.open_writer(key, size=len(data), part_size=part, metadata={"k": "v"})
        for index, piece in ((1, view[part:]), (0, view[:part])):  # any order
            receipt = w.write_part(index, piece, PartDigests(piece))
            assert receipt.size == len(piece) and receipt.etag
        info = w.commit({})
        theirs = client.head_object(Bucket=s3.bucket, Key=key)
        assert theirs["ContentLength"] == len(data) and theirs["Metadata"] == {"k": "v"}
        assert theirs["ETag"].strip('"').endswith("-2")
        assert info.etag in (None, theirs["ETag"].strip('"'))
        got = client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_errors_map_like_boto3(s3: ServerEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    missing, _ = open_store(f"s3://{s3.bucket}-missing/")
    with pytest.raises(BucketNotFound):
        missing.stat("k")
    with pytest.raises(BucketNotFound):
        missing.put("k", b"x")
    if type(s3.server).__name__ == "MotoServer":
        return  # moto accepts any signature
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    wrong, _ = open_store(s3.url())
    with pytest.raises(AuthError) as raised:
        wrong.put("k", b"x")
    assert "not-the-secret" not in str(raised.value)


def test_many_threads_share_nothing(store: S3Store) -> None:
    """Each thread keeps its own connection: 16 threads x 25 requests, all correct."""
    from concurrent.futures import ThreadPoolExecutor

    def work(t: int) -> None:
        for i in range(25):
            data = f"{t}-{i}".encode() * 50
            store.put(f"t/{t}/{i}", data)
            assert bytes(store.read_object(f"t/{t}/{i}")[0]) == data

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(work, range(16)))
    assert len(list(store.list("t/"))) == 400


def test_idle_connection_closed_by_the_server_is_reopened(store: S3Store) -> None:
    """Every kept connection is shut from our side's view of the server (as an idle
    timeout would), then reused: the request goes through on a fresh connection."""
    import socket

    store.put("idle", b"1")
    lean = store._s3.lean
    assert lean is not None
    for conn in lean.pool.all:
        if conn.sock is not None:
            conn.sock.shutdown(socket.SHUT_RDWR)  # the next send or recv fails
    time.sleep(0.1)
    assert bytes(store.read_object("idle")[0]) == b"1"
    store.put("idle", b"2")
    assert store.read("idle") == b"2"


def test_off_switch(s3: ServerEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAMOVER_S3_LEAN", "0")
    st, _ = open_store(s3.url())
    assert isinstance(st, S3Store) and st._s3.lean is None
    st.put("k", b"v", metadata={"a": "b"})
    assert st.stat("k").metadata == {"a": "b"}


def test_listing_matches_boto3(s3: ServerEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages, delimiters and URL-encoded odd keys list the same both ways, and a store
    that only lists never builds a boto3 client."""
    lean, _ = open_store(s3.url())
    assert isinstance(lean, S3Store)
    lean.page_size = 7  # several pages
    keys = [f"p/{i:02d}" for i in range(15)] + ["p/sub/x", "p/ sp+ace%25&=é\x01", "q/1"]
    for key in keys:
        lean.put(key, key.encode())
    monkeypatch.setenv("DATAMOVER_S3_LEAN", "0")
    boto, _ = open_store(s3.url())
    assert isinstance(boto, S3Store) and boto._s3.lean is None
    boto.page_size = 7

    def rows(store: S3Store, prefix: str, recursive: bool) -> list[tuple[object, ...]]:
        return [
            (i.key, i.size, i.etag, i.is_dir, i.mtime)
            for i in store.list(prefix, recursive=recursive)
        ]

    for prefix, recursive in (("", True), ("", False), ("p/", True), ("p/", False), ("z/", True)):
        assert rows(lean, prefix, recursive) == rows(boto, prefix, recursive)
    assert {i.key for i in lean.list("p/")} >= {"p/ sp+ace%25&=é\x01", "p/sub/x"}
    assert lean._s3._boto is None
    lean.close()
    boto.close()
