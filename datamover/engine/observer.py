"""Run-level hooks on top of the runner's ``Listener``: what progress bars, JSON
events and reports hang off.

``Observer`` adds hooks the engine calls from the caller's (scheduler) thread:
``run_started`` once the job is known, ``file_planned`` for every file the plan yields
(so a display can grow its totals while a large listing is still streaming),
``planning_finished`` when the plan is exhausted (totals are final from then on),
``file_skipped`` for files sync found unchanged, ``file_deleted``, the dry-run
``would_copy``/``would_delete``, and ``run_finished`` (also after a fatal error).
The ``Listener`` hooks (``file_started``, ``bytes_done``, ``file_finished``,
``part_retried``) still come from worker threads, so observers lock their state.

A plain ``Listener`` passed to the engine is wrapped by ``as_observer`` and keeps
working; ``Fanout`` sends every hook to several listeners.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from datamover.engine.plan import FileJob
from datamover.engine.results import FileResult, TransferReport
from datamover.errors import DatamoverError, UsageError
from datamover.manifest import ManifestEntry


class Listener:
    """Progress hooks, called from worker threads; override what you need."""

    def file_started(self, job: FileJob) -> None:
        pass

    def bytes_done(self, n: int, job: FileJob | None = None) -> None:
        """``n`` more bytes moved, for ``job``."""

    def file_finished(self, result: FileResult) -> None:
        pass

    def part_retried(self, job: FileJob, error: DatamoverError, attempt: int, delay: float) -> None:
        pass


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What a run is, as known when it starts."""

    operation: str
    job_id: str
    source: str
    destination: str
    manifest: str | None
    algorithm: str
    dry_run: bool = False
    resumed: bool = False
    options: dict[str, Any] = field(default_factory=dict)


class Observer(Listener):
    """Listener with run-level hooks; every hook is a no-op until overridden."""

    def bytes_done(self, n: int, job: FileJob | None = None) -> None:
        """``n`` more bytes read or written; ``job`` when the engine says whose."""

    def run_started(self, run: RunInfo) -> None:
        pass

    def file_planned(self, job: FileJob) -> None:
        pass

    def planning_finished(self) -> None:
        pass

    def file_skipped(self, entry: ManifestEntry) -> None:
        pass

    def file_deleted(self, path: str) -> None:
        pass

    def would_copy(self, job: FileJob) -> None:
        pass

    def would_delete(self, path: str) -> None:
        pass

    def run_finished(self, report: TransferReport, error: BaseException | None) -> None:
        pass


def check_listener(listener: Listener) -> Listener:
    """``listener``, if it is one (a caller's ``listener=``), else ``UsageError``: an
    object with none of the hooks would fail at the first one, in the middle of a
    run."""
    if not isinstance(listener, Listener):
        raise UsageError(
            "listener= takes an instance of a datamover.Listener or datamover.Observer "
            f"subclass, not {type(listener).__name__} (progress= takes a plain function)"
        )
    return listener


class Fanout(Observer):
    """Every hook goes to each listener in turn (plain ``Listener``s get theirs)."""

    def __init__(self, listeners: Iterable[Listener | None]) -> None:
        self.listeners = [check_listener(x) for x in listeners if x is not None]
        self.observers = [x for x in self.listeners if isinstance(x, Observer)]

    def file_started(self, job: FileJob) -> None:
        for x in self.listeners:
            x.file_started(job)

    def bytes_done(self, n: int, job: FileJob | None = None) -> None:
        for x in self.listeners:
            if isinstance(x, Observer):
                x.bytes_done(n, job)
            else:
                x.bytes_done(n)

    def file_finished(self, result: FileResult) -> None:
        for x in self.listeners:
            x.file_finished(result)

    def part_retried(self, job: FileJob, error: DatamoverError, attempt: int, delay: float) -> None:
        for x in self.listeners:
            x.part_retried(job, error, attempt, delay)

    def run_started(self, run: RunInfo) -> None:
        for x in self.observers:
            x.run_started(run)

    def file_planned(self, job: FileJob) -> None:
        for x in self.observers:
            x.file_planned(job)

    def planning_finished(self) -> None:
        for x in self.observers:
            x.planning_finished()

    def file_skipped(self, entry: ManifestEntry) -> None:
        for x in self.observers:
            x.file_skipped(entry)

    def file_deleted(self, path: str) -> None:
        for x in self.observers:
            x.file_deleted(path)

    def would_copy(self, job: FileJob) -> None:
        for x in self.observers:
            x.would_copy(job)

    def would_delete(self, path: str) -> None:
        for x in self.observers:
            x.would_delete(path)

    def run_finished(self, report: TransferReport, error: BaseException | None) -> None:
        for x in self.observers:
            x.run_finished(report, error)


def as_observer(listener: Listener | None) -> Observer:
    if isinstance(listener, Observer):
        return listener
    return Fanout([listener])


def planned(jobs: Iterable[FileJob], observer: Observer) -> Iterator[FileJob]:
    """Pass ``jobs`` through, telling ``observer`` about each and about the end."""
    for job in jobs:
        observer.file_planned(job)
        yield job
    observer.planning_finished()
