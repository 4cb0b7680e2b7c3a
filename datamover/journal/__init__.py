"""The job journal (SQLite): every run's plan, per-file state and resumable uploads,
so a killed job resumes where it was; ``admin`` lists, shows and forgets jobs."""

from datamover.journal.db import (
    FileRecord,
    JobRecord,
    Journal,
    default_state_dir,
    job_key,
    journal_path,
)

__all__ = [
    "FileRecord",
    "JobRecord",
    "Journal",
    "default_state_dir",
    "job_key",
    "journal_path",
]
