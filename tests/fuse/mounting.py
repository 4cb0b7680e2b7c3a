"""Helpers for real FUSE mounts in tests: a mount subprocess, a backend (server +
bucket), a pool of shared mounts, a test's target directory, and ``run`` for tools.

A mount is ``python -m datamover mount URL DIR --foreground`` in a subprocess (its own
process, as users run it), with the server's environment. One mount per backend is
shared by the whole session (``MountPool``); each test works in a fresh directory of
it, so tests stay independent and ~1 s of mount start-up is paid three times, not
per test. Tests that need a fresh process (a remount, a read-only mount) start their
own with ``Mount`` as a context manager.

Teardown always unmounts: ``fusermount3 -u``, and if the mount is busy or the process
hangs, a lazy unmount and a kill, all with bounded timeouts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from datamover.stores import open_store
from datamover.stores.base import Store
from datamover_fuse.mount import is_mounted

from servers import LocalServer, S3Endpoint

BACKENDS = ["s3", "az", "gs"]
#: The Ceph RGW gateway (issue #21), over http and over https with the session's
#: self-signed certificate (the mount gets it as ``AWS_CA_BUNDLE``, as the CLI does).
CEPH_BACKENDS = [
    pytest.param("ceph", marks=pytest.mark.ceph),
    pytest.param("ceph-tls", marks=pytest.mark.ceph),
]
#: The legacy-tool tests (issue #17) also run on moto, an S3 server whose markers keep
#: metadata (SeaweedFS's don't), and on Ceph RGW.
ALL_BACKENDS = ["s3", "moto", "az", "gs", *CEPH_BACKENDS]
SERVER_FIXTURE = {
    "s3": "seaweed",
    "moto": "moto",
    "az": "azurite",
    "gs": "gcs_mem",
    "ceph": "ceph",
    "ceph-tls": "ceph_tls",
}
SCHEME = {"s3": "s3", "moto": "s3", "az": "az", "gs": "gs", "ceph": "s3", "ceph-tls": "s3"}
MOUNT_TIMEOUT = 30.0


def client_env(server: LocalServer | S3Endpoint) -> dict[str, str]:
    """The server's client environment; a CA bundle only if the server gives one (an
    https endpoint), never the host's."""
    env = server.client_env()
    if "AWS_CA_BUNDLE" not in server.env:
        env.pop("AWS_CA_BUNDLE", None)
    return env


#: A foreground mount through the library API (``datamover_fuse.mount``), for
#: ``MountOptions`` fields given as JSON: the process is the same as the CLI's.
_LIBRARY_MOUNT = """
import json, logging, sys
from datamover_fuse import MountOptions, mount
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
mount(sys.argv[1], sys.argv[2], MountOptions(**json.loads(sys.argv[3])), foreground=True)
"""


