"""Object resources as datamover sees them: ``ObjectInfo`` from a GCS blob (checksums
from its md5Hash and crc32c, POSIX attributes and mtime from its user metadata), and
the content type datamover writes.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
from typing import Any

from datamover.posixmeta import MTIME, PosixAttrs, parse_mtime_ns
from datamover.stores.base import ObjectInfo, digests_from_metadata


def _b64_to_hex(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return base64.b64decode(value).hex()
    except (binascii.Error, ValueError):
        return None


def content_type_for(key: str) -> str:
    # Only the type: an encoding such as gzip on the object would make GCS transcode.
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


def blob_info(blob: Any, key: str | None = None, *, verified: str | None = None) -> ObjectInfo:
    """ObjectInfo from a loaded blob resource (GCS computes md5Hash and crc32c from
    the bytes it holds: both are provider checksums); ``verified`` for a write."""
    metadata: dict[str, str] = dict(blob.metadata or {})
    provider: dict[str, str] = {}
    md5 = _b64_to_hex(blob.md5_hash)
    if md5:
        provider["md5"] = md5
    crc = _b64_to_hex(blob.crc32c)
    if crc:
        # A composite object's crc32c is that of all its bytes, as GCS computes it.
        provider["crc32c"] = crc
    checksums = {**digests_from_metadata(metadata), **provider}
    mtime: float | None = None
    mtime_ns = parse_mtime_ns(metadata[MTIME]) if MTIME in metadata else None
    if mtime_ns is not None:
        mtime = mtime_ns / 1e9
    elif blob.updated is not None:
        mtime = blob.updated.timestamp()
    return ObjectInfo(
        key=key if key is not None else blob.name,
        size=int(blob.size or 0),
        mtime=mtime,
        etag=blob.etag,
        version=str(blob.generation) if blob.generation is not None else None,
        checksums=checksums,
        provider_checksums=provider,
        metadata=metadata,
        mode=PosixAttrs.from_metadata(metadata).mode if metadata else None,
        verified=verified,
    )
