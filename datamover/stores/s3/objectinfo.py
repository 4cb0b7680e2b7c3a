"""``ObjectInfo`` from S3's answers: one builder per answer kind (HEAD/GET, listing,
PUT), for boto3's parsed answers and the lean path's headers alike, and the response
timestamp parser both use.

Checksums come from the object's user metadata (the digests datamover writes: labels)
and from the provider (``provider_checksums``): a plain ETag, which is the object's
MD5 unless SSE-KMS/SSE-C changed it, and ``x-amz-checksum-crc64nvme``/``-crc32c``
(HEAD and GET with checksum mode, PutObject and CompleteMultipartUpload answers) when
the value is a full-object one: a ``COMPOSITE`` value (``…-N``) is a checksum of the
parts' checksums and is left out. User metadata is read in every POSIX convention
(``stores.conventions``) into datamover's keys; the mtime from its ``mtime``, else
Last-Modified.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from datamover.errors import StoreError
from datamover.posixmeta import MTIME, mode_from_metadata, parse_mtime_ns
from datamover.stores.base import ObjectInfo, digests_from_metadata
from datamover.stores.conventions import posix_metadata, precedence
from datamover.stores.s3.lean import Response
from datamover.stores.s3.sdk import botocore

#: Conventions on one object that disagree: s3fs's (and rclone's) keys decide.
READ_ORDER = precedence(("s3fs",))


#: An HTTP date in its one preferred form (RFC 7231 IMF-fixdate, what S3 sends):
#: ``Sun, 06 Nov 1994 08:49:37 GMT``.
_IMF_FIXDATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([0-9]{4}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT"
)
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def parse_http_date(value: str) -> datetime:
    """An HTTP date header as an aware UTC datetime: IMF-fixdate read directly (a
    regex and a constructor, a fraction of ``email.utils``' cost), anything else
    (obsolete forms, other zones, two-digit years) by
    ``email.utils.parsedate_to_datetime``, whose result it always equals. Raises
    ``ValueError`` (a date that does not exist, an unreadable value) as that does."""
    m = _IMF_FIXDATE.fullmatch(value)
    if m is None or m[3] < "0100":  # email.utils reads years 0-99 as 19xx/20xx
        return email.utils.parsedate_to_datetime(value)
    day, month, year, hour, minute, second = m.groups()
    return datetime(
        int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), tzinfo=UTC
    )


def parse_timestamp(value: str) -> datetime:
    """Response timestamps without dateutil. botocore's default parser (dateutil) took
    ~50 us a value: a tenth of the client CPU of a small GET (its Last-Modified header)
    and of a listing (every object's LastModified). The standard library reads both
    forms S3 sends, ISO 8601 in XML bodies and RFC 7231 dates in headers; anything else
    goes to botocore's parser, so results never differ."""
    try:
        parsed = datetime.fromisoformat(value) if value[:4].isdigit() else parse_http_date(value)
        if parsed.tzinfo is not None:
            return parsed
    except (TypeError, ValueError, IndexError):
        pass
    result: datetime = botocore().utils.parse_timestamp(value)
    return result


#: Full-object checksum algorithms S3 reports, by response header suffix.
CRC_ALGORITHMS = ("crc64nvme", "crc32c")


def provider_checksums(
    etag: str | None, sse: str | None, reported: Mapping[str, str | None], kind: str | None
) -> dict[str, str]:
    """What the provider computed over the object's bytes: ``md5`` from a plain ETag,
    and full-object CRCs from ``reported`` (algorithm -> base64 value as S3 sends it;
    ``kind`` its ``x-amz-checksum-type``)."""
    out: dict[str, str] = {}
    # A plain ETag (no "-N" suffix) is the object's MD5 unless SSE-KMS/SSE-C changed it.
    if etag and "-" not in etag and len(etag) == 32 and sse in (None, "AES256"):
        out["md5"] = etag.lower()
    if kind not in (None, "", "FULL_OBJECT"):
        return out
    for alg in CRC_ALGORITHMS:
        value = reported.get(alg)
        if not value or "-" in value:
            continue
        try:
            out[alg] = base64.b64decode(value, validate=True).hex()
        except (binascii.Error, ValueError):
            continue
    return out


def _checksums(metadata: Mapping[str, str], provider: Mapping[str, str]) -> dict[str, str]:
    """Labels from metadata, overridden by what the provider computed."""
    return {**digests_from_metadata(metadata), **provider}


def _boto_reported(r: Mapping[str, Any]) -> dict[str, str | None]:
    return {alg: r.get(f"Checksum{alg.upper()}") for alg in CRC_ALGORITHMS}


def _lean_reported(headers: Mapping[str, str]) -> dict[str, str | None]:
    return {alg: headers.get(f"x-amz-checksum-{alg}") for alg in CRC_ALGORITHMS}


def _mtime(
    metadata: Mapping[str, str], last_modified: Callable[[], datetime | None]
) -> float | None:
    raw = metadata.get(MTIME)
    if raw:
        ns = parse_mtime_ns(raw)
        if ns is not None:
            return ns / 1e9
    modified = last_modified()  # read only when the metadata has no mtime
    return modified.timestamp() if modified else None


def _object_info(
    key: str,
    size: int,
    meta: dict[str, str],
    etag: str | None,
    modified: Callable[[], datetime | None],
    version: str | None,
    sse: str | None,
    reported: Mapping[str, str | None],
    kind: str | None,
) -> ObjectInfo:
    """An object as a HEAD or GET describes it (boto3's parsed answer or the lean
    path's headers alike). ``modified`` gives its Last-Modified time: asked only
    when the metadata carries no ``mtime`` (parsing a date is a sizeable part of the
    client CPU of a small GET)."""
    tag = (etag or "").strip('"') or None
    provider = provider_checksums(tag, sse, reported, kind)
    meta = posix_metadata(meta, key=key, size=size, order=READ_ORDER)
    return ObjectInfo(
        key=key,
        size=size,
        mtime=_mtime(meta, modified),
        etag=tag,
        version=version,
        checksums=_checksums(meta, provider),
        provider_checksums=provider,
        metadata=meta,
        mode=mode_from_metadata(meta),
    )


def boto_info(key: str, r: Mapping[str, Any], size: int) -> ObjectInfo:
    """An object as boto3's HeadObject or GetObject answer describes it."""
    return _object_info(
        key,
        size,
        r.get("Metadata", {}),
        r.get("ETag"),
        lambda: r.get("LastModified"),
        r.get("VersionId"),
        r.get("ServerSideEncryption"),
        _boto_reported(r),
        r.get("ChecksumType"),
    )


def header_size(headers: Mapping[str, str], url: str, key: str) -> int:
    """The object size a HEAD's Content-Length gives; ``StoreError`` unless it is a
    plain decimal number."""
    value = headers.get("content-length", "0")
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise StoreError(f"{url}: the server sent Content-Length {value[:40]!r}", key=key)
    return int(value)


def _header_time(value: str | None) -> datetime | None:
    """A Last-Modified header; None when absent or unreadable (the object's
    ``mtime`` metadata, when present, is what counts)."""
    if not value:
        return None
    try:
        return parse_timestamp(value)
    except Exception:  # dateutil's parser, behind botocore's, raises several kinds
        return None


def lean_info(key: str, r: Response, size: int) -> ObjectInfo:
    """An object as the headers of a lean HEAD or GET describe it."""
    headers = r.headers
    meta = {k[11:]: v for k, v in headers.items() if k[:11] == "x-amz-meta-"}
    return _object_info(
        key,
        size,
        meta,
        headers.get("etag"),
        lambda: _header_time(headers.get("last-modified")),
        headers.get("x-amz-version-id"),
        headers.get("x-amz-server-side-encryption"),
        _lean_reported(headers),
        headers.get("x-amz-checksum-type"),
    )


def listed_info(key: str, size: int, etag: str | None, mtime: float | None) -> ObjectInfo:
    """An object as a listing describes it: no user metadata."""
    tag = (etag or "").strip('"') or None
    provider = provider_checksums(tag, None, {}, None)
    return ObjectInfo(
        key=key,
        size=size,
        mtime=mtime,
        etag=tag,
        checksums=provider,
        provider_checksums=provider,
        is_dir=key.endswith("/"),
    )


def put_info(
    key: str,
    size: int,
    metadata: Mapping[str, str] | None,
    etag: str | None,
    version: str | None,
    sse: str | None,
    *,
    verified: str | None = None,
    checked: Mapping[str, str] | None = None,
) -> ObjectInfo:
    """What a PutObject (or a completion) wrote: the metadata sent, the ETag and
    version returned, ``verified`` (the check that covered the bytes) and ``checked``
    (whole-object checksums, hex, that the store verified against the bytes)."""
    tag = (etag or "").strip('"') or None
    meta = posix_metadata(metadata or {}, key=key, size=size, order=READ_ORDER)
    provider = {**provider_checksums(tag, sse, {}, None), **(checked or {})}
    return ObjectInfo(
        key=key,
        size=size,
        etag=tag,
        version=version,
        metadata=meta,
        checksums=_checksums(meta, provider),
        provider_checksums=provider,
        verified=verified,
    )
