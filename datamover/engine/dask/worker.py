"""The worker side of a Dask run: tasks that open stores and move bytes on a worker.

Tasks are plain functions over picklable values (``StoreSpec``, shards of
``FileJob``s, ranges of parts); see the package docstring for the design.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from datamover.checksums import OrderedDigest, PartDigests
from datamover.engine.budget import ByteBudget, TokenBucket
from datamover.engine.plan import FileJob
from datamover.engine.results import FileResult
from datamover.engine.runner import Runner
from datamover.engine.specs import StoreSpec
from datamover.errors import (
    DatamoverError,
    SourceChanged,
    StoreError,
)
from datamover.options import TransferOptions
from datamover.retry import call_with_retries
from datamover.stores.base import ObjectInfo, PartReceipt, ResumableWriter, Store

# -- worker side -----------------------------------------------------------------------

_STORES: dict[str, Store] = {}
_STORES_LOCK = threading.Lock()


def _store(spec: StoreSpec, job_id: str | None = None) -> Store:
    """This worker process's store for ``spec``, opened once per journaled job
    (stores are thread-safe and pool their connections, so tasks share them). A
    destination opened for ``job_id`` names its writes' temp pieces from the job and
    the key (``Store.use_job``), as the client's own store does, so a later run of
    the job finds what a killed worker left."""
    key = f"{spec!r}\0{job_id or ''}"
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = spec.open(job_id)
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
class Shard:
    src: StoreSpec
    dst: StoreSpec
    roots: tuple[str, str]
    options: TransferOptions
    jobs: tuple[FileJob, ...]
    #: The journaled job the files belong to (temp names of its writes), or None.
    job_id: str | None = None


@dataclass(slots=True)
class ShardDone:
    results: list[FileResult]
    bytes_moved: int
    fatal: DatamoverError | None = None


def run_shard(shard: Shard) -> ShardDone:
    """Worker task: the normal engine over one shard's files, no journal, no manifest
    (the client keeps both). A fatal error comes back as data, so Dask does not retry
    what can't succeed; any other exception is a bug and is raised."""
    results: list[FileResult] = []
    runner = Runner(
        _store(shard.src),
        _store(shard.dst, shard.job_id),
        shard.options,
        results.append,
        roots=shard.roots,
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
    return ShardDone(results, runner.bytes_moved, fatal)


@dataclass(frozen=True, slots=True)
class PartsTask:
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
    #: The source version every part is read of (``Store.readinto``'s ``expect``).
    expect: ObjectInfo | None = None


@dataclass(slots=True)
class PartsDone:
    receipts: dict[int, PartReceipt] = field(default_factory=dict)
    digests: dict[int, str] = field(default_factory=dict)
    whole: dict[str, str] = field(default_factory=dict)
    bytes_moved: int = 0
    retries: int = 0
    error: DatamoverError | None = None


def write_parts(task: PartsTask) -> PartsDone:
    """Worker task: reopen the client's upload and write parts ``task.indices``, with
    ``transfers`` threads and at most ``memory_budget`` bytes of parts in flight
    (reserved in index order, so in-order hashing can't deadlock, as in the runner).
    Never commits or aborts: the upload is the client's."""
    opts = task.options
    src, dst = _store(task.src), _store(task.dst)
    out = PartsDone()
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
                lambda: src.readinto(task.src_key, offset, buf, expect=task.expect),
                opts.retry,
                on_retry=note_retry,
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
