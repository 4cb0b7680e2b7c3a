"""Finding a name's inode (``Resolver.resolve``) and the HEADs that takes.

A lookup answers from what the mount knows while it is fresh (the inode, the
parent's complete listing, a negative entry). Else it asks the store: one HEAD for
a name a listing showed as a file; for a name nothing is known about, the HEAD, the
``dir/`` marker and "any key under ``dir/``" in parallel (a directory and a file of
the same name: the directory wins).

Concurrent HEADs of one key (lookups, getattr, a listing's batches) share one
request. An entry listed without its attributes (provisional, see
``datamover_fuse.readdir``) is HEADed when it is looked up, with "statahead"
HEADing its next ``STATAHEAD`` siblings in listing order in parallel, as ``ls -l``
will ask for them next.

A name whose object is a hard-link marker (``datamover-hardlink`` metadata) is the
inode of the object it names (``entry``): one more HEAD when that is not known yet.
The directory-metadata object (``DIR_META_NAME``) is never a name.
"""

from __future__ import annotations

import errno
import logging

import trio

from datamover.errors import NotFound
from datamover.stores.base import ObjectInfo, Store
from datamover_fuse.fserrors import FsError
from datamover_fuse.inodes import (
    Inode,
    InodeTable,
    Kind,
    child_key,
    is_reserved,
    kind_of,
    link_target,
)
from datamover_fuse.listing import DirCache
from datamover_fuse.runtime import Runtime

log = logging.getLogger(__name__)

#: Siblings HEADed ahead when a provisional entry is looked up.
STATAHEAD = 64


class _Pending:
    __slots__ = ("done", "error", "info")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.info: ObjectInfo | None = None
        self.error: BaseException | None = None


def _head_many(store: Store, keys: list[str]) -> list[ObjectInfo | BaseException | None]:
    """HEAD each key in turn (on one worker thread): its info, None when it is gone,
    or the error."""
    out: list[ObjectInfo | BaseException | None] = []
    for key in keys:
        try:
            out.append(store.stat(key))
        except NotFound:
            out.append(None)
        except Exception as e:
            out.append(e)
    return out


