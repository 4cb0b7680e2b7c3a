"""``ObjectInfo`` from S3's answers: one builder per answer kind (HEAD/GET, listing,
PUT), for boto3's parsed answers and the lean path's headers alike, and the response
timestamp parser both use.

Checksums come from the object's user metadata (the digests datamover writes) and from
a plain ETag, which is the object's MD5 unless SSE-KMS/SSE-C changed it; the mtime
from the ``mtime`` metadata (s3fs and rclone read it too), else Last-Modified.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from botocore.utils import parse_timestamp as botocore_parse_timestamp

from datamover.errors import StoreError
from datamover.posixmeta import MTIME, PosixAttrs, parse_mtime_ns
from datamover.stores.base import ObjectInfo, digests_from_metadata
from datamover.stores.s3.lean import Response


def parse_timestamp(value: str) -> datetime:
    """Response timestamps without dateutil. botocore's default parser (dateutil) took
    ~50 us a value: a tenth of the client CPU of a small GET (its Last-Modified header)
    and of a listing (every object's LastModified). The standard library reads both
    forms S3 sends, ISO 8601 in XML bodies and RFC 7231 dates in headers; anything else
    goes to botocore's parser, so results never differ."""
    try:
        if value[:4].isdigit():
            parsed = datetime.fromisoformat(value)
        else:
            parsed = email.utils.parsedate_to_datetime(value)
        if parsed.tzinfo is not None:
            return parsed
    except (TypeError, ValueError, IndexError):
        pass
    result: datetime = botocore_parse_timestamp(value)
    return result


def _checksums(metadata: Mapping[str, str], etag: str | None, sse: str | None) -> dict[str, str]:
    out = digests_from_metadata(metadata)
    # A plain ETag (no "-N" suffix) is the object's MD5 unless SSE-KMS/SSE-C changed it.
    if etag and "-" not in etag and len(etag) == 32 and sse in (None, "AES256"):
        out.setdefault("md5", etag)
    return out


def _mtime(metadata: Mapping[str, str], last_modified: datetime | None) -> float | None:
    raw = metadata.get(MTIME)
    if raw:
        ns = parse_mtime_ns(raw)
        if ns is not None:
            return ns / 1e9
    return last_modified.timestamp() if last_modified else None


def _object_info(
    key: str,
    size: int,
    meta: dict[str, str],
    etag: str | None,
    modified: datetime | None,
    version: str | None,
    sse: str | None,
) -> ObjectInfo:
    """An object as a HEAD or GET describes it (boto3's parsed answer or the lean
    path's headers alike)."""
    tag = (etag or "").strip('"') or None
    return ObjectInfo(
        key=key,
        size=size,
        mtime=_mtime(meta, modified),
        etag=tag,
        version=version,
        checksums=_checksums(meta, tag, sse),
        metadata=meta,
        mode=PosixAttrs.from_metadata(meta).mode,
    )


def boto_info(key: str, r: Mapping[str, Any], size: int) -> ObjectInfo:
    """An object as boto3's HeadObject or GetObject answer describes it."""
    return _object_info(
        key,
        size,
        r.get("Metadata", {}),
        r.get("ETag"),
        r.get("LastModified"),
        r.get("VersionId"),
        r.get("ServerSideEncryption"),
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
    meta = {k[11:]: v for k, v in headers.items() if k.startswith("x-amz-meta-")}
    return _object_info(
        key,
        size,
        meta,
        headers.get("etag"),
        _header_time(headers.get("last-modified")),
        headers.get("x-amz-version-id"),
        headers.get("x-amz-server-side-encryption"),
    )


def listed_info(key: str, size: int, etag: str | None, mtime: float | None) -> ObjectInfo:
    """An object as a listing describes it: no user metadata."""
    tag = (etag or "").strip('"') or None
    return ObjectInfo(
        key=key,
        size=size,
        mtime=mtime,
        etag=tag,
        checksums=_checksums({}, tag, None),
        is_dir=key.endswith("/"),
    )


def put_info(
    key: str,
    size: int,
    metadata: Mapping[str, str] | None,
    etag: str | None,
    version: str | None,
    sse: str | None,
) -> ObjectInfo:
    """What a PutObject wrote: the metadata sent, the ETag and version returned."""
    tag = (etag or "").strip('"') or None
    meta = dict(metadata or {})
    return ObjectInfo(
        key=key,
        size=size,
        etag=tag,
        version=version,
        metadata=meta,
        checksums=_checksums(meta, tag, sse),
    )
