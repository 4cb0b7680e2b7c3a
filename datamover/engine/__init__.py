"""The transfer engine: plan -> parts -> one bounded executor -> commit -> record.

Reached only through the front door (``datamover.job``), which opens the stores and
calls in here; the engine never imports a face (CLI, mount, library API) or the front
door. Modules, in the order data flows through them:

* ``plan`` / ``sync`` — what to copy where, streamed from the listings;
* ``runner`` — parts through one bounded executor, digests in stream order, commit;
  ``budget`` bounds bytes in flight, bandwidth and retries; ``proof`` records which
  check covered each write, or reads it back (``--unverified``);
* ``transfer`` — a run as one journaled job with one manifest (``run_state`` is the
  run's view of the journal); ``verify`` re-reads a tree against its manifest (or,
  with ``--no-download``, compares the store's own checksums);
* ``observer`` / ``results`` — what a run tells its caller as it goes and at the end;
* ``cleanup`` — unfinished uploads under a prefix; ``dask`` — the runner spread over a
  Dask cluster (needs ``distributed``, imported only when asked for).
"""

from datamover.engine.observer import Fanout, Listener, Observer, RunInfo
from datamover.engine.plan import FileJob
from datamover.engine.results import FileResult, TransferReport, VerifyReport
from datamover.engine.runner import Runner
from datamover.engine.transfer import copy_between, run_job, sync_between
from datamover.engine.verify import hash_object, verify_store

__all__ = [
    "Fanout",
    "FileJob",
    "FileResult",
    "Listener",
    "Observer",
    "RunInfo",
    "Runner",
    "TransferReport",
    "VerifyReport",
    "copy_between",
    "hash_object",
    "run_job",
    "sync_between",
    "verify_store",
]
