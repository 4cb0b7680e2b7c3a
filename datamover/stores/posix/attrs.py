"""POSIX attributes: the ``ObjectInfo`` of a ``stat``; ``user.*`` xattrs read as
``xattr-<name>`` metadata (base64) and set back; mode, mtime and owner from metadata
checked (``parse_attrs``) and applied to an open file or directory, or to an entry
named in a directory descriptor without following it (``apply_attrs_at``).

Metadata is untrusted (anyone who can write the bucket wrote it): a value that is not
a number in range is refused for that file (``InvalidMetadata``) before anything is
made; set-user-ID and set-group-ID bits are dropped unless the store was asked to keep
them (``--preserve-setid``); owners are restored only where ``chown`` can work (as
root, or to the caller's own ids), as ``rsync -a`` and ``tar`` do.
"""

from __future__ import annotations

import base64
import logging
import os
import stat as statmod
from collections.abc import Mapping

from datamover.errors import InvalidMetadata
from datamover.posixmeta import GID, MODE, MTIME, UID, PosixAttrs, parse_mtime_ns
from datamover.stores.base import ObjectInfo

XATTR_PREFIX = "xattr-"
_XATTR_CUT = len(XATTR_PREFIX)
_SETID = statmod.S_ISUID | statmod.S_ISGID
_ID_MAX = 2**32 - 2  # (uid_t)-1 means "leave as is" to chown
_NS_MAX = 2**63 - 1

log = logging.getLogger("datamover")


def info_from_stat(
    key: str,
    st: os.stat_result,
    extra: Mapping[str, str] | None = None,
    *,
    verified: str | None = None,
) -> ObjectInfo:
    meta = PosixAttrs.from_stat(st).to_metadata()
    if extra:
        meta.update(extra)
    linked = statmod.S_ISREG(st.st_mode) and st.st_nlink > 1
    is_dir = statmod.S_ISDIR(st.st_mode)
    return ObjectInfo(
        key=key,
        size=0 if is_dir else st.st_size,  # a directory holds no bytes to copy
        mtime=st.st_mtime_ns / 1e9,
        mode=st.st_mode,
        is_dir=is_dir,
        metadata=meta,
        link_id=f"{st.st_dev}:{st.st_ino}" if linked else None,
        verified=verified,
    )


def _number(metadata: Mapping[str, str], name: str, top: int, key: str) -> int | None:
    raw = metadata.get(name)
    if raw is None:
        return None
    if raw.isascii() and raw.isdigit():  # the common case: no strip, no copy
        value = int(raw)
    else:
        text = raw.strip()
        value = int(text) if text.isascii() and text.isdigit() else top + 1
    if value > top:
        raise InvalidMetadata(
            f"/{key}: metadata {name}={raw[:40]!r} is not a {name} (a decimal number up "
            f"to {top}); refusing this file",
            key=key,
        )
    return value


def parse_attrs(metadata: Mapping[str, str], key: str) -> PosixAttrs:
    """``mode``, ``uid``, ``gid`` and ``mtime`` from metadata, each checked: a decimal
    number in range (``mode`` up to ``0o177777``, ids up to ``2**32 - 2``, ``mtime``
    as s3fs/rclone write it, within what ``utimensat`` takes). Raises
    ``InvalidMetadata`` naming ``key`` and the value otherwise."""
    mode = _number(metadata, MODE, 0o177777, key)
    if mode is not None and statmod.S_IFMT(mode) == 0:
        mode |= statmod.S_IFREG
    mtime_ns = None
    raw = metadata.get(MTIME)
    if raw is not None:
        mtime_ns = parse_mtime_ns(raw)
        if mtime_ns is None or abs(mtime_ns) > _NS_MAX:
            raise InvalidMetadata(
                f"/{key}: metadata mtime={raw[:40]!r} is not a time (seconds since the "
                "epoch, with a fraction or not); refusing this file",
                key=key,
            )
    uid, gid = _number(metadata, UID, _ID_MAX, key), _number(metadata, GID, _ID_MAX, key)
    return PosixAttrs(mode, uid, gid, mtime_ns)


def permissions(attrs: PosixAttrs, *, setid: bool) -> int | None:
    """The permission bits to set, set-ID bits dropped unless ``setid``."""
    if attrs.mode is None:
        return None
    mode = statmod.S_IMODE(attrs.mode)
    return mode if setid else mode & ~_SETID


