"""Make a local server current for one test: its env vars set, a fresh bucket made.

A module of its own (not conftest) so test files can import it: two conftest.py files
(tests/ and tests/fuse/) would make ``import conftest`` mean whichever came first.
"""

from __future__ import annotations

import uuid

import pytest

from servers import LocalServer, S3Endpoint


def new_bucket_name() -> str:
    return f"dm-{uuid.uuid4().hex[:16]}"


class ServerEnv:
    """A server made current for this test: env set, a fresh bucket made."""

    def __init__(self, server: object, scheme: str, bucket: str) -> None:
        self.server = server
        self.scheme = scheme
        self.bucket = bucket

    def url(self, key: str = "") -> str:
        return f"{self.scheme}://{self.bucket}/{key}"


def use_server(
    server: LocalServer | S3Endpoint,
    monkeypatch: pytest.MonkeyPatch,
) -> ServerEnv:
    for name in getattr(server, "unset_env", ()):
        monkeypatch.delenv(name, raising=False)
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    bucket = new_bucket_name()
    server.make_bucket(bucket)
    scheme = {"AzuriteServer": "az", "FakeGcsServer": "gs"}.get(type(server).__name__, "s3")
    return ServerEnv(server, scheme, bucket)
