"""``--processes`` (issue #18.4): many small files up to and down from SeaweedFS with
datamover in one process, in 1 + 2 worker processes, and rclone, side by side.

    uv run python bench/processes.py                 # 10,000 x 4 KiB, 3 repetitions
    uv run python bench/processes.py --count 5000 --reps 5

Each repetition runs every tool once, in alternating order (reversed on odd
repetitions). Per sample: wall from spawn to exit; client CPU-s from ``wait4`` of the
command, which includes every descendant it reaped (datamover reaps its workers);
peak RSS is the largest *sum* of ``VmRSS`` over the command's process tree, sampled
every 20 ms (``ru_maxrss`` would give only the largest single process). Medians are
printed as a Markdown table; every sample goes to ``bench/results/processes-*.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT / "tests")]

import servers  # noqa: E402

BUCKET = "bench"
VENV_BIN = Path(sys.executable).parent
DATAMOVER = str(VENV_BIN / "datamover")


def tree_rss_kib(root: int) -> int:
    """Sum of VmRSS over ``root`` and its descendants (a snapshot)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, grew = {root}, True
    while grew:
        more = {p for p, pp in parent.items() if pp in tree} - tree
        grew = bool(more)
        tree |= more
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def measure(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], tree_rss_kib(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {err[-2000:]}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mib": peak[0] / 1024,
    }


def compile_bytecode() -> None:
    """As ``bench/run.py`` does: .pyc files for the venv and the package, else every
    process (each worker too) compiles boto3/botocore from source, ~1 CPU-s a start
    here (uv installs without .pyc and this environment sets PYTHONDONTWRITEBYTECODE)."""
    import sysconfig

    paths = [sysconfig.get_path("purelib"), str(ROOT / "datamover")]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j0", *paths],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def make_tree(root: Path, count: int, size: int) -> None:
    marker = root / f".made-{count}x{size}"
    if marker.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    for i in range(count):
        d = root / f"d{i % 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.bin").write_bytes(os.urandom(size))
    marker.write_text("")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--transfers", type=int, default=32)
    ap.add_argument("--no-compile", action="store_true", help="don't write .pyc files first")
    args = ap.parse_args()
    if not args.no_compile:
        compile_bytecode()
    data = BENCH / "data" / "procs" / f"{args.count}x{args.size}"
    make_tree(data, args.count, args.size)
    (data / f".made-{args.count}x{args.size}").unlink()  # not part of the copy
    work = Path(tempfile.mkdtemp(prefix="procs-", dir=BENCH / "data"))
    samples: dict[str, list[dict[str, float]]] = {}
    try:
        with servers.SeaweedServer(volume_size_limit_mb=1024) as s:
            s.make_bucket(BUCKET)
            dm_env = {**s.client_env(), "XDG_STATE_HOME": str(work / "state")}
            rc_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
            for key, value in {
                "TYPE": "s3",
                "PROVIDER": "Other",
                "ENDPOINT": s.endpoint,
                "ACCESS_KEY_ID": s.access_key,
                "SECRET_ACCESS_KEY": s.secret_key,
                "REGION": s.region,
                "FORCE_PATH_STYLE": "true",
            }.items():
                rc_env[f"RCLONE_CONFIG_SW_{key}"] = value
            conf = work / "rclone.conf"
            conf.write_text("")
            rc = [str(VENV_BIN / "rclone"), "--config", str(conf), "-q", "copy", "--transfers",
                  str(args.transfers), "--checkers", str(args.transfers)]  # fmt: skip
            fixture = f"s3://{BUCKET}/fixture/"
            subprocess.run(
                [DATAMOVER, "-q", "copy", str(data), fixture, "--new-job",
                 "--manifest", str(work / "fixture.jsonl"), "--processes", "1"],
                env=dm_env, check=True,
            )  # fmt: skip

            def dm(direction: str, n: int, run: str) -> tuple[list[str], dict[str, str]]:
                src, dst = (
                    (str(data), f"s3://{BUCKET}/{run}/")
                    if direction == "up"
                    else (fixture, str(work / run) + "/")
                )
                argv = [DATAMOVER, "-q", "copy", src, dst, "--new-job", "--manifest",
                        str(work / f"{run}.jsonl"), "--transfers", str(args.transfers),
                        "--processes", str(n)]  # fmt: skip
                return argv, dm_env

            def rclone(direction: str, run: str) -> tuple[list[str], dict[str, str]]:
                if direction == "up":
                    argv = [*rc, str(data), f"SW:{BUCKET}/{run}/", "--s3-no-check-bucket"]
                else:
                    argv = [*rc, f"SW:{BUCKET}/fixture/", str(work / run)]
                return argv, rc_env

            tools: dict[str, Any] = {
                "dm --processes 1": lambda d, r: dm(d, 1, r),
                "dm --processes 2": lambda d, r: dm(d, 2, r),
                "rclone": rclone,
            }
            for direction in ("up", "down"):
                for rep in range(args.reps):
                    order = list(tools) if rep % 2 == 0 else list(reversed(tools))
                    for name in order:
                        run = f"{direction}-{name.replace(' ', '').replace('-', '')}-{rep}"
                        argv, env = tools[name](direction, run)
                        sample = measure(argv, env)
                        samples.setdefault(f"{direction}|{name}", []).append(sample)
                        print(f"# {direction} {name} rep {rep}: {sample}", flush=True)
                        if direction == "down":  # a short copy is no row
                            got = sum(1 for p in (work / run).rglob("*") if p.is_file())
                            if got != args.count:
                                raise SystemExit(f"{run}: {got} files, expected {args.count}")
                        shutil.rmtree(work / run, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.count} x {args.size} B, SeaweedFS, --transfers {args.transfers}, "
          f"medians of {args.reps}; load average {os.getloadavg()[0]:.1f}\n")  # fmt: skip
    print("| direction | tool | wall s | client CPU-s | peak RSS MiB (sum) |")
    print("|---|---|---|---|---|")
    for key, rows in samples.items():
        direction, name = key.split("|")
        med = {m: statistics.median(r[m] for r in rows) for m in ("wall", "cpu", "rss_mib")}
        print(f"| {direction} | {name} | {med['wall']:.2f} | {med['cpu']:.2f} | "
              f"{med['rss_mib']:.0f} |")  # fmt: skip
    out = BENCH / "results" / f"processes-{dt.datetime.now():%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "samples": samples}, indent=1))


if __name__ == "__main__":
    main()
