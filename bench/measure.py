"""Measuring one command: wall time, client CPU (user+sys) and peak RSS.

A command runs as a grandchild: the harness starts ``spawn`` (bench/spawn.c, built
on first use), which forks the command, reaps it with ``wait4`` and writes its rusage
to a file. That rusage covers the command and every descendant it waited for (so
``sh -c 'cp && sha256sum'`` counts both); ``ru_maxrss`` is the largest resident set
among them, in KiB. The launcher exists because Linux starts a forked child's
``ru_maxrss`` at its parent's high-water mark: forked straight from this Python
process, ``dd`` would report the harness's ~140 MiB. Without a C compiler the harness
falls back to forking directly and says so (RSS then has that floor).

The machine may be shared: ``Contention`` reads ``/proc/stat`` around each sample and
records the CPU seconds that neither the client nor the servers used ("others").

Some clients are daemons that outlive the command being timed (a FUSE mount serving
``dd``): ``DaemonWatch`` samples ``/proc/PID/stat`` (utime+stime of all its threads)
before and after, and ``VmHWM`` for its peak RSS since it started, and the sample adds
them to the command's own numbers.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
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
    server_cpu: float = 0.0
    others_cpu: float = 0.0

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
            "server_cpu_s": round(self.server_cpu, 3),
            "others_cpu_s": round(self.others_cpu, 3),
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


def _proc_cpu(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return sum(int(x) for x in fields[11:15]) / _TICK


def machine_busy() -> float:
    """CPU seconds all cores spent not idle since boot."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    values = [int(x) for x in parts[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / _TICK


def wait_for_quiet(server_pids: Sequence[int], max_wait: float, threshold: float = 0.25) -> float:
    """Wait (up to ``max_wait`` s) until other processes use under ``threshold`` of
    one core over a 1 s window; returns the seconds waited."""
    began = time.monotonic()
    while time.monotonic() - began < max_wait:
        b0, s0 = machine_busy(), sum(_proc_cpu(p) for p in server_pids)
        time.sleep(1.0)
        b1, s1 = machine_busy(), sum(_proc_cpu(p) for p in server_pids)
        if (b1 - b0) - (s1 - s0) < threshold:
            break
    return time.monotonic() - began


_SPAWN: str | None = None


def launcher(build_dir: Path) -> str | None:
    """Path of the compiled ``spawn`` launcher (built once), or None without cc."""
    global _SPAWN
    if _SPAWN is not None:
        return _SPAWN or None
    source = Path(__file__).with_name("spawn.c")
    binary = build_dir / "spawn"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        build_dir.mkdir(parents=True, exist_ok=True)
        cc = shutil.which("cc") or shutil.which("gcc")
        ok = (
            cc is not None
            and subprocess.run([cc, "-O2", "-o", str(binary), str(source)]).returncode == 0
        )
        if not ok:
            print("# no C compiler: peak RSS of small commands includes the harness's", flush=True)
            _SPAWN = ""
            return None
    _SPAWN = str(binary)
    return _SPAWN


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    log: IO[bytes] | None = None,
    timeout: float = 3600.0,
    daemon_pid: int | None = None,
    until: Callable[[], bool] | None = None,
    spawn: str | None = None,
    server_pids: Sequence[int] = (),
) -> Sample:
    """Run ``argv`` to completion and measure it. ``until``, when given, is polled
    after the command exits and the clock stops only when it returns True (e.g. "the
    object written through the mount is visible in the bucket")."""
    watch = DaemonWatch(daemon_pid) if daemon_pid else None
    out = log if log is not None else subprocess.DEVNULL
    if log is not None:
        log.write(f"$ {' '.join(map(str, argv))}\n".encode())
        log.flush()
    result_file = None
    cmd = list(map(str, argv))
    if spawn:
        fd, result_file = tempfile.mkstemp(prefix="dm-bench-rusage-")
        os.close(fd)
        cmd = [spawn, result_file, *cmd]
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0 = machine_busy()
    servers0 = sum(_proc_cpu(p) for p in server_pids)
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=out,
        start_new_session=True,
    )
    # A blocking wait (Popen.wait(timeout) polls with sleeps of up to 50 ms).
    killer = threading.Timer(timeout, os.killpg, (proc.pid, signal.SIGKILL))
    killer.start()
    try:
        proc.wait()
    finally:
        killer.cancel()
    if until is not None and proc.returncode == 0:
        deadline = started + timeout
        while not until():
            if time.perf_counter() > deadline:
                raise CommandFailed(f"{argv[0]}: result not visible after {timeout:.0f} s")
            time.sleep(0.02)
    wall = time.perf_counter() - started
    busy = machine_busy() - busy0
    server_cpu = sum(_proc_cpu(p) for p in server_pids) - servers0
    if result_file is not None:
        try:
            fields = Path(result_file).read_text().split()
        finally:
            os.unlink(result_file)
        if not fields:
            raise CommandFailed(f"{argv[0]}: launcher wrote no rusage")
        user, sys_, maxrss, status = (
            float(fields[0]),
            float(fields[1]),
            int(fields[2]),
            int(fields[3]),
        )
        rc = os.waitstatus_to_exitcode(status)
    else:
        # Without the launcher: the growth of this process's children's totals (a
        # max, for maxrss, so it has the harness's own RSS as a floor).
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        user = children1.ru_utime - children0.ru_utime
        sys_ = children1.ru_stime - children0.ru_stime
        maxrss = children1.ru_maxrss
        rc = proc.returncode
    sample = Sample(wall, user, sys_, maxrss, rc)
    if watch is not None:
        sample.daemon_cpu, sample.daemon_rss_kib = watch.delta()
    sample.server_cpu = server_cpu
    sample.others_cpu = max(0.0, busy - server_cpu - sample.cpu)
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
            "wall_s": {
                "median": r4(self.wall_med),
                "min": r4(self.wall_min),
                "max": r4(self.wall_max),
            },
            "cpu_s": {"median": r4(self.cpu_med), "min": r4(self.cpu_min), "max": r4(self.cpu_max)},
            "peak_rss_mib": {
                "median": round(self.rss_med_mib, 1),
                "max": round(self.rss_max_mib, 1),
            },
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


def s3fs_mount(
    bucket: str,
    mnt: str,
    endpoint: str,
    region: str,
    access_key: str,
    secret_key: str,
    passwd: Path,
) -> tuple[list[str], dict[str, str]]:
    """s3fs 1.90 mounting ``bucket`` of a local S3 server in the foreground, with its
    best flags for big sequential I/O (the same in every benchmark row it has), and the
    environment to run it in (no AWS_* variables: its passwd file holds the keys)."""
    passwd.write_text(f"{access_key}:{secret_key}\n")
    passwd.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    argv = ["s3fs", bucket, mnt, "-f", "-o", f"url={endpoint}", "-o", "use_path_request_style"]
    argv += ["-o", f"passwd_file={passwd}", "-o", f"endpoint={region}"]
    argv += ["-o", "parallel_count=8", "-o", "multipart_size=16"]
    return argv, env
