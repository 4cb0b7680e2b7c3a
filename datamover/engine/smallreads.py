"""Small files read with their requests in flight from one thread: ``SmallReads``.

With one blocking request per worker thread, a run of many small downloads spent a
large share of its CPU handing the interpreter lock between threads: 32 threads each
waking for one 4 KiB answer cost ~100 futex calls per file (``strace -c``), ~0.1 CPU-ms
of a file's ~0.7 (bench/RESULTS.md, eighth session). When the source keeps several
whole-object reads in flight from one thread (``Store.pipelined_reads``) and the
destination is this machine's filesystem (a put is a few system calls, no network),
one thread of its own moves the run's small files instead: it asks for the next
``transfers`` objects before it reads the first answer, then writes, checks and
records each file as ``Runner._small_file`` always does (the read-back, the manifest
entry, the journal row), with the answer in hand.

Only files of up to ``MAX_SIZE`` bytes take this path: above it the per-request
overhead is small beside the bytes, and the pool's threads hash, write and read back
several files at once (those calls release the interpreter lock), which one thread
cannot.

Anything but a plain success (an error status, a broken or malformed answer, a body
longer than the listing said) sends that file to the worker pool's ordinary path,
which reads it again, retries and names the error: this path adds no failure mode of
its own. Bounds: ``transfers`` requests in flight (one connection each); the queue
holds only files whose cost the memory budget has granted (``Runner._schedule``).
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import TYPE_CHECKING

from datamover.engine.plan import FileJob
from datamover.stores.base import PipelinedReads

if TYPE_CHECKING:
    from datamover.engine.runner import Runner

log = logging.getLogger("datamover")

#: The largest file moved by ``SmallReads``; larger small files go to the pool.
MAX_SIZE = 1024 * 1024


class SmallReads:
    """One thread moving small files whose reads ``reader`` keeps in flight."""

    def __init__(self, runner: Runner, reader: PipelinedReads, width: int) -> None:
        self.runner, self.reader = runner, reader
        self.width = max(1, width)
        self._queue: collections.deque[tuple[FileJob, int]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        #: Files moved with the answer this thread read, and files handed to the pool.
        self.answered = 0
        self.handed_over = 0
        self._thread = threading.Thread(target=self._run, name="dm-small", daemon=True)
        self._thread.start()

    def put(self, job: FileJob, cost: int) -> None:
        """Queue ``job`` (its ``cost`` already granted by the budget)."""
        with self._cond:
            self._queue.append((job, cost))
            self._cond.notify()

    def close(self) -> None:
        """Finish what is queued, then end the thread and close the reader."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify()
        self._thread.join()
        self.reader.close()
        log.debug(
            "small files: %d read with requests in flight, %d by the ordinary path",
            self.answered,
            self.handed_over,
        )

    def _run(self) -> None:
        runner = self.runner
        try:
            self._loop()
        except BaseException as e:  # a bug, not a store error: stop the run, don't hide it
            # ``Runner.run`` raises it once the run has stopped (files still queued
            # keep their budget: nothing waits for it after a stop).
            runner.bug = e
            runner.stop.set()

    def _loop(self) -> None:
        runner, reader, cond = self.runner, self.reader, self._cond
        inflight: collections.deque[tuple[FileJob, int, object | None]] = collections.deque()
        while True:
            with cond:
                while not self._queue and not inflight and not self._closed:
                    cond.wait()
                if not self._queue and not inflight:
                    return
                taken: list[tuple[FileJob, int]] = []
                while self._queue and len(inflight) + len(taken) < self.width:
                    taken.append(self._queue.popleft())
            for job, cost in taken:
                started = None if runner.stop.is_set() else reader.start(job.src_key, job.info)
                inflight.append((job, cost, started))
            job, cost, started = inflight.popleft()
            answer = None
            if started is not None:
                if runner.stop.is_set():
                    reader.abandon(started)
                else:
                    answer = reader.finish(started)
            if answer is None and not runner.stop.is_set():
                self.handed_over += 1
                runner.submit_small(job, cost)  # the ordinary path: retries, errors
            else:
                self.answered += answer is not None
                runner._small_file(job, cost, answer)


__all__ = ["MAX_SIZE", "SmallReads"]
