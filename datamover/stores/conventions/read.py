"""Reading every convention: object metadata -> one normalised record, in datamover's
own keys (``datamover.posixmeta``: ``mode`` decimal ``st_mode``, ``uid``, ``gid``,
``mtime``/``atime`` as ``seconds.nanoseconds``, ``rdev`` decimal).

Each convention present on an object is parsed on its own into a partial record. When
the partial records agree (times at the coarser resolution of the two, permission bits
where both have them, file type where both have it), they are merged; when they
disagree, the whole record comes from the first convention in the precedence order and
each disagreement is reported: one tool's mode is never mixed with another's owner.

Values are untrusted. A value of a foreign convention that is not one of its format is
ignored and reported. The ``mode``/``uid``/``gid``/``mtime`` keys (s3fs, rclone and
datamover's own) are kept as they are when unreadable, so that writing the object to
POSIX fails that one file, naming the value (``stores.posix.attrs.parse_attrs``).
"""

from __future__ import annotations

import stat as statmod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from datamover.stores.conventions import values as v
from datamover.stores.conventions.write import render_own

#: Default precedence: the tools that update metadata in place on S3 (s3fs, rclone:
#: the ``mode`` family, and datamover's own keys) first, then AzCopy and its AMLFS
#: style, gcloud, gcsfuse and FSx for Lustre / DataSync. A store puts the styles it
#: writes in front (``precedence``).
ORDER = ("s3fs", "rclone", "azcopy", "amlfs", "gcloud", "gcsfuse", "fsx-lustre")

_FLAG_TYPES = {
    "is-symlink": statmod.S_IFLNK,
    "is-fifo": statmod.S_IFIFO,
    "is-socket": statmod.S_IFSOCK,
    "is-char-dev": statmod.S_IFCHR,
    "is-block-dev": statmod.S_IFBLK,
    "hdi-isfolder": statmod.S_IFDIR,
}
#: Keys consumed by each convention (lower case, ``_`` read as ``-``: Azure names).
_KEYS = {
    "gcloud": (
        "goog-reserved-posix-mode",
        "goog-reserved-posix-uid",
        "goog-reserved-posix-gid",
        "goog-reserved-file-mtime",
        "goog-reserved-file-atime",
        "goog-reserved-file-is-symlink",
    ),
    "gcsfuse": ("gcsfuse-mtime",),
    "azcopy": (
        "permissions",
        "posix-owner",
        "posix-group",
        "modtime",
        "posix-atime",
        "posix-rdev",
        "is-symlink",
        "is-fifo",
        "is-socket",
        "is-char-dev",
        "is-block-dev",
    ),
    "amlfs": ("permissions", "owner", "group", "modtime"),
    "fsx-lustre": ("file-permissions", "file-owner", "file-group", "file-mtime", "file-atime"),
}
_FOREIGN_KEYS = frozenset(k for keys in _KEYS.values() for k in keys)
_MODE_FAMILY = ("mode", "uid", "gid", "mtime", "atime", "rdev")
#: Every key some convention reads (names as compared: lower case, ``-`` for ``_``).
_CONVENTION_KEYS = _FOREIGN_KEYS | frozenset(_MODE_FAMILY) | {"gcsfuse-mtime", "hdi-isfolder"}

Time = tuple[int, int]  # nanoseconds, resolution
Get = Callable[[str], str | None]
Bad = Callable[[str, str], None]


@dataclass(slots=True)
class Partial:
    """What one convention says about one object."""

    name: str
    mode: int | None = None  # a whole st_mode, or permission bits alone
    uid: int | None = None
    gid: int | None = None
    mtime: Time | None = None
    atime: Time | None = None
    rdev: int | None = None
    kind: int | None = None  # S_IFMT from a flag (is_symlink, hdi_isfolder, ...)
    keys: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Normalised:
    """``metadata``: the object's metadata in datamover's keys (other keys untouched);
    ``convention``: where the record came from (None: no POSIX metadata);
    ``conflicts``/``ignored``: one line each, for the log."""

    metadata: dict[str, str]
    convention: str | None = None
    conflicts: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()


def precedence(first: tuple[str, ...]) -> tuple[str, ...]:
    """``ORDER`` with the styles a store writes (``first``) in front."""
    return (*first, *(c for c in ORDER if c not in first))


