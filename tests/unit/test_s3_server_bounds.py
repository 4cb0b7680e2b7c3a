"""A misbehaving S3 server (``rawserver.RawServer`` on 127.0.0.1) can't make the S3
store allocate on its word or list for ever: huge ``Content-Length`` values, endless
chunked bodies, over-long headers, floods of interim answers, repeated continuation
tokens and markers, empty "truncated" pages, pages that repeat or stray outside the
prefix. Each ends in one ``StoreError`` (one line) before much is read; the lean path
and boto3 alike. ``test_peak_memory_stays_small`` measures it in a fresh process."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from datamover.errors import SourceChanged, StoreError, TransientError
from datamover.stores import StoreSettings
from datamover.stores.base import MAX_WHOLE_READ, ObjectInfo, PartReceipt
from datamover.stores.bounds import MAX_EMPTY_PAGES, ResponseTooLarge
from datamover.stores.s3 import S3Store
from datamover.stores.s3.lean import MAX_HEADER_BYTES, MAX_INTERIM
from datamover.stores.s3.listing import MAX_LIST_BODY
from datamover.stores.s3.writer import S3Writer

from rawserver import RawServer, Request, response

HUGE = 3 * 1024**3  # what the server claims: 3 GB


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")


def _store(server: RawServer, *, lean: bool = True, page_size: int = 1000) -> S3Store:
    if not lean:
        os.environ["DATAMOVER_S3_LEAN"] = "0"
    try:
        store = S3Store("b", StoreSettings(endpoint=server.url), page_size=page_size)
    finally:
        os.environ.pop("DATAMOVER_S3_LEAN", None)
    if lean:
        assert store._s3.lean is not None
        store._s3.lean._sleep = lambda seconds: None  # retries without the backoff
    else:
        assert store._s3.lean is None
    return store


def _page(keys: Iterable[str], token: str | None = None, *, encoded: bool = True) -> bytes:
    contents = "".join(
        f"<Contents><Key>{quote(k) if encoded else k}</Key><Size>1</Size>"
        "<ETag>&quot;0123456789abcdef0123456789abcdef&quot;</ETag>"
        "<LastModified>2024-01-01T00:00:00.000Z</LastModified></Contents>"
        for k in keys
    )
    more = f"<NextContinuationToken>{token}</NextContinuationToken>" if token else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Name>b</Name><EncodingType>{'url' if encoded else ''}</EncodingType>"
        f"<IsTruncated>{'true' if token else 'false'}</IsTruncated>{more}{contents}"
        "</ListBucketResult>"
    ).encode()


def _pages(pages: Callable[[str | None], bytes]) -> Callable[[Request], bytes]:
    """An answer serving a listing: ``pages(token asked for)`` gives the XML."""

    def answer(request: Request) -> bytes:
        return response(200, pages(request.query.get("continuation-token")))

    return answer


def _error(call: Callable[[], object], kind: type[BaseException] = StoreError) -> str:
    with pytest.raises(kind) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def _list(store: S3Store, prefix: str = "") -> list[ObjectInfo]:
    return list(store.list(prefix))


# -- listings can't loop ---------------------------------------------------------------


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "boto3"])
def test_a_repeated_continuation_token_is_an_error(lean: bool) -> None:
    """A -> B -> A: the third page names a token already followed."""
    following = {None: "A", "A": "B", "B": "A"}
    with RawServer(_pages(lambda t: _page([f"k{t}"], following[t]))) as server:
        store = _store(server, lean=lean)
        message = _error(lambda: _list(store))
        assert "repeated the continuation token 'A'" in message
        assert "server bug" in message
        assert len(server.requests) == 3
        store.close()


def test_the_same_token_every_time_stops_at_the_second_page() -> None:
    with RawServer(_pages(lambda t: _page([f"k{t}"], "same"))) as server:
        store = _store(server)
        assert "repeated the continuation token" in _error(lambda: _list(store))
        assert len(server.requests) == 2
        store.close()


def test_endless_empty_truncated_pages_are_an_error() -> None:
    tokens = itertools.count()
    with RawServer(_pages(lambda t: _page([], f"t{next(tokens)}"))) as server:
        store = _store(server)
        assert "empty pages in a row" in _error(lambda: _list(store))
        assert len(server.requests) == MAX_EMPTY_PAGES + 1
        store.close()


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "boto3"])
def test_a_server_that_ignores_the_token_repeats_a_page(lean: bool) -> None:
    """Fresh tokens, but always the first page again: caught as a repeated page."""
    tokens = itertools.count()
    with RawServer(_pages(lambda t: _page(["a", "b"], f"t{next(tokens)}"))) as server:
        store = _store(server, lean=lean)
        assert "repeated a page" in _error(lambda: _list(store))
        assert len(server.requests) == 2
        store.close()


def test_keys_outside_the_prefix_are_an_error() -> None:
    """A key the prefix does not cover would be copied (or deleted by sync --delete)
    under a name cut from the wrong place."""
    with RawServer(_pages(lambda t: _page(["data/a", "other/secret"]))) as server:
        store = _store(server)
        assert "outside the prefix 'data/'" in _error(lambda: _list(store, "data/"))
        store.close()


def test_more_entries_than_asked_for_are_an_error() -> None:
    with RawServer(_pages(lambda t: _page([f"k{i}" for i in range(5)]))) as server:
        store = _store(server, page_size=3)
        assert "5 entries in a page of at most 3" in _error(lambda: _list(store))
        store.close()


def test_a_dtd_in_a_listing_is_refused() -> None:
    """No entity expansion: S3 never declares a DTD."""
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b"<ListBucketResult><Contents><Key>&b;</Key></Contents></ListBucketResult>"
    )
    with RawServer(_pages(lambda t: bomb)) as server:
        store = _store(server)
        assert "declares a DTD" in _error(lambda: _list(store))
        store.close()


def test_a_correct_listing_still_pages_through() -> None:
    pages = {None: (["a", "b"], "t1"), "t1": (["c"], "t2"), "t2": ([], "t3"), "t3": (["d"], None)}
    with RawServer(_pages(lambda t: _page(*pages[t]))) as server:
        store = _store(server)
        assert [i.key for i in _list(store)] == ["a", "b", "c", "d"]
        store.close()


def test_upload_listing_with_repeated_markers_is_an_error() -> None:
    """ListMultipartUploads (boto3): markers A -> B -> A."""
    following = {"": "A", "A": "B", "B": "A"}

    def answer(request: Request) -> bytes:
        marker = request.query.get("key-marker", "")
        nxt = following[marker]
        return response(
            200,
            (
                '<?xml version="1.0" encoding="UTF-8"?><ListMultipartUploadsResult>'
                f"<Bucket>b</Bucket><NextKeyMarker>{nxt}</NextKeyMarker>"
                "<NextUploadIdMarker>u</NextUploadIdMarker><IsTruncated>true</IsTruncated>"
                f"<Upload><Key>k{nxt}</Key><UploadId>id{nxt}</UploadId>"
                "<Initiated>2024-01-01T00:00:00.000Z</Initiated></Upload>"
                "</ListMultipartUploadsResult>"
            ).encode(),
        )

    with RawServer(answer) as server:
        store = _store(server, lean=False)
        message = _error(lambda: list(store.list_pending_uploads("")))
        assert "server's listing repeated" in message
        assert len(server.requests) == 3
        store.close()


def test_a_part_listing_that_does_not_move_on_is_an_error() -> None:
    """ListParts whose NextPartNumberMarker stays put would be asked again for ever."""

    def answer(request: Request) -> bytes:
        return response(
            200,
            (
                b'<?xml version="1.0" encoding="UTF-8"?><ListPartsResult><Bucket>b</Bucket>'
                b"<Key>k</Key><UploadId>u</UploadId><IsTruncated>true</IsTruncated>"
                b"<NextPartNumberMarker>0</NextPartNumberMarker></ListPartsResult>"
            ),
        )

    with RawServer(answer) as server:
        store = _store(server, lean=False)
        part = 5 * 1024 * 1024
        writer = S3Writer(store._s3, store.limits, "k", 2 * part, part, {}, upload_id="u")
        assert "did not move on from part 0" in _error(
            lambda: writer.verify_parts({0: PartReceipt(0, part, "e")})
        )
        # One ListParts (the writer's checksum probe, and its listing of killed probes'
        # uploads, are not part of the count).
        assert len([r for r in server.requests if r.method == "GET" and "uploadId" in r.query]) == 1
        store.close()


# -- bounded reads ----------------------------------------------------------------------


def _claims(length: int, status: int = 200, *, then: bytes = b"x" * 100) -> bytes:
    """A head claiming ``length`` bytes, followed by far fewer."""
    return f"HTTP/1.1 {status} X\r\nContent-Length: {length}\r\n\r\n".encode() + then


def _endless_chunks(status: int = 200, size: int = 64 * 1024) -> Iterator[bytes]:
    yield f"HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    chunk = f"{size:x}\r\n".encode() + b"x" * size + b"\r\n"
    while True:
        yield chunk


def test_a_huge_content_length_on_a_listing_is_refused_before_reading() -> None:
    with RawServer(lambda r: _claims(HUGE)) as server:
        store = _store(server)
        started = time.monotonic()
        message = _error(lambda: _list(store), ResponseTooLarge)
        assert f"a body of {HUGE} bytes, over the {MAX_LIST_BODY} accepted" in message
        assert time.monotonic() - started < 5
        assert len(server.requests) == 1  # not retried
        store.close()


def test_an_endless_chunked_listing_is_cut_off() -> None:
    with RawServer(lambda r: _endless_chunks()) as server:
        store = _store(server)
        assert "chunked body longer than" in _error(lambda: _list(store), ResponseTooLarge)
        assert server.sent < 8 * MAX_LIST_BODY  # the client stopped reading
        store.close()


def test_an_over_long_header_is_refused() -> None:
    head = b"HTTP/1.1 200 OK\r\nx-junk: " + b"j" * (2 * MAX_HEADER_BYTES) + b"\r\n\r\n"
    with RawServer(lambda r: head) as server:
        store = _store(server)
        message = _error(lambda: store.stat("k"), ResponseTooLarge)
        assert f"response headers over {MAX_HEADER_BYTES} bytes" in message
        store.close()


def test_endless_headers_are_refused() -> None:
    def answer(request: Request) -> Iterator[bytes]:
        yield b"HTTP/1.1 200 OK\r\n"
        while True:
            yield b"x-more: yes\r\n" * 1000

    with RawServer(answer) as server:
        store = _store(server)
        assert "response headers over" in _error(lambda: store.stat("k"), ResponseTooLarge)
        assert server.sent < 64 * 1024 * 1024  # socket buffers, then the client hung up
        store.close()


def test_a_flood_of_interim_answers_is_malformed() -> None:
    def answer(request: Request) -> Iterator[bytes]:
        while True:
            yield b"HTTP/1.1 100 Continue\r\n\r\n"

    with RawServer(answer) as server:
        store = _store(server)
        message = _error(lambda: store.stat("k"), TransientError)
        assert f"more than {MAX_INTERIM} interim" in message
        assert "malformed response" in message
        store.close()


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "boto3"])
def test_a_small_file_that_claims_to_be_huge_is_refused(lean: bool) -> None:
    """``read_object`` with the listing's size: a larger answer is the object having
    changed (SourceChanged), found from Content-Length; without a listing, the
    whole-read limit holds."""
    with RawServer(lambda r: _claims(HUGE)) as server:
        store = _store(server, lean=lean)
        listed = ObjectInfo(key="k", size=10)
        assert "when listed" in _error(lambda: store.read_object("k", listed), SourceChanged)
        message = _error(lambda: store.read_object("k"))
        assert f"over the {MAX_WHOLE_READ}-byte limit" in message
        message = _error(lambda: store.read("k"))
        assert f"over the {MAX_WHOLE_READ}-byte limit" in message
        store.close()


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "boto3"])
def test_a_whole_read_never_takes_more_than_one_put_could_write(lean: bool) -> None:
    """Even with a listing that says so, nothing over S3's single-PUT limit is read
    whole (it could not be written again in one piece)."""
    size = 6 * 1024**3
    with RawServer(lambda r: _claims(size)) as server:
        store = _store(server, lean=lean)
        listed = ObjectInfo(key="k", size=size)
        message = _error(lambda: store.read_object("k", listed))
        assert f"over the {store.limits.max_single_put}-byte limit" in message
        store.close()


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "boto3"])
def test_a_ranged_read_never_takes_more_than_the_buffer(lean: bool) -> None:
    """A body longer than the range asked for is a store error, found from its
    Content-Length, and not retried as if the connection had failed."""
    with RawServer(lambda r: _claims(HUGE, 206)) as server:
        store = _store(server, lean=lean)
        buf = memoryview(bytearray(1024 * 1024))
        message = _error(lambda: store.readinto("k", 0, buf), ResponseTooLarge)
        assert "connection problem" not in message
        assert len(server.requests) == 1
        assert "1048576" in _error(lambda: store.read("k", 0, 1024 * 1024), ResponseTooLarge)
        store.close()


def test_an_endless_chunked_object_is_cut_off_at_the_range() -> None:
    with RawServer(lambda r: _endless_chunks(206)) as server:
        store = _store(server)
        buf = memoryview(bytearray(256 * 1024))
        _error(lambda: store.readinto("k", 0, buf), ResponseTooLarge)
        _error(lambda: store.read("k", 0, 100), ResponseTooLarge)
        assert server.sent < 64 * 1024 * 1024
        store.close()


def test_a_huge_error_body_is_read_only_in_part() -> None:
    """A 500 whose body never ends: the first MiB is read for its code, the rest is
    dropped with the connection, and the 500 is retried as usual."""

    def answer(request: Request) -> Iterator[bytes]:
        yield f"HTTP/1.1 500 X\r\nContent-Length: {HUGE}\r\n\r\n<Error><Code>".encode()
        yield b"InternalError</Code>"
        while True:
            yield b" " * 65536

    with RawServer(answer) as server:
        store = _store(server)
        assert "InternalError" in _error(lambda: store.read("k", 0, 10), TransientError)
        assert len(server.requests) == 3  # retried as a 500 is
        assert server.sent < 64 * 1024 * 1024
        store.close()


# -- in a fresh process: the peak memory ----------------------------------------------

_CLIENT = textwrap.dedent(
    """
    import json, resource, sys
    from datamover.stores import StoreSettings
    from datamover.stores.base import ObjectInfo
    from datamover.stores.s3 import S3Store

    store = S3Store("b", StoreSettings(endpoint=sys.argv[1]))
    store._s3.lean._sleep = lambda seconds: None
    cases = {
        "listing": lambda: list(store.list("list/")),
        "small file": lambda: store.read_object("obj", ObjectInfo(key="obj", size=10)),
        "whole read": lambda: store.read("obj"),
        "part": lambda: store.readinto("obj", 0, memoryview(bytearray(1 << 20))),
        "chunked listing": lambda: list(store.list("chunked/")),
    }
    store.stat("warm")  # connections, signing keys, imports: before the baseline
    out = {}
    for name, case in cases.items():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            case()
            error = "no error"
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out[name] = {"grew_kib": after - before, "error": error}
    print(json.dumps(out))
    """
)


def test_peak_memory_stays_small(tmp_path: Path) -> None:
    """Claims of 3 GB (and an endless chunked listing) against a fresh client process:
    its peak RSS grows by a few MiB at most, and each case ends in one error line."""

    def answer(request: Request) -> bytes | Iterator[bytes]:
        if request.method == "HEAD":
            return response(200, headers={"Content-Length": "5"})
        if request.query.get("prefix") == "chunked/":
            return _endless_chunks()
        return _claims(HUGE, 206 if "range" in request.headers else 200)

    with RawServer(answer) as server:
        run = subprocess.run(
            [sys.executable, "-c", _CLIENT, server.url],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    for name, result in results.items():
        assert result["error"] != "no error", name
        assert "\n" not in result["error"]
        assert result["grew_kib"] < 48 * 1024, (name, result)
