"""What a manifest line must be before anything in it is used.

A manifest is input from anywhere: a colleague's copy, an archive, a file an attacker
edited. ``reader`` parses lines and applies these rules, so everything downstream
(verify, resume, the exports, ``manifest show``) sees only checked values:

* **Bounded**: a line is at most ``MAX_LINE_BYTES`` and JSON nests at most
  ``MAX_DEPTH`` deep, checked before the JSON parser sees the line (no recursion on
  hostile input). ``NaN``/``Infinity`` are not JSON and are refused.
* **Typed**: ``size`` and counts are non-negative integers (``true`` is not one),
  digests lower-case hex of their algorithm's length (``provider_checksums`` too,
  under known algorithm names only), ``status``, ``kind`` and ``verified`` one of
  the known words, ``mtime``/``mode`` in their fixed formats.
* **Paths** (``path``, ``link_to``, ``source_path``) are UTF-8 text without NUL, at
  most ``MAX_RECORDED_BYTES``. Entries datamover acts on, ``ok`` and ``skipped`` (verify
  reads them, exports link or copy them, a resume counts them), must moreover be
  *canonical relative paths* of at most ``MAX_PATH_BYTES``: not absolute, no empty,
  ``.`` or ``..`` component (one ``/`` may end a directory's path, as keys of
  directories do). ``failed`` and
  ``deleted`` entries only record a key that was refused or removed (possibly refused
  *because* it was unsafe) and are never opened, so for them the text rules suffice.

The same rules decide what the transfer engine may record (``path_problem``), so
datamover never writes a manifest it would refuse to read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from datamover.checksums import HEX_DIGITS
from datamover.manifest.format import (
    FORMAT,
    FORMAT_VERSION,
    PROVIDER_HEX_DIGITS,
    STATUS_DELETED,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    VERIFIED_VALUES,
    ManifestEntry,
)

#: Longest line read. The longest line datamover writes is an entry with a part
#: digest per part: a million parts (the POSIX store's part limit) of crc32c is ~11 MB.
MAX_LINE_BYTES = 16 * 1024 * 1024
#: Deepest JSON nesting read (datamover writes 3: a header's options in the header).
MAX_DEPTH = 16
#: Longest path of an entry datamover acts on (PATH_MAX; object keys are at most 1,024).
MAX_PATH_BYTES = 4096
#: Longest name a manifest may record at all: a source deeper than PATH_MAX is
#: recorded, as failed, under the path it has.
MAX_RECORDED_BYTES = 64 * 1024

HEX_LENGTH = HEX_DIGITS
#: The algorithm of a manifest whose header names none (written before ``--checksum``).
LEGACY_ALGORITHM = "sha256"
STATUSES = frozenset((STATUS_OK, STATUS_FAILED, STATUS_SKIPPED, STATUS_DELETED))
#: Statuses whose paths datamover reads, links or counts later.
ACTED_ON = frozenset((STATUS_OK, STATUS_SKIPPED))
KINDS = frozenset(("file", "dir", "symlink", "hardlink"))

_HEX = re.compile(r"[0-9a-f]*")
_MTIME = re.compile(r"-?[0-9]+\.[0-9]{9}")
_MODE = re.compile(r"[0-7]{4}")
_JSON_SPECIAL = re.compile(r'[\[\]{}"\\]')


class LineProblem(Exception):
    """Why one line is refused; the reader adds the file and line number."""


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON ``text`` nests deeper than ``limit``: a scan of brackets outside
    strings, without recursion. Lines with few brackets (all that datamover writes)
    are answered by counting alone."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    in_string = False
    escaped_at = -1
    for m in _JSON_SPECIAL.finditer(text):
        c, pos = m.group(), m.start()
        if in_string:
            if pos == escaped_at:
                continue
            if c == "\\":
                escaped_at = pos + 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > limit:
                return True
        elif c in "]}":
            depth -= 1
    return False


def text_problem(path: str) -> str | None:
    """Why ``path`` can't even be recorded as a name, or None."""
    if not path:
        return "it is empty"
    if "\0" in path:
        return "it contains a NUL byte"
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not Unicode text (a lone surrogate escape)"
    if size > MAX_RECORDED_BYTES:
        return f"it is longer than {MAX_RECORDED_BYTES} bytes"
    return None


