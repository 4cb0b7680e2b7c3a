"""One file written by parts: its writer, its parts in flight, its whole-file digest.

The runner (``runner.py``) schedules a ``LargeFile``'s part tasks under its byte
budget; each part is read into a pool buffer, hashed (``PartDigests``; the whole-file
``OrderedDigest`` in stream order), written, and journaled; the task that settles the
last part finalizes the file: digest checked against what the source carries, source
checked unchanged, writer committed (or aborted on any failure). A resumed file reopens
its writer and skips parts the store still holds with the journaled digest.

Into a writer that can read its unfinished file (a POSIX temp file, ``read_at``) with
``--unverified readback``, the whole-file digest is not taken in stream order: the
file is read back before the commit and the digest computed there, once, checking
each part's digest against the one taken as it arrived (``engine.proof.PrefixReadBack``);
nothing then holds a part's buffer for order. That read-back runs while later parts
still arrive: a part task that has written its part reads back the contiguous run of
written parts (one task at a time), so the commit waits only for the last few parts'.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from datamover.checksums import OrderedDigest, PartDigests
from datamover.crcfast import crc32c as _crc32c
from datamover.engine.plan import LINK_MAX, FileJob, is_symlink
from datamover.engine.proof import READBACK, PrefixReadBack, ReadAt
from datamover.engine.results import FileResult
from datamover.errors import (
    DatamoverError,
    DigestMismatch,
    IntegrityError,
    InvalidMetadata,
    RunStopped,
    SourceChanged,
)
from datamover.stores.base import ChunkWriter, ResumableWriter, Store

if TYPE_CHECKING:
    from datamover.engine.runner import Runner

#: Metadata naming a Lustre file's stripe size: parts are aligned to whole stripes.
ALIGN_KEY = "lustre-stripe-size"
#: Confirming a part's bytes on a redo (``LargeFile._confirm_range``): more reads of a
#: range before it is split, into how many pieces, how many times at most, and the
#: smallest piece. An 8 MiB part goes down to 128 KiB pieces.
CONFIRM_TRIES = 2
CONFIRM_SPLIT = 4
CONFIRM_DEPTH = 3
CONFIRM_MIN_PIECE = 64 * 1024
#: Read-back buffer for a writer's unfinished file (``PrefixReadBack``).
LOCAL_READBACK = 1024 * 1024


def _stripe_size(raw: str | None, where: str) -> int:
    """The stripe size parts are aligned to (0: none). The metadata is the source's
    word: a value that is no size fails this file, not the run."""
    if raw is None or raw == "":
        return 0
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= 1 << 32:
        raise InvalidMetadata(
            f"{where}: metadata {ALIGN_KEY}={raw[:40]!r} is not a stripe size; refusing this file"
        )
    return int(raw)


def check_expected(
    job: FileJob, store: Store, expected: Mapping[str, str], computed: Mapping[str, str]
) -> None:
    for alg, value in computed.items():
        want = expected.get(alg)
        if want and want.lower() != value:
            raise DigestMismatch(
                f"{store.url(job.src_key)}: {alg} of the bytes read is {value}, "
                f"the source says {want.lower()}",
                key=job.src_key,
            )


class LargeFile:
    """State of one multipart file while its parts are in flight."""

    def __init__(self, runner: Runner, job: FileJob) -> None:
        self.r = runner
        self.job = job
        self.started = time.monotonic()
        self.retries = [0]
        self.result = FileResult(job, job.info.size)
        self.info = job.info
        self.writer: ChunkWriter | None = None
        self.lock = threading.Lock()
        self.error: DatamoverError | None = None
        self.count = 0
        self.part_size = 0
        #: Pool buffers of the parts in flight, handed back when a part settles.
        self.buffers: dict[int, bytearray] = {}
        #: The writer's reader of its unfinished file, when the digest waits for it.
        self.read_at: ReadAt | None = None
        #: The read-back of the written parts, with ``read_at``.
        self.readback: PrefixReadBack | None = None

    def open(self) -> bool:
        """Stat the source, size the parts, open the writer. False if the file failed."""
        r, job = self.r, self.job
        try:
            r.listener.file_started(job)
            self.info = r.retrying(job, lambda: r.src.stat(job.src_key), self.retries)
            size = self.info.size
            # The file as this attempt reads it (a redo after a change sees the new size).
            self.result.size = size
            # Only the stat showed it is a link: a link is never written by parts.
            link = is_symlink(self.info) and size <= LINK_MAX
            if link and r.link_found(dataclasses.replace(job, info=self.info)):
                return False
            limits = r.dst.limits if r.dst is not None else r.src.limits
            self.part_size = limits.choose_part_size(size, r.requested_part_size)
            align = _stripe_size(self.info.metadata.get(ALIGN_KEY), r.src.url(job.src_key))
            if align and self.part_size % align:
                # Whole stripes per part: consecutive parts read from different OSTs.
                aligned = -(-self.part_size // align) * align
                if aligned <= limits.max_part_size:
                    self.part_size = aligned
            self.count = max(1, -(-size // self.part_size))
            self.digest = OrderedDigest(r.algorithms_for(self.info.checksums))
            self.part_digests: list[str] = [""] * self.count
            self.pending = [2] * self.count  # each part: written + hashed
            self.costs = [0] * self.count
            self.unsettled = self.count
            self.resumed: dict[int, str] = {}
            if r.dst is not None:
                self.writer = self._resume() or self._open_new()
            self.read_at = self._unfinished_reader()
            self.readback = self._prefix_read_back()
            return True
        except DatamoverError as e:
            self.result.error = e
            self.result.seconds = time.monotonic() - self.started
            self.r.finish(self.result)
            return False

    def _unfinished_reader(self) -> ReadAt | None:
        """The writer's ``read_at`` when the run reads its writes back and this writer
        can read its unfinished file (a POSIX temp file): then the whole-file digest
        is computed once, in that read-back before the commit (``engine.proof``),
        instead of over the parts as they stream in. None otherwise."""
        prover = self.r.prover
        if prover is None or prover.policy != READBACK or self.writer is None:
            return None
        read_at: ReadAt | None = getattr(self.writer, "read_at", None)
        return read_at

    def _prefix_read_back(self) -> PrefixReadBack | None:
        """The read-back of the unfinished file (``engine.proof``), with ``read_at``."""
        r, job, prover, read_at = self.r, self.job, self.r.prover, self.read_at
        if read_at is None:
            return None
        assert prover is not None and r.dst is not None
        size = self.info.size
        return PrefixReadBack(
            read_at,
            size=size,
            part_size=self.part_size,
            received=self.part_digests,
            part_algorithm=r.part_algorithm,
            algorithms=self.digest.algorithms,
            # Any transfer thread may read back: 1 MiB reads from the page cache cost
            # no more CPU than 4 MiB ones, and 8 threads hold 8 MiB, not 32.
            buffer=lambda: prover.buffer(min(size, LOCAL_READBACK - 1)),
            where=r.dst.url(job.dst_key),
            key=job.dst_key,
        )

    def _open_new(self) -> ChunkWriter:
        r, job, dst = self.r, self.job, self.r.dst
        assert dst is not None
        # A store may take metadata only here (S3): the digest goes with it when the
        # source already carries one; the bytes read are still checked against it
        # before the commit, so a wrong one is never committed.
        known = self.info.checksums.get(r.algorithm, "")
        meta = {k: v for k, v in r.dst_metadata(self.info, known).items() if v}
        writer = r.retrying(
            job,
            lambda: dst.open_writer(
                job.dst_key, size=self.info.size, part_size=self.part_size, metadata=meta
            ),
            self.retries,
        )
        if r.job is not None and isinstance(writer, ResumableWriter):
            r.job.writing(job, self.part_size, writer)
        return writer

    def _resume(self) -> ChunkWriter | None:
        """Reopen a previous attempt's upload; keep the parts the store still holds
        with the journaled receipts. None when there is nothing to resume."""
        r, job, dst = self.r, self.job, self.r.dst
        rec = r.job.partial(job) if r.job is not None else None
        if dst is None or rec is None or rec.writer is None or rec.part_size != self.part_size:
            return None
        state = rec.writer
        try:
            writer = dst.resume_writer(
                job.dst_key, size=self.info.size, part_size=self.part_size, state=state
            )
            valid = writer.verify_parts({i: receipt for i, (receipt, _) in rec.parts.items()})
        except DatamoverError as e:
            if e.fatal:
                raise
            return None
        self.resumed = {i: rec.parts[i][1] for i in valid}
        if r.job is not None:
            r.job.kept(rec.parts[i][0] for i in valid)
        for i in valid:
            assert r.job is not None
            r.job.part(job, rec.parts[i][0], rec.parts[i][1])
        return writer

    def _read_resumed(self, index: int, buf: memoryview) -> bool:
        """Fill ``buf`` for a part the store already holds: from the writer when it can
        read back (a POSIX temp file: no network), else from the source. True when the
        bytes match the journaled part digest, so the part need not be written."""
        r, job, writer = self.r, self.job, self.writer
        read_back = getattr(writer, "read_part", None)
        offset = index * self.part_size
        if read_back is not None:
            n = read_back(index, buf)
        else:
            n = r.retrying(
                job,
                lambda: r.src.readinto(job.src_key, offset, buf, expect=self.info),
                self.retries,
            )
        if n != len(buf):
            return False
        return PartDigests(buf).get(r.part_algorithm).hex() == self.resumed[index]

    def _confirm_read(self, index: int, buf: memoryview) -> None:
        """After a whole-file digest mismatch (a redo), a part is trusted only once two
        reads of it agree: a part corrupted on the way in is read again, rather than
        the whole file being redone again. Costs one more read per part, on redo
        attempts only. Reads that keep disagreeing are split (``_confirm_range``)."""
        self._confirm_range(index * self.part_size, buf, 0)

    def _confirm_range(self, offset: int, buf: memoryview, depth: int) -> None:
        """Make ``buf`` (one read of the bytes at ``offset``) hold bytes two reads agree
        on (any two: a corrupted read never matches another one). A range whose reads
        keep disagreeing is re-read in ``CONFIRM_SPLIT`` smaller pieces, each confirmed
        the same way: a fault per forwarded chunk hits a long read far more often than
        a short one. Bounded: ``CONFIRM_TRIES`` more reads of a range before it is
        split, at most ``CONFIRM_DEPTH`` splits (pieces of at least
        ``CONFIRM_MIN_PIECE`` bytes), and ``retry.attempts`` reads at the last level."""
        r, job = self.r, self.job
        splittable = depth < CONFIRM_DEPTH and len(buf) >= 2 * CONFIRM_MIN_PIECE
        tries = CONFIRM_TRIES if splittable else max(r.retry.attempts, CONFIRM_TRIES)
        check = memoryview(bytearray(len(buf)))
        seen = {_crc32c(buf)}
        for _ in range(tries):
            n = r.retrying(
                job,
                lambda: r.src.readinto(job.src_key, offset, check, expect=self.info),
                self.retries,
            )
            again = _crc32c(check[:n])
            if n == len(buf) and again in seen:
                buf[:] = check
                return
            self.retries[0] += 1
            if n == len(buf):
                seen.add(again)
                buf[:] = check  # the newest read: its pieces are the next candidates
        if splittable:
            step = -(-len(buf) // CONFIRM_SPLIT)
            for lo in range(0, len(buf), step):
                self._confirm_range(offset + lo, buf[lo : lo + step], depth + 1)
            return
        raise IntegrityError(
            f"{r.src.url(job.src_key)}: reads of bytes {offset}-{offset + len(buf) - 1} "
            f"keep disagreeing ({tries} tries, after {depth} splits)",
            key=job.src_key,
        )

    def part_length(self, index: int) -> int:
        return min(self.part_size, self.info.size - index * self.part_size)

    def part_task(self, index: int, cost: int) -> None:
        self.costs[index] = cost
        if self.error is not None or self.r.stop.is_set():
            self.fail(self.error or RunStopped("run stopped"), unsettled_from=None)
            self._settle(index, 2)
            return
        r, job = self.r, self.job
        hashed_added = False
        try:
            length = self.part_length(index)
            raw = r.buffers.take(length)
            with self.lock:
                self.buffers[index] = raw
            buf = memoryview(raw)[:length]
            offset = index * self.part_size

            def read() -> int:
                # Pinned to the version stat'ed: a replaced object fails this attempt
                # (SourceChanged, the file is redone) before its bytes are mixed in.
                return r.src.readinto(job.src_key, offset, buf, expect=self.info)

            skip_write = index in self.resumed and self._read_resumed(index, buf)
            if not skip_write:
                r.throttle(length)
            n = length if skip_write else r.retrying(job, read, self.retries)
            if n != length:
                raise SourceChanged(
                    f"{r.src.url(job.src_key)}: ended at {offset + int(n)} bytes, expected "
                    f"{self.info.size}; it changed while being copied",
                    key=job.src_key,
                )
            if job.attempt > 1 and not skip_write:
                self._confirm_read(index, buf)
            digests = PartDigests(buf)
            self.part_digests[index] = digests.get(r.part_algorithm).hex()
            hashed_added = True
            if self.read_at is None:
                self.digest.add(index, buf, lambda: self._settle(index, 1))
            else:  # hashed whole in the read-back before the commit
                self._settle(index, 1)
            if self.writer is not None and not skip_write:
                writer = self.writer
                receipt = r.retrying(
                    job, lambda: writer.write_part(index, buf, digests), self.retries
                )
                if r.job is not None and isinstance(writer, ResumableWriter):
                    r.job.part(job, receipt, self.part_digests[index])
            if not skip_write:
                r.moved(length)
            r.listener.bytes_done(length, job)
            if self.readback is not None:
                self.readback.written(index)
            self._settle(index, 1)
        except DatamoverError as e:
            self.fail(e, unsettled_from=None)
            self._settle(index, 1 if hashed_added else 2)
            return
        if self.readback is not None and self.error is None:
            # The buffer is back in the pool: read back what is written so far.
            try:
                self.readback.catch_up()
            except DatamoverError as e:
                self.fail(e, unsettled_from=None)  # also raised by the commit's digests()

    def fail(self, e: DatamoverError, *, unsettled_from: int | None) -> None:
        """Mark the file failed; with ``unsettled_from``, parts from there on were never
        submitted and are settled here."""
        with self.lock:
            if self.error is None:
                self.error = e
        self.digest.cancel()
        if unsettled_from is not None:
            for i in range(unsettled_from, self.count):
                self._settle(i, 2)

    def _settle(self, index: int, n: int) -> None:
        with self.lock:
            self.pending[index] -= n
            done_part = self.pending[index] == 0
            if done_part:
                self.unsettled -= 1
            last = self.unsettled == 0
        if done_part:
            # Written and hashed (or given up): nothing reads the buffer any more.
            with self.lock:
                raw = self.buffers.pop(index, None)
            if raw is not None:
                self.r.buffers.give(raw)
            if self.costs[index]:
                self.r.budget.release(self.costs[index])
        if last:
            self._finalize()

    def _finalize(self) -> None:
        r, job, result = self.r, self.job, self.result
        result.part_size = self.part_size
        result.src_info = self.info
        try:
            if self.error is not None:
                raise self.error
            back = self.readback
            computed = back.digests() if back is not None else self.digest.hexdigests()
            check_expected(job, r.src, self.info.checksums, computed)
            r.check_unchanged(job, self.info)
            result.digests = computed
            r.note_digest(job, computed)
            result.parts = self.part_digests
            if self.writer is not None:
                writer = self.writer
                meta = r.dst_metadata(self.info, computed[r.algorithm])
                result.dst_info = r.retrying(job, lambda: writer.commit(meta), self.retries)
                if self.read_at is None:
                    r.prove(job, result, self.retries)
                else:  # read back before the commit (``readback``)
                    result.verified = result.dst_info.verified or READBACK
        except DatamoverError as e:
            result.error = e
            if self.readback is not None:
                self.readback.close()  # nothing reads the temp file once it is aborted
            kept = (
                isinstance(e, RunStopped)
                and isinstance(self.writer, ResumableWriter)
                and r.job is not None  # journaled: a resume continues it
            )
            if self.writer is not None and not kept:  # a stopped run's upload is resumed
                try:
                    self.writer.abort()
                except DatamoverError:
                    pass  # the store's cleanup command can still find it
        result.seconds = time.monotonic() - self.started
        result.retries = self.retries[0]
        r.finish(result)
