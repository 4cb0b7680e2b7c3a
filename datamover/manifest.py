"""Checksum manifests: JSON lines, one header, one entry per file, one summary.

The format is specified in ``manifests/SPEC.md`` and ``manifests/manifest.schema.json``.
Entries are appended (and flushed) as files finish, so a manifest of a run that died
still lists everything that completed; the summary line is written at the end.

Exports: ``sha256sum``-style lines (``HEX  path``, with the GNU escaping of ``\\`` and
newlines), accepted by ``sha256sum -c`` / ``sha512sum -c`` / ``md5sum -c`` run from the
copied root.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from datamover.errors import UsageError

FORMAT = "datamover-manifest"
FORMAT_VERSION = 1

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_SKIPPED = "skipped"
STATUS_DELETED = "deleted"

_SUM_TOOLS = {"sha256": "sha256sum", "sha512": "sha512sum", "md5": "md5sum"}


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _tool_version() -> str:
    from datamover import __version__

    return __version__


@dataclass(slots=True)
class ManifestEntry:
    path: str
    size: int
    status: str
    digest: str | None = None
    mtime: str | None = None
    mode: str | None = None
    part_size: int | None = None
    parts: list[str] = field(default_factory=list)
    etag: str | None = None
    version: str | None = None
    error: str | None = None
    source_path: str | None = None
    seconds: float | None = None
    attempts: int | None = None
    kind: str | None = None  # None: a regular file; "dir", "symlink", "hardlink"
    link_to: str | None = None
    uid: int | None = None
    gid: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "path": self.path, "size": self.size}
        for name in (
            "status",
            "digest",
            "mtime",
            "mode",
            "part_size",
            "etag",
            "version",
            "error",
            "source_path",
            "seconds",
            "attempts",
            "kind",
            "link_to",
            "uid",
            "gid",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.parts:
            out["parts"] = self.parts
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ManifestEntry:
        return cls(
            path=obj["path"],
            size=obj["size"],
            status=obj["status"],
            digest=obj.get("digest"),
            mtime=obj.get("mtime"),
            mode=obj.get("mode"),
            part_size=obj.get("part_size"),
            parts=list(obj.get("parts", [])),
            etag=obj.get("etag"),
            version=obj.get("version"),
            error=obj.get("error"),
            source_path=obj.get("source_path"),
            seconds=obj.get("seconds"),
            attempts=obj.get("attempts"),
            kind=obj.get("kind"),
            link_to=obj.get("link_to"),
            uid=obj.get("uid"),
            gid=obj.get("gid"),
        )


def make_header(
    *,
    operation: str,
    source: str,
    destination: str,
    algorithm: str,
    part_algorithm: str,
    options: Mapping[str, Any],
    job_id: str,
    command_line: tuple[str, ...] = (),
) -> dict[str, Any]:
    header: dict[str, Any] = {
        "type": "header",
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool": "datamover",
        "tool_version": _tool_version(),
        "job_id": job_id,
        "operation": operation,
        "source": source,
        "destination": destination,
        "algorithm": algorithm,
        "part_algorithm": part_algorithm,
        "options": dict(options),
        "started": utc_now(),
        "host": socket.gethostname(),
    }
    try:
        header["user"] = getpass.getuser()
    except (KeyError, OSError):
        pass
    if command_line:
        header["command_line"] = list(command_line)
    return header


class ManifestWriter:
    """Thread-safe appender. Each line is flushed as written; ``close`` fsyncs.

    The file is written as ``PATH.partial`` and renamed to ``PATH`` by ``close``, so a
    manifest at ``PATH`` is always a finished one (with its summary line).
    """

    def __init__(self, path: str, header: Mapping[str, Any], *, resume: bool = False) -> None:
        """With ``resume``, entries are appended to an existing ``PATH.partial`` (a job
        picked up after a crash) instead of starting a new file."""
        self.path = path
        self._partial = path + ".partial"
        directory = os.path.dirname(os.path.abspath(path))
        appending = resume and os.path.exists(self._partial)
        try:
            os.makedirs(directory, exist_ok=True)
            self._fh: IO[str] = open(  # noqa: SIM115
                self._partial, "a" if appending else "w", encoding="utf-8"
            )
        except OSError as e:
            raise UsageError(f"cannot write manifest {path}: {e.strerror}") from e
        self._lock = threading.Lock()
        self._started = time.monotonic()
        if appending:
            self._terminate_torn_line()
        else:
            self._write(header)

    def _terminate_torn_line(self) -> None:
        """A process killed mid-write can leave half a line; end it so the next entry
        starts clean (readers skip the unparseable fragment)."""
        with open(self._partial, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return
            fh.seek(-1, os.SEEK_END)
            last = fh.read(1)
        if last != b"\n":
            self._fh.write("\n")
            self._fh.flush()

    def entries_so_far(self) -> list[ManifestEntry]:
        """Entries written (by this run and any run it resumed), last one per path."""
        with self._lock:
            self._fh.flush()
        return list(_dedupe(_read_entries(self._partial)).values())

    def _write(self, obj: Mapping[str, Any]) -> None:
        line = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()

    def add(self, entry: ManifestEntry) -> None:
        self._write(entry.to_json())

    def suspend(self, summary: Mapping[str, Any]) -> None:
        """End this run without finishing the manifest: the summary (with ``aborted``)
        is written to ``PATH.partial``, which a resumed run appends to."""
        self._write({"type": "summary", "ended": utc_now(), **summary})
        with self._lock:
            os.fsync(self._fh.fileno())
            self._fh.close()

    def close(self, summary: Mapping[str, Any]) -> None:
        body = {"type": "summary", "ended": utc_now(), **summary}
        self._write(body)
        with self._lock:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        os.replace(self._partial, self.path)


@dataclass(slots=True)
class Manifest:
    header: dict[str, Any]
    entries: list[ManifestEntry]
    summary: dict[str, Any] | None

    @property
    def algorithm(self) -> str:
        return str(self.header["algorithm"])


def _read_entries(path: str) -> Iterator[ManifestEntry]:
    for obj in iter_manifest(path, tolerate_torn=True):
        if obj["type"] == "file":
            yield ManifestEntry.from_json(obj)


def _dedupe(entries: Iterator[ManifestEntry]) -> dict[str, ManifestEntry]:
    """A resumed job may list a path twice (failed, then ok): the last entry wins."""
    out: dict[str, ManifestEntry] = {}
    for e in entries:
        out.pop(e.path, None)
        out[e.path] = e
    return out


def iter_manifest(path: str, *, tolerate_torn: bool = False) -> Iterator[dict[str, Any]]:
    """Lines of a manifest. ``tolerate_torn`` skips a line cut short by a killed writer
    (only ever the last line before a resume appended more)."""
    try:
        fh = open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as e:
        raise UsageError(f"cannot read manifest {path}: {e.strerror}") from e
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                if tolerate_torn:
                    continue
                raise UsageError(f"{path}:{lineno}: not a datamover manifest line ({e.msg})") from e
            if not isinstance(obj, dict) or "type" not in obj:
                raise UsageError(f"{path}:{lineno}: not a datamover manifest line")
            yield obj


def read_manifest(path: str) -> Manifest:
    header: dict[str, Any] | None = None
    entries: list[ManifestEntry] = []
    summary = None
    for obj in iter_manifest(path, tolerate_torn=True):
        kind = obj["type"]
        if kind == "header":
            if obj.get("format") != FORMAT:
                raise UsageError(f"{path}: not a datamover manifest (format {obj.get('format')!r})")
            if int(obj.get("format_version", 0)) > FORMAT_VERSION:
                raise UsageError(
                    f"{path}: manifest format version {obj['format_version']} is newer than "
                    "this datamover understands; upgrade datamover"
                )
            header = obj
        elif kind == "file":
            entries.append(ManifestEntry.from_json(obj))
        elif kind == "summary":
            summary = obj
    if header is None:
        raise UsageError(f"{path}: no manifest header; is this a datamover manifest?")
    return Manifest(header, list(_dedupe(iter(entries)).values()), summary)


def _sum_line(digest: str, path: str) -> str:
    if "\\" in path or "\n" in path or "\r" in path:
        escaped = path.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        return f"\\{digest}  {escaped}\n"
    return f"{digest}  {path}\n"


def export_sums(manifest: Manifest, out: IO[str]) -> int:
    """Write ``<alg>sum -c`` lines for every successfully copied file; returns the count."""
    alg = manifest.algorithm
    if alg not in _SUM_TOOLS:
        raise UsageError(
            f"a {alg} manifest has no coreutils checker; sha256sum export needs a manifest "
            "made with --checksum sha256, sha512 or md5"
        )
    count = 0
    for e in manifest.entries:
        if e.status == STATUS_OK and e.digest and e.kind in (None, "hardlink"):
            out.write(_sum_line(e.digest, e.path))
            count += 1
    return count