def path_problem(path: str) -> str | None:
    """Why ``path`` can't name something beneath a root (see the module docstring),
    or None. One trailing ``/`` (a directory) is allowed."""
    # ASCII text is its own UTF-8 (no surrogates, a byte a character): the text rules
    # are then two comparisons, not an encoding (this runs for every file written).
    if not (path and path.isascii() and len(path) <= MAX_PATH_BYTES and "\0" not in path):
        why = text_problem(path)
        if why is not None:
            return why
        if len(path.encode("utf-8")) > MAX_PATH_BYTES:
            return f"it is longer than {MAX_PATH_BYTES} bytes (PATH_MAX)"
    if path.startswith("/"):
        return "it is absolute"
    parts = (path[:-1] if path.endswith("/") else path).split("/")
    if ".." in parts:
        return "it has a '..' component, which would leave the tree"
    if "" in parts:
        return "it has an empty component ('//' or a '/' at an end)"
    if "." in parts:
        return "it has a '.' component"
    return None


#: The type of each field a reader uses (``bool`` is never an ``int`` here), and the
#: least value of the integer ones.
_HEADER_TYPES: dict[str, tuple[type, ...]] = {
    "format_version": (int,),
    "algorithm": (str,),
    "part_algorithm": (str,),
    "job_id": (str,),
    "operation": (str,),
    "source": (str,),
    "destination": (str,),
    "destination_remote": (str,),
    "started": (str,),
    "host": (str,),
    "user": (str,),
    "tool": (str,),
    "tool_version": (str,),
    "options": (dict,),
    "command_line": (list,),
}
_FILE_TYPES: dict[str, tuple[type, ...]] = {
    "path": (str,),
    "size": (int,),
    "status": (str,),
    "digest": (str,),
    "mtime": (str,),
    "mode": (str,),
    "part_size": (int,),
    "parts": (list,),
    "etag": (str,),
    "version": (str,),
    "error": (str,),
    "source_path": (str,),
    "seconds": (int, float),
    "attempts": (int,),
    "kind": (str,),
    "link_to": (str,),
    "uid": (int,),
    "gid": (int,),
    "verified": (str,),
    "provider_checksums": (dict,),
    "algorithm": (str,),
}
_SUMMARY_TYPES: dict[str, tuple[type, ...]] = {
    "files_ok": (int,),
    "files_failed": (int,),
    "files_skipped": (int,),
    "bytes": (int,),
    "bytes_moved": (int,),
    "peak_buffer_bytes": (int,),
    "seconds": (int, float),
    "ended": (str,),
    "aborted": (str,),
    "files_unverified": (int,),
}
_MINIMUM = {"format_version": 1, "part_size": 1, "attempts": 1}
_WHAT = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
}


def _typed(obj: Mapping[str, Any], types: Mapping[str, tuple[type, ...]]) -> None:
    """Every known field present (and not null) has its type; integers their minimum;
    numbers are finite."""
    for name, value in obj.items():
        want = types.get(name)
        if want is None or value is None:
            continue
        kind = type(value)
        if kind not in want:
            raise LineProblem(
                f"{name!r} must be {_WHAT[want[-1]]}, not {_WHAT.get(kind, kind.__name__)}"
            )
        if kind is int:
            least = _MINIMUM.get(name, 0)
            if value < least:
                raise LineProblem(f"{name!r} must be an integer >= {least}, not {value}")
        elif kind is float and not (math.isfinite(value) and value >= 0):
            raise LineProblem(f"{name!r} must be a non-negative number, not {value}")


def _required(obj: Mapping[str, Any], *names: str) -> None:
    for name in names:
        if obj.get(name) is None:
            raise LineProblem(f"{obj.get('type')} line without {name!r}")


def _hex(value: object, name: str, algorithm: str | None) -> str:
    want = HEX_LENGTH.get(algorithm or "")
    if not isinstance(value, str) or not value or not _HEX.fullmatch(value):
        raise LineProblem(f"{name!r} must be lower-case hex, not {_shown(value)}")
    if want is not None and len(value) != want:
        raise LineProblem(f"{name!r} has {len(value)} hex digits; {algorithm} has {want}")
    return value


def _parts(parts: list[Any], algorithm: str | None) -> None:
    """Part digests: checked as one string when they are all alike (a million parts
    cost one regex), one by one only to name the bad one."""
    want = HEX_LENGTH.get(algorithm or "")
    if (
        want is not None
        and all(type(p) is str and len(p) == want for p in parts)
        and _HEX.fullmatch("".join(parts))
    ):
        return
    for i, part in enumerate(parts):
        _hex(part, f"parts[{i}]", algorithm)


