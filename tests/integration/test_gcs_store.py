"""GCSStore against a real fake-gcs-server over HTTP (no mocks).

The session's server is conftest's ``gcs`` fixture; each test gets its own bucket and
opens the store the way the CLI does (``from_location``), with the endpoint in settings.
"""

from __future__ import annotations

import hashlib
import os
import random
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import google_crc32c
import pytest
import requests
from google.api_core import exceptions as gexc

from datamover.checksums import PartDigests
from datamover.errors import (
    AuthError,
    BucketNotFound,
    ConfigError,
    IntegrityError,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    StoreError,
    Throttled,
    TransientError,
)
from datamover.stores import StoreSettings, open_store
from datamover.stores.base import KiB, MiB, digest_metadata_key
from datamover.stores.gcs import DEFAULT_TEMP_PREFIX, GCSStore, crc32c_combine
from datamover.stores.urls import Location, parse_url

if TYPE_CHECKING:
    from tests.servers import FakeGcsServer

pytestmark = pytest.mark.cloud


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def server(gcs: FakeGcsServer) -> FakeGcsServer:
    return gcs


@pytest.fixture(scope="session")
def admin(server: FakeGcsServer) -> Iterator[Any]:
    """A plain SDK client, to look behind the store's back."""
    client = server.client()
    yield client
    client.close()


@pytest.fixture
def bucket(server: FakeGcsServer) -> str:
    name = f"t-{secrets.token_hex(6)}"
    server.make_bucket(name)
    return name


def make_store(server: FakeGcsServer, bucket: str, **extra: Any) -> GCSStore:
    settings = StoreSettings(endpoint=server.endpoint, connections=8, extra=extra)
    return GCSStore.from_location(Location("gs", bucket, ""), settings)


@pytest.fixture
def store(server: FakeGcsServer, bucket: str) -> Iterator[GCSStore]:
    s = make_store(server, bucket)
    yield s
    s.close()


def all_names(admin: Any, bucket: str) -> list[str]:
    return sorted(b.name for b in admin.list_blobs(bucket))


def crc_hex(data: bytes) -> str:
    return f"{google_crc32c.value(data):08x}"


# -- crc32c_combine ----------------------------------------------------------------------


def test_crc32c_combine_matches_concatenation() -> None:
    rng = random.Random(7)
    for _ in range(200):
        a = rng.randbytes(rng.randrange(0, 300))
        b = rng.randbytes(rng.choice([0, 1, 3, rng.randrange(0, 5000)]))
        got = crc32c_combine(google_crc32c.value(a), google_crc32c.value(b), len(b))
        assert got == google_crc32c.value(a + b)


def test_crc32c_combine_folds_many_parts() -> None:
    rng = random.Random(11)
    parts = [rng.randbytes(4096) for _ in range(50)] + [rng.randbytes(17)]
    crc = 0
    for p in parts:
        crc = crc32c_combine(crc, google_crc32c.value(p), len(p))
    assert crc == google_crc32c.value(b"".join(parts))


def test_crc32c_combine_large_length() -> None:
    # The shift operator for 5 GiB without materialising 5 GiB: x^(8n) applied to a CRC
    # of zeros must match extending by zero bytes, checked on a smaller power of two.
    zeros = bytes(1 << 20)
    a = b"datamover"
    assert crc32c_combine(google_crc32c.value(a), google_crc32c.value(zeros), len(zeros)) == (
        google_crc32c.value(a + zeros)
    )
    assert 0 <= crc32c_combine(0x12345678, 0x9ABCDEF0, 5 * 1024**3) < 2**32


# -- configuration -----------------------------------------------------------------------


def test_emulator_env_var_and_registry(
    server: FakeGcsServer, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.endpoint)
    s, key = open_store(f"gs://{bucket}/x")
    try:
        assert isinstance(s, GCSStore) and key == "x"
        s.put("x", b"via env")
        assert s.read("x") == b"via env"
        assert s.url("x") == f"gs://{bucket}/x"
    finally:
        s.close()
        s.close()  # idempotent


