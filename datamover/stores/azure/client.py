"""Building a ``BlobServiceClient``: credentials, endpoint, transport and retries.

The credential order and the client tuning are described in the package docstring
(``datamover.stores.azure``). Secrets come from the environment only and never appear
in a message.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import requests
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobServiceClient, ExponentialRetry
from urllib3.util.retry import Retry

from datamover.errors import ConfigError
from datamover.stores import StoreSettings, referenced_secret
from datamover.stores.base import MiB, PartLimits
from datamover.stores.httpbounds import BoundedAdapter

ENV_CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
ENV_ACCOUNT = "AZURE_STORAGE_ACCOUNT"
ENV_KEY = "AZURE_STORAGE_KEY"
ENV_SAS = "AZURE_STORAGE_SAS_TOKEN"
#: ``StoreSettings.extra`` keys of a remote naming the env vars that hold its secrets.
_SECRET_REFS = ("connection_string_env", "account_key_env", "sas_token_env")

#: Block-blob limits: ``AzureStore.limits``; the client's single-put ceiling is one.
LIMITS = PartLimits(
    min_part_size=1,
    max_part_size=4000 * MiB,
    max_parts=50_000,
    max_single_put=5000 * MiB,
)

_CONNECT_TIMEOUT = 20
_READ_TIMEOUT = 120
#: The most a response body read whole may hold: a List Blobs page of 5,000 blobs with
#: their metadata (up to 8 KiB each) and properties, XML-escaped, with room to spare.
MAX_RESPONSE_BODY = 64 * MiB

_NO_CREDENTIALS = (
    "no Azure credentials: set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT "
    "with AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN (or pip install azure-identity "
    "to use DefaultAzureCredential)"
)


def _connection_string_credential(conn: str) -> Any:
    """The credential inside a connection string, for use with an endpoint override."""
    fields = {}
    for part in conn.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            fields[name.strip().lower()] = value.strip()
    if fields.get("accountname") and fields.get("accountkey"):
        return {"account_name": fields["accountname"], "account_key": fields["accountkey"]}
    if fields.get("sharedaccesssignature"):
        return fields["sharedaccesssignature"].lstrip("?")
    raise ConfigError(
        f"{ENV_CONNECTION_STRING} has no AccountName/AccountKey or SharedAccessSignature "
        "to use with the configured endpoint"
    )


def _default_credential() -> Any:
    # Imported here because azure-identity is an optional extra: without it this
    # step of the credential chain is skipped.
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        return None
    return DefaultAzureCredential()


def _transport(connections: int) -> RequestsTransport:
    session = requests.Session()
    # Retries belong to the SDK policy, not to urllib3 (as azure-core's own adapter).
    # Bodies are bounded (httpbounds): no answer makes the SDK read without end.
    adapter = BoundedAdapter(
        pool_connections=4,
        pool_maxsize=max(1, connections),
        max_retries=Retry(total=False, redirect=False, raise_on_status=False),
        max_body=MAX_RESPONSE_BODY,
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return RequestsTransport(
        session=session,
        session_owner=True,
        connection_data_block_size=MiB,
        connection_timeout=_CONNECT_TIMEOUT,
        read_timeout=_READ_TIMEOUT,
    )


def _resolve_credentials(settings: StoreSettings) -> tuple[str | None, str, Any]:
    """``(connection string, account URL, credential)``; with a connection string the
    other two are unused unless ``settings.endpoint`` overrides its endpoint."""
    env = os.environ
    # A remote that names env vars for its secrets uses only those, never the defaults.
    by_ref = any(settings.extra.get(r) for r in _SECRET_REFS)
    conn = (
        referenced_secret(settings, "connection_string_env")
        if by_ref
        else env.get(ENV_CONNECTION_STRING)
    )
    if conn:
        if not settings.endpoint:
            return conn, "", None
        return None, settings.endpoint, _connection_string_credential(conn)
    account = settings.account or env.get(ENV_ACCOUNT)
    if not account and not settings.endpoint:
        raise ConfigError(_NO_CREDENTIALS)
    url = settings.endpoint or f"https://{account}.blob.core.windows.net"
    if by_ref:
        key = referenced_secret(settings, "account_key_env")
        sas = referenced_secret(settings, "sas_token_env")
    else:
        key, sas = env.get(ENV_KEY), env.get(ENV_SAS)
    if key and account:
        return None, url, {"account_name": account, "account_key": key}
    if sas:
        return None, url, sas.lstrip("?")
    credential = _default_credential()
    if credential is None:
        raise ConfigError(_NO_CREDENTIALS)
    return None, url, credential


def make_service_client(settings: StoreSettings, *, retries: int = 3) -> BlobServiceClient:
    """A ``BlobServiceClient`` from the environment's credentials (see the package
    docstring for the order) with datamover's transport, pool and retry tuning;
    ``retries`` is the SDK's attempt budget per request after the first.
    Raises ``ConfigError`` when no credentials are found; makes no request."""
    conn, url, credential = _resolve_credentials(settings)
    transport = _transport(settings.connections)
    options: dict[str, Any] = {
        "transport": transport,
        "retry_policy": ExponentialRetry(
            initial_backoff=1, increment_base=2, retry_total=retries, random_jitter_range=1
        ),
        "max_single_put_size": LIMITS.max_single_put,
        "max_single_get_size": 32 * MiB,
        "max_chunk_get_size": 8 * MiB,
        "connection_data_block_size": MiB,
    }
    if conn:
        try:
            client = BlobServiceClient.from_connection_string(conn, **options)
        except ValueError as e:
            transport.close()
            # The SDK's message does not echo the string; ours must not either.
            raise ConfigError(f"{ENV_CONNECTION_STRING} is malformed") from e
    else:
        try:
            client = BlobServiceClient(url, credential=credential, **options)
        except ValueError as e:
            transport.close()
            # Scheme, host and path only: a pasted URL may carry a SAS in its query.
            shown = urlsplit(url)._replace(query="", fragment="").geturl()
            reason = str(e).replace(url, shown)
            raise ConfigError(f"bad Azure account URL {shown}: {reason}") from None
    return client
