"""Many small files over several processes (``--processes N``): one plan, one journal,
one manifest.

Moving a small file costs CPU in Python per request (signing, HTTP, hashing, the
journal), and threads share one interpreter lock, so on a many-small-file job one
process is bound by one core whatever ``--transfers`` says. ``ProcessRunner`` spreads
that work over worker processes, borrowing the Dask runner's shape (shards out, results
back as data, the client alone records) without its machinery:

* **The parent plans** (streamed, as always), skips what the journal says is done and
  cuts files of up to ``multipart_threshold`` bytes into *batches* of at most
  ``BATCH_FILES`` files or ``BATCH_BYTES`` bytes. Each worker has at most
  ``BATCHES_PER_WORKER`` batches sent and not finished, so the parent holds at most
  ``processes x 2 x 256`` planned files beyond the plan's own bound. Everything else
  (files by parts, directories, hard links, symlinks, server-side copies) runs in the
  parent's own ``Runner``, beside the workers.
* **A worker is a fresh interpreter** (``python -m datamover.engine.procs``,
  fork + exec: nothing of the parent's threads or locks is copied). It opens its own
  stores from a ``StoreSpec`` (location and settings: plain values, no secrets; the SDK
  chains find credentials in the environment it inherits, never on a command line),
  and runs each batch with the normal ``Runner``: its share of ``transfers`` threads,
  its own ``memory_budget``, the usual redo of a file whose digest mismatched, the usual
  read-back or provider check.
* **Results come back as data**, one message per file as it finishes, and go through
  the same path as local results: one journal row, one manifest entry, written by the
  parent only. So ``verify``, ``jobs resume`` and a resume after a kill work as for a
  one-process run, and a job can be resumed with a different ``--processes``.
* **Links are written last, by the parent**: symlinks and hard-link markers a worker
  only finds by reading them are handed back and written in the parent's link phase,
  after every file of every worker, so no file is ever written through one.
* **Workers die with the parent**: ``PR_SET_PDEATHSIG`` (SIGKILL) and end-of-file on
  their socket; they ignore SIGINT (the parent decides what an interrupt stops) and
  are killed when the run stops early. What they were writing stays planned in the
  journal; nothing half-written is visible (one atomic put, or a deterministic temp
  name that the job's next run finds).

``processes=None`` (the default) starts ``min(idle cores, 4)`` workers (none when fewer
than two cores are idle by the 1-minute load average), but only once the
plan has ``AUTO_MIN_FILES`` small files (fewer are not worth an interpreter's start-up)
and never with ``bwlimit`` (the limit, not the GIL, is the bottleneck); ``1`` is the
one-process runner. ``transfers`` is shared by the workers (each gets its share,
rounded up; the parent keeps all of it for files by parts). Caveats: ``memory_budget``
holds per process (peak ~ ``(processes + 1) x`` one process's); an explicit
``processes`` with ``bwlimit`` gives each process an equal share of it.
"""

from datamover.engine.procs.runner import ProcessRunner, auto_processes, process_factory
from datamover.engine.specs import StoreSpec

__all__ = ["ProcessRunner", "StoreSpec", "auto_processes", "process_factory"]