def test_missing_adc_is_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    with pytest.raises(ConfigError) as info:
        GCSStore.from_location(parse_url("gs://b/k"), StoreSettings())
    message = str(info.value)
    assert "GOOGLE_APPLICATION_CREDENTIALS" in message
    assert "gcloud auth application-default login" in message
    assert "\n" not in message


def test_pool_sized_for_connections(server: FakeGcsServer, bucket: str) -> None:
    s = make_store(server, bucket)
    try:
        adapter = s._client._http.adapters["http://"]
        assert adapter._pool_maxsize >= 8
    finally:
        s.close()


def test_error_mapping(store: GCSStore) -> None:
    throttled = requests.Response()
    throttled.headers["Retry-After"] = "3"
    cases: list[tuple[BaseException, type[StoreError]]] = [
        (gexc.TooManyRequests("slow down", response=throttled), Throttled),
        (gexc.Unauthorized("no"), AuthError),
        (gexc.Forbidden("no"), PermissionDenied),
        (gexc.PreconditionFailed("changed"), PreconditionFailed),
        (gexc.ServiceUnavailable("busy"), TransientError),
        (gexc.InternalServerError("oops"), TransientError),
        (gexc.RetryError("deadline", gexc.ServiceUnavailable("busy")), TransientError),
        (requests.ConnectionError("reset"), TransientError),
        (requests.Timeout("slow"), TransientError),
        (
            gexc.BadRequest('Provided CRC32C "AAAA" doesn\'t match calculated CRC32C'),
            IntegrityError,
        ),
        (gexc.NotFound("gone"), NotFound),
    ]
    for exc, expected in cases:
        mapped = store.map_error(exc, "some/key")
        assert type(mapped) is expected, (exc, mapped)
        assert mapped.key == "some/key"
        assert str(mapped).startswith(store.url("some/key"))
    throttle = store.map_error(cases[0][0], "k")
    assert isinstance(throttle, Throttled) and throttle.retry_after == 3.0
    assert isinstance(store.map_error(gexc.Forbidden("no"), "k"), PermissionError)
    assert store.map_error(gexc.Unauthorized("no"), "k").fatal
    assert store.map_error(gexc.ServiceUnavailable("busy"), "k").retryable
    other = store.map_error(gexc.BadRequest("bad name"), "k")
    assert type(other) is StoreError and not other.retryable and not other.fatal
    assert type(store.map_error(gexc.NotFound("gone"), "", missing="bucket")) is BucketNotFound


# -- stat / put / read -------------------------------------------------------------------


def test_stat_missing_is_not_found(store: GCSStore) -> None:
    with pytest.raises(NotFound) as info:
        store.stat("nope/nothing")
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.key == "nope/nothing"
    with pytest.raises(NotFound):
        store.read("nope/nothing", 0, 10)
    with pytest.raises(NotFound):
        store.readinto("nope/nothing", 0, memoryview(bytearray(4)))


def test_missing_bucket_is_fatal(server: FakeGcsServer) -> None:
    s = make_store(server, f"absent-{secrets.token_hex(4)}")
    try:
        with pytest.raises(BucketNotFound) as info:
            s.stat("k")
        assert info.value.fatal
        with pytest.raises(BucketNotFound):
            list(s.list(""))
        with pytest.raises(BucketNotFound):
            s.put("k", b"x")
        with pytest.raises(BucketNotFound):
            s.read("k")
    finally:
        s.close()


def test_put_stat_read_with_metadata(store: GCSStore) -> None:
    data = os.urandom(100_000)
    sha = hashlib.sha256(data).hexdigest()
    meta = {"mtime": "1700000000.123456789", "mode": "33188", digest_metadata_key("sha256"): sha}
    put_info = store.put("dir/file.bin", data, metadata=meta)
    info = store.stat("dir/file.bin")
    assert info.size == len(data) == put_info.size
    assert info.mtime == pytest.approx(1700000000.123456789)
    assert info.mode == 33188
    assert info.metadata == meta
    assert info.checksums["md5"] == hashlib.md5(data).hexdigest()
    assert info.checksums["crc32c"] == crc_hex(data)
    assert info.checksums["sha256"] == sha
    assert info.version is not None and info.version == put_info.version
    assert info.etag
    assert store.read("dir/file.bin") == data


