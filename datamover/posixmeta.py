"""POSIX attributes carried as object user metadata, in the keys other tools read.

s3fs-fuse reads and writes ``mode`` (decimal ``st_mode``, file-type bits included),
``uid``, ``gid`` and ``mtime``; rclone reads and writes ``mtime`` as decimal seconds
with a fraction (``1700000000.123456789``). s3fs parses ``mtime`` with ``strtoll``,
which stops at the dot, so one ``mtime`` value serves both tools.

The mount also keeps ``ctime`` and ``atime`` (s3fs writes and reads both, in the
format of ``mtime``) and, for device files, ``rdev`` (decimal ``st_rdev``; s3fs
ignores it). The engine carries only the four keys of ``PosixAttrs``.
"""

from __future__ import annotations

import os
import stat as statmod
from collections.abc import Mapping
from dataclasses import dataclass

MODE = "mode"
UID = "uid"
GID = "gid"
MTIME = "mtime"
CTIME = "ctime"
ATIME = "atime"
RDEV = "rdev"

#: ``mtime`` seconds beyond this do not fit nanoseconds in 64 bits (year 2262):
#: not a time, whatever a server's metadata says.
_MAX_SECONDS = 2**63 // 1_000_000_000
#: ``mode``, ``uid`` and ``gid`` are 32-bit on every platform we run on.
_MAX_ID = 2**32


def format_mtime_ns(mtime_ns: int) -> str:
    seconds, nanos = divmod(mtime_ns, 1_000_000_000)
    return f"{seconds}.{nanos:09d}"


def parse_mtime_ns(text: str) -> int | None:
    """Parse ``mtime`` as written by datamover, rclone (fractional seconds) or s3fs
    (integer seconds). Returns nanoseconds, or None when unparseable or out of the
    64-bit nanosecond range."""
    text = text.strip()
    if not text or len(text) > 64:
        return None
    whole, _, frac = text.partition(".")
    try:
        seconds = int(whole)
        nanos = int((frac + "000000000")[:9]) if frac else 0
    except ValueError:
        return None
    if abs(seconds) >= _MAX_SECONDS or nanos < 0:
        return None
    return seconds * 1_000_000_000 + (nanos if seconds >= 0 else -nanos)


@dataclass(frozen=True, slots=True)
class PosixAttrs:
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    mtime_ns: int | None = None

    @classmethod
    def from_stat(cls, st: os.stat_result) -> PosixAttrs:
        return cls(st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)

    def to_metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.mode is not None:
            out[MODE] = str(self.mode)
        if self.uid is not None:
            out[UID] = str(self.uid)
        if self.gid is not None:
            out[GID] = str(self.gid)
        if self.mtime_ns is not None:
            out[MTIME] = format_mtime_ns(self.mtime_ns)
        return out

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> PosixAttrs:
        mtime = meta.get(MTIME)
        return cls(
            mode_from_metadata(meta),
            _as_id(meta, UID),
            _as_id(meta, GID),
            parse_mtime_ns(mtime) if mtime else None,
        )


def _as_id(meta: Mapping[str, str], key: str) -> int | None:
    raw = meta.get(key)
    if raw is None:
        return None
    try:
        value = int(raw)
    except (ValueError, TypeError):
        return None
    return value if 0 <= value < _MAX_ID else None


def mode_from_metadata(meta: Mapping[str, str]) -> int | None:
    """``PosixAttrs.from_metadata(meta).mode``, without reading the other keys."""
    mode = _as_id(meta, MODE)
    if mode is not None and statmod.S_IFMT(mode) == 0:
        mode |= statmod.S_IFREG
    return mode
