"""``mount`` and ``umount``: the filesystem's process, in the foreground or as a daemon.

``mount(..., foreground=False)`` checks the URL, the credentials and the mountpoint in
the calling process (so mistakes come back as one-line errors), then forks a daemon
(new session, stdio on /dev/null or the log file) and returns once the daemon reports
that the mount is live, or raises with the daemon's error. ``umount`` runs
``fusermount3 -u`` (``umount`` as a fallback); a busy mount is refused, never
detached lazily, so no open file loses its pending upload.

Mount options: ``default_permissions`` (the kernel checks modes and owners),
``nosuid,nodev`` (unless ``--suid``/``--dev``), ``allow_other`` on request, ``ro``
for a read-only mount, ``fsname`` (the URL) and
``subtype=datamover`` (``mount`` shows ``fuse.datamover``). FUSE read requests are as
large as libfuse negotiates (1 MiB with libfuse 3.14: ``max_pages`` 256); ``max_read=``
can't be passed because pyfuse3's ``init`` does not set ``conn->max_read`` to match.
The kernel's read-ahead for the mount (``/sys/class/bdi/<dev>/read_ahead_kb``,
128 KiB by default) is raised to ``options.read_ahead`` when the process may write
there (root), so sequential readers send big requests early; otherwise it is left
alone with a log line.

With that read-ahead the kernel's default of 12 background requests per connection
(congested from 9, which libfuse leaves and pyfuse3 can't change in ``init``) is too
few: past the congestion threshold the kernel drops the rest of a read-ahead window
it has already put in the page cache and reads those pages again later, a third more
page-cache work in every reader. So, also when root, the connection's
``max_background`` is set to ``options.max_background`` (and ``congestion_threshold``
to three quarters of it) in fusectl, ``/sys/fs/fuse/connections/<dev>/``, which is
mounted first if the system has not (as systemd and the fuse3 init script do).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from datamover import redact
from datamover.errors import ConfigError, DatamoverError, UsageError
from datamover.stores import StoreSettings, local_path, open_store
from datamover_fuse import native
from datamover_fuse.options import KiB, MountOptions

log = logging.getLogger("datamover.mount")

INSTALL_HINT = (
    "datamover mount needs the datamover-fuse package with pyfuse3 and libfuse3: "
    "pip install datamover-fuse (and apt install fuse3 libfuse3-dev)"
)
_READY_TIMEOUT = 60.0


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mount_entry(mountpoint: str) -> tuple[str, str] | None:
    """``(major:minor, fstype)`` of the mount at ``mountpoint``, or None."""
    target = os.path.abspath(mountpoint)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            lines = fh.readlines()
    except OSError:
        return None
    found = None
    for line in lines:
        fields = line.split()
        if len(fields) < 9 or _unescape(fields[4]) != target:
            continue
        sep = fields.index("-")
        found = (fields[2], fields[sep + 1])
    return found


def is_mounted(mountpoint: str) -> bool:
    return mount_entry(mountpoint) is not None


def tune_read_ahead(mountpoint: str, nbytes: int) -> bool:
    """Best effort: set the mount's BDI read-ahead. True when it holds that value.

    Must run after the kernel processed FUSE_INIT, which lowers the BDI read-ahead
    to what the filesystem's INIT reply allows."""
    found = mount_entry(mountpoint)
    if found is None or nbytes <= 0:
        return False
    path = f"/sys/class/bdi/{found[0]}/read_ahead_kb"
    want = str(max(1, nbytes // KiB))
    try:
        with open(path, "w", encoding="ascii") as fh:
            fh.write(want)
        with open(path, encoding="ascii") as fh:
            return fh.read().strip() == want
    except OSError as e:
        log.info("read-ahead left at the kernel default (%s: %s)", path, e.strerror)
        return False


FUSECTL = "/sys/fs/fuse/connections"


def fusectl_dir(mountpoint: str) -> str | None:
    """The mount's fusectl directory (named by the kernel's ``dev_t``), or None."""
    found = mount_entry(mountpoint)
    if found is None:
        return None
    major, _, minor = found[0].partition(":")
    return f"{FUSECTL}/{(int(major) << 20) | int(minor)}"


def _mount_fusectl() -> bool:
    """Mount the FUSE control filesystem where the system has not (root only)."""
    if os.geteuid() != 0 or not os.path.isdir(FUSECTL) or os.path.ismount(FUSECTL):
        return False
    try:
        result = subprocess.run(
            ["mount", "-t", "fusectl", "fusectl", FUSECTL],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        log.info("could not mount fusectl on %s: %s", FUSECTL, e)
        return False
    if result.returncode != 0:
        log.info("could not mount fusectl on %s: %s", FUSECTL, result.stderr.strip())
        return False
    log.info("mounted fusectl on %s", FUSECTL)
    return True


def tune_connection(mountpoint: str, max_background: int) -> bool:
    """Best effort: let the kernel keep ``max_background`` asynchronous requests
    (read-ahead) of this mount in flight, congested from three quarters of that.
    True when both are set. Root only; must run after FUSE_INIT was answered."""
    conn = fusectl_dir(mountpoint)
    if conn is None or max_background <= 0:
        return False
    if not os.path.isdir(conn) and not (_mount_fusectl() and os.path.isdir(conn)):
        log.info("FUSE background requests left at the kernel default (no %s)", conn)
        return False
    threshold = max(1, max_background * 3 // 4)
    try:
        for name, value in (
            ("max_background", max_background),
            ("congestion_threshold", threshold),
        ):
            with open(f"{conn}/{name}", "w", encoding="ascii") as fh:
                fh.write(str(value))
    except OSError as e:
        log.info("FUSE background requests left at the kernel default (%s: %s)", conn, e.strerror)
        return False
    return True


def _fuse_options(url: str, options: MountOptions) -> set[str]:
    native.preload()
    import pyfuse3

    opts = set(pyfuse3.default_options)
    opts |= {"fsname=" + url.replace(",", "_").replace(" ", "_"), "subtype=datamover"}
    if options.allow_other:
        opts.add("allow_other")
    if options.read_only:
        opts.add("ro")
    # libfuse mounts nosuid,nodev unless told "suid"/"dev"; named here either way.
    opts.add("suid" if options.suid else "nosuid")
    opts.add("dev" if options.dev else "nodev")
    return opts


def _settings(options: MountOptions) -> StoreSettings:
    return StoreSettings(connections=max(options.fs_threads, 10))


def _check(url: str, mountpoint: str, options: MountOptions) -> None:
    """Everything that can be checked before mounting, as one-line errors."""
    if not os.path.isdir(mountpoint):
        raise UsageError(f"mountpoint {mountpoint} is not a directory")
    if is_mounted(mountpoint):
        raise UsageError(f"{mountpoint} is already a mountpoint")
    if not os.path.exists("/dev/fuse"):
        raise ConfigError("/dev/fuse is missing: load the fuse module (modprobe fuse)")
    store, key = open_store(url, _settings(options))
    try:
        prefix = key if not key or key.endswith("/") else key + "/"
        next(iter(store.list(prefix, recursive=False)), None)
    finally:
        store.close()


def serve(
    url: str,
    mountpoint: str,
    options: MountOptions,
    *,
    ready: Callable[[], None] | None = None,
) -> None:
    """Mount and serve until unmounted (or SIGINT/SIGTERM: then unmount)."""
    redact.install()  # the daemon's --log-file gets library debug lines too
    native.preload()  # before pyfuse3: it stands in front of libfuse (native.py)
    import pyfuse3
    import trio

    # optional: the kernel side imports pyfuse3 and trio, which need libfuse3; the
    # package's other modules (options, umount) import without them
    from datamover_fuse import fastloop
    from datamover_fuse.core import FsCore

    # optional: as above
    from datamover_fuse.ops import Operations

    _raise_fd_limit()
    if options.read_cache:  # else no block is ever cached: nothing to answer in C
        native.configure(options.read_threads)
    store, key = open_store(url, _settings(options))
    core = FsCore(store, key, options)
    core.rt.fsops.warm()
    pyfuse3.init(Operations(core), mountpoint, _fuse_options(url, options))
    log.info("reads of cached blocks answered: %s", native.started())
    unmounted = False

    async def tune() -> None:
        # FUSE_INIT is answered by the loop; the kernel applies its limits after that.
        for _ in range(20):
            await trio.sleep(0.05)
            if await trio.to_thread.run_sync(tune_read_ahead, mountpoint, options.read_ahead):
                break
        await trio.to_thread.run_sync(tune_connection, mountpoint, options.max_background)

    async def watch_signals() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("signal %d: unmounting", signum)
                pyfuse3.terminate()
                return

    async def main() -> None:
        nonlocal unmounted
        async with core.running(), trio.open_nursery() as nursery:
            nursery.start_soon(watch_signals)
            nursery.start_soon(tune)
            if ready is not None:
                ready()
            fastloop.install()
            await pyfuse3.main(max_tasks=max(64, options.fs_threads * 4))
            unmounted = not is_mounted(mountpoint)
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        pyfuse3.close(unmount=not unmounted)
        store.close()
        if native.ext is not None:
            log.info("reads answered in C: %s", native.stats())


def _raise_fd_limit() -> None:
    """Each file open for writing holds a staging-file descriptor: allow as many as
    the hard limit permits."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def mount(url: str, mountpoint: str, options: MountOptions, *, foreground: bool) -> None:
    """Mount ``url`` (a bucket, container or prefix; any store) at ``mountpoint``.

    Foreground: serve until unmounted. Background: return once the mount is live.
    Raises ``ConfigError`` when pyfuse3/libfuse3 is missing, ``UsageError`` for a bad
    mountpoint, and the store's error for a bad URL or credentials."""
    try:
        native.preload()  # before pyfuse3 (native.py); the daemon is forked from here
        import pyfuse3  # noqa: F401
        import trio  # noqa: F401
    except ImportError as e:
        raise ConfigError(INSTALL_HINT) from e
    mountpoint = os.path.abspath(mountpoint)
    pinned = local_path(url)  # the daemon works from /: pin relative paths now
    if pinned is not None:
        url = pinned
    options = options.with_(
        cache_dir=os.path.abspath(options.cache_dir) if options.cache_dir else None,
        log_file=os.path.abspath(options.log_file) if options.log_file else None,
    )
    _check(url, mountpoint, options)
    if foreground:
        serve(url, mountpoint, options)
        return
    _daemonize(url, mountpoint, options)


def _daemonize(url: str, mountpoint: str, options: MountOptions) -> None:
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(read_end)
        status = 1
        try:
            os.setsid()
            os.chdir("/")  # keep no directory of the caller busy
            _detach_stdio(options.log_file)

            def ready() -> None:
                os.write(write_end, b"ok\n")

            serve(url, mountpoint, options, ready=ready)
            status = 0
        except BaseException as e:
            message = str(e) if isinstance(e, DatamoverError) else f"{type(e).__name__}: {e}"
            with contextlib.suppress(OSError):
                os.write(write_end, f"error: {message}\n".encode())
            log.exception("mount failed")
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        answer = _read_answer(read_end)
    finally:
        os.close(read_end)
    if answer != "ok":
        raise ConfigError(answer.removeprefix("error: ") or "the mount process exited")


def _read_answer(fd: int) -> str:
    deadline = time.monotonic() + _READY_TIMEOUT
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            return "error: the mount did not come up within 60 s"
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _detach_stdio(log_file: str | None) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    out = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if log_file else devnull
    os.dup2(out, 1)
    os.dup2(out, 2)
    if log_file:
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        # The log file gets datamover's INFO lines (its start-up line among them) and
        # other libraries' warnings: the Azure SDK logs every request at INFO.
        for name in ("datamover", "datamover_fuse"):
            mine = logging.getLogger(name)
            mine.setLevel(min(mine.getEffectiveLevel(), logging.INFO))


def umount(mountpoint: str, *, timeout: float = 60.0) -> None:
    """Unmount with ``fusermount3 -u`` (``umount`` as a fallback). Refuses a mount that
    is busy rather than detaching it lazily. Raises ``UsageError``."""
    target = os.path.abspath(mountpoint)
    if not is_mounted(target):
        raise UsageError(f"{target} is not mounted")
    reason = "no fusermount3 or umount found"
    for command in (["fusermount3", "-u", target], ["umount", target]):
        if shutil.which(command[0]) is None:
            continue
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            reason = f"{command[0]} did not finish within {timeout:.0f} s"
            continue
        if result.returncode == 0:
            return
        lines = (result.stderr or result.stdout).strip().splitlines()
        reason = lines[-1] if lines else f"{command[0]} exited {result.returncode}"
    raise UsageError(f"could not unmount {target}: {reason}")
