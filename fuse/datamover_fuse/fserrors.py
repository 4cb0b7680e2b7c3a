"""Errors of the mount: one errno each, and how store errors become errnos.

The core raises ``FsError(errno)``; the pyfuse3 adapter turns it into ``FUSEError``.
Store errors (``datamover.errors``) are mapped by ``errno_for``: each kind that has a
proper errno gets it (an error raised from an ``OSError``, as the POSIX store's are,
gets that one), so a program can act on it; ``EIO`` is left for a store request
that failed after its retries, and anything unexpected (logged with its traceback
by the adapter).
"""

from __future__ import annotations

import errno
import os

from datamover.errors import (
    AuthError,
    NotFound,
    PermissionDenied,
    SourceChanged,
    UnsafePath,
    Unsupported,
)
from datamover_fuse.options import MountOptions


class FsError(Exception):
    """A request fails with ``errno``; ``reason`` is for the log, never the caller."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"{errno.errorcode.get(code, code)}: {reason or os.strerror(code)}")
        self.errno = code
        self.reason = reason


def check_writable(options: MountOptions) -> None:
    """``EROFS`` on a read-only mount, for every call that would change the store."""
    if options.read_only:
        raise FsError(errno.EROFS)


def first_leaf(e: BaseException) -> BaseException:
    """The first exception of a group (what a nursery raises for its tasks'
    failures), else ``e`` itself: the errno and the message are that one's."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return e


def errno_for(e: BaseException) -> int:
    e = first_leaf(e)
    if isinstance(e, FsError):
        return e.errno
    if isinstance(e, NotFound):
        return errno.ENOENT
    if isinstance(e, PermissionDenied | AuthError):
        return errno.EACCES
    if isinstance(e, Unsupported):
        return errno.ENOTSUP
    if isinstance(e, UnsafePath):
        return errno.EINVAL
    if isinstance(e, SourceChanged):
        return errno.ESTALE  # the object changed under an operation that read it
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return cause.errno
        cause = cause.__cause__
    return errno.EIO
