"""Machine-readable run events: the ``--json`` lines and the library's ``progress=``
callbacks speak the same vocabulary.

Every event is a JSON-able dict with an ``"event"`` key:

=================  ===========================================================
``run_started``    ``operation, job_id, source, destination, manifest, dry_run,
                   resumed, time``
``file_started``   ``path, size``
``file_done``      ``path, size, digests {alg: hex}, seconds, retries``
``file_failed``    ``path, size, error, seconds, retries``
``file_skipped``   ``path, size, reason`` (``"unchanged"``: sync found it equal)
``file_deleted``   ``path`` (sync ``--delete``)
``would_copy``     ``path, size`` (dry run)
``would_delete``   ``path`` (dry run)
``part_retried``   ``path, attempt, delay, error``
``progress``       ``files_done, files_total, bytes_done, bytes_total, planning``
                   at most once per ``progress_interval`` seconds (totals grow while
                   ``planning`` is true)
``summary``        ``ok, operation, job_id, files_ok, files_failed, files_skipped,
                   files_resumed, bytes_resumed, bytes, bytes_moved, retries, deleted, seconds,
                   manifest, dry_run, time`` and ``error`` when the run stopped
=================  ===========================================================

Paths are relative to the run's source/destination roots. Error texts pass through
``datamover.redact``. Hooks arrive on worker threads; ``Tally`` keeps the counters
behind one lock, and ``EventStream`` emits under it, so events never interleave.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from datamover.engine.observer import Observer, RunInfo
from datamover.engine.plan import FileJob
from datamover.engine.results import FileResult, TransferReport
from datamover.errors import DatamoverError, UsageError
from datamover.manifest import ManifestEntry
from datamover.redact import redact

Event = dict[str, Any]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Snapshot:
    """A consistent copy of a ``Tally``'s counters."""

    files_total: int
    bytes_total: int
    files_done: int
    bytes_done: int
    files_failed: int
    files_skipped: int
    retries: int
    planning: bool
    elapsed: float
    rate: float  # bytes/s over the last few seconds
    in_flight: list[tuple[str, int, int | None, float]]  # (path, size, done|None, seconds)

    @property
    def eta(self) -> float | None:
        if self.planning or self.rate <= 0:
            return None
        return max(0.0, (self.bytes_total - self.bytes_done) / self.rate)


class Tally(Observer):
    """Thread-safe counters of a run; the base of progress displays and event
    streams. Totals count the files the plan has yielded so far (they grow while the
    listing streams: ``planning`` is true until the plan is exhausted)."""

    #: Seconds of history the transfer rate is averaged over.
    RATE_WINDOW = 10.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.lock = threading.Lock()
        self.clock = clock
        self.started = clock()
        self.files_total = 0
        self.bytes_total = 0
        self.files_done = 0
        self.bytes_done_total = 0
        self.files_failed = 0
        self.files_skipped = 0
        self.retries = 0
        self.planning = True
        self.run: RunInfo | None = None
        # path -> (size, bytes done or None when the engine does not say, start time)
        self._in_flight: dict[str, list[Any]] = {}
        self._samples: deque[tuple[float, int]] = deque()

    # -- hooks ------------------------------------------------------------------------

    def run_started(self, run: RunInfo) -> None:
        with self.lock:
            self.run = run
            self.started = self.clock()

    def file_planned(self, job: FileJob) -> None:
        with self.lock:
            self.files_total += 1
            self.bytes_total += job.info.size

    def planning_finished(self) -> None:
        with self.lock:
            self.planning = False

    def file_started(self, job: FileJob) -> None:
        with self.lock:
            self._in_flight[job.rel] = [job.info.size, None, self.clock()]

    def bytes_done(self, n: int, job: FileJob | None = None) -> None:
        with self.lock:
            self.bytes_done_total += n
            if job is not None:
                slot = self._in_flight.get(job.rel)
                if slot is not None:
                    slot[1] = (slot[1] or 0) + n

    def file_finished(self, result: FileResult) -> None:
        with self.lock:
            self._in_flight.pop(result.job.rel, None)
            self.files_done += 1
            if result.error is not None:
                self.files_failed += 1
                # Its bytes will never arrive: keep the bar's total honest.
                self.bytes_total -= max(0, result.job.info.size)

    def part_retried(self, job: FileJob, error: DatamoverError, attempt: int, delay: float) -> None:
        with self.lock:
            self.retries += 1

    def file_skipped(self, entry: ManifestEntry) -> None:
        with self.lock:
            self.files_skipped += 1

    # -- reading ----------------------------------------------------------------------

    def snapshot(self, largest: int = 4) -> Snapshot:
        """Counters now, with the ``largest`` files in flight (biggest first)."""
        with self.lock:
            now = self.clock()
            samples = self._samples
            samples.append((now, self.bytes_done_total))
            while len(samples) > 2 and now - samples[0][0] > self.RATE_WINDOW:
                samples.popleft()
            t0, b0 = samples[0]
            rate = (self.bytes_done_total - b0) / (now - t0) if now - t0 > 0.2 else 0.0
            if rate <= 0 and now - self.started > 0.2:
                rate = self.bytes_done_total / (now - self.started)
            flying = sorted(self._in_flight.items(), key=lambda kv: -kv[1][0])[:largest]
            return Snapshot(
                files_total=self.files_total,
                bytes_total=max(self.bytes_total, self.bytes_done_total),
                files_done=self.files_done,
                bytes_done=self.bytes_done_total,
                files_failed=self.files_failed,
                files_skipped=self.files_skipped,
                retries=self.retries,
                planning=self.planning,
                elapsed=now - self.started,
                rate=rate,
                in_flight=[(p, s[0], s[1], now - s[2]) for p, s in flying],
            )


