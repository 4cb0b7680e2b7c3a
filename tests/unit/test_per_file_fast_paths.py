"""The shortcuts a small file's download takes (issue #18) give what the long ways
give: the HTTP date reader equals ``email.utils``, a manifest entry that
``plainly_valid`` passes is one ``check_entry`` accepts, ``to_json`` writes what it
wrote, ``ObjectInfo`` keeps and drops the same checksums, and an S3 object's mtime
comes from its metadata, else from Last-Modified (now read only then).

Deterministic (``derandomize``) and bounded, like the other fuzz tests.
"""

from __future__ import annotations

import email.utils
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datamover.checksums import HEX_DIGITS, is_hex_digest
from datamover.manifest.format import VERIFIED_VALUES, ManifestEntry
from datamover.manifest.rules import (
    KINDS,
    MAX_PATH_BYTES,
    MAX_RECORDED_BYTES,
    STATUSES,
    LineProblem,
    check_entry,
    path_problem,
    plainly_valid,
    text_problem,
)
from datamover.posixmeta import PosixAttrs, mode_from_metadata
from datamover.stores.base import ObjectInfo
from datamover.stores.s3.lean import Response
from datamover.stores.s3.objectinfo import lean_info, parse_http_date

FUZZ = settings(
    max_examples=400,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# -- HTTP dates ----------------------------------------------------------------------

DATES = [
    "Mon, 07 Dec 2026 01:18:47 GMT",
    "Sun, 06 Nov 1994 08:49:37 GMT",
    "Thu, 01 Jan 1970 00:00:00 GMT",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "Sat, 29 Feb 2020 12:00:00 GMT",
    "Mon, 01 Jan 0100 00:00:00 GMT",
    "Mon, 01 Jan 0099 00:00:00 GMT",  # email.utils: 1999
    "Mon, 01 Jan 0000 00:00:00 GMT",  # email.utils: 2000
    "Mon, 01 Jan 0069 00:00:00 GMT",
    "Xyz, 07 Dec 2026 01:18:47 GMT",  # email.utils skips any day name
    "Mon, 7 Dec 2026 01:18:47 GMT",
    "Mon,07 Dec 2026 01:18:47 GMT",
    "Mon, 07 dec 2026 01:18:47 GMT",
    "Mon, 07 Dec 2026 01:18:47 UTC",
    "Mon, 07 Dec 2026 01:18:47 +0000",
    "Mon, 07 Dec 2026 01:18:47 -0000",  # naive from email.utils
    "Mon, 07 Dec 2026 01:18:47 +0130",
    "Mon, 07 Dec 2026 01:18:47 EST",
    "Mon, 07 Dec 2026 01:18 GMT",
    "Mon, 07 Dec 2026 01:18:47 GMT ",
    " Mon, 07 Dec 2026 01:18:47 GMT",
    "Monday, 07-Dec-26 01:18:47 GMT",  # RFC 850
    "Mon Dec  7 01:18:47 2026",  # asctime
    "07 Dec 2026 01:18:47 GMT",
    "Mon, 31 Feb 2026 01:18:47 GMT",  # no such day
    "Mon, 00 Dec 2026 01:18:47 GMT",
    "Mon, 07 Dec 2026 24:00:00 GMT",
    "Mon, 07 Dec 2026 23:60:00 GMT",
    "Mon, 07 Dec 2026 23:59:60 GMT",
    "Mon, 07 Dec 2026 01:18:47 GMTX",
    "Mon, 07 Dec 2026 01:18:47",
    "Mon, ٠٧ Dec 2026 01:18:47 GMT",  # Arabic-Indic digits: int() reads them
    "Mon, 07 Dec 2026 01:18:47\nGMT",
    "",
    "GMT",
    "Mon, 07 Dec 2026",
    "2026-12-07T01:18:47Z",
]


def _outcome(parse: Any, value: str) -> tuple[str, Any]:
    try:
        parsed = parse(value)
    except (ValueError, TypeError, IndexError, OverflowError) as e:
        return "raises", type(e).__name__
    return "ok", (parsed, parsed.tzinfo, parsed.utcoffset())


@pytest.mark.parametrize("value", DATES)
def test_http_date_equals_email_utils(value: str) -> None:
    assert _outcome(parse_http_date, value) == _outcome(email.utils.parsedate_to_datetime, value)


def test_http_date_reads_s3s_form_as_utc() -> None:
    parsed = parse_http_date("Mon, 07 Dec 2026 01:18:47 GMT")
    assert parsed == datetime(2026, 12, 7, 1, 18, 47, tzinfo=UTC)
    assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0


_days = st.sampled_from(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "Foo", "mon"])
_months = st.sampled_from(["Jan", "Feb", "Jun", "Sep", "Dec", "dec", "Xyz"])
_digits = st.text("0123456789", min_size=1, max_size=5)
_zones = st.sampled_from(["GMT", "UTC", "+0000", "-0000", "+0200", "Z", "gmt", ""])


