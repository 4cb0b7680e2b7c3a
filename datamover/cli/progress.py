"""The terminal progress display (rich), for the CLI.

One overall bar (bytes done of bytes found, files done of files found, rate, ETA) and
one line per file in flight, the ``largest`` biggest of them. While the plan is still
streaming the listing, the overall line says ``planning: N files, X found`` and the
totals grow; the ETA appears once the plan is complete.

Cheap by construction: the engine's hooks only bump counters under a lock (``Tally``);
the picture is drawn by rich's own refresh thread a few times a second from a
snapshot, so a million small files cost a million counter updates, not a million
redraws. Nothing is animated unless the console is a terminal: ``make_progress``
returns None for pipes and files (logs and ``--json`` stay clean).

Per-file bars fill when the engine says which file bytes belong to; otherwise a file
line shows its size and how long it has been in flight.
"""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from datamover.cli.common import escaped
from datamover.job import RunInfo, TransferReport
from datamover.options import format_size
from datamover.reporting.events import Snapshot, Tally


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(seconds + 0.5)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _short(path: str, width: int) -> str:
    return path if len(path) <= width else "…" + path[-(width - 1) :]


def render(snap: Snapshot, *, title: str = "", width: int = 100) -> RenderableType:
    """The picture for one snapshot (also what the tests look at): a bar and a line
    of text per row, the bar narrowing on narrow terminals."""
    bar_width = min(30, max(8, width - 70))
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, width=bar_width)
    grid.add_column(no_wrap=True, overflow="ellipsis")
    rate = f"{format_size(snap.rate)}/s"
    if snap.planning:
        grid.add_row(
            ProgressBar(total=None, width=bar_width, pulse=True),
            Text(
                f"planning: {snap.files_total} files, {format_size(snap.bytes_total)} found · "
                f"{format_size(snap.bytes_done)} done · {rate} · {format_duration(snap.elapsed)}",
                style="cyan",
            ),
        )
    else:
        total = max(snap.bytes_total, 1)
        percent = 100.0 * snap.bytes_done / total
        grid.add_row(
            ProgressBar(total=total, completed=snap.bytes_done, width=bar_width),
            Text(
                f"{title + ' ' if title else ''}{format_size(snap.bytes_done)} / "
                f"{format_size(snap.bytes_total)} ({percent:.0f}%) · files "
                f"{snap.files_done}/{snap.files_total} · {rate} · ETA {format_duration(snap.eta)}"
            ),
        )
    name_width = max(16, width - bar_width - 30)
    for path, size, done, seconds in snap.in_flight:
        if done is None:
            bar = ProgressBar(total=None, width=bar_width, pulse=True)
            where = f"{format_size(size)}  {format_duration(seconds)}"
        else:
            bar = ProgressBar(total=max(size, 1), completed=done, width=bar_width)
            where = f"{format_size(done)} / {format_size(size)}"
        line = Text(_short(escaped(path), name_width) + "  ")
        line.append(where, style="dim")
        grid.add_row(bar, line)
    extras = []
    if snap.files_failed:
        extras.append(f"{snap.files_failed} failed")
    if snap.files_skipped:
        extras.append(f"{snap.files_skipped} unchanged")
    if snap.retries:
        extras.append(f"{snap.retries} retries")
    parts: list[RenderableType] = [grid]
    if extras:
        parts.append(Text("  ".join(extras), style="yellow"))
    return Group(*parts)


class RichProgress(Tally):
    """A live display on ``console``; ``start``/``stop`` (or the run hooks) drive it."""

    def __init__(self, console: Console, *, largest: int = 4, refresh_per_second: float = 4):
        super().__init__()
        self.console = console
        self.largest = largest
        self._title = ""
        self._live = Live(
            console=console,
            refresh_per_second=refresh_per_second,
            transient=True,
            get_renderable=self._renderable,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._running = False

    def _renderable(self) -> RenderableType:
        return render(self.snapshot(self.largest), title=self._title, width=self.console.width)

    def start(self) -> None:
        if not self._running:
            self._running = True
            self._live.start()

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._live.stop()

    def run_started(self, run: RunInfo) -> None:
        super().run_started(run)
        self._title = "dry run" if run.dry_run else run.operation
        self.start()

    def run_finished(self, report: TransferReport, error: BaseException | None) -> None:
        self.stop()


def make_progress(console: Console | None = None, *, quiet: bool = False) -> RichProgress | None:
    """A ``RichProgress`` when ``console`` (default: standard error) is an interactive
    terminal, else None."""
    console = console or Console(stderr=True)
    if quiet or not console.is_terminal or console.is_dumb_terminal:
        return None
    return RichProgress(console)