class EventStream(Tally):
    """Turns hooks into event dicts (see the module docstring) for ``emit``."""

    def __init__(
        self,
        emit: Callable[[Event], None],
        *,
        progress_interval: float | None = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock)
        self._emit = emit
        self._emit_lock = threading.Lock()
        self.progress_interval = progress_interval
        self._last_progress = 0.0
        #: True once the summary event went out.
        self.summarised = False

    def emit(self, event: Event) -> None:
        with self._emit_lock:
            self._emit(event)

    def _maybe_progress(self) -> None:
        if self.progress_interval is None:
            return
        now = self.clock()
        if now - self._last_progress < self.progress_interval:
            return
        self._last_progress = now
        snap = self.snapshot(largest=0)
        self.emit(
            {
                "event": "progress",
                "files_done": snap.files_done,
                "files_total": snap.files_total,
                "bytes_done": snap.bytes_done,
                "bytes_total": snap.bytes_total,
                "planning": snap.planning,
            }
        )

    def run_started(self, run: RunInfo) -> None:
        super().run_started(run)
        self.emit(
            {
                "event": "run_started",
                "time": _now(),
                "operation": run.operation,
                "job_id": run.job_id,
                "source": redact(run.source),
                "destination": redact(run.destination),
                "manifest": run.manifest,
                "dry_run": run.dry_run,
                "resumed": run.resumed,
            }
        )

    def file_started(self, job: FileJob) -> None:
        super().file_started(job)
        self.emit({"event": "file_started", "path": job.rel, "size": job.info.size})

    def bytes_done(self, n: int, job: FileJob | None = None) -> None:
        super().bytes_done(n, job)
        self._maybe_progress()

    def file_finished(self, result: FileResult) -> None:
        super().file_finished(result)
        event: Event = {
            "path": result.job.rel,
            "size": result.size,
            "seconds": round(result.seconds, 6),
            "retries": result.retries,
        }
        if result.error is None:
            self.emit({"event": "file_done", **event, "digests": dict(result.digests)})
        else:
            self.emit({"event": "file_failed", **event, "error": redact(str(result.error))})
        self._maybe_progress()

    def part_retried(self, job: FileJob, error: DatamoverError, attempt: int, delay: float) -> None:
        super().part_retried(job, error, attempt, delay)
        self.emit(
            {
                "event": "part_retried",
                "path": job.rel,
                "attempt": attempt,
                "delay": round(delay, 3),
                "error": redact(str(error)),
            }
        )

    def file_skipped(self, entry: ManifestEntry) -> None:
        super().file_skipped(entry)
        self.emit(
            {"event": "file_skipped", "path": entry.path, "size": entry.size, "reason": "unchanged"}
        )

    def file_deleted(self, path: str) -> None:
        self.emit({"event": "file_deleted", "path": path})

    def would_copy(self, job: FileJob) -> None:
        self.emit({"event": "would_copy", "path": job.rel, "size": job.info.size})

    def would_delete(self, path: str) -> None:
        self.emit({"event": "would_delete", "path": path})

    def run_finished(self, report: TransferReport, error: BaseException | None) -> None:
        self.emit(summary_event(report, error))
        self.summarised = True

    def failed_to_start(self, error: BaseException) -> None:
        """A run that stopped before it began still ends its stream with a summary."""
        if not self.summarised:
            self.emit(
                {"event": "summary", "time": _now(), "ok": False, "error": redact(str(error))}
            )
            self.summarised = True


def summary_event(report: TransferReport, error: BaseException | None = None) -> Event:
    event: Event = {
        "event": "summary",
        "time": _now(),
        "ok": report.ok and error is None,
        "operation": report.operation,
        "job_id": report.job_id,
        "files_ok": report.files_ok,
        "files_failed": report.files_failed,
        "files_skipped": report.files_skipped,
        "files_resumed": report.files_resumed,
        "files_unverified": report.files_unverified,
        "bytes_resumed": report.bytes_resumed,
        "bytes": report.bytes,
        "bytes_moved": report.bytes_moved,
        "retries": report.retries,
        "deleted": len(report.deleted),
        "seconds": round(report.seconds, 3),
        "manifest": report.manifest,
        "dry_run": report.dry_run,
    }
    if error is not None:
        event["error"] = redact(str(error) or type(error).__name__)
    return event


def discard_output(out: IO[str]) -> None:
    """Point ``out``'s descriptor at /dev/null, so that what is still buffered for a
    closed pipe, and the interpreter's flush at exit, fail no more."""
    try:
        fd = out.fileno()
    except (OSError, ValueError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


class JsonLines(EventStream):
    """``--json``: one compact JSON object per line on ``out``, flushed per event."""

    def __init__(self, out: IO[str], *, progress_interval: float | None = 1.0) -> None:
        closed: list[bool] = []

        def write(event: Event) -> None:
            if closed:
                return
            try:
                out.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
                out.flush()
            except BrokenPipeError:
                # The reader went away: the events end here, the run is not broken by
                # it (the CLI's SIGPIPE handler stops it the orderly way).
                closed.append(True)
                discard_output(out)

        super().__init__(write, progress_interval=progress_interval)


def callback_listener(
    callback: Callable[[Mapping[str, Any]], object], *, progress_interval: float | None = 1.0
) -> EventStream:
    """The library's ``progress=callable``: ``callback`` gets each event dict, one at a
    time (calls never overlap), on whichever thread produced it; keep it quick."""
    if not callable(callback):
        raise UsageError(
            f"progress must be a function taking one event dict, not {type(callback).__name__}"
        )

    def emit(event: Event) -> None:
        callback(event)

    return EventStream(emit, progress_interval=progress_interval)
