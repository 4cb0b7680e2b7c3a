"""Property-based fuzzing (hypothesis) of everything datamover itself parses from what
servers send: whatever the bytes, the answer is a parsed result or an error of the
``datamover.errors`` tree, never another exception (no KeyError, ValueError,
UnicodeDecodeError, IndexError, RecursionError, ... escaping).

* S3, lean path: whole HTTP responses (status line, headers, lengths, chunked bodies,
  trailers, error XML) fed through an in-memory socket to ``BucketClient.lean_request``
  and to ``S3Store``'s stat/read/readinto/read_object/list; the ListObjectsV2 XML
  parser; error XML and its mapping; HEAD headers as ``ObjectInfo``; boto3's parsed
  listing dicts.
* Azure and GCS: their listing and resource responses go through the real SDK (on a
  ``requests`` adapter that answers from memory, behind datamover's own
  ``BoundedAdapter``) into the store, and their mapping functions get objects of any
  shape.

Inputs are random and mutated valid documents. Fixed seed (``derandomize``), no
example database, 100 to 150 examples per target (60 where each goes through an
SDK): about ten seconds in all.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
import requests
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobProperties, BlobServiceClient
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from requests.adapters import HTTPAdapter
from urllib3.response import HTTPResponse

from datamover.errors import DatamoverError
from datamover.stores import StoreSettings
from datamover.stores.azure import AzureStore
from datamover.stores.azure.listing import ListedBlob
from datamover.stores.azure.listing import parse_list_page as parse_blob_page
from datamover.stores.azure.metadata import (
    from_azure_metadata,
    is_directory_marker,
    listed_info,
    properties_info,
)
from datamover.stores.base import ObjectInfo
from datamover.stores.gcs import GCSStore
from datamover.stores.httpbounds import BoundedAdapter
from datamover.stores.s3 import S3Store
from datamover.stores.s3.errors import classify_error
from datamover.stores.s3.lean import LeanS3, Response
from datamover.stores.s3.listing import page_entries, parse_list_page
from datamover.stores.s3.objectinfo import header_size, lean_info

T = TypeVar("T")

FUZZ = settings(
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Fragments worth splicing into documents: markup, escapes, numbers that overflow,
#: bytes that are not UTF-8, HTTP framing.
NASTY = [
    b"<",
    b">",
    b"&",
    b"&amp;",
    b"&#0;",
    b"<!DOCTYPE x>",
    b"<![CDATA[",
    b"\x00",
    b"\xff\xfe",
    b"\xc3",
    b"%",
    b"%ff",
    b"%00",
    b"-1",
    b"99999999999999999999999999",
    b"1e400",
    b"nan",
    b"\r\n",
    b"\r\n\r\n",
    b"0\r\n\r\n",
    b"ffffffffffffffff\r\n",
    b";ext=1",
    b"chunked",
    b":",
    b" ",
    b'"',
    b"{",
    b"}",
    b"[",
    b"null",
    "²".encode("latin-1"),
]


def _run(call: Callable[[], T]) -> T | None:
    """``call``'s result, or None when it raised one of datamover's own errors."""
    try:
        return call()
    except DatamoverError:
        return None


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "repeat"]))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(NASTY) | st.binary(max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 32))]
        elif op == "truncate":
            del data[at:]
        else:
            end = draw(st.integers(at, min(len(data), at + 64)))
            data[at:at] = data[at:end]
    return bytes(data)


# -- S3: ListObjectsV2 XML --------------------------------------------------------------

_texts = st.text(max_size=20) | st.sampled_from(["", "0", "-1", "1e3", "12", "²", "9" * 30])


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@st.composite
def list_pages(draw: st.DrawFn) -> bytes:
    encoded = draw(st.booleans())
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.text(max_size=12))
        key = quote(key) if encoded else _xml_escape(key)
        fields = {
            "Key": key if draw(st.booleans()) else _xml_escape(draw(_texts)),
            "Size": _xml_escape(draw(_texts | st.integers(-5, 2**70).map(str))),
            "ETag": _xml_escape(draw(_texts)),
            "LastModified": draw(
                st.sampled_from(["2024-01-01T00:00:00.000Z", "", "garbage", "9999-99-99"])
                | _texts.map(_xml_escape)
            ),
        }
        kept = draw(st.lists(st.sampled_from(sorted(fields)), unique=True))
        parts.append(
            "<Contents>" + "".join(f"<{f}>{fields[f]}</{f}>" for f in kept) + "</Contents>"
        )
    for _ in range(draw(st.integers(0, 2))):
        parts.append(
            f"<CommonPrefixes><Prefix>{_xml_escape(draw(_texts))}</Prefix></CommonPrefixes>"
        )
    truncated = draw(st.sampled_from(["true", "false", "TRUE", "", "yes"]))
    token = _xml_escape(draw(_texts))
    ns = ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"' if draw(st.booleans()) else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult{ns}>'
        f"<EncodingType>{'url' if encoded else ''}</EncodingType>"
        f"<IsTruncated>{truncated}</IsTruncated>"
        f"<NextContinuationToken>{token}</NextContinuationToken>{''.join(parts)}"
        "</ListBucketResult>"
    ).encode()


@FUZZ
@given(st.binary(max_size=400) | list_pages() | mutated(list_pages()))
def test_list_page_parser(body: bytes) -> None:
    parsed = _run(lambda: parse_list_page(body))
    if parsed is not None:
        entries, token = parsed
        assert token is None or isinstance(token, str)
        assert [e.key for e in entries] == sorted(e.key for e in entries)
        assert all(isinstance(e.size, int) and e.size >= 0 and e.key for e in entries)


_values = st.none() | st.integers(-(2**70), 2**70) | st.text(max_size=10) | st.booleans()
_values |= st.datetimes(timezones=st.just(UTC)) | st.binary(max_size=4)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["Contents", "CommonPrefixes", "Other"]),
        st.none()
        | st.lists(
            st.dictionaries(
                st.sampled_from(["Key", "Size", "ETag", "LastModified", "Prefix"]), _values
            ),
            max_size=4,
        ),
    )
)
def test_boto3_listing_dicts(page: dict[str, Any]) -> None:
    entries = _run(lambda: page_entries(page))
    if entries is not None:
        assert all(isinstance(e.size, int) and e.size >= 0 for e in entries)


# -- S3: error XML, HEAD headers --------------------------------------------------------


@st.composite
def error_bodies(draw: st.DrawFn) -> bytes:
    code = draw(
        st.sampled_from(["NoSuchKey", "SlowDown", "AccessDenied", "InternalError"]) | _texts
    )
    message = draw(_texts)
    return f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()


@FUZZ
@given(
    st.integers(0, 999) | st.none(),
    error_bodies() | mutated(error_bodies()) | st.binary(max_size=200),
    st.none() | _texts,
)
def test_error_bodies_map_to_store_errors(
    status: int | None, body: bytes, retry_after: str | None
) -> None:
    code, message = Response(status or 500, {}, body).error()
    error = classify_error(code, status, message, retry_after, "b", "k")
    assert isinstance(error, DatamoverError)
    assert "\n" not in str(error) or "\n" in message


_header_names = st.sampled_from(
    ["content-length", "last-modified", "etag", "x-amz-meta-mtime", "x-amz-meta-mode",
     "x-amz-meta-uid", "x-amz-meta-datamover-sha256", "x-amz-version-id",
     "x-amz-server-side-encryption", "retry-after"]
)  # fmt: skip
_header_values = (
    st.sampled_from(
        ["", "Mon, 01 Jan 2024 00:00:00 GMT", "1700000000.5", "33188", "-1", "9" * 5000, "1e400"]
    )
    | _texts
)


@FUZZ
@given(st.dictionaries(_header_names, _header_values))
def test_head_headers_map_to_object_info(headers: dict[str, str]) -> None:
    size = _run(lambda: header_size(headers, "s3://b/k", "k"))
    info = lean_info("k", Response(200, headers), size or 0)
    assert isinstance(info, ObjectInfo)
    assert info.mtime is None or isinstance(info.mtime, float)


# -- S3: whole responses through the lean client -----------------------------------------


class _Wire:
    """An in-memory socket: swallows the request, answers with ``reply`` in pieces of
    ``step`` bytes (so every parser boundary gets crossed)."""

    def __init__(self, reply: bytes, step: int) -> None:
        self.reply, self.step, self.pos = reply, step, 0

    def setsockopt(self, *args: object) -> None:
        pass

    def settimeout(self, timeout: float) -> None:
        pass

    def sendall(self, data: object) -> None:
        pass

    def sendmsg(self, buffers: list[Any]) -> int:
        return sum(memoryview(b).nbytes for b in buffers)

    def recv(self, n: int) -> bytes:
        chunk = self.reply[self.pos : self.pos + min(n, self.step)]
        self.pos += len(chunk)
        return chunk

    def recv_into(self, view: memoryview) -> int:
        chunk = self.recv(len(view))
        view[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        pass


@st.composite
def http_responses(draw: st.DrawFn) -> bytes:
    status = draw(st.sampled_from([200, 206, 204, 304, 100, 404, 403, 416, 500, 503]))
    body = draw(st.binary(max_size=200) | error_bodies() | list_pages())
    headers = draw(st.lists(st.tuples(_header_names, _header_values), max_size=4))
    framing = draw(st.sampled_from(["length", "chunked", "none", "short", "long"]))
    if framing == "chunked":
        pieces = []
        rest = body
        while rest:
            n = draw(st.integers(1, max(1, len(rest))))
            ext = draw(st.sampled_from(["", ";a=b", ";x"]))
            pieces.append(f"{n:x}{ext}\r\n".encode() + rest[:n] + b"\r\n")
            rest = rest[n:]
        trailer = draw(st.sampled_from([b"", b"x-trailer: 1\r\n", b"junk\r\n", b"a:b\r\nc\r\n"]))
        payload = b"".join(pieces) + b"0\r\n" + trailer + b"\r\n"
        headers.append(("Transfer-Encoding", "chunked"))
    else:
        payload = body
        length = {"length": len(body), "short": max(0, len(body) - 3), "long": len(body) + 50}
        if framing in length:
            headers.append(("Content-Length", str(length[framing])))
    head = f"HTTP/1.1 {status} Whatever\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    interim = draw(st.sampled_from([b"", b"HTTP/1.1 100 Continue\r\n\r\n"]))
    return interim + head.encode("latin-1", "replace") + b"\r\n" + payload


def _lean(reply: bytes, step: int) -> LeanS3:
    def transport(address: tuple[str, int], timeout: float) -> socket.socket:
        return _Wire(reply, step)  # type: ignore[return-value]

    return LeanS3(
        endpoint="http://127.0.0.1:1",
        bucket="b",
        region="us-east-1",
        path_style=True,
        credentials=lambda: SimpleNamespace(access_key="a", secret_key="s", token=None),
        ca_bundle=None,
        transport=transport,
        sleep=lambda seconds: None,
    )


@pytest.fixture(scope="module")
def s3_store() -> Iterator[S3Store]:
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="s")
    store = S3Store("b", StoreSettings(endpoint="http://127.0.0.1:1"), page_size=50)
    store._s3._bucket_seen = True  # a 404 is not followed by a HeadBucket over boto3
    yield store
    store.close()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


_REDIRECTING = re.compile(rb"HTTP/1\.[01] (30[1278]|400) ")


@settings(FUZZ, max_examples=150)
@given(http_responses() | mutated(http_responses()), st.integers(1, 64))
def test_lean_responses(s3_store: S3Store, reply: bytes, step: int) -> None:
    """The same reply to every request of one store call; a redirect (which hands the
    request to boto3, and so to a real socket) is left out of the store calls."""
    client = s3_store._s3
    client.lean = _lean(reply, step)
    got = _run(lambda: client.lean_request("GET", "k", max_body=1000))
    assert got is None or isinstance(got, Response)
    if _REDIRECTING.search(reply):
        return
    for call in (
        lambda: s3_store.stat("k"),
        lambda: s3_store.read("k", 0, 100),
        lambda: s3_store.read("k"),
        lambda: s3_store.readinto("k", 5, memoryview(bytearray(64))),
        lambda: s3_store.read_object("k", ObjectInfo(key="k", size=40)),
        lambda: list(s3_store.list("")),
    ):
        client.lean = _lean(reply, step)
        _run(call)


# -- Azure --------------------------------------------------------------------------------


class _Canned(HTTPAdapter):
    """Answers every request from memory with (status, headers, body)."""

    answer: tuple[int, dict[str, str], bytes] = (200, {}, b"")

    def send(self, request: requests.PreparedRequest, stream: bool = False, **kwargs: Any) -> Any:
        status, headers, body = self.answer
        raw = HTTPResponse(
            body=io.BytesIO(body),
            headers=headers,
            status=status,
            preload_content=False,
            decode_content=False,
            request_method=request.method,
        )
        return self.build_response(request, raw)


class _Fuzzed(BoundedAdapter, _Canned):
    """datamover's bounds in front of the canned answers, as in the real stores."""