def normalise(
    metadata: Mapping[str, str],
    *,
    key: str = "",
    size: int | None = None,
    order: tuple[str, ...] = ORDER,
) -> Normalised:
    """The POSIX record of one object from all the conventions on it (see the module
    docstring). ``key`` and ``size`` help read an ambiguous ``mode`` (a ``dir/`` key
    is a directory; an object with bytes is no directory, FIFO or device)."""
    if not metadata:
        return Normalised({})
    joined = "\n".join(metadata)
    if joined.lower().replace("_", "-") == joined:
        # Keys already in the form they are compared in (datamover's and s3fs's own,
        # the usual case): no dict of names to build just to find out.
        if _FOREIGN_KEYS.isdisjoint(metadata) and not _needs_reading(metadata):
            return Normalised(dict(metadata))
        names = {k: k for k in metadata}
    else:
        names = {k.lower().replace("_", "-"): k for k in metadata}
        if not (names.keys() & _FOREIGN_KEYS) and not _needs_reading(metadata):
            return Normalised(dict(metadata))
    ignored: list[str] = []

    def get(name: str) -> str | None:
        raw = names.get(name)
        return metadata[raw] if raw is not None else None

    def bad(name: str, what: str) -> None:
        raw = str(get(name) or "")
        ignored.append(f"metadata {names[name]}={raw[:40]!r} is not {what}; ignored")

    present = names.keys() & _FOREIGN_KEYS
    partials = [
        p
        for name, parse in _PARSERS
        if not present.isdisjoint(_KEYS[name]) and (p := parse(get, bad)) is not None
    ]
    out = dict(metadata)
    for p in partials:
        for name in p.keys:
            out.pop(names[name], None)
    family = _mode_family(metadata, key, size, order, partials)
    if family is not None:
        partials.append(family)
    if not partials:
        return Normalised(out, ignored=tuple(ignored))
    rank = {name: i for i, name in enumerate(order)}
    partials.sort(key=lambda p: rank.get(p.name, len(rank)))
    conflicts = _conflicts(partials) if len(partials) > 1 else []
    chosen = partials[:1] if conflicts else partials
    if family is not None and family not in chosen:  # its keys say what lost: not kept
        for name in family.keys:
            out.pop(name, None)
    _write_record(out, chosen, key)
    return Normalised(out, chosen[0].name, tuple(conflicts), tuple(ignored))


def as_written(
    metadata: Mapping[str, str], styles: tuple[str, ...], *, rfc3339_mtime: bool, key: str = ""
) -> dict[str, str] | None:
    """What ``normalise`` makes of a regular file's metadata that is exactly what
    ``write.render`` writes in ``styles`` (a store's own default, on every object it
    wrote), without reading each convention on its own; None when it is anything else
    (then ``normalise`` reads it). The record is taken from the AzCopy keys, else the
    rclone ones, and kept only when rendering it in ``styles`` gives back every
    convention key on the object, value for value: so it is the record all of them
    agree on, which is what ``normalise`` gives (``tests/unit/test_conventions_fast``
    holds the two to the same answers)."""
    if key.endswith("/"):
        return None
    joined = "\n".join(metadata)
    if joined.lower() != joined:  # ``normalise`` reads the ``mode`` family by exact name
        return None
    canon = {k.replace("_", "-"): k for k in metadata}
    if len(canon) != len(metadata):
        return None
    own: dict[str, int] = {}
    try:
        if "azcopy" in styles:
            for name, field_ in _AZCOPY_OWN:
                raw = canon.get(name)
                if raw is not None:
                    own[field_] = int(_plain(metadata[raw]))
        elif "rclone" in styles:
            for name in ("mode", "uid", "gid"):
                text = metadata.get(name)
                if text is not None:
                    own[name] = int(_plain(text), 8 if name == "mode" else 10)
            for name in ("mtime", "atime"):
                text = metadata.get(name)
                if text is not None:
                    rfc = rfc3339_mtime or name == "atime"
                    when = v.rfc3339(text) if rfc else v.seconds(text)
                    if when is None:
                        return None
                    own[name] = when[0]
        else:
            return None
    except ValueError:
        return None
    mode = own.get("mode")
    if mode is None or not 0 <= mode <= 0o177777 or not statmod.S_ISREG(mode):
        return None
    if own.get("uid", 0) > v.MAX_ID or own.get("gid", 0) > v.MAX_ID:
        return None
    if not all(0 <= own.get(t, 0) <= v.MAX_NS for t in ("mtime", "atime")):
        return None
    written = render_own(own, styles, rfc3339_mtime=rfc3339_mtime)
    if len(written) != sum(1 for name in canon if name in _CONVENTION_KEYS):
        return None
    for name, value in written.items():
        raw = canon.get(name.replace("_", "-"))
        if raw is None or metadata[raw] != value:
            return None
    out = {k: metadata[k] for name, k in canon.items() if name not in _CONVENTION_KEYS}
    out["mode"] = str(mode)
    for name in ("uid", "gid"):
        if name in own:
            out[name] = str(own[name])
    for name in ("mtime", "atime"):
        if name in own:
            out[name] = v.fmt_seconds(own[name])
    return out