@st.composite
def http_dates(draw: st.DrawFn) -> str:
    text = (
        f"{draw(_days)}, {draw(_digits)} {draw(_months)} {draw(_digits)} "
        f"{draw(_digits)}:{draw(_digits)}:{draw(_digits)} {draw(_zones)}"
    )
    if draw(st.booleans()):  # a character changed, added or removed somewhere
        i = draw(st.integers(0, len(text)))
        text = text[:i] + draw(st.sampled_from(["", " ", ",", ":", "0", "\t"])) + text[i + 1 :]
    return text


@FUZZ
@given(http_dates() | st.text(max_size=40))
def test_http_date_fuzzed_equals_email_utils(value: str) -> None:
    assert _outcome(parse_http_date, value) == _outcome(email.utils.parsedate_to_datetime, value)


# -- manifest entries ----------------------------------------------------------------

_ODD = [None, True, False, -1, 0, 1, 2, 1.5, -0.5, math.nan, math.inf, "", "x", [], {}, "0644"]


_HEX64 = "ab" * 32
#: Values tried in each field, besides ``_ODD``.
_VALUES: dict[str, list[Any]] = {
    "path": ["a", "d/f", "d/", "/abs", "a/../b", "a//b", "./a", "é/ü", "a\0b", "\udcff", ""],
    "size": [0, 1, 4096, 2**70],
    "status": [*sorted(STATUSES), "nope"],
    "digest": [None, _HEX64, _HEX64.upper(), "ab" * 16, "zz" * 32],
    "mtime": [None, "1.000000000", "-5.123456789", "1.5", "x"],
    "mode": [None, "0644", "0999", "644"],
    "part_size": [None, 1, 0, 8 << 20],
    "parts": [
        [],
        ["0a0b0c0d"],
        ["zz"],
        ["0A0B0C0D"],
        ["0a0b0c0"],
        ["0a0b0c0d", "0a0b0c0d"],
        ["0a0b0c0d", "zz"],
        [5],
    ],
    "etag": [None, "e"],
    "version": [None, "v"],
    "error": [None, "boom"],
    "source_path": [None, "s", "../s"],
    "seconds": [None, 0.0, 0.25, 3, -1.0, 1e308, 10**400],
    "attempts": [None, 1, 2, 0],
    "kind": [None, *sorted(KINDS), "fifo"],
    "link_to": [None, "a", "/etc/passwd"],
    "uid": [None, 0, 1000, -1],
    "gid": [None, 0, 1000, -1],
    "verified": [None, *VERIFIED_VALUES, "maybe"],
    "provider_checksums": [
        {},
        {"md5": "cd" * 16, "crc64nvme": "ef" * 8},
        {"md5": "CD" * 16},
        {"crc32c": "0123456"},
        {"sha1": "ab" * 20},
        {"md5": 5},
        {"md5": ""},
    ],
}
#: Fields whose value is handed on as it is (no odd types: ``to_json`` needs a list
#: and a mapping).
_NO_ODD = {"parts", "provider_checksums", "source_path", "link_to"}


def _entry_fields() -> dict[str, st.SearchStrategy[Any]]:
    odd = st.sampled_from(_ODD)
    return {
        name: st.sampled_from(values) if name in _NO_ODD else st.sampled_from(values) | odd
        for name, values in _VALUES.items()
    }


