"""What the mount remembers about directories' names: ``DirCache``.

Complete directory listings answer lookups (``dir_ttl``, at most
``max_cached_entries`` names in all); the names of each directory in listing order
are kept for statahead (longer, ``ORDER_TTL``); negative lookups are remembered
(``negative_ttl``, ``NEGATIVE_ENTRIES`` names); files created here and not uploaded
yet are remembered per directory so readdir shows them and rmdir sees them. The
core's own changes update all of these (``add``, ``remove``, ``moved``); readdir
fills them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from datamover.stores.base import DIR_META_NAME, ObjectInfo
from datamover_fuse.cache import Clock, TTLCache
from datamover_fuse.inodes import Inode
from datamover_fuse.options import MountOptions

#: Entries pulled from a listing per worker-thread call.
LIST_BATCH = 500
NEGATIVE_ENTRIES = 100_000
ORDER_TTL = 600.0


class DirListing:
    """Names under one prefix, in listing order; ``complete`` once fully read."""

    def __init__(self) -> None:
        self.entries: dict[str, ObjectInfo] = {}
        self.order: list[str] = []
        self.complete = False

    def add(self, name: str, info: ObjectInfo) -> None:
        if name not in self.entries:
            self.order.append(name)
        self.entries[name] = info

    def remove(self, name: str) -> None:
        if self.entries.pop(name, None) is not None:
            self.order.remove(name)


def take(source: Iterator[ObjectInfo], n: int) -> list[ObjectInfo]:
    return list(itertools.islice(source, n))


def entry_name(prefix: str, info: ObjectInfo) -> str | None:
    """The name a listed key has in the directory ``prefix``, or None: not shown
    (the marker itself, the directory's metadata object, or a name no directory
    entry can have)."""
    rel = info.key[len(prefix) :]
    name = rel[:-1] if info.is_dir else rel
    if not name or "/" in name or name in (".", "..") or name == DIR_META_NAME:
        return None
    return name


class DirCache:
    """The listing, order and negative caches, and the names created here that the
    store does not have yet (see the module docstring)."""

    def __init__(self, options: MountOptions, clock: Clock) -> None:
        self.listings: TTLCache[str, DirListing] = TTLCache(
            options.max_cached_entries, options.dir_ttl, clock
        )
        # Names in listing order per directory, for statahead; kept longer than the
        # listing itself because `ls -l` of a big directory outlasts --dir-ttl.
        self.orders: TTLCache[str, list[str]] = TTLCache(
            options.max_cached_entries, ORDER_TTL, clock
        )
        self.negative: TTLCache[str, bool] = TTLCache(NEGATIVE_ENTRIES, options.negative_ttl, clock)
        #: Directory key -> names of files created in it and not in the store yet.
        self.local_only: dict[str, set[str]] = {}

    def add(self, parent: Inode, name: str, info: ObjectInfo) -> None:
        listing = self.listings.get(parent.key)
        if listing is not None:
            listing.add(name, info)

    def remove(self, parent: Inode, name: str) -> None:
        listing = self.listings.get(parent.key)
        if listing is not None:
            listing.remove(name)

    def add_local(self, parent: Inode, name: str) -> None:
        self.local_only.setdefault(parent.key, set()).add(name)

    def forget_local(self, parent: Inode | None, name: str) -> None:
        if parent is None:
            return
        names = self.local_only.get(parent.key)
        if names is not None:
            names.discard(name)
            if not names:
                del self.local_only[parent.key]

    def has_local_under(self, prefix: str) -> bool:
        return any(n.startswith(prefix) for n in self.local_only)

    def moved(self, old_prefix: str, new_prefix: str) -> None:
        """A directory moved: its local names follow it; its listings, and any of the
        place it moved to (a directory it replaced), are dropped, as are negative
        entries there (names that now exist)."""
        for key in list(self.local_only):
            if key.startswith(old_prefix):
                self.local_only[new_prefix + key[len(old_prefix) :]] = self.local_only.pop(key)
        for key in self.listings.keys():  # noqa: SIM118 - a TTLCache, not a dict
            if key.startswith((old_prefix, new_prefix)):
                self.listings.pop(key)
        for key in self.negative.keys():  # noqa: SIM118 - a TTLCache, not a dict
            if key.startswith(new_prefix):
                self.negative.pop(key)
