"""List Blobs, page by page, checked as it comes.

The SDK pages a listing by itself, following each answer's ``NextMarker`` for as long
as the server names one; ``guarded_pages`` takes the pages one at a time instead and
runs them through a ``PageGuard`` (``datamover.stores.bounds``): no more entries than
asked for per page (Azure counts blob prefixes with blobs), every name text under the
prefix, no marker named twice, no page repeated, no endless run of empty pages. A
page body itself is bounded by the transport (``client.MAX_RESPONSE_BODY``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from datamover.stores.bounds import PageGuard


def guarded_pages(paged: Any, guard: PageGuard, page_size: int) -> Iterator[list[Any]]:
    """The pages of ``paged`` (an SDK ``ItemPaged`` of blobs or prefixes) as lists,
    each checked by ``guard``. The SDK's errors come out as they are (``AzureError``),
    the guard's as ``StoreError``."""
    pages = paged.by_page()
    for page in pages:
        items = list(page)
        token = pages.continuation_token
        if len(items) > page_size:
            raise guard.error(f"returned {len(items)} entries in a page of {page_size}")
        for item in items:
            name = getattr(item, "name", None)
            if not isinstance(name, str) or not name:
                raise guard.error(f"named an entry without a name ({name!r:.40})")
            guard.key(name)
        if items:
            guard.page(len(items), token, items[0].name, items[-1].name)
        else:
            guard.page(0, token)
        yield items
