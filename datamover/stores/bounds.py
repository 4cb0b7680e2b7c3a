"""What a server may make a store read: bounded responses, and listings that can't
loop.

``ResponseTooLarge`` is the error for an answer longer than what was asked for or
than a store accepts for it (the lean S3 path and the ``requests`` sessions of the
Azure and GCS SDKs raise it: ``s3/lean.py``, ``httpbounds.py``).

Listings: a guard every backend runs over the pages it fetches.

A listing is a chain of requests, each carrying the token (S3 continuation token or
key/upload-id markers, Azure ``NextMarker``, GCS ``pageToken``) the previous answer
named. Everything in that chain is the server's word, so a server (or anything
between us and it) could keep a listing going for ever: by naming a token it already
named, by answering "more to come" with empty pages, or by serving the same page
again under fresh tokens. ``PageGuard`` turns each of those into a ``StoreError``
naming the server's fault, in constant memory and at a cost per page, not per entry:

* a token seen before is an error. The last ``RECENT`` tokens are remembered exactly
  (as 16-byte digests); an older repeat, a cycle longer than that, is caught by
  Brent's cycle detection (one saved token, re-saved at powers of two), so memory
  does not grow with the listing;
* more than ``MAX_EMPTY_PAGES`` pages in a row with no new entries that still say
  "more to come" is an error. Correct servers do return empty pages (Azure and GCS
  when a request's scan ran out of time or met only keys rolled up under a prefix
  already named), so the bound is generous: a thousand requests wasted, not a loop;
* a page holding more entries than were asked for is an error (``page_size``), and a
  page whose entries fall outside the prefix asked for is an error: they would be
  copied, or deleted by ``sync --delete``, under a name the prefix cut wrongly;
* a page that repeats an earlier page (the same first and last key and count) is an
  error, caught as the tokens are: a correct listing names every key once, so pages
  never repeat, even on servers whose order is not plain byte order (SeaweedFS).

Keys that merely go backwards are left to the engine: SeaweedFS legitimately lists a
directory's subtree before names that sort ahead of its ``/``, and ``engine.sync``
reorders a window and refuses deletions when a listing is out of order (a key listed
twice counts as out of order there).
"""

from __future__ import annotations

import hashlib
from collections import deque

from datamover.errors import StoreError


class ResponseTooLarge(StoreError):
    """The server's answer is larger than what was asked for or than datamover accepts
    for it: a body longer than the range or buffer, or than the caller's bound (the
    size a listing gave, a listing page's cap), or headers over their bound. Found
    before the excess is read (from ``Content-Length``, or as the bytes arrive). Not
    retried: the same server would answer the same. ``size`` is the length the
    server declared, when it declared one."""

    def __init__(self, message: str, *, key: str | None = None, size: int | None = None) -> None:
        super().__init__(message, key=key)
        self.size = size


#: Tokens (and pages) remembered exactly; older repeats are caught by Brent's method.
RECENT = 1024
#: Pages in a row with no entries that still say "more to come".
MAX_EMPTY_PAGES = 1000


def _digest(*parts: str | bytes | int) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.digest()


class Recurrence:
    """Whether a value of a sequence has come before: exactly among the last
    ``recent``, and for older ones by Brent's cycle detection (a sequence that keeps
    repeating a cycle is caught within a few turns of it). Constant memory."""

    def __init__(self, recent: int = RECENT) -> None:
        self._recent: deque[bytes] = deque()
        self._set: set[bytes] = set()
        self._limit = recent
        self._saved: bytes | None = None
        self._power = 1
        self._steps = 0

    def seen(self, value: bytes) -> bool:
        """Record ``value``; True if it came before."""
        if value in self._set or value == self._saved:
            return True
        self._recent.append(value)
        self._set.add(value)
        if len(self._recent) > self._limit:
            self._set.discard(self._recent.popleft())
        self._steps += 1
        if self._steps == self._power:
            self._saved, self._power, self._steps = value, self._power * 2, 0
        return False


class PageGuard:
    """Checks the pages of one listing of ``where`` (a URL, for messages). Call
    ``page`` once per page with what the page held and the token it named for the
    next one (None on the last page). Raises ``StoreError`` on the faults the module
    docstring lists."""

    def __init__(self, where: str, *, prefix: str = "", page_size: int | None = None) -> None:
        self.where = where
        self.prefix = prefix
        self.page_size = page_size
        self._tokens = Recurrence()
        self._pages = Recurrence()
        self._empty = 0
        self.pages = 0

    def error(self, what: str) -> StoreError:
        """The error for a listing that ``what`` (a phrase naming the server's fault)."""
        return StoreError(
            f"{self.where}: the server's listing {what} (a server bug; the listing was "
            f"stopped after {self.pages} pages)",
            key=self.prefix,
        )

    def page(
        self, count: int, token: str | None, first: str | None = None, last: str | None = None
    ) -> None:
        """One page of ``count`` new entries whose smallest and largest keys are
        ``first`` and ``last``, and the ``token`` it names for the next page (None on
        the last). When a page is not in key order, ``first`` and ``last`` may be any
        two of its entries (its first and last, say) and every key must go through
        ``key``: only a sorted page's ends tell that all of it lies under the prefix."""
        self.pages += 1
        if self.page_size is not None and count > self.page_size:
            raise self.error(f"returned {count} entries in a page of at most {self.page_size}")
        for key in (first, last):
            if key is not None:
                self.key(key)
        if count:
            self._empty = 0
            if self._pages.seen(_digest(first or "", last or "", count)):
                raise self.error(f"repeated a page (keys {first!r} to {last!r})")
        elif token:
            self._empty += 1
            if self._empty > MAX_EMPTY_PAGES:
                raise self.error(f"returned {self._empty} empty pages in a row, each 'truncated'")
        if token and self._tokens.seen(_digest(token)):
            raise self.error(f"repeated the continuation token {token[:80]!r}")

    def key(self, key: str) -> None:
        """Check one listed key: it must lie under the prefix that was asked for."""
        if not key.startswith(self.prefix):
            raise self.error(f"named {key[:200]!r}, outside the prefix {self.prefix!r}")


__all__ = ["MAX_EMPTY_PAGES", "RECENT", "PageGuard", "Recurrence", "ResponseTooLarge"]
