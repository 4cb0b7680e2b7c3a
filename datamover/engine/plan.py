"""Planning: what to copy where, streamed from the source listing.

Copy rules (as rclone's ``copy``): a source *directory or prefix* copies its contents
into the destination directory, so ``copy /data/run1 s3://b/run1`` puts
``/data/run1/x/y`` at ``s3://b/run1/x/y`` whether or not the destination exists. A
source *file* copied to a destination that ends in ``/``, is a bucket root, or is an
existing directory/prefix lands under it with its own name; otherwise the destination
names the new file.

The ``DIR_META_NAME`` objects in which the mount keeps directory metadata on stores
that can't keep it on markers are not copied: they are the mount's bookkeeping for
that store (docs/SEMANTICS.md, "Metadata"). The directory such an object is in is
copied, though, marker or not (``dirs_of_meta``): the mount makes directories there
as that object alone.
"""

from __future__ import annotations

import dataclasses
import stat as statmod
from collections.abc import Iterator
from dataclasses import dataclass

from datamover.errors import NotFound, StoreError, UnsafePath, UsageError
from datamover.manifest import as_recorded, is_utf8
from datamover.posixmeta import MODE
from datamover.stores.base import ObjectInfo, Store, dirs_of_meta, is_dir_meta

#: Longest link target a system makes (PATH_MAX): a symlink up to this size is always
#: moved as one read and one write, whatever ``multipart_threshold`` says.
LINK_MAX = 4096


def is_symlink(info: ObjectInfo) -> bool:
    """Whether ``info`` is a symlink: its mode (in the metadata, as s3fs stores it, or
    from ``lstat``) says ``S_IFLNK``. Object stores list no metadata: only a stat or a
    read of such an object tells."""
    raw = info.metadata.get(MODE)
    mode = int(raw) if raw is not None and raw.isascii() and raw.isdigit() else info.mode
    return mode is not None and statmod.S_ISLNK(mode)


@dataclass(frozen=True, slots=True)
class FileJob:
    """One file to move. ``rel`` is its path under the destination root (the manifest
    path); ``info`` is what the source said about it at planning time."""

    rel: str
    src_key: str
    dst_key: str
    info: ObjectInfo
    attempt: int = 1
    #: "file"; "dir" (an empty directory or a directory marker, ``rel`` ends in "/");
    #: "hardlink" (``link_to`` is the rel of the file it is a hard link to).
    kind: str = "file"
    link_to: str | None = None
    #: Why this file can't be written (an unsafe key): it fails without being read.
    problem: StoreError | None = None
    #: A hard link whose target this run does not copy, the destination holding it
    #: unchanged already (sync): the link's digest is the target's, read from the source.
    link_target_kept: bool = False


@dataclass(slots=True)
class Plan:
    src_root: str  # key prefix ("" or ending in "/")
    dst_root: str
    single_file: bool
    jobs: Iterator[FileJob]


def _as_dir(key: str) -> str:
    return key if key == "" or key.endswith("/") else key + "/"


def _is_existing_dir(store: Store, key: str) -> bool:
    if key == "" or key.endswith("/"):
        return True
    try:
        if store.stat(key).is_dir:
            return True
    except NotFound:
        pass
    return next(iter(store.list(key + "/")), None) is not None


def _parent(key: str) -> str:
    head, sep, _ = key.rstrip("/").rpartition("/")
    return head + sep


def _utf8_root(store: Store, root: str) -> None:
    """A root whose name is not UTF-8 can't be recorded (journal, manifest header):
    a usage error. A name below the roots that is not fails alone (``make_job``)."""
    if not is_utf8(root):
        raise UsageError(
            f"{as_recorded(store.url(root))}: the name is not valid UTF-8; rename it "
            "(manifests, journals and object keys hold UTF-8 names)"
        )


