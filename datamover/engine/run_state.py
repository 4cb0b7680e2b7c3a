"""A run's view of the journal: what is already done, what can be resumed, and the
hooks the runner calls as files and parts complete."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from datamover.engine.plan import FileJob
from datamover.journal import FileRecord, Journal
from datamover.stores.base import ObjectInfo, PartReceipt, ResumableWriter

_count_lock = threading.Lock()


def _same_source(rec: FileRecord, info: ObjectInfo) -> bool:
    """The source is what it was when the journal recorded it: same size, and the same
    ETag where the store has one, else the same mtime."""
    if rec.size != info.size:
        return False
    if info.etag:
        return rec.etag == info.etag
    return rec.mtime == info.mtime


@dataclass(slots=True)
class JobContext:
    journal: Journal
    job_id: str
    resumed: bool = False
    skipped_done: int = 0
    skipped_bytes: int = 0
    #: Bytes of parts a previous attempt wrote that the destination still holds.
    part_bytes: int = 0

    def pending(self, jobs: Iterable[FileJob]) -> Iterator[FileJob]:
        """Jobs minus those a previous attempt of this job finished from the same
        source; each remaining one is recorded in the journal's plan."""
        for job in jobs:
            if self.resumed:
                rec = self.journal.lookup(self.job_id, job.rel)
                if rec is not None and rec.state == "done" and _same_source(rec, job.info):
                    self.skipped_done += 1
                    self.skipped_bytes += job.info.size
                    continue
            self.journal.planned(self.job_id, job.rel, job.info.size, job.info.mtime, job.info.etag)
            yield job

    def partial(self, job: FileJob) -> FileRecord | None:
        """A multipart upload of this file from a previous attempt, if its source is
        unchanged."""
        if not self.resumed:
            return None
        rec = self.journal.lookup(self.job_id, job.rel)
        if rec is None or rec.state != "writing" or rec.writer is None:
            return None
        return rec if _same_source(rec, job.info) else None

    def writing(self, job: FileJob, part_size: int, writer: ResumableWriter) -> None:
        info = job.info
        self.journal.writing(
            self.job_id, job.rel, info.size, info.mtime, info.etag, part_size, writer.state()
        )

    def kept(self, receipts: Iterable[PartReceipt]) -> None:
        """Parts of a partly written file found intact: counted as already done."""
        n = sum(r.size for r in receipts)
        with _count_lock:
            self.part_bytes += n

    def part(self, job: FileJob, receipt: PartReceipt, digest: str) -> None:
        self.journal.part(self.job_id, job.rel, receipt, digest)

    def finished(self, job: FileJob, ok: bool, digest: str | None, error: str | None) -> None:
        info = job.info
        self.journal.finished(
            self.job_id,
            job.rel,
            "done" if ok else "failed",
            info.size,
            info.mtime,
            info.etag,
            digest,
            error,
        )