def read_xattrs(path: str | int) -> dict[str, str]:
    """``user.*`` extended attributes as ``xattr-<name>`` metadata (base64 values), of
    a path (not followed) or an open descriptor."""
    out: dict[str, str] = {}
    follow = isinstance(path, int)  # an fd can't be combined with follow_symlinks=False
    try:
        names = os.listxattr(path, follow_symlinks=follow)
    except OSError:
        return out
    for name in names:
        if not name.startswith("user."):
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=follow)
        except OSError:
            continue
        out[XATTR_PREFIX + name[len("user.") :]] = base64.b64encode(value).decode()
    return out


def apply_xattrs(fd: int, metadata: Mapping[str, str], key: str) -> None:
    """Set the ``xattr-<name>`` metadata on the open file ``fd``; one that can't be
    set (bad base64, a name the filesystem refuses) is warned about and left out."""
    for name, value in metadata.items():
        if name[:_XATTR_CUT] == XATTR_PREFIX:
            try:
                os.setxattr(fd, "user." + name[len(XATTR_PREFIX) :], base64.b64decode(value))
            except (OSError, ValueError) as e:
                log.warning("/%s: could not set xattr %s: %s", key, name, e)


def _may_chown(
    attrs: PosixAttrs, st: os.stat_result | None, key: str, *, lenient: bool = True
) -> tuple[int, int] | None:
    """``(uid, gid)`` to pass to ``chown`` (-1: keep), or None when there is nothing to
    change (``st``, the entry's stat, shows its owner: a file just created usually has
    the wanted one already) or, when ``lenient``, this process can't (not root, not its
    own ids: the owner stays recorded in the manifest and is logged)."""
    uid, gid = attrs.uid, attrs.gid
    if uid is None and gid is None:
        return None
    if st is not None and uid in (None, st.st_uid) and gid in (None, st.st_gid):
        return None
    if (
        lenient
        and os.geteuid() != 0
        and (uid not in (None, os.geteuid()) or gid not in (None, *os.getgroups(), os.getegid()))
    ):
        log.info("/%s: owner %s:%s recorded, not restored (not root)", key, uid, gid)
        return None
    return (-1 if uid is None else uid, -1 if gid is None else gid)


def apply_attrs(
    fd: int, attrs: PosixAttrs, key: str, *, setid: bool, lenient_owner: bool = True
) -> os.stat_result:
    """Apply mode, mtime and owner to the open file or directory ``fd`` and return its
    ``fstat`` afterwards. That ``fstat`` also tells whether the owner needs a ``chown``;
    when it does, the mode is set again after it (``chown`` clears set-ID bits) and
    the entry stat'ed again. ``lenient_owner=False``: a ``chown`` this process may not
    make is tried anyway (and fails with ``EPERM``) instead of being logged."""
    mode = permissions(attrs, setid=setid)
    if mode is not None:
        os.fchmod(fd, mode)
    if attrs.mtime_ns is not None:
        os.utime(fd, ns=(attrs.mtime_ns, attrs.mtime_ns))
    st = os.fstat(fd)
    owner = _may_chown(attrs, st, key, lenient=lenient_owner)
    if owner is not None:
        os.fchown(fd, *owner)
        if mode is not None:
            os.fchmod(fd, mode)
        st = os.fstat(fd)
    return st


def apply_attrs_at(
    dirfd: int, name: str, attrs: PosixAttrs, key: str, *, setid: bool, lenient_owner: bool = True
) -> None:
    """Apply owner, mode and mtime to the entry ``name`` in the directory ``dirfd``
    without following it: a symlink there gets its own owner and time (Linux has no
    mode for links); anything else is changed through a descriptor of that very entry
    (``O_PATH``, then ``/proc/self/fd/N``, which names the inode, not a path).
    ``lenient_owner`` as for ``apply_attrs``."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        st = os.fstat(fd)
        owner = _may_chown(attrs, None, key, lenient=lenient_owner)
        times = None if attrs.mtime_ns is None else (attrs.mtime_ns, attrs.mtime_ns)
        if statmod.S_ISLNK(st.st_mode):
            if owner is not None:
                os.chown(name, *owner, dir_fd=dirfd, follow_symlinks=False)
            if times is not None:
                os.utime(name, ns=times, dir_fd=dirfd, follow_symlinks=False)
            return
        inode = f"/proc/self/fd/{fd}"
        if owner is not None:
            os.chown(inode, *owner)
        mode = permissions(attrs, setid=setid)
        if mode is not None:
            os.chmod(inode, mode)
        if times is not None:
            os.utime(inode, ns=times)
    finally:
        os.close(fd)
