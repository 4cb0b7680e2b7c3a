"""One run of a job at a time: an ``flock`` per job identity.

A run takes ``<state dir>/locks/<job key>.lock`` (exclusive, non-blocking) before it
looks for a job to resume, and holds it until it ends; the kernel drops it when the
process dies, however it dies (``kill -9`` included), so a lock never outlives its run.
A second run of the same command (or ``jobs resume`` of that job) while one runs gets
``JobBusy``, one line naming the job and the process that runs it, instead of both
writing the same destination. ``jobs clean`` asks ``is_live`` before touching a job's
uploads. The lock file holds ``JOB_ID PID`` of its holder (for the message only: the
lock itself is the ``flock``); it is one of datamover's own files (``ownfiles``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from datamover.errors import StateError, UsageError
from datamover.ownfiles import create_private, open_own, private_dir


class JobBusy(UsageError):
    """Another process runs this job now."""


def lock_path(state_dir: str, key: str) -> str:
    if not key or not all(c in "0123456789abcdef" for c in key):
        raise StateError(f"job key {key!r} is not one datamover made")
    return os.path.join(state_dir, "locks", f"{key}.lock")


def _open(path: str) -> int:
    private_dir(os.path.dirname(path))
    try:
        return open_own(path)
    except FileNotFoundError:
        try:
            return create_private(path)
        except StateError:
            return open_own(path)  # made meanwhile by another run


class JobLock:
    """Held from ``acquire`` to ``release`` (or the process's end)."""

    def __init__(self, state_dir: str, key: str) -> None:
        self.path = lock_path(state_dir, key)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``JobBusy`` naming the job that holds it."""
        fd = _open(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder, pid = _holder(fd)
            os.close(fd)
            where = (
                "another thread of this process"
                if pid == os.getpid()  # a library caller's threads, a notebook's cells
                else "another process"
            )
            raise JobBusy(
                f"job {holder} is already running (the same command, in {where}); "
                "wait for it to end or stop it, then run this again"
            ) from None
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def holds(self, job_id: str) -> None:
        """Record the job this run works on, for a second run's message."""
        if self._fd is None:
            return
        text = f"{job_id} {os.getpid()}\n".encode()
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, text, 0)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock


def _holder(fd: int) -> tuple[str, int | None]:
    """``(JOB_ID (pid N), N)`` from the lock file, as far as it says (it is only a
    hint)."""
    try:
        words = os.pread(fd, 200, 0).decode("ascii", "replace").split()
    except OSError:
        words = []
    if len(words) == 2 and words[1].isdigit() and words[0].isprintable():
        return f"{words[0][:64]} (pid {words[1]})", int(words[1])
    return "of this command", None


def is_live(state_dir: str, key: str) -> bool:
    """Whether a run holds the lock of the job with identity ``key`` now."""
    try:
        path = lock_path(state_dir, key)
        fd = open_own(path, os.O_RDONLY)
    except (FileNotFoundError, StateError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
