"""SIGINT and SIGTERM for the CLI: the first one stops the run the orderly way, the
second one at once. SIGPIPE (standard output closed: the reader of ``--json`` or of
the summary went away) stops the run the orderly way too, and exits 141.

The first signal raises ``Interrupted`` (a ``KeyboardInterrupt``) in the main thread:
the runner stops scheduling, lets the parts in flight end (each bounded by one part's
read and write), the manifest is suspended and the journal flushed and marked, and
``main`` prints how to resume (``datamover jobs resume ID [--state-dir DIR]``) and
exits 130 (SIGINT) or 143 (SIGTERM). A second signal while that happens exits at once
(``os._exit``), with the same code: the journal is SQLite in WAL mode, so what it
committed stays committed, and the next run resumes from there.
"""

from __future__ import annotations

import os
import shlex
import signal
import threading
from collections.abc import Callable
from types import FrameType

from datamover.job import Observer, RunInfo


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop by ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_state = {"signum": 0}
#: The job the current run journals to (for the resume hint), once it started.
current_job: list[str] = []


def _handler(signum: int, frame: FrameType | None) -> None:
    if signum == signal.SIGPIPE and _state["signum"]:
        return  # each write to the closed pipe sends one: the stop is under way
    if _state["signum"]:
        os.write(2, b"datamover: stopped at once\n")
        os._exit(128 + _state["signum"])
    _state["signum"] = signum
    raise Interrupted(signum)


#: The commands that run a transfer (``jobs resume`` is one).
COMMANDS = ("copy", "sync", "jobs")


def runs_a_transfer(command: str, action: str | None) -> bool:
    """Whether ``datamover COMMAND [ACTION]`` runs a transfer (``jobs resume`` does;
    ``jobs list`` and ``jobs show`` only print)."""
    return command in ("copy", "sync") or (command == "jobs" and action == "resume")


def install(*, pipe: bool = False) -> Callable[[], None] | None:
    """Handle SIGINT and SIGTERM as above, and SIGPIPE with ``pipe`` (a transfer;
    a command that only prints stops at a closed pipe as listings do), on the main
    thread only (elsewhere a no-op). Returns what puts the previous handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return None
    _state["signum"] = 0
    current_job.clear()
    signals = (signal.SIGINT, signal.SIGTERM, *((signal.SIGPIPE,) if pipe else ()))
    before = {s: signal.signal(s, _handler) for s in signals}

    def restore() -> None:
        for s, handler in before.items():
            signal.signal(s, handler)

    return restore


def exit_code(e: KeyboardInterrupt) -> int:
    """130 for SIGINT (or a plain KeyboardInterrupt), 143 for SIGTERM, 141 for SIGPIPE."""
    return 128 + (e.signum if isinstance(e, Interrupted) else signal.SIGINT)


def resume_hint(state_dir: str | None = None) -> str:
    """What to tell the user after an interrupted run; ``state_dir`` is the run's
    ``--state-dir``, named in the command (absolute, quoted for a shell) so that the
    command finds the journal from any directory."""
    what = "interrupted"
    if _state["signum"] == signal.SIGPIPE:
        what = "stopped: its standard output was closed (broken pipe)"
    if not current_job:
        return f"datamover: {what}"
    job = current_job[-1]
    where = f" --state-dir {shlex.quote(os.path.abspath(state_dir))}" if state_dir else ""
    return (
        f"datamover: {what}; job {job} is saved in the journal: resume it with "
        f"`datamover jobs resume {job}{where}` (or run the same command again)"
    )


class JobTracker(Observer):
    """Remembers the job a run journals to, for ``resume_hint``."""

    def run_started(self, run: RunInfo) -> None:
        if run.job_id and not run.dry_run:
            current_job.append(run.job_id)
