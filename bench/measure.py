"""Measuring one command: wall time, client CPU (user+sys) and peak RSS.

A command runs as a child process; ``os.wait4`` returns its rusage, which on Linux
covers the child and every descendant it waited for (so ``sh -c 'cp && sha256sum'``
counts both). ``ru_maxrss`` is the largest resident set among them, in KiB.

Some clients are daemons that outlive the command being timed (a FUSE mount serving
``dd``): ``DaemonWatch`` samples ``/proc/PID/stat`` (utime+stime of all its threads)
before and after, and ``VmHWM`` for its peak RSS since it started, and the sample adds
them to the command's own numbers.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Sample:
    wall: float
    user: float
    sys: float
    maxrss_kib: int
    rc: int
    daemon_cpu: float = 0.0
    daemon_rss_kib: int = 0

    @property
    def cpu(self) -> float:
        return self.user + self.sys + self.daemon_cpu

    @property
    def rss_mib(self) -> float:
        return max(self.maxrss_kib, self.daemon_rss_kib) / 1024

    def as_json(self) -> dict[str, Any]:
        return {
            "wall_s": round(self.wall, 4),
            "user_s": round(self.user, 4),
            "sys_s": round(self.sys, 4),
            "daemon_cpu_s": round(self.daemon_cpu, 4),
            "cpu_s": round(self.cpu, 4),
            "peak_rss_mib": round(self.rss_mib, 1),
            "rc": self.rc,
        }


class CommandFailed(RuntimeError):
    pass


class DaemonWatch:
    """CPU and peak RSS of a long-running client process (e.g. a FUSE daemon)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._start = self.cpu_seconds()

    def cpu_seconds(self) -> float:
        text = Path(f"/proc/{self.pid}/stat").read_text()
        fields = text[text.rindex(")") + 2 :].split()
        # utime, stime, cutime, cstime are fields 14-17 (1-based) of the full line.
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        return (utime + stime + cutime + cstime) / _TICK

    def peak_rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def delta(self) -> tuple[float, int]:
        return self.cpu_seconds() - self._start, self.peak_rss_kib()


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    log: IO[bytes] | None = None,
    timeout: float = 3600.0,
    daemon_pid: int | None = None,
    until: Callable[[], bool] | None = None,
) -> Sample:
    """Run ``argv`` to completion and measure it. ``until``, when given, is polled
    after the command exits and the clock stops only when it returns True (e.g. "the
    object written through the mount is visible in the bucket")."""
    watch = DaemonWatch(daemon_pid) if daemon_pid else None
    out = log if log is not None else subprocess.DEVNULL
    if log is not None:
        log.write(f"$ {' '.join(map(str, argv))}\n".encode())
        log.flush()
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(map(str, argv)),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=out,
    )
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.002)
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc  # already reaped: keep Popen from waiting again
    if until is not None and rc == 0:
        while not until():
            if time.perf_counter() > deadline:
                raise CommandFailed(f"{argv[0]}: result not visible after {timeout:.0f} s")
            time.sleep(0.02)
    wall = time.perf_counter() - started
    sample = Sample(wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss, rc)
    if watch is not None:
        sample.daemon_cpu, sample.daemon_rss_kib = watch.delta()
    return sample


@dataclass(slots=True)
class Summary:
    n: int
    wall_med: float
    wall_min: float
    wall_max: float
    cpu_med: float
    cpu_min: float
    cpu_max: float
    rss_med_mib: float
    rss_max_mib: float
    extra: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": self.n,
            "wall_s": {"median": r4(self.wall_med), "min": r4(self.wall_min), "max": r4(self.wall_max)},
            "cpu_s": {"median": r4(self.cpu_med), "min": r4(self.cpu_min), "max": r4(self.cpu_max)},
            "peak_rss_mib": {"median": round(self.rss_med_mib, 1), "max": round(self.rss_max_mib, 1)},
        }
        out.update({k: r4(v) for k, v in self.extra.items()})
        return out


def r4(x: float) -> float:
    return round(x, 4)


def summarize(samples: Sequence[Sample]) -> Summary:
    walls = [s.wall for s in samples]
    cpus = [s.cpu for s in samples]
    rss = [s.rss_mib for s in samples]
    return Summary(
        n=len(samples),
        wall_med=statistics.median(walls),
        wall_min=min(walls),
        wall_max=max(walls),
        cpu_med=statistics.median(cpus),
        cpu_min=min(cpus),
        cpu_max=max(cpus),
        rss_med_mib=statistics.median(rss),
        rss_max_mib=max(rss),
    )
