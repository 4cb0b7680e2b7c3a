"""What lets the Azure store skip azure-storage-blob (``stores/azure/sdk.py``, issue
#18) must agree with the SDK it stands in for: ``client.plain_target`` gives the
container URL, API version and credential the SDK's client would use (or None: ask
the SDK), ``headersort.header_order`` is the SDK's Shared Key header order, and
importing the store (or mapping an error that is not the SDK's) loads no SDK."""

from __future__ import annotations

import subprocess
import sys

import pytest
from azure.storage.blob._serialize import _SUPPORTED_API_VERSIONS
from azure.storage.blob._shared.authentication import _storage_header_sort
from azure.storage.blob._shared.shared_access_signature import QueryStringConstants
from hypothesis import given, settings
from hypothesis import strategies as st

from datamover.stores import StoreSettings
from datamover.stores.azure.client import (
    _SAS_PARAMS,
    API_VERSION,
    LeanTarget,
    make_service_client,
    plain_target,
)
from datamover.stores.azure.headersort import header_order

_KEY = "a2V5a2V5a2V5"  # base64 "keykeykey"
_VARS = (
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
)
_SAS = "sv=2024-08-04&ss=b&srt=sco&sp=rwdlac&se=2030-01-01T00:00:00Z&sig=abc%2Bdef%3D"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _VARS:
        monkeypatch.delenv(name, raising=False)


def _sdk_target(settings: StoreSettings, container: str) -> LeanTarget:
    with make_service_client(settings) as service:
        return LeanTarget.of_client(service.get_container_client(container))


_PLAIN = [
    # (environment, settings): the SDK's client and plain_target must agree.
    (
        {
            "AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=http;AccountName=dev;"
            f"AccountKey={_KEY};BlobEndpoint=http://127.0.0.1:10000/dev;"
        },
        {},
    ),
    (
        {
            "AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=acct;"
            f"AccountKey={_KEY};EndpointSuffix=core.windows.net"
        },
        {},
    ),
    ({"AZURE_STORAGE_CONNECTION_STRING": f"AccountName=acct;AccountKey={_KEY}"}, {}),
    (
        {
            "AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=http;AccountName=acct;"
            f"AccountKey={_KEY};EndpointSuffix=example.cn"
        },
        {},
    ),
    (
        {
            "AZURE_STORAGE_CONNECTION_STRING": "BlobEndpoint=https://acct.blob.core.windows.net/;"
            f"SharedAccessSignature={_SAS}"
        },
        {},
    ),
    (
        {"AZURE_STORAGE_CONNECTION_STRING": f"AccountName=acct;AccountKey={_KEY}"},
        {"endpoint": "http://localhost:10000/acct"},
    ),
    ({"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_KEY": _KEY}, {}),
    ({"AZURE_STORAGE_KEY": _KEY}, {"account": "acct", "endpoint": "http://127.0.0.1:9/acct/"}),
    ({"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_SAS_TOKEN": "?" + _SAS}, {}),
    (
        {"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_KEY": _KEY},
        {"endpoint": "https://acct.blob.core.windows.net/ignored/path"},
    ),
]


@pytest.mark.parametrize(("env", "kwargs"), _PLAIN)
def test_plain_target_is_the_sdk_clients(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], kwargs: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = StoreSettings(**kwargs)  # type: ignore[arg-type]
    plain = plain_target(settings, "my-container")
    assert plain is not None
    sdk = _sdk_target(settings, "my-container")
    assert (plain.url, plain.api_version, plain.account, plain.key) == (
        sdk.url,
        sdk.api_version,
        sdk.account,
        sdk.key,
    )
    assert _KEY not in repr(plain) and "sig=" not in repr(plain)


@pytest.mark.parametrize(
    "env",
    [
        {"AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"},
        # A "SAS" the SDK would read as an account key.
        {"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_SAS_TOKEN": "notasas"},
        {"AZURE_STORAGE_CONNECTION_STRING": "AccountName=acct;AccountKey"},  # malformed
        {"AZURE_STORAGE_CONNECTION_STRING": f"BlobSecondaryEndpoint=x;AccountKey={_KEY}"},
    ],
)
def test_anything_else_asks_the_sdk(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert plain_target(StoreSettings(), "c1c") is None


def test_an_account_url_with_a_query_asks_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_KEY", _KEY)
    settings = StoreSettings(account="a", endpoint=f"https://a.blob.core.windows.net/?{_SAS}")
    assert plain_target(settings, "c1c") is None


def test_api_version_and_sas_names_are_the_sdks() -> None:
    assert _SUPPORTED_API_VERSIONS[-1] == API_VERSION
    assert set(QueryStringConstants.to_list()) >= _SAS_PARAMS


_NAMES = st.lists(
    st.text("abcxyzABZ019_-'", min_size=1, max_size=8).map(lambda s: "x-ms-" + s),
    unique=True,
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(_NAMES)
def test_header_order_is_the_sdks(names: list[str]) -> None:
    expected = [n for n, _ in _storage_header_sort([(n, "") for n in names])]
    assert header_order(tuple(names)) == expected


def test_the_common_headers_in_order() -> None:
    names = ("x-ms-version", "x-ms-meta-a_b", "x-ms-date", "x-ms-meta-ab", "x-ms-blob-type")
    expected = [n for n, _ in _storage_header_sort([(n, "") for n in names])]
    assert header_order(names) == expected


def test_the_store_and_its_error_mapping_import_no_sdk() -> None:
    code = (
        "import sys\n"
        "from datamover.stores.azure import AzureStore, map_error\n"
        "from datamover.stores.azure.errors import is_invalid_range\n"
        "e = map_error(ConnectionResetError(104, 'Connection reset'), 'c', 'k')\n"
        "assert type(e).__name__ == 'TransientError', e\n"
        "assert type(map_error(ValueError('x'), 'c')).__name__ == 'StoreError'\n"
        "assert not is_invalid_range(OSError())\n"
        "print(sorted(m for m in sys.modules if m.startswith(('azure', 'requests'))))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
