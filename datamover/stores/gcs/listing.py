"""objects.list, page by page, on the lean path or the SDK: each page as (objects,
prefixes, next page's token), for ``GCSStore._pages`` to guard (``PageGuard``) and
``GCSStore._list`` to put in key order.

The lean pages come from ``LeanGCS.list_page`` (``fields=`` trims each entry to what
``blob_info`` reads; the body bounded by ``client.max_response_body``); the SDK's from
``list_blobs`` with its retry. Either way an object is read by ``blob_info``, which
refuses values of the wrong shape, and a 404 is the bucket's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from datamover.errors import StoreError
from datamover.stores.gcs.lean import LeanGCS

#: One page: its objects (SDK blobs or lean ``Resource``s), its prefixes, the token of
#: the next page (None on the last).
Page = tuple[list[Any], list[Any], str | None]


def sdk_pages(
    client: Any,
    bucket: Any,
    prefix: str,
    delimiter: str | None,
    page_size: int,
    retry: Any,
    map_error: Callable[[BaseException], StoreError],
) -> Iterator[Page]:
    """The SDK's listing pages, errors mapped by ``map_error``."""
    try:
        iterator = client.list_blobs(
            bucket,
            prefix=prefix or None,
            delimiter=delimiter,
            page_size=page_size,
            retry=retry,
        )
        pages = iter(iterator.pages)
    except Exception as e:
        raise map_error(e) from e
    while True:
        try:
            page = next(pages, None)
            if page is None:
                return
            blobs = list(page)
            prefixes = list(getattr(page, "prefixes", ()))
        except Exception as e:
            raise map_error(e) from e
        yield blobs, prefixes, iterator.next_page_token


def lean_pages(lean: LeanGCS, prefix: str, delimiter: str | None, page_size: int) -> Iterator[Page]:
    """The lean listing's pages, following each page's token."""
    token: str | None = None
    while True:
        blobs, prefixes, token = lean.list_page(prefix, delimiter, token, page_size)
        yield blobs, prefixes, token
        if token is None:
            return


__all__ = ["Page", "lean_pages", "sdk_pages"]
