"""Following a symlink an object store holds, for ``copy_links`` (``-L``, ``--bagit``).

A store that keeps symlinks as objects (the link text as the body, ``S_IFLNK`` in the
mode metadata; rclone's ``NAME.rclonelink`` objects through ``stores.rclonelinks``)
shows a link only when it is read or stat'ed. With ``copy_links`` the runner then
copies, under the link's own name, the object the link leads to, as a regular file.

The link text is the bucket writer's word, so it is resolved as a path *within the
copied tree* only: relative to the link's own "directory", lexically (``a/../b`` is
``b``; object stores have no directories to resolve through), and the result must be
a key below the copy's source root. Anything else fails that entry alone, named, and
nothing is read for it: an absolute target (a path on the machine the tree was
uploaded from, not an object here), a target above the root, a target that is no
object (dangling) or a "directory" (a prefix: only files are followed), a loop, more
than ``MAX_HOPS`` links in a row, or a link text that can't be a path.
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Callable
from typing import Protocol, TypeVar

from datamover.engine.plan import LINK_MAX, is_symlink
from datamover.errors import NotFound, StoreError, UnsafePath
from datamover.stores.base import ObjectInfo, Store

#: Links followed in a row before giving up (Linux's MAXSYMLINKS).
MAX_HOPS = 40
#: The longest link text followed (PATH_MAX).
MAX_TARGET = LINK_MAX
_DIRECTORY = "a directory (only files are followed)"
_DANGLING = "no object (dangling)"
_NOT_FOLLOWED = "not followed (exclude it, or copy without --copy-links/--bagit to keep the link)"

T = TypeVar("T")


class Call(Protocol):
    """Runs one request, with the caller's retries."""

    def __call__(self, fn: Callable[[], T]) -> T: ...


def resolve(
    store: Store,
    root: str,
    rel: str,
    key: str,
    info: ObjectInfo,
    call: Call,
) -> tuple[str, ObjectInfo]:
    """``(key, info)`` of the regular object that the stored symlink at ``key`` (the
    entry ``rel`` of a copy whose source root is ``root``; ``info`` says it is a link)
    leads to, following links in a row. ``call`` runs each request (with retries).
    Raises ``UnsafePath`` for a target outside the tree and ``StoreError`` for one
    that can't be followed (module docstring); the message names ``rel``."""
    seen = {key}
    for _ in range(MAX_HOPS):
        text = _link_text(store, rel, key, info, call)
        target = _target_key(store, root, rel, key, text)
        try:
            target_info = call(functools.partial(store.stat, target))
        except NotFound:
            below = call(functools.partial(_first_below, store, target))
            raise _not_a_file(rel, key, text, _DIRECTORY if below else _DANGLING) from None
        if target_info.is_dir or text.endswith("/"):
            raise _not_a_file(rel, key, text, _DIRECTORY)
        if not is_symlink(target_info):
            return target, target_info
        if target in seen:
            raise StoreError(f"{rel}: stored symlinks that make a loop; {_NOT_FOLLOWED}", key=key)
        seen.add(target)
        key, info = target, target_info
    raise StoreError(
        f"{rel}: more than {MAX_HOPS} stored symlinks in a row; {_NOT_FOLLOWED}", key=key
    )


def _not_a_file(rel: str, key: str, text: str, what: str) -> StoreError:
    return StoreError(
        f"{rel}: a stored symlink to {text!r}, which is {what}; {_NOT_FOLLOWED}", key=key
    )


def _first_below(store: Store, key: str) -> ObjectInfo | None:
    return next(iter(store.list(key + "/")), None)


def _link_text(store: Store, rel: str, key: str, info: ObjectInfo, call: Call) -> str:
    if info.size > MAX_TARGET:
        raise StoreError(
            f"{rel}: a stored symlink whose target is {info.size} bytes long (more than "
            f"{MAX_TARGET}); {_NOT_FOLLOWED}",
            key=key,
        )
    data, _ = call(functools.partial(store.read_object, key, info))
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if not text or "\0" in text:
        raise StoreError(
            f"{rel}: a stored symlink whose target is empty or not a UTF-8 path; {_NOT_FOLLOWED}",
            key=key,
        )
    return text


def _target_key(store: Store, root: str, rel: str, key: str, text: str) -> str:
    """The key ``text`` names, from the link at ``key``, if it is below ``root``."""
    if text.startswith("/"):
        raise UnsafePath(
            f"{rel}: a stored symlink to the absolute path {text!r}, a file of the machine "
            f"it was uploaded from, not an object in {store.url(root)}; {_NOT_FOLLOWED}",
            key=key,
        )
    here = posixpath.dirname(key[len(root) :]) if key.startswith(root) else None
    path = posixpath.normpath(posixpath.join(here, text)) if here is not None else ".."
    if path == ".":
        raise _not_a_file(rel, key, text, _DIRECTORY)
    if path == ".." or path.startswith("../"):
        raise UnsafePath(
            f"{rel}: a stored symlink to {text!r}, outside the copied tree "
            f"{store.url(root)}; {_NOT_FOLLOWED}",
            key=key,
        )
    return root + path
