"""``datamover jobs list|show|clean``: the journal, seen from the outside.

(``jobs resume`` runs a job, so it goes through the front door: ``datamover.job``.)
"""

from __future__ import annotations

import os

from datamover.errors import DatamoverError, StateError, UsageError
from datamover.journal.db import JobRecord, Journal, journal_path
from datamover.journal.lock import is_live
from datamover.stores import open_store

_FINISHED = ("done",)


def _journal(directory: str | None) -> Journal:
    return Journal(journal_path(directory))


def has_journal(directory: str | None = None) -> bool:
    """Whether the state directory holds a journal. Commands that only look (``jobs
    list|show|resume|clean``) ask this first and never create the directory or the
    journal: a mistyped ``--state-dir`` is not made."""
    return os.path.lexists(journal_path(directory))  # a link at the name: Journal refuses it


def no_jobs_note(directory: str | None = None) -> str:
    """What ``jobs list`` says when it lists nothing."""
    if has_journal(directory):
        return f"no jobs in {journal_path(directory)}"
    return f"no journal in {os.path.dirname(journal_path(directory))} (no jobs yet)"


def no_journal(job_id: str, directory: str | None) -> UsageError:
    where = os.path.dirname(journal_path(directory))
    return UsageError(f"no job {job_id!r}: no journal in {where} (no jobs yet); check --state-dir")


def list_jobs(directory: str | None = None) -> list[JobRecord]:
    if not has_journal(directory):
        return []
    journal = _journal(directory)
    try:
        return journal.jobs()
    finally:
        journal.close()


def _find(journal: Journal, job_id: str) -> JobRecord:
    job = journal.job(job_id)
    if job is None:
        raise UsageError(f"no job {job_id!r} in {journal.path}; see `datamover jobs list`")
    return job


def show_job(job_id: str, directory: str | None = None) -> tuple[JobRecord, dict[str, int]]:
    if not has_journal(directory):
        raise no_journal(job_id, directory)
    journal = _journal(directory)
    try:
        job = _find(journal, job_id)
        return job, journal.file_counts(job.job_id)
    finally:
        journal.close()


def clean_jobs(
    job_id: str | None,
    directory: str | None = None,
    *,
    include_unfinished: bool = False,
    aborted: list[str] | None = None,
    left: list[str] | None = None,
) -> int:
    """Forget finished jobs (or the one named). With ``include_unfinished``, unfinished
    ones too, after aborting the uploads they still hold open (each one's URL is
    appended to ``aborted``). Each job is cleaned on its own: one whose destination
    can't be opened or cleaned (no credentials, unreachable) stays in the journal, to
    be cleaned later, and a line saying why and what to do is appended to ``left``
    (raised as the error when ``left`` is None). A job a live run holds
    (``lock.is_live``) is never touched: named, it is a ``UsageError``; otherwise it is
    passed over."""
    if not has_journal(directory):
        if job_id:
            raise no_journal(job_id, directory)
        return 0
    journal = _journal(directory)
    state_dir = os.path.dirname(journal.path)
    removed = 0
    try:
        if job_id:
            try:
                jobs = [_find(journal, job_id)]
            except StateError:  # a record that no longer decodes can still be forgotten
                if journal.delete_job(job_id):
                    return 1
                raise
        else:
            jobs = journal.jobs()
        for job in jobs:
            unfinished = job.state not in _FINISHED
            if unfinished and not (include_unfinished or job_id):
                continue
            if is_live(state_dir, job.job_key):
                if job_id:
                    raise UsageError(
                        f"job {job.job_id} is running now (another process holds its lock); "
                        "stop that run first, or leave the job alone"
                    )
                continue
            if unfinished:
                done: list[str] = []
                try:
                    _abort_writers(journal, job, done)
                except DatamoverError as e:
                    if left is None:
                        raise
                    left.append(
                        f"job {job.job_id}: its uploads on {job.destination} were not "
                        f"cleaned: {e}; once that is fixed, run `datamover jobs clean "
                        f"{job.job_id}` again"
                    )
                    continue  # kept in the journal: its leftovers are still to clean
                finally:
                    if aborted is not None:
                        aborted.extend(done)
            journal.delete_job(job.job_id)
            removed += 1
    finally:
        journal.close()
    return removed


def _abort_writers(journal: Journal, job: JobRecord, done: list[str]) -> None:
    """Abort the uploads (S3 multipart uploads, Azure blocks, GCS part objects, POSIX
    temp files) the journal says ``job`` holds open: all of them listed first, then
    each aborted. Appends to ``done`` the URLs of those aborted (gone already: not
    listed), as it goes, so they are known even when a later step raises."""
    store, root = open_store(job.destination)
    with store:
        open_writers = list(journal.writers(job.job_id))
        for rel, size, part_size, state in open_writers:
            try:
                store.resume_writer(root + rel, size=size, part_size=part_size, state=state).abort()
                done.append(store.url(root + rel))
            except DatamoverError as e:
                if e.fatal:
                    raise
        # Temp files of whole-file writes (and of writers killed before they were
        # journaled) carry names derived from the job: remove those too.
        store.discard_job_pieces(job.job_id, [root + rel for rel in journal.unfinished(job.job_id)])
