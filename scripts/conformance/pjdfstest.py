"""``make conformance``: run pjdfstest (POSIX syscall conformance) on a real mount.

Starts an S3 server on 127.0.0.1 (SeaweedFS by default, ``--server moto`` for moto;
both from ``tests/servers.py``), makes one bucket per target and mounts it:

* ``datamover``: ``datamover mount s3://BUCKET/ MNT --foreground --allow-other``
  (``--allow-other`` because pjdfstest, run as root, switches to other uids);
* ``s3fs``: ``s3fs BUCKET MNT -f -o url=...,use_path_request_style,allow_other``;
* ``datamover-posix``: ``datamover mount DIR MNT --foreground --allow-other`` over a
  directory on /tmp's filesystem (a mount of a POSIX tree; no server used);
* ``local``: no mount, a directory on /tmp's own filesystem: the control, which
  shows what a full pass looks like on this machine.

Then every pjdfstest file runs with the mount as its working directory, one file at
a time so each has its own timeout (``--file-timeout``, 180 s: chown/00.t alone takes
80 s on ext4) within an overall one (``--timeout``). A file is run as ``prove``
runs it (it is a ``#!/bin/sh`` script) and judged as TAP::Harness judges it (a plan,
tests 1..N in order, no ``not ok`` but TODO, exit 0), so the counts are prove's:
files passed, subtests run / failed (prove's ``Tests=`` and ``Failed:``). Running it
directly rather than under prove keeps what a file printed before it was killed.
pjdfstest names the filesystem from ``df -T`` (``FUSE.DATAMOVER``, ``FUSE.S3FS``):
for s3fs it skips the link tests itself (each counts as one passing subtest).

Failures are grouped by test directory (chmod, chown, link, ...), by cluster
(syscall, expected, got) and, per failing file, by its first failure that is not a
cascade (an ENOENT on a name whose creation already failed in that file): the
closest thing to the file's root cause. All of it goes to ``report.json`` and
``summary.md`` in the output directory (default ``bench/results/conformance/<UTC
time>/``, not committed), with the raw TAP (``<target>.tap.log``) and the daemons'
logs beside them; the summary is printed at the end.

pjdfstest itself is not part of this repository: ``--pjdfstest DIR`` (default
``.tools/pjdfstest``) must hold a built tree, the ``pjdfstest`` binary beside its
``tests/``, from pjd/pjdfstest (the baseline in bench/RESULTS.md used commit
``PINNED_COMMIT``; a git checkout's commit is recorded in the report). The project
neither vendors nor builds it (see the Makefile's ``conformance`` target). Without a
tree the script says so and exits 2. It runs as root (pjdfstest requires it).

It is a measurement, not a gate: test failures exit 0. Exit 1 means the harness
broke (server or mount did not start, or it was interrupted), 2 a missing
prerequisite, 3 that the overall timeout cut the run short (the partial report is
still written). Mounts and the server are stopped on every way out (failure,
timeout, Ctrl-C, SIGTERM); a daemon that dies mid-run is remounted (at most
``MAX_REMOUNTS`` times) and reported in the summary's events.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from servers import MotoServer, S3Server, SeaweedServer  # noqa: E402

#: The pjd/pjdfstest commit of the baseline in bench/RESULTS.md.
PINNED_COMMIT = "85a8aea9e685999ef0540392fd80535f873d7ff7"
DEFAULT_PJDFSTEST = ROOT / ".tools" / "pjdfstest"
TARGETS = ("datamover", "datamover-posix", "s3fs", "local")
MOUNT_TIMEOUT = 60.0
#: After a daemon died mid-run: remount this many times, then give the target up.
MAX_REMOUNTS = 3

EXIT_OK, EXIT_BROKEN, EXIT_MISSING, EXIT_TIMEOUT = 0, 1, 2, 3


class HarnessError(RuntimeError):
    """The harness could not measure (not a test failure)."""


class _Terminated(BaseException):
    """SIGTERM/SIGHUP, raised in the main thread so every ``finally`` runs."""


# ------------------------------------------------------------------ TAP

_PLAN = re.compile(r"^1\.\.(\d+)")
_RESULT = re.compile(r"^(not )?ok (\d+)\b\s*(?:-\s*)?(.*)$")
_TRIED = re.compile(r"tried '(?P<args>[^']*)', expected (?P<expected>.*?), got (?P<got>.*)$")
#: pjdfstest options that come before the syscall name (-u uid, -g gids, -U umask).
_OPTS_WITH_VALUE = {"-u", "-g", "-U"}


@dataclass
class Failure:
    number: int
    message: str
    syscall: str = ""
    expected: str = ""
    got: str = ""
    args: list[str] = field(default_factory=list)
    #: ENOENT on a name whose creation already failed in this file (a consequence).
    cascade: bool = False


@dataclass
class FileResult:
    file: str  # relative to pjdfstest's tests/, e.g. "chmod/00.t"
    status: str = "fail"  # pass | fail | timeout | not-run
    planned: int = 0
    ok: int = 0
    not_ok: int = 0
    todo: int = 0
    skipped: int = 0
    seconds: float = 0.0
    exit_code: int | None = None
    note: str = ""
    failures: list[Failure] = field(default_factory=list)

    @property
    def directory(self) -> str:
        return self.file.split("/", 1)[0]

    @property
    def missing(self) -> int:
        """Planned subtests that never reported (the script died or timed out)."""
        return max(0, self.planned - self.ok - self.not_ok - self.todo)


def parse_tap(result: FileResult, text: str) -> list[int]:
    """Fill ``result``'s counts from TAP output; return the test numbers seen."""
    numbers: list[int] = []
    for line in text.splitlines():
        line = line.rstrip()
        plan = _PLAN.match(line)
        if plan and not result.planned:
            result.planned = int(plan.group(1))
            continue
        m = _RESULT.match(line)
        if not m:
            continue
        failed, number, rest = m.group(1) is not None, int(m.group(2)), m.group(3)
        numbers.append(number)
        directive = rest.split("#", 1)[1].strip().upper() if "#" in rest else ""
        if directive.startswith("TODO"):
            result.todo += 1
        elif directive.startswith("SKIP"):
            result.skipped += 1
            result.ok += 1
        elif failed:
            result.not_ok += 1
            result.failures.append(_failure(number, rest))
        else:
            result.ok += 1
    mark_cascades(result.failures)
    return numbers


