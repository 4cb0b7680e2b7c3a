"""The runner: planned files -> part tasks -> one bounded executor -> commit.

One scheduler thread (the caller's) walks the plan in order. For every file it
reserves bytes from the ``ByteBudget`` and submits tasks to a single
``ThreadPoolExecutor`` of ``transfers`` threads:

* a file up to ``multipart_threshold`` is one task: read it whole, hash it, ``put`` it;
* a larger file is opened as a ``ChunkWriter`` and split into parts; each part task
  reads its range (``readinto``, no extra copy), computes the part digest, hands the
  buffer to the file's ``OrderedDigest`` (whole-file digest in stream order) and writes
  the part. A part's budget is released when it is both written and hashed. The task
  that settles a file's last part finalizes it: compares the computed digest with any
  digest the source already had, checks the source did not change meanwhile, and
  commits with the digest in the object's metadata. Any failure aborts the writer, so
  nothing partial becomes visible.

Because the scheduler reserves budget strictly in plan order, the earliest part not
yet hashed always holds its budget, so in-order hashing can never deadlock.

Entries with no bytes of their own (empty directories, hard links) are one small task
each; hard links run last, after their targets. A file whose whole-file digest differs
from the source's, or whose source changed, is queued to be redone (bounded); on a redo
each part is trusted only once two reads of it agree. With a job context, every opened
upload and written part is journaled, and a resumed file skips the parts the store
still holds.

With no destination store the runner only reads and hashes (``verify``, ``hash``).
The runner never knows which cloud it talks to: it sees the ``Store`` interface only.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from datamover.checksums import PartDigests, new_hasher
from datamover.engine.budget import BufferPool, ByteBudget, TokenBucket
from datamover.engine.largefile import LargeFile, check_expected
from datamover.engine.observer import Listener
from datamover.engine.plan import LINK_MAX, FileJob, is_symlink
from datamover.engine.proof import READBACK, Prover, readback_chunk
from datamover.engine.results import FileResult
from datamover.engine.run_state import JobContext
from datamover.engine.smallreads import MAX_SIZE as SMALL_READ_MAX
from datamover.engine.smallreads import SmallReads
from datamover.engine.storedlinks import resolve as resolve_stored_link
from datamover.errors import (
    DatamoverError,
    DigestMismatch,
    IntegrityError,
    RunStopped,
    SourceChanged,
    StoreError,
    UnsafePath,
)
from datamover.options import KiB, TransferOptions
from datamover.posixmeta import GID, MODE, MTIME, UID, format_mtime_ns
from datamover.retry import call_with_retries
from datamover.stores.base import (
    HARDLINK_KEY,
    ObjectInfo,
    Store,
    digest_metadata_key,
    digests_from_metadata,
)

#: Budget charged at least this much per task, so empty files can't queue unboundedly.
MIN_TASK_COST = 64 * KiB
#: Read size when a server-side copy must hash a source that carries no digest.
HASH_CHUNK = 8 * 1024 * KiB

T = TypeVar("T")

_POSIX_KEYS = (MODE, UID, GID, MTIME)
#: Metadata carried from source to destination besides the POSIX keys.
XATTR_PREFIX = "xattr-"
_CARRIED = (XATTR_PREFIX, "lustre-stripe-")

log = logging.getLogger("datamover")


class Runner:
    """Runs one batch of ``FileJob``s; ``on_result`` is called once per file."""

    def __init__(
        self,
        src: Store,
        dst: Store | None,
        options: TransferOptions,
        on_result: Callable[[FileResult], None],
        *,
        listener: Listener | None = None,
        sleep: Callable[[float], None] = time.sleep,
        job: JobContext | None = None,
        roots: tuple[str, str] | None = None,
    ) -> None:
        self.src = src
        self.job = job
        #: Bytes that really crossed to or from a store (resumed parts don't count).
        self.bytes_moved = 0
        self._moved_lock = threading.Lock()
        nap = self._nap if sleep is time.sleep else sleep
        self.bandwidth = TokenBucket(options.bwlimit, sleep=nap) if options.bwlimit else None
        self.dst = dst
        self.algorithm = options.checksum
        self.part_algorithm = options.part_checksum
        self.requested_part_size = options.part_size
        self.threshold = options.multipart_threshold
        self.preserve = options.preserve
        #: Follow symlinks a source store shows as entries (stored links): a store
        #: that follows links itself (POSIX) shows none.
        self.follow_links = options.copy_links
        self.retry = options.retry
        self.transfers = options.transfers
        # Read-back buffers (one per thread) come out of the memory budget.
        chunk = readback_chunk(options) if dst is not None else 0
        self.budget = ByteBudget(options.memory_budget - chunk * options.transfers)
        self.buffers = BufferPool(options.memory_budget - chunk * options.transfers)
        self.prover = Prover(dst, options, chunk) if dst is not None else None
        # A store that reads a small write back before it is visible saves the
        # prover's read-back after it (and nothing unchecked is ever visible).
        self.put_read_back = (
            dst is not None and dst.features.reads_back_puts and options.unverified == READBACK
        )
        self.server_copy = dst is not None and options.server_side_copy and dst.can_copy_from(src)
        self.on_result = on_result
        self.listener = listener or Listener()
        self.sleep = sleep
        self.stop = threading.Event()
        self.fatal: DatamoverError | None = None
        self.bug: BaseException | None = None
        self._flow = threading.Condition()
        self._inflight = 0
        self._redo: collections.deque[FileJob] = collections.deque()
        self._links: list[FileJob] = []
        self._linking = False
        self._small: SmallReads | None = None
        self._small_asked = False
        #: Digests of files that other paths hard-link to (bounded by such files).
        self.link_digests: dict[str, str] = {}
        self.src_root, self.dst_root = roots or ("", "")
        if roots is not None:
            # Everything this run reads and writes is below these roots (Store.confine):
            # planning confined them already; a runner made elsewhere (Dask) does it here.
            src.confine(self.src_root)
            if dst is not None:
                dst.confine(self.dst_root)
        self._results_lock = threading.Lock()

    # -- scheduling -------------------------------------------------------------------

    def run(self, jobs: Iterable[FileJob]) -> None:
        """Process every job; raises the first fatal error after in-flight work ends."""
        with ThreadPoolExecutor(self.transfers, thread_name_prefix="dm-io") as pool:
            self._pool = pool
            try:
                for job in jobs:
                    if self.stop.is_set():
                        break
                    self._schedule_redos(wait=False)
                    self._schedule(job)
                self._schedule_redos(wait=True)
                self._end_small_reads()
                # Hard links last: on POSIX their targets must exist first.
                self._linking = True
                for job in self._links:
                    if self.stop.is_set():
                        break
                    self._schedule(job)
                self._schedule_redos(wait=True)
            except DatamoverError as e:
                if not e.fatal:
                    raise
                self._set_fatal(e)
            except BaseException:
                self.stop.set()
                raise
            finally:
                self._end_small_reads()
        if self.bug is not None:
            raise self.bug
        if self.fatal is not None:
            raise self.fatal

    def _schedule_redos(self, *, wait: bool) -> None:
        """Schedule files queued to be redone; with ``wait``, until none is in flight."""
        while True:
            with self._flow:
                while wait and not self._redo and self._inflight and not self.stop.is_set():
                    self._flow.wait(0.5)
                if not self._redo or self.stop.is_set():
                    return
                job = self._redo.popleft()
            self._schedule(job)

    def _submit(self, fn: Callable[..., None], *args: object) -> None:
        def guarded() -> None:
            try:
                fn(*args)
            except BaseException as e:  # a bug, not a store error: stop, don't hide it
                self.bug = e
                self.stop.set()
                raise

        self._pool.submit(guarded)

    def _set_fatal(self, e: DatamoverError) -> None:
        with self._results_lock:
            if self.fatal is None:
                self.fatal = e
        self.stop.set()

    def _schedule(self, job: FileJob) -> None:
        if (job.kind == "hardlink" or is_symlink(job.info)) and not self._linking:
            # Links last: a hard link's target must exist first, and a symlink must not
            # exist while files are written under its name (an object "a" stored as a
            # link and a key "a/x" would otherwise write x through the link, outside
            # the destination). Bounded by the links in the tree.
            self._links.append(job)
            return
        with self._flow:
            self._inflight += 1
        size = job.info.size
        if job.problem is not None:
            self.finish(FileResult(job, size, error=job.problem))
            return
        if self.follow_links and job.kind == "file" and is_symlink(job.info):
            if self.budget.acquire(MIN_TASK_COST, self.stop):
                self._submit(self._follow_stored_link, job, MIN_TASK_COST)
            return
        if job.kind in ("dir", "hardlink") or (self.dst is None and job.info.is_dir):
            if self.budget.acquire(MIN_TASK_COST, self.stop):
                self._submit(self._entry_only, job, MIN_TASK_COST)
            return
        if self.server_copy:
            cost = max(min(size, HASH_CHUNK), MIN_TASK_COST)
            if self.budget.acquire(cost, self.stop):
                self._submit(self._server_side_copy, job, cost)
            return
        if size <= self.threshold or (is_symlink(job.info) and size <= LINK_MAX):
            # A symlink is one read of its text and one write, never parts: a source
            # that doesn't follow links can only read it whole (read_object).
            cost = max(size, MIN_TASK_COST)
            if not self.budget.acquire(cost, self.stop):
                return
            small = self._small_reads() if size <= SMALL_READ_MAX else None
            if small is not None:
                small.put(job, cost)
            else:
                self.submit_small(job, cost)
            return
        large = LargeFile(self, job)
        if not large.open():
            return
        for index in range(large.count):
            cost = max(large.part_length(index), MIN_TASK_COST)
            if not self.budget.acquire(cost, self.stop):
                large.fail(RunStopped("run stopped"), unsettled_from=index)
                return
            self._submit(large.part_task, index, cost)

    def _small_reads(self) -> SmallReads | None:
        """The thread moving small files with their reads in flight (``SmallReads``),
        started on the first small file when the source can and the destination is a
        local filesystem with no bandwidth limit; None: the worker pool moves them."""
        if self._linking:
            return None
        if not self._small_asked:
            self._small_asked = True
            dst = self.dst
            if dst is not None and dst.features.local and self.bandwidth is None:
                reader = self.src.pipelined_reads(self.transfers)
                if reader is not None:
                    self._small = SmallReads(self, reader, self.transfers)
        return self._small

    def submit_small(self, job: FileJob, cost: int) -> None:
        """Move a small file on the worker pool (its ``cost`` already granted)."""
        self._submit(self._small_file, job, cost)

    def _end_small_reads(self) -> None:
        if self._small is not None:
            self._small.close()

    # -- helpers shared by both paths ---------------------------------------------------

    def retrying(self, job: FileJob, fn: Callable[[], T], counter: list[int]) -> T:
        def note(e: DatamoverError, attempt: int, delay: float) -> None:
            counter[0] += 1
            self.listener.part_retried(job, e, attempt, delay)
            # The retry goes on a fresh connection (after the jittered backoff).
            for store in (self.src, self.dst):
                if store is not None:
                    store.drop_connections()

        if self.stop.is_set():
            raise RunStopped("run stopped")
        return call_with_retries(fn, self.retry, sleep=self.sleep, on_retry=note)

    def algorithms_for(self, expected: Mapping[str, str]) -> tuple[str, ...]:
        # When the source only offers another whole-object digest (an S3 full-object
        # CRC64NVME, a GCS crc32c, an S3 ETag md5), compute that one too, the cheapest
        # first: it is the only end-to-end check available.
        if self.algorithm in expected:
            return (self.algorithm,)
        extra = tuple(
            a for a in ("crc64nvme", "crc32c", "md5") if a in expected and a != self.algorithm
        )
        return (self.algorithm, *extra[:1])

    def dst_metadata(self, info: ObjectInfo, digest: str) -> dict[str, str]:
        """POSIX attributes (s3fs/rclone keys), xattrs and Lustre layout carried over
        from the source, plus the whole-file digest. A symlink keeps its mode even
        without ``preserve``: the mode is what makes it a link."""
        meta: dict[str, str] = {}
        if self.preserve:
            meta.update(
                {
                    k: v
                    for k, v in info.metadata.items()
                    if k in _POSIX_KEYS or k.startswith(_CARRIED)
                }
            )
            if MTIME not in meta and info.mtime is not None:
                meta[MTIME] = format_mtime_ns(round(info.mtime * 1e9))
        elif is_symlink(info) and MODE in info.metadata:
            meta[MODE] = info.metadata[MODE]
        if digest:
            meta[digest_metadata_key(self.algorithm)] = digest
        return self.fit_metadata(meta)

    def fit_metadata(self, meta: dict[str, str]) -> dict[str, str]:
        """Drop xattrs that don't fit the destination's metadata limit (warned once per
        file by the caller through ``dropped_xattrs``)."""
        dst = self.dst
        if dst is None:
            return meta
        size = sum(len(k) + len(v) for k, v in meta.items())
        if size <= dst.features.max_metadata_bytes:
            return meta
        kept = {k: v for k, v in meta.items() if not k.startswith(XATTR_PREFIX)}
        log.warning(
            "xattrs dropped: %d bytes of metadata exceed the destination's %d-byte limit",
            size,
            dst.features.max_metadata_bytes,
        )
        return kept

    def prove(
        self, job: FileJob, result: FileResult, retries: list[int], *, link: bool = False
    ) -> None:
        """Record which check covered the write just made, or apply ``--unverified``
        (``engine.proof``); raises when the file must fail."""
        if self.prover is not None:
            self.prover.prove(job, result, lambda fn: self.retrying(job, fn, retries), link=link)

    def moved(self, n: int) -> None:
        with self._moved_lock:
            self.bytes_moved += n

    def throttle(self, n: int) -> None:
        if self.bandwidth is not None:
            self.bandwidth.consume(n)
            if self.stop.is_set():  # woken early by the stop (_nap)
                raise RunStopped("run stopped")

    def _nap(self, seconds: float) -> None:
        """The bandwidth limit's wait, cut short when the run stops."""
        self.stop.wait(seconds)

    def check_unchanged(self, job: FileJob, before: ObjectInfo) -> None:
        now = self.src.stat(job.src_key)
        if now.size != before.size or now.mtime != before.mtime or now.etag != before.etag:
            raise SourceChanged(
                f"{self.src.url(job.src_key)}: changed while being copied "
                f"(size {before.size} -> {now.size}); run again to copy the new version",
                key=job.src_key,
            )

    def finish(self, result: FileResult) -> None:
        error, job = result.error, result.job
        if isinstance(error, RunStopped):
            # Neither done nor failed: the journal keeps it planned (or writing, with
            # its parts), the manifest says nothing, a resume takes it up.
            with self._flow:
                self._inflight -= 1
                self._flow.notify_all()
            return
        redo = (
            isinstance(error, DigestMismatch | SourceChanged)
            and job.attempt < self.retry.file_attempts
            and not self.stop.is_set()
        )
        if redo:
            self.listener.part_retried(job, error, job.attempt, 0.0)  # type: ignore[arg-type]
            with self._flow:
                self._redo.append(dataclasses.replace(job, attempt=job.attempt + 1))
                self._inflight -= 1
                self._flow.notify_all()
            return
        if error is not None and error.fatal:
            self._set_fatal(error)
        if self.job is not None and not (error is not None and error.fatal):
            self.job.finished(
                job,
                error is None,
                result.digests.get(self.algorithm),
                None if error is None else str(error),
            )
        with self._results_lock:
            self.on_result(result)
        self.listener.file_finished(result)
        with self._flow:
            self._inflight -= 1
            # The only waiter (``_schedule_redos``) waits for a redo, the last file in
            # flight or a stop: waking it for every finished file cost a thread handoff
            # per file (a GIL round trip of the main thread) for nothing.
            if not self._inflight or self.stop.is_set():
                self._flow.notify_all()

    def _follow_stored_link(self, job: FileJob, cost: int) -> None:
        """With ``copy_links``, a symlink the source holds as an object (only a read
        showed it, so this is the links phase): queued again as the object it leads to,
        below the source root (``storedlinks``), copied as a regular file under the
        link's name; a link that can't be followed safely fails alone."""
        retries = [0]

        def call(fn: Callable[[], T]) -> T:
            return self.retrying(job, fn, retries)

        try:
            key, info = resolve_stored_link(
                self.src, self.src_root, job.rel, job.src_key, job.info, call
            )
        except DatamoverError as e:
            self.budget.release(cost)
            self.finish(FileResult(job, job.info.size, error=e, retries=retries[0]))
            return
        self.budget.release(cost)
        with self._flow:
            self._redo.append(dataclasses.replace(job, src_key=key, info=info))
            self._inflight -= 1
            self._flow.notify_all()

    # -- entries with no bytes of their own: directories and hard links ----------------------

    def _entry_only(self, job: FileJob, cost: int) -> None:
        """A directory (marker object / mkdir) or a hard link (marker object / link())."""
        started = time.monotonic()
        result = FileResult(job, 0)
        retries = [0]
        try:
            info = job.info
            result.src_info = info
            meta = self.dst_metadata(info, "")
            meta.pop(digest_metadata_key(self.algorithm), None)
            if job.kind == "hardlink":
                assert job.link_to is not None
                digest = self.link_digests.get(job.link_to)
                if digest is None and job.link_target_kept:
                    digest = ""  # not copied in this run: hashed below
                if digest is None:
                    raise SourceChanged(f"{job.rel}: its hard-link target {job.link_to} failed")
                size = info.size
                target_key = self.src_root + job.link_to
                if not digest:  # a marker that carried none: the link's bytes are its target's
                    target = dataclasses.replace(job, src_key=target_key)
                    target_info = self.retrying(job, lambda: self.src.stat(target_key), retries)
                    digest = self._hash_sequential(target, target_info, cost, retries)
                    size = target_info.size
                elif size == 0:  # a marker (or a link to an empty file): its target's size
                    size = self.retrying(job, lambda: self.src.stat(target_key), retries).size
                result.digests = {self.algorithm: digest}
                result.size = size
                meta[HARDLINK_KEY] = self._link_target_key(job, job.link_to)
                meta[digest_metadata_key(self.algorithm)] = digest
            if self.dst is not None:
                dst = self.dst
                result.dst_info = self.retrying(
                    job, lambda: dst.put(job.dst_key, b"", metadata=meta), retries
                )
            else:  # verify: the directory (or its marker) must exist
                src = self.src
                self.retrying(job, lambda: src.read_object(job.src_key, job.info), retries)
        except DatamoverError as e:
            result.error = e
        finally:
            self.budget.release(cost)
        result.seconds = time.monotonic() - started
        result.retries = retries[0]
        self.finish(result)

    def record_remote(self, result: FileResult) -> None:
        """Record one file another process finished (a Dask or ``--processes``
        worker): journal, manifest (``on_result``), listener, as ``finish`` does for
        this process's files; the worker already redid what deserved a redo."""
        error, job = result.error, result.job
        if error is not None and error.fatal:
            self._set_fatal(error)
        elif self.job is not None:
            self.job.finished(
                job,
                error is None,
                result.digests.get(self.algorithm),
                None if error is None else str(error),
            )
        if error is None:
            self.note_digest(job, result.digests)
        self.listener.file_started(job)
        if error is None:
            self.listener.bytes_done(result.size, job)
        with self._results_lock:
            self.on_result(result)
        self.listener.file_finished(result)

    def note_digest(self, job: FileJob, digests: Mapping[str, str]) -> None:
        if job.info.link_id is not None and self.algorithm in digests:
            with self._results_lock:
                self.link_digests[job.rel] = digests[self.algorithm]

    # -- small files: one task, one request ---------------------------------------------

    def _small_file(
        self,
        job: FileJob,
        cost: int,
        answer: tuple[bytes | bytearray, ObjectInfo] | None = None,
    ) -> None:
        """Move one small file in one read and one put; ``answer``: its read already
        done (``SmallReads``), used as the first attempt's."""
        started = time.monotonic()
        result = FileResult(job, job.info.size)
        retries = [0]
        try:
            self.listener.file_started(job)
            self.throttle(job.info.size)
            data, info, computed = self._read_whole(job, retries, answer)
            if self._deferred_marker(job, info):
                return  # (the budget is released below)
            if not self._linking and is_symlink(info):
                # Only the read showed it is a link (object stores list no modes):
                # written with the other links, after every file (see _schedule).
                self._defer(dataclasses.replace(job, info=info))
                return
            self.note_digest(job, computed)
            digests = PartDigests(data)
            result.size = len(data)
            result.digests = computed
            result.src_info = info
            result.parts = [digests.get(self.part_algorithm).hex()]
            if self.dst is not None:
                dst = self.dst
                meta = self.dst_metadata(info, computed[self.algorithm])
                put = dst.put_read_back if self.put_read_back else dst.put
                result.dst_info = self.retrying(
                    job, lambda: put(job.dst_key, data, metadata=meta, digests=digests), retries
                )
                self.prove(job, result, retries, link=is_symlink(info))
            self.moved(len(data))
            self.listener.bytes_done(len(data), job)
        except DatamoverError as e:
            result.error = e
        finally:
            self.budget.release(cost)
        result.seconds = time.monotonic() - started
        result.retries = retries[0]
        self.finish(result)

    def _marker_target(self, job: FileJob, target: str) -> str:
        """The path (relative to the roots) a hard-link marker names, if it can be one
        in this run: a key below the source root that is a safe key below the
        destination root too. Anything else (``../../etc/passwd``, another prefix)
        fails this file (``UnsafePath``): the metadata is the bucket writer's word."""
        if not target.startswith(self.src_root) or target == self.src_root:
            raise UnsafePath(
                f"{job.rel}: its hard-link target {target!r} is outside the copied tree "
                f"{self.src.url(self.src_root)}; not linked",
                key=job.src_key,
            )
        rel = target[len(self.src_root) :]
        self._link_target_key(job, rel)
        return rel

    def _link_target_key(self, job: FileJob, rel: str) -> str:
        """The destination key of a hard link's target ``rel``, checked as every key
        is (``Store.child_key``); the store makes the link only to a regular file
        below the same destination root."""
        if self.dst is None:
            return self.dst_root + rel
        try:
            return self.dst.child_key(self.dst_root, rel)
        except StoreError as e:
            raise UnsafePath(
                f"{job.rel}: its hard-link target: {e}; not linked", key=job.src_key
            ) from e

    def link_found(self, job: FileJob) -> bool:
        """A file about to be written by parts whose stat showed a symlink (object
        stores list no modes): True if it was taken back, to be moved with the other
        links in one request (see ``_schedule``); False in the links phase (a file
        that became a link meanwhile: it fails as changed, as any other would)."""
        if self._linking:
            return False
        self._defer(job)
        return True

    def _defer(self, job: FileJob) -> None:
        """Take ``job`` out of flight, to be scheduled again in the links phase."""
        with self._flow:
            self._links.append(job)
            self._inflight -= 1
            self._flow.notify_all()

    def _read_whole(
        self,
        job: FileJob,
        retries: list[int],
        answer: tuple[bytes | bytearray, ObjectInfo] | None = None,
    ) -> tuple[bytes | bytearray, ObjectInfo, dict[str, str]]:
        """Read and hash a whole small file; a digest mismatch with what the source
        carries is retried like any failed request (it is this file's only part).
        ``answer``: the first attempt's read, already done."""
        src = self.src
        given = [answer]

        def read() -> tuple[bytes | bytearray, ObjectInfo, dict[str, str]]:
            first, given[0] = given[0], None
            data, info = first if first is not None else src.read_object(job.src_key, job.info)
            if len(data) != info.size:
                raise SourceChanged(
                    f"{src.url(job.src_key)}: read {len(data)} bytes, expected {info.size}; "
                    "it changed while being copied",
                    key=job.src_key,
                )
            algorithms = self.algorithms_for(info.checksums)
            hashers = [new_hasher(a) for a in algorithms]
            for h in hashers:
                h.update(data)
            computed = {a: h.hexdigest() for a, h in zip(algorithms, hashers, strict=True)}
            if HARDLINK_KEY not in info.metadata:  # a link marker carries its target's digest
                check_expected(job, src, info.checksums, computed)
            return data, info, computed

        return self.retrying(job, read, retries)

    # -- server-side copies: the provider moves the bytes ------------------------------------

    def _deferred_marker(self, job: FileJob, info: ObjectInfo) -> bool:
        """When ``info`` is a hard-link marker datamover wrote: the link is made again
        at the end, with the other links, naming its target's copy (True)."""
        target = info.metadata.get(HARDLINK_KEY)
        if target is None:
            return False
        rel = self._marker_target(job, target)
        # What the marker claims is only a hint; "" (unknown) makes the link phase
        # hash the target itself. Never overwrite a digest computed here.
        claimed = digests_from_metadata(info.metadata).get(self.algorithm, "")
        with self._results_lock:
            if not self.link_digests.get(rel):
                self.link_digests[rel] = claimed
        self._defer(dataclasses.replace(job, kind="hardlink", link_to=rel, info=info))
        return True

    def _server_side_copy(self, job: FileJob, cost: int) -> None:
        started = time.monotonic()
        result = FileResult(job, job.info.size)
        retries = [0]
        try:
            self.listener.file_started(job)
            src, dst = self.src, self.dst
            assert dst is not None
            info = self.retrying(job, lambda: src.stat(job.src_key), retries)
            if self.follow_links and not self._linking and is_symlink(info):
                # A stored link, to be followed: with the other links (_schedule).
                self._defer(dataclasses.replace(job, info=info))
                return
            if self._deferred_marker(job, info):
                # Not copied as it is: its target key is the source tree's.
                return
            digest = info.checksums.get(self.algorithm)
            if digest is None:
                digest = self._hash_sequential(job, info, min(cost, max(info.size, 1)), retries)
            meta = self.dst_metadata(info, digest)
            result.dst_info = self.retrying(
                job, lambda: dst.copy_from(src, job.src_key, job.dst_key, metadata=meta), retries
            )
            if result.dst_info.size != info.size:
                raise IntegrityError(
                    f"{dst.url(job.dst_key)}: server-side copy has {result.dst_info.size} "
                    f"bytes, source {info.size}",
                    key=job.dst_key,
                )
            result.src_info = info
            result.size = info.size
            result.digests = {self.algorithm: digest}
            self.prove(job, result, retries, link=is_symlink(info))
            self.listener.bytes_done(info.size, job)
        except DatamoverError as e:
            result.error = e
        finally:
            self.budget.release(cost)
        result.seconds = time.monotonic() - started
        result.retries = retries[0]
        self.finish(result)

    def _hash_sequential(
        self, job: FileJob, info: ObjectInfo, chunk: int, retries: list[int]
    ) -> str:
        hasher = new_hasher(self.algorithm)
        buf = memoryview(bytearray(chunk))
        offset = 0
        while offset < info.size:
            want = buf[: min(chunk, info.size - offset)]

            def read(at: int = offset, into: memoryview = want) -> int:
                return self.src.readinto(job.src_key, at, into, expect=info)

            n = self.retrying(job, read, retries)
            if n != len(want):
                raise SourceChanged(f"{self.src.url(job.src_key)}: shorter than listed")
            hasher.update(want)
            offset += n
        self.check_unchanged(job, info)
        return hasher.hexdigest()
