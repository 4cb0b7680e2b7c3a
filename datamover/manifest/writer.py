"""Appending a manifest while a run goes: one line per file, written as each finishes.

Entries are appended as files finish (one ``write`` per line, no buffering), so a
manifest of a run that died still lists everything that completed; the summary line
is written at the end.

The manifest is one of datamover's own files (``datamover.ownfiles``): ``PATH.partial``
is created ``O_EXCL|O_NOFOLLOW`` and ``0600`` (a manifest lists every path of a tree),
and a symlink, a directory or another user's file at ``PATH.partial`` or ``PATH`` is
refused, never followed. A resumed run appends to ``PATH.partial`` only after opening
it ``O_NOFOLLOW``, checking with ``fstat`` that it is a regular file of the user's,
and reading it back through the checking reader: a corrupt one is refused, one that
belongs to another job is refused, and a line a killed writer left half-written at
the end is cut off (so only ever the last line of a manifest can be torn).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any

from datamover.errors import ManifestError, StateError
from datamover.manifest.format import ManifestEntry, utc_now
from datamover.manifest.reader import parse
from datamover.manifest.rules import MAX_LINE_BYTES, LineProblem, check_entry, plainly_valid
from datamover.ownfiles import PRIVATE_DIR, check_own, create_private, dir_problem, open_own

#: ``json.dumps(obj, ensure_ascii=False, separators=(",", ":"))`` without building an
#: encoder for every line.
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class ManifestWriter:
    """Thread-safe appender. Each line is written whole as it comes; ``close`` fsyncs.

    The file is written as ``PATH.partial`` and renamed to ``PATH`` by ``close``, so a
    manifest at ``PATH`` is always a finished one (with its summary line).
    """

    def __init__(self, path: str, header: Mapping[str, Any], *, resume: bool = False) -> None:
        """With ``resume``, entries are appended to an existing ``PATH.partial`` (a job
        picked up after a crash) instead of starting a new file. Raises
        ``StateError`` for a name that is not safe to use, ``ManifestError`` for a
        ``PATH.partial`` that can't be resumed."""
        self.path = path
        self._partial = path + ".partial"
        self._algorithm = str(header["algorithm"])
        self._part_algorithm = header.get("part_algorithm")
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, mode=PRIVATE_DIR, exist_ok=True)
        except OSError as e:
            raise StateError(f"cannot write manifest {path}: {dir_problem(path, e)}") from e
        check_own(path)  # replaced by close(): nothing else may stand there
        self._lock = threading.Lock()
        fd = self._open_resumed(header) if resume else None
        fresh = fd is None
        if fd is None:
            if check_own(self._partial):
                os.unlink(self._partial)  # an abandoned run's (``--new-job``)
            fd = create_private(self._partial, os.O_RDWR | os.O_APPEND)
        self._fd = fd
        if fresh:
            self._write(header)

    def _open_resumed(self, header: Mapping[str, Any]) -> int | None:
        """The descriptor of ``PATH.partial`` checked and ready to append to, or None
        when there is nothing to resume (no file, or not even a whole header line)."""
        try:
            fd = open_own(self._partial, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            return None
        try:
            with os.fdopen(os.dup(fd), "rb") as fh:
                if not fh.readline(MAX_LINE_BYTES + 1).endswith(b"\n"):
                    os.close(fd)  # killed before its header was out: start again
                    return None
                fh.seek(0)
                manifest = parse(fh, self._partial)
            theirs, ours = manifest.header.get("job_id"), header.get("job_id")
            if theirs != ours:
                raise ManifestError(
                    f"{self._partial} belongs to job {theirs!r}, not to the job being resumed "
                    f"({ours!r}); move it away or give another --manifest",
                    path=self._partial,
                )
            if manifest.algorithm != self._algorithm:
                raise ManifestError(
                    f"{self._partial} holds {manifest.algorithm} digests and this run "
                    f"computes {self._algorithm}; one manifest holds one algorithm: resume "
                    f"with --checksum {manifest.algorithm}, or give another --manifest",
                    path=self._partial,
                )
            if manifest.torn_at is not None:
                os.ftruncate(fd, manifest.torn_at)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def entries_so_far(self) -> list[ManifestEntry]:
        """Entries written (by this run and any run it resumed), last one per path,
        read back through the checking reader."""
        with self._lock, os.fdopen(os.dup(self._fd), "rb") as fh:
            fh.seek(0)
            return parse(fh, self._partial).entries

    def _write(self, obj: Mapping[str, Any]) -> None:
        data = (_ENCODE(obj) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def add(self, entry: ManifestEntry) -> None:
        """Append ``entry``. An entry the reader would refuse (a path that is not safe
        for its status, a malformed digest) is a bug in the caller: ``ValueError``."""
        line = entry.to_json()
        if not plainly_valid(entry, self._algorithm, self._part_algorithm):
            try:
                check_entry(line, self._algorithm, self._part_algorithm)
            except LineProblem as e:
                raise ValueError(
                    f"refusing to write a manifest entry the reader would refuse: {e}"
                ) from e
        with self._lock:
            self._write(line)

    def suspend(self, summary: Mapping[str, Any]) -> None:
        """End this run without finishing the manifest: the summary (with ``aborted``)
        is written to ``PATH.partial``, which a resumed run appends to."""
        with self._lock:
            self._write({"type": "summary", "ended": utc_now(), **summary})
            os.fsync(self._fd)
            os.close(self._fd)

    def close(self, summary: Mapping[str, Any]) -> None:
        with self._lock:
            self._write({"type": "summary", "ended": utc_now(), **summary})
            os.fsync(self._fd)
            os.close(self._fd)
        # rename never follows a link at PATH: whatever was planted there is replaced
        os.replace(self._partial, self.path)
