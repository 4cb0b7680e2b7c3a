"""Real random-access codes through a mount (issue #23, point 4): datamover beside
s3fs 1.90 on SeaweedFS, side by side in one run. s3fs twice: with the flags of every
other mount row (``measure.s3fs_mount``: ``parallel_count=8, multipart_size=16``),
and ``s3fs-cache``, the same with ``use_cache=DIR`` (a fresh directory per mount) so
it keeps what it downloaded across opens.

    uv run python bench/mount_workloads.py                 # all three, 3 repetitions
    uv run python bench/mount_workloads.py --workloads sqlite --reps 1 --scale 0.1

Workloads (datasets generated once under ``--work``, reused while their spec matches;
uploaded with plain boto3, so neither mount finds its own metadata on them):

* ``samtools``: ``samtools view -c reads.bam REGION`` for 50 random regions of a
  coordinate-sorted, indexed BAM (synthetic reference of 4 contigs, random 100 bp reads
  from generated SAM, ``samtools sort`` + ``samtools index``), one process per region;
* ``h5py``: 200 random chunks of a chunked float32 dataset (256 KiB chunks, no filter),
  read by slicing (``--worker h5``, this file);
* ``sqlite``: 1,000 point lookups through an index (``SELECT ... WHERE name = ?``) on a
  table of a few million rows, opened ``file:...?mode=ro&immutable=1`` (``--worker
  sqlite``, this file).

Each sample runs on a fresh mount with the page cache dropped (``echo 3 >
/proc/sys/vm/drop_caches``, root only); tools alternate (datamover first on even
repetitions). Measured with ``bench/measure.py``: wall time of the workload, the mount
daemon's CPU seconds and peak RSS (``VmHWM``), and the workload's own CPU. The same
workload on the local files gives the reference answers: every tool's answers must be
byte-identical to them (a benchmark that returns wrong data is a bug, and the run exits
1). Writes ``bench/results/mount-workloads-<stamp>.json``. Installs ``samtools`` and
``s3fs`` with apt-get when missing.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# The harness (bench/measure.py, bench/mount_random.py, tests/servers.py) is imported
# in main(): the workers this file also runs through the mounts start without it.
if TYPE_CHECKING:
    import measure
    import mount_random

MiB = 1024 * 1024
BUCKET = "bench-workloads"
PY = sys.executable
WORKLOADS = ("samtools", "h5py", "sqlite")
#: s3fs as in every other mount row (``measure.s3fs_mount``), and with ``use_cache``.
PEERS = ("s3fs", "s3fs-cache")
CONTIGS = 4
CONTIG_LEN = 5_000_000
READ_LEN = 100
H5_COLS = 1024
H5_CHUNK_ROWS = 64  # 64 x 1024 float32 = 256 KiB a chunk


# -- workers: run through a mount, write one answer per line to OUT ----------------------


def worker_h5(path: str, picks: str, out: str) -> None:
    import h5py

    with h5py.File(path, "r") as f, open(out, "w") as o:
        ds = f["data"]
        for line in Path(picks).read_text().split():
            i = int(line)
            block = ds[i * H5_CHUNK_ROWS : (i + 1) * H5_CHUNK_ROWS]
            o.write(f"{i} {hashlib.sha256(block.tobytes()).hexdigest()}\n")


def worker_sqlite(path: str, picks: str, out: str) -> None:
    uri = f"file:{urllib.parse.quote(path)}?mode=ro&immutable=1"
    db = sqlite3.connect(uri, uri=True)
    try:
        with open(out, "w") as o:
            for name in Path(picks).read_text().split():
                rows = db.execute(
                    "SELECT id, score, payload FROM reads WHERE name = ?", (name,)
                ).fetchall()
                o.write(f"{name} {rows!r}\n")
    finally:
        db.close()


# -- datasets ---------------------------------------------------------------------------


def _spec_ok(path: Path, spec: dict[str, Any]) -> bool:
    meta = path.with_name(path.name + ".spec.json")
    return path.exists() and meta.exists() and json.loads(meta.read_text()) == spec


def _spec_write(path: Path, spec: dict[str, Any]) -> None:
    path.with_name(path.name + ".spec.json").write_text(json.dumps(spec))


def make_bam(work: Path, reads: int, seed: int) -> list[Path]:
    import numpy as np

    bam = work / "reads.bam"
    spec = {"reads": reads, "seed": seed, "contigs": CONTIGS, "len": CONTIG_LEN}
    if _spec_ok(bam, spec):
        return [bam, work / "reads.bam.bai"]
    print(f"# generating a BAM of {reads:,} reads", flush=True)
    rng = np.random.default_rng(seed)
    header = "@HD\tVN:1.6\tSO:unsorted\n" + "".join(
        f"@SQ\tSN:chr{c + 1}\tLN:{CONTIG_LEN}\n" for c in range(CONTIGS)
    )
    sort = subprocess.Popen(
        ["samtools", "sort", "-@", "2", "-m", "256M", "-T", str(work / "sorttmp"), "-o", str(bam)],
        stdin=subprocess.PIPE,
    )
    assert sort.stdin is not None
    sort.stdin.write(header.encode())
    bases = np.frombuffer(b"ACGT", dtype=np.uint8)
    quals = np.frombuffer(b"#+5?I", dtype=np.uint8)
    batch = 100_000
    for first in range(0, reads, batch):
        n = min(batch, reads - first)
        contig = rng.integers(1, CONTIGS + 1, n)
        pos = rng.integers(1, CONTIG_LEN - READ_LEN, n)
        flag = rng.choice([0, 16], n)
        seqs = bases[rng.integers(0, 4, (n, READ_LEN))].view(f"S{READ_LEN}").ravel()
        qs = quals[rng.integers(0, 5, (n, READ_LEN))].view(f"S{READ_LEN}").ravel()
        lines = [
            f"r{first + i}\t{flag[i]}\tchr{contig[i]}\t{pos[i]}\t60\t{READ_LEN}M\t*\t0\t0\t"
            f"{seqs[i].decode()}\t{qs[i].decode()}\n"
            for i in range(n)
        ]
        sort.stdin.write("".join(lines).encode())
    sort.stdin.close()
    if sort.wait():
        raise RuntimeError("samtools sort failed")
    subprocess.run(["samtools", "index", str(bam)], check=True)
    _spec_write(bam, spec)
    return [bam, work / "reads.bam.bai"]


def make_h5(work: Path, chunks: int, seed: int) -> list[Path]:
    import h5py
    import numpy as np

    path = work / "chunks.h5"
    spec = {"chunks": chunks, "seed": seed, "cols": H5_COLS, "rows": H5_CHUNK_ROWS}
    if _spec_ok(path, spec):
        return [path]
    print(f"# generating an HDF5 file of {chunks:,} chunks", flush=True)
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "data", (chunks * H5_CHUNK_ROWS, H5_COLS), "f4", chunks=(H5_CHUNK_ROWS, H5_COLS)
        )
        step = 64
        for first in range(0, chunks, step):
            n = min(step, chunks - first)
            rows = rng.random((n * H5_CHUNK_ROWS, H5_COLS), dtype=np.float32)
            ds[first * H5_CHUNK_ROWS : (first + n) * H5_CHUNK_ROWS] = rows
    _spec_write(path, spec)
    return [path]


def _name(i: int, seed: int) -> str:
    return hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).hexdigest()


def make_sqlite(work: Path, rows: int, seed: int) -> list[Path]:
    import numpy as np

    path = work / "lookup.sqlite"
    spec = {"rows": rows, "seed": seed}
    if _spec_ok(path, spec):
        return [path]
    print(f"# generating an SQLite table of {rows:,} rows", flush=True)
    path.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    db = sqlite3.connect(path)
    db.executescript(
        "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
        "CREATE TABLE reads(id INTEGER PRIMARY KEY, name TEXT, score REAL, payload TEXT);"
    )
    batch = 100_000
    for first in range(0, rows, batch):
        n = min(batch, rows - first)
        scores = rng.random(n)
        payloads = rng.integers(0, 2**63, (n, 4), dtype=np.int64)
        db.executemany(
            "INSERT INTO reads VALUES (?, ?, ?, ?)",
            (
                (
                    first + i,
                    _name(first + i, seed),
                    float(scores[i]),
                    "-".join(f"{x:016x}" for x in payloads[i]),
                )
                for i in range(n)
            ),
        )
    db.execute("CREATE INDEX reads_name ON reads(name)")
    db.commit()
    db.close()
    _spec_write(path, spec)
    return [path]


def picks(work: Path, workload: str, scale: float, seed: int) -> Path:
    """The seeded queries of ``workload`` (the same for every tool and repetition)."""
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    out = work / f"{workload}.picks"
    if workload == "samtools":
        lines = []
        for _ in range(50):
            length = int(rng.integers(20_000, 100_000))
            start = int(rng.integers(1, CONTIG_LEN - length))
            lines.append(f"chr{rng.integers(1, CONTIGS + 1)}:{start}-{start + length}")
    elif workload == "h5py":
        chunks = h5_chunks(scale)
        lines = [str(i) for i in rng.integers(0, chunks, 200)]
    else:
        lines = [_name(int(i), seed) for i in rng.integers(0, sqlite_rows(scale), 1000)]
    out.write_text("\n".join(lines) + "\n")
    return out


def bam_reads(scale: float) -> int:
    return int(3_000_000 * scale)


def h5_chunks(scale: float) -> int:
    return max(200, int(1024 * scale))  # 256 MiB at scale 1


def sqlite_rows(scale: float) -> int:
    return int(3_000_000 * scale)


def dataset(work: Path, workload: str, scale: float, seed: int) -> list[Path]:
    if workload == "samtools":
        return make_bam(work, bam_reads(scale), seed)
    if workload == "h5py":
        return make_h5(work, h5_chunks(scale), seed)
    return make_sqlite(work, sqlite_rows(scale), seed)


def command(workload: str, where: Path, pick: Path, out: Path) -> list[str]:
    """The workload reading the files in directory ``where``, answers into ``out``."""
    if workload == "samtools":
        script = 'while read -r r; do samtools view -c "$0" "$r" || exit 1; done < "$1" > "$2"'
        return ["bash", "-c", script, str(where / "reads.bam"), str(pick), str(out)]
    file = where / ("chunks.h5" if workload == "h5py" else "lookup.sqlite")
    kind = "h5" if workload == "h5py" else "sqlite"
    return [PY, __file__, "--worker", kind, str(file), str(pick), str(out)]


# -- the run ----------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace, s: Any) -> None:
        self.args = args
        self.work: Path = args.work
        self.s = s
        self.stack = contextlib.ExitStack()
        self.spawn = measure.launcher(self.work / "build")
        self.samples: list[dict[str, Any]] = []
        self.errors: list[str] = []

    def datamover(self, mnt: Path) -> tuple[list[str], dict[str, str]]:
        s = self.s
        cache = Path(tempfile.mkdtemp(dir=self.work, prefix="dmcache-"))
        argv = [PY, "-m", "datamover", "-v", "mount", f"s3://{BUCKET}/", str(mnt)]
        argv += ["--foreground", "--read-only", "--cache-dir", str(cache), *self.args.dm_arg]
        return argv, {**s.client_env(), "XDG_STATE_HOME": str(self.work / "state")}

    def s3fs(self, mnt: Path) -> tuple[list[str], dict[str, str]]:
        s = self.s
        argv, env = measure.s3fs_mount(
            BUCKET,
            str(mnt),
            s.endpoint,
            s.region,
            s.access_key,
            s.secret_key,
            self.work / "s3fs.passwd",
        )
        return [*argv, "-o", "ro"], env

    def s3fs_cache(self, mnt: Path) -> tuple[list[str], dict[str, str]]:
        """s3fs keeping what it downloaded in a local directory across opens (without
        ``use_cache`` it fetches the object anew for each process that opens it)."""
        argv, env = self.s3fs(mnt)
        cache = Path(tempfile.mkdtemp(dir=self.work, prefix="s3fscache-"))
        return [*argv, "-o", f"use_cache={cache}", "-o", "del_cache"], env

    @contextlib.contextmanager
    def place(self, tool: str, tag: str) -> Iterator[tuple[Path, int | None]]:
        """The directory holding the files for ``tool`` (a fresh mount, or the local
        copy), and the mount daemon's pid."""
        if tool == "local":
            yield self.work / "data", None
            return
        mnt = self.work / "mnt" / f"{tool}-{tag}"
        argv_of: Callable[[Path], tuple[list[str], dict[str, str]]] = getattr(
            self, tool.replace("-", "_")
        )
        argv, env = argv_of(mnt)
        with mount_random.mounted(argv, env, mnt, self.work / f"{tool}.log") as pid:
            yield mnt, pid

    def sample(self, workload: str, tool: str, rep: int, pick: Path, reference: Path) -> None:
        out = self.work / "answers" / f"{workload}-{tool}-{rep}.txt"
        out.parent.mkdir(exist_ok=True)
        with self.place(tool, f"{workload}-{rep}") as (where, pid):
            mount_random.drop_caches()
            load = os.getloadavg()[0]
            with open(self.work / "commands.log", "ab") as log:
                s = measure.run_measured(
                    command(workload, where, pick, out),
                    log=log,
                    daemon_pid=pid,
                    spawn=self.spawn,
                    server_pids=[self.s.pid] if self.s.pid else [],
                    timeout=self.args.timeout,
                )
        same = s.rc == 0 and out.exists() and out.read_bytes() == reference.read_bytes()
        if not same:
            why = f"exit {s.rc}" if s.rc else "answers differ from the local copy's"
            self.errors.append(f"{workload} {tool} rep {rep}: {why} ({out})")
        row = {"workload": workload, "tool": tool, "rep": rep, "load1": load, "ok": same}
        row.update(s.as_json())
        row["daemon_rss_mib"] = round(s.daemon_rss_kib / 1024, 1)
        row["command_rss_mib"] = round(s.maxrss_kib / 1024, 1)
        self.samples.append(row)
        print(
            f"|   {workload} | {tool} | rep {rep} | {s.wall:.2f} s | daemon CPU "
            f"{s.daemon_cpu:.2f} s | RSS {s.daemon_rss_kib / 1024:.0f} MiB | load {load:.1f}"
            f" | {'ok' if same else 'WRONG'} |",
            flush=True,
        )

    def workload(self, workload: str) -> None:
        pick = picks(self.work, workload, self.args.scale, self.args.seed)
        reference = self.work / "answers" / f"{workload}-reference.txt"
        reference.parent.mkdir(exist_ok=True)
        mount_random.drop_caches()
        subprocess.run(command(workload, self.work / "data", pick, reference), check=True)
        tools = ["datamover", *PEERS]
        for rep in range(self.args.reps):
            order = ["local", *(tools if rep % 2 == 0 else tools[::-1])]
            for tool in order:
                try:
                    self.sample(workload, tool, rep, pick, reference)
                except Exception as e:  # the other tools and workloads still run
                    self.errors.append(f"{workload} {tool} rep {rep}: {e}")
                    print(f"# {workload} {tool} rep {rep}: {e}", flush=True)

    def summary(self) -> list[dict[str, Any]]:
        rows = []
        for workload in self.args.workloads:
            med: dict[str, dict[str, float]] = {}
            for tool in ("local", "datamover", *PEERS):
                got = [
                    r
                    for r in self.samples
                    if r["workload"] == workload and r["tool"] == tool and r["ok"]
                ]
                if not got:
                    continue

                def m(key: str, got: list[dict[str, Any]] = got) -> float:
                    return float(statistics.median(float(r[key]) for r in got))

                med[tool] = {
                    "n": len(got),
                    "wall_s": m("wall_s"),
                    "daemon_cpu_s": m("daemon_cpu_s"),
                    "command_cpu_s": m("user_s") + m("sys_s"),
                    "daemon_rss_mib": max(float(r["daemon_rss_mib"]) for r in got),
                    "load1": m("load1"),
                }
                rows.append({"workload": workload, "tool": tool, **med[tool]})
            for name in PEERS:
                if "datamover" in med and name in med:
                    dm, peer = med["datamover"], med[name]
                    rows.append(
                        {
                            "workload": workload,
                            "tool": f"datamover/{name}",
                            "wall_s": dm["wall_s"] / peer["wall_s"],
                            "daemon_cpu_s": dm["daemon_cpu_s"] / max(peer["daemon_cpu_s"], 0.01),
                        }
                    )
        return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "\n| workload | tool | n | wall s | mount CPU s | workload CPU s | mount peak RSS MiB | load |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if str(r["tool"]).startswith("datamover/"):
            peer = str(r["tool"]).split("/")[1]
            print(
                f"| {r['workload']} | **datamover / {peer}** | | **{r['wall_s']:.2f}x** | "
                f"**{r['daemon_cpu_s']:.2f}x** | | | |"
            )
            continue
        print(
            f"| {r['workload']} | {r['tool']} | {r['n']} | {r['wall_s']:.2f} | "
            f"{r['daemon_cpu_s']:.2f} | {r['command_cpu_s']:.2f} | {r['daemon_rss_mib']:.0f} | "
            f"{r['load1']:.1f} |"
        )