def _provider_checksums(value: Mapping[str, Any]) -> dict[str, str]:
    """A known algorithm's name -> lower-case hex of its length, a handful at most."""
    if len(value) > len(PROVIDER_HEX_DIGITS):
        raise LineProblem(
            f"'provider_checksums' has {len(value)} entries; there are no more "
            f"than {len(PROVIDER_HEX_DIGITS)} algorithms"
        )
    for alg, digest in value.items():
        want = PROVIDER_HEX_DIGITS.get(alg)
        if want is None:
            raise LineProblem(f"'provider_checksums' names an unknown algorithm {_shown(alg)}")
        name = f"provider_checksums.{alg}"
        if not isinstance(digest, str) or not digest or not _HEX.fullmatch(digest):
            raise LineProblem(f"{name!r} must be lower-case hex, not {_shown(digest)}")
        if len(digest) != want:
            raise LineProblem(f"{name!r} has {len(digest)} hex digits; {alg} has {want}")
    return dict(value)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _path(obj: Mapping[str, Any], name: str, acted_on: bool) -> str | None:
    value: str | None = obj.get(name)
    if value is None:
        return None
    why = path_problem(value) if acted_on else text_problem(value)
    if why is not None:
        raise LineProblem(f"{name} {_shown(value)} refused: {why}")
    return value


