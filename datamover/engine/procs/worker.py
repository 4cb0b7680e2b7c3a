"""The worker side of ``--processes``: a child interpreter that moves batches of small
files with the normal engine and reports each file back, keeping no journal or manifest.

Started by ``ProcessRunner`` as ``python -m datamover.engine.procs PARENT_PID FD``
(fork + exec, never a bare fork of a process whose threads hold locks); FD is its end
of a socket pair to the parent, over which pickled messages go both ways:

* parent -> worker: one ``WorkerInit``, then ``("batch", id, jobs)`` any number of
  times, then ``("stop",)``;
* worker -> parent: ``("results", (FileResult, ...))`` as files finish (a few per
  message, ``RESULTS_PER_MESSAGE``), and ``("done", BatchDone)`` when a batch is
  through.

The worker dies with its parent: ``PR_SET_PDEATHSIG`` (Linux) sends it SIGKILL when
the parent goes, and end-of-file on the socket (parent closed or gone) ends it between
batches; it ignores SIGINT, which a terminal sends to the whole process group, so the
parent alone decides what an interrupt stops: SIGUSR1 from the parent stops it the
orderly way (files in flight end and are reported, the rest stay planned). Nothing
it does is visible unless it completed: a small file is one atomic put (object
stores) or a deterministic temp name (``.NAME.dmtmp-<hash>`` from the job id,
``Store.use_job``) renamed into place, so a worker killed mid-file leaves at most a
temp file the job's next run finds.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from datamover import gcpolicy
from datamover.engine.plan import FileJob
from datamover.engine.results import FileResult
from datamover.engine.runner import Runner
from datamover.engine.specs import StoreSpec
from datamover.errors import DatamoverError, StoreError
from datamover.options import TransferOptions
from datamover.stores.base import Store

_PR_SET_PDEATHSIG = 1
#: Results go back in messages of at most this many files, held at most this long
#: (checked as each file finishes; the end of a batch sends the rest).
RESULTS_PER_MESSAGE = 32
RESULTS_DELAY = 0.2
#: The runner of the batch in progress, and whether the parent asked to stop.
_running: list[Runner] = []
_stopping = threading.Event()


@dataclass(frozen=True, slots=True)
class WorkerInit:
    src: StoreSpec
    dst: StoreSpec
    roots: tuple[str, str]
    options: TransferOptions
    job_id: str | None


@dataclass(slots=True)
class BatchDone:
    batch: int
    bytes_moved: int
    #: Links the batch met (symlinks and hard-link markers only a read revealed):
    #: the parent writes them after every file, as the local runner does.
    links: list[FileJob] = field(default_factory=list)
    link_digests: dict[str, str] = field(default_factory=dict)
    fatal: DatamoverError | None = None


def portable(error: DatamoverError) -> DatamoverError:
    """``error`` if it survives pickling, else a ``StoreError`` with its message."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return StoreError(str(error))
    return error


class BatchRunner(Runner):
    """The engine over one batch, whose link phase is handed back instead of run: a
    link written here while another worker still writes files could have a file
    written through it."""

    handed_back: list[FileJob]

    def _schedule(self, job: FileJob) -> None:
        if self._linking:
            self.handed_back.append(job)
            return
        super()._schedule(job)


def run_batch(
    src: Store,
    dst: Store,
    init: WorkerInit,
    batch: int,
    jobs: tuple[FileJob, ...],
    conn: Connection,
) -> BatchDone:
    pending: list[FileResult] = []
    first = [0.0]

    def flush() -> None:
        if pending:
            conn.send(("results", tuple(pending)))
            pending.clear()

    def on_result(result: FileResult) -> None:
        # (the runner calls this under its results lock)
        if result.error is not None:
            result.error = portable(result.error)
        if not pending:
            first[0] = time.monotonic()
        pending.append(result)
        if len(pending) >= RESULTS_PER_MESSAGE or time.monotonic() - first[0] > RESULTS_DELAY:
            flush()

    runner = BatchRunner(src, dst, init.options, on_result, roots=init.roots)
    runner.handed_back = []
    done = BatchDone(batch, 0)
    if _stopping.is_set():
        return done  # sent before the stop: its files stay planned
    _running.append(runner)
    try:
        runner.run(jobs)
    except DatamoverError as e:
        if not e.fatal:
            raise
        done.fatal = portable(e)
    finally:
        _running.remove(runner)
        flush()
    done.bytes_moved = runner.bytes_moved
    done.links = runner.handed_back
    done.link_digests = dict(runner.link_digests)
    return done


def _stop(signum: int, frame: object) -> None:
    """SIGUSR1 from the parent (its run was interrupted): stop as the parent's runner
    does, letting files in flight end; files not finished are not reported, so they
    stay planned. (Set from a thread: a signal handler must not wait on a lock.)"""
    _stopping.set()
    for runner in list(_running):
        threading.Thread(target=runner.stop.set, daemon=True).start()


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the line above took effect
        os._exit(1)


def serve(conn: Connection) -> None:
    init: WorkerInit = conn.recv()
    src = init.src.open()
    dst = init.dst.open(init.job_id)  # the temp names the parent's journal expects
    with src, dst:
        while True:
            try:
                message = conn.recv()
            except EOFError:
                return
            if message[0] != "batch":
                return
            _, batch, jobs = message
            conn.send(("done", run_batch(src, dst, init, batch, jobs, conn)))


def main(argv: list[str]) -> None:
    gcpolicy.tune()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, _stop)
    _die_with_parent(int(argv[0]))
    conn = Connection(int(argv[1]))
    try:
        serve(conn)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent went away: nothing to report to
    finally:
        conn.close()
