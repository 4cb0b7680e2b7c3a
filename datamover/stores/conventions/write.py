"""Writing the styles: datamover's keys (``mode`` decimal ``st_mode``, ``uid``,
``gid``, ``mtime``/``atime`` as ``seconds.nanoseconds``, ``rdev``) rendered in the
keys and formats the tools of each style read. Other keys (digests, xattrs, Lustre
layout) pass through. A value of datamover's keys that is not one (a caller's mistake,
or a hostile source object carried on) is passed on as it is, never reformatted.
"""

from __future__ import annotations

import stat as statmod
from collections.abc import Mapping

from datamover.errors import UsageError
from datamover.stores.conventions import values as v

STYLES = ("s3fs", "rclone", "gcloud", "gcsfuse", "azcopy", "amlfs", "fsx-lustre")
#: datamover's own keys: s3fs's, which the ``s3fs`` style writes as they are.
OWN_KEYS = ("mode", "uid", "gid", "mtime", "atime", "rdev")

_FLAGS = {
    statmod.S_IFLNK: "is_symlink",
    statmod.S_IFIFO: "is_fifo",
    statmod.S_IFSOCK: "is_socket",
    statmod.S_IFCHR: "is_char_dev",
    statmod.S_IFBLK: "is_block_dev",
}


def parse_styles(
    text: str | tuple[str, ...] | list[str], *, rfc3339_mtime: bool
) -> tuple[str, ...]:
    """``--metadata-style`` (comma-separated, or a sequence) checked: known names, no
    two that write one key in two formats. ``UsageError`` otherwise."""
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in STYLES]
    if unknown or not names:
        raise UsageError(
            f"unknown --metadata-style {','.join(unknown) or text!r}; choose one or more "
            f"(comma-separated) of {', '.join(STYLES)}"
        )
    sample = {"mode": str(0o100640), "uid": "1", "gid": "2", "rdev": "10"}
    sample |= {"mtime": "1.5", "atime": "1.5"}
    seen: dict[str, tuple[str, str]] = {}
    for name in dict.fromkeys(names):
        for key, value in _render_one(name, _own(sample), rfc3339_mtime).items():
            if key in seen and seen[key][1] != value:
                raise UsageError(
                    f"--metadata-style {seen[key][0]} and {name} both write the key {key!r}, "
                    "in different formats; choose one of them"
                )
            seen[key] = (name, value)
    return tuple(dict.fromkeys(names))


def render(
    metadata: Mapping[str, str] | None, styles: tuple[str, ...], *, rfc3339_mtime: bool
) -> dict[str, str]:
    """``metadata`` with datamover's keys written in ``styles``. ``rfc3339_mtime``:
    the store is one where rclone keeps ``mtime`` in RFC 3339 (Azure, GCS), not in
    decimal seconds (S3)."""
    if not metadata:
        return {}
    own = _own(metadata)
    if not own:
        return dict(metadata)
    out = {k: val for k, val in metadata.items() if k not in own}
    for name in styles:
        if name == "s3fs":  # datamover's own keys: as given
            out.update({k: metadata[k] for k in own})
        else:
            out.update(_render_one(name, own, rfc3339_mtime))
    return out


def render_own(
    own: Mapping[str, int], styles: tuple[str, ...], *, rfc3339_mtime: bool
) -> dict[str, str]:
    """The keys ``render`` writes in ``styles`` for datamover's keys already read
    (``mode``, ``uid``, ``gid``, ``rdev`` as numbers, ``mtime``/``atime`` in
    nanoseconds), other keys aside."""
    out: dict[str, str] = {}
    for name in styles:
        out.update(_render_one(name, own, rfc3339_mtime))
    return out


def _own(metadata: Mapping[str, str]) -> dict[str, int]:
    """datamover's keys that hold values (times in nanoseconds)."""
    own: dict[str, int] = {}
    for key in ("mode", "uid", "gid", "rdev"):
        raw = metadata.get(key)
        value = v.decimal(raw, 2**64) if raw is not None else None
        if value is not None and (key != "mode" or v.valid_mode(value)):
            own[key] = value
    for key in ("mtime", "atime"):
        raw = metadata.get(key)
        when = v.seconds(raw) if raw is not None else None
        if when is not None:
            own[key] = when[0]
    return own


def _render_one(style: str, own: Mapping[str, int], rfc3339_mtime: bool) -> dict[str, str]:
    mode, uid, gid = own.get("mode"), own.get("uid"), own.get("gid")
    mtime, atime, rdev = own.get("mtime"), own.get("atime"), own.get("rdev")
    out: dict[str, str] = {}

    def put(key: str, value: object, fmt: str = "{}") -> None:
        if value is not None:
            out[key] = fmt.format(value)

    kind = statmod.S_IFMT(mode) if mode is not None else 0
    if style == "s3fs":
        for key, value in own.items():
            out[key] = v.fmt_seconds(value) if key in ("mtime", "atime") else str(value)
    elif style == "rclone":
        put("mode", mode, "{:o}")
        put("uid", uid)
        put("gid", gid)
        if mtime is not None:
            out["mtime"] = v.fmt_rfc3339(mtime) if rfc3339_mtime else v.fmt_seconds(mtime)
        if atime is not None:
            out["atime"] = v.fmt_rfc3339(atime)
        put("rdev", rdev, "{:x}")
    elif style == "gcloud":
        put("goog-reserved-posix-mode", None if mode is None else mode & 0o777, "{:03o}")
        put("goog-reserved-posix-uid", uid)
        put("goog-reserved-posix-gid", gid)
        put("goog-reserved-file-mtime", None if mtime is None else mtime // v.NS)
        put("goog-reserved-file-atime", None if atime is None else atime // v.NS)
        if kind == statmod.S_IFLNK:
            out["goog-reserved-file-is-symlink"] = "true"
    elif style == "gcsfuse":
        put("gcsfuse_mtime", None if mtime is None else v.fmt_rfc3339(mtime))
    elif style == "azcopy":
        put("permissions", mode)
        put("posix_owner", uid)
        put("posix_group", gid)
        put("modtime", mtime)
        put("posix_atime", atime)
        put("posix_rdev", rdev)
        if kind in _FLAGS:
            out[_FLAGS[kind]] = "true"
    elif style == "amlfs":
        put("permissions", None if mode is None else statmod.S_IMODE(mode), "0{:03o}")
        put("owner", uid)
        put("group", gid)
        put("modtime", None if mtime is None else v.fmt_amlfs(mtime))
    elif style == "fsx-lustre":
        put("file-permissions", mode, "0{:o}")
        put("file-owner", uid)
        put("file-group", gid)
        put("file-mtime", mtime, "{}ns")
        put("file-atime", atime, "{}ns")
    return out