def check_header(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The header line, checked: ours, a version we read, known algorithms."""
    if obj.get("format") != FORMAT:
        raise LineProblem(f"not a datamover manifest (format {_shown(obj.get('format'))})")
    _typed(obj, _HEADER_TYPES)
    _required(obj, "format_version")
    version = obj["format_version"]
    if version > FORMAT_VERSION:  # before anything else: a newer format may differ
        raise LineProblem(
            f"manifest format version {version} is newer than this datamover understands; "
            "upgrade datamover"
        )
    for name in ("algorithm", "part_algorithm"):
        value = obj.get(name)
        if value is not None and value not in HEX_LENGTH:
            raise LineProblem(f"unknown {name} {_shown(value)}")
    command_line = obj.get("command_line")
    if command_line is not None and not all(type(a) is str for a in command_line):
        raise LineProblem("'command_line' must be a list of strings")
    header = dict(obj)
    # Manifests from before --checksum named no algorithm: theirs was sha256.
    header.setdefault("algorithm", LEGACY_ALGORITHM)
    return header


def check_entry(
    obj: Mapping[str, Any], algorithm: str, part_algorithm: str | None
) -> ManifestEntry:
    """A file line, checked (see the module docstring), as a ``ManifestEntry``."""
    _typed(obj, _FILE_TYPES)
    _required(obj, "status", "path", "size")
    status = obj["status"]
    if status not in STATUSES:
        raise LineProblem(f"unknown status {_shown(status)}")
    kind = obj.get("kind")
    if kind is not None and kind not in KINDS:
        raise LineProblem(f"unknown kind {_shown(kind)}")
    if kind == "file":
        kind = None
    acted_on = status in ACTED_ON
    path = _path(obj, "path", acted_on)
    assert path is not None
    if acted_on and kind == "dir" and not path.endswith("/"):
        # A verify reads no bytes of a directory: a file must not pass for one.
        raise LineProblem(f"a directory entry ({_shown(path)}) whose path does not end in '/'")
    own = obj.get("algorithm")
    if own is not None and own != algorithm:
        raise LineProblem(
            f"entry {_shown(obj.get('path'))} has a {_shown(own)} digest in a {algorithm} "
            "manifest; one manifest holds digests of one algorithm (verify each run's "
            "manifest on its own)"
        )
    digest = obj.get("digest")
    if digest is not None:
        _hex(digest, "digest", algorithm)
    elif status == STATUS_OK and kind != "dir":
        raise LineProblem(f"an ok entry ({_shown(path)}) without its digest")
    error = obj.get("error")
    if status == STATUS_FAILED and error is None:
        raise LineProblem(f"a failed entry ({_shown(path)}) without its error")
    mtime = obj.get("mtime")
    if mtime is not None and not _MTIME.fullmatch(mtime):
        raise LineProblem(f"'mtime' must be seconds with nine decimals, not {_shown(mtime)}")
    mode = obj.get("mode")
    if mode is not None and not _MODE.fullmatch(mode):
        raise LineProblem(f"'mode' must be four octal digits, not {_shown(mode)}")
    parts = obj.get("parts") or []
    _parts(parts, part_algorithm)
    verified = obj.get("verified")
    if verified is not None and verified not in VERIFIED_VALUES:
        raise LineProblem(
            f"'verified' must be one of {', '.join(VERIFIED_VALUES)}, not {_shown(verified)}"
        )
    provider = _provider_checksums(obj.get("provider_checksums") or {})
    seconds = obj.get("seconds")
    return ManifestEntry(
        path=path,
        size=obj["size"],
        status=status,
        digest=digest,
        mtime=mtime,
        mode=mode,
        part_size=obj.get("part_size"),
        parts=list(parts),
        etag=obj.get("etag"),
        version=obj.get("version"),
        error=error,
        source_path=_path(obj, "source_path", acted_on),
        seconds=None if seconds is None else float(seconds),
        attempts=obj.get("attempts"),
        kind=kind,
        link_to=_path(obj, "link_to", acted_on),
        uid=obj.get("uid"),
        gid=obj.get("gid"),
        verified=verified,
        provider_checksums=provider,
    )


def plainly_valid(entry: ManifestEntry, algorithm: str, part_algorithm: str | None) -> bool:
    """Whether ``check_entry`` takes ``entry.to_json()`` in an ``algorithm`` manifest
    (``part_algorithm`` for part digests), answered by a few comparisons, without
    building anything, for the entries a run writes by the thousand: a file,
    directory or symlink of at most one part, without ``source_path`` or ``link_to``.
    True only when ``check_entry`` would accept it; False means "ask
    ``check_entry``", which names the problem, if there is one.
    (``ManifestWriter.add`` checks every entry it writes; a full check cost a small
    file's download some 30 dict look-ups.)"""
    path, size, status, kind = entry.path, entry.size, entry.status, entry.kind
    if type(path) is not str or type(size) is not int or size < 0 or type(status) is not str:
        return False
    if status in ACTED_ON:
        if path_problem(path) is not None or (kind == "dir" and not path.endswith("/")):
            return False
    elif status not in STATUSES or text_problem(path) is not None:
        return False
    if kind is not None and (type(kind) is not str or kind not in KINDS):
        return False
    digest, error = entry.digest, entry.error
    if digest is None:
        if status == STATUS_OK and kind != "dir":
            return False
    elif (
        type(digest) is not str
        or len(digest) != HEX_LENGTH.get(algorithm)
        or not _HEX.fullmatch(digest)
    ):
        return False
    if error is None:
        if status == STATUS_FAILED:
            return False
    elif type(error) is not str:
        return False
    mtime, mode, seconds = entry.mtime, entry.mode, entry.seconds
    if mtime is not None and (type(mtime) is not str or not _MTIME.fullmatch(mtime)):
        return False
    if mode is not None and (type(mode) is not str or not _MODE.fullmatch(mode)):
        return False
    if seconds is not None and (type(seconds) is not float or not 0 <= seconds < math.inf):
        return False
    if entry.source_path is not None or entry.link_to is not None:
        return False
    parts = entry.parts
    if parts:  # a small file's one part digest; more go to check_entry's _parts
        if type(parts) is not list or len(parts) != 1:
            return False
        part = parts[0]
        if (
            type(part) is not str
            or len(part) != HEX_LENGTH.get(part_algorithm or "")
            or not _HEX.fullmatch(part)
        ):
            return False
    etag, version = entry.etag, entry.version
    if (etag is not None and type(etag) is not str) or (
        version is not None and type(version) is not str
    ):
        return False
    part_size, attempts, uid, gid = entry.part_size, entry.attempts, entry.uid, entry.gid
    if part_size is not None and (type(part_size) is not int or part_size < 1):
        return False
    if attempts is not None and (type(attempts) is not int or attempts < 1):
        return False
    if uid is not None and (type(uid) is not int or uid < 0):
        return False
    if gid is not None and (type(gid) is not int or gid < 0):
        return False
    verified, provider = entry.verified, entry.provider_checksums
    if verified is not None and (type(verified) is not str or verified not in VERIFIED_VALUES):
        return False
    if provider:
        for alg, value in provider.items():
            if (
                type(value) is not str
                or len(value) != PROVIDER_HEX_DIGITS.get(alg)
                or not _HEX.fullmatch(value)
            ):
                return False
    return True


def check_summary(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The summary line, checked: counts are non-negative integers."""
    _typed(obj, _SUMMARY_TYPES)
    _required(obj, "files_ok", "files_failed", "bytes")
    return dict(obj)