_AZCOPY_OWN = (
    ("permissions", "mode"),
    ("posix-owner", "uid"),
    ("posix-group", "gid"),
    ("modtime", "mtime"),
    ("posix-atime", "atime"),
)


def _plain(text: str) -> str:
    """``text`` when it is 1-20 ASCII digits; ``ValueError`` otherwise."""
    if not (text.isascii() and text.isdigit() and len(text) <= 20):
        raise ValueError(text[:40])
    return text


def _needs_reading(metadata: Mapping[str, str]) -> bool:
    """Whether the datamover/s3fs keys need more than passing on: an octal or
    ambiguous ``mode``, an RFC 3339 ``mtime``/``atime``."""
    mode = metadata.get("mode")
    if mode is not None and (mode[:1] == "0" or not ("8" in mode or "9" in mode)):
        return True
    mtime, atime = metadata.get("mtime"), metadata.get("atime")
    return bool(mtime and "-" in mtime[1:]) or bool(atime and "-" in atime[1:])


def _mode_family(
    metadata: Mapping[str, str],
    key: str,
    size: int | None,
    order: tuple[str, ...],
    others: list[Partial],
) -> Partial | None:
    """``mode``/``uid``/``gid``/``mtime``/``atime``/``rdev``: s3fs (decimal ``mode``,
    decimal times) or rclone (octal ``mode``, hexadecimal ``rdev``, RFC 3339 times
    with ``--metadata``, decimal ``mtime`` on S3), told apart by ``read_mode``. A
    value that can't be read is left in place (see the module docstring)."""
    present = [k for k in _MODE_FAMILY if k in metadata]
    if not present:
        return None
    p = Partial("s3fs", keys=[])
    raw = metadata.get("mode")
    if raw is not None:
        rclone_first = order.index("rclone") < order.index("s3fs")
        reading = read_mode(raw, key=key, size=size, others=others, octal_first=rclone_first)
        if reading is not None:
            p.mode, octal = reading
            p.name = "rclone" if octal else "s3fs"
            p.keys.append("mode")
    for name in ("uid", "gid"):
        if name in metadata:
            value = v.decimal(metadata[name])
            if value is not None:
                setattr(p, name, value)
                p.keys.append(name)
    for name in ("mtime", "atime"):
        if name in metadata:
            when = v.seconds(metadata[name]) or v.rfc3339(metadata[name])
            if when is not None:
                setattr(p, name, when)
                p.keys.append(name)
    if "rdev" in metadata:
        text = metadata["rdev"].strip()
        try:
            p.rdev = int(text, 16 if p.name == "rclone" else 10) if len(text) <= 20 else None
        except ValueError:
            p.rdev = None
        if p.rdev is not None and 0 <= p.rdev < 2**64:
            p.keys.append("rdev")
        else:
            p.rdev = None
    return p if p.keys else None


def read_mode(
    raw: str,
    *,
    key: str = "",
    size: int | None = None,
    others: list[Partial] | None = None,
    octal_first: bool = False,
) -> tuple[int, bool] | None:
    """The ``mode`` key as s3fs (decimal ``st_mode``) or rclone (octal) wrote it:
    ``(st_mode, was_octal)``, None when it is neither. The rule, in order:

    1. a leading ``0`` is octal (s3fs never writes one); an ``8`` or ``9`` is decimal;
    2. the reading that is a whole ``st_mode`` (a known file type) wins; up to four
       octal digits with no file type are permission bits (``chmod``'s ``644``);
    3. both readings whole (6064 values, none of them a regular file: a decimal symlink
       reads as an octal directory, a decimal device or directory as an octal FIFO or
       device): the reading that agrees with another convention on the object; else the
       directory reading for a ``dir/`` key; else, for an object with bytes, the
       reading that can have bytes (a symlink); else the store's own style (octal where
       it writes rclone's keys before s3fs's, decimal otherwise).
    """
    text = raw.strip()
    if not v._digits(text, 8):
        return None
    dec = None if text[0] == "0" else v.decimal(text, 0o177777)
    octv = None if "8" in text or "9" in text else v.octal(text)
    if dec is not None and not v.valid_mode(dec):
        dec = None
    if octv is not None and not v.valid_mode(octv) and len(text) > 4:
        octv = None
    if dec is None or octv is None:
        if octv is not None:
            return octv, True
        return (dec, False) if dec is not None else None
    for other in others or ():
        if other.mode is not None:
            for value, is_octal in ((dec, False), (octv, True)):
                if _same_mode(value, other.mode) and not _same_mode(
                    octv if not is_octal else dec, other.mode
                ):
                    return value, is_octal
    if key.endswith("/"):
        for value, is_octal in ((dec, False), (octv, True)):
            if statmod.S_ISDIR(value):
                return value, is_octal
    if size:
        for value, is_octal in ((dec, False), (octv, True)):
            if statmod.S_IFMT(value) in (statmod.S_IFREG, statmod.S_IFLNK):
                return value, is_octal
    return (octv, True) if octal_first else (dec, False)


