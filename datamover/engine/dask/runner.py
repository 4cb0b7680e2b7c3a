"""The client side of a Dask run: ``DaskRunner`` plans, cuts shards, commits.

See the package docstring for the design.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future as LocalFuture
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from distributed import Client, Future, LocalCluster, wait

from datamover.checksums import new_hasher
from datamover.engine.dask.worker import (
    PartsDone,
    PartsTask,
    Shard,
    ShardDone,
    run_shard,
    write_parts,
)
from datamover.engine.largefile import LargeFile, check_expected
from datamover.engine.plan import LINK_MAX, FileJob, is_symlink
from datamover.engine.results import FileResult
from datamover.engine.runner import HASH_CHUNK, Runner
from datamover.engine.specs import StoreSpec
from datamover.errors import (
    ConfigError,
    DatamoverError,
    IntegrityError,
    SourceChanged,
    TransferError,
    UsageError,
)
from datamover.options import DaskOptions, MiB, TransferOptions, parse_cluster
from datamover.stores import StoreSettings
from datamover.stores.base import PartReceipt, ResumableWriter, Store, version_of

#: How long to wait for a cluster to have at least one worker before giving up.
WORKER_WAIT_SECONDS = 120.0


@dataclass(slots=True)
class _Split:
    """A file being written by parts from workers, as seen by the client."""

    large: LargeFile
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
        if dst is not None:
            # What the destination learns before its first write (an S3 store's
            # checksum probe) is learnt here once and handed to the workers, so none
            # probes, and a worker killed mid-run leaves no probe upload behind.
            learnt = dst.prepare_writes(self.dst_root)
            if learnt:
                extra = {**dst_spec.settings.extra, **learnt}
                dst_spec = dataclasses.replace(
                    dst_spec, settings=dataclasses.replace(dst_spec.settings, extra=extra)
                )
        self.dst_spec = dst_spec
        self.dask = dask_options
        self.worker_options = options.with_(manifest=None, state_dir=None, command_line=())
        self._futures: dict[Future[Any], Handler] = {}
        self._splits: list[_Split] = []
        self._hashers: ThreadPoolExecutor | None = None
        self._resumable = dst is not None and dst.features.resumable_writes

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
            and not (is_symlink(job.info) and job.info.size <= LINK_MAX)  # a link: one request
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
        shard = Shard(
            self.src_spec,
            self.dst_spec,
            (self.src_root, self.dst_root),
            self.worker_options,
            tuple(jobs),
            None if self.job is None else self.job.job_id,
        )

        def handler(done: ShardDone | None, error: BaseException | None) -> None:
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
        self.record_remote(result)

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
        large = LargeFile(self, job)
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
            task = PartsTask(
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
                version_of(large.info),
            )
            self._send(write_parts, task, functools.partial(self._parts_back, split), window)

    def _parts_back(
        self, split: _Split, done: PartsDone | None, error: BaseException | None
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

    def _hash_source(self, large: LargeFile) -> dict[str, str]:
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
                return self.src.readinto(job.src_key, at, into, expect=info)

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
            check_expected(job, r.src, large.info.checksums, computed)
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
            r.prove(job, result, large.retries)
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
def _quiet_local_cluster() -> Iterator[None]:
    """The scheduler and nannies of a local cluster run in this process and log their
    start and stop at INFO through distributed's own handler: ~30 lines even under
    -q. While the cluster datamover started lives they speak only when datamover's
    own log is at debug (-vv), and else at WARNING or datamover's own level, the
    stricter (under -q, errors only: a nanny's "still alive after 4 s, killing"
    warning at close on a loaded machine is not one); then the ``distributed``
    logger's level is put back as it was (the caller's process, a notebook, keeps its
    logging set-up), and a stricter level is never lowered."""
    logger = logging.getLogger("distributed")
    before = logger.level
    ours = logging.getLogger("datamover").getEffectiveLevel()
    if ours > logging.DEBUG:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING, ours))
    try:
        yield
    finally:
        logger.setLevel(before)


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
                _quiet_local_cluster(),
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
        try:
            c = Client(cluster)
        except (OSError, TimeoutError) as e:  # distributed's "Timed out trying to connect"
            raise ConfigError(
                f"could not reach the Dask scheduler at {cluster} ({type(e).__name__}); "
                "check the address and that the scheduler is running, or use --dask local:N"
            ) from None
        with c:
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
    dst_settings: StoreSettings | None = None,
) -> Iterator[Callable[..., Runner]]:
    """Connect (``connect``) and yield the runner factory ``run_job`` takes, for a run
    from URL ``src`` to URL ``dst``. Workers' connection pools are sized for the
    tasks each may run at once. ``dst_settings``: the destination's, when they differ
    from the source's (links are followed in a source only)."""
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
        pooled_dst = dataclasses.replace(pooled, extra=(dst_settings or settings).extra)
        yield functools.partial(
            DaskRunner,
            client=c,
            src_spec=StoreSpec.from_url(src, pooled),
            dst_spec=StoreSpec.from_url(dst, pooled_dst),
            dask_options=dask_options or DaskOptions(),
        )