def _session(adapter: _Fuzzed) -> requests.Session:
    session = requests.Session()
    session.mount("http://", adapter)
    return session


@st.composite
def blob_listings(draw: st.DrawFn) -> bytes:
    blobs = []
    for _ in range(draw(st.integers(0, 3))):
        props = {
            "Content-Length": draw(_texts | st.integers(-5, 2**70).map(str)),
            "Last-Modified": draw(st.sampled_from(["Mon, 01 Jan 2024 00:00:00 GMT", "x"])),
            "Etag": draw(_texts),
            "Content-MD5": draw(st.sampled_from(["", "AAAA", "1B2M2Y8AsgTpgAmY7PhCfg==", "%"])),
        }
        kept = draw(st.lists(st.sampled_from(sorted(props)), unique=True))
        inner = "".join(f"<{k}>{_xml_escape(props[k])}</{k}>" for k in kept)
        meta = "".join(
            f"<{draw(st.sampled_from(['mtime', 'mode', 'datamover_sha256', 'a']))}>"
            f"{_xml_escape(draw(_texts))}</{'x'}>"
            for _ in range(draw(st.integers(0, 2)))
        )
        name = _xml_escape(draw(st.text(max_size=8)))
        blobs.append(
            f"<Blob><Name>{name}</Name><Properties>{inner}</Properties>"
            f"<Metadata>{meta}</Metadata></Blob>"
        )
    marker = _xml_escape(draw(_texts))
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<EnumerationResults ServiceEndpoint="http://x/a" ContainerName="c">'
        f"<Blobs>{''.join(blobs)}</Blobs><NextMarker>{marker}</NextMarker>"
        "</EnumerationResults>"
    ).encode()