def _usual() -> dict[str, Any]:
    return {
        "path": "d/f",
        "size": 4096,
        "status": "ok",
        "digest": _HEX64,
        "mtime": "1796606326.202272847",
        "mode": "0644",
        "seconds": 0.0012,
        "uid": 0,
        "gid": 0,
        "verified": "readback",
    }


@st.composite
def entries(draw: st.DrawFn) -> ManifestEntry:
    """Mostly well-formed entries with a field or two made odd."""
    fields = _usual()
    strategies = _entry_fields()
    for name in draw(st.lists(st.sampled_from(sorted(strategies)), max_size=3)):
        fields[name] = draw(strategies[name])
    return ManifestEntry(**fields)


def _accepted(entry: ManifestEntry, algorithm: str, part_algorithm: str | None = "crc32c") -> bool:
    try:
        check_entry(entry.to_json(), algorithm, part_algorithm)
    except LineProblem:
        return False
    return True


@FUZZ
@given(entries(), st.sampled_from(["sha256", "md5", "crc32c", "unknown"]))
def test_plainly_valid_entries_are_ones_the_reader_accepts(
    entry: ManifestEntry, algorithm: str
) -> None:
    try:
        line = entry.to_json()
    except TypeError:  # provider checksums with odd keys don't even sort
        return
    if plainly_valid(entry, algorithm, "crc32c"):
        assert _accepted(entry, algorithm), line


@pytest.mark.parametrize("part_algorithm", ["crc32c", "sha256", None])
@pytest.mark.parametrize("algorithm", ["sha256", "crc32c"])
@pytest.mark.parametrize("status", ["ok", "failed", "skipped"])
def test_plainly_valid_with_each_field_changed(
    status: str, algorithm: str, part_algorithm: str | None
) -> None:
    """Every value of every field, one field at a time, on an entry of each status."""
    for name, values in _VALUES.items():
        for value in values if name in _NO_ODD else [*values, *_ODD]:
            fields = {**_usual(), "status": status, "error": "e", name: value}
            if algorithm == "crc32c" and fields["digest"] == _HEX64:
                fields["digest"] = "0a0b0c0d"
            entry = ManifestEntry(**fields)
            if plainly_valid(entry, algorithm, part_algorithm):
                assert _accepted(entry, algorithm, part_algorithm), (name, value)


def test_the_entries_a_download_writes_are_plainly_valid() -> None:
    digest = "ab" * 32
    ok = ManifestEntry(
        path="small/f00001",
        size=4096,
        status="ok",
        digest=digest,
        mtime="1796606326.202272847",
        mode="0644",
        seconds=0.001234,
        uid=0,
        gid=0,
        verified="readback",
        provider_checksums={"md5": "cd" * 16, "crc64nvme": "ef" * 8},
        parts=["c7c34d96"],
    )
    failed = ManifestEntry(path="x", size=0, status="failed", error="boom", seconds=0.5)
    folder = ManifestEntry(path="d/", size=0, status="ok", kind="dir", mode="0755")
    for entry in (ok, failed, folder):
        assert plainly_valid(entry, "sha256", "crc32c")
        assert _accepted(entry, "sha256")


def _to_json_before(entry: ManifestEntry) -> dict[str, Any]:
    """``to_json`` as it was written before it was spelled out field by field."""
    out: dict[str, Any] = {"type": "file", "path": entry.path, "size": entry.size}
    for name in (
        "status",
        "digest",
        "mtime",
        "mode",
        "part_size",
        "etag",
        "version",
        "error",
        "source_path",
        "seconds",
        "attempts",
        "kind",
        "link_to",
        "uid",
        "gid",
        "verified",
    ):
        value = getattr(entry, name)
        if value is not None:
            out[name] = value
    if entry.provider_checksums:
        out["provider_checksums"] = dict(sorted(entry.provider_checksums.items()))
    if entry.parts:
        out["parts"] = entry.parts
    return out


@FUZZ
@given(entries())
def test_to_json_writes_the_same_keys_in_the_same_order(entry: ManifestEntry) -> None:
    try:
        before = _to_json_before(entry)
    except TypeError:
        return
    after = entry.to_json()
    assert list(after.items()) == list(before.items())


# -- ObjectInfo checksums ------------------------------------------------------------