def test_put_without_mtime_uses_updated(store: GCSStore) -> None:
    info = store.put("plain", b"abc")
    assert info.mtime is not None and info.mtime > 1.6e9
    assert store.stat("plain").metadata == {}


def test_put_over_8_mib_goes_resumable(store: GCSStore) -> None:
    data = os.urandom(9 * MiB + 123)
    info = store.put("big", data, metadata={"a": "b"})
    assert info.checksums["crc32c"] == crc_hex(data)
    assert store.read("big") == data
    assert store.stat("big").metadata == {"a": "b"}


def test_put_with_wrong_digest_is_integrity_error(store: GCSStore, admin: Any, bucket: str) -> None:
    with pytest.raises(IntegrityError):
        store.put("bad", b"the real bytes", digests=PartDigests(b"other bytes"))
    assert all_names(admin, bucket) == []


def test_ranged_reads(store: GCSStore) -> None:
    data = bytes(range(256)) * 40
    size = len(data)
    store.put("r", data)
    assert store.read("r", 0, 10) == data[:10]
    assert store.read("r", 100, 1000) == data[100:1100]
    assert store.read("r", size - 1, 1) == data[-1:]
    assert store.read("r", size - 5, 100) == data[-5:]
    assert store.read("r", size - 5) == data[-5:]
    assert store.read("r", size) == b""
    assert store.read("r", size, 10) == b""
    assert store.read("r", size + 100, 10) == b""
    assert store.read("r", 7, 0) == b""

    buf = bytearray(1000)
    assert store.readinto("r", 500, memoryview(buf)) == 1000
    assert bytes(buf) == data[500:1500]
    assert store.readinto("r", size - 10, memoryview(buf)) == 10
    assert bytes(buf[:10]) == data[-10:]
    assert store.readinto("r", size, memoryview(buf)) == 0
    assert store.readinto("r", size + 1, memoryview(buf)) == 0


def test_zero_byte_object(store: GCSStore) -> None:
    info = store.put("empty", b"")
    assert info.size == 0
    assert info.checksums["crc32c"] == "00000000"
    assert info.checksums["md5"] == hashlib.md5(b"").hexdigest()
    assert store.stat("empty").size == 0
    assert store.read("empty") == b""
    assert store.read("empty", 0, 10) == b""
    assert store.readinto("empty", 0, memoryview(bytearray(8))) == 0


def test_unicode_and_space_keys(store: GCSStore) -> None:
    key = "dir with space/ünï cødé 文件 #?&%.txt"
    store.put(key, b"hello")
    assert store.stat(key).size == 5
    assert store.read(key, 1, 3) == b"ell"
    assert [i.key for i in store.list("dir with space/")] == [key]
    assert [i.key for i in store.list("", recursive=False)] == ["dir with space/"]
    store.delete(key)
    with pytest.raises(NotFound):
        store.stat(key)


def test_delete_is_idempotent(store: GCSStore) -> None:
    store.put("d", b"x")
    store.delete("d")
    store.delete("d")
    store.delete("never/existed")
    with pytest.raises(NotFound):
        store.stat("d")


def test_copy_object(store: GCSStore) -> None:
    data = os.urandom(5000)
    store.put("src", data, metadata={"mtime": "1600000000", "k": "v"})
    kept = store.copy_object("src", "dst1")
    assert kept.metadata == {"mtime": "1600000000", "k": "v"}
    assert kept.checksums["crc32c"] == crc_hex(data)
    replaced = store.copy_object("src", "dst2", metadata={"new": "1"})
    assert replaced.metadata == {"new": "1"}
    assert store.read("dst2") == data
    with pytest.raises(NotFound):
        store.copy_object("missing", "dst3")


# -- list --------------------------------------------------------------------------------

