"""How an ``OSError`` on one path becomes this store's error: a missing file is
``NotFound``; a name whose parent below the root is a symlink or a file
(``NotBeneath``) is ``UnsafePath``; a full or read-only filesystem (or an exceeded
quota) is fatal; anything else, a permission problem included, is a plain
``StoreError`` (that file fails, the run goes on)."""

from __future__ import annotations

import errno

from datamover.errors import FatalStoreError, NotFound, StoreError, UnsafePath
from datamover.stores.posix.beneath import NotBeneath

_FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def map_oserror(e: OSError, key: str) -> StoreError:
    if isinstance(e, NotBeneath):
        if e.errno == errno.ENOTDIR:
            why = (
                "a file stands where it needs a directory (the source has a name that is "
                "both a file and a prefix)"
            )
        else:
            why = "it, or a parent of it, is a symlink, and writing through it would leave the tree"
        return UnsafePath(f"/{key}: {why}; refusing this one", key=key)
    if isinstance(e, FileNotFoundError):
        return NotFound(f"/{key}: no such file", key=key)
    reason = e.strerror or type(e).__name__
    if e.errno in _FATAL_ERRNOS:
        return FatalStoreError(f"/{key}: {reason}", key=key)
    return StoreError(f"/{key}: {reason}", key=key)
