"""Blob metadata and properties to and from datamover's terms.

Metadata names (``-`` stored as ``_``; see the package docstring; POSIX metadata read
in every convention, ``stores.conventions``), ``ObjectInfo`` from
Get Blob Properties, List Blobs and write responses, checksums from digest metadata
and Content-MD5, and which blobs are directory markers.

Provider checksums: only the MD5 a Put Blob's body was checked against. A
Content-MD5 read back from properties is in ``checksums`` but not in
``provider_checksums``: a block-list commit (or Set Blob Properties) stores whatever
the client gives, so it can't prove the bytes.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from datamover.checksums import ALGORITHMS
from datamover.errors import StoreError, UsageError
from datamover.posixmeta import PosixAttrs
from datamover.stores.base import DIGEST_KEY_PREFIX, ObjectInfo
from datamover.stores.conventions import Styles, posix_metadata, precedence

if TYPE_CHECKING:
    from azure.storage.blob import BlobPrefix, BlobProperties

#: Conventions on one blob that disagree: AzCopy's keys decide, then rclone's.
READ_ORDER = precedence(("azcopy", "rclone"))
#: What this store writes by default (``Features.metadata_styles``): read in one step.
WRITTEN = Styles(("azcopy", "rclone"), rfc3339_mtime=True)
_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def to_azure_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Our lower-case keys to Azure metadata names: ``-`` becomes ``_``."""
    out: dict[str, str] = {}
    for key, value in metadata.items():
        name = key.replace("-", "_")
        if not _IDENTIFIER_RE.match(name):
            raise UsageError(
                f"metadata key {key!r} can't be stored in Azure: names must be letters, "
                "digits, '-' or '_', not starting with a digit"
            )
        out[name] = value
    return out