def judge(result: FileResult, text: str, exit_code: int) -> None:
    """TAP::Harness's verdict (what ``prove`` prints as ok / Failed / Bad plan):
    a file passes when it printed a plan, then exactly tests 1..N in order, none
    ``not ok`` (TODO aside), and exited 0. ``1..0`` (skip all) passes."""
    numbers = parse_tap(result, text)
    result.exit_code = exit_code
    problems = []
    if not any(_PLAN.match(line) for line in text.splitlines()):
        problems.append("no plan")
    elif numbers != list(range(1, result.planned + 1)):
        problems.append(f"ran {len(numbers)} of {result.planned} planned (or out of order)")
    if result.not_ok:
        problems.append(f"{result.not_ok} not ok")
    if exit_code != 0:
        problems.append(f"exit {exit_code}")
    result.status = "fail" if problems else "pass"
    if problems:
        result.note = "; ".join(problems)


def _failure(number: int, message: str) -> Failure:
    f = Failure(number, message)
    m = _TRIED.search(message)
    if m:
        words = m.group("args").split()
        i = 0
        while i < len(words) and words[i] in _OPTS_WITH_VALUE:
            i += 2
        if i < len(words) and words[i] == "--":
            i += 1
        words = words[i:]
        # "open N O_RDONLY : unlink N : fstat 0 nlink" prints the last call's result.
        if ":" in words:
            words = words[len(words) - words[::-1].index(":") :]
        f.syscall = words[0] if words else ""
        f.args = words[1:]
        f.expected, f.got = m.group("expected").strip(), m.group("got").strip()
    return f