@pytest.fixture(scope="module")
def azure_store() -> Iterator[tuple[AzureStore, _Fuzzed]]:
    adapter = _Fuzzed(max_body=64 * 1024)
    service = BlobServiceClient(
        "http://127.0.0.1:1/a",
        credential={"account_name": "a", "account_key": "a2V5"},
        transport=RequestsTransport(session=_session(adapter), session_owner=True),
        retry_total=0,
    )
    # The SDK's parsers are what this fuzzes (the adapter answers the SDK's requests);
    # the lean path would try 127.0.0.1:1 itself, and back off between tries.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATAMOVER_AZURE_LEAN", "0")
        store = AzureStore("c", service, page_size=5)
    yield store, adapter
    store.close()


@settings(FUZZ, max_examples=60)
@given(
    st.sampled_from([200, 206, 404, 500]),
    blob_listings() | mutated(blob_listings()) | st.binary(max_size=200),
    st.booleans(),
)
def test_azure_responses(
    azure_store: tuple[AzureStore, _Fuzzed], status: int, body: bytes, chunked: bool
) -> None:
    store, adapter = azure_store
    headers = {"Content-Type": "application/xml", "x-ms-version": "2021-08-06"}
    if not chunked:
        headers["Content-Length"] = str(len(body))
    adapter.answer = (status, headers, body)
    _run(lambda: list(store.list("")))
    _run(lambda: list(store.list("", recursive=False)))
    _run(lambda: store.stat("k"))


