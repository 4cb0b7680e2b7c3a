"""Listings, page by page: ListObjectsV2 over the lean path (its XML parsed here) or
boto3, and ListMultipartUploads over boto3."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from datamover.errors import TransientError
from datamover.stores.base import ObjectInfo, PendingUpload
from datamover.stores.s3.client import BucketClient
from datamover.stores.s3.lean import Response
from datamover.stores.s3.objectinfo import listed_info, parse_timestamp


def parse_list_page(body: bytes) -> tuple[list[ObjectInfo], str | None]:
    """One ListObjectsV2 result (``encoding-type=url``): its entries in key order and
    the continuation token, or None on the last page."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise TransientError(f"listing: malformed response ({e})") from e
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    url_encoded = (root.findtext(f"{ns}EncodingType") or "") == "url"

    def decode(value: str) -> str:
        return unquote_plus(value) if url_encoded else value

    entries = [
        ObjectInfo(key=decode(cp.findtext(f"{ns}Prefix") or ""), size=0, is_dir=True)
        for cp in root.iterfind(f"{ns}CommonPrefixes")
    ]
    for obj in root.iterfind(f"{ns}Contents"):
        modified = obj.findtext(f"{ns}LastModified")
        entries.append(
            listed_info(
                decode(obj.findtext(f"{ns}Key") or ""),
                int(obj.findtext(f"{ns}Size") or 0),
                obj.findtext(f"{ns}ETag"),
                parse_timestamp(modified).timestamp() if modified else None,
            )
        )
    entries.sort(key=lambda info: info.key)
    truncated = (root.findtext(f"{ns}IsTruncated") or "").lower() == "true"
    token = root.findtext(f"{ns}NextContinuationToken") if truncated else None
    return entries, token or None


def _page_entries(page: Mapping[str, Any]) -> list[ObjectInfo]:
    """The entries of one boto3 ListObjectsV2 page in key order."""
    # A page holds its prefixes and its objects in two lists; one page spans one
    # key range, so merging the two by key keeps the whole listing in key order.
    entries = [
        ObjectInfo(key=cp["Prefix"], size=0, is_dir=True) for cp in page.get("CommonPrefixes", ())
    ]
    for obj in page.get("Contents", ()):
        entries.append(
            listed_info(obj["Key"], obj["Size"], obj.get("ETag"), obj["LastModified"].timestamp())
        )
    entries.sort(key=lambda info: info.key)
    return entries


def list_objects(
    s3: BucketClient, prefix: str, recursive: bool, page_size: int
) -> Iterator[ObjectInfo]:
    """``Store.list``: the lean path when it takes the first page, else boto3."""
    if not recursive and prefix and not prefix.endswith("/"):
        prefix += "/"  # one level down means "this directory", never a name prefix
    if s3.lean is not None:
        lean = _lean_list(s3, prefix, recursive, page_size)
        if lean is not None:
            yield from lean
            return
    kwargs: dict[str, Any] = {"Prefix": prefix, "MaxKeys": page_size}
    if not recursive:
        kwargs["Delimiter"] = "/"
    token: str | None = None
    while True:
        if token:
            kwargs["ContinuationToken"] = token
        page = s3.call(prefix, s3.client.list_objects_v2, **kwargs)
        yield from _page_entries(page)
        if not page.get("IsTruncated"):
            return
        token = page.get("NextContinuationToken")
        if not token:
            return


def _lean_list(
    s3: BucketClient, prefix: str, recursive: bool, page_size: int
) -> Iterator[ObjectInfo] | None:
    """ListObjectsV2 over the lean path, as ``list`` yields it; None if the first
    page must go through boto3. Keys come URL-encoded (``encoding-type=url``, as
    boto3 asks and decodes), so control characters survive the XML."""
    query = {
        "list-type": "2",
        "prefix": prefix,
        "max-keys": str(page_size),
        "encoding-type": "url",
    }
    if not recursive:
        query["delimiter"] = "/"
    first = s3.lean_request("GET", "", query=query)
    if first is None:
        return None
    return _lean_pages(s3, prefix, query, first)


def _lean_pages(
    s3: BucketClient, prefix: str, query: dict[str, str], page: Response | None
) -> Iterator[ObjectInfo]:
    while True:
        if page is None:
            page = s3.lean_request("GET", "", query=query)
            if page is None:  # the lean path was switched off between pages
                raise TransientError(f"{s3.url(prefix)}: listing interrupted", key=prefix)
        if page.status != 200:
            raise s3.lean_error(page, prefix)
        entries, token = parse_list_page(bytes(page.body))
        yield from entries
        if not token:
            return
        query["continuation-token"] = token
        page = None


def list_uploads(s3: BucketClient, prefix: str, page_size: int) -> Iterator[PendingUpload]:
    """``Store.list_pending_uploads``: ListMultipartUploads under ``prefix``."""
    kwargs: dict[str, Any] = {"Prefix": prefix, "MaxUploads": page_size}
    while True:
        page = s3.call(prefix, s3.client.list_multipart_uploads, **kwargs)
        for u in page.get("Uploads", ()):
            initiated = u.get("Initiated")
            yield PendingUpload(
                key=u["Key"],
                initiated=initiated.timestamp() if isinstance(initiated, datetime) else None,
                size=None,
                token={"upload_id": u["UploadId"]},
            )
        markers = {
            "KeyMarker": page.get("NextKeyMarker") or "",
            "UploadIdMarker": page.get("NextUploadIdMarker") or "",
        }
        if not page.get("IsTruncated") or not markers["KeyMarker"]:
            return
        if all(kwargs.get(k) == v for k, v in markers.items()):
            return  # a server repeating its markers would loop forever
        kwargs.update(markers)
