"""Reading a manifest back (verify, resume, exports, ``manifest show``).

Manifests are untrusted input. Every line is parsed and checked (``rules``) before
anything in it is used, and a manifest that breaks a rule is refused as a whole with
a ``ManifestError`` naming the file and the line: a verify that skipped a line it
could not read would vouch for a tree it never checked.

* The first line is the header; there is exactly one.
* Only the **last** line may be torn (a writer killed mid-line), and only when no
  newline ends it: it is left out (``Manifest.torn_at`` says where it starts). Any
  other line that does not parse is an error. Blank lines are skipped.
* Every summary line must agree with the entries before it (last entry per path):
  ``files_ok``, ``files_failed`` (and ``files_skipped`` when present) count those
  statuses, ``bytes`` adds up the sizes of ``ok`` entries. A resumed run appends
  after an earlier attempt's summary, so a summary followed by entries belongs to an
  attempt, and ``Manifest.summary`` is the last line's only (None when a torn line
  follows it).
* A manifest at its final path always ends with its summary; one without is cut off,
  or the ``.partial`` of a run still going or killed. ``check_complete`` refuses it
  for readers that vouch for a whole run (verify, the exports) unless asked.

Memory: the entries are kept (one per path); lines are read one at a time, each at
most ``rules.MAX_LINE_BYTES``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import IO, Any

from datamover.errors import ManifestError, UsageError
from datamover.manifest.format import (
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    Manifest,
    ManifestEntry,
)
from datamover.manifest.rules import (
    MAX_DEPTH,
    MAX_LINE_BYTES,
    LineProblem,
    check_entry,
    check_header,
    check_summary,
    too_deep,
)


def _no_constant(name: str) -> Any:
    raise LineProblem(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LineProblem(f"not a datamover manifest line: not UTF-8 (byte {e.start})") from None
    if too_deep(text):
        raise LineProblem(f"not a datamover manifest line: JSON nested over {MAX_DEPTH} deep")
    try:
        obj = _DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise LineProblem(
            f"not a datamover manifest line: not JSON ({e.msg} at column {e.colno})"
        ) from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of 5,000 digits
        raise LineProblem(f"not a datamover manifest line ({e})") from None
    if not isinstance(obj, dict):
        raise LineProblem("not a datamover manifest line: not a JSON object")
    return obj


def _lines(fh: IO[bytes], name: str) -> Iterator[tuple[int, int, dict[str, Any] | None]]:
    """``(line number, byte offset, object)`` per non-blank line; the object is None
    for a torn last line."""
    number = offset = 0
    while raw := fh.readline(MAX_LINE_BYTES + 1):
        number += 1
        complete = raw.endswith(b"\n")
        if not complete and len(raw) > MAX_LINE_BYTES:
            raise ManifestError(
                f"{name}:{number}: line longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB; "
                "not a manifest datamover wrote",
                path=name,
                line=number,
            )
        if raw.strip():
            try:
                yield number, offset, _parse(raw)
            except LineProblem as e:
                if not complete:  # the last line, cut short by a killed writer
                    yield number, offset, None
                    return
                raise ManifestError(f"{name}:{number}: {e}", path=name, line=number) from None
        offset += len(raw)


class _Counts:
    """Statuses and ok bytes of the last entry per path, kept as entries arrive."""

    def __init__(self) -> None:
        self.entries: dict[str, ManifestEntry] = {}
        self.by_status: dict[str, int] = {}
        self.ok_bytes = 0

    def _count(self, e: ManifestEntry, sign: int) -> None:
        self.by_status[e.status] = self.by_status.get(e.status, 0) + sign
        if e.status == STATUS_OK:
            self.ok_bytes += sign * e.size

    def add(self, e: ManifestEntry) -> None:
        old = self.entries.pop(e.path, None)  # a resumed job may list a path again
        if old is not None:
            self._count(old, -1)
        self.entries[e.path] = e
        self._count(e, 1)

    def disagreement(self, summary: dict[str, Any]) -> str | None:
        listed = {
            "files_ok": self.by_status.get(STATUS_OK, 0),
            "files_failed": self.by_status.get(STATUS_FAILED, 0),
            "files_skipped": self.by_status.get(STATUS_SKIPPED, 0),
            "bytes": self.ok_bytes,
        }
        for name, value in listed.items():
            said = summary.get(name)
            if said is not None and said != value:
                return f"the summary says {name} {said}, the entries above it add up to {value}"
        return None


def parse(fh: IO[bytes], name: str) -> Manifest:
    """Read and check a manifest from the binary file ``fh`` (``name`` for messages).
    Raises ``ManifestError``."""
    header: dict[str, Any] | None = None
    counts = _Counts()
    summary: dict[str, Any] | None = None
    torn_at = None
    algorithm = part_algorithm = None
    for number, offset, obj in _lines(fh, name):
        if obj is None:
            torn_at = offset
            summary = None  # a writer was appending after it: not the last line
            break
        try:
            kind = obj.get("type")
            if header is None:
                if kind != "header":
                    raise LineProblem(
                        "not a datamover manifest: its first line is not a manifest header"
                    )
                header = check_header(obj)
                algorithm, part_algorithm = header["algorithm"], header.get("part_algorithm")
            elif kind == "file":
                assert algorithm is not None
                counts.add(check_entry(obj, algorithm, part_algorithm))
                summary = None
            elif kind == "summary":
                summary = check_summary(obj)
                why = counts.disagreement(summary)
                if why is not None:
                    raise LineProblem(why)
            elif kind == "header":
                raise LineProblem("a second header; a manifest has one, on its first line")
            else:
                shown = kind if isinstance(kind, str) and len(kind) < 40 else "?"
                raise LineProblem(f"unknown line type {shown!r}")
        except LineProblem as e:
            raise ManifestError(f"{name}:{number}: {e}", path=name, line=number) from None
    if header is None:
        raise ManifestError(f"{name}: no manifest header; is this a datamover manifest?", path=name)
    return Manifest(header, list(counts.entries.values()), summary, torn_at)


def check_complete(manifest: Manifest, name: str, *, doing: str) -> None:
    """Refuse (``ManifestError``) a manifest with no summary on its last line: it was
    cut off, or its run is still going or was killed, and a reader that vouched for it
    would vouch for a run it sees only part of. ``doing`` is the command's verb
    (``verify``, ``export``); ``--partial`` is how a user asks for the part."""
    if manifest.summary is None:
        raise ManifestError(
            f"{name}: manifest has no summary line: it is incomplete (cut off, or still "
            f"being written); {doing} the complete manifest, or give --partial to {doing} "
            "only the files it lists",
            path=name,
        )


def read_manifest(path: str) -> Manifest:
    """The manifest at ``path``, checked line by line (see the module docstring).
    Raises ``ManifestError`` for a malformed manifest, ``UsageError`` when it can't be
    read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        fh = os.fdopen(fd, "rb")
    except OSError as e:
        raise UsageError(f"cannot read manifest {path}: {e.strerror}") from e
    with fh:
        try:
            return parse(fh, path)
        except OSError as e:  # a directory, an I/O error
            raise UsageError(f"cannot read manifest {path}: {e.strerror}") from e


def iter_manifest(path: str) -> Iterator[dict[str, Any]]:
    """The checked lines of the manifest at ``path``: header, entries (as JSON
    objects, last one per path) and the summary when there is one."""
    manifest = read_manifest(path)
    yield manifest.header
    for entry in manifest.entries:
        yield entry.to_json()
    if manifest.summary is not None:
        yield manifest.summary
