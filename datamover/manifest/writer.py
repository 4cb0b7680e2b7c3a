"""Appending a manifest while a run goes: one line per file, flushed as written.

Entries are appended (and flushed) as files finish, so a manifest of a run that died
still lists everything that completed; the summary line is written at the end.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

from datamover.errors import UsageError
from datamover.manifest.format import ManifestEntry, utc_now
from datamover.manifest.reader import dedupe, read_entries


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
        return list(dedupe(read_entries(self._partial)).values())

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