def ensure_tools() -> None:
    missing = [t for t in ("samtools", "s3fs") if shutil.which(t) is None]
    if missing:
        print(f"# installing {' '.join(missing)} (apt-get)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-qq", *missing]
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)


def upload(s: Any, files: list[Path]) -> None:
    s3 = s.client()
    try:
        for f in files:
            s3.upload_file(str(f), BUCKET, f.name)
    finally:
        s3.close()


def main() -> int:
    if sys.argv[1:2] == ["--worker"]:
        {"h5": worker_h5, "sqlite": worker_sqlite}[sys.argv[2]](*sys.argv[3:6])
        return 0
    global measure, mount_random
    sys.path[:0] = [str(ROOT / "tests")]
    import measure
    import mount_random

    import servers

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--scale", type=float, default=1.0, help="dataset size factor (1: ~300 MiB)")
    p.add_argument("--seed", type=int, default=23)
    p.add_argument("--timeout", type=float, default=900, help="seconds per workload run")
    p.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "dm-bench-workloads",
        help="scratch directory; datasets are kept there for the next run",
    )
    p.add_argument(
        "--dm-arg", action="append", default=[], help="extra datamover mount flag; repeat"
    )
    args = p.parse_args()
    args.workloads = [w for w in args.workloads.split(",") if w]
    if unknown := set(args.workloads) - set(WORKLOADS):
        p.error(f"unknown workload {sorted(unknown)}; choose from {', '.join(WORKLOADS)}")
    ensure_tools()
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / "data"
    data.mkdir(exist_ok=True)
    for stale in ("mnt", "answers"):
        shutil.rmtree(args.work / stale, ignore_errors=True)
    with servers.SeaweedServer(volume_size_limit_mb=1024) as s:
        s.make_bucket(BUCKET)
        run = Run(args, s)
        for workload in args.workloads:
            files = dataset(data, workload, args.scale, args.seed)
            mib = sum(f.stat().st_size for f in files) / MiB
            print(f"# {workload}: {', '.join(f.name for f in files)}, {mib:,.0f} MiB", flush=True)
            upload(s, files)
            run.workload(workload)
    rows = run.summary()
    print_table(rows)
    out = BENCH / "results" / f"mount-workloads-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"summary": rows, "samples": run.samples, "errors": run.errors}))
    print(f"# written {out}")
    for e in run.errors:
        print(f"# ERROR {e}")
    for d in ("mnt",):
        shutil.rmtree(args.work / d, ignore_errors=True)
    for cache in [*args.work.glob("dmcache-*"), *args.work.glob("s3fscache-*")]:
        shutil.rmtree(cache, ignore_errors=True)
    return 1 if run.errors else 0


if __name__ == "__main__":
    sys.exit(main())
