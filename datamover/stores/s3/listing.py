"""Listings, page by page: ListObjectsV2 over the lean path (its XML parsed here) or
boto3, and ListMultipartUploads over boto3.

What a listing server sends is checked, not trusted: a lean page's body is read only
up to ``MAX_LIST_BODY``; its XML may not declare a DTD (no entity expansion); every
entry must have a key and a plain non-negative size (else ``StoreError``); pages may
not hold more than ``max-keys`` entries nor keys outside the prefix; and the chain of
pages may not loop (``datamover.stores.bounds.PageGuard``)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from datamover.errors import StoreError, TransientError
from datamover.stores.base import MiB, ObjectInfo, PendingUpload
from datamover.stores.bounds import PageGuard
from datamover.stores.s3.client import BucketClient
from datamover.stores.s3.lean import Response
from datamover.stores.s3.objectinfo import listed_info, parse_timestamp

#: S3's own ceiling for one ListObjectsV2 / ListMultipartUploads page.
MAX_KEYS = 1000
#: A lean listing page's body: 1,000 keys of 1,024 bytes, URL-encoded (3 bytes a byte
#: at worst) with their sizes, ETags and dates, come to under 4 MiB.
MAX_LIST_BODY = 8 * MiB
#: Sizes past this are not sizes (S3's limit is 5 TiB; others' are smaller).
_MAX_SIZE = 2**63 - 1


def _size(value: object, key: str) -> int:
    """A listed size: a non-negative integer, as int or as decimal text."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if type(value) is not int or not 0 <= value <= _MAX_SIZE:
        raise StoreError(f"listing: bad size {str(value)[:40]!r} for {key[:200]!r}", key=key)
    return value


