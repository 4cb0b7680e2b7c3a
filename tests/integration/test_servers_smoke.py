"""Smoke tests for tests/servers.py: each local server starts, stores 1 MiB, stops.

The SDK clients here are built only from ``server.env`` (applied with
monkeypatch), the way a datamover subprocess would see them, so these tests
also prove that ``env`` alone is enough to reach each server.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/conftest.py puts tests/ on sys.path; import it under the same name.
from servers import AzuriteServer, FakeGcsServer, LocalServer, MotoServer, SeaweedServer

pytestmark = pytest.mark.cloud

MIB = 1024 * 1024
BUCKET = "smoke-bucket"
KEY = "dir/one-mib.bin"


@pytest.fixture
def payload() -> bytes:
    return os.urandom(MIB)


def _use_env(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in server.unset_env:
        monkeypatch.delenv(key, raising=False)
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)


def _assert_gone(pid: int | None, workdir: Path, port: int) -> None:
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not workdir.exists()
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))


def _s3_roundtrip(payload: bytes) -> None:
    import boto3

    s3 = boto3.client("s3")
    try:
        put = s3.put_object(Bucket=BUCKET, Key=KEY, Body=payload)
        assert put["ETag"].strip('"') == hashlib.md5(payload).hexdigest()
        got = s3.get_object(Bucket=BUCKET, Key=KEY)
        assert got["ContentLength"] == MIB
        assert got["Body"].read() == payload
    finally:
        s3.close()


@pytest.mark.parametrize("server_cls", [SeaweedServer, MotoServer], ids=["seaweed", "moto"])
def test_s3_server(
    server_cls: type[SeaweedServer | MotoServer],
    payload: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Hostile leftovers from a developer's shell: neither the server, nor its
    # own client, nor a client built from server.env may be affected.
    monkeypatch.setenv("AWS_PROFILE", "datamover-no-such-profile")
    monkeypatch.setenv("AWS_CA_BUNDLE", "/nonexistent/ca-bundle.pem")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    with server_cls() as server:
        assert server.endpoint.startswith("http://127.0.0.1:")
        assert server.env["AWS_ENDPOINT_URL"] == server.endpoint
        server.make_bucket(BUCKET)
        _use_env(server, monkeypatch)
        _s3_roundtrip(payload)
        pid, workdir, port = server.pid, server.workdir, server.port
    _assert_gone(pid, workdir, port)


def _azurite_or_skip(*, in_memory: bool) -> AzuriteServer:
    # Azurite comes from npm (`make` installs it under .tools/), not from uv.
    try:
        return AzuriteServer(in_memory=in_memory)
    except RuntimeError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("in_memory", [False, True], ids=["disk", "memory"])
def test_azurite(in_memory: bool, payload: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.storage.blob import BlobServiceClient

    with _azurite_or_skip(in_memory=in_memory) as server:
        assert server.env["AZURE_STORAGE_CONNECTION_STRING"] == server.connection_string
        assert f"BlobEndpoint={server.endpoint};" in server.connection_string
        server.make_bucket(BUCKET)
        _use_env(server, monkeypatch)
        with BlobServiceClient.from_connection_string(
            os.environ["AZURE_STORAGE_CONNECTION_STRING"]
        ) as service:
            blob = service.get_blob_client(BUCKET, KEY)
            blob.upload_blob(payload)
            assert blob.download_blob().readall() == payload
            md5 = blob.get_blob_properties().content_settings.content_md5
            assert md5 is not None
            assert bytes(md5) == hashlib.md5(payload).digest()
        pid, workdir, port = server.pid, server.workdir, server.port
    _assert_gone(pid, workdir, port)


@pytest.mark.parametrize("backend", ["filesystem", "memory"])
def test_fake_gcs(backend: str, payload: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    from google.cloud import storage

    with FakeGcsServer(backend="memory" if backend == "memory" else "filesystem") as server:
        assert server.env["STORAGE_EMULATOR_HOST"] == server.endpoint
        server.make_bucket(BUCKET)
        _use_env(server, monkeypatch)
        gcs = storage.Client()
        try:
            blob = gcs.bucket(BUCKET).blob(KEY)
            blob.upload_from_string(payload)
            assert blob.download_as_bytes() == payload
            blob.reload()
            assert blob.md5_hash == base64.b64encode(hashlib.md5(payload).digest()).decode()
        finally:
            gcs.close()
        pid, workdir, port = server.pid, server.workdir, server.port
    _assert_gone(pid, workdir, port)


@pytest.fixture
def two_seaweeds() -> Iterator[tuple[SeaweedServer, SeaweedServer]]:
    with SeaweedServer() as first, SeaweedServer() as second:
        yield first, second


def test_two_seaweed_servers_run_side_by_side(
    two_seaweeds: tuple[SeaweedServer, SeaweedServer],
) -> None:
    first, second = two_seaweeds
    assert first.port != second.port
    assert first.workdir != second.workdir
    for index, server in enumerate(two_seaweeds):
        server.make_bucket(BUCKET)
        s3 = server.client()
        try:
            s3.put_object(Bucket=BUCKET, Key=KEY, Body=f"server {index}".encode())
        finally:
            s3.close()
    # Same bucket and key on both: each must still hold its own object.
    for index, server in enumerate(two_seaweeds):
        s3 = server.client()
        try:
            body = s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read()
        finally:
            s3.close()
        assert body == f"server {index}".encode()


def test_port_clash_is_retried_then_reported() -> None:
    # A bound but not listening socket makes the server's bind fail while the
    # readiness probe gets a fast "connection refused".
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        port = blocker.getsockname()[1]
        server = FakeGcsServer(port=port)
        with pytest.raises(RuntimeError, match="port already in use") as excinfo:
            server.start()
    assert "address already in use" in str(excinfo.value)
    assert not server.is_running()
    assert server.pid is None


def test_missing_binary_is_reported() -> None:
    with pytest.raises(RuntimeError, match="not an executable file"):
        AzuriteServer(binary="/nonexistent/azurite-blob")
