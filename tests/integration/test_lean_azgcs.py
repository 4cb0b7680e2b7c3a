"""The lean Azure and GCS data paths (``stores/azure/lean.py``, ``stores/gcs/lean.py``):
used with every credential kind that allows them, off by env, and what a server can't
make them do: retries of 5xx/429, bounded bodies, no secret (SAS signature, account
key, bearer token) in an error. The behaviour they share with the SDK path is covered
by ``test_azure_store.py``, ``test_gcs_store.py`` and the conformance suite, which run
on the lean paths by default.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from datamover.errors import AuthError, NotFound, PermissionDenied, StoreError
from datamover.stores import StoreSettings
from datamover.stores.azure import ENV_ACCOUNT, ENV_CONNECTION_STRING, ENV_KEY, ENV_SAS, AzureStore
from datamover.stores.azure.client import make_service_client
from datamover.stores.base import ObjectInfo
from datamover.stores.bounds import ResponseTooLarge
from datamover.stores.gcs import GCSStore
from datamover.stores.gcs.lean import LeanGCS
from datamover.stores.urls import Location

from rawserver import RawServer, Request, response
from servers import AZURITE_ACCOUNT, AZURITE_KEY, AzuriteServer, FakeGcsServer

pytestmark = pytest.mark.cloud

_AZURE_ENV = (ENV_CONNECTION_STRING, ENV_ACCOUNT, ENV_KEY, ENV_SAS, "DATAMOVER_AZURE_LEAN")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _AZURE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("DATAMOVER_GCS_LEAN", raising=False)
    return monkeypatch


@pytest.fixture
def container(azurite: AzuriteServer) -> str:
    name = f"t{secrets.token_hex(8)}"
    azurite.make_bucket(name)
    return name


def _round_trip(store: Any) -> None:
    data = secrets.token_bytes(70_000)
    put = store.put("lean/k", data, metadata={"x-a": "1"})
    assert put.verified in ("md5", "crc32c")
    assert store.stat("lean/k").size == len(data)
    got, info = store.read_object("lean/k", ObjectInfo("lean/k", len(data)))
    assert bytes(got) == data and info.metadata["x-a"] == "1"
    buf = bytearray(1000)
    assert store.readinto("lean/k", 69_500, memoryview(buf)) == 500
    assert bytes(buf[:500]) == data[69_500:]
    assert store.read("lean/k", 10, 5) == data[10:15]
    store.delete("lean/k")
    store.delete("lean/k")
    with pytest.raises(NotFound):
        store.stat("lean/k")


# --- Azure ---------------------------------------------------------------------------


def test_azure_lean_with_key_and_with_sas(
    azurite: AzuriteServer, container: str, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv(ENV_CONNECTION_STRING, azurite.connection_string)
    with AzureStore.from_location(Location("az", container, ""), StoreSettings()) as store:
        assert store._lean is not None
        _round_trip(store)
    clean_env.delenv(ENV_CONNECTION_STRING)
    sas = generate_container_sas(
        AZURITE_ACCOUNT,
        container,
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, write=True, list=True, delete=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    clean_env.setenv(ENV_SAS, sas)
    clean_env.setenv(ENV_ACCOUNT, AZURITE_ACCOUNT)
    settings = StoreSettings(endpoint=azurite.endpoint)
    with AzureStore.from_location(Location("az", container, ""), settings) as store:
        assert store._lean is not None
        _round_trip(store)


def test_azure_lean_off_by_env(
    azurite: AzuriteServer, container: str, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv(ENV_CONNECTION_STRING, azurite.connection_string)
    clean_env.setenv("DATAMOVER_AZURE_LEAN", "0")
    with AzureStore.from_location(Location("az", container, ""), StoreSettings()) as store:
        assert store._lean is None
        _round_trip(store)


def _raw_azure(server: RawServer, container: str, clean_env: pytest.MonkeyPatch) -> AzureStore:
    clean_env.setenv(ENV_KEY, AZURITE_KEY)
    settings = StoreSettings(endpoint=f"{server.url}/{AZURITE_ACCOUNT}", account=AZURITE_ACCOUNT)
    return AzureStore(container, make_service_client(settings, retries=0))


def test_azure_lean_retries_server_busy_then_signs_put(clean_env: pytest.MonkeyPatch) -> None:
    answers = iter(
        [
            response(503, headers={"x-ms-error-code": "ServerBusy"}),
            response(
                201,
                headers={
                    "ETag": '"0x1"',
                    "Last-Modified": "Sun, 06 Dec 2026 12:00:00 GMT",
                    "Content-MD5": base64.b64encode(hashlib.md5(b"abc").digest()).decode(),
                },
            ),
        ]
    )
    with RawServer(lambda req: next(answers)) as server:
        with _raw_azure(server, "c1", clean_env) as store:
            info = store.put("k", b"abc")
        assert info.verified == "md5" and info.etag == "0x1"
        assert [r.method for r in server.requests] == ["PUT", "PUT"]
        sent = server.requests[-1]
        assert sent.path == f"/{AZURITE_ACCOUNT}/c1/k"
        assert sent.headers["authorization"].startswith(f"SharedKey {AZURITE_ACCOUNT}:")
        assert (
            sent.headers["content-md5"] == base64.b64encode(hashlib.md5(b"abc").digest()).decode()
        )
        assert AZURITE_KEY not in repr(server.requests)


def test_azure_lean_sas_never_in_errors(clean_env: pytest.MonkeyPatch) -> None:
    def answer(req: Request) -> bytes:
        body = b"<Error><Code>AuthorizationPermissionMismatch</Code></Error>"
        return response(403, body, {"x-ms-error-code": "AuthorizationPermissionMismatch"})

    clean_env.setenv(ENV_SAS, "sv=2024-01-01&sig=SECRETSIGNATURE")
    clean_env.setenv(ENV_ACCOUNT, AZURITE_ACCOUNT)
    with RawServer(answer) as server:
        settings = StoreSettings(endpoint=f"{server.url}/{AZURITE_ACCOUNT}")
        with AzureStore("c1", make_service_client(settings, retries=0)) as store:
            assert store._lean is not None
            for call in (
                lambda: store.stat("k"),
                lambda: store.put("k", b"x"),
                lambda: store.read("k"),
            ):
                with pytest.raises(PermissionDenied) as info:
                    call()
                assert "SECRETSIGNATURE" not in str(info.value)
        assert all(r.query.get("sig") == "SECRETSIGNATURE" for r in server.requests)


def test_azure_lean_bounds_a_body_longer_than_asked(clean_env: pytest.MonkeyPatch) -> None:
    def answer(req: Request) -> bytes:
        head = "HTTP/1.1 206 X\r\nContent-Length: 3000000000\r\n"
        head += "Content-Range: bytes 0-2999999999/3000000000\r\n\r\n"
        return head.encode() + b"x" * 1000

    with RawServer(answer) as server:
        with _raw_azure(server, "c1", clean_env) as store:
            with pytest.raises(ResponseTooLarge):
                store.readinto("k", 0, memoryview(bytearray(100)))
            with pytest.raises(StoreError):
                store.read_object("k", ObjectInfo("k", 10))
            with pytest.raises(StoreError):
                store.read("k")
        assert server.sent < 100_000


# --- GCS -----------------------------------------------------------------------------


@pytest.fixture
def gcs_store(gcs: FakeGcsServer, clean_env: pytest.MonkeyPatch) -> Iterator[GCSStore]:
    name = f"t-{secrets.token_hex(6)}"
    gcs.make_bucket(name)
    store = GCSStore.from_location(
        Location("gs", name, ""), StoreSettings(endpoint=gcs.endpoint, connections=8)
    )
    yield store
    store.close()


def test_gcs_lean_round_trip(gcs_store: GCSStore) -> None:
    assert gcs_store._lean is not None
    _round_trip(gcs_store)


def test_gcs_lean_off_by_env(gcs: FakeGcsServer, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DATAMOVER_GCS_LEAN", "0")
    name = f"t-{secrets.token_hex(6)}"
    gcs.make_bucket(name)
    store = GCSStore.from_location(Location("gs", name, ""), StoreSettings(endpoint=gcs.endpoint))
    try:
        assert store._lean is None
        _round_trip(store)
    finally:
        store.close()


class _Token:
    """google-auth credentials as the lean path uses them."""

    valid = True
    token = "SECRETTOKEN"
    quota_project_id = "billing-project"


class _Client:
    def __init__(self, endpoint: str) -> None:
        self.api_endpoint = endpoint
        self._credentials = _Token()


def _gcs_error(status: int, reason: str) -> bytes:
    body = json.dumps({"error": {"code": status, "message": "m", "errors": [{"reason": reason}]}})
    return response(status, body.encode(), {"Content-Type": "application/json"})


def test_gcs_lean_bearer_token_retries_and_errors() -> None:
    answers = iter(
        [
            _gcs_error(503, "backendError"),
            _gcs_error(429, "rateLimitExceeded"),
            _gcs_error(403, "forbidden"),
            _gcs_error(401, "authError"),
        ]
    )
    with RawServer(lambda req: next(answers)) as server:
        lean = LeanGCS(_Client(server.url), "b", lambda: True)
        lean.http._sleep = lambda s: None
        with pytest.raises(PermissionDenied) as denied:
            lean.stat("k")
        with pytest.raises(AuthError) as rejected:
            lean.stat("k")
        lean.close()
    for error in (denied, rejected):
        assert "SECRETTOKEN" not in str(error.value)
        assert str(error.value).startswith("gs://b/k: ")
    assert len(server.requests) == 4
    assert all(r.headers["authorization"] == "Bearer SECRETTOKEN" for r in server.requests)
    assert server.requests[0].headers["x-goog-user-project"] == "billing-project"
    assert server.requests[0].path == "/storage/v1/b/b/o/k"


def test_gcs_lean_bounds_a_body_longer_than_asked() -> None:
    def answer(req: Request) -> bytes:
        return b"HTTP/1.1 200 X\r\nContent-Length: 3000000000\r\n\r\n" + b"x" * 1000

    with RawServer(answer) as server:
        lean = LeanGCS(_Client(server.url), "b", lambda: True)
        with pytest.raises(ResponseTooLarge):
            lean.readinto("k", 0, memoryview(bytearray(100)))
        with pytest.raises(ResponseTooLarge):
            lean.stat("k")  # a resource is at most MAX_RESOURCE
        lean.close()
    assert server.sent < 100_000