#: pjdfstest commands that create a name (the new name is the last path argument
#: for link/symlink/rename, the first otherwise).
_CREATES = {"create", "open", "openat", "mkdir", "mkfifo", "mknod", "bind", "link", "symlink"}


def mark_cascades(failures: list[Failure]) -> None:
    """Flag ENOENT failures on names whose creation failed earlier in the file."""
    failed_names: set[str] = set()
    for f in failures:
        names = {a.split("/", 1)[0] for a in f.args if a.startswith("pjdfstest_")}
        if f.got == "ENOENT" and names & failed_names:
            f.cascade = True
        if f.syscall in _CREATES and f.expected == "0" and f.args:
            new = f.args[1] if f.syscall in ("link", "symlink") and len(f.args) > 1 else f.args[0]
            failed_names.add(new.split("/", 1)[0])


_NAME = re.compile(r"pjdfstest_[0-9a-f]{32}")


def normalise(message: str) -> str:
    """A failure message with pjdfstest's random names replaced and its long names
    (NAME_MAX, PATH_MAX tests) shortened to their length, for examples."""
    names: dict[str, str] = {}
    message = _NAME.sub(lambda m: names.setdefault(m.group(0), f"<n{len(names) + 1}>"), message)

    def shorten(m: re.Match[str]) -> str:
        word = m.group(0)
        kind = "path" if "/" in word else "name"
        return f"<{len(word)}-char {kind}>" if len(word) > 64 else word

    return re.sub(r"[^\s']+", shorten, message)


def _value_class(value: str) -> str:
    """Errno names stay; numbers (modes, sizes, times, inode numbers) become <num>."""
    if re.fullmatch(r"[A-Z][A-Z0-9_]+(\|[A-Z][A-Z0-9_]+)*", value):
        return value
    if value in ("", "0"):
        return value or "(nothing)"
    return "<value>"


def clusters(results: list[FileResult]) -> list[dict[str, Any]]:
    """Failures grouped by (syscall, expected, got) with errno names kept and
    other values folded, biggest first, each with an example. Cascades (ENOENT on
    a name that could not be created) are left out: they repeat an earlier failure.
    Failures that print no detail are pjdfstest's ``test_check`` comparisons
    (mostly ctime/mtime before/after a call)."""
    groups: dict[tuple[str, str, str], list[tuple[FileResult, Failure]]] = defaultdict(list)
    for r in results:
        for f in r.failures:
            if f.cascade:
                continue
            if f.syscall:
                key = (_call(f), _value_class(f.expected), _value_class(f.got))
            else:
                key = ("(test_check)", "", "")
            groups[key].append((r, f))
    out = []
    for (syscall, expected, got), items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        r, f = items[0]
        out.append(
            {
                "syscall": syscall,
                "expected": expected,
                "got": got,
                "subtests": len(items),
                "files": len({r.file for r, _ in items}),
                "directories": sorted(Counter(r.directory for r, _ in items)),
                "example": f"{r.file} #{f.number}: {normalise(f.message)}",
            }
        )
    return out


_STATS = {"stat", "lstat", "fstat", "fstatat"}


def _call(f: Failure) -> str:
    """The syscall, with the fields asked for when it is a stat (``lstat nlink``)."""
    if f.syscall in _STATS and f.args:
        return f"{f.syscall} {f.args[-1]}"
    return f.syscall


def _key(f: Failure) -> str:
    if not f.syscall:
        return "(test_check: a before/after comparison, mostly ctime/mtime)"
    return f"{_call(f)}: expected {_value_class(f.expected)}, got {_value_class(f.got)}"