def _same_mode(a: int, b: int) -> bool:
    if statmod.S_IFMT(a) and statmod.S_IFMT(b) and statmod.S_IFMT(a) != statmod.S_IFMT(b):
        return False
    if a <= 0o777 or b <= 0o777:  # gcloud keeps three digits
        return a & 0o777 == b & 0o777
    return statmod.S_IMODE(a) == statmod.S_IMODE(b)


def _same_time(a: Time, b: Time) -> bool:
    res = max(a[1], b[1])
    return a[0] // res == b[0] // res


def _conflicts(partials: list[Partial]) -> list[str]:
    first = partials[0]
    out: list[str] = []
    for other in partials[1:]:
        for name in ("mode", "uid", "gid", "mtime", "atime", "rdev"):
            a, b = getattr(first, name), getattr(other, name)
            if a is None or b is None:
                continue
            if name == "mode":
                same = _same_mode(a, b)
            elif name in ("mtime", "atime"):
                same = _same_time(a, b)
            else:
                same = a == b
            if not same:  # formatted only for the message: agreeing is the common case
                if name == "mode":
                    shown = f"{a:o}", f"{b:o}"
                elif name in ("mtime", "atime"):
                    shown = v.fmt_seconds(a[0]), v.fmt_seconds(b[0])
                else:
                    shown = str(a), str(b)
                out.append(
                    f"{name}: {first.name} says {shown[0]}, {other.name} says {shown[1]} "
                    f"({first.name} taken)"
                )
        if first.kind and other.kind and first.kind != other.kind:
            out.append(f"file type: {first.name} and {other.name} disagree ({first.name} taken)")
    return out


def _write_record(out: dict[str, str], partials: list[Partial], key: str) -> None:
    def pick(name: str) -> object:
        found = [getattr(p, name) for p in partials if getattr(p, name) is not None]
        if name in ("mtime", "atime") and found:
            return min(found, key=lambda t: t[1])  # the finest resolution
        if name == "mode" and found:  # agreeing: the one that says most (type, set-id)
            return max(found, key=lambda m: (statmod.S_IFMT(m) != 0, m > 0o777))
        return found[0] if found else None

    kind = pick("kind")
    mode = pick("mode")
    if isinstance(mode, int):
        if not statmod.S_IFMT(mode):
            default = statmod.S_IFDIR if key.endswith("/") else statmod.S_IFREG
            mode |= kind if isinstance(kind, int) else default
        out["mode"] = str(mode)
    elif isinstance(kind, int) and kind != statmod.S_IFDIR:
        out["mode"] = str(kind | (0o777 if kind == statmod.S_IFLNK else 0o644))
    for name in ("uid", "gid", "rdev"):
        value = pick(name)
        if isinstance(value, int):
            out[name] = str(value)
    for name in ("mtime", "atime"):
        when = pick(name)
        if isinstance(when, tuple):
            out[name] = v.fmt_seconds(when[0])


# -- one parser per foreign convention -------------------------------------------------------


def _take(p: Partial, name: str, value: object) -> None:
    if value is not None:
        setattr(p, name, value)


def _gcloud(get: Get, bad: Bad) -> Partial | None:
    keys = [k for k in _KEYS["gcloud"] if get(k) is not None]
    if not keys:
        return None
    p = Partial("gcloud", keys=keys)
    _field(p, "mode", get, bad, "goog-reserved-posix-mode", v.octal, "an octal mode")
    _field(p, "uid", get, bad, "goog-reserved-posix-uid", v.decimal, "a uid")
    _field(p, "gid", get, bad, "goog-reserved-posix-gid", v.decimal, "a gid")
    _field(p, "mtime", get, bad, "goog-reserved-file-mtime", v.seconds, "a time in seconds")
    _field(p, "atime", get, bad, "goog-reserved-file-atime", v.seconds, "a time in seconds")
    link = get("goog-reserved-file-is-symlink")
    if link is not None and v.flag(link):
        p.kind = statmod.S_IFLNK
    return p


