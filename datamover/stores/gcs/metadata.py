"""Object resources as datamover sees them: ``ObjectInfo`` from a GCS blob (checksums
from its md5Hash and crc32c, POSIX attributes and mtime from its user metadata), and
the content type datamover writes.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
from typing import Any

from datamover.errors import StoreError
from datamover.posixmeta import MTIME, mode_from_metadata, parse_mtime_ns
from datamover.stores.base import ObjectInfo, digests_from_metadata
from datamover.stores.conventions import Styles, posix_metadata, precedence

#: Conventions on one object that disagree: gcloud's keys decide, then gcsfuse's and
#: rclone's.
READ_ORDER = precedence(("gcloud", "gcsfuse", "rclone"))
#: What this store writes by default (``Features.metadata_styles``): read in one step.
WRITTEN = Styles(("gcloud", "gcsfuse", "rclone"), rfc3339_mtime=True)


def _b64_to_hex(value: object) -> str | None:
    if not value or not isinstance(value, str):
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
    the bytes it holds: both are provider checksums); ``verified`` for a write. The
    resource is the server's JSON, read
    through the SDK's properties, which raise on values of the wrong shape: any such
    value (a size or generation that is not a number, a date that is not one,
    metadata that is not text to text) raises ``StoreError``."""
    name = key if key is not None else blob.name
    try:
        raw_metadata = blob.metadata
        size = blob.size
        updated = blob.updated
        generation = blob.generation
        etag = blob.etag
        md5_hash, crc32c = blob.md5_hash, blob.crc32c
        mtime_updated = updated.timestamp() if updated is not None else None
    except (ValueError, TypeError, AttributeError, OverflowError) as e:
        raise _malformed(blob, name, type(e).__name__) from e
    if not isinstance(name, str) or not name:
        raise _malformed(blob, name, "no name")
    if not isinstance(raw_metadata, dict | None) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in (raw_metadata or {}).items()
    ):
        raise _malformed(blob, name, "metadata that is not text")
    if size is not None and (type(size) is not int or size < 0):
        raise _malformed(blob, name, "a negative size")
    metadata = posix_metadata(
        raw_metadata or {}, key=name, size=size, order=READ_ORDER, written=WRITTEN
    )
    provider: dict[str, str] = {}
    md5 = _b64_to_hex(md5_hash)
    if md5:
        provider["md5"] = md5
    crc = _b64_to_hex(crc32c)
    if crc:
        # A composite object's crc32c is that of all its bytes, as GCS computes it.
        provider["crc32c"] = crc
    checksums = {**digests_from_metadata(metadata), **provider}
    mtime_ns = parse_mtime_ns(metadata[MTIME]) if MTIME in metadata else None
    mtime = mtime_ns / 1e9 if mtime_ns is not None else mtime_updated
    return ObjectInfo(
        key=name,
        size=int(size or 0),
        mtime=mtime,
        etag=etag if isinstance(etag, str) else None,
        version=str(generation) if generation is not None else None,
        checksums=checksums,
        provider_checksums=provider,
        metadata=metadata,
        mode=mode_from_metadata(metadata) if metadata else None,
        verified=verified,
    )


def _malformed(blob: Any, name: object, what: str) -> StoreError:
    bucket = getattr(getattr(blob, "bucket", None), "name", "")
    shown = name[:200] if isinstance(name, str) else ""
    return StoreError(
        f"gs://{bucket}/{shown}: the server sent a malformed object resource ({what})",
        key=shown or None,
    )
