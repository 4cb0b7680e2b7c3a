"""Fixtures for real FUSE mounts (helpers in ``mounting.py``).

GCS runs on its own fake-gcs-server with the memory backend: the filesystem backend
can't store ``dir/`` marker objects (it maps keys to files), which mkdir needs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mounting import ALL_BACKENDS, BACKENDS, MountPool, Target, make_target
from servers import FakeGcsServer


@pytest.fixture(scope="session")
def gcs_mem() -> Iterator[FakeGcsServer]:
    with FakeGcsServer(backend="memory") as server:
        yield server


@pytest.fixture(scope="session")
def mount_pool(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MountPool]:
    pool = MountPool(request, tmp_path_factory.mktemp("mounts"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, mount_pool: MountPool) -> Target:
    """Each test runs on SeaweedFS (S3), Azurite and fake-gcs-server."""
    return make_target(mount_pool, request.param)


@pytest.fixture(params=ALL_BACKENDS)
def any_target(request: pytest.FixtureRequest, mount_pool: MountPool) -> Target:
    """SeaweedFS, moto, Azurite and fake-gcs-server: the legacy tools of issue #17."""
    return make_target(mount_pool, request.param)


@pytest.fixture
def s3_target(mount_pool: MountPool) -> Target:
    """Heavier tests: SeaweedFS only."""
    return make_target(mount_pool, "s3")
