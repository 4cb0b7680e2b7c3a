"""Everyday operations on one store: list, stat, disk usage, cat, remove.

The CLI's ``ls``, ``stat``, ``du``, ``cat`` and ``rm`` are thin wrappers over these;
each takes an open ``Store`` and a key (the caller opens and closes the store).

A *key* names an object, or a directory/prefix: ``x`` is tried as an object first and
otherwise as the prefix ``x/``; ``x/`` (trailing slash) or the bucket root is always
a prefix. Object stores have no real directories, so a prefix "exists" when some
object lives under it.

Listings hide the ``DIR_META_NAME`` objects the mount keeps directory metadata in
(``rm`` still removes them with their directory), and show the directory one is in
when no marker does (``dirs_of_meta``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

from datamover.errors import DatamoverError, NotFound, UsageError
from datamover.stores.base import ObjectInfo, Store, dirs_of_meta

CAT_CHUNK = 8 * 1024 * 1024
#: ``rm -r`` asks for confirmation (on a terminal) above this many objects.
CONFIRM_ABOVE = 10
_DELETE_WINDOW = 1000  # deletions in flight at once


def as_prefix(key: str) -> str:
    return key if key == "" or key.endswith("/") else key + "/"


def stat_object(store: Store, key: str) -> ObjectInfo | None:
    """The object at ``key``, or None when there is none (a prefix is not one)."""
    if key == "" or key.endswith("/"):
        return None
    try:
        info = store.stat(key)
    except NotFound:
        return None
    return None if info.is_dir else info


def has_children(store: Store, prefix: str) -> bool:
    return next(iter(store.list(prefix, recursive=False)), None) is not None


def listing(store: Store, key: str, *, recursive: bool = False) -> tuple[str, Iterator[ObjectInfo]]:
    """``(prefix, entries)``: ``key`` itself when it is an object (prefix ``""``
    relative to its parent), else what lies under it. Raises ``NotFound`` when it is
    neither an object nor a non-empty prefix (the bucket root is never missing)."""
    info = stat_object(store, key)
    if info is not None:
        parent = key.rpartition("/")[0]
        return (parent + "/" if parent else ""), iter([info])
    prefix = as_prefix(key)
    entries = iter(store.list(prefix, recursive=recursive))
    first = next(entries, None)
    if first is None:
        if prefix == "" or _empty_dir(store, prefix):
            return prefix, iter(())
        raise NotFound(f"{store.url(key)}: no such object, directory or prefix", key=key)

    def chained() -> Iterator[ObjectInfo]:
        yield first
        yield from entries

    # A directory only its DIR_META_NAME object shows is listed as the directory.
    return prefix, dirs_of_meta(chained(), prefix)


def _posix_dir(store: Store, prefix: str) -> bool:
    if not store.features.real_dirs:
        return False
    try:
        return store.stat(prefix.rstrip("/")).is_dir
    except NotFound:
        return False


def _empty_dir(store: Store, prefix: str) -> bool:
    """Whether ``prefix``, with nothing listed under it, is still a directory: a POSIX
    one, or on an object store a ``dir/`` marker object (an empty directory a copy or
    the mount made, which some stores' listings of that prefix leave out). Asked only
    after the listing came up empty: a HEAD of the marker costs nothing otherwise."""
    if not prefix:
        return False
    if store.features.real_dirs:
        return _posix_dir(store, prefix)
    try:
        store.stat(prefix)
    except NotFound:
        return False
    return True


def stat_url(store: Store, key: str) -> ObjectInfo:
    """The object at ``key``, or an ``is_dir`` info for a directory/prefix with
    something under it. Raises ``NotFound`` otherwise."""
    info = stat_object(store, key)
    if info is not None:
        return info
    prefix = as_prefix(key)
    if (
        prefix == ""
        or _posix_dir(store, prefix)
        or has_children(store, prefix)
        or _empty_dir(store, prefix)
    ):
        return ObjectInfo(key=prefix, size=0, is_dir=True)
    raise NotFound(f"{store.url(key)}: no such object, directory or prefix", key=key)


@dataclass(slots=True)
class Usage:
    files: int = 0
    bytes: int = 0


def disk_usage(store: Store, key: str) -> Usage:
    """Objects and bytes at or under ``key`` (streamed; nothing kept in memory)."""
    usage = Usage()
    _, entries = listing(store, key, recursive=True)
    for info in entries:
        if not info.is_dir:
            usage.files += 1
            usage.bytes += info.size
    return usage


def the_object(store: Store, key: str) -> ObjectInfo:
    """The object (or file) at ``key``, for a command that reads one (``cat``,
    ``hash``). Raises ``UsageError`` for a directory or a prefix with something under
    it (there is no one object to read), ``NotFound`` when there is nothing."""
    info = stat_object(store, key)
    if info is not None:
        return info
    prefix = as_prefix(key)
    if key and (
        _posix_dir(store, prefix) or has_children(store, prefix) or _empty_dir(store, prefix)
    ):
        raise UsageError(f"{store.url(key)} is a directory or prefix, not an object")
    raise NotFound(f"{store.url(key)}: no such object", key=key)


def cat(store: Store, key: str, out: BinaryIO, *, chunk: int = CAT_CHUNK) -> int:
    """Stream the object to ``out`` in ``chunk``-byte ranged reads; returns bytes
    written. Raises ``NotFound``, or ``UsageError`` for a prefix (``the_object``)."""
    info = the_object(store, key)
    buf = memoryview(bytearray(min(chunk, max(info.size, 1))))
    offset = 0
    while offset < info.size:
        n = store.readinto(key, offset, buf[: min(len(buf), info.size - offset)])
        if n == 0:
            break
        out.write(buf[:n])
        offset += n
    out.flush()
    return offset


@dataclass(slots=True)
class RemoveResult:
    deleted: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    cancelled: bool = False


def count_under(store: Store, prefix: str) -> int:
    return sum(1 for info in store.list(prefix) if not (info.is_dir and store.features.real_dirs))


def remove(
    store: Store,
    key: str,
    *,
    recursive: bool = False,
    confirm: Callable[[int, str], bool] | None = None,
    confirm_above: int = CONFIRM_ABOVE,
    workers: int = 16,
) -> RemoveResult:
    """Delete the object at ``key``; with ``recursive``, also everything under the
    prefix ``key/``. Without ``recursive`` a prefix is refused (``UsageError``), never
    emptied. When more than ``confirm_above`` objects would go, ``confirm(count,
    url)`` is asked first (the CLI passes one only on a terminal); False cancels with
    nothing deleted. On POSIX, directories left empty are removed too, and nothing is
    reached through a symlink: the tree is confined to ``key``'s parent (``Store.
    confine``), so a symlink found at ``key`` or below it is removed itself, never
    what it points to, even if it replaced a directory while ``rm`` ran.
    Raises ``NotFound`` when there is nothing at all at ``key``."""
    result = RemoveResult()
    prefix = as_prefix(key)
    if store.features.real_dirs and prefix.strip("/") == "":
        raise UsageError("refusing to remove the root directory /")
    parent = key.rstrip("/").rpartition("/")[0]
    store.confine(parent + "/" if parent else "")
    obj = stat_object(store, key)
    if not recursive:
        if obj is None:
            if (
                prefix == ""
                or _posix_dir(store, prefix)
                or has_children(store, prefix)
                or _empty_dir(store, prefix)
            ):
                raise UsageError(
                    f"{store.url(prefix)} is a directory or prefix; use rm -r to delete it and "
                    "everything under it"
                )
            raise NotFound(f"{store.url(key)}: no such object", key=key)
        store.delete(key)
        result.deleted = 1
        return result
    if obj is None and not (_posix_dir(store, prefix) or has_children(store, prefix)):
        raise NotFound(f"{store.url(key)}: no such object, directory or prefix", key=key)
    if confirm is not None:
        total = count_under(store, prefix) + (obj is not None)
        if total > confirm_above and not confirm(total, store.url(key)):
            result.cancelled = True
            return result
    lock = threading.Lock()

    def delete(k: str) -> None:
        try:
            store.delete(k)
            with lock:
                result.deleted += 1
        except DatamoverError as e:
            if e.fatal:
                raise
            with lock:
                result.failed += 1
                if len(result.errors) < 20:
                    result.errors.append(str(e))

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="dm-rm") as pool:
        window: list[Future[None]] = []
        if obj is not None:
            window.append(pool.submit(delete, key))
        for info in store.list(prefix):
            if info.is_dir and store.features.real_dirs:
                continue  # directories go after their contents, below
            window.append(pool.submit(delete, info.key))
            if len(window) >= _DELETE_WINDOW:
                for f in window:
                    f.result()
                window.clear()
        for f in window:
            f.result()
    if store.features.real_dirs:
        _remove_empty_dirs(store, prefix)
    return result


def _remove_empty_dirs(store: Store, prefix: str) -> None:
    """Remove the directory ``prefix`` and those below it, deepest first, where empty
    (``delete`` of a ``dir/`` key). Found by one-level listings, which show a symlink
    as itself: a link is never entered."""
    found, stack = [], [prefix]
    while stack:
        directory = stack.pop()
        found.append(directory)
        try:
            stack.extend(i.key for i in store.list(directory, recursive=False) if i.is_dir)
        except DatamoverError:
            continue  # unreadable: it stays, with what is in it
    for directory in reversed(found):
        try:
            store.delete(directory)
        except DatamoverError:
            pass  # not empty: something was left (a failed delete, a new file)
