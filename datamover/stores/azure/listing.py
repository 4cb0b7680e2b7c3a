"""List Blobs, page by page, checked as it comes: on the lean path (the XML parsed
here) or on the SDK.

The SDK pages a listing by itself, following each answer's ``NextMarker`` for as long
as the server names one; ``guarded_pages`` takes the pages one at a time instead and
runs them through a ``PageGuard`` (``datamover.stores.bounds``): no more entries than
asked for per page (Azure counts blob prefixes with blobs), every name text under the
prefix, no marker named twice, no page repeated, no endless run of empty pages. A
page body itself is bounded by the transport (``client.MAX_RESPONSE_BODY``).

The lean path (``lean_pages``) asks for one page at a time with ``LeanAzure.list_page``
and parses it with ``parse_list_page``, under the same guard and the same body bound.
The XML may not declare a DTD (no entity expansion); a name the service sent
percent-encoded (``Encoded="true"``: characters XML can't carry) is decoded as the SDK
decodes it; an entry without a name or a plain non-negative size is a ``StoreError``;
a page that does not parse is a ``TransientError``. Names are not otherwise judged
here: the engine confines every listed name to the destination (``..``, control
characters) as it does for the SDK's listing.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from datamover.errors import StoreError, TransientError
from datamover.stores.bounds import PageGuard

if TYPE_CHECKING:
    from datamover.stores.azure.lean import LeanAzure

#: Sizes past this are not sizes.
_MAX_SIZE = 2**63 - 1


@dataclass(slots=True)
class ListedBlob:
    """One ``<Blob>`` of a lean List Blobs page, with what ``properties_info`` reads."""

    name: str
    size: int
    metadata: dict[str, str] = field(default_factory=dict)
    last_modified: datetime | None = None
    etag: str | None = None
    version_id: str | None = None
    content_md5: bytes | None = None


@dataclass(slots=True)
class ListedPrefix:
    """One ``<BlobPrefix>`` (a delimited listing's directory)."""

    name: str


def check_page(guard: PageGuard, names: list[Any], token: str | None, page_size: int) -> None:
    """One page's names (in the page's order) and its marker through ``guard``."""
    if len(names) > page_size:
        raise guard.error(f"returned {len(names)} entries in a page of {page_size}")
    for name in names:
        if not isinstance(name, str) or not name:
            raise guard.error(f"named an entry without a name ({name!r:.40})")
        guard.key(name)
    if names:
        guard.page(len(names), token, names[0], names[-1])
    else:
        guard.page(0, token)


def guarded_pages(paged: Any, guard: PageGuard, page_size: int) -> Iterator[list[Any]]:
    """The pages of ``paged`` (an SDK ``ItemPaged`` of blobs or prefixes) as lists,
    each checked by ``guard``. The SDK's errors come out as they are (``AzureError``),
    the guard's as ``StoreError``."""
    pages = paged.by_page()
    for page in pages:
        items = list(page)
        token = pages.continuation_token
        check_page(guard, [getattr(item, "name", None) for item in items], token, page_size)
        yield items


def lean_pages(
    lean: LeanAzure, prefix: str, delimiter: str | None, guard: PageGuard, page_size: int
) -> Iterator[list[ListedBlob | ListedPrefix]]:
    """The pages of a lean List Blobs (metadata included), each sorted by name and
    checked by ``guard``; the service's errors come out mapped (``StoreError``)."""
    marker: str | None = None
    while True:
        body = lean.list_page(prefix, delimiter, marker, page_size)
        items, marker = parse_list_page(body)
        check_page(guard, [item.name for item in items], marker, page_size)
        items.sort(key=lambda item: item.name)
        yield items
        if not marker:
            return


def _text(element: ET.Element | None) -> str | None:
    return None if element is None else (element.text or "")


def _name(element: ET.Element | None) -> str:
    """A ``<Name>``: percent-decoded when the service marked it ``Encoded``."""
    if element is None:
        raise StoreError("listing: an entry without a name")
    text = element.text or ""
    if element.get("Encoded", "").lower() == "true":
        text = unquote(text)
    if not text:
        raise StoreError("listing: an entry without a name")
    return text


def _size(value: str | None, name: str) -> int:
    if value is not None and value.isascii() and value.isdigit() and len(value) <= 19:
        size = int(value)
        if size <= _MAX_SIZE:
            return size
    raise StoreError(f"{name[:200]}: the server gave the size {value!r:.40}", key=name)


def _modified(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None


def _md5(value: str | None) -> bytes | None:
    if not value:
        return None
    try:
        md5 = base64.b64decode(value, validate=True)
    except ValueError:
        return None
    return md5 if len(md5) == 16 else None


def parse_list_page(body: bytes | bytearray) -> tuple[list[ListedBlob | ListedPrefix], str | None]:
    """One List Blobs answer: its blobs and prefixes in the page's order and the
    ``NextMarker`` (None on the last page)."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise StoreError("listing: the response declares a DTD (Azure never sends one)")
    try:
        root = ET.fromstring(bytes(body))
    except (ET.ParseError, LookupError) as e:  # LookupError: an unknown encoding
        raise TransientError(f"listing: malformed response ({e})") from e
    items: list[ListedBlob | ListedPrefix] = []
    blobs = root.find("Blobs")
    for element in blobs if blobs is not None else ():
        if element.tag == "BlobPrefix":
            items.append(ListedPrefix(_name(element.find("Name"))))
        elif element.tag == "Blob":
            name = _name(element.find("Name"))
            found = element.find("Properties")
            props = {p.tag: p.text or "" for p in found} if found is not None else {}
            get = props.get
            meta = element.find("Metadata")
            items.append(
                ListedBlob(
                    name=name,
                    size=_size(get("Content-Length"), name),
                    metadata={m.tag: m.text or "" for m in meta} if meta is not None else {},
                    last_modified=_modified(get("Last-Modified")),
                    etag=get("Etag") or None,
                    version_id=_text(element.find("VersionId")) or None,
                    content_md5=_md5(get("Content-MD5")),
                )
            )
    marker = root.findtext("NextMarker")
    return items, marker or None


__all__ = [
    "ListedBlob",
    "ListedPrefix",
    "check_page",
    "guarded_pages",
    "lean_pages",
    "parse_list_page",
]
