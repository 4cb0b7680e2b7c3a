"""Sync planning: copy only what differs, optionally delete what the source lacks.

Both trees are listed (streamed, paged) and merge-joined in key order, so memory does
not grow with the tree. A file present on both sides is *unchanged* when

* default: sizes are equal and the POSIX mtimes agree (to the nanosecond, or to the
  second when either side only kept seconds, as s3fs does). An object store's listing
  has no user metadata, so for equal-size candidates the object is HEADed for the
  ``mtime`` datamover (or rclone, or s3fs) stored; an object with no stored mtime
  counts as changed.
* ``checksum=True``: whole-file digests are equal. The destination's digest comes from
  the metadata datamover stored on it (no re-read); only when that is absent is the
  destination re-read. The source's digest comes from its metadata, or by reading it.
  A symlink's digest is that of its link text (its content as stored on an object
  store, read with ``read_object``: a POSIX store never reads through a link).

Either way a symlink and a file that is not one are never the same. A comparison that
fails (a file that can't be read or stat'ed, one that changed meanwhile) counts as
changed: the copy reads it again and reports a failure by name, not the whole run.

Those checks run ``lookahead`` at a time on a small thread pool while decisions are
yielded in key order. Deletions (destination-only files) are collected as keys and
carried out by the caller after the copies, and only if every copy succeeded.
The mount's ``DIR_META_NAME`` objects are left out on both sides (never copied, never
deleted: see ``datamover.engine.plan``); a source directory only such an object shows
is a directory all the same. On a destination that ignores case
(``Store.ignores_case``) a destination-only name that differs from a source name only
by case is the file that source name is written to, and is not deleted (as rclone
matches names on case-insensitive file systems). The destination is listed without following
links (``--copy-links`` is the source's alone), so a destination symlink is one entry,
and deleting it removes the link, never what it points to.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from datamover.checksums import new_hasher
from datamover.engine.plan import LINK_MAX, FileJob, is_symlink, make_job
from datamover.errors import DatamoverError, NotFound, StoreError
from datamover.manifest import STATUS_SKIPPED, ManifestEntry, is_utf8, path_problem
from datamover.posixmeta import PosixAttrs, format_mtime_ns
from datamover.stores.base import HARDLINK_KEY, ObjectInfo, Store, dirs_of_meta, is_dir_meta

HASH_CHUNK = 8 * 1024 * 1024


@dataclass(slots=True)
class SyncPlan:
    to_delete: list[str] = field(default_factory=list)  # destination keys
    skipped: int = 0
    skipped_bytes: int = 0
    out_of_order: bool = False


#: ``_compare``'s answer: unchanged, the source's info, its digest when known, and
#: for a hard link kept the path of the file it links to.
_Compared = tuple[bool, ObjectInfo, str | None, str | None]


def _merge(
    src: Iterator[ObjectInfo], src_root: str, dst: Iterator[ObjectInfo], dst_root: str
) -> Iterator[tuple[str, ObjectInfo | None, ObjectInfo | None]]:
    """Full outer join of two key-ordered listings on the path relative to each root."""

    def rel(it: Iterator[ObjectInfo], root: str) -> Iterator[tuple[str, ObjectInfo]]:
        for info in it:
            # The root's own "root/" marker (rclone --create-empty-src-dirs writes one)
            # is no entry of the tree: its path would be empty.
            if info.key == root:
                continue
            if (not info.is_dir or info.key.endswith("/")) and not is_dir_meta(info.key):
                yield info.key[len(root) :], info

    # A source directory only its DIR_META_NAME object shows is a directory to copy.
    a, b = _reorder(rel(dirs_of_meta(src, src_root), src_root)), _reorder(rel(dst, dst_root))
    x, y = next(a, None), next(b, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x[0] < y[0]):
            assert x is not None
            yield x[0], x[1], None
            x = next(a, None)
        elif x is None or y[0] < x[0]:
            yield y[0], None, y[1]
            y = next(b, None)
        else:
            yield x[0], x[1], y[1]
            x, y = next(a, None), next(b, None)


#: Entries a listing may be out of order by and still merge correctly (memory: this many
#: ObjectInfos per side). Some S3 servers (SeaweedFS) list a directory's subtree before
#: names that sort ahead of its "/" ("d/x" before "d.txt"), across page boundaries.
REORDER_WINDOW = 10_000


def _reorder(
    items: Iterator[tuple[str, ObjectInfo]], window: int = REORDER_WINDOW
) -> Iterator[tuple[str, ObjectInfo]]:
    """Sort a nearly-sorted stream: hold up to ``window`` entries in a heap and release
    the smallest. Streams displaced by more than that stay out of order, which the
    caller detects (``_ordered``) and answers by refusing deletions."""
    heap: list[tuple[str, int, ObjectInfo]] = []
    for seq, (rel, info) in enumerate(items):
        heapq.heappush(heap, (rel, seq, info))
        if len(heap) > window:
            rel_, _, info_ = heapq.heappop(heap)
            yield rel_, info_
    while heap:
        rel_, _, info_ = heapq.heappop(heap)
        yield rel_, info_


def _ordered(
    items: Iterable[tuple[str, ObjectInfo | None, ObjectInfo | None]],
    plan: SyncPlan,
) -> Iterator[tuple[str, ObjectInfo | None, ObjectInfo | None]]:
    """Pass items through, noting when a listing was not in key order (then the merge
    can't be trusted and the caller refuses deletions). A path seen twice counts: a
    listing that names a key twice would otherwise have its second copy taken for a
    destination-only file, and deleted."""
    last: str | None = None
    for item in items:
        if last is not None and item[0] <= last:
            plan.out_of_order = True
        last = item[0]
        yield item


def _mtime_ns(info: ObjectInfo) -> int | None:
    attrs = PosixAttrs.from_metadata(info.metadata)
    if attrs.mtime_ns is not None:
        return attrs.mtime_ns
    return None


def _same_mtime(a: int, b: int) -> bool:
    if a == b:
        return True
    whole = a % 1_000_000_000 == 0 or b % 1_000_000_000 == 0
    return whole and abs(a - b) < 1_000_000_000


class SyncPlanner:
    def __init__(
        self,
        src: Store,
        src_root: str,
        dst: Store,
        dst_root: str,
        *,
        algorithm: str,
        checksum: bool,
        delete: bool,
        threads: int = 8,
        lookahead: int = 256,
    ) -> None:
        self.src, self.dst = src, dst
        self.src_root, self.dst_root = src_root, dst_root
        self.algorithm = algorithm
        self.checksum = checksum
        self.delete = delete
        self.threads = threads
        self.lookahead = lookahead
        self.plan = SyncPlan()
        self.linked: dict[str, str] = {}
        #: First names of hard-linked files skipped as unchanged (bounded by the links).
        self.kept_links: set[str] = set()
        self.record_skip: Callable[[ManifestEntry], None] = lambda e: None

    def jobs(self) -> Iterator[FileJob]:
        merged = _ordered(
            _merge(
                iter(self.src.list(self.src_root)),
                self.src_root,
                iter(self.dst.list(self.dst_root)),
                self.dst_root,
            ),
            self.plan,
        )
        window: deque[tuple[str, ObjectInfo, Future[_Compared]]] = deque()
        # Where the destination ignores case, "readme" there is the file "README" of the
        # source is written to: the source's names, folded, keep it from deletion.
        folded: set[str] | None = (
            set() if self.delete and self.dst.ignores_case(self.dst_root) else None
        )
        with ThreadPoolExecutor(self.threads, thread_name_prefix="dm-sync") as pool:
            for rel, s, d in merged:
                if folded is not None and s is not None:
                    folded.add(rel.casefold())
                if s is None:
                    # A destination entry the listing could not serve is left alone.
                    if self.delete and d is not None and d.problem is None:
                        self.plan.to_delete.append(d.key)
                    continue
                # A problem, or a name that is not UTF-8, fails it, by name. Through
                # the window all the same: jobs leave in listing order, so a new name
                # of a hard-linked file comes after its first name was judged.
                if d is None or s.problem is not None or not is_utf8(rel):
                    changed: Future[_Compared] = Future()
                    changed.set_result((False, s, None, None))
                    window.append((rel, s, changed))
                    yield from self._drain(window, self.lookahead)
                    continue
                window.append((rel, s, pool.submit(self._compare, s, d)))
                yield from self._drain(window, self.lookahead)
            yield from self._drain(window, 0)
        if folded is not None:
            n = len(self.dst_root)
            self.plan.to_delete = [k for k in self.plan.to_delete if k[n:].casefold() not in folded]

    def _drain(
        self,
        window: deque[tuple[str, ObjectInfo, Future[_Compared]]],
        keep: int,
    ) -> Iterator[FileJob]:
        while len(window) > keep or (window and window[0][2].done()):
            rel, s, fut = window.popleft()
            same, info, digest, link = fut.result()
            if same:
                self.plan.skipped += 1
                self.plan.skipped_bytes += s.size
                # Later names of this file link to it, which this run does not copy.
                if (
                    s.link_id is not None
                    and link is None
                    and self.linked.setdefault(s.link_id, rel) == rel
                ):
                    self.kept_links.add(rel)
                self.record_skip(_skip_entry(rel, info, digest, link))
            else:
                yield self._job(rel, s)

    def _job(self, rel: str, s: ObjectInfo) -> FileJob:
        job = make_job(self.dst, self.dst_root, rel, s, self.linked)
        if job.kind == "hardlink" and job.link_to in self.kept_links:
            job = dataclasses.replace(job, link_target_kept=True)
        return job

    def _full(self, store: Store, info: ObjectInfo) -> ObjectInfo:
        """Listings of object stores carry no user metadata: HEAD for it."""
        if info.metadata or store.features.listing_metadata:
            return info
        try:
            return store.stat(info.key)
        except NotFound:
            return info

    def _compare(self, s: ObjectInfo, d: ObjectInfo) -> _Compared:
        """``_unchanged``, or a hard link kept (``_same_link``: its target's path
        fourth); a comparison that fails (not fatally) counts as changed."""
        try:
            same, info, digest = self._unchanged(s, d)
            if same:
                return same, info, digest, None
            link = self._same_link(s, d)
            return (True, s, None, link) if link is not None else (False, info, digest, None)
        except DatamoverError as e:
            if e.fatal:
                raise
            return False, s, None, None

    def _same_link(self, s: ObjectInfo, d: ObjectInfo) -> str | None:
        """The path of the file both sides link ``s`` and ``d`` to, when that file is
        unchanged: a hard link kept where one side holds it as a marker (an object
        stores a link as an empty object naming its target, ``HARDLINK_KEY``) and the
        other as a link (the same inode). Else None: the link is written again."""
        if s.is_dir or d.is_dir:
            return None
        if s.link_id is not None and d.size == 0 and s.size > 0:
            # POSIX -> object store: the destination's marker names a file of the same
            # source inode, itself unchanged.
            target = self._full(self.dst, d).metadata.get(HARDLINK_KEY)
            rel = self._marker_rel(target, self.dst_root)
            if target is None or rel is None:
                return None
            s_t, d_t = self._stat(self.src, self.src_root + rel), self._stat(self.dst, target)
            if s_t is None or d_t is None or s_t.link_id != s.link_id:
                return None
        elif s.size == 0 and d.size > 0 and d.link_id is not None:
            # Object store -> POSIX: the source's marker names a file whose copy is
            # the destination's file by inode, and unchanged.
            target = self._full(self.src, s).metadata.get(HARDLINK_KEY)
            rel = self._marker_rel(target, self.src_root)
            if target is None or rel is None:
                return None
            try:
                dst_key = self.dst.child_key(self.dst_root, rel)
            except StoreError:
                return None
            s_t, d_t = self._stat(self.src, target), self._stat(self.dst, dst_key)
            if s_t is None or d_t is None or d_t.link_id != d.link_id:
                return None
        else:
            return None
        return rel if self._unchanged(s_t, d_t)[0] else None

    def _marker_rel(self, target: str | None, root: str) -> str | None:
        """The path below ``root`` a marker's target names, if it is a safe one (the
        metadata is the bucket writer's word: ``../`` never leads a stat outside)."""
        if not target or not target.startswith(root):
            return None
        rel = target[len(root) :]
        return rel if rel and path_problem(rel) is None else None

    @staticmethod
    def _stat(store: Store, key: str) -> ObjectInfo | None:
        try:
            return store.stat(key)
        except NotFound:
            return None

    def _unchanged(self, s: ObjectInfo, d: ObjectInfo) -> tuple[bool, ObjectInfo, str | None]:
        if s.is_dir and d.is_dir:
            return True, s, None
        if s.size != d.size or s.is_dir != d.is_dir:
            return False, s, None
        s, d = self._full(self.src, s), self._full(self.dst, d)
        if is_symlink(s) != is_symlink(d):
            return False, s, None
        if not self.checksum:
            sm, dm = _mtime_ns(s), _mtime_ns(d)
            if sm is None and s.mtime is not None:
                sm = round(s.mtime * 1e9)
            if dm is None and self.dst.features.native_mtime and d.mtime is not None:
                dm = round(d.mtime * 1e9)
            same = sm is not None and dm is not None and _same_mtime(sm, dm)
            return same, s, d.checksums.get(self.algorithm)
        want = s.checksums.get(self.algorithm) or self._hash(self.src, s)
        have = d.checksums.get(self.algorithm) or self._hash(self.dst, d)
        return want == have, s, want

    def _hash(self, store: Store, info: ObjectInfo) -> str:
        h = new_hasher(self.algorithm)
        if is_symlink(info) and info.size <= LINK_MAX:
            # Its text, as the copy reads it: a link is never read through.
            h.update(store.read_object(info.key, info)[0])
            return h.hexdigest()
        buf = memoryview(bytearray(min(HASH_CHUNK, max(info.size, 1))))
        for i in range(math.ceil(info.size / len(buf))):
            n = store.readinto(info.key, i * len(buf), buf, expect=info)
            h.update(buf[:n])
        return h.hexdigest()


def _skip_entry(
    rel: str, info: ObjectInfo, digest: str | None, link: str | None = None
) -> ManifestEntry:
    ns = _mtime_ns(info)
    if ns is None and info.mtime is not None:
        ns = round(info.mtime * 1e9)
    attrs = PosixAttrs.from_metadata(info.metadata)
    return ManifestEntry(
        path=rel,
        size=info.size,
        status=STATUS_SKIPPED,
        digest=digest,
        mtime=format_mtime_ns(ns) if ns is not None else None,
        mode=f"{attrs.mode & 0o7777:04o}" if attrs.mode is not None else None,
        # A link is recorded as one, as its copy was: a verify compares its text and
        # never reads through it; a hard link kept, as the link it is.
        kind="hardlink" if link is not None else "symlink" if is_symlink(info) else None,
        link_to=link,
    )