@FUZZ
@given(blob_listings() | mutated(blob_listings()) | st.binary(max_size=400))
def test_azure_lean_list_page_parser(body: bytes) -> None:
    """The lean List Blobs parser and what the store makes of each entry."""
    parsed = _run(lambda: parse_blob_page(body))
    if parsed is None:
        return
    items, marker = parsed
    assert marker is None or (isinstance(marker, str) and marker)
    for item in items:
        assert isinstance(item.name, str) and item.name
        if isinstance(item, ListedBlob):
            assert type(item.size) is int and item.size >= 0
            is_directory_marker(item)
            fields = (item.metadata, item.last_modified, item.etag, item.version_id)
            _run(lambda i=item, f=fields: listed_info(i.name, i.size, *f, i.content_md5))


_azure_values = st.none() | st.text(max_size=8) | st.integers(-5, 2**70) | st.binary(max_size=4)
_azure_values |= st.datetimes()


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "name": _azure_values,
            "size": _azure_values,
            "etag": _azure_values,
            "version_id": _azure_values,
            "last_modified": _azure_values,
            "metadata": st.none() | st.dictionaries(st.text(max_size=6), st.none() | _texts),
        },
    ),
    _azure_values,
)
def test_azure_properties_map_to_object_info(fields: dict[str, Any], md5: Any) -> None:
    props = BlobProperties()
    for name, value in fields.items():
        setattr(props, name, value)
    props.content_settings.content_md5 = md5
    info = _run(lambda: properties_info(props))
    assert info is None or (isinstance(info.size, int) and info.size >= 0)
    assert isinstance(from_azure_metadata(fields.get("metadata")), dict)


