"""Does one many-file copy scale out on Dask? (issue #8)

``uv run python bench/dask_scaling.py`` writes ``--files`` files of ``--size`` bytes
(default 4,000 x 16 KiB, under ``bench/data/dask-scaling/``, reused), starts SeaweedFS
(``tests/servers.py``), and copies the tree to a fresh prefix with a
``distributed.LocalCluster`` of 1 and of 2 single-threaded worker processes,
alternating (1, 2, 2, 1, 1, 2, ...), ``--reps`` times each. The single-node engine
(no Dask) runs in the same rotation as a reference.

Each cluster is started before the clock starts and closed after it stops, so the
wall time is the copy itself: planning, shipping shards, the workers' copies, the
manifest and journal on the client. "client CPU" is this process's user+sys time
over the copy: the planning, manifest and journal, and the Dask scheduler, which a
``LocalCluster`` runs in the client's process. "worker CPU" is the sum over worker
processes (``client.run`` reading each one's rusage before and after); "server CPU"
is SeaweedFS's, and "machine busy" the share of all cores' time not idle (both from
/proc), which says whether the machine itself was the limit.

Small-file copies are CPU-bound in Python (per-file requests, hashing, bookkeeping);
with the work on worker processes the client only plans and records, so on an
N-core machine N workers should approach N x one worker, until the client, the
scheduler or the server (SeaweedFS shares the same cores here) is the limit.
A table goes to stdout and the record to ``bench/results/dask-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT / "tests")]

from distributed import Client, LocalCluster  # noqa: E402

import datamover  # noqa: E402
from datamover.options import (  # noqa: E402
    DaskOptions,
    KiB,
    parse_size,
)

import servers  # noqa: E402

BUCKET = "dm-dask-scaling"


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _proc_cpu(pid: int) -> float:
    """User+sys seconds of process ``pid`` (the server), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine() -> tuple[float, float]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def _make_tree(root: Path, files: int, size: int) -> None:
    stamp = root / f".complete-{files}-{size}"
    if stamp.exists():
        return
    for i in range(files):
        path = root / f"d{i % 40:02d}" / f"f{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    stamp.touch()


def _one(
    mode: str, src: Path, dst: str, state: Path, shard_files: int, transfers: int, server: int
) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "state_dir": str(state),
        "manifest": str(state / f"{dst.rsplit('/', 2)[-2]}.jsonl"),
        "transfers": transfers,
    }
    if mode == "local":
        server0, busy0 = _proc_cpu(server), _machine()
        cpu0, t0 = _cpu(), time.perf_counter()
        report = datamover.copy(str(src), dst, **opts)
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        server1, busy1 = _proc_cpu(server), _machine()
        workers_cpu = 0.0
    else:
        n = int(mode.split(":")[1])
        with (
            LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster,
            Client(cluster) as client,
        ):
            client.wait_for_workers(n)
            before = client.run(_cpu)
            server0, busy0 = _proc_cpu(server), _machine()
            cpu0, t0 = _cpu(), time.perf_counter()
            report = datamover.copy(
                str(src),
                dst,
                client=client,
                dask_options=DaskOptions(shard_files=shard_files),
                **opts,
            )
            wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
            server1, busy1 = _proc_cpu(server), _machine()
            after = client.run(_cpu)
            workers_cpu = sum(after[w] - before[w] for w in after)
    assert report.ok and report.files_ok > 0, report.failures[:3]
    return {
        "mode": mode,
        "files": report.files_ok,
        "wall": wall,
        "client_cpu": cpu,
        "workers_cpu": workers_cpu,
        "server_cpu": server1 - server0,
        "machine_busy": (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=4000)
    p.add_argument("--size", default="16KiB")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--shard-files", type=int, default=250)
    p.add_argument("--transfers", type=int, default=8)
    p.add_argument("--no-local", action="store_true", help="skip the single-node reference")
    p.add_argument(
        "--to",
        choices=["seaweed", "posix"],
        default="seaweed",
        help="destination: SeaweedFS (default), or a local directory, which takes the "
        "server's CPU out of the picture (SeaweedFS still runs, idle)",
    )
    args = p.parse_args()
    size = parse_size(args.size)
    src = BENCH / "data" / "dask-scaling" / f"{args.files}x{size // KiB}KiB"
    _make_tree(src, args.files, size)
    work = BENCH / "data" / f"dask-work-{os.getpid()}"
    work.mkdir(parents=True)
    modes = ["dask:1", "dask:2"] + ([] if args.no_local else ["local"])
    rows: list[dict[str, Any]] = []
    with servers.SeaweedServer(volume_size_limit_mb=1024) as s3:
        os.environ.update(s3.env)
        s3.make_bucket(BUCKET)
        # One untimed copy first, so no mode pays for the server's first volume.
        assert s3.pid is not None
        run = functools.partial(
            _one, state=work, shard_files=args.shard_files, transfers=args.transfers, server=s3.pid
        )
        run("local", src, f"s3://{BUCKET}/warm/")
        for rep in range(args.reps):
            order = modes if rep % 2 == 0 else modes[::-1]
            for mode in order:
                name = f"r{rep}-{mode.replace(':', '')}"
                dst = f"s3://{BUCKET}/{name}/" if args.to == "seaweed" else f"{work}/out/{name}/"
                row = run(mode, src, dst)
                row["rep"] = rep
                rows.append(row)
                print(
                    f"rep {rep} {mode:7s} wall {row['wall']:6.2f}s  client CPU "
                    f"{row['client_cpu']:6.2f}s  workers CPU {row['workers_cpu']:6.2f}s  "
                    f"server CPU {row['server_cpu']:6.2f}s  machine busy {row['machine_busy']:4.0%}",
                    flush=True,
                )
    summary: dict[str, dict[str, float]] = {}
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        walls = [r["wall"] for r in mine]
        summary[mode] = {
            "wall_median": statistics.median(walls),
            "wall_min": min(walls),
            "wall_max": max(walls),
            "files_per_s": args.files / statistics.median(walls),
            "client_cpu_median": statistics.median(r["client_cpu"] for r in mine),
            "workers_cpu_median": statistics.median(r["workers_cpu"] for r in mine),
            "server_cpu_median": statistics.median(r["server_cpu"] for r in mine),
            "machine_busy_median": statistics.median(r["machine_busy"] for r in mine),
        }
    ratio = summary["dask:1"]["wall_median"] / summary["dask:2"]["wall_median"]
    print()
    print(f"{args.files} x {args.size} to {args.to}, {args.reps} reps, {os.cpu_count()} cores")
    print(
        f"{'mode':8s} {'wall median (min-max)':>24s} {'files/s':>8s} {'client CPU':>11s} "
        f"{'workers CPU':>12s} {'server CPU':>11s} {'machine busy':>13s}"
    )
    for mode, m in summary.items():
        print(
            f"{mode:8s} {m['wall_median']:9.2f}s ({m['wall_min']:.2f}-{m['wall_max']:.2f}) "
            f"{m['files_per_s']:8.0f} {m['client_cpu_median']:10.2f}s {m['workers_cpu_median']:11.2f}s "
            f"{m['server_cpu_median']:10.2f}s {m['machine_busy_median']:12.0%}"
        )
    print(f"speed-up, 2 workers over 1: {ratio:.2f}x")
    out = BENCH / "results" / f"dask-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    record = {
        "args": vars(args),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rows": rows,
        "summary": summary,
        "ratio_2_over_1": ratio,
    }
    out.write_text(json.dumps(record, indent=1))
    print(f"record: {out}")
    for path in sorted(work.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    work.rmdir()


if __name__ == "__main__":
    main()