def _kept_before(checksums: dict[str, Any]) -> dict[str, Any]:
    kept = {
        alg: value.lower()
        for alg, value in checksums.items()
        if alg not in HEX_DIGITS or is_hex_digest(str(value).lower(), alg)
    }
    return kept if kept != checksums else checksums


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from([*HEX_DIGITS, "crc64nvme", "other"]),
        st.sampled_from(["ab" * 32, "AB" * 32, "ab" * 16, "01234567", "0123456", "Xy", "", "zz"])
        | st.text("0123456789abcdefABCDEF", max_size=70),
        max_size=4,
    )
)
def test_object_info_keeps_the_same_checksums(checksums: dict[str, str]) -> None:
    shared = ObjectInfo(key="k", size=0, checksums=checksums, provider_checksums=checksums)
    apart = ObjectInfo(key="k", size=0, checksums=checksums, provider_checksums=dict(checksums))
    for info in (shared, apart):
        assert info.checksums == _kept_before(checksums)
        assert info.provider_checksums == _kept_before(checksums)
    if _kept_before(checksums) is checksums:
        assert shared.checksums is checksums  # nothing changed: the caller's mapping kept
    only_provider = ObjectInfo(key="k", size=0, provider_checksums=checksums)
    assert only_provider.provider_checksums == _kept_before(checksums)
    assert only_provider.checksums == {}


# -- path_problem ---------------------------------------------------------------------


def _path_problem_before(path: str) -> str | None:
    why = text_problem(path)
    if why is not None:
        return why
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        return f"it is longer than {MAX_PATH_BYTES} bytes (PATH_MAX)"
    if path.startswith("/"):
        return "it is absolute"
    parts = (path[:-1] if path.endswith("/") else path).split("/")
    if ".." in parts:
        return "it has a '..' component, which would leave the tree"
    if "" in parts:
        return "it has an empty component ('//' or a '/' at an end)"
    if "." in parts:
        return "it has a '.' component"
    return None


@pytest.mark.parametrize(
    "path",
    [
        "a",
        "d/",
        "",
        "/",
        "a\0b",
        "\0",
        "x" * MAX_PATH_BYTES,
        "x" * (MAX_PATH_BYTES + 1),
        "é" * (MAX_PATH_BYTES // 2),
        "é" * (MAX_PATH_BYTES // 2 + 1),
        "x" * (MAX_RECORDED_BYTES + 1),
        "\udcff",
        "a/\udcff",
        "a//b",
        "a/./b",
        "../a",
        "a/..",
        "/a",
        "a/",
        "a//",
    ],
)
def test_path_problem_says_what_it_said(path: str) -> None:
    assert path_problem(path) == _path_problem_before(path)


# -- POSIX attributes from metadata --------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [None, "33188", "420", "0", "-1", "4294967295", "4294967296", " 420", "0o644", "x", ""],
)
def test_mode_from_metadata_is_from_metadatas_mode(raw: str | None) -> None:
    meta = {} if raw is None else {"mode": raw, "uid": raw, "gid": raw, "mtime": "1.5"}
    assert mode_from_metadata(meta) == PosixAttrs.from_metadata(meta).mode
    assert PosixAttrs.from_metadata(meta).uid == (
        int(raw) if raw and raw.strip().lstrip("-").isdigit() and 0 <= int(raw) < 2**32 else None
    )


# -- S3 object info ------------------------------------------------------------------


def test_lean_info_mtime_from_metadata_else_last_modified() -> None:
    last_modified = "Mon, 07 Dec 2026 01:18:47 GMT"
    with_meta = {"last-modified": last_modified, "x-amz-meta-mtime": "1700000000.5"}
    assert lean_info("k", Response(200, with_meta, b""), 0).mtime == 1700000000.5
    bare = {"last-modified": last_modified}
    expected = datetime(2026, 12, 7, 1, 18, 47, tzinfo=UTC).timestamp()
    assert lean_info("k", Response(200, bare, b""), 0).mtime == expected
    unreadable = {"last-modified": "yesterday", "x-amz-meta-mtime": "not a time"}
    assert lean_info("k", Response(200, unreadable, b""), 0).mtime is None
