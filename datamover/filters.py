"""Which files a copy or sync takes: glob rules, a file list, size and age bounds.

Rules follow rclone's filtering, matched against the path *relative to the source
root* (``/``-separated):

* ``*`` matches within one path segment, ``**`` across segments, ``?`` one character
  other than ``/``, ``[abc]`` a class, ``{a,b}`` alternatives.
* A pattern starting with ``/`` is anchored at the root (``/top.txt``); otherwise it
  matches at any depth, ending at a path boundary (``*.h5`` matches ``a/b/c.h5``,
  ``raw/**`` matches everything under any ``raw`` directory). A pattern ending in
  ``/`` means everything under that directory (``tmp/`` = ``tmp/**``).
* Rules are tried in the order given; the first that matches decides. A file no rule
  matches is taken, unless an include rule was given at all, in which case it is not.
* ``files_from``: only the listed relative paths (one per line; blank lines and lines
  starting with ``#`` ignored), and they must also pass the other rules.
* ``min_size``/``max_size`` are inclusive bounds in bytes. ``max_age`` takes files
  modified at most that long ago (or on/after a date), ``min_age`` files modified at
  least that long ago (or before a date). A file whose mtime is unknown passes the
  age bounds.

Sync with ``--delete`` never deletes a destination file the filter excludes: path
rules are checked on the path, size and age bounds on the destination file's own
size and mtime.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from datamover.errors import UsageError
from datamover.options import parse_size, path_text
from datamover.stores.base import ObjectInfo

INCLUDE, EXCLUDE = "+", "-"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|M|y)?\s*$")
_UNITS = {
    "ms": 0.001,
    "s": 1,
    None: 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "M": 30 * 86400,
    "y": 365 * 86400,
}


def patterns(value: str | Iterable[str], what: str) -> tuple[str, ...]:
    """``include``/``exclude`` as given by a caller: one pattern (a ``str``) or
    several. A lone string is one pattern, never its characters one by one."""
    if isinstance(value, str):
        return (value,)
    out: tuple[object, ...] = tuple(value) if isinstance(value, Iterable) else (value,)
    for p in out:
        if not isinstance(p, str):
            raise UsageError(f"{what} takes a str or a list of str (got {type(p).__name__})")
    return tuple(str(p) for p in out)


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile one rclone-style glob (see the module docstring)."""
    if not pattern or pattern == "/":
        raise UsageError("an empty filter pattern matches nothing; remove it")
    anchored = pattern.startswith("/")
    body = pattern.lstrip("/")
    if body.endswith("/"):
        body += "**"
    out: list[str] = []
    i, depth = 0, 0
    while i < len(body):
        c = body[i]
        if c == "*":
            if body.startswith("**", i):
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < len(body) and body[j] == "!":
                j += 1
            if j < len(body) and body[j] == "]":
                j += 1  # a "]" first in the class is a member
            end = body.find("]", j)
            if end < 0:
                raise UsageError(f"filter {pattern!r}: unclosed [")
            cls = body[i + 1 : end]
            if cls.startswith("!"):
                cls = "^" + cls[1:]
            out.append("[" + cls.replace("\\", "\\\\") + "]")
            i = end
        elif c == "{":
            out.append("(?:")
            depth += 1
        elif c == "}" and depth:
            out.append(")")
            depth -= 1
        elif c == "," and depth:
            out.append("|")
        elif c == "\\" and i + 1 < len(body):
            i += 1
            out.append(re.escape(body[i]))
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise UsageError(f"filter {pattern!r}: unclosed {{")
    prefix = "^" if anchored else "(?:^|/)"
    return re.compile(prefix + "".join(out) + "$", re.S)