class Mount:
    """A ``datamover mount --foreground`` subprocess; ``start`` returns once live.

    ``options`` (``MountOptions`` fields) mounts through the library API instead of
    the CLI, with ``extra`` ignored."""

    def __init__(
        self,
        url: str,
        path: Path,
        env: Mapping[str, str],
        *extra: str,
        log: Path | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.path = path
        self.env = dict(env)
        self.extra = extra
        self.options = options
        self.log = log or path.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Mount:
        self.path.mkdir(parents=True, exist_ok=True)
        cache = self.path.parent / f"{self.path.name}.cache"
        if self.options is not None:
            fields = json.dumps({"cache_dir": str(cache), **self.options})
            cmd = [sys.executable, "-c", _LIBRARY_MOUNT, self.url, str(self.path), fields]
        else:
            cmd = [
                sys.executable,
                "-m",
                "datamover",
                "-v",
                "mount",
                self.url,
                str(self.path),
                "--foreground",
                "--cache-dir",
                str(cache),
                *self.extra,
            ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(str(self.path)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"mount exited {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mount not live after {MOUNT_TIMEOUT} s: {self.log_tail()}")
            time.sleep(0.05)
        return self

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Unmount and wait for the process; escalate if it does not go."""
        deadline = time.monotonic() + 20
        while is_mounted(str(self.path)) and time.monotonic() < deadline:
            if subprocess.run(
                ["fusermount3", "-u", str(self.path)], capture_output=True
            ).returncode:
                time.sleep(0.2)
        if is_mounted(str(self.path)):
            subprocess.run(["fusermount3", "-uz", str(self.path)], capture_output=True)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout=10)

    def __enter__(self) -> Mount:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


@dataclass
class Backend:
    name: str
    server: LocalServer | S3Endpoint
    bucket: str

    @property
    def env(self) -> dict[str, str]:
        return client_env(self.server)

    @property
    def markers_keep_metadata(self) -> bool:
        """Whether ``dir/`` markers keep user metadata: SeaweedFS turns such keys into
        directories of its filer and drops it (the mount then keeps a directory's
        metadata in ``dir/.datamover-dirmeta``)."""
        return self.name != "s3"

    def url(self, key: str = "") -> str:
        return f"{SCHEME[self.name]}://{self.bucket}/{key}"

    def store(self) -> Store:
        """A store opened in this process with the server's environment (the SDK
        reads it when the client is made)."""
        saved = dict(os.environ)
        try:
            for name in getattr(self.server, "unset_env", ()):
                os.environ.pop(name, None)
            os.environ.update(self.server.env)
            store, _ = open_store(self.url())
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return store


class MountPool:
    """One bucket and one shared mount per backend, started on first use."""

    def __init__(self, request: pytest.FixtureRequest, root: Path) -> None:
        self._request = request
        self.root = root
        self.backends: dict[str, Backend] = {}
        self.mounts: dict[str, Mount] = {}
        self.stores: dict[str, Store] = {}

    def backend(self, name: str) -> Backend:
        if name not in self.backends:
            server = self._request.getfixturevalue(SERVER_FIXTURE[name])
            bucket = f"dmfuse-{uuid.uuid4().hex[:12]}"
            server.make_bucket(bucket)
            self.backends[name] = Backend(name, server, bucket)
        return self.backends[name]

    def mount(self, name: str) -> Mount:
        if name not in self.mounts:
            backend = self.backend(name)
            self.mounts[name] = Mount(backend.url(), self.root / f"shared-{name}", backend.env)
            self.mounts[name].start()
        return self.mounts[name]

    def store(self, name: str) -> Store:
        if name not in self.stores:
            self.stores[name] = self.backend(name).store()
        return self.stores[name]

    def close(self) -> None:
        for mount in self.mounts.values():
            mount.stop()
        for store in self.stores.values():
            store.close()


@dataclass
class Target:
    """A fresh directory in a live mount, and the store behind it."""

    backend: Backend
    mount: Mount
    store: Store
    prefix: str
    root: Path

    @property
    def path(self) -> Path:
        return self.mount.path / self.prefix.rstrip("/")

    def key(self, rel: str) -> str:
        return self.prefix + rel

    def fresh_key(self, name: str) -> str:
        """A key under a new top-level prefix no mount has listed yet, for objects the
        test writes through the SDK (a directory the mount created is cached as a
        complete listing for ``--dir-ttl``, so it would not see them at once)."""
        return f"sdk-{uuid.uuid4().hex[:10]}/{name}"

    def remount(self, tmp_path: Path, *extra: str, name: str = "remount") -> Mount:
        """A second, fresh mount process of the same bucket (no caches shared)."""
        return Mount(self.backend.url(), tmp_path / name, self.backend.env, *extra)


def make_target(pool: MountPool, name: str) -> Target:
    mount = pool.mount(name)
    prefix = f"t-{uuid.uuid4().hex[:10]}/"
    (mount.path / prefix).mkdir()
    return Target(pool.backend(name), mount, pool.store(name), prefix, mount.path)


def run(cmd: list[str], cwd: Path | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a tool with a timeout; fail with its output when it fails."""
    result = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False, **kwargs
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def mount_through(proxy: Any, s3_target: Target, tmp_path: Path, **options: object) -> Mount:
    """A mount of ``s3_target``'s bucket whose requests go through ``proxy`` (a
    ``counting_proxy.CountingProxy``), with MountOptions ``options``."""
    env = {**s3_target.backend.env, "AWS_ENDPOINT_URL": proxy.endpoint}
    return Mount(s3_target.backend.url(), tmp_path / "m", env, options=options)