KEYS = ["a.txt", "dir/b", "dir/sub/c", "dir/sub/d", "dir/sub2/e", "dir2/f", "z"]


def test_list_recursive_and_one_level(store: GCSStore) -> None:
    for k in KEYS:
        store.put(k, k.encode())
    assert [i.key for i in store.list("")] == KEYS
    assert [i.key for i in store.list("dir/")] == ["dir/b", "dir/sub/c", "dir/sub/d", "dir/sub2/e"]
    assert [i.key for i in store.list("dir")] == [k for k in KEYS if k.startswith("dir")]
    top = list(store.list("", recursive=False))
    assert [(i.key, i.is_dir) for i in top] == [
        ("a.txt", False),
        ("dir/", True),
        ("dir2/", True),
        ("z", False),
    ]
    assert [i.key for i in store.list("dir", recursive=False)] == ["dir/b", "dir/sub/", "dir/sub2/"]
    assert [i.key for i in store.list("dir/sub/", recursive=False)] == ["dir/sub/c", "dir/sub/d"]
    assert list(store.list("missing/")) == []
    assert list(store.list("missing/", recursive=False)) == []
    info = next(iter(store.list("a.txt")))
    assert info.size == 5 and info.checksums["crc32c"] == crc_hex(b"a.txt")


def test_list_pages_past_small_page_size(server: FakeGcsServer, bucket: str) -> None:
    s = make_store(server, bucket, page_size=2)
    try:
        keys = [f"p/{i:03d}" for i in range(7)] + ["p/x/1", "p/y/1", "q"]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda k: s.put(k, b"."), keys))
        assert [i.key for i in s.list("")] == sorted(keys)
        one = [i.key for i in s.list("p/", recursive=False)]
        assert one == [f"p/{i:03d}" for i in range(7)] + ["p/x/", "p/y/"]
        # A prefix the emulator sends on the first page must still come out in key order.
        s.put("p/zz", b".")
        one = [i.key for i in s.list("p/", recursive=False)]
        assert one == sorted(one) and len(one) == len(set(one)) == 10
    finally:
        s.close()


def test_list_hides_temporary_parts(store: GCSStore, admin: Any, bucket: str) -> None:
    store.put("visible", b"v")
    writer = store.open_writer("big", size=20, part_size=10)
    writer.write_part(0, b"0123456789", PartDigests(b"0123456789"))
    assert any(n.startswith(DEFAULT_TEMP_PREFIX) for n in all_names(admin, bucket))
    assert [i.key for i in store.list("")] == ["visible"]
    assert [i.key for i in store.list("", recursive=False)] == ["visible"]
    writer.abort()
    assert all_names(admin, bucket) == ["visible"]


# -- multipart writer --------------------------------------------------------------------


def test_multipart_out_of_order_two_compose_levels(
    store: GCSStore, admin: Any, bucket: str
) -> None:
    part_size = 64 * KiB
    data = os.urandom(40 * part_size + 1000)  # 41 parts: more than 32, so two levels
    nparts = -(-len(data) // part_size)
    order = list(range(nparts))
    random.Random(3).shuffle(order)
    writer = store.open_writer("multi/object.bin", size=len(data), part_size=part_size)
    seen_threads: set[int] = set()

    def send(i: int) -> None:
        seen_threads.add(threading.get_ident())
        chunk = memoryview(data)[i * part_size : (i + 1) * part_size]
        receipt = writer.write_part(i, chunk, PartDigests(chunk))
        assert receipt.index == i and receipt.size == len(chunk)
        assert receipt.checksum == crc_hex(bytes(chunk))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, order))
    assert len(seen_threads) > 1
    again = data[5 * part_size : 6 * part_size]
    writer.write_part(5, again, PartDigests(again))  # re-writing a part replaces it

    sha = hashlib.sha256(data).hexdigest()
    info = writer.commit({"mtime": "1700000001.5", digest_metadata_key("sha256"): sha})
    assert info.key == "multi/object.bin"
    assert info.size == len(data)
    assert info.checksums["crc32c"] == crc_hex(data)
    assert info.checksums["sha256"] == sha
    assert info.mtime == pytest.approx(1700000001.5)
    assert store.read("multi/object.bin") == data
    assert store.stat("multi/object.bin").metadata["mtime"] == "1700000001.5"
    assert all_names(admin, bucket) == ["multi/object.bin"]
    writer.abort()  # after commit: leaves the object alone
    assert all_names(admin, bucket) == ["multi/object.bin"]


