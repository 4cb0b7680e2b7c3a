"""The Azure and GCS stores against a misbehaving server (``rawserver.RawServer``):
the SDKs page and read by themselves, so these check what datamover adds around them
(``stores/httpbounds.py`` on their ``requests`` sessions, ``PageGuard`` over their
pages, bounded sinks for downloads). A repeated ``NextMarker`` / ``nextPageToken``,
a listing body that claims gigabytes, and an object body longer than the range asked
for each end in one ``StoreError`` before much is read."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator

import pytest

from datamover.errors import SourceChanged, StoreError
from datamover.stores import StoreSettings, bounds
from datamover.stores.azure import AzureStore, make_service_client
from datamover.stores.base import ObjectInfo
from datamover.stores.bounds import ResponseTooLarge
from datamover.stores.gcs import GCSStore
from datamover.stores.gcs import store as gcs_store
from datamover.stores.gcs.client import make_client

from rawserver import RawServer, Request, response

HUGE = 3 * 1024**3
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _error(call: Callable[[], object], kind: type[BaseException] = StoreError) -> str:
    with pytest.raises(kind) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def _claims(length: int, status: int = 200, headers: str = "") -> bytes:
    return f"HTTP/1.1 {status} X\r\nContent-Length: {length}\r\n{headers}\r\n".encode() + b"x" * 100


def _endless_chunks(status: int, headers: str = "") -> Iterator[bytes]:
    yield f"HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\n{headers}\r\n".encode()
    chunk = b"10000\r\n" + b"x" * 65536 + b"\r\n"
    while True:
        yield chunk


# -- Azure --------------------------------------------------------------------------


@pytest.fixture
def azure_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_SAS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_KEY", KEY)


def _azure(server: RawServer) -> AzureStore:
    settings = StoreSettings(endpoint=f"{server.url}/{ACCOUNT}", account=ACCOUNT)
    return AzureStore("c", make_service_client(settings, retries=0), page_size=100)


def _blobs(names: list[str], marker: str | None) -> bytes:
    blobs = "".join(
        f"<Blob><Name>{n}</Name><Properties>"
        "<Last-Modified>Mon, 01 Jan 2024 00:00:00 GMT</Last-Modified><Etag>0x1</Etag>"
        "<Content-Length>1</Content-Length><BlobType>BlockBlob</BlobType>"
        "</Properties><Metadata /></Blob>"
        for n in names
    )
    return response(
        200,
        (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<EnumerationResults ServiceEndpoint="http://x/{ACCOUNT}" ContainerName="c">'
            f"<MaxResults>100</MaxResults><Blobs>{blobs}</Blobs>"
            f"<NextMarker>{marker or ''}</NextMarker></EnumerationResults>"
        ).encode(),
        {"Content-Type": "application/xml", "x-ms-version": "2021-08-06"},
    )


@pytest.mark.usefixtures("azure_env")
def test_azure_repeated_next_marker_is_an_error() -> None:
    following = {"": "A", "A": "B", "B": "A"}

    def answer(request: Request) -> bytes:
        marker = request.query.get("marker", "")
        return _blobs([f"k{marker}"], following[marker])

    with RawServer(answer) as server:
        store = _azure(server)
        message = _error(lambda: list(store.list("")))
        assert "repeated the continuation token 'A'" in message
        assert len(server.requests) == 3
        store.close()


@pytest.mark.usefixtures("azure_env")
def test_azure_endless_empty_pages_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bounds, "MAX_EMPTY_PAGES", 50)  # the SDK takes ~10 ms a page
    markers = itertools.count()
    with RawServer(lambda r: _blobs([], f"m{next(markers)}")) as server:
        store = _azure(server)
        assert "51 empty pages in a row" in _error(lambda: list(store.list("")))
        assert len(server.requests) == 51
        store.close()


@pytest.mark.usefixtures("azure_env")
def test_azure_listing_that_claims_gigabytes_is_refused() -> None:
    with RawServer(lambda r: _claims(HUGE, 200, "Content-Type: application/xml\r\n")) as server:
        store = _azure(server)
        message = _error(lambda: list(store.list("")), ResponseTooLarge)
        assert f"a body of {HUGE} bytes" in message
        assert "sig=" not in message and "?" not in message  # no query (a SAS) shown
        store.close()


@pytest.mark.usefixtures("azure_env")
def test_azure_endless_chunked_listing_is_cut_off() -> None:
    with RawServer(lambda r: _endless_chunks(200, "Content-Type: application/xml\r\n")) as s:
        store = _azure(s)
        _error(lambda: list(store.list("")), ResponseTooLarge)
        assert s.sent < 256 * 1024 * 1024
        store.close()


def _blob_get(length: int, total: int) -> bytes:
    return _claims(
        length,
        206,
        f"Content-Range: bytes 0-{total - 1}/{total}\r\nx-ms-blob-type: BlockBlob\r\n"
        "ETag: 0x1\r\nLast-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n",
    )


@pytest.mark.usefixtures("azure_env")
def test_azure_ranged_read_never_takes_more_than_the_buffer() -> None:
    """An answer longer than the range asked for is refused from its Content-Length
    (the SDK itself would read the whole first answer into memory)."""
    with RawServer(lambda r: _blob_get(HUGE, HUGE)) as server:
        store = _azure(server)
        buf = memoryview(bytearray(1024 * 1024))
        message = _error(lambda: store.readinto("k", 0, buf), ResponseTooLarge)
        assert "for a range of 1048576" in message
        assert len(server.requests) == 1
        store.close()


@pytest.mark.usefixtures("azure_env")
def test_azure_whole_reads_are_bounded_by_the_listing() -> None:
    """A blob that claims to be 3 GB: read_object with the listing's 10 bytes asks for
    11 and refuses the rest (SourceChanged); read() without a length refuses to read it
    whole."""
    with RawServer(lambda r: _blob_get(11, HUGE)) as server:
        store = _azure(server)
        listed = ObjectInfo(key="k", size=10)
        assert "when listed" in _error(lambda: store.read_object("k", listed), SourceChanged)
        store.close()
    with RawServer(lambda r: _blob_get(100, HUGE)) as server:
        store = _azure(server)
        assert "whole-object read" in _error(lambda: store.read("k"))
        store.close()


# -- GCS ------------------------------------------------------------------------------


def _gcs(server: RawServer) -> GCSStore:
    settings = StoreSettings(endpoint=server.url)
    return GCSStore(make_client("bkt", settings), "bkt", page_size=100, retry_deadline=1)


def _objects(names: list[str], token: str | None) -> bytes:
    body: dict[str, object] = {
        "kind": "storage#objects",
        "items": [{"name": n, "bucket": "bkt", "size": "1", "generation": "1"} for n in names],
    }
    if token:
        body["nextPageToken"] = token
    return response(200, json.dumps(body).encode(), {"Content-Type": "application/json"})


def test_gcs_repeated_page_token_is_an_error() -> None:
    following = {"": "A", "A": "B", "B": "A"}

    def answer(request: Request) -> bytes:
        token = request.query.get("pageToken", "")
        return _objects([f"k{token}"], following[token])

    with RawServer(answer) as server:
        store = _gcs(server)
        assert "repeated the continuation token 'A'" in _error(lambda: list(store.list("")))
        assert len([r for r in server.requests if r.path.endswith("/o")]) == 3
        store.close()


def test_gcs_a_server_that_ignores_the_token_repeats_a_page() -> None:
    tokens = itertools.count()
    with RawServer(lambda r: _objects(["a", "b"], f"t{next(tokens)}")) as server:
        store = _gcs(server)
        assert "repeated a page" in _error(lambda: list(store.list("")))
        store.close()


def test_gcs_holds_a_bounded_number_of_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The prefixes of a delimited listing wait in a heap to come out in key order
    (the emulator sends them all on the first page); a server sending endless ones
    can't grow it past ``MAX_HELD_PREFIXES``: the smallest goes out early."""
    monkeypatch.setattr(gcs_store, "MAX_HELD_PREFIXES", 5)
    names = [f"d/p{i:02d}/" for i in range(20)]

    def answer(request: Request) -> bytes:
        if request.query.get("pageToken"):
            return _objects(["d/zz"], None)
        body = {"kind": "storage#objects", "prefixes": names, "nextPageToken": "t"}
        return response(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    with RawServer(answer) as server:
        store = _gcs(server)
        listing = store.list("d/", recursive=False)
        first = next(listing)
        assert first.key == "d/p00/"
        assert len([r for r in server.requests if r.path.endswith("/o")]) == 1  # page 1 only
        assert [first.key, *(i.key for i in listing)] == [*names, "d/zz"]
        store.close()


def test_gcs_listing_that_claims_gigabytes_is_refused() -> None:
    with RawServer(lambda r: _claims(HUGE, 200, "Content-Type: application/json\r\n")) as s:
        store = _gcs(s)
        assert f"a body of {HUGE} bytes" in _error(lambda: list(store.list("")), ResponseTooLarge)
        store.close()


def test_gcs_endless_download_is_cut_off_at_the_buffer() -> None:
    """Chunked (no length to refuse up front): cut off as the bytes arrive."""
    with RawServer(lambda r: _endless_chunks(206)) as server:
        store = _gcs(server)
        buf = memoryview(bytearray(1024 * 1024))
        _error(lambda: store.readinto("k", 0, buf), ResponseTooLarge)
        _error(lambda: store.read("k", 0, 1000), ResponseTooLarge)
        assert "whole-object read" in _error(lambda: store.read("k"))
        assert server.sent < 1024 * 1024 * 1024
        store.close()


def test_gcs_ranged_read_refuses_a_long_content_length() -> None:
    with RawServer(lambda r: _claims(HUGE, 206)) as server:
        store = _gcs(server)
        buf = memoryview(bytearray(4096))
        assert "for a range of 4096" in _error(
            lambda: store.readinto("k", 0, buf), ResponseTooLarge
        )
        store.close()


def test_gcs_small_file_that_grew_is_refused_before_reading() -> None:
    def answer(request: Request) -> bytes:
        if "alt=media" in request.target:
            return _claims(HUGE, 206)
        resource = {"name": "k", "bucket": "bkt", "size": str(HUGE), "generation": "7"}
        return response(200, json.dumps(resource).encode(), {"Content-Type": "application/json"})

    with RawServer(answer) as server:
        store = _gcs(server)
        listed = ObjectInfo(key="k", size=10)
        assert "when listed" in _error(lambda: store.read_object("k", listed), SourceChanged)
        assert all("alt=media" not in r.target for r in server.requests)
        store.close()