def first_failures(results: list[FileResult]) -> list[dict[str, Any]]:
    """Failing files grouped by their first failure that is not a cascade: the
    closest thing to each file's root cause."""
    groups: dict[str, list[tuple[FileResult, Failure | None]]] = defaultdict(list)
    for r in results:
        if r.status == "pass":
            continue
        first = next((f for f in r.failures if not f.cascade), None)
        key = _key(first) if first else f"({r.status}: {r.note or 'no detail'})"
        groups[key].append((r, first))
    out = []
    for key, items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        r, f = items[0]
        example = f"{r.file} #{f.number}: {normalise(f.message)}" if f else r.file
        out.append(
            {
                "first_failure": key,
                "files": len(items),
                "file_list": [r.file for r, _ in items],
                "example": example,
            }
        )
    return out


def summarise(results: list[FileResult]) -> dict[str, Any]:
    def counts(rs: list[FileResult]) -> dict[str, int]:
        return {
            "files": len(rs),
            "files_passed": sum(r.status == "pass" for r in rs),
            "files_failed": sum(r.status == "fail" for r in rs),
            "files_timed_out": sum(r.status == "timeout" for r in rs),
            "files_not_run": sum(r.status == "not-run" for r in rs),
            # prove's "Tests=" (what ran) and its failed count; passed = run - not ok.
            "subtests_run": sum(r.ok + r.not_ok + r.todo for r in rs),
            "subtests_passed": sum(r.ok + r.todo for r in rs),
            "subtests_planned": sum(r.planned for r in rs),
            "subtests_ok": sum(r.ok for r in rs),
            "subtests_not_ok": sum(r.not_ok for r in rs),
            "subtests_todo": sum(r.todo for r in rs),
            "subtests_skipped": sum(r.skipped for r in rs),
            "subtests_missing": sum(r.missing for r in rs),
            "subtests_not_ok_cascade": sum(f.cascade for r in rs for f in r.failures),
        }

    by_dir: dict[str, list[FileResult]] = defaultdict(list)
    for r in results:
        by_dir[r.directory].append(r)
    return {
        "totals": counts(results),
        "by_directory": {d: counts(rs) for d, rs in sorted(by_dir.items())},
        "first_failures": first_failures(results),
        "clusters": clusters(results),
    }


# ------------------------------------------------------------------ processes


def _mounted(path: Path) -> bool:
    target = str(path.resolve())
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) > 4 and fields[4].encode().decode("unicode_escape") == target:
                return True
    return False


