"""The parent side of ``--processes``: ``ProcessRunner`` sends batches of small files
to worker processes and records what they report. See the package docstring."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from datamover.engine.plan import FileJob, is_symlink
from datamover.engine.procs.worker import BatchDone, WorkerInit
from datamover.engine.results import FileResult
from datamover.engine.runner import Runner
from datamover.engine.specs import StoreSpec
from datamover.errors import TransferError
from datamover.options import MiB, TransferOptions
from datamover.stores import StoreSettings
from datamover.stores.base import Store

log = logging.getLogger("datamover")

#: A batch is closed at this many files or bytes, whichever comes first.
BATCH_FILES = 256
BATCH_BYTES = 64 * MiB
#: Batches sent to one worker and not yet back (one running, one waiting).
BATCHES_PER_WORKER = 2
#: ``processes=None`` starts workers only once this many small files are planned.
AUTO_MIN_FILES = 1000
#: The most worker processes ``processes=None`` starts.
AUTO_MAX = 4
#: How long a worker may take to exit after ``stop`` before it is killed.
STOP_WAIT = 5.0


def auto_processes() -> int:
    """Worker processes for ``processes=None``: one per core this process may run on
    that is idle now (1-minute load average), less the core this process keeps busy
    (it lists, journals, writes the manifest and takes every worker's results), at
    most ``AUTO_MAX``; 1 (no workers) when that leaves fewer than two. On busy cores
    the GIL is not the limit, and the workers' start-up and messages are pure cost: on
    an idle 2-core machine one process moved 5,000-10,000 small files with less CPU
    than two workers and the parent, up and down (bench/RESULTS.md, issue #18.4)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    idle = min(cores, int(cores - os.getloadavg()[0] + 0.5))
    n = min(idle - 1, AUTO_MAX)
    return n if n > 1 else 1


class _Worker:
    """One child process, its socket, and the files it was sent and has not reported."""

    def __init__(self, init: WorkerInit) -> None:
        parent_end, child_end = socket.socketpair()
        env = dict(os.environ)
        # The child imports this very datamover, whatever its current directory.
        root = str(Path(__file__).resolve().parents[3])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        with child_end:
            fd = child_end.fileno()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "datamover.engine.procs", str(os.getpid()), str(fd)],
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
            )
        self.conn = Connection(parent_end.detach())
        self.conn.send(init)
        self.outstanding: dict[int, dict[str, FileJob]] = {}
        self.alive = True

    def end(self, *, kill: bool) -> None:
        """Ask the process to exit (or kill it) and reap it; its receiver then sees
        end-of-file."""
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(("stop",))
            except OSError:
                pass
        try:
            self.process.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class ProcessRunner(Runner):
    """A ``Runner`` that hands files of up to ``multipart_threshold`` bytes to worker
    processes in batches; everything else (large files by parts, directories, links,
    server-side copies) it runs itself, as ``Runner`` does. Results reach ``on_result``
    and the journal in this process only."""

    def __init__(
        self,
        src: Store,
        dst: Store | None,
        options: TransferOptions,
        on_result: Callable[[FileResult], None],
        *,
        src_spec: StoreSpec,
        dst_spec: StoreSpec,
        **kwargs: Any,
    ) -> None:
        asked = options.processes
        wanted = auto_processes() if asked is None else asked
        if options.bwlimit and wanted > 1:
            if asked is None:
                wanted = 1  # the limit is the bottleneck, not the GIL
            else:  # shared evenly by the workers and this process
                options = options.with_(bwlimit=max(1024, options.bwlimit // (wanted + 1)))
        super().__init__(src, dst, options, on_result, **kwargs)
        self.wanted = wanted if dst is not None else 1
        self.start_at = AUTO_MIN_FILES if asked is None else 1
        self.src_spec, self.dst_spec = src_spec, dst_spec
        # --transfers is the run's concurrency: shared by the workers, so many
        # processes don't make many times the requests (nor threads fighting over
        # each process's GIL).
        self.worker_options = options.with_(
            manifest=None,
            state_dir=None,
            command_line=(),
            processes=1,
            transfers=max(1, -(-options.transfers // max(1, wanted))),
        )
        self.workers: list[_Worker] = []
        self._threads: list[threading.Thread] = []
        self._slots = threading.Condition()
        self._batch_id = 0
        #: Worker processes started (0: the run stayed in this process).
        self.started = 0

    def run(self, jobs: Iterable[FileJob]) -> None:
        try:
            super().run(self._route(jobs))
        finally:
            self._close()

    # -- routing

    def _eligible(self, job: FileJob) -> bool:
        return (
            self.wanted > 1
            and not self.server_copy
            and job.kind == "file"
            and job.problem is None
            and job.info.size <= self.threshold
            and not is_symlink(job.info)
        )

    def _route(self, jobs: Iterable[FileJob]) -> Iterator[FileJob]:
        """The plan minus the small files, which go to workers in batches; what the
        workers hand back (links) joins this runner's link phase."""
        held: list[FileJob] = []  # before the workers start: at most AUTO_MIN_FILES
        batch: list[FileJob] = []
        batch_bytes = 0
        for job in jobs:
            if self.stop.is_set():
                return
            if not self._eligible(job):
                yield job
                continue
            if self.workers:
                queue = [job]
            else:
                held.append(job)
                if len(held) < self.start_at:
                    continue
                self._start()
                queue, held = held, []
            for one in queue:
                batch.append(one)
                batch_bytes += one.info.size
                if len(batch) >= BATCH_FILES or batch_bytes >= BATCH_BYTES:
                    if not self._send(batch):
                        yield from batch  # every worker is gone: this process goes on
                    batch, batch_bytes = [], 0
        if not self.workers:
            yield from held  # too few small files to be worth a process: run them here
            return
        if batch and not self.stop.is_set() and not self._send(batch):
            yield from batch
        with self._slots:
            while any(w.outstanding for w in self.workers) and not self.stop.is_set():
                self._slots.wait(0.5)

    def _start(self) -> None:
        dst = self.dst
        assert dst is not None
        dst_spec = self.dst_spec
        # What the destination learns on its first write (an S3 checksum probe) is
        # learnt once here and handed on, so no worker probes (as for Dask).
        learnt = dst.prepare_writes(self.dst_root)
        if learnt:
            extra = {**dst_spec.settings.extra, **learnt}
            dst_spec = dataclasses.replace(
                dst_spec, settings=dataclasses.replace(dst_spec.settings, extra=extra)
            )
        init = WorkerInit(
            self.src_spec,
            dst_spec,
            (self.src_root, self.dst_root),
            self.worker_options,
            self.job.job_id if self.job is not None else None,
        )
        for i in range(self.wanted):
            worker = _Worker(init)
            self.workers.append(worker)
            thread = threading.Thread(
                target=self._receive, args=(worker,), name=f"dm-proc-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        self.started = len(self.workers)
        log.info("small files go to %d worker processes", self.started)

    def _send(self, jobs: list[FileJob]) -> bool:
        """Send a batch to the least busy worker, waiting for a free slot; False when
        no worker is left (the caller runs the files itself) or the run stopped."""
        with self._slots:
            while not self.stop.is_set():
                alive = [w for w in self.workers if w.alive]
                if not alive:
                    return False
                free = [w for w in alive if len(w.outstanding) < BATCHES_PER_WORKER]
                if free:
                    break
                self._slots.wait(0.5)
            else:
                return True  # stopped: the files stay planned in the journal
            worker = min(free, key=lambda w: len(w.outstanding))
            self._batch_id += 1
            batch = self._batch_id
            worker.outstanding[batch] = {job.rel: job for job in jobs}
        # Sent without the lock: a send may wait for the worker to read, and the
        # worker may be waiting for its receiver here, which takes the lock.
        try:
            worker.conn.send(("batch", batch, tuple(jobs)))
        except OSError:
            pass  # its receiver sees it gone and fails the batch
        return True

    # -- what comes back

    def _receive(self, worker: _Worker) -> None:
        try:
            while True:
                message = worker.conn.recv()
                if message[0] == "results":
                    for result in message[1]:
                        self._deliver(result, worker)
                else:
                    self._batch_done(message[1], worker)
        except (EOFError, OSError):
            pass
        except BaseException as e:  # a bug (a message that can't be read): stop, don't hide it
            self.bug = e
            self.stop.set()
        with self._slots:
            worker.alive = False
            lost = [job for batch in worker.outstanding.values() for job in batch.values()]
            worker.outstanding.clear()
            self._slots.notify_all()
        if self.stop.is_set():
            return  # an interrupted or aborted run: unfinished files stay planned
        code = worker.process.poll()
        for job in lost:
            why = RuntimeError(
                f"the worker process copying it exited (code {code}); run again to copy it"
            )
            error = TransferError(job.rel, why)
            self._deliver(FileResult(job, job.info.size, error=error), None)

    def _deliver(self, result: FileResult, worker: _Worker | None) -> None:
        if worker is not None:
            with self._slots:
                for batch in worker.outstanding.values():
                    if batch.pop(result.job.rel, None) is not None:
                        break
        self.record_remote(result)

    def _batch_done(self, done: BatchDone, worker: _Worker) -> None:
        self.moved(done.bytes_moved)
        with self._results_lock:
            for rel, digest in done.link_digests.items():
                if not self.link_digests.get(rel):
                    self.link_digests[rel] = digest
        with self._flow:
            self._links.extend(done.links)  # (bounded by the links in the tree)
        with self._slots:
            worker.outstanding.pop(done.batch, None)
            self._slots.notify_all()
        if done.fatal is not None:
            self._set_fatal(done.fatal)

    def _close(self) -> None:
        """End the workers. After a stop (an interrupt, a fatal error) each is told to
        stop the orderly way first (SIGUSR1: files in flight end and are reported,
        within ``STOP_WAIT``); anything left then is killed, its files still planned."""
        if self.stop.is_set() or any(w.outstanding for w in self.workers):
            self.stop.set()
            for worker in self.workers:
                if worker.alive and worker.process.poll() is None:
                    os.kill(worker.process.pid, signal.SIGUSR1)
            deadline = time.monotonic() + STOP_WAIT
            with self._slots:
                while any(w.outstanding for w in self.workers if w.alive):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._slots.wait(min(left, 0.2))
        for worker in self.workers:
            worker.end(kill=bool(worker.outstanding))  # still busy after the wait: killed
        for thread in self._threads:
            thread.join(STOP_WAIT)
        for worker in self.workers:
            worker.conn.close()


def process_factory(
    src: str,
    dst: str,
    settings: StoreSettings,
    dst_settings: StoreSettings,
) -> Callable[..., Runner]:
    """The runner factory ``run_job`` takes for a run from URL ``src`` to URL ``dst``
    with ``options.processes`` other than 1."""
    return functools.partial(
        ProcessRunner,
        src_spec=StoreSpec.from_url(src, settings),
        dst_spec=StoreSpec.from_url(dst, dst_settings),
    )
