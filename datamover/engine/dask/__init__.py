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

from datamover.engine.dask.runner import DaskRunner, connect, scale_out
from datamover.engine.specs import StoreSpec

__all__ = ["DaskRunner", "StoreSpec", "connect", "scale_out"]