class Daemon:
    """A FUSE daemon in the foreground, in its own session; ``stop`` always unmounts."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], mnt: Path, log: Path):
        self.name, self.argv, self.env, self.mnt, self.log = name, argv, env, mnt, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        self.mnt.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not _mounted(self.mnt):
            if self.proc.poll() is not None:
                raise HarnessError(f"{self.name} exited {self.proc.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise HarnessError(f"{self.name} not mounted after {MOUNT_TIMEOUT:g} s")
            time.sleep(0.05)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and _mounted(self.mnt)

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def stop(self) -> None:
        """``fusermount3 -u`` (retried while busy), then a lazy unmount; TERM, then
        KILL the daemon; all bounded."""
        deadline = time.monotonic() + 15
        while _mounted(self.mnt) and time.monotonic() < deadline:
            r = subprocess.run(["fusermount3", "-u", str(self.mnt)], capture_output=True)
            if r.returncode:
                time.sleep(0.3)
        if _mounted(self.mnt):
            subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True)
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if _mounted(self.mnt):  # a dead daemon's mount: detach what is left
            subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True)


def run_file(pjd: Path, test: Path, cwd: Path, timeout: float, tap_log: Any) -> FileResult:
    """One pjdfstest file with ``cwd`` as its working directory, as ``prove`` runs
    it (the file is a ``#!/bin/sh`` script), judged by ``judge``. Run directly, not
    under ``prove``, so a file killed at its timeout still shows what it printed
    (prove's own output is block-buffered and is lost with it)."""
    result = FileResult(str(test.relative_to(pjd / "tests")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DATAMOVER_"))}
    env["LC_ALL"] = "C"
    began = time.monotonic()
    proc = subprocess.Popen(
        ["/bin/sh", str(test)],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException as e:  # the timeout, Ctrl-C, SIGTERM: the test goes first
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if not isinstance(e, subprocess.TimeoutExpired):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            raise
        timed_out = True
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # stuck in the filesystem: leave it
            out, err = b"", b""
    result.seconds = round(time.monotonic() - began, 2)
    text = out.decode(errors="replace")
    judge(result, text, proc.returncode if proc.returncode is not None else -9)
    if timed_out:
        result.status = "timeout"
        result.note = f"killed after {timeout:g} s" + (f"; {result.note}" if result.note else "")
    stderr = err.decode(errors="replace").strip()
    tap_log.write(f"### {result.file} ({result.status}, {result.seconds} s)\n{text}")
    if stderr:
        tap_log.write("".join(f"# stderr: {line}\n" for line in stderr.splitlines()))
    tap_log.write("\n")
    tap_log.flush()
    return result


# ------------------------------------------------------------------ targets


@dataclass
class Target:
    name: str
    argv: list[str] | None  # None: a plain directory, nothing to mount
    env: dict[str, str]
    mnt: Path
    log: Path


def datamover_target(
    server: S3Server, work: Path, out: Path, extra: list[str]
) -> tuple[Target, list[str]]:
    bucket = f"pjd-dm-{uuid.uuid4().hex[:10]}"
    server.make_bucket(bucket)
    mnt = work / "mnt-datamover"
    options = ["--allow-other", "--cache-dir", str(work / "dm-cache"), *extra]
    argv = [
        sys.executable,
        "-m",
        "datamover",
        "-v",
        "mount",
        f"s3://{bucket}/",
        str(mnt),
        "--foreground",
        *options,
    ]
    env = server.client_env()
    env.pop("AWS_CA_BUNDLE", None)
    return Target("datamover", argv, env, mnt, out / "datamover-mount.log"), options


def datamover_posix_target(
    server: S3Server, work: Path, out: Path, extra: list[str]
) -> tuple[Target, list[str]]:
    """The mount over a POSIX directory (the server is not used)."""
    back = work / "posix-back"
    back.mkdir()
    back.chmod(0o755)
    mnt = work / "mnt-datamover-posix"
    options = ["--allow-other", "--cache-dir", str(work / "dmp-cache"), *extra]
    argv = [sys.executable, "-m", "datamover", "-v", "mount", str(back), str(mnt)]
    argv += ["--foreground", *options]
    target = Target("datamover-posix", argv, dict(os.environ), mnt, out / "dmp-mount.log")
    return target, options


def s3fs_target(
    server: S3Server, work: Path, out: Path, extra: list[str]
) -> tuple[Target, list[str]]:
    bucket = f"pjd-s3fs-{uuid.uuid4().hex[:10]}"
    server.make_bucket(bucket)
    mnt = work / "mnt-s3fs"
    passwd = work / "s3fs.passwd"
    passwd.write_text(f"{server.access_key}:{server.secret_key}\n")
    passwd.chmod(0o600)
    options = [
        f"url={server.endpoint}",
        "use_path_request_style",
        f"passwd_file={passwd}",
        f"endpoint={server.region}",
        "allow_other",
        *extra,
    ]
    argv = ["s3fs", bucket, str(mnt), "-f", "-o", ",".join(options)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return Target("s3fs", argv, env, mnt, out / "s3fs-mount.log"), options


def local_target(
    server: S3Server, work: Path, out: Path, extra: list[str]
) -> tuple[Target, list[str]]:
    """The control: a directory on the machine's own filesystem (where the work
    directory is, /tmp), which shows what a full pass looks like here."""
    path = work / "local"
    path.mkdir()
    fstype = subprocess.run(
        ["df", "--output=fstype", str(path)], capture_output=True, text=True
    ).stdout.split()[-1:]
    return Target("local", None, {}, path, out / "local.log"), [f"fstype={''.join(fstype)}"]


def run_target(
    target: Target,
    pjd: Path,
    tests: list[Path],
    file_timeout: float,
    deadline: float,
    out: Path,
) -> tuple[list[FileResult], dict[str, Any]]:
    results: list[FileResult] = []
    events: list[str] = []
    began = time.monotonic()
    daemon = (
        Daemon(target.name, target.argv, target.env, target.mnt, target.log)
        if target.argv
        else None
    )
    remounts = 0
    with open(out / f"{target.name}.tap.log", "w") as tap_log:
        try:
            if daemon is not None:
                daemon.start()
            print(f"# {target.name}: testing in {target.mnt}", flush=True)
            for i, test in enumerate(tests, 1):
                rel = str(test.relative_to(pjd / "tests"))
                left = deadline - time.monotonic()
                if left <= 1:
                    results.append(FileResult(rel, status="not-run", note="overall timeout"))
                    continue
                if daemon is not None and not daemon.alive():
                    code = daemon.proc.poll() if daemon.proc else None
                    events.append(f"before {rel}: mount gone (daemon exit {code}); remounting")
                    print(f"# {target.name}: {events[-1]}\n{daemon.tail()}", flush=True)
                    daemon.stop()
                    remounts += 1
                    if remounts > MAX_REMOUNTS:
                        results.append(FileResult(rel, status="not-run", note="mount gone"))
                        continue
                    daemon.start()
                r = run_file(pjd, test, target.mnt, min(file_timeout, left), tap_log)
                results.append(r)
                mark = {"pass": "ok", "fail": "FAIL", "timeout": "TIMEOUT"}[r.status]
                print(
                    f"# {target.name} [{i}/{len(tests)}] {rel}: {mark} "
                    f"({r.ok}/{r.planned} ok, {r.seconds:.1f} s)",
                    flush=True,
                )
        finally:
            if daemon is not None:
                daemon.stop()
    meta = {
        "argv": target.argv,
        "seconds": round(time.monotonic() - began, 1),
        "events": events,
        "remounts": remounts,
    }
    return results, meta


# ------------------------------------------------------------------ reports


def _git(cwd: Path, *args: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
        if r.returncode == 0:
            return r.stdout.strip()
    return ""


def _version(argv: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        lines = (r.stdout or r.stderr).strip().splitlines()
        return lines[0] if lines else ""
    return ""


def markdown(report: dict[str, Any], top: int = 12) -> str:
    meta = report["meta"]
    lines = [
        f"# pjdfstest on the mount, {meta['date']}",
        "",
        f"datamover {meta['datamover_commit'][:12]}{' (dirty)' if meta['datamover_dirty'] else ''}, "
        f"pjdfstest {meta['pjdfstest_commit'][:12] or '(unknown commit)'}, "
        f"kernel {meta['kernel']}, {meta.get('server', 'seaweed')} on 127.0.0.1, "
        f"file timeout {meta['file_timeout']:g} s.",
        "",
        *(
            [f"**Incomplete**: the overall timeout ({meta['timeout']:g} s) cut the run short.", ""]
            if meta.get("incomplete")
            else []
        ),
        "| target | files passed | subtests passed / run | failed | planned, never run | time |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in report["targets"].items():
        s = t["totals"]
        extra = []
        if s["files_timed_out"]:
            extra.append(f"{s['files_timed_out']} timed out")
        if s["files_not_run"]:
            extra.append(f"{s['files_not_run']} not run")
        note = f" ({', '.join(extra)})" if extra else ""
        lines.append(
            f"| {name} | {s['files_passed']}/{s['files']}{note} | "
            f"{s['subtests_passed']}/{s['subtests_run']} | {s['subtests_not_ok']} | "
            f"{s['subtests_missing']} | {t['meta']['seconds']:.0f} s |"
        )
    names = list(report["targets"])
    dirs = sorted({d for t in report["targets"].values() for d in t["by_directory"]})
    lines += [
        "",
        "Files passed (subtests not ok) by directory:",
        "",
        "| directory | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for d in dirs:
        cells = []
        for n in names:
            c = report["targets"][n]["by_directory"].get(d)
            cells.append(f"{c['files_passed']}/{c['files']} ({c['subtests_not_ok']})" if c else "-")
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    for name, t in report["targets"].items():
        if not t["first_failures"]:
            continue
        lines += [
            "",
            f"{name}: failing files by their first failure (cascades skipped):",
            "",
            "| files | first failure | example |",
            "|---|---|---|",
        ]
        for g in t["first_failures"]:
            example = g["example"].replace("|", "\\|")
            lines.append(f"| {g['files']} | {g['first_failure']} | {example} |")
    for name, t in report["targets"].items():
        if not t["clusters"]:
            continue
        lines += [
            "",
            f"{name}: biggest failure clusters (syscall, expected, got; of {len(t['clusters'])}):",
            "",
            "| subtests | files | syscall | expected | got | directories | example |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in t["clusters"][:top]:
            example = c["example"].replace("|", "\\|")
            lines.append(
                f"| {c['subtests']} | {c['files']} | {c['syscall']} | {c['expected']} | "
                f"{c['got']} | {', '.join(c['directories'])} | {example} |"
            )
        if t["meta"]["events"]:
            lines += ["", f"{name} events: " + "; ".join(t["meta"]["events"])]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ main


def _select(pjd: Path, only: list[str]) -> list[Path]:
    tests = sorted((pjd / "tests").glob("*/*.t"))
    if only:
        tests = [
            t
            for t in tests
            if any(
                str(t.relative_to(pjd / "tests")).startswith(o) or t.parent.name == o for o in only
            )
        ]
    return tests


def _check_prerequisites(pjd: Path, targets: list[str]) -> str | None:
    if not (pjd / "pjdfstest").is_file() or not os.access(pjd / "pjdfstest", os.X_OK):
        return (
            f"no built pjdfstest at {pjd} (want {pjd}/pjdfstest and {pjd}/tests/): "
            f"build pjd/pjdfstest (commit {PINNED_COMMIT[:12]} for the recorded baseline) "
            "there, or pass --pjdfstest DIR / make conformance PJDFSTEST=DIR"
        )
    if not (pjd / "tests" / "conf").is_file():
        return f"{pjd}/tests/conf is missing: not a pjdfstest tree"
    if os.geteuid() != 0:
        return "pjdfstest must run as root (it switches uids and makes device nodes)"
    need = ["prove", "fusermount3"] + (["s3fs"] if "s3fs" in targets else [])
    missing = [t for t in need if shutil.which(t) is None]
    if missing:
        return f"missing commands: {', '.join(missing)}"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pjdfstest", type=Path, default=DEFAULT_PJDFSTEST, help="built tree")
    p.add_argument(
        "--target",
        action="append",
        choices=TARGETS,
        help="datamover (default), s3fs, local (a directory on /tmp's filesystem, the "
        "control); repeat for several",
    )
    p.add_argument("--only", action="append", default=[], help="a directory (chmod) or chmod/00")
    p.add_argument(
        "--server",
        choices=("seaweed", "moto"),
        default="seaweed",
        help="the S3 server on 127.0.0.1 (default SeaweedFS, as the tests and benchmarks)",
    )
    p.add_argument("--file-timeout", type=float, default=180.0, help="seconds per test file")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds for the whole run")
    p.add_argument("--out", type=Path, help="report directory")
    p.add_argument(
        "--dm-arg",
        action="append",
        default=[],
        help="extra datamover mount option, e.g. --dm-arg=--attr-ttl=0; repeat",
    )
    p.add_argument(
        "--s3fs-opt",
        action="append",
        default=[],
        help="extra s3fs -o option, e.g. --s3fs-opt=stat_cache_expire=1; repeat",
    )
    args = p.parse_args(argv)
    targets = args.target or ["datamover"]
    pjd = args.pjdfstest.resolve()

    problem = _check_prerequisites(pjd, targets)
    if problem:
        print(f"conformance: {problem}", file=sys.stderr)
        return EXIT_MISSING
    tests = _select(pjd, args.only)
    if not tests:
        print(f"conformance: no test files selected under {pjd}/tests", file=sys.stderr)
        return EXIT_MISSING

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = (args.out or ROOT / "bench" / "results" / "conformance" / stamp).resolve()
    out.mkdir(parents=True, exist_ok=True)
    pjd_commit = _git(pjd, "rev-parse", "HEAD")
    if pjd_commit and pjd_commit != PINNED_COMMIT:
        print(f"# note: pjdfstest at {pjd_commit[:12]}, baseline pinned {PINNED_COMMIT[:12]}")

    def terminate(signum: int, frame: object) -> None:
        raise _Terminated(signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)

    began = time.monotonic()
    deadline = began + args.timeout
    report: dict[str, Any] = {
        "meta": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "datamover_commit": _git(ROOT, "rev-parse", "HEAD"),
            "datamover_dirty": bool(_git(ROOT, "status", "--porcelain", "--", "datamover", "fuse")),
            "pjdfstest_dir": str(pjd),
            "pjdfstest_commit": pjd_commit,
            "pjdfstest_pinned": PINNED_COMMIT,
            "kernel": platform.release(),
            "libfuse": _version(["fusermount3", "--version"]),
            "s3fs": _version(["s3fs", "--version"]) if "s3fs" in targets else "",
            "prove": _version(["prove", "--version"]),
            "file_timeout": args.file_timeout,
            "timeout": args.timeout,
            "files_selected": len(tests),
        },
        "targets": {},
    }
    code = EXIT_OK
    work = Path(tempfile.mkdtemp(prefix="datamover-pjdfstest-"))
    work.chmod(0o755)  # the tests switch to other uids
    all_results: dict[str, list[FileResult]] = {}
    try:
        server_class = SeaweedServer if args.server == "seaweed" else MotoServer
        with server_class() as server:
            report["meta"]["server"] = args.server
            if isinstance(server, SeaweedServer):
                report["meta"]["server_version"] = _version([str(server.binary), "version"])
            print(f"# {args.server} on {server.endpoint}; {len(tests)} test files", flush=True)
            for name in targets:
                make = {
                    "datamover": datamover_target,
                    "datamover-posix": datamover_posix_target,
                    "s3fs": s3fs_target,
                }.get(name, local_target)
                extra = args.dm_arg if name.startswith("datamover") else args.s3fs_opt
                target, options = make(server, work, out, extra)
                results, meta = run_target(target, pjd, tests, args.file_timeout, deadline, out)
                meta["mount_options"] = options
                all_results[name] = results
                report["targets"][name] = {
                    "meta": meta,
                    **summarise(results),
                    "files_detail": [{**asdict(r), "missing": r.missing} for r in results],
                }
    except HarnessError as e:
        print(f"conformance: harness broke: {e}", file=sys.stderr)
        report["meta"]["error"] = str(e)
        code = EXIT_BROKEN
    except (KeyboardInterrupt, _Terminated):
        print("conformance: interrupted; unmounted and stopped the server", file=sys.stderr)
        report["meta"]["error"] = "interrupted"
        code = EXIT_BROKEN
    finally:
        # Daemon.stop always detaches the mount; never delete through a live one.
        if not any(_mounted(d) for d in work.iterdir() if d.is_dir()):
            shutil.rmtree(work, ignore_errors=True)
    report["meta"]["seconds"] = round(time.monotonic() - began, 1)
    if any(r.status == "not-run" for rs in all_results.values() for r in rs):
        report["meta"]["incomplete"] = True
        if code == EXIT_OK:
            code = EXIT_TIMEOUT
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    if report["targets"]:
        summary = markdown(report)
        (out / "summary.md").write_text(summary)
        print("\n" + summary)
    print(f"report: {out}/report.json, {out}/summary.md; raw TAP: {out}/<target>.tap.log")
    return code


if __name__ == "__main__":
    sys.exit(main())
