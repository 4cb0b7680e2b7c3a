"""The lean listings (Azure List Blobs: ``stores/azure/listing.py``; GCS objects.list:
``stores/gcs/listing.py``) against Azurite, fake-gcs-server and a misbehaving server:
they give exactly what the SDK listings give (names, sizes, metadata, checksums,
directory markers, delimited listings, paging), map a missing container or bucket
and a denial as the SDK path does, refuse a DTD or a body that is not a listing, and
a hostile name (``..``, a newline) never takes a copy outside its destination.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from datamover.engine import copy_between
from datamover.errors import BucketNotFound, PermissionDenied, StoreError
from datamover.options import TransferOptions
from datamover.stores import StoreSettings
from datamover.stores.azure import ENV_ACCOUNT, ENV_CONNECTION_STRING, ENV_KEY, ENV_SAS, AzureStore
from datamover.stores.azure.client import make_service_client
from datamover.stores.azure.listing import parse_list_page
from datamover.stores.gcs import GCSStore
from datamover.stores.posix import PosixStore
from datamover.stores.urls import Location

from rawserver import RawServer, Request, response
from servers import AZURITE_ACCOUNT, AZURITE_KEY, AzuriteServer, FakeGcsServer

pytestmark = pytest.mark.cloud

_ENV = (ENV_CONNECTION_STRING, ENV_ACCOUNT, ENV_KEY, ENV_SAS)
_FILES = {
    "a.txt": b"a",
    "d/b.txt": b"bb",
    "d/c.txt": b"",
    "d/e/f.txt": b"ffff",
    "d/g.txt": b"g" * 5000,
    "z.txt": b"zz",
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*_ENV, "DATAMOVER_AZURE_LEAN", "DATAMOVER_GCS_LEAN"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _fill(store: Any) -> None:
    for key, data in _FILES.items():
        store.put(key, data, metadata={"x-kind": key[0], "mtime": "1700000000.5"})
    store.put("d/empty/", b"")  # a directory marker


def _listings(store: Any) -> list[list[Any]]:
    return [
        list(store.list("")),
        list(store.list("d/")),
        list(store.list("d", recursive=False)),
        list(store.list("", recursive=False)),
        list(store.list("nothing/")),
    ]


def _azure(azurite: AzuriteServer, container: str, page_size: int) -> AzureStore:
    settings = StoreSettings(endpoint=azurite.endpoint, account=AZURITE_ACCOUNT)
    return AzureStore(container, make_service_client(settings), page_size=page_size)


def test_azure_lean_listing_is_the_sdks(azurite: AzuriteServer, clean_env: Any) -> None:
    clean_env.setenv(ENV_KEY, AZURITE_KEY)
    container = f"t{secrets.token_hex(8)}"
    azurite.make_bucket(container)
    with _azure(azurite, container, 2) as lean:
        assert lean._lean is not None
        _fill(lean)
        got = _listings(lean)
    clean_env.setenv("DATAMOVER_AZURE_LEAN", "0")
    with _azure(azurite, container, 2) as sdk:
        assert sdk._lean is None
        assert got == _listings(sdk)
    keys = [info.key for info in got[0]]
    assert keys == sorted(keys) and "d/empty/" in keys and len(keys) == len(_FILES) + 1
    assert [i.key for i in got[2]] == ["d/b.txt", "d/c.txt", "d/e/", "d/empty/", "d/g.txt"]
    listed = {info.key: info for info in got[0]}
    assert listed["d/g.txt"].size == 5000 and listed["d/g.txt"].metadata["x-kind"] == "d"
    assert listed["d/g.txt"].mtime == 1700000000.5
    assert listed["d/g.txt"].checksums["md5"]


def test_gcs_lean_listing_is_the_sdks(gcs: FakeGcsServer, clean_env: Any) -> None:
    bucket = f"t-{secrets.token_hex(6)}"
    gcs.make_bucket(bucket)
    loc = Location("gs", bucket, "")

    def store() -> GCSStore:
        settings = StoreSettings(endpoint=gcs.endpoint, extra={"page_size": 2})
        return GCSStore.from_location(loc, settings)

    with store() as lean:
        assert lean._lean is not None
        _fill(lean)
        got = _listings(lean)
        pending = list(lean.list_pending_uploads(""))
    clean_env.setenv("DATAMOVER_GCS_LEAN", "0")
    with store() as sdk:
        assert sdk._lean is None
        assert got == _listings(sdk)
        assert pending == list(sdk.list_pending_uploads(""))
    listed = {info.key: info for info in got[0]}
    assert listed["d/g.txt"].size == 5000 and listed["d/g.txt"].metadata["x-kind"] == "d"
    assert listed["d/g.txt"].provider_checksums["crc32c"]


def test_lean_listings_map_a_missing_container_or_bucket(
    azurite: AzuriteServer, gcs: FakeGcsServer, clean_env: Any
) -> None:
    clean_env.setenv(ENV_KEY, AZURITE_KEY)
    with _azure(azurite, "nosuchcontainer", 100) as store:
        assert store._lean is not None
        with pytest.raises(BucketNotFound):
            list(store.list(""))
    settings = StoreSettings(endpoint=gcs.endpoint)
    with GCSStore.from_location(Location("gs", "no-such-bucket", ""), settings) as gstore:
        assert gstore._lean is not None
        with pytest.raises(BucketNotFound):
            list(gstore.list(""))


# --- a server that sends what Azurite would not ----------------------------------------


def _raw_azure(server: RawServer, clean_env: Any) -> AzureStore:
    clean_env.setenv(ENV_KEY, AZURITE_KEY)
    settings = StoreSettings(endpoint=f"{server.url}/{AZURITE_ACCOUNT}", account=AZURITE_ACCOUNT)
    return AzureStore("c", make_service_client(settings, retries=0), page_size=100)


def _xml(blobs: str, marker: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<EnumerationResults ServiceEndpoint="http://x/" ContainerName="c">'
        f"<Blobs>{blobs}</Blobs><NextMarker>{marker}</NextMarker></EnumerationResults>"
    ).encode()


def _blob(name: str, size: int, encoded: bool = False) -> str:
    attr = ' Encoded="true"' if encoded else ""
    return (
        f"<Blob><Name{attr}>{name}</Name><Properties>"
        "<Last-Modified>Mon, 01 Jan 2024 00:00:00 GMT</Last-Modified><Etag>0x1</Etag>"
        f"<Content-Length>{size}</Content-Length><BlobType>BlockBlob</BlobType>"
        "</Properties><Metadata /></Blob>"
    )


_HOSTILE = [
    ("h/ok.txt", False),
    ("h/../escaped.txt", False),
    ("h/../../../../etc/evil", False),
    (quote("h/new\nline.txt"), True),  # how Azure sends a name XML can't carry
    ("h/tab&#9;and&#10;newline.txt", False),
]


def _hostile_server(request: Request) -> bytes:
    if request.query.get("comp") == "list":
        return response(200, _xml("".join(_blob(n, 1, e) for n, e in _HOSTILE)))
    headers = {
        "Content-Range": "bytes 0-0/1",
        "ETag": '"0x1"',
        "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT",
        "x-ms-blob-type": "BlockBlob",
    }
    return response(206, b"x", headers)


def test_azure_lean_listing_of_hostile_names_stays_inside(clean_env: Any, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dst = tmp_path / "dst" / "deep"
    dst.mkdir(parents=True)
    with RawServer(_hostile_server) as server, _raw_azure(server, clean_env) as store:
        assert store._lean is not None
        names = [info.key for info in store.list("h/")]
        expected = ["h/ok.txt", "h/../escaped.txt", "h/../../../../etc/evil", "h/new\nline.txt"]
        assert sorted(names) == sorted([*expected, "h/tab\tand\nnewline.txt"])
        report = copy_between(
            store,
            "h/",
            PosixStore(),
            str(dst).lstrip("/"),
            TransferOptions(transfers=4, manifest=str(tmp_path / "m.jsonl")),
        )
    assert (dst / "ok.txt").read_bytes() == b"x"
    failed = {path for path, _ in report.failures}
    assert "../escaped.txt" in failed and "../../../../etc/evil" in failed
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")}
    assert written <= {"dst", "outside", "m.jsonl"}, written
    assert not (tmp_path / "dst" / "escaped.txt").exists()
    assert list(outside.iterdir()) == []


def test_azure_lean_listing_refuses_a_dtd_and_names_a_bad_page(clean_env: Any) -> None:
    dtd = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><EnumerationResults/>'
    with pytest.raises(StoreError, match="DTD"):
        parse_list_page(dtd)
    answers: Iterator[bytes] = iter(
        [
            response(200, b"<EnumerationResults><Blobs><Blob>"),
            response(200, b"<EnumerationResults><Blobs><Blob>"),
            response(200, _xml(_blob("k", -1))),
            response(403, b"", {"x-ms-error-code": "AuthorizationPermissionMismatch"}),
        ]
    )
    with RawServer(lambda r: next(answers)) as server, _raw_azure(server, clean_env) as store:
        messages = []
        for kind in (StoreError, StoreError, StoreError, PermissionDenied):
            with pytest.raises(kind) as caught:
                list(store.list(""))
            messages.append(str(caught.value))
    assert all("\n" not in m for m in messages), messages
    assert "malformed" in messages[0] and "size" in messages[2], messages


def test_gcs_lean_listing_of_hostile_names_stays_inside(
    gcs: FakeGcsServer, clean_env: Any, tmp_path: Path
) -> None:
    bucket = f"t-{secrets.token_hex(6)}"
    gcs.make_bucket(bucket)
    dst = tmp_path / "dst" / "deep"
    dst.mkdir(parents=True)
    settings = StoreSettings(endpoint=gcs.endpoint)
    with GCSStore.from_location(Location("gs", bucket, ""), settings) as store:
        assert store._lean is not None
        hostile = ["h/ok.txt", "h/../escaped.txt", "h/../../../../etc/evil", "h/new\nline.txt"]
        for name in hostile:
            store.put(name, b"x")  # the name travels in the upload's JSON, kept as given
        assert sorted(info.key for info in store.list("h/")) == sorted(hostile)
        report = copy_between(
            store,
            "h/",
            PosixStore(),
            str(dst).lstrip("/"),
            TransferOptions(transfers=4, manifest=str(tmp_path / "m.jsonl")),
        )
    assert (dst / "ok.txt").read_bytes() == b"x"
    failed = {path for path, _ in report.failures}
    assert "../escaped.txt" in failed and "../../../../etc/evil" in failed
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")}
    assert written <= {"dst", "m.jsonl"}, written


def test_gcs_lean_listing_refuses_a_body_that_is_not_a_listing(clean_env: Any) -> None:
    answers = iter(
        [
            response(200, b'{"items": "nope"}', {"Content-Type": "application/json"}),
            response(200, b'{"items": [1]}', {"Content-Type": "application/json"}),
            response(200, b"not json", {"Content-Type": "application/json"}),
        ]
    )
    with RawServer(lambda r: next(answers)) as server:
        settings = StoreSettings(endpoint=server.url)
        with GCSStore.from_location(Location("gs", "b", ""), settings) as store:
            assert store._lean is not None
            for _ in range(3):
                with pytest.raises(StoreError, match="malformed listing"):
                    list(store.list(""))
        sent = server.requests[0]
        assert sent.query["fields"].startswith("items(name,size,")


def test_azure_lean_read_object_takes_the_listed_info_only_for_the_listed_blob(
    azurite: AzuriteServer, clean_env: Any
) -> None:
    """``read_object`` with a listing's entry returns that entry when the Get Blob's
    ETag is the listed one (one metadata parse per file), and the blob's own
    properties when it was replaced since it was listed."""
    clean_env.setenv(ENV_KEY, AZURITE_KEY)
    container = f"t{secrets.token_hex(8)}"
    azurite.make_bucket(container)
    with _azure(azurite, container, 100) as store:
        store.put("k", b"old", metadata={"x-kind": "old"})
        (listed,) = list(store.list(""))
        data, info = store.read_object("k", listed)
        assert bytes(data) == b"old" and info is listed
        store.put("k", b"new", metadata={"x-kind": "new"})  # same size, new ETag
        data, info = store.read_object("k", listed)
        assert bytes(data) == b"new" and info.metadata["x-kind"] == "new"
        assert info.etag != listed.etag
