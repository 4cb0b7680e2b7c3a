"""POSIX attributes: the ``ObjectInfo`` of a ``stat``; ``user.*`` xattrs read as
``xattr-<name>`` metadata (base64) and set back; mode, mtime and owner from metadata
applied to an open file (the owner only where ``chown`` can work: as root, or to the
caller's own ids)."""

from __future__ import annotations

import base64
import logging
import os
import stat as statmod
from collections.abc import Mapping

from datamover.posixmeta import GID, UID, PosixAttrs
from datamover.stores.base import ObjectInfo

XATTR_PREFIX = "xattr-"

log = logging.getLogger("datamover")


def info_from_stat(
    key: str, st: os.stat_result, extra: Mapping[str, str] | None = None
) -> ObjectInfo:
    meta = PosixAttrs.from_stat(st).to_metadata()
    if extra:
        meta.update(extra)
    linked = statmod.S_ISREG(st.st_mode) and st.st_nlink > 1
    return ObjectInfo(
        key=key,
        size=st.st_size,
        mtime=st.st_mtime_ns / 1e9,
        mode=st.st_mode,
        is_dir=statmod.S_ISDIR(st.st_mode),
        metadata=meta,
        link_id=f"{st.st_dev}:{st.st_ino}" if linked else None,
    )


def read_xattrs(path: str) -> dict[str, str]:
    """``user.*`` extended attributes as ``xattr-<name>`` metadata (base64 values)."""
    out: dict[str, str] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in names:
        if not name.startswith("user."):
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        out[XATTR_PREFIX + name[len("user.") :]] = base64.b64encode(value).decode()
    return out


def apply_xattrs(path: str, metadata: Mapping[str, str]) -> None:
    for key, value in metadata.items():
        if key.startswith(XATTR_PREFIX):
            try:
                os.setxattr(
                    path,
                    "user." + key[len(XATTR_PREFIX) :],
                    base64.b64decode(value),
                    follow_symlinks=False,
                )
            except (OSError, ValueError) as e:
                log.warning("%s: could not set xattr %s: %s", path, key, e)


def _apply_owner(
    fd: int, path: str, metadata: Mapping[str, str], st: os.stat_result | None = None
) -> bool:
    """chown only where it can work: as root, or to the caller's own ids; and only
    where it changes something (``st``, the file's ``fstat``, shows its owner: a file
    just created usually has the wanted one already). True when it chowned."""
    attrs = PosixAttrs.from_metadata(metadata)
    uid = attrs.uid if UID in metadata else None
    gid = attrs.gid if GID in metadata else None
    if uid is None and gid is None:
        return False
    if st is not None and uid in (None, st.st_uid) and gid in (None, st.st_gid):
        return False
    if os.geteuid() != 0 and (
        uid not in (None, os.geteuid()) or gid not in (None, *os.getgroups(), os.getegid())
    ):
        log.info("%s: owner %s:%s recorded, not restored (not root)", path, uid, gid)
        return False
    os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
    return True


def apply_attrs(fd: int, metadata: Mapping[str, str], path: str = "") -> os.stat_result:
    """Apply mode, mtime and owner carried in metadata to an open file, and return its
    ``fstat`` afterwards. That ``fstat`` also tells whether the owner needs a ``chown``
    (a new file usually has it already); when it does, the mode is set again after it
    (``chown`` clears setuid/setgid bits) and the file stat'ed again."""
    attrs = PosixAttrs.from_metadata(metadata)
    mode = None if attrs.mode is None else statmod.S_IMODE(attrs.mode)
    if mode is not None:
        os.fchmod(fd, mode)
    if attrs.mtime_ns is not None:
        os.utime(fd, ns=(attrs.mtime_ns, attrs.mtime_ns))
    st = os.fstat(fd)
    if _apply_owner(fd, path, metadata, st):
        if mode is not None:
            os.fchmod(fd, mode)
        st = os.fstat(fd)
    return st
