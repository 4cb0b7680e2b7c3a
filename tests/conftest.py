"""Session fixtures: real local servers over HTTP on 127.0.0.1, one of each per session.

Each test gets its own bucket/container. Stores read their endpoint and credentials
from the standard environment variables, so ``use_server`` sets exactly those (with
pytest's ``monkeypatch.setenv``: the real SDK then talks HTTP to the real server).

Ceph is one cluster per session whose gateway serves http (``ceph``) and https
(``ceph_tls``, a self-signed certificate handed over as ``AWS_CA_BUNDLE``). Every
test that uses it carries the ``ceph`` marker: ``-m "not ceph"`` skips the cluster.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from serverenv import ServerEnv, use_server
from servers import (
    AzuriteServer,
    CephRgwServer,
    FakeGcsServer,
    MotoServer,
    S3Endpoint,
    SeaweedServer,
)

# Never inherit a CA bundle or profile meant for somewhere else.
for _var in ("AWS_CA_BUNDLE", "AWS_PROFILE"):
    os.environ.pop(_var, None)


@pytest.fixture(autouse=True)
def _isolated_state(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Default manifests and journals go to a temp dir, never to ~/.local/state."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedServer]:
    with SeaweedServer() as server:
        yield server


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def ceph_cluster() -> Iterator[CephRgwServer]:
    """The session's Ceph cluster (mon, OSD on memstore, radosgw on http and https)."""
    with CephRgwServer(tls=True) as server:
        yield server


@pytest.fixture(scope="session")
def ceph(ceph_cluster: CephRgwServer) -> S3Endpoint:
    """The Ceph gateway over plain http."""
    return ceph_cluster.view(tls=False)


@pytest.fixture(scope="session")
def ceph_tls(ceph_cluster: CephRgwServer) -> S3Endpoint:
    """The same gateway over https; its ``env`` carries ``AWS_CA_BUNDLE``."""
    return ceph_cluster.view(tls=True)


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Whatever reaches the cluster through a fixture is a Ceph test; tests that
    # pick it by name at run time (getfixturevalue) carry the marker explicitly.
    for item in items:
        if "ceph_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ceph)


@pytest.fixture(scope="session")
def azurite() -> Iterator[AzuriteServer]:
    with AzuriteServer(in_memory=True) as server:
        yield server


@pytest.fixture(scope="session")
def gcs() -> Iterator[FakeGcsServer]:
    # The memory backend: the filesystem one silently drops "dir/" marker objects.
    with FakeGcsServer(backend="memory") as server:
        yield server


@pytest.fixture(params=["seaweed", "moto", pytest.param("ceph", marks=pytest.mark.ceph)])
def s3(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    """Each S3 test runs against SeaweedFS, moto and Ceph RGW (http)."""
    server = request.getfixturevalue(request.param)
    return use_server(server, monkeypatch)


@pytest.fixture
def seaweed_env(seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    return use_server(seaweed, monkeypatch)


@pytest.fixture
def moto_env(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    """moto keeps keys as sent (SeaweedFS normalises ``a/../b``): for crafted keys."""
    return use_server(moto, monkeypatch)


@pytest.fixture
def ceph_env(ceph: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    return use_server(ceph, monkeypatch)


@pytest.fixture
def ceph_tls_env(ceph_tls: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    return use_server(ceph_tls, monkeypatch)