def plan_copy(
    src: Store, src_key: str, dst: Store, dst_key: str, *, deleting: bool = False
) -> Plan:
    """Resolve the copy rules above. Raises ``UsageError`` for a missing source, and
    for roots that overlap (``check_overlap``; ``deleting``: a sync with ``--delete``)."""
    single: ObjectInfo | None = None
    if src_key and not src_key.endswith("/"):
        try:
            info = src.stat(src_key)
            if not info.is_dir:
                single = info
        except NotFound:
            pass
    if single is not None:
        name = src_key.rsplit("/", 1)[-1]
        target = _as_dir(dst_key) + name if _is_existing_dir(dst, dst_key) else dst_key
        _check_same_file(src, src_key, dst, target)
        _utf8_root(src, _parent(src_key))
        _utf8_root(dst, _parent(target))
        src.confine(_parent(src_key))
        dst.confine(_parent(target))
        job = make_job(dst, _parent(target), target.rsplit("/", 1)[-1], single, {})
        return Plan(_parent(src_key), _parent(target), True, iter([job]))

    src_root, dst_root = _as_dir(src_key), _as_dir(dst_key)
    _utf8_root(src, src_root)
    _utf8_root(dst, dst_root)
    # From here on nothing below either root is reached through a symlink (except the
    # source's, when it follows links on purpose): see Store.confine.
    src.confine(src_root)
    dst.confine(dst_root)
    check_overlap(src, src_root, dst, dst_root, deleting=deleting)
    if dst_root:
        _check_dir_target(dst, dst_root, src.url(src_root))
    listing = iter(src.list(src_root))
    first = next(listing, None)
    if first is None and not _source_dir_exists(src, src_key):
        raise UsageError(f"{src.url(src_key)}: no such file, directory or prefix")

    def jobs() -> Iterator[FileJob]:
        entries = dirs_of_meta(listing if first is None else _chain(first, listing), src_root)
        linked: dict[str, str] = {}  # link_id -> rel of the first path seen
        for info in entries:
            rel = info.key[len(src_root) :]
            if not rel or (info.is_dir and not info.key.endswith("/")) or is_dir_meta(rel):
                continue
            yield make_job(dst, dst_root, rel, info, linked)

    return Plan(src_root, dst_root, False, jobs())


def check_overlap(src: Store, src_root: str, dst: Store, dst_root: str, *, deleting: bool) -> None:
    """Refuse (``UsageError``) trees that provably overlap (``Store.place``: the same
    real path, or the same endpoint, bucket and prefix): the same tree (a copy onto
    itself, which rewrites every file and on object stores copies each onto itself);
    the destination inside the source (the copy would copy its own output); with
    ``deleting``, the source inside the destination (``--delete`` would delete the
    source, which the destination's listing shows under another name). Places a store
    can't tell (None) are never refused. As rclone, which refuses overlapping syncs."""
    a, b = src.place(src_root), dst.place(dst_root)
    if a is None or b is None:
        return
    src_url, dst_url = src.url(src_root), dst.url(dst_root)
    if a == b:
        raise UsageError(
            f"source {src_url} and destination {dst_url} are the same place; "
            "name a destination outside the source"
        )
    if b.startswith(a):
        raise UsageError(
            f"destination {dst_url} is inside source {src_url}; "
            "copy to a place outside the source tree"
        )
    if deleting and a.startswith(b):
        raise UsageError(
            f"source {src_url} is inside destination {dst_url}, so sync --delete would "
            "delete the source; sync into a place that does not hold the source"
        )


def _check_same_file(src: Store, src_key: str, dst: Store, target: str) -> None:
    """A file copied onto itself (or a symlink onto the file it points to, which would
    become a link to itself) is refused, as ``cp`` refuses it."""
    a, b = src.place(src_key, resolve=True), dst.place(target)
    if a is not None and a == b:
        raise UsageError(
            f"{src.url(src_key)} and {dst.url(target)} are the same file; name another destination"
        )


