"""Value formats of the POSIX-metadata conventions: parsers that return None for
anything that is not a value of the format (bounded: at most ``MAX_VALUE`` characters,
numbers in range), and the formatters the styles write.

Times are integer nanoseconds since the epoch with a resolution (the unit the format
can express), so that two conventions are compared at the coarser of the two.
"""

from __future__ import annotations

import re
import stat as statmod
from datetime import UTC, datetime, timedelta

#: Longer values are not values of any convention.
MAX_VALUE = 64
#: uid/gid: 32-bit, and (uid_t)-1 means "leave as is" to chown.
MAX_ID = 2**32 - 2
#: Times beyond this don't fit nanoseconds in 64 bits (year 2262).
MAX_NS = 2**63 - 1
NS = 1_000_000_000
#: File types a ``st_mode`` may carry.
TYPES = frozenset(
    (
        statmod.S_IFREG,
        statmod.S_IFDIR,
        statmod.S_IFLNK,
        statmod.S_IFIFO,
        statmod.S_IFSOCK,
        statmod.S_IFCHR,
        statmod.S_IFBLK,
    )
)

_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|z|[+-]\d\d:?\d\d)"
)
_AMLFS = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")


def _digits(text: str, limit: int = MAX_VALUE) -> bool:
    return 0 < len(text) <= limit and text.isascii() and text.isdigit()


def valid_mode(mode: int) -> bool:
    """A whole ``st_mode``: a known file type and permission bits."""
    return mode <= 0o177777 and statmod.S_IFMT(mode) in TYPES


def decimal(text: str, top: int = MAX_ID) -> int | None:
    text = text.strip()
    if not _digits(text, 20):
        return None
    value = int(text)
    return value if value <= top else None


def octal(text: str) -> int | None:
    """An octal ``st_mode`` or permission bits (a leading ``0`` or not)."""
    text = text.strip()
    if not _digits(text, 8) or "8" in text or "9" in text:
        return None
    value = int(text, 8)
    if value <= 0o7777 or valid_mode(value):
        return value
    return None


def seconds(text: str) -> tuple[int, int] | None:
    """Decimal seconds with an optional fraction (s3fs, rclone on S3, gcloud):
    (nanoseconds, resolution)."""
    text = text.strip()
    if len(text) > MAX_VALUE:
        return None
    whole, dot, frac = text.partition(".")
    negative = whole.startswith("-")
    whole = whole[1:] if negative else whole
    if not _digits(whole, 19) or (dot and not _digits(frac, 9)):
        return None
    ns = int(whole) * NS + int((frac + "000000000")[:9] if frac else 0)
    if ns > MAX_NS:
        return None
    return (-ns if negative else ns), 10 ** (9 - len(frac)) if frac else NS


def nanoseconds(text: str, suffix: str = "") -> tuple[int, int] | None:
    """Integer nanoseconds (AzCopy ``modtime``), with ``suffix`` (FSx ``…ns``)."""
    text = text.strip()
    if suffix:
        if not text.endswith(suffix):
            return None
        text = text[: -len(suffix)]
    value = decimal(text, MAX_NS)
    return (value, 1) if value is not None else None


def rfc3339(text: str) -> tuple[int, int] | None:
    """RFC 3339 with up to nanoseconds (rclone's ``--metadata`` times, rclone's
    ``mtime`` on Azure and GCS, gcsfuse's ``gcsfuse_mtime``)."""
    m = _RFC3339.fullmatch(text.strip()) if len(text) <= MAX_VALUE else None
    if not m:
        return None
    year, month, day, hour, minute, sec, frac, zone = m.groups()
    offset = 0
    if zone not in ("Z", "z"):
        offset = (int(zone[1:3]) * 60 + int(zone[-2:])) * 60
        offset = -offset if zone[0] == "-" else offset
    return _to_ns(year, month, day, hour, minute, sec, offset, frac or "")


def amlfs_time(text: str) -> tuple[int, int] | None:
    """``YYYY-MM-DD HH:MM:SS ±zzzz`` (AzCopy's AMLFS style)."""
    m = _AMLFS.fullmatch(text.strip()) if len(text) <= MAX_VALUE else None
    if not m:
        return None
    year, month, day, hour, minute, sec, sign, hh, mm = m.groups()
    offset = (int(hh) * 60 + int(mm)) * 60
    return _to_ns(year, month, day, hour, minute, sec, -offset if sign == "-" else offset, "")


#: Days before each month in a common year.
_DAYS_BEFORE = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365)


def _to_ns(
    year: str, month: str, day: str, hour: str, minute: str, sec: str, offset: int, frac: str
) -> tuple[int, int] | None:
    """A civil date and time at ``offset`` seconds east of UTC as (nanoseconds since
    the epoch, resolution): integer arithmetic (proleptic Gregorian), no datetime."""
    y, mo, d = int(year), int(month), int(day)
    h, mi, s = int(hour), int(minute), int(sec)
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    if not 1 <= mo <= 12 or h >= 24 or mi >= 60 or s >= 61:
        return None
    if not 1 <= d <= _DAYS_BEFORE[mo] - _DAYS_BEFORE[mo - 1] + (leap and mo == 2):
        return None
    before = y - 1  # leap days in the whole years before y, counted from year 1
    days = (
        before * 365
        + before // 4
        - before // 100
        + before // 400
        - _EPOCH_DAYS
        + _DAYS_BEFORE[mo - 1]
        + (leap and mo > 2)
        + d
        - 1
    )
    whole = days * 86400 + h * 3600 + mi * 60 + s - offset
    ns = whole * NS + (int((frac + "000000000")[:9]) if frac else 0)
    if abs(ns) > MAX_NS:
        return None
    return ns, 10 ** (9 - len(frac)) if frac else NS


#: ``_to_ns``'s day count of 1970-01-01 (from 0001-01-01).
_EPOCH_DAYS = 1969 * 365 + 1969 // 4 - 1969 // 100 + 1969 // 400


def flag(text: str) -> bool | None:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    return None


# -- formats the styles write --------------------------------------------------------------


def fmt_seconds(ns: int) -> str:
    """Decimal seconds, the fraction only as long as it needs (``1700000000``,
    ``1700000000.5``): what s3fs (``strtoll``) and rclone (a float) both read."""
    whole, frac = divmod(ns, NS)
    return f"{whole}.{frac:09d}".rstrip("0").rstrip(".") if frac else str(whole)


def fmt_rfc3339(ns: int) -> str:
    whole, frac = divmod(ns, NS)
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=whole)
    return when.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac:09d}".rstrip("0") if frac else "") + "Z"


def fmt_amlfs(ns: int) -> str:
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=ns // NS)
    return when.strftime("%Y-%m-%d %H:%M:%S +0000")