def test_multipart_big_parts_and_open_writer_metadata(
    store: GCSStore, admin: Any, bucket: str
) -> None:
    part_size = 9 * MiB  # over the SDK's 8 MiB multipart limit: resumable uploads
    data = os.urandom(2 * part_size + 77)
    writer = store.open_writer("m2", size=len(data), part_size=part_size, metadata={"a": "1"})
    for i in (2, 0, 1):
        chunk = data[i * part_size : (i + 1) * part_size]
        writer.write_part(i, chunk, PartDigests(chunk))
    info = writer.commit({"b": "2"})
    assert info.metadata == {"a": "1", "b": "2"}
    assert store.read("m2", part_size - 3, 6) == data[part_size - 3 : part_size + 3]
    assert all_names(admin, bucket) == ["m2"]


def test_single_part_and_empty_writer(store: GCSStore, admin: Any, bucket: str) -> None:
    w = store.open_writer("one", size=3, part_size=10)
    w.write_part(0, b"abc", PartDigests(b"abc"))
    assert w.commit({}).size == 3
    w = store.open_writer("none", size=0, part_size=10)
    w.write_part(0, b"", PartDigests(b""))
    assert w.commit({}).checksums["crc32c"] == "00000000"
    assert store.read("one") == b"abc" and store.read("none") == b""
    assert all_names(admin, bucket) == ["none", "one"]


def test_abort_leaves_nothing(store: GCSStore, admin: Any, bucket: str) -> None:
    part_size = 1000
    data = os.urandom(40 * part_size)
    writer = store.open_writer("aborted", size=len(data), part_size=part_size)
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: writer.write_part(
                    i,
                    data[i * part_size : (i + 1) * part_size],
                    PartDigests(data[i * part_size : (i + 1) * part_size]),
                ),
                range(0, 40, 2),
            )
        )
    assert len(all_names(admin, bucket)) == 20
    writer.abort()
    writer.abort()
    assert all_names(admin, bucket) == []
    with pytest.raises(NotFound):
        store.stat("aborted")


def test_commit_with_missing_part_raises(store: GCSStore, admin: Any, bucket: str) -> None:
    writer = store.open_writer("gap", size=30, part_size=10)
    for i in (0, 2):
        writer.write_part(i, b"x" * 10, PartDigests(b"x" * 10))
    with pytest.raises(Exception, match="not written"):
        writer.commit({})
    writer.write_part(1, b"y" * 10, PartDigests(b"y" * 10))
    writer.commit({})
    assert store.read("gap") == b"x" * 10 + b"y" * 10 + b"x" * 10
    assert all_names(admin, bucket) == ["gap"]


def test_part_with_wrong_digest_is_integrity_error(
    store: GCSStore, admin: Any, bucket: str
) -> None:
    writer = store.open_writer("bad-part", size=20, part_size=10)
    with pytest.raises(IntegrityError):
        writer.write_part(0, b"0123456789", PartDigests(b"not these bytes"))
    writer.abort()
    assert all_names(admin, bucket) == []


def test_part_size_checks(store: GCSStore) -> None:
    writer = store.open_writer("sizes", size=25, part_size=10)
    with pytest.raises(ValueError):
        writer.write_part(0, b"short", PartDigests(b"short"))
    with pytest.raises(ValueError):
        writer.write_part(3, b"x" * 10, PartDigests(b"x" * 10))
    writer.abort()
    with pytest.raises(ValueError):
        store.open_writer(DEFAULT_TEMP_PREFIX + "x", size=1, part_size=1)
