"""Scale one transfer out over a Dask cluster: one plan, one manifest, one journal.

``copy``/``sync`` with ``client=`` or ``cluster=`` (CLI ``--dask ADDRESS|local:N``) run
exactly as on one node, except that the runner (``DaskRunner``) sends the bytes-moving
work to Dask workers instead of to local threads:

* **The client plans** (streamed, as always), skips what the journal says is done, and
  cuts the remaining files into *shards*, as fpart does: a shard is closed at
  ``shard_files`` files or ``shard_bytes`` bytes, whichever comes first. Each shard is
  one Dask task that runs the normal engine (``Runner``) on a worker, with the run's
  ``TransferOptions``: its own ``transfers`` threads and its own ``memory_budget``. The
  worker opens the stores itself from ``StoreSpec``s (a location plus
  ``StoreSettings``: plain, picklable, no secrets; credentials come from the worker's
  own environment, as they would on the client). The task returns ``FileResult``s.
* **Files written by parts** (larger than ``multipart_threshold``, to a store whose
  writers are ``ResumableWriter``s: S3, Azure, GCS, POSIX) never go into a shard: the
  client opens the writer (journaling it, so a killed client resumes it like any
  upload) and sends ``writer.state()`` with ranges of part numbers to worker tasks;
  each worker reopens the upload with ``Store.resume_writer``, reads and writes its
  parts and returns their receipts and part digests. A file larger than
  ``split_threshold`` (default ``4 x part size x workers``) is spread over up to one
  task per worker thread; a smaller one is one task. The client commits once every
  receipt is in, after ``verify_parts`` agrees the store holds each of them.
* **The whole-file digest is over the source bytes in stream order.** A file that is
  one task is hashed by its worker as it goes (as the local runner does). For a file
  split over several workers nobody sees all the bytes, so the client reads the source
  sequentially and hashes it while the workers upload: the source is read twice (once
  by the workers, once by the client). That is the price of splitting; it is paid
  only for files above ``split_threshold``.
* **Results come back as data** and go through the same path as local results: one
  journal row per file, one manifest entry per file, written by the client only.
  ``verify`` and resume work as for a single-node run, and a job can be resumed with
  or without Dask.

A worker lost mid-task (killed, out of memory, its node gone) is handled by Dask: the
scheduler runs the task again elsewhere (and ``retries`` more times when the task
raised). Re-running is safe because nothing a task does is visible until committed:
each small file is one atomic put, and a file by parts is committed by the client
only, once. A re-run shard rewrites the files the lost worker may have written already
(same bytes, same key), and only the results of the run that finished reach the
manifest, so every file is in it exactly once.

Caveats, honestly:

* ``bwlimit`` and ``memory_budget`` hold per task, not per cluster: a worker with
  ``k`` threads runs up to ``k`` tasks and may hold ``k x memory_budget``.
  ``--dask local:N`` starts one thread per worker process for that reason.
* A destination whose writers can't be resumed elsewhere (fsspec stores) gets its big
  files inside shards, by one worker each; a worker killed mid-file may then leave an
  unfinished upload behind, for ``datamover cleanup``.
* Hard links found by planning (POSIX sources) are made by the client at the end,
  after their targets; hard-link *marker objects* read from an object store are made
  by the shard that reads them, which on a POSIX destination needs the target to have
  been copied already (copy again to fix the few that failed).
* Whole-file redo after a digest mismatch happens inside shards as usual; for files
  written by parts there is none: the file fails and a re-run copies it.
* Workers keep the stores they opened for the life of their process.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future as LocalFuture
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from distributed import Client, Future, LocalCluster, wait

from datamover.checksums import OrderedDigest, PartDigests, new_hasher
from datamover.engine.budget import ByteBudget, TokenBucket
from datamover.engine.plan import FileJob
from datamover.engine.runner import (
    HASH_CHUNK,
    FileResult,
    Runner,
    _check_expected,
    _LargeFile,
)
from datamover.errors import (
    DatamoverError,
    IntegrityError,
    SourceChanged,
    StoreError,
    TransferError,
    UsageError,
)
from datamover.options import DaskOptions, MiB, TransferOptions, parse_cluster
from datamover.retry import call_with_retries
from datamover.stores import StoreSettings, open_location, resolve_remote
from datamover.stores.base import PartReceipt, ResumableWriter, Store
from datamover.urls import Location, parse_url

__all__ = [
    "DaskRunner",
    "StoreSpec",
    "connect",
    "scale_out",
]

#: How long to wait for a cluster to have at least one worker before giving up.
WORKER_WAIT_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """How a worker opens a store: a concrete location (a named remote already
    resolved by the client) and its settings. Secrets are not in it: the store's SDK
    chain finds them on the worker (or the remote names an env var to read there)."""

    location: Location
    settings: StoreSettings

    @classmethod
    def from_url(cls, url: str, settings: StoreSettings) -> StoreSpec:
        loc = parse_url(url)
        if loc.remote is not None:
            loc, settings = resolve_remote(loc, settings)
        return cls(Location(loc.scheme, loc.bucket, ""), settings)


# -- worker side -----------------------------------------------------------------------

_STORES: dict[str, Store] = {}
_STORES_LOCK = threading.Lock()


def _store(spec: StoreSpec) -> Store:
    """This worker process's store for ``spec``, opened once (stores are thread-safe
    and pool their connections, so tasks share them)."""
    key = repr(spec)
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = open_location(spec.location, spec.settings)
            _STORES[key] = store
        return store


def _portable(error: DatamoverError) -> DatamoverError:
    """``error`` if it survives pickling back to the client, else a ``StoreError``
    with its message (an exception whose constructor takes other arguments than its
    message can't be rebuilt there)."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return StoreError(str(error))
    return error


@dataclass(frozen=True, slots=True)
class _Shard:
    src: StoreSpec
    dst: StoreSpec
    roots: tuple[str, str]
    options: TransferOptions
    jobs: tuple[FileJob, ...]


@dataclass(slots=True)
class _ShardDone:
    results: list[FileResult]
    bytes_moved: int
    fatal: DatamoverError | None = None


def run_shard(shard: _Shard) -> _ShardDone:
    """Worker task: the normal engine over one shard's files, no journal, no manifest
    (the client keeps both). A fatal error comes back as data, so Dask does not retry
    what can't succeed; any other exception is a bug and is raised."""
    results: list[FileResult] = []
    runner = Runner(
        _store(shard.src), _store(shard.dst), shard.options, results.append, roots=shard.roots
    )
    fatal: DatamoverError | None = None
    try:
        runner.run(shard.jobs)
    except DatamoverError as e:
        if not e.fatal:
            raise
        fatal = _portable(e)
    for result in results:
        if result.error is not None:
            result.error = _portable(result.error)
    return _ShardDone(results, runner.bytes_moved, fatal)


@dataclass(frozen=True, slots=True)
class _Parts:
    src: StoreSpec
    dst: StoreSpec
    src_key: str
    dst_key: str
    size: int
    part_size: int
    state: Mapping[str, Any]
    indices: tuple[int, ...]
    #: Whole-file algorithms to hash in stream order (the task has every part), or ().
    whole: tuple[str, ...]
    options: TransferOptions


@dataclass(slots=True)
class _PartsDone:
    receipts: dict[int, PartReceipt] = field(default_factory=dict)
    digests: dict[int, str] = field(default_factory=dict)
    whole: dict[str, str] = field(default_factory=dict)
    bytes_moved: int = 0
    retries: int = 0
    error: DatamoverError | None = None


def write_parts(task: _Parts) -> _PartsDone:
    """Worker task: reopen the client's upload and write parts ``task.indices``, with
    ``transfers`` threads and at most ``memory_budget`` bytes of parts in flight
    (reserved in index order, so in-order hashing can't deadlock, as in the runner).
    Never commits or aborts: the upload is the client's."""
    opts = task.options
    src, dst = _store(task.src), _store(task.dst)
    out = _PartsDone()
    lock = threading.Lock()
    stop = threading.Event()
    budget = ByteBudget(opts.memory_budget)
    bucket = TokenBucket(opts.bwlimit) if opts.bwlimit else None
    digest = OrderedDigest(task.whole) if task.whole else None
    pending: dict[int, int] = {}

    def failed(e: DatamoverError) -> None:
        with lock:
            if out.error is None:
                out.error = _portable(e)
        stop.set()
        if digest is not None:
            digest.cancel()

    def note_retry(e: DatamoverError, attempt: int, delay: float) -> None:
        with lock:
            out.retries += 1

    def settle(index: int, length: int, n: int) -> None:
        with lock:
            pending[index] -= n
            done = pending[index] == 0
        if done:
            budget.release(length)

    def part(writer: ResumableWriter, index: int, length: int) -> None:
        offset = index * task.part_size
        hashing = 0
        try:
            if stop.is_set():
                raise DatamoverError("task stopped")
            buf = memoryview(bytearray(length))
            if bucket is not None:
                bucket.consume(length)
            n = call_with_retries(
                lambda: src.readinto(task.src_key, offset, buf), opts.retry, on_retry=note_retry
            )
            if n != length:
                raise SourceChanged(
                    f"{src.url(task.src_key)}: ended at {offset + n} bytes, expected "
                    f"{task.size}; it changed while being copied",
                    key=task.src_key,
                )
            digests = PartDigests(buf)
            with lock:
                out.digests[index] = digests.get(opts.part_checksum).hex()
            if digest is not None:
                hashing = 1
                digest.add(index, buf, lambda: settle(index, length, 1))
            receipt = call_with_retries(
                lambda: writer.write_part(index, buf, digests), opts.retry, on_retry=note_retry
            )
            with lock:
                out.receipts[index] = receipt
                out.bytes_moved += length
        except DatamoverError as e:
            failed(e)
        settle(index, length, 2 - hashing)

    try:
        writer = dst.resume_writer(
            task.dst_key, size=task.size, part_size=task.part_size, state=task.state
        )
    except DatamoverError as e:
        out.error = _portable(e)
        return out
    with ThreadPoolExecutor(max(1, min(opts.transfers, len(task.indices)))) as pool:
        for index in task.indices:
            length = min(task.part_size, task.size - index * task.part_size)
            if not budget.acquire(length, stop):
                break
            pending[index] = 2
            pool.submit(part, writer, index, length)
    if digest is not None and out.error is None:
        out.whole = digest.hexdigests()
    return out


# -- client side -----------------------------------------------------------------------


@dataclass(slots=True)
class _Split:
    """A file being written by parts from workers, as seen by the client."""

    large: _LargeFile
    tasks: int
    receipts: dict[int, PartReceipt] = field(default_factory=dict)
    whole: dict[str, str] = field(default_factory=dict)
    hashed: LocalFuture[dict[str, str]] | None = None
    error: DatamoverError | None = None
    bytes_moved: int = 0


Handler = Callable[[Any, BaseException | None], None]


class DaskRunner(Runner):
    """A ``Runner`` whose work runs on Dask workers (module docstring). Built by
    ``run_job`` through the factory ``scale_out`` yields; results reach ``on_result``
    and the journal from the client's scheduling thread, as the local runner's do."""

    def __init__(
        self,
        src: Store,
        dst: Store | None,
        options: TransferOptions,
        on_result: Callable[[FileResult], None],
        *,
        client: Client,
        src_spec: StoreSpec,
        dst_spec: StoreSpec,
        dask_options: DaskOptions,
        **kwargs: Any,
    ) -> None:
        super().__init__(src, dst, options, on_result, **kwargs)
        self.client = client
        self.src_spec = src_spec
        self.dst_spec = dst_spec
        self.dask = dask_options
        self.worker_options = options.with_(manifest=None, state_dir=None, command_line=())
        self._futures: dict[Future[Any], Handler] = {}
        self._splits: list[_Split] = []
        self._hashers: ThreadPoolExecutor | None = None
        self._resumable = dst is not None and type(dst).resume_writer is not Store.resume_writer

    # -- the scheduling loop

    def run(self, jobs: Iterable[FileJob]) -> None:
        if self.dst is None:
            raise UsageError("a Dask run needs a destination")
        self.client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
        workers = self.client.scheduler_info()["workers"]
        slots = max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))
        window = self.dask.in_flight or 2 * slots
        part = self.requested_part_size or 8 * MiB
        split_at = self.dask.split_threshold or 4 * part * max(1, len(workers))
        links: list[FileJob] = []
        shard: list[FileJob] = []
        shard_bytes = 0
        self._hashers = ThreadPoolExecutor(2, thread_name_prefix="dm-hash")
        try:
            for job in jobs:
                if self.stop.is_set():
                    break
                if job.kind == "hardlink":
                    links.append(job)  # bounded by the hard links in the tree
                elif self._by_parts(job):
                    self._start_split(job, split_at, slots, window)
                else:
                    shard.append(job)
                    shard_bytes += job.info.size
                    if len(shard) >= self.dask.shard_files or shard_bytes >= self.dask.shard_bytes:
                        self._submit_shard(shard, window)
                        shard, shard_bytes = [], 0
            if shard and not self.stop.is_set():
                self._submit_shard(shard, window)
            while self._futures:
                self._collect_some()
        except BaseException:
            self.stop.set()
            raise
        finally:
            self._cancel_all()
            self._hashers.shutdown(wait=True, cancel_futures=True)
        if links and not self.stop.is_set():
            # On POSIX a link's target must exist first: the client makes them last.
            super().run(links)
        if self.fatal is not None:
            raise self.fatal

    def _by_parts(self, job: FileJob) -> bool:
        return (
            self._resumable
            and not self.server_copy
            and job.kind == "file"
            and job.problem is None
            and job.info.size > self.threshold
        )

    def _send(self, fn: Callable[..., Any], arg: object, handler: Handler, window: int) -> None:
        while len(self._futures) >= window and not self.stop.is_set():
            self._collect_some()
        if self.stop.is_set():
            handler(None, None)
            return
        future = self.client.submit(fn, arg, pure=False, retries=self.dask.retries)
        self._futures[future] = handler

    def _collect_some(self) -> None:
        done, _ = wait(list(self._futures), return_when="FIRST_COMPLETED")
        for future in done:
            handler = self._futures.pop(future)
            try:
                value = future.result()
            except Exception as e:  # the task raised after its retries, or was lost
                handler(None, e)
            else:
                handler(value, None)

    def _cancel_all(self) -> None:
        """After a fatal error or an interrupt: drop tasks not yet back (their files
        stay planned in the journal, for a resume) and abort uploads not committed."""
        if self._futures:
            futures, self._futures = list(self._futures), {}
            with contextlib.suppress(Exception):
                self.client.cancel(futures)
        for split in self._splits:
            self._abort(split)
        self._splits.clear()

    # -- shards

    def _submit_shard(self, jobs: list[FileJob], window: int) -> None:
        shard = _Shard(
            self.src_spec,
            self.dst_spec,
            (self.src_root, self.dst_root),
            self.worker_options,
            tuple(jobs),
        )

        def handler(done: _ShardDone | None, error: BaseException | None) -> None:
            if done is None:
                if error is None:
                    return  # stopped before it was sent: the files stay planned
                for job in shard.jobs:
                    self._deliver(
                        FileResult(job, job.info.size, error=TransferError(job.rel, error))
                    )
                return
            self.moved(done.bytes_moved)
            for result in done.results:
                self._deliver(result)
            if done.fatal is not None:
                self._set_fatal(done.fatal)

        self._send(run_shard, shard, handler, window)

    def _deliver(self, result: FileResult) -> None:
        """Record one file a worker finished: journal, manifest (``on_result``),
        listener; the worker already redid what deserved a redo."""
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

    def finish(self, result: FileResult) -> None:
        """For files the client schedules itself (by parts, hard links): no redo here
        (a digest mismatch fails the file; a re-run copies it)."""
        error = result.error
        if error is not None and error.fatal:
            self._set_fatal(error)
        elif self.job is not None:
            self.job.finished(
                result.job,
                error is None,
                result.digests.get(self.algorithm),
                None if error is None else str(error),
            )
        with self._results_lock:
            self.on_result(result)
        self.listener.file_finished(result)
        with self._flow:
            self._inflight -= 1
            self._flow.notify_all()

    # -- files by parts

    def _start_split(self, job: FileJob, split_at: int, slots: int, window: int) -> None:
        with self._flow:
            self._inflight += 1  # settled by finish(), as for the local runner's files
        large = _LargeFile(self, job)
        if not large.open():
            return  # finished with its error
        writer = large.writer
        assert isinstance(writer, ResumableWriter)
        todo = [i for i in range(large.count) if i not in large.resumed]
        count = min(len(todo), slots) if large.info.size > split_at else 1
        count = max(1, count)
        size = -(-len(todo) // count) if todo else 0
        ranges = [tuple(todo[i : i + size]) for i in range(0, len(todo), size)] if todo else []
        whole = large.digest.algorithms if len(ranges) <= 1 and not large.resumed else ()
        split = _Split(large, len(ranges))
        for i, digest in large.resumed.items():
            large.part_digests[i] = digest
        if not whole:
            assert self._hashers is not None
            split.hashed = self._hashers.submit(self._hash_source, large)
        self._splits.append(split)
        if not ranges:
            self._finish_split(split)
            return
        state = writer.state()
        for indices in ranges:
            task = _Parts(
                self.src_spec,
                self.dst_spec,
                job.src_key,
                job.dst_key,
                large.info.size,
                large.part_size,
                state,
                indices,
                whole,
                self.worker_options,
            )
            self._send(write_parts, task, functools.partial(self._parts_back, split), window)

    def _parts_back(
        self, split: _Split, done: _PartsDone | None, error: BaseException | None
    ) -> None:
        large, job = split.large, split.large.job
        split.tasks -= 1
        if done is None:
            if split.error is None:
                split.error = (
                    DatamoverError("run stopped")
                    if error is None
                    else TransferError(job.rel, error)
                )
        else:
            large.retries[0] += done.retries
            split.bytes_moved += done.bytes_moved
            split.receipts.update(done.receipts)
            split.whole.update(done.whole)
            for i, digest in done.digests.items():
                large.part_digests[i] = digest
            if self.job is not None:
                for i, receipt in done.receipts.items():
                    self.job.part(job, receipt, done.digests[i])
            if done.bytes_moved:
                self.listener.bytes_done(done.bytes_moved, job)
            if done.error is not None and split.error is None:
                split.error = done.error
        if split.tasks == 0 and not self.stop.is_set():
            self._finish_split(split)

    def _hash_source(self, large: _LargeFile) -> dict[str, str]:
        """The whole-file digest of the source, read sequentially on the client while
        workers upload its parts (one ``HASH_CHUNK`` buffer per hashing thread)."""
        job, info = large.job, large.info
        algorithms = self.algorithms_for(info.checksums)
        hashers = [new_hasher(a) for a in algorithms]
        buf = memoryview(bytearray(min(HASH_CHUNK, max(info.size, 1))))
        offset = 0
        while offset < info.size:
            if self.stop.is_set():
                raise DatamoverError("run stopped")
            want = buf[: min(len(buf), info.size - offset)]

            def read(at: int = offset, into: memoryview = want) -> int:
                return self.src.readinto(job.src_key, at, into)

            n = self.retrying(job, read, large.retries)
            if n != len(want):
                raise SourceChanged(f"{self.src.url(job.src_key)}: shorter than listed")
            for h in hashers:
                h.update(want)
            offset += n
        return {a: h.hexdigest() for a, h in zip(algorithms, hashers, strict=True)}

    def _finish_split(self, split: _Split) -> None:
        """Every task of the file is back: check, commit once, record."""
        self._splits.remove(split)
        large = split.large
        r, job, result, writer = self, large.job, large.result, large.writer
        assert isinstance(writer, ResumableWriter)
        result.part_size = large.part_size
        result.src_info = large.info
        try:
            if split.error is not None:
                raise split.error
            computed = split.whole or (split.hashed.result() if split.hashed else {})
            _check_expected(job, r.src, large.info.checksums, computed)
            r.check_unchanged(job, large.info)
            if split.receipts:
                held = writer.verify_parts(split.receipts)
                if held != set(split.receipts):
                    raise IntegrityError(
                        f"{r.dst.url(job.dst_key) if r.dst else job.dst_key}: the store does "
                        f"not hold {len(set(split.receipts) - held)} part(s) workers wrote",
                        key=job.dst_key,
                    )
            result.digests = computed
            result.parts = large.part_digests
            r.note_digest(job, computed)
            meta = r.dst_metadata(large.info, computed[r.algorithm])
            result.dst_info = r.retrying(job, lambda: writer.commit(meta), large.retries)
        except DatamoverError as e:
            result.error = e
            self._abort(split)
        r.moved(split.bytes_moved)
        result.seconds = time.monotonic() - large.started
        result.retries = large.retries[0]
        self.finish(result)

    def _abort(self, split: _Split) -> None:
        writer = split.large.writer
        if writer is not None:
            with contextlib.suppress(DatamoverError):
                writer.abort()  # the store's cleanup command can still find it


# -- connecting ------------------------------------------------------------------------


@contextlib.contextmanager
def connect(client: Client | None = None, cluster: Any = None) -> Iterator[Client]:
    """A connected ``Client``: ``client`` itself (left open), or one for ``cluster``:
    ``"local:N"`` starts a ``LocalCluster`` of N single-threaded worker processes
    (closed afterwards), any other string is a scheduler address, and a cluster object
    (``SLURMCluster``, ``LocalCluster``, ...) is connected to and left running."""
    if client is not None:
        yield client
        return
    if isinstance(cluster, str):
        kind, n = parse_cluster(cluster)
        if kind == "local":
            with (
                LocalCluster(
                    n_workers=n or os.cpu_count() or 1,
                    threads_per_worker=1,
                    processes=True,
                    # Any free port: a fixed one (8787) clashes with a second job.
                    dashboard_address=":0",
                ) as local,
                Client(local) as c,
            ):
                yield c
            return
        with Client(cluster) as c:
            yield c
        return
    if cluster is None:
        raise UsageError("give a Dask client= or cluster=")
    with Client(cluster) as c:
        yield c


@contextlib.contextmanager
def scale_out(
    src: str,
    dst: str,
    settings: StoreSettings,
    options: TransferOptions,
    *,
    client: Client | None = None,
    cluster: Any = None,
    dask_options: DaskOptions | None = None,
) -> Iterator[Callable[..., Runner]]:
    """Connect (``connect``) and yield the runner factory ``run_job`` takes, for a run
    from URL ``src`` to URL ``dst``. Workers' connection pools are sized for the
    tasks each may run at once."""
    with connect(client, cluster) as c:
        workers = c.scheduler_info()["workers"].values()
        threads = max([int(w.get("nthreads", 1)) for w in workers] or [1])
        pooled = StoreSettings(
            endpoint=settings.endpoint,
            region=settings.region,
            profile=settings.profile,
            account=settings.account,
            connections=(options.transfers + 4) * threads,
            extra=settings.extra,
        )
        yield functools.partial(
            DaskRunner,
            client=c,
            src_spec=StoreSpec.from_url(src, pooled),
            dst_spec=StoreSpec.from_url(dst, pooled),
            dask_options=dask_options or DaskOptions(),
        )
