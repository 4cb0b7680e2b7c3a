"""The end-of-run JSON report (``--report PATH``; ``report=`` in the library).

One JSON document, valid against ``manifests/report.schema.json`` (format
``datamover-report`` version 1): what ran (operation, roots, job id, manifest, options,
filters), provenance (tool version, Python, host, user, command line with secrets
scrubbed, start and end times), totals, and one record per file this run handled
(status ``ok``/``failed``/``skipped``/``planned``, size, digests, retries, seconds,
error), plus deleted paths. It is written when the run ends, also when it stops on a
fatal error (``status: "aborted"``), atomically: a private temp file (``mkstemp``:
``O_EXCL``, ``0600``) in the same directory, renamed over the path (which replaces,
never follows, whatever is there; a symlink there is refused before the run).

Unlike the manifest, which proves a copy and survives crashes line by line, the report
describes one *run* for workflow systems and humans; files finished by an earlier run
that this one resumed are counted (``files_resumed``), not listed.

Memory: one small record per file handled is kept until the end (~200 bytes each).
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import socket
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from datamover._version import __version__
from datamover.engine.observer import Observer, RunInfo
from datamover.engine.plan import FileJob
from datamover.engine.results import FileResult, TransferReport
from datamover.errors import UsageError
from datamover.manifest import ManifestEntry
from datamover.ownfiles import check_own
from datamover.redact import redact, scrub_argv

FORMAT = "datamover-report"
FORMAT_VERSION = 1


def _utc(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def provenance(command_line: Sequence[str] = ()) -> dict[str, Any]:
    """Who ran what where. ``command_line`` defaults to this process's argv; either
    way it is scrubbed of secrets."""
    argv = list(command_line) if command_line else [os.path.basename(sys.argv[0]), *sys.argv[1:]]
    out: dict[str, Any] = {
        "tool": "datamover",
        "tool_version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command_line": scrub_argv(argv),
    }
    try:
        out["user"] = getpass.getuser()
    except (KeyError, OSError):
        pass
    return out


class ReportCollector(Observer):
    """Collects per-file records; ``write`` (called by ``run_finished``) saves them."""

    def __init__(
        self,
        path: str,
        *,
        command_line: Sequence[str] = (),
        filters: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.command_line = tuple(command_line)
        self.filters = dict(filters or {})
        self.started = datetime.now(UTC)
        self.run: RunInfo | None = None
        self._lock = threading.Lock()
        self._files: list[dict[str, Any]] = []
        self._retries: dict[str, int] = {}
        self.written = False
        _check_writable(path)

    def run_started(self, run: RunInfo) -> None:
        self.run = run

    def part_retried(self, job: FileJob, error: Any, attempt: int, delay: float) -> None:
        with self._lock:
            self._retries[job.rel] = self._retries.get(job.rel, 0) + 1

    def file_finished(self, result: FileResult) -> None:
        record: dict[str, Any] = {
            "path": result.job.rel,
            "status": "ok" if result.error is None else "failed",
            "size": result.size,
            "seconds": round(result.seconds, 6),
        }
        if result.digests:
            record["digests"] = dict(result.digests)
        if result.job.kind != "file":
            record["kind"] = result.job.kind
        if result.error is None and result.verified is not None:
            record["verified"] = result.verified
        if result.error is not None:
            record["error"] = redact(str(result.error))
        with self._lock:
            # Whole-file redos are reported as retries too (part_retried counts them).
            retries = max(result.retries, self._retries.pop(result.job.rel, 0))
            if retries:
                record["retries"] = retries
            self._files.append(record)

    def file_skipped(self, entry: ManifestEntry) -> None:
        record: dict[str, Any] = {"path": entry.path, "status": "skipped", "size": entry.size}
        if entry.digest and self.run is not None:
            record["digests"] = {self.run.algorithm: entry.digest}
        with self._lock:
            self._files.append(record)

    def would_copy(self, job: FileJob) -> None:
        with self._lock:
            self._files.append({"path": job.rel, "status": "planned", "size": job.info.size})

    def run_finished(self, report: TransferReport, error: BaseException | None) -> None:
        self.write(report, error)

    def document(self, report: TransferReport, error: BaseException | None) -> dict[str, Any]:
        ended = datetime.now(UTC)
        run = self.run
        if error is not None:
            status = "aborted"
        elif report.dry_run:
            status = "dry_run"
        else:
            status = "ok" if report.ok else "failed"
        prov = provenance(self.command_line)
        prov["started"] = _utc(self.started)
        prov["ended"] = _utc(ended)
        with self._lock:
            files = sorted(self._files, key=lambda r: r["path"])
        doc: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "status": status,
            "operation": report.operation,
            "job_id": report.job_id,
            "source": redact(report.source),
            "destination": redact(report.destination),
            "manifest": report.manifest,
            "dry_run": report.dry_run,
            "resumed": report.resumed,
            "algorithm": run.algorithm if run else None,
            "options": run.options if run else {},
            "filters": self.filters,
            "provenance": prov,
            "totals": {
                "files_ok": report.files_ok,
                "files_failed": report.files_failed,
                "files_skipped": report.files_skipped,
                "files_resumed": report.files_resumed,
                "files_unverified": report.files_unverified,
                "files_deleted": len(report.deleted),
                "bytes": report.bytes,
                "bytes_moved": report.bytes_moved,
                "retries": report.retries,
                "seconds": round(report.seconds, 3),
            },
            "files": files,
            "deleted": list(report.deleted),
        }
        if error is not None:
            doc["error"] = redact(str(error) or type(error).__name__)
        return doc

    def write(self, report: TransferReport, error: BaseException | None = None) -> None:
        write_json_atomic(self.path, self.document(report, error))
        self.written = True


def _check_writable(path: str) -> None:
    """Fail before the run, not after it, when the report can't be written, or when
    something other than a file of the user's (a planted symlink, a directory) stands
    at its name (``ownfiles.check_own``)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"--report {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"--report {path}: directory {directory} is not writable")
    check_own(path)


def write_json_atomic(path: str, doc: Mapping[str, Any]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(prefix=".report-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, ensure_ascii=False, indent=1)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