def _key(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise StoreError(f"listing: an entry without a key ({str(value)[:40]!r})")
    return value


def _mtime(value: object) -> float | None:
    """A listed LastModified as seconds; None when absent or unreadable (an object
    store's listing mtime only ever stands in for metadata a HEAD would give)."""
    try:
        if isinstance(value, str):  # the lean path's (the most listed), then boto3's
            return parse_timestamp(value).timestamp() if value else None
        if isinstance(value, datetime):
            return value.timestamp()
    except Exception:  # dateutil's parser, behind botocore's, raises several kinds
        pass
    return None


def parse_list_page(body: bytes) -> tuple[list[ObjectInfo], str | None]:
    """One ListObjectsV2 result (``encoding-type=url``): its entries in key order and
    the continuation token, or None on the last page. Raises ``TransientError`` when
    the XML does not parse, ``StoreError`` when it declares a DTD or an entry is
    unusable."""
    if b"<!DOCTYPE" in body:
        raise StoreError("listing: the response declares a DTD (S3 never sends one)")
    try:
        root = ET.fromstring(body)
    except (ET.ParseError, LookupError) as e:  # LookupError: an unknown encoding
        raise TransientError(f"listing: malformed response ({e})") from e
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    url_encoded = (root.findtext(f"{ns}EncodingType") or "") == "url"

    def decode(value: str | None) -> str:
        # A key without '%' or '+' decodes to itself (the usual key: no call for it).
        if url_encoded and value and ("%" in value or "+" in value):
            value = unquote_plus(value)
        return _key(value)

    entries = [
        ObjectInfo(key=decode(cp.findtext(f"{ns}Prefix")), size=0, is_dir=True)
        for cp in root.iterfind(f"{ns}CommonPrefixes")
    ]
    for obj in root.iterfind(f"{ns}Contents"):
        key = decode(obj.findtext(f"{ns}Key"))
        entries.append(
            listed_info(
                key,
                _size(obj.findtext(f"{ns}Size") or "0", key),
                obj.findtext(f"{ns}ETag"),
                _mtime(obj.findtext(f"{ns}LastModified")),
            )
        )
    entries.sort(key=lambda info: info.key)
    truncated = (root.findtext(f"{ns}IsTruncated") or "").lower() == "true"
    token = root.findtext(f"{ns}NextContinuationToken") if truncated else None
    return entries, token or None


def page_entries(page: Mapping[str, Any]) -> list[ObjectInfo]:
    """The entries of one boto3 ListObjectsV2 page in key order. Raises
    ``StoreError`` for an entry without a key or a usable size."""
    # A page holds its prefixes and its objects in two lists; one page spans one
    # key range, so merging the two by key keeps the whole listing in key order.
    entries = [
        ObjectInfo(key=_key(cp.get("Prefix")), size=0, is_dir=True)
        for cp in page.get("CommonPrefixes") or ()
    ]
    for obj in page.get("Contents") or ():
        key = _key(obj.get("Key"))
        entries.append(
            listed_info(
                key,
                _size(obj.get("Size", 0), key),
                obj.get("ETag"),
                _mtime(obj.get("LastModified")),
            )
        )
    entries.sort(key=lambda info: info.key)
    return entries


def _checked(guard: PageGuard, entries: list[ObjectInfo], token: str | None) -> None:
    """One page of a key-ordered listing through ``guard``."""
    if entries:
        guard.page(len(entries), token, entries[0].key, entries[-1].key)
    else:
        guard.page(0, token)


def list_objects(
    s3: BucketClient, prefix: str, recursive: bool, page_size: int
) -> Iterator[ObjectInfo]:
    """``Store.list``: the lean path when it takes the first page, else boto3."""
    if not recursive and prefix and not prefix.endswith("/"):
        prefix += "/"  # one level down means "this directory", never a name prefix
    page_size = max(1, min(page_size, MAX_KEYS))
    guard = PageGuard(s3.url(prefix), prefix=prefix, page_size=page_size)
    if s3.lean is not None:
        lean = _lean_list(s3, prefix, recursive, page_size, guard)
        if lean is not None:
            yield from lean
            return
    kwargs: dict[str, Any] = {"Prefix": prefix, "MaxKeys": page_size}
    if not recursive:
        kwargs["Delimiter"] = "/"
    while True:
        page = s3.call(prefix, s3.client.list_objects_v2, **kwargs)
        entries = page_entries(page)
        token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
        if token is not None and not isinstance(token, str):
            raise guard.error(f"named a continuation token that is not text ({token!r:.40})")
        _checked(guard, entries, token or None)
        yield from entries
        if not token:
            return
        kwargs["ContinuationToken"] = token


def _lean_list(
    s3: BucketClient, prefix: str, recursive: bool, page_size: int, guard: PageGuard
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
    first = s3.lean_request("GET", "", query=query, max_body=MAX_LIST_BODY)
    if first is None:
        return None
    return _lean_pages(s3, prefix, query, first, guard)


def _lean_pages(
    s3: BucketClient,
    prefix: str,
    query: dict[str, str],
    page: Response | None,
    guard: PageGuard,
) -> Iterator[ObjectInfo]:
    while True:
        if page is None:
            page = s3.lean_request("GET", "", query=query, max_body=MAX_LIST_BODY)
            if page is None:  # the lean path was switched off between pages
                raise TransientError(f"{s3.url(prefix)}: listing interrupted", key=prefix)
        if page.status != 200:
            raise s3.lean_error(page, prefix)
        try:
            entries, token = parse_list_page(bytes(page.body))
        except StoreError as e:
            raise type(e)(f"{s3.url(prefix)}: {e}", key=prefix) from None
        _checked(guard, entries, token)
        yield from entries
        if not token:
            return
        query["continuation-token"] = token
        page = None


def _upload(u: Mapping[str, Any]) -> PendingUpload:
    key, upload_id = u.get("Key"), u.get("UploadId")
    if not isinstance(key, str) or not isinstance(upload_id, str) or not upload_id:
        raise StoreError(f"upload listing: an entry without a key or an upload id ({key!r:.80})")
    initiated = u.get("Initiated")
    return PendingUpload(
        key=key,
        initiated=_mtime(initiated) if isinstance(initiated, datetime) else None,
        size=None,
        token={"upload_id": upload_id},
    )


def list_uploads(s3: BucketClient, prefix: str, page_size: int) -> Iterator[PendingUpload]:
    """``Store.list_pending_uploads``: ListMultipartUploads under ``prefix``. A page
    of uploads is in (key, initiation) order, not key order alone, so each key is
    checked against the prefix; the (key, upload id) markers are the page token."""
    page_size = max(1, min(page_size, MAX_KEYS))
    guard = PageGuard(s3.url(prefix), prefix=prefix, page_size=page_size)
    kwargs: dict[str, Any] = {"Prefix": prefix, "MaxUploads": page_size}
    while True:
        page = s3.call(prefix, s3.client.list_multipart_uploads, **kwargs)
        uploads = [_upload(u) for u in page.get("Uploads") or ()]
        for upload in uploads:
            guard.key(upload.key)
        markers = {
            "KeyMarker": page.get("NextKeyMarker") or "",
            "UploadIdMarker": page.get("NextUploadIdMarker") or "",
        }
        more = bool(page.get("IsTruncated")) and bool(markers["KeyMarker"])
        token = "\n".join(str(v) for v in markers.values()) if more else None
        if uploads:
            # One key can have many uploads, over several pages: the ids tell them apart.
            first, last = uploads[0], uploads[-1]
            guard.page(
                len(uploads),
                token,
                f"{first.key}\n{first.token['upload_id']}",
                f"{last.key}\n{last.token['upload_id']}",
            )
        else:
            guard.page(0, token)
        yield from uploads
        if token is None:
            return
        kwargs.update(markers)
