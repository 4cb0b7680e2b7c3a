"""The job journal: a durable record of every run, so a killed job resumes where it was.

One SQLite database (stdlib ``sqlite3``, WAL mode) per state directory, by default
``$XDG_STATE_HOME/datamover/journal.db``. It holds, per job: its identity (operation,
source, destination and the options that change bytes), the plan as it streams (one
row per file scheduled), per-file state, and for files in multipart flight the
writer's resume token (S3 upload id, POSIX temp file, ...) with every completed part's
receipt and digest.

Writes are batched: callers enqueue, one writer thread commits every
``FLUSH_SECONDS`` or ``FLUSH_ROWS`` rows, so the journal never becomes the bottleneck.
A WAL commit survives ``kill -9`` of the process. What is lost when a process dies is at
most the last batch: those parts are simply sent again on resume, because nothing the
journal claims is trusted blindly (parts are re-checked against the store, files
against their source's size and mtime).

Reads (``lookup``) go through a separate connection and see committed rows only.

The journal is one of datamover's own files (``datamover.ownfiles``): its directory is
made private (``0700``), the database is created ``O_EXCL|O_NOFOLLOW`` and ``0600``
before SQLite opens it (SQLite then gives its ``-wal`` and ``-shm`` the same mode), and
a symlink or another user's file at any of those names is refused, never followed.
What it holds is read back as untrusted: a record that does not decode raises
``StateError`` naming the journal and the job, never a crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from datamover.errors import StateError, UsageError
from datamover.ownfiles import check_own, create_private, open_own, private_dir
from datamover.stores.base import PartReceipt

log = logging.getLogger("datamover")
FLUSH_SECONDS = 0.2
FLUSH_ROWS = 2000
QUEUE_BOUND = 20_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    job_key TEXT NOT NULL,
    operation TEXT NOT NULL,
    source TEXT NOT NULL,
    destination TEXT NOT NULL,
    options TEXT NOT NULL,
    manifest TEXT,
    request TEXT NOT NULL DEFAULT '{}',  -- the call as given: src, dst, sync flags
    state TEXT NOT NULL,            -- running | done | incomplete | aborted
    created REAL NOT NULL,
    updated REAL NOT NULL,
    files_done INTEGER NOT NULL DEFAULT 0,
    files_failed INTEGER NOT NULL DEFAULT 0,
    bytes_done INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_key ON jobs (job_key, state);
CREATE TABLE IF NOT EXISTS files (
    job_id TEXT NOT NULL,
    rel TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL,
    etag TEXT,
    state TEXT NOT NULL,            -- planned | writing | done | failed | skipped
    part_size INTEGER,
    writer TEXT,                    -- JSON resume token of the writer
    digest TEXT,
    error TEXT,
    PRIMARY KEY (job_id, rel)
);
CREATE TABLE IF NOT EXISTS parts (
    job_id TEXT NOT NULL,
    rel TEXT NOT NULL,
    idx INTEGER NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT,
    checksum TEXT,
    digest TEXT NOT NULL,
    PRIMARY KEY (job_id, rel, idx)
);
"""