def parse_duration(text: str) -> float:
    """``30s``, ``10m``, ``2h``, ``7d``, ``2w``, ``1.5h`` (or bare seconds) -> seconds."""
    m = _DURATION_RE.match(text)
    if not m:
        raise UsageError(
            f"cannot read duration {text!r}; write it like 30s, 10m, 2h, 7d or as a date "
            "2024-05-01 / 2024-05-01T12:00:00"
        )
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_age(text: str, now: float) -> float:
    """An age bound as an absolute cutoff (epoch seconds): a duration before ``now``,
    or an ISO date/datetime (UTC unless it carries an offset)."""
    try:
        return now - parse_duration(text)
    except UsageError:
        pass
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"cannot read age {text!r}; write a duration (30s, 10m, 2h, 7d) or an ISO date "
            "(2024-05-01, 2024-05-01T12:00:00+02:00)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def read_files_from(path: str) -> frozenset[str]:
    """Relative paths listed in ``path`` (``-`` is not supported: give a file)."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as e:
        raise UsageError(f"--files-from {path}: {e.strerror}") from None
    out: set[str] = set()
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        while line.startswith("./"):
            line = line[2:]
        out.add(line.lstrip("/"))
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class FileFilter:
    """A frozen, validated filter; build it with ``FileFilter.build``.

    ``rules`` are ``(INCLUDE|EXCLUDE, glob)`` in order. ``newer_than``/``older_than``
    are absolute cutoffs in epoch seconds (from ``max_age``/``min_age``).
    """

    rules: tuple[tuple[str, str], ...] = ()
    files_from: frozenset[str] | None = None
    min_size: int | None = None
    max_size: int | None = None
    newer_than: float | None = None
    older_than: float | None = None
    _compiled: tuple[tuple[bool, re.Pattern[str]], ...] = field(default=(), repr=False)
    #: The ``files_from`` paths a listing offered so far (``path_allowed``), to tell
    #: those the source does not have (``not_found``); a subset of ``files_from``.
    _seen: set[str] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def build(
        cls,
        *,
        rules: Iterable[tuple[str, str]] = (),
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        files_from: str | Iterable[str] | None = None,
        min_size: int | str | None = None,
        max_size: int | str | None = None,
        max_age: str | float | None = None,
        min_age: str | float | None = None,
        now: float | None = None,
    ) -> FileFilter:
        """``rules`` keep their order; ``exclude`` patterns are tried before
        ``include`` ones and both after ``rules``. ``files_from`` is a file of paths
        or the paths themselves. Sizes take units (``10M``); ages take durations
        (``7d``, or seconds as a number) or ISO dates."""
        include, exclude = patterns(include, "include"), patterns(exclude, "exclude")
        ordered = [*rules, *((EXCLUDE, p) for p in exclude), *((INCLUDE, p) for p in include)]
        for sign, _ in ordered:
            if sign not in (INCLUDE, EXCLUDE):
                raise UsageError(f"filter rule sign must be '+' or '-', not {sign!r}")
        compiled = tuple((sign == INCLUDE, glob_to_regex(p)) for sign, p in ordered)
        listed: frozenset[str] | None
        if files_from is None:
            listed = None
        elif isinstance(files_from, str | os.PathLike):
            listed = read_files_from(path_text(files_from, "files_from"))
        else:
            listed = frozenset(p.lstrip("/") for p in patterns(files_from, "files_from"))
        now = time.time() if now is None else now

        def age(value: str | float | None) -> float | None:
            if value is None:
                return None
            if isinstance(value, int | float) and not isinstance(value, bool):
                return now - float(value)
            if not isinstance(value, str):
                raise UsageError(
                    f"an age is a duration ('7d'), seconds or an ISO date, not "
                    f"{type(value).__name__}"
                )
            return parse_age(value, now)

        lo = parse_size(min_size) if min_size is not None else None
        hi = parse_size(max_size) if max_size is not None else None
        if lo is not None and hi is not None and lo > hi:
            raise UsageError("--min-size is larger than --max-size: nothing would match")
        newer, older = age(max_age), age(min_age)
        if newer is not None and older is not None and newer > older:
            raise UsageError("--max-age is older than --min-age: nothing would match")
        return cls(
            rules=tuple(ordered),
            files_from=listed,
            min_size=lo,
            max_size=hi,
            newer_than=newer,
            older_than=older,
            _compiled=compiled,
        )

    @property
    def active(self) -> bool:
        return bool(
            self.rules
            or self.files_from is not None
            or self.min_size is not None
            or self.max_size is not None
            or self.newer_than is not None
            or self.older_than is not None
        )

    @property
    def by_path_only(self) -> bool:
        """True when only the path decides (no size or age bounds)."""
        return (
            self.min_size is None
            and self.max_size is None
            and self.newer_than is None
            and self.older_than is None
        )

    def not_found(self) -> list[str]:
        """The ``files_from`` paths no listing offered (sorted): not in the source."""
        if self.files_from is None:
            return []
        return sorted(self.files_from - self._seen)

    def path_allowed(self, rel: str) -> bool:
        """Whether the path rules and the file list take ``rel``."""
        if self.files_from is not None:
            if rel not in self.files_from:
                return False
            self._seen.add(rel)
        for include, regex in self._compiled:
            if regex.search(rel):
                return include
        return not any(include for include, _ in self._compiled)

    def dir_excluded(self, rel_dir: str) -> bool:
        """Whether every path below the directory ``rel_dir`` (ending in ``/``) is
        provably excluded by the path rules: the file list names nothing below it, or
        a rule that takes everything below what it matches (ending in ``**``, or
        ``/``) excludes it before any include rule is tried. False when that can't be
        told (an include rule might take something below it)."""
        if self.files_from is not None and not any(p.startswith(rel_dir) for p in self.files_from):
            return True
        for include, regex in self._compiled:
            if include:
                return False
            if regex.pattern.endswith(".*$") and regex.search(rel_dir):
                return True
        return False

    def allows(self, rel: str, info: ObjectInfo) -> bool:
        """Whether the file at ``rel`` described by ``info`` is taken."""
        if not self.path_allowed(rel):
            return False
        if self.min_size is not None and info.size < self.min_size:
            return False
        if self.max_size is not None and info.size > self.max_size:
            return False
        if info.mtime is not None:
            if self.newer_than is not None and info.mtime < self.newer_than:
                return False
            if self.older_than is not None and info.mtime > self.older_than:
                return False
        return True

    def to_record(self) -> dict[str, Any]:
        """JSON-able, for the journal; ``from_record`` rebuilds the same filter (age
        bounds stay the absolute cutoffs computed when the job was first built)."""
        return {
            "rules": [list(r) for r in self.rules],
            "files_from": sorted(self.files_from) if self.files_from is not None else None,
            "min_size": self.min_size,
            "max_size": self.max_size,
            "newer_than": self.newer_than,
            "older_than": self.older_than,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> FileFilter:
        rules = tuple((str(sign), str(p)) for sign, p in record.get("rules") or ())
        built = cls.build(rules=rules, files_from=record.get("files_from"))
        return replace(
            built,
            min_size=record.get("min_size"),
            max_size=record.get("max_size"),
            newer_than=record.get("newer_than"),
            older_than=record.get("older_than"),
        )

    def describe(self) -> dict[str, object]:
        """JSON-able summary for reports."""
        out: dict[str, object] = {}
        if self.rules:
            out["rules"] = [f"{sign} {p}" for sign, p in self.rules]
        if self.files_from is not None:
            out["files_from"] = len(self.files_from)
        for name in ("min_size", "max_size", "newer_than", "older_than"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out
