"""Value formats of the POSIX-metadata conventions: parsers that return None for
anything that is not a value of the format (bounded: at most ``MAX_VALUE`` characters,
numbers in range), and the formatters the styles write.

Times are integer nanoseconds since the epoch with a resolution (the unit the format
can express), so that two conventions are compared at the coarser of the two.
"""

from __future__ import annotations

import re
import stat as statmod
from calendar import monthrange, timegm
from datetime import UTC, datetime, timedelta, timezone

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
    if zone in ("Z", "z"):
        tz = UTC
    else:
        sign = -1 if zone[0] == "-" else 1
        hh, mm = int(zone[1:3]), int(zone[-2:])
        tz = timezone(sign * timedelta(hours=hh, minutes=mm))
    return _to_ns(year, month, day, hour, minute, sec, tz, frac or "")


def amlfs_time(text: str) -> tuple[int, int] | None:
    """``YYYY-MM-DD HH:MM:SS ±zzzz`` (AzCopy's AMLFS style)."""
    m = _AMLFS.fullmatch(text.strip()) if len(text) <= MAX_VALUE else None
    if not m:
        return None
    year, month, day, hour, minute, sec, sign, hh, mm = m.groups()
    offset = (-1 if sign == "-" else 1) * timedelta(hours=int(hh), minutes=int(mm))
    return _to_ns(year, month, day, hour, minute, sec, timezone(offset), "")


def _to_ns(
    year: str, month: str, day: str, hour: str, minute: str, sec: str, tz: timezone, frac: str
) -> tuple[int, int] | None:
    y, mo, d = int(year), int(month), int(day)
    h, mi, s = int(hour), int(minute), int(sec)
    if not (1 <= mo <= 12 and 1 <= d <= monthrange(y, mo)[1] and h < 24 and mi < 60 and s < 61):
        return None
    offset = tz.utcoffset(None)
    whole = timegm((y, mo, d, h, mi, s)) - int(offset.total_seconds() if offset else 0)
    ns = whole * NS + int((frac + "000000000")[:9] if frac else 0)
    if abs(ns) > MAX_NS:
        return None
    return ns, 10 ** (9 - len(frac)) if frac else NS


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
