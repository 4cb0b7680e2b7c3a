"""``datamover jobs list|show|clean``: the journal, seen from the outside.

(``jobs resume`` runs a job, so it goes through the front door: ``datamover.job``.)
"""

from __future__ import annotations

from datamover.errors import DatamoverError, StateError, UsageError
from datamover.journal.db import JobRecord, Journal, journal_path
from datamover.stores import open_store

_FINISHED = ("done",)


def _journal(directory: str | None) -> Journal:
    return Journal(journal_path(directory))


def list_jobs(directory: str | None = None) -> list[JobRecord]:
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
    journal = _journal(directory)
    try:
        job = _find(journal, job_id)
        return job, journal.file_counts(job.job_id)
    finally:
        journal.close()


def clean_jobs(
    job_id: str | None, directory: str | None = None, *, include_unfinished: bool = False
) -> int:
    """Forget finished jobs (or the one named). With ``include_unfinished``, unfinished
    ones too, after aborting the uploads they still hold open."""
    journal = _journal(directory)
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
            if unfinished:
                _abort_writers(journal, job)
            journal.delete_job(job.job_id)
            removed += 1
    finally:
        journal.close()
    return removed


def _abort_writers(journal: Journal, job: JobRecord) -> None:
    store, root = open_store(job.destination)
    with store:
        for rel, size, part_size, state in journal.writers(job.job_id):
            try:
                store.resume_writer(root + rel, size=size, part_size=part_size, state=state).abort()
            except DatamoverError as e:
                if e.fatal:
                    raise