def from_azure_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Azure metadata names back to our keys: lower-cased, ``_`` becomes ``-``. An
    entry the service sent without a value reads as ``""``; anything but text is
    dropped (the SDK gives text; this is what a server's XML can't make it give)."""
    return {
        name.lower().replace("_", "-"): value if isinstance(value, str) else ""
        for name, value in (metadata or {}).items()
        if isinstance(name, str)
    }


def _checksums(
    metadata: Mapping[str, str], content_md5: bytes | bytearray | None
) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in metadata.items():
        if key.startswith(DIGEST_KEY_PREFIX):
            algorithm = key[len(DIGEST_KEY_PREFIX) :]
            if algorithm in ALGORITHMS:
                out[algorithm] = value.strip().lower()
    if content_md5 and "md5" not in out:
        out["md5"] = bytes(content_md5).hex()
    return out


def _etag(etag: str | None) -> str | None:
    # Get Blob Properties quotes the ETag, List Blobs does not: keep one form.
    return etag.strip('"') if etag else None


def _object_info(
    key: str,
    size: int,
    metadata: Mapping[str, str],
    last_modified: datetime | None,
    etag: str | None,
    version: str | None,
    content_md5: bytes | bytearray | None,
    *,
    verified: str | None = None,
    stored_md5: bytes | None = None,
) -> ObjectInfo:
    metadata = posix_metadata(metadata, key=key, size=size, order=READ_ORDER, written=WRITTEN)
    attrs = PosixAttrs.from_metadata(metadata)
    if attrs.mtime_ns is not None:
        mtime: float | None = attrs.mtime_ns / 1e9
    else:
        mtime = last_modified.timestamp() if last_modified else None
    provider = {"md5": stored_md5.hex()} if stored_md5 else {}
    return ObjectInfo(
        key=key,
        size=size,
        mtime=mtime,
        etag=_etag(etag),
        version=version,
        checksums={**_checksums(metadata, content_md5), **provider},
        provider_checksums=provider,
        metadata=dict(metadata),
        mode=attrs.mode,
        verified=verified,
    )


def properties_info(props: BlobProperties, key: str | None = None) -> ObjectInfo:
    """Info from Get Blob Properties or a List Blobs entry; ``key`` overrides its name.
    An entry without a name or a plain non-negative size (which a server's XML can
    leave out) raises ``StoreError``."""
    name = props.name if key is None else key
    size = props.size
    if not isinstance(name, str) or not name:
        raise StoreError(f"listing: a blob without a name ({name!r:.40})")
    if type(size) is not int or size < 0:
        raise StoreError(f"{name[:200]}: the server gave the size {size!r:.40}", key=name)
    settings = props.content_settings
    md5 = settings.content_md5 if settings else None
    modified = props.last_modified
    return _object_info(
        key=name,
        size=size,
        metadata=from_azure_metadata(props.metadata),
        last_modified=modified if isinstance(modified, datetime) else None,
        etag=props.etag if isinstance(props.etag, str) else None,
        version=props.version_id if isinstance(props.version_id, str) else None,
        content_md5=md5 if isinstance(md5, bytes | bytearray) else None,
    )


def listed_info(
    name: str,
    size: int,
    metadata: Mapping[str, str],
    last_modified: datetime | None,
    etag: str | None,
    version_id: str | None,
    content_md5: bytes | None,
) -> ObjectInfo:
    """Info from a lean List Blobs entry (``listing.ListedBlob``'s fields), read as
    ``properties_info`` reads the SDK's."""
    return _object_info(
        name,
        size,
        from_azure_metadata(metadata),
        last_modified,
        etag,
        version_id,
        content_md5,
    )


def response_info(
    key: str,
    size: int,
    metadata: Mapping[str, str],
    response: Mapping[str, Any],
    content_md5: bytes | None,
    *,
    verified: str | None = None,
) -> ObjectInfo:
    """Info for a blob just written, from the write's response headers (no HEAD).
    ``content_md5`` is the MD5 the service checked the whole body against (one Put
    Blob), so it is a provider checksum; ``verified`` what covered the write."""
    modified, etag, version = (response.get(k) for k in ("last_modified", "etag", "version_id"))
    return _object_info(
        key,
        size,
        metadata,
        modified if isinstance(modified, datetime) else None,
        etag if isinstance(etag, str) else None,
        version if isinstance(version, str) else None,
        content_md5,
        verified=verified,
        stored_md5=content_md5,
    )


def item_name(item: BlobProperties | BlobPrefix) -> str:
    """The name of a ``walk_blobs`` entry, blob or prefix (a sort key)."""
    return str(item.name)


def is_directory_marker(props: Any) -> bool:
    """Zero-byte ``dir/`` blobs (portal, HNS accounts, other tools) are not files
    (``props``: the SDK's ``BlobProperties`` or a lean ``ListedBlob``)."""
    return str(props.name).endswith("/") or (props.metadata or {}).get("hdi_isfolder") == "true"


def headers_info(
    key: str,
    size: int,
    headers: Mapping[str, str],
    *,
    whole: bool,
    verified: str | None = None,
    stored_md5: bytes | None = None,
    metadata: Mapping[str, str] | None = None,
) -> ObjectInfo:
    """Info from a lean response's headers (names lower-cased): Get Blob Properties,
    Get Blob, Put Blob. ``whole`` says the response's ``Content-MD5`` is the blob's (a
    HEAD, an unranged GET); a ranged GET names it ``x-ms-blob-content-md5``. A value
    that is not base64 is dropped (bucket contents are untrusted)."""
    if metadata is None:  # a write's caller gives what it wrote
        metadata = {
            name[len("x-ms-meta-") :].replace("_", "-"): value
            for name, value in headers.items()
            if name.startswith("x-ms-meta-")
        }
    md5_text = headers.get("x-ms-blob-content-md5") or (
        headers.get("content-md5") if whole else None
    )
    md5: bytes | None = None
    if md5_text:
        try:
            md5 = base64.b64decode(md5_text, validate=True)
        except ValueError:
            md5 = None
    modified: datetime | None = None
    if text := headers.get("last-modified"):
        try:
            modified = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            modified = None
    return _object_info(
        key,
        size,
        metadata,
        modified,
        headers.get("etag"),
        headers.get("x-ms-version-id"),
        md5 if md5 and len(md5) == 16 else None,
        verified=verified,
        stored_md5=stored_md5,
    )