def default_state_dir() -> str:
    """``$XDG_STATE_HOME/datamover`` (default ``~/.local/state/datamover``): where the
    journal lives, and manifests when the user names none."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "datamover")


def journal_path(state_dir: str | None = None) -> str:
    return os.path.join(state_dir or default_state_dir(), "journal.db")


def job_key(operation: str, source: str, destination: str, options: Mapping[str, Any]) -> str:
    """Identity of "the same command": re-running it resumes the unfinished job."""
    blob = json.dumps([operation, source, destination, dict(options)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


_JOB_COLUMNS = (
    "job_id, job_key, operation, source, destination, options, manifest, request, state,"
    " created, updated, files_done, files_failed, bytes_done"
)


@dataclass(frozen=True, slots=True)
class JobRecord:
    job_id: str
    job_key: str
    operation: str
    source: str
    destination: str
    options: dict[str, Any]
    manifest: str | None
    request: dict[str, Any]
    state: str
    created: float
    updated: float
    files_done: int
    files_failed: int
    bytes_done: int


@dataclass(frozen=True, slots=True)
class FileRecord:
    rel: str
    size: int
    mtime: float | None
    etag: str | None
    state: str
    part_size: int | None
    writer: dict[str, Any] | None
    digest: str | None
    parts: dict[int, tuple[PartReceipt, str]]


#: Files SQLite keeps beside the database (WAL, shared memory, rollback journal).
_COMPANIONS = ("-wal", "-shm", "-journal")


def _prepare(path: str) -> None:
    """Make the journal's directory private and make sure every name SQLite will open
    is a file of ours or nothing: ``StateError`` otherwise."""
    private_dir(os.path.dirname(os.path.abspath(path)))
    try:
        fd = open_own(path)
    except FileNotFoundError:
        fd = create_private(path)
    os.close(fd)
    for suffix in _COMPANIONS:
        check_own(path + suffix)


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class Journal:
    """Thread-safe; one per process. ``close()`` flushes everything queued."""

    def __init__(self, path: str) -> None:
        self.path = path
        _prepare(path)
        try:
            self._w = _connect(path)
            self._w.executescript(_SCHEMA)
            self._r = _connect(path)
        except (OSError, sqlite3.Error) as e:
            raise UsageError(
                f"cannot open the job journal {path}: {e}; set --state-dir to a writable place"
            ) from e
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()
        # Rows wait in a bounded list and the writer takes them all at once, every
        # FLUSH_SECONDS or as soon as FLUSH_ROWS are waiting: a row costs an append,
        # not a wake-up of the writer thread (a queue.get per row cost two futex calls
        # and a GIL hand-over per file).
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the writer waits here
        self._space = threading.Condition(self._lock)  # writers of rows, when full
        self._flushed = threading.Condition(self._lock)
        self._rows: list[tuple[str, tuple[Any, ...]]] = []
        self._pending = 0  # queued or being written
        self._urgent = False
        self._stopping = False
        #: Called by the writer before it commits a batch (``set_barrier``).
        self._barrier: Callable[[], None] | None = None
        self.barrier_error: BaseException | None = None
        self._thread = threading.Thread(target=self._writer, name="dm-journal", daemon=True)
        self._thread.start()

    # -- writing (batched) --------------------------------------------------------------

    def _put(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            while len(self._rows) >= QUEUE_BOUND and self._thread.is_alive():
                self._work.notify()
                self._space.wait(1.0)
            self._rows.append((sql, args))
            self._pending += 1
            if len(self._rows) == FLUSH_ROWS:
                self._work.notify()

    def _writer(self) -> None:
        while True:
            with self._lock:
                self._work.wait_for(
                    lambda: len(self._rows) >= FLUSH_ROWS or self._urgent or self._stopping,
                    timeout=FLUSH_SECONDS,
                )
                batch, self._rows = self._rows, []
                self._urgent = False
                stopping = self._stopping
                if batch:
                    self._space.notify_all()
            if batch and not self._pass_barrier():
                batch_lost = len(batch)
                batch = []
                with self._lock:
                    self._pending -= batch_lost
                    self._flushed.notify_all()
            if batch:
                try:
                    with self._write_lock, self._transaction():
                        for sql, args in batch:
                            self._w.execute(sql, args)
                except BaseException:  # keep flush() from waiting forever
                    with self._lock:
                        self._pending -= len(batch)
                        self._flushed.notify_all()
                    raise
                with self._lock:
                    self._pending -= len(batch)
                    self._flushed.notify_all()
            elif stopping:
                return

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN ... COMMIT on the write connection (its lock held by the caller). Left
        by any exception, a ``KeyboardInterrupt`` between two statements (Ctrl-C in
        the thread that opens uploads: the CLI's, a library caller's) included, it
        rolls back: a transaction left open would make the writer thread's next BEGIN
        fail (the thread dies, every later row is lost) and ``close`` roll back all
        that came after, the job's final state too."""
        try:
            self._w.execute("BEGIN")
            yield
            self._w.execute("COMMIT")
        except BaseException:
            if self._w.in_transaction:
                self._w.execute("ROLLBACK")
            raise

    def set_barrier(self, barrier: Callable[[], None] | None) -> None:
        """``barrier()`` runs in the writer thread before each batch is committed, so
        no row is durable before what it describes: the engine passes the destination
        store's ``sync``, and a file's "done" row is committed only after a sync that
        began after the file was renamed into place. If the barrier fails, the batch is
        dropped (those files count as not done, and are copied again on resume) and
        ``barrier_error`` keeps the error."""
        self._barrier = barrier

    def _pass_barrier(self) -> bool:
        barrier = self._barrier
        if barrier is None:
            return True
        try:
            barrier()
        except Exception as e:
            self.barrier_error = e
            log.error("journal: making files durable failed (%s); not recording them", e)
            return False
        return True

    def flush(self) -> None:
        """Block until everything queued so far is committed."""
        with self._lock:
            if self._pending:
                self._urgent = True
                self._work.notify()
            while self._pending and self._thread.is_alive():
                self._flushed.wait(1.0)

    def close(self) -> None:
        if self._thread.is_alive():
            self.flush()
            with self._lock:
                self._stopping = True
                self._work.notify()
            self._thread.join()
        self._w.close()
        self._r.close()

    # -- jobs ---------------------------------------------------------------------------

    def create_job(
        self,
        job_id: str,
        key: str,
        operation: str,
        source: str,
        destination: str,
        options: Mapping[str, Any],
        manifest: str | None,
        request: Mapping[str, Any] | None = None,
    ) -> None:
        now = time.time()
        with self._write_lock:
            self._w.execute(
                "INSERT INTO jobs (job_id, job_key, operation, source, destination, options,"
                " manifest, request, state, created, updated)"
                " VALUES (?,?,?,?,?,?,?,?,'running',?,?)",
                (
                    job_id,
                    key,
                    operation,
                    source,
                    destination,
                    json.dumps(dict(options)),
                    manifest,
                    json.dumps(dict(request or {})),
                    now,
                    now,
                ),
            )

    def finish_job(
        self, job_id: str, state: str, files_done: int, files_failed: int, bytes_done: int
    ) -> None:
        self.flush()
        with self._write_lock:
            self._w.execute(
                "UPDATE jobs SET state=?, updated=?, files_done=?, files_failed=?, bytes_done=?"
                " WHERE job_id=?",
                (state, time.time(), files_done, files_failed, bytes_done, job_id),
            )

    def resumable(self, key: str) -> JobRecord | None:
        """The newest unfinished job run with the same identity, if any."""
        rows = self._query(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_key=?"
            " AND state IN ('running','aborted','incomplete')"
            " ORDER BY created DESC LIMIT 1",
            (key,),
        )
        return _job(rows[0]) if rows else None

    def job(self, job_id: str) -> JobRecord | None:
        rows = self._query(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id=?", (job_id,))
        if not rows:
            rows = self._query(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id LIKE ?", (job_id + "%",)
            )
        if len(rows) > 1:
            raise UsageError(f"job id {job_id!r} is ambiguous; give more of it")
        return _job(rows[0]) if rows else None

    def jobs(self) -> list[JobRecord]:
        return [
            _job(r) for r in self._query(f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY created", ())
        ]

    def delete_job(self, job_id: str) -> bool:
        """Forget the job ``job_id`` (exactly); whether there was one."""
        self.flush()
        with self._write_lock:
            for table in ("parts", "files", "jobs"):
                cursor = self._w.execute(f"DELETE FROM {table} WHERE job_id=?", (job_id,))
        return cursor.rowcount > 0

    def file_counts(self, job_id: str) -> dict[str, int]:
        rows = self._query(
            "SELECT state, COUNT(*) FROM files WHERE job_id=? GROUP BY state", (job_id,)
        )
        return {str(state): int(n) for state, n in rows}

    # -- files and parts ------------------------------------------------------------------

    def planned(
        self, job_id: str, rel: str, size: int, mtime: float | None, etag: str | None
    ) -> None:
        self._put(
            "INSERT INTO files (job_id, rel, size, mtime, etag, state) VALUES (?,?,?,?,?,'planned')"
            " ON CONFLICT(job_id, rel) DO UPDATE SET size=excluded.size, mtime=excluded.mtime,"
            " etag=excluded.etag WHERE files.state NOT IN ('done', 'writing')",
            (job_id, rel, size, mtime, etag),
        )

    def writing(
        self,
        job_id: str,
        rel: str,
        size: int,
        mtime: float | None,
        etag: str | None,
        part_size: int,
        writer: Mapping[str, Any],
    ) -> None:
        # Committed before returning, not batched: a kill between opening an upload and
        # journaling it would leave an upload nobody knows to resume or abort.
        with self._write_lock, self._transaction():
            self._w.execute(
                "INSERT INTO files (job_id, rel, size, mtime, etag, state, part_size, writer)"
                " VALUES (?,?,?,?,?,'writing',?,?) ON CONFLICT(job_id, rel) DO UPDATE SET"
                " size=excluded.size, mtime=excluded.mtime, etag=excluded.etag, state='writing',"
                " part_size=excluded.part_size, writer=excluded.writer",
                (job_id, rel, size, mtime, etag, part_size, json.dumps(dict(writer))),
            )
            self._w.execute("DELETE FROM parts WHERE job_id=? AND rel=?", (job_id, rel))

    def part(self, job_id: str, rel: str, receipt: PartReceipt, digest: str) -> None:
        self._put(
            "INSERT OR REPLACE INTO parts (job_id, rel, idx, size, etag, checksum, digest)"
            " VALUES (?,?,?,?,?,?,?)",
            (job_id, rel, receipt.index, receipt.size, receipt.etag, receipt.checksum, digest),
        )

    def finished(
        self,
        job_id: str,
        rel: str,
        state: str,
        size: int,
        mtime: float | None,
        etag: str | None,
        digest: str | None,
        error: str | None,
    ) -> None:
        self._put(
            "INSERT INTO files (job_id, rel, size, mtime, etag, state, digest, error)"
            " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(job_id, rel) DO UPDATE SET"
            " size=excluded.size, mtime=excluded.mtime, etag=excluded.etag,"
            " state=excluded.state, digest=excluded.digest, error=excluded.error, writer=NULL",
            (job_id, rel, size, mtime, etag, state, digest, error),
        )
        self._put("DELETE FROM parts WHERE job_id=? AND rel=?", (job_id, rel))

    def lookup(self, job_id: str, rel: str) -> FileRecord | None:
        rows = self._query(
            "SELECT rel, size, mtime, etag, state, part_size, writer, digest FROM files"
            " WHERE job_id=? AND rel=?",
            (job_id, rel),
        )
        if not rows:
            return None
        rel_, size, mtime, etag, state, part_size, writer, digest = rows[0]
        parts: dict[int, tuple[PartReceipt, str]] = {}
        if state == "writing":
            for idx, psize, petag, checksum, pdigest in self._query(
                "SELECT idx, size, etag, checksum, digest FROM parts WHERE job_id=? AND rel=?",
                (job_id, rel),
            ):
                index = _int(idx, "part index", job_id)
                receipt = PartReceipt(index, _int(psize, "part size", job_id), petag, checksum)
                parts[index] = (receipt, pdigest)
        return FileRecord(
            rel_,
            _int(size, "file size", job_id),
            mtime,
            etag,
            state,
            part_size,
            _object(writer, "upload token", job_id) if writer else None,
            digest,
            parts,
        )

    def writers(self, job_id: str) -> Iterator[tuple[str, int, int, dict[str, Any]]]:
        """Files of a job still holding an open writer: rel, size, part size, token."""
        for rel, size, part_size, writer in self._query(
            "SELECT rel, size, part_size, writer FROM files"
            " WHERE job_id=? AND state='writing' AND writer IS NOT NULL",
            (job_id,),
        ):
            yield (
                str(rel),
                _int(size, "file size", job_id),
                _int(part_size, "part size", job_id),
                _object(writer, "upload token", job_id),
            )

    def unfinished(self, job_id: str) -> list[str]:
        """Paths of a job's files not done (planned, writing or failed)."""
        return [
            str(rel)
            for (rel,) in self._query(
                "SELECT rel FROM files WHERE job_id=? AND state IN ('planned','writing','failed')",
                (job_id,),
            )
        ]

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._read_lock:
            try:
                return list(self._r.execute(sql, args))
            except sqlite3.DatabaseError as e:
                raise StateError(
                    f"the job journal {self.path} can't be read ({e}); move it away to start "
                    "afresh (unfinished jobs then can't be resumed)"
                ) from e


def _object(text: object, what: str, job_id: object) -> dict[str, Any]:
    """A JSON object the journal holds, decoded; ``StateError`` when it is not one."""
    try:
        value = json.loads(text) if isinstance(text, str | bytes) else None
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise _corrupt(what, job_id)
    return value


def _int(value: object, what: str, job_id: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _corrupt(what, job_id)


def _corrupt(what: str, job_id: object) -> StateError:
    return StateError(
        f"the job journal's {what} of job {job_id} is corrupt; forget the job with "
        f"`datamover jobs clean {job_id}` and run the command again"
    )


def _job(row: tuple[Any, ...]) -> JobRecord:
    (
        job_id,
        key,
        operation,
        source,
        destination,
        options,
        manifest,
        request,
        state,
        created,
        updated,
        files_done,
        files_failed,
        bytes_done,
    ) = row
    for name, value in (
        ("operation", operation),
        ("source", source),
        ("destination", destination),
        ("state", state),
    ):
        if not isinstance(value, str):
            raise _corrupt(name, job_id)
    if manifest is not None and not isinstance(manifest, str):
        raise _corrupt("manifest path", job_id)
    return JobRecord(
        str(job_id),
        str(key),
        operation,
        source,
        destination,
        _object(options, "options", job_id),
        manifest,
        _object(request, "request", job_id),
        state,
        created,
        updated,
        files_done,
        files_failed,
        bytes_done,
    )
