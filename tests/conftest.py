"""Session fixtures: real local servers over HTTP on 127.0.0.1, one of each per session.

Each test gets its own bucket/container. Stores read their endpoint and credentials
from the standard environment variables, so ``use_server`` sets exactly those (with
pytest's ``monkeypatch.setenv``: the real SDK then talks HTTP to the real server).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from serverenv import ServerEnv, use_server
from servers import AzuriteServer, FakeGcsServer, MotoServer, SeaweedServer

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
def azurite() -> Iterator[AzuriteServer]:
    with AzuriteServer(in_memory=True) as server:
        yield server


@pytest.fixture(scope="session")
def gcs() -> Iterator[FakeGcsServer]:
    # The memory backend: the filesystem one silently drops "dir/" marker objects.
    with FakeGcsServer(backend="memory") as server:
        yield server


@pytest.fixture(params=["seaweed", "moto"])
def s3(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    """Each S3 test runs against SeaweedFS and against moto."""
    server = request.getfixturevalue(request.param)
    return use_server(server, monkeypatch)


@pytest.fixture
def seaweed_env(seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    return use_server(seaweed, monkeypatch)


@pytest.fixture
def moto_env(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    """moto keeps keys as sent (SeaweedFS normalises ``a/../b``): for crafted keys."""
    return use_server(moto, monkeypatch)