def _gcsfuse(get: Get, bad: Bad) -> Partial | None:
    if get("gcsfuse-mtime") is None:
        return None
    p = Partial("gcsfuse", keys=["gcsfuse-mtime"])
    _field(p, "mtime", get, bad, "gcsfuse-mtime", v.rfc3339, "an RFC 3339 time")
    return p


def _azcopy(get: Get, bad: Bad) -> Partial | None:
    perms, modtime = get("permissions"), get("modtime")
    ours = [k for k in _KEYS["azcopy"] if get(k) is not None]
    if perms is not None and perms.strip().startswith("0"):
        ours.remove("permissions")  # AMLFS style
    if modtime is not None and not modtime.strip().isdigit():
        ours.remove("modtime")
    if not ours:
        return None
    p = Partial("azcopy", keys=ours)
    if "permissions" in ours:
        _field(p, "mode", get, bad, "permissions", _decimal_mode, "a decimal st_mode")
    _field(p, "uid", get, bad, "posix-owner", v.decimal, "a uid")
    _field(p, "gid", get, bad, "posix-group", v.decimal, "a gid")
    if "modtime" in ours:
        _field(p, "mtime", get, bad, "modtime", v.nanoseconds, "nanoseconds")
    _field(p, "atime", get, bad, "posix-atime", v.nanoseconds, "nanoseconds")
    _field(p, "rdev", get, bad, "posix-rdev", v.decimal, "a device number")
    for name, kind in _FLAG_TYPES.items():
        raw = get(name)
        if raw is not None and v.flag(raw):
            p.kind = kind
    return p


def _amlfs(get: Get, bad: Bad) -> Partial | None:
    perms, modtime = get("permissions"), get("modtime")
    octal_perms = perms is not None and perms.strip().startswith("0")
    dated = modtime is not None and not modtime.strip().isdigit()
    if not (octal_perms or dated):
        return None
    keys = [k for k in ("owner", "group") if get(k) is not None]
    keys += ["permissions"] if octal_perms else []
    keys += ["modtime"] if dated else []
    p = Partial("amlfs", keys=keys)
    if octal_perms:
        _field(p, "mode", get, bad, "permissions", v.octal, "an octal mode")
    _field(p, "uid", get, bad, "owner", v.decimal, "a uid")
    _field(p, "gid", get, bad, "group", v.decimal, "a gid")
    if dated:
        _field(p, "mtime", get, bad, "modtime", v.amlfs_time, "a YYYY-MM-DD HH:MM:SS ±zzzz time")
    return p


def _fsx(get: Get, bad: Bad) -> Partial | None:
    keys = [k for k in _KEYS["fsx-lustre"] if get(k) is not None]
    if not keys:
        return None
    p = Partial("fsx-lustre", keys=keys)
    _field(p, "mode", get, bad, "file-permissions", v.octal, "an octal mode")
    _field(p, "uid", get, bad, "file-owner", v.decimal, "a uid")
    _field(p, "gid", get, bad, "file-group", v.decimal, "a gid")
    ns = "nanoseconds (…ns)"
    _field(p, "mtime", get, bad, "file-mtime", lambda t: v.nanoseconds(t, "ns"), ns)
    _field(p, "atime", get, bad, "file-atime", lambda t: v.nanoseconds(t, "ns"), ns)
    return p


_PARSERS: tuple[tuple[str, Callable[[Get, Bad], Partial | None]], ...] = (
    ("gcloud", _gcloud),
    ("gcsfuse", _gcsfuse),
    ("azcopy", _azcopy),
    ("amlfs", _amlfs),
    ("fsx-lustre", _fsx),
)


def _decimal_mode(text: str) -> int | None:
    value = v.decimal(text, 0o177777)
    return value if value is not None and (v.valid_mode(value) or value <= 0o7777) else None


def _field(
    p: Partial, name: str, get: Get, bad: Bad, key: str, parse: Callable[[str], object], what: str
) -> None:
    raw = get(key)
    if raw is None:
        return
    value = parse(raw)
    if value is None:
        bad(key, what)
    _take(p, name, value)