def _check_dir_target(dst: Store, dst_root: str, src_url: str) -> None:
    """A tree copied onto a file (``copy DIR afile``) is a usage error, said once:
    every file of it would fail with "Not a directory". On an object store, a tree
    copied to the prefix of an object that has no prefix yet (``s3://b/data`` when the
    object ``data`` exists) is refused too, as rclone refuses it: it would make a name
    that is both a file and a directory, which no filesystem can take back."""
    name = dst_root.rstrip("/")
    if dst.features.real_dirs:
        try:
            info = dst.stat(name)
        except StoreError:
            return  # missing, or e.g. a parent that is a file: each file says so, named
        if info.is_dir or is_symlink(info):
            # A symlink at the root is followed, as symlinks on the way to it are (a
            # link to a file then fails each file, named).
            return
    else:
        # One listing, no HEAD (whose 404 costs a bucket check): an object of that
        # name sorts first among the keys that start with it.
        try:
            first = next(iter(dst.list(name)), None)
            if first is None or first.key != name or first.is_dir:
                return
            if next(iter(dst.list(dst_root)), None) is not None:
                return  # already both an object and a prefix: the prefix is the directory
        except StoreError:
            return  # not listable (write-only credentials): the copy decides
    raise UsageError(
        f"{dst.url(name)} is a file, not a directory; name a directory to copy {src_url} into"
    )


def make_job(
    dst: Store, dst_root: str, rel: str, info: ObjectInfo, linked: dict[str, str]
) -> FileJob:
    """One FileJob for a listed entry: directory, later hard link, or file; a key the
    destination can't take safely, or an entry the source could not serve (a link
    loop, a path too long: ``info.problem``), becomes a job that fails with the
    reason. So does a name that is not UTF-8, under its ``as_recorded`` name: later
    layers (journal, manifest, object keys) see UTF-8 names only."""
    if not (is_utf8(rel) and is_utf8(info.key)):
        return _not_utf8(dst_root, rel, info)
    if info.problem is not None:
        problem = UnsafePath(f"{rel}: {info.problem}; not copied", key=info.key)
        kind = "dir" if info.key.endswith("/") else "file"
        return FileJob(rel, info.key, dst_root + rel, info, kind=kind, problem=problem)
    kind, link_to = "file", None
    if info.is_dir:
        kind = "dir"
    elif info.link_id is not None:
        link_to = linked.setdefault(info.link_id, rel)
        if link_to != rel:
            kind = "hardlink"
        else:
            link_to = None
    try:
        dst_key = dst.child_key(dst_root, rel)
    except StoreError as e:
        return FileJob(rel, info.key, dst_root + rel, info, problem=e)
    return FileJob(rel, info.key, dst_key, info, kind=kind, link_to=link_to)


def _not_utf8(dst_root: str, rel: str, info: ObjectInfo) -> FileJob:
    """The job, failing by its escaped name, of an entry whose name is not UTF-8."""
    # A single file copied under a new name: the source's own name is the bad one.
    shown = as_recorded(rel if not is_utf8(rel) else info.key.rsplit("/", 1)[-1])
    problem = UnsafePath(
        f"{shown}: the name is not valid UTF-8; rename it "
        "(manifests, journals and object keys hold UTF-8 names)",
        key=shown,
    )
    src_key, rel = as_recorded(info.key), as_recorded(rel)
    kind = "dir" if info.key.endswith("/") else "file"
    info = dataclasses.replace(info, key=src_key)
    return FileJob(rel, src_key, dst_root + rel, info, kind=kind, problem=problem)


def _chain(first: ObjectInfo, rest: Iterator[ObjectInfo]) -> Iterator[ObjectInfo]:
    yield first
    yield from rest


def _source_dir_exists(store: Store, key: str) -> bool:
    if key == "" or not store.features.real_dirs:
        return key == ""
    try:
        return store.stat(key.rstrip("/")).is_dir
    except NotFound:
        return False