# -- GCS ----------------------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | _texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def object_resources(draw: st.DrawFn) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": draw(st.text(min_size=1, max_size=8) | _json_values),
        "bucket": "bkt",
        "size": draw(st.sampled_from(["1", "0", "-4", "x", "9" * 40]) | _json_values),
        "generation": draw(st.sampled_from(["7", "x"]) | _json_values),
        "updated": draw(st.sampled_from(["2024-01-01T00:00:00.000Z", "never"]) | _json_values),
        "md5Hash": draw(st.sampled_from(["1B2M2Y8AsgTpgAmY7PhCfg==", "%%"]) | _json_values),
        "crc32c": draw(st.sampled_from(["AAAAAA==", "!"]) | _json_values),
        "etag": draw(_json_values),
        "metadata": draw(
            st.dictionaries(st.sampled_from(["mtime", "mode", "datamover-sha256"]), _json_values)
            | _json_values
        ),
    }
    kept = draw(st.lists(st.sampled_from(sorted(fields)), unique=True))
    return {k: fields[k] for k in kept}


@st.composite
def object_listings(draw: st.DrawFn) -> bytes:
    listing: dict[str, Any] = {
        "items": draw(st.lists(object_resources(), max_size=3) | _json_values),
        "prefixes": draw(st.lists(_texts, max_size=2) | _json_values),
    }
    if draw(st.booleans()):
        listing["nextPageToken"] = draw(_texts | _json_values)
    return json.dumps(listing).encode()


@pytest.fixture(scope="module")
def gcs_store() -> Iterator[tuple[GCSStore, _Fuzzed]]:
    client = storage.Client(
        project="p",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": "http://127.0.0.1:1"},
    )
    with pytest.MonkeyPatch.context() as mp:  # the SDK's parsers, as for Azure above
        mp.setenv("DATAMOVER_GCS_LEAN", "0")
        store = GCSStore(client, "bkt", page_size=5)
    store.retry = None  # one attempt: a 500 is not tried again
    adapter = _Fuzzed(max_body=64 * 1024)
    client._http.mount("http://", adapter)
    yield store, adapter
    store.close()


@settings(FUZZ, max_examples=60)
@given(
    st.sampled_from([200, 404, 500]),
    object_listings()
    | object_resources().map(lambda r: json.dumps(r).encode())
    | mutated(object_listings())
    | st.binary(max_size=200),
)
def test_gcs_responses(gcs_store: tuple[GCSStore, _Fuzzed], status: int, body: bytes) -> None:
    store, adapter = gcs_store
    store._bucket_exists = True  # a 404 is not followed by a bucket probe
    adapter.answer = (status, {"Content-Type": "application/json"}, body)
    _run(lambda: list(store.list("")))
    _run(lambda: list(store.list("", recursive=False)))
    _run(lambda: list(store.list_pending_uploads("")))
    info = _run(lambda: store.stat("k"))
    assert info is None or (isinstance(info.size, int) and info.size >= 0)


@FUZZ
@given(st.datetimes() | st.none())
def test_gcs_dates_are_taken_as_they_come(when: datetime | None) -> None:
    """``blob_info`` of a blob the SDK parsed: any ``updated`` date maps to a float."""
    from datamover.stores.gcs.metadata import blob_info

    blob = SimpleNamespace(
        name="k",
        metadata=None,
        size=1,
        updated=when.replace(tzinfo=UTC) if when else None,
        generation=1,
        etag="e",
        md5_hash=None,
        crc32c=None,
        bucket=SimpleNamespace(name="bkt"),
    )
    assert isinstance(blob_info(blob), ObjectInfo)