class Resolver:
    """Lookups, and the HEADs in flight (shared) and queued for statahead."""

    def __init__(self, rt: Runtime, table: InodeTable, dirs: DirCache) -> None:
        self.rt = rt
        self.table = table
        self.dirs = dirs
        self._stats: dict[str, _Pending] = {}
        #: Keys queued for statahead (bounded by STATAHEAD per lookup, deduplicated).
        self._ahead: set[str] = set()
        #: Attributes from a LIST are final for the kernel (``--attrs-from-list``).
        self._trust_list = rt.options.attrs_from_list

    # -- HEADs --------------------------------------------------------------------------

    def in_flight(self, key: str) -> bool:
        """A HEAD of ``key`` is under way (``stat`` would share it)."""
        return key in self._stats

    async def stat(self, key: str) -> ObjectInfo | None:
        """HEAD ``key``; concurrent asks for one key share one request."""
        pending = self._stats.get(key)
        if pending is not None:
            await pending.done.wait()
            if pending.error is not None:
                raise pending.error
            return pending.info
        pending = _Pending()
        self._stats[key] = pending
        try:
            pending.info = await self.rt.call(self.rt.store.stat, key)
        except NotFound:
            pending.info = None
        except Exception as e:
            pending.error = e
            raise
        finally:
            del self._stats[key]
            pending.done.set()
        return pending.info

    async def head_many(self, keys: list[str]) -> list[ObjectInfo | BaseException | None]:
        """HEAD ``keys`` one after the other on one worker thread, holding one
        ``stat_limiter`` slot (for a listing batch); lookups of these keys meanwhile
        share these HEADs. Per key: its info, None when it is gone, or the error."""
        waiting = {key: _Pending() for key in keys}
        self._stats.update(waiting)
        results: list[ObjectInfo | BaseException | None] = []
        try:
            async with self.rt.stat_limiter:
                results = await self.rt.call(_head_many, self.rt.store, keys)
        except BaseException as e:
            results = [e] * len(keys)
            raise
        finally:
            for key, got in zip(keys, results, strict=True):
                shared = waiting[key]
                if self._stats.get(key) is shared:
                    del self._stats[key]
                if isinstance(got, BaseException):
                    shared.error = got
                    log.debug("%s: attributes not fetched for the listing: %s", key, got)
                else:
                    shared.info = got
                shared.done.set()
        return results

    async def refresh_file(self, node: Inode) -> None:
        """HEAD a file, symlink or special file; ENOENT (and detach) when it is gone,
        changed type, or turned out to be a hard-link marker (its name is looked up
        again, as the file it names)."""
        if node.detached:
            # Its name is another file's now, or none: nothing learnt of the key is
            # this inode's (an old version's handles read on what they hold).
            raise FsError(errno.ESTALE, f"{node.key}: replaced or deleted")
        self.statahead(node)
        info = await self.stat(node.key)
        if (
            info is None
            or (kind_of(info) is not node.kind and not self._listed_as_file(node, info))
            or link_target(info) not in (None, node.key)
        ):
            self.table.detach(node)
            raise FsError(errno.ENOENT, f"{node.key} is gone")
        if self.table.superseded(node, info):
            # Open handles keep this inode; the name gets a new one, and the kernel is
            # told to look the name up again.
            self.table.supersede(node, info, exact=True)
            self.rt.name_changed(node.parent, node.name)
            return
        self.table.apply_info(node, info, exact=True)

    async def entry(self, parent: Inode, name: str, info: ObjectInfo, *, exact: bool) -> Inode:
        """The inode of ``name`` in ``parent``, listed or HEADed as ``info``. A
        hard-link marker's is the file it names (HEADed unless known and fresh); a
        marker whose file is gone shows as what it is, an empty file."""
        target = link_target(info)
        key = parent.key + name
        if target is None or target == key:
            return self.table.file_node(parent, name, info, exact=exact)
        node = self.table.at(target)
        if (
            node is None
            or node.key != target
            or (node.local is None and (not node.exact or node.expires <= self.rt.clock()))
        ):
            found = await self.stat(target)
            if found is None or link_target(found) is not None:
                return self.table.file_node(parent, name, info, exact=exact)
            holder = self.table.dir_holding(target)
            node = self.table.object_node(
                target,
                holder.ino if holder is not None else 0,
                target.rsplit("/", 1)[-1],
                found,
                exact=True,
            )
        self.table.alias(node, key)
        return node

    def _listed_as_file(self, node: Inode, info: ObjectInfo) -> bool:
        """A trusted LIST showed a stored symlink as a file (it can't tell them apart)
        and the kernel was told so: it stays a file whose bytes are the target."""
        return self._trust_list and node.kind is Kind.FILE and kind_of(info) is Kind.LINK

    def statahead(self, node: Inode) -> None:
        if self._trust_list:
            return  # siblings are not provisional: a HEAD here is for this file alone
        parent = self.table.parent_of(node)
        order = self.dirs.orders.get(parent.key) if parent is not None else None
        if order is None or node.index < 0 or parent is None:
            return
        for name in order[node.index + 1 : node.index + 1 + STATAHEAD]:
            sibling = self.table.at(parent.key + name)
            if (
                sibling is None
                or sibling.exact
                or sibling.local is not None
                or sibling.key in self._stats
                or sibling.key in self._ahead
            ):
                continue
            self._ahead.add(sibling.key)
            self.rt.spawn(self._stat_ahead, sibling)

    async def _stat_ahead(self, node: Inode) -> None:
        key = node.key
        try:
            async with self.rt.stat_limiter:
                if node.exact or node.detached:
                    return  # a listing batch or a lookup got it while this one queued
                info = await self.stat(key)
        except Exception:
            return
        finally:
            self._ahead.discard(key)
        if (
            info is not None
            and not node.detached
            and node.local is None
            and kind_of(info) is node.kind
        ):
            self.table.apply_info(node, info, exact=True)

    # -- lookups ------------------------------------------------------------------------

    async def resolve(self, parent: Inode, name: str) -> Inode | None:
        """The inode of ``name`` in ``parent``, or None: no such entry."""
        fkey = child_key(parent, name)
        if is_reserved(name):
            return None
        dkey = fkey + "/"
        now = self.rt.clock()
        trust = self._trust_list
        table = self.table
        d = table.at(dkey)
        if d is not None and (not d.remote or ((d.exact or trust) and d.expires > now)):
            return d
        f = table.at(fkey)
        if f is not None and (f.local is not None or not f.remote):
            return f
        if d is None and f is not None and not table.provisional(f) and f.expires > now:
            return f
        if self.dirs.negative.get(fkey):
            return None
        listing = self.dirs.listings.get(parent.key)
        info = listing.entries.get(name) if listing is not None else None
        if info is None and listing is not None and listing.complete:
            return None
        if info is not None and info.is_dir:
            if trust:
                return self.table.dir_node(parent, name, None, exact=False)
            found = await self.rt.call(self.rt.fsops.stat_dir, dkey)
            return self.table.dir_node(parent, name, found, exact=True)
        if info is not None:
            f = await self.entry(
                parent, name, info, exact=self.rt.fsops.listing_has_metadata or info.metadata != {}
            )
            if not table.provisional(f):
                return f
        if d is None and f is not None and f.remote:
            # A listing (maybe still being read) says it is a file: one HEAD for the
            # metadata, with the next siblings HEADed ahead as `ls -l` will want them.
            self.statahead(f)
            fresh = await self.stat(fkey)
            if fresh is None:
                if f.key == fkey:
                    self.table.detach(f)
                self.dirs.negative.put(fkey, True)
                return None
            return await self.entry(parent, name, fresh, exact=True)
        head: ObjectInfo | None = None
        marker: ObjectInfo | None = None
        has_child = False

        async def ask_head() -> None:
            nonlocal head
            head = await self.stat(fkey)

        async def ask_marker() -> None:
            nonlocal marker
            marker = await self.rt.call(self.rt.fsops.stat_dir, dkey)

        async def ask_child() -> None:
            nonlocal has_child
            has_child = await self.rt.call(self.rt.fsops.has_child, dkey)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_head)
            nursery.start_soon(ask_marker)
            nursery.start_soon(ask_child)
        if marker is not None or has_child:
            return self.table.dir_node(parent, name, marker, exact=True)
        if head is not None:
            return await self.entry(parent, name, head, exact=True)
        self.dirs.negative.put(fkey, True)
        return None
