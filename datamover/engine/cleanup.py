"""``datamover cleanup URL [--older-than AGE] [--dry-run]``: remove what unfinished
uploads left behind under a URL.

Intended CLI behaviour: ``cleanup`` lists the pending uploads under the URL's key
prefix (S3 multipart uploads, blobs holding uncommitted Azure blocks, groups of GCS
temporary part objects, POSIX ``.NAME.dmtmp-*`` temp files) and aborts each one older
than ``--older-than`` (a duration such as ``30m``, ``12h``, ``7d``; default: every
one, including uploads a running transfer is still writing, so give an age whenever
another datamover may be running against that place). It prints one line per upload
(URL, age, size, and ``aborted``, ``would abort`` with ``--dry-run``, ``skipped:
<reason>`` or ``failed: <reason>``), then a summary. Exit 0 when nothing failed, 1
when some upload could not be aborted, 2 for a usage or fatal store error (a store
that can't list pending uploads at all is a usage error). Committed objects are never
touched. Uploads a journaled job may still resume are aborted like any other; that job
then simply sends those parts again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from datamover.errors import DatamoverError, Unsupported, UsageError
from datamover.stores.base import PendingUpload, Store

__all__ = ["CleanupEntry", "CleanupReport", "cleanup_store"]

Action = Literal["aborted", "would-abort", "skipped", "failed"]


@dataclass(frozen=True, slots=True)
class CleanupEntry:
    """One pending upload and what cleanup did with it. ``age`` is seconds since it
    started (None when the store can't tell); ``reason`` says why it was skipped or
    why aborting it failed; ``url`` is the upload's object, as a URL (or path)."""

    upload: PendingUpload
    action: Action
    age: float | None
    reason: str | None = None
    url: str = ""


@dataclass(slots=True)
class CleanupReport:
    url: str
    dry_run: bool
    older_than: float | None
    entries: list[CleanupEntry] = field(default_factory=list)

    def _with(self, *actions: Action) -> list[CleanupEntry]:
        return [e for e in self.entries if e.action in actions]

    @property
    def found(self) -> list[PendingUpload]:
        return [e.upload for e in self.entries]

    @property
    def aborted(self) -> list[CleanupEntry]:
        """Aborted (or, in a dry run, those that would be)."""
        return self._with("aborted", "would-abort")

    @property
    def skipped(self) -> list[CleanupEntry]:
        return self._with("skipped")

    @property
    def failed(self) -> list[CleanupEntry]:
        return self._with("failed")

    @property
    def bytes_found(self) -> int:
        return sum(e.upload.size or 0 for e in self.entries)

    @property
    def ok(self) -> bool:
        return not self.failed


def cleanup_store(
    store: Store,
    prefix: str,
    *,
    older_than: float | None = None,
    dry_run: bool = False,
    clock: Callable[[], float] = time.time,
) -> CleanupReport:
    """Find the unfinished uploads whose key starts with ``prefix`` and abort those that
    started more than ``older_than`` seconds ago (all of them when None); with
    ``dry_run`` only report. An upload whose start time is unknown is kept when an age
    is given. Failures to abort one upload are recorded and the rest go on; fatal store
    errors (credentials, missing bucket) raise. Raises ``UsageError`` when the store
    can't list unfinished uploads. (``datamover.job.cleanup`` opens the store of a
    URL and calls this.)"""
    if older_than is not None and older_than < 0:
        raise UsageError(f"--older-than must not be negative (got {older_than})")
    report = CleanupReport(store.url(prefix), dry_run, older_than)
    now = clock()
    try:
        uploads = list(store.list_pending_uploads(prefix))
    except Unsupported as e:
        raise UsageError(f"{store.url(prefix)}: cleanup is not supported here ({e})") from e
    for upload in uploads:
        age = None if upload.initiated is None else max(0.0, now - upload.initiated)
        entry = _decide(upload, age, older_than)
        if entry is None:
            entry = _abort(store, upload, age, dry_run)
        report.entries.append(replace(entry, url=store.url(upload.key)))
    return report


def _decide(
    upload: PendingUpload, age: float | None, older_than: float | None
) -> CleanupEntry | None:
    """A ``skipped`` entry, or None when the upload is to be aborted."""
    if upload.cannot_abort:
        return CleanupEntry(upload, "skipped", age, upload.cannot_abort)
    if older_than is None:
        return None
    if age is None:
        return CleanupEntry(upload, "skipped", age, "its age is unknown")
    if age < older_than:
        return CleanupEntry(
            upload, "skipped", age, f"started {age:.0f} s ago, not older than {older_than:.0f} s"
        )
    return None


def _abort(store: Store, upload: PendingUpload, age: float | None, dry_run: bool) -> CleanupEntry:
    if dry_run:
        return CleanupEntry(upload, "would-abort", age)
    try:
        store.abort_pending_upload(upload)
    except Unsupported as e:
        return CleanupEntry(upload, "skipped", age, str(e))
    except DatamoverError as e:
        if e.fatal:
            raise
        return CleanupEntry(upload, "failed", age, str(e))
    return CleanupEntry(upload, "aborted", age)
