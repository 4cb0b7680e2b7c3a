"""AzureStore against a real Azurite (npm ``azurite``) over HTTP.

One Azurite per session (conftest's ``azurite``, in memory), one container per test.
The store is opened the way the CLI opens it: ``from_location`` with credentials from
the environment.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import random
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from datamover.checksums import PartDigests
from datamover.errors import (
    AuthError,
    BucketNotFound,
    ConfigError,
    IntegrityError,
    NotFound,
    PermissionDenied,
    StoreError,
    Throttled,
    TransientError,
    UsageError,
)
from datamover.posixmeta import format_mtime_ns
from datamover.stores import StoreSettings
from datamover.stores.azure import (
    ENV_ACCOUNT,
    ENV_CONNECTION_STRING,
    ENV_KEY,
    ENV_SAS,
    AzureStore,
    make_service_client,
)
from datamover.stores.base import MiB, digest_metadata_key
from datamover.stores.urls import Location

from servers import AZURITE_ACCOUNT, AZURITE_KEY, AzuriteServer

pytestmark = pytest.mark.cloud

_AZURE_ENV = (ENV_CONNECTION_STRING, ENV_ACCOUNT, ENV_KEY, ENV_SAS)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _AZURE_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def container(azurite: AzuriteServer) -> str:
    name = f"t{secrets.token_hex(8)}"
    azurite.make_bucket(name)
    return name


@pytest.fixture
def store(
    azurite: AzuriteServer, container: str, clean_env: pytest.MonkeyPatch
) -> Iterator[AzureStore]:
    clean_env.setenv(ENV_CONNECTION_STRING, azurite.connection_string)
    with AzureStore.from_location(Location("az", container, ""), StoreSettings(connections=8)) as s:
        assert isinstance(s, AzureStore)
        yield s


def _payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# --- stat / put / read -------------------------------------------------------------


def test_stat_missing_is_not_found(store: AzureStore) -> None:
    with pytest.raises(NotFound) as info:
        store.stat("no/such/blob")
    assert isinstance(info.value, FileNotFoundError)
    assert str(info.value) == f"az://{store.container}/no/such/blob: no such blob"
    assert info.value.key == "no/such/blob"


def test_put_stat_read_round_trip_with_metadata(store: AzureStore, azurite: AzuriteServer) -> None:
    data = _payload(100_000)
    sha = hashlib.sha256(data).hexdigest()
    meta = {
        digest_metadata_key("sha256"): sha,
        "mtime": format_mtime_ns(1_700_000_000_123_456_789),
        "mode": str(0o100640),
        "x-custom-key": "v",
    }
    put_info = store.put("dir/file.bin", data, metadata=meta)
    info = store.stat("dir/file.bin")

    assert info.key == "dir/file.bin"
    assert info.size == len(data)
    assert info.metadata == meta
    assert info.checksums == {"sha256": sha, "md5": hashlib.md5(data).hexdigest()}
    assert info.mtime == pytest.approx(1_700_000_000.123456789)
    assert info.mode == 0o100640
    assert info.etag and info.etag == put_info.etag and '"' not in info.etag
    assert put_info.checksums == info.checksums
    assert store.read("dir/file.bin") == data

    # Stored under C#-identifier names, as other Azure tools will see them, in the
    # store's default styles: AzCopy's keys and rclone's.
    with azurite.client() as service:
        props = service.get_blob_client(store.container, "dir/file.bin").get_blob_properties()
    assert props.metadata == {
        "datamover_sha256": sha,
        "x_custom_key": "v",
        "permissions": str(0o100640),
        "modtime": "1700000000123456789",
        "mode": "100640",
        "mtime": "2023-11-14T22:13:20.123456789Z",
    }


def test_put_replaces_and_mtime_falls_back_to_last_modified(store: AzureStore) -> None:
    store.put("k", b"old", metadata={"mtime": "1"})
    store.put("k", b"new")
    info = store.stat("k")
    assert store.read("k") == b"new"
    assert info.metadata == {}
    assert info.mtime is not None and info.mtime > 1_600_000_000


def test_put_accepts_memoryview_and_bytearray(store: AzureStore) -> None:
    data = bytearray(_payload(5000))
    store.put("mv", memoryview(data)[1000:3000])
    store.put("ba", data)
    assert store.read("mv") == bytes(data[1000:3000])
    assert store.read("ba") == bytes(data)


def test_metadata_key_azure_cannot_store(store: AzureStore) -> None:
    with pytest.raises(UsageError):
        store.put("k", b"x", metadata={"1abc": "v"})


def test_ranged_reads(store: AzureStore) -> None:
    data = _payload(10_000, seed=1)
    size = len(data)
    store.put("r", data)
    assert store.read("r", 0, 10) == data[:10]
    assert store.read("r", 1234, 1000) == data[1234:2234]
    assert store.read("r", size - 1, 1) == data[-1:]
    assert store.read("r", size - 5, 100) == data[-5:]
    assert store.read("r", 5000) == data[5000:]
    assert store.read("r", size) == b""
    assert store.read("r", size + 10, 5) == b""
    assert store.read("r", 3, 0) == b""
    with pytest.raises(NotFound):
        store.read("missing", 0, 10)
    with pytest.raises(NotFound):
        store.read("missing", 0, 0)


def test_readinto(store: AzureStore) -> None:
    data = _payload(20_000, seed=2)
    store.put("r", data)
    buf = bytearray(4096)
    assert store.readinto("r", 100, memoryview(buf)) == 4096
    assert bytes(buf) == data[100:4196]
    assert store.readinto("r", len(data) - 10, memoryview(buf)) == 10
    assert bytes(buf[:10]) == data[-10:]
    assert store.readinto("r", len(data), memoryview(buf)) == 0
    with pytest.raises(NotFound):
        store.readinto("missing", 0, memoryview(buf))


def test_zero_byte_object(store: AzureStore) -> None:
    info = store.put("empty", b"")
    assert info.size == 0
    stat = store.stat("empty")
    assert stat.size == 0
    assert stat.checksums["md5"] == hashlib.md5(b"").hexdigest()
    assert store.read("empty") == b""
    assert store.read("empty", 0, 10) == b""
    assert store.readinto("empty", 0, memoryview(bytearray(8))) == 0

    writer = store.open_writer("empty-mp", size=0, part_size=MiB)
    writer.commit({})
    assert store.stat("empty-mp").size == 0
    assert store.read("empty-mp") == b""


@pytest.mark.parametrize(
    "key",
    ["dir with space/file name.txt", "naïve/文件 #1?&=+%.dat", "emoji/😀 é", "a//double"],
)
def test_unicode_and_space_keys(store: AzureStore, key: str) -> None:
    store.put(key, key.encode())
    assert store.stat(key).key == key
    assert store.read(key) == key.encode()
    assert [i.key for i in store.list(key)] == [key]
    store.delete(key)
    with pytest.raises(NotFound):
        store.stat(key)


# --- integrity ---------------------------------------------------------------------


def test_put_with_wrong_md5_is_integrity_error(store: AzureStore) -> None:
    data = b"payload that the server checks"
    digests = PartDigests(data)
    digests._raw["md5"] = b"\0" * 16
    with pytest.raises(IntegrityError) as info:
        store.put("bad", data, digests=digests)
    assert info.value.retryable
    assert str(info.value).startswith(f"az://{store.container}/bad: ")
    with pytest.raises(NotFound):
        store.stat("bad")


def test_put_uses_md5_from_digests(store: AzureStore) -> None:
    data = b"abc"
    digests = PartDigests(data)
    digests.get("sha256")
    store.put("good", data, digests=digests)
    assert set(digests.known()) == {"sha256", "md5"}


def test_write_part_with_wrong_md5_is_integrity_error(store: AzureStore) -> None:
    data = _payload(1000)
    writer = store.open_writer("bad-part", size=len(data), part_size=len(data))
    digests = PartDigests(data)
    digests._raw["md5"] = b"\1" * 16
    with pytest.raises(IntegrityError):
        writer.write_part(0, data, digests)
    # The engine's retry: same part, right digest.
    writer.write_part(0, data, PartDigests(data))
    writer.commit({})
    assert store.read("bad-part") == data


# --- multipart ---------------------------------------------------------------------


def test_multipart_out_of_order_from_threads(store: AzureStore) -> None:
    part_size = 256 * 1024
    data = _payload(10 * part_size + 12_345, seed=3)
    parts = [data[i : i + part_size] for i in range(0, len(data), part_size)]
    writer = store.open_writer("big/object", size=len(data), part_size=part_size)
    order = list(range(len(parts)))
    random.Random(4).shuffle(order)

    def send(index: int) -> None:
        view = memoryview(parts[index])
        writer.write_part(index, view, PartDigests(view))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(send, order))
    with pytest.raises(NotFound):
        store.stat("big/object")  # nothing visible before commit

    md5 = hashlib.md5(data).hexdigest()
    sha = hashlib.sha256(data).hexdigest()
    info = writer.commit({digest_metadata_key("sha256"): sha, digest_metadata_key("md5"): md5})
    assert info.size == len(data)
    assert store.read("big/object") == data
    stat = store.stat("big/object")
    assert stat.checksums == {"sha256": sha, "md5": md5}
    assert stat.etag == info.etag

    with pytest.raises(StoreError):
        writer.write_part(0, parts[0], PartDigests(parts[0]))
    writer.abort()  # after commit: a no-op, the blob stays
    assert store.stat("big/object").size == len(data)


def test_rewriting_a_part_replaces_it(store: AzureStore) -> None:
    writer = store.open_writer("rw", size=8, part_size=4)
    writer.write_part(0, b"AAAA", PartDigests(b"AAAA"))
    writer.write_part(1, b"BBBB", PartDigests(b"BBBB"))
    writer.write_part(0, b"CCCC", PartDigests(b"CCCC"))
    writer.commit({})
    assert store.read("rw") == b"CCCCBBBB"


def test_commit_with_missing_part_fails(store: AzureStore) -> None:
    writer = store.open_writer("gap", size=12, part_size=4)
    writer.write_part(0, b"0000", PartDigests(b"0000"))
    writer.write_part(2, b"2222", PartDigests(b"2222"))
    with pytest.raises(StoreError, match="1 of 3 parts never written"):
        writer.commit({})
    writer.abort()
    with pytest.raises(NotFound):
        store.stat("gap")


def test_write_part_checks_index_and_size(store: AzureStore) -> None:
    writer = store.open_writer("sizes", size=10, part_size=4)
    with pytest.raises(ValueError):
        writer.write_part(3, b"xx", PartDigests(b"xx"))
    with pytest.raises(ValueError):
        writer.write_part(2, b"xxx", PartDigests(b"xxx"))  # last part is 2 bytes
    writer.abort()


def test_abort_leaves_nothing_visible_and_is_idempotent(store: AzureStore) -> None:
    writer = store.open_writer("aborted/obj", size=8, part_size=4)
    writer.write_part(0, b"aaaa", PartDigests(b"aaaa"))
    writer.abort()
    writer.abort()
    with pytest.raises(NotFound):
        store.stat("aborted/obj")
    assert list(store.list("")) == []
    with pytest.raises(StoreError):
        writer.write_part(1, b"bbbb", PartDigests(b"bbbb"))
    with pytest.raises(StoreError):
        writer.commit({})


def test_abort_keeps_the_blob_it_would_have_replaced(store: AzureStore) -> None:
    store.put("keep", b"original")
    writer = store.open_writer("keep", size=4, part_size=4)
    writer.write_part(0, b"new!", PartDigests(b"new!"))
    writer.abort()
    assert store.read("keep") == b"original"


def test_concurrent_uploads_to_one_key_never_mix(store: AzureStore) -> None:
    first = store.open_writer("race", size=8, part_size=4)
    second = store.open_writer("race", size=8, part_size=4)
    first.write_part(0, b"1111", PartDigests(b"1111"))
    second.write_part(0, b"2222", PartDigests(b"2222"))
    second.write_part(1, b"2222", PartDigests(b"2222"))
    first.write_part(1, b"1111", PartDigests(b"1111"))
    first.commit({})
    assert store.read("race") == b"11111111"
    with pytest.raises(StoreError):
        second.commit({})  # its blocks were discarded by the first commit
    assert store.read("race") == b"11111111"


def test_open_writer_rejects_bad_part_sizes(store: AzureStore) -> None:
    with pytest.raises(ValueError):
        store.open_writer("k", size=10, part_size=0)
    with pytest.raises(ValueError):
        store.open_writer("k", size=50_001, part_size=1)
    with pytest.raises(UsageError):
        store.open_writer("dir/", size=1, part_size=1)


# --- list ----------------------------------------------------------------------------

_TREE = ["a/1", "a/2", "a/b/3", "a/b/c/4", "ab", "b/5", "top"]


def test_list_recursive_and_one_level(store: AzureStore) -> None:
    for key in _TREE:
        digest = hashlib.sha256(key.encode()).hexdigest()
        store.put(key, key.encode(), metadata={digest_metadata_key("sha256"): digest})

    every = list(store.list(""))
    assert [i.key for i in every] == _TREE
    assert all(not i.is_dir for i in every)
    # metadata came with the listing
    assert every[0].checksums["sha256"] == hashlib.sha256(b"a/1").hexdigest()
    assert every[0].size == 3
    assert [i.key for i in store.list("a/")] == ["a/1", "a/2", "a/b/3", "a/b/c/4"]
    assert [i.key for i in store.list("a")] == ["a/1", "a/2", "a/b/3", "a/b/c/4", "ab"]

    top = list(store.list("", recursive=False))
    assert [(i.key, i.is_dir) for i in top] == [
        ("a/", True),
        ("ab", False),
        ("b/", True),
        ("top", False),
    ]
    assert [(i.key, i.is_dir) for i in store.list("a/", recursive=False)] == [
        ("a/1", False),
        ("a/2", False),
        ("a/b/", True),
    ]
    assert [i.key for i in store.list("a/b/c/", recursive=False)] == ["a/b/c/4"]
    assert list(store.list("nothing/")) == []
    assert list(store.list("nothing/", recursive=False)) == []


def test_list_shows_directory_markers_as_directories(store: AzureStore) -> None:
    store.put("d/f", b"x")
    with pytest.raises(UsageError):
        store.put("d/", b"not empty")  # only an empty blob may end in "/"
    store.put("e/", b"")  # an empty directory's marker
    # Other tools create "dir/" marker blobs; a listing shows them as directories, never
    # as files (base.py: recursive listings include markers as is_dir entries).
    with store._service.get_blob_client(store.container, "marker/") as marker:
        marker.upload_blob(b"")
    assert [(i.key, i.is_dir) for i in store.list("")] == [
        ("d/f", False),
        ("e/", True),
        ("marker/", True),
    ]
    assert [(i.key, i.is_dir) for i in store.list("", recursive=False)] == [
        ("d/", True),
        ("e/", True),
        ("marker/", True),
    ]


def test_list_pages(azurite: AzuriteServer, container: str, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(ENV_CONNECTION_STRING, azurite.connection_string)
    service = make_service_client(StoreSettings())
    with AzureStore(container, service, page_size=7) as store:
        keys = [f"p/{i:03d}" for i in range(20)] + [f"q/{i:02d}/x" for i in range(15)]
        for key in keys:
            store.put(key, b"")
        assert [i.key for i in store.list("")] == keys
        assert [i.key for i in store.list("p/")] == keys[:20]
        level = list(store.list("q/", recursive=False))
        assert [i.key for i in level] == [f"q/{i:02d}/" for i in range(15)]
        assert all(i.is_dir for i in level)


def test_page_size_is_bounded(azurite: AzuriteServer, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(ENV_CONNECTION_STRING, azurite.connection_string)
    service = make_service_client(StoreSettings())
    try:
        with pytest.raises(ValueError):
            AzureStore("c" * 3, service, page_size=5001)
    finally:
        service.close()


# --- delete / copy -------------------------------------------------------------------


def test_delete_is_idempotent(store: AzureStore) -> None:
    store.put("gone", b"x")
    store.delete("gone")
    with pytest.raises(NotFound):
        store.stat("gone")
    store.delete("gone")
    store.delete("never/existed")


def test_copy_object(store: AzureStore) -> None:
    data = _payload(3000)
    store.put("src", data, metadata={"mtime": "1700000000.5", "x-a": "1"})
    copied = store.copy_object("src", "dst")
    assert copied.key == "dst"
    assert store.read("dst") == data
    assert copied.metadata == {"mtime": "1700000000.5", "x-a": "1"}
    assert copied.mtime == 1700000000.5

    replaced = store.copy_object("src", "dst2", metadata={"x-b": "2"})
    assert replaced.metadata == {"x-b": "2"}
    assert store.read("dst2") == data

    with pytest.raises(NotFound) as info:
        store.copy_object("missing", "dst3")
    assert info.value.key == "missing"


# --- containers, credentials, errors -----------------------------------------------


def test_missing_container_is_bucket_not_found(
    azurite: AzuriteServer, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv(ENV_CONNECTION_STRING, azurite.connection_string)
    loc = Location("az", "no-such-container", "")
    with AzureStore.from_location(loc, StoreSettings()) as store:
        for call in (
            lambda: store.stat("k"),
            lambda: list(store.list("")),
            lambda: list(store.list("", recursive=False)),
            lambda: store.read("k"),
            lambda: store.put("k", b"x"),
            lambda: store.delete("k"),
        ):
            with pytest.raises(BucketNotFound) as info:
                call()
            assert info.value.fatal
            assert str(info.value) == (
                "az://no-such-container: container does not exist; create it or check the name"
            )
        writer = store.open_writer("k", size=1, part_size=1)
        with pytest.raises(BucketNotFound):
            writer.write_part(0, b"x", PartDigests(b"x"))
        writer.abort()


def test_invalid_container_name(clean_env: pytest.MonkeyPatch) -> None:
    for name in ("ab", "Upper", "a--b", "-ab", "under_score"):
        with pytest.raises(UsageError):
            AzureStore.from_location(Location("az", name, ""), StoreSettings())


def test_no_credentials_is_config_error(clean_env: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("azure.identity") is not None:
        pytest.skip("azure-identity is installed: DefaultAzureCredential would be used")
    with pytest.raises(ConfigError, match="AZURE_STORAGE_CONNECTION_STRING"):
        AzureStore.from_location(Location("az", "cont", ""), StoreSettings())
    clean_env.setenv(ENV_ACCOUNT, "someaccount")
    with pytest.raises(ConfigError, match="AZURE_STORAGE_KEY"):
        AzureStore.from_location(Location("az", "cont", ""), StoreSettings())


def _round_trip(store: AzureStore) -> None:
    store.put("cred/k", b"hello")
    assert store.read("cred/k") == b"hello"
    assert [i.key for i in store.list("cred/")] == ["cred/k"]


def test_account_and_key_with_endpoint(
    azurite: AzuriteServer, container: str, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv(ENV_KEY, AZURITE_KEY)
    settings = StoreSettings(endpoint=azurite.endpoint, account=AZURITE_ACCOUNT)
    with AzureStore.from_location(Location("az", container, ""), settings) as store:
        _round_trip(store)


def test_sas_token_with_endpoint(
    azurite: AzuriteServer, container: str, clean_env: pytest.MonkeyPatch
) -> None:
    sas = generate_container_sas(
        AZURITE_ACCOUNT,
        container,
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, write=True, list=True, delete=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    clean_env.setenv(ENV_SAS, "?" + sas)
    clean_env.setenv(ENV_ACCOUNT, AZURITE_ACCOUNT)
    settings = StoreSettings(endpoint=azurite.endpoint)
    with AzureStore.from_location(Location("az", container, ""), settings) as store:
        _round_trip(store)
        copied = store.copy_object("cred/k", "cred/copy")  # source authorized by the SAS
        assert copied.size == 5


def test_connection_string_with_endpoint_override(
    azurite: AzuriteServer, container: str, clean_env: pytest.MonkeyPatch
) -> None:
    conn = f"AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};EndpointSuffix=invalid"
    clean_env.setenv(ENV_CONNECTION_STRING, conn)
    settings = StoreSettings(endpoint=azurite.endpoint)
    with AzureStore.from_location(Location("az", container, ""), settings) as store:
        _round_trip(store)


def test_wrong_key_is_auth_error_without_secrets(
    azurite: AzuriteServer, container: str, clean_env: pytest.MonkeyPatch
) -> None:
    wrong_key = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk="
    conn = azurite.connection_string.replace(AZURITE_KEY, wrong_key)
    clean_env.setenv(ENV_CONNECTION_STRING, conn)
    with AzureStore.from_location(Location("az", container, ""), StoreSettings()) as store:
        for call in (lambda: store.stat("k"), lambda: store.put("k", b"x")):
            with pytest.raises(AuthError) as info:
                call()
            assert info.value.fatal
            assert wrong_key not in str(info.value)
            assert str(info.value).startswith(f"az://{container}/k: credentials rejected")


def test_unreachable_endpoint_is_transient_without_sas(
    container: str, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv(ENV_SAS, "sv=2024-01-01&sig=SECRETSIGNATURE")
    clean_env.setenv(ENV_ACCOUNT, AZURITE_ACCOUNT)
    # Port 9 (discard) on localhost: connection refused at once.
    settings = StoreSettings(endpoint=f"http://127.0.0.1:9/{AZURITE_ACCOUNT}")
    with (
        AzureStore(container, make_service_client(settings, retries=0)) as store,
        pytest.raises(TransientError) as info,
    ):
        store.stat("k")
    assert "SECRETSIGNATURE" not in str(info.value)
    assert str(info.value).startswith(f"az://{container}/k: network error")


class _FaultHandler(BaseHTTPRequestHandler):
    """Answers every request with the error the test set: real Azure's error codes,
    which Azurite never produces (throttling, Md5Mismatch, permission mismatch)."""

    status = 500
    code = "InternalError"
    headers_out: ClassVar[dict[str, str]] = {}

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = (
            b'<?xml version="1.0" encoding="utf-8"?><Error><Code>'
            + self.code.encode()
            + b"</Code><Message>injected</Message></Error>"
        )
        self.send_response(self.status)
        self.send_header("x-ms-error-code", self.code)
        self.send_header("Content-Type", "application/xml")
        for name, value in self.headers_out.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_DELETE = _reply

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fault_store(container: str, clean_env: pytest.MonkeyPatch) -> Iterator[AzureStore]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FaultHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    clean_env.setenv(ENV_KEY, AZURITE_KEY)
    port = server.server_address[1]
    settings = StoreSettings(
        endpoint=f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}", account=AZURITE_ACCOUNT
    )
    try:
        with AzureStore(container, make_service_client(settings, retries=0)) as store:
            yield store
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(
    ("status", "code", "headers", "expected", "retry_after"),
    [
        (503, "ServerBusy", {"Retry-After": "2"}, Throttled, 2.0),
        (503, "ServerBusy", {}, Throttled, None),
        (429, "TooManyRequests", {"x-ms-retry-after-ms": "1500"}, Throttled, 1.5),
        (500, "InternalError", {}, TransientError, None),
        (403, "AuthorizationPermissionMismatch", {}, PermissionDenied, None),
        (403, "AuthenticationFailed", {}, AuthError, None),
        (409, "LeaseIdMissing", {}, StoreError, None),
    ],
)
def test_error_mapping_of_real_azure_codes(
    fault_store: AzureStore,
    status: int,
    code: str,
    headers: dict[str, str],
    expected: type[StoreError],
    retry_after: float | None,
) -> None:
    _FaultHandler.status, _FaultHandler.code, _FaultHandler.headers_out = status, code, headers
    for call in (lambda: fault_store.stat("k"), lambda: fault_store.put("k", b"x")):
        with pytest.raises(StoreError) as info:
            call()
        assert type(info.value) is expected
        assert str(info.value).startswith(f"az://{fault_store.container}/k: ")
        assert code in str(info.value)
        if isinstance(info.value, Throttled):
            assert info.value.retry_after == retry_after
        if expected is PermissionDenied:
            assert isinstance(info.value, PermissionError)


def test_md5_mismatch_code_is_integrity_error(fault_store: AzureStore) -> None:
    _FaultHandler.status, _FaultHandler.code, _FaultHandler.headers_out = 400, "Md5Mismatch", {}
    with pytest.raises(IntegrityError):
        fault_store.put("k", b"x")
    writer = fault_store.open_writer("k", size=1, part_size=1)
    with pytest.raises(IntegrityError):
        writer.write_part(0, b"x", PartDigests(b"x"))
    writer.abort()


def test_store_is_thread_safe_for_small_objects(store: AzureStore) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                key = f"t{n}/{i}"
                data = os.urandom(100 + i)
                store.put(key, data)
                assert store.read(key) == data
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(list(store.list(""))) == 80


def test_close_twice(store: AzureStore) -> None:
    store.close()
    store.close()
