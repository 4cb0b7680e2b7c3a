"""Credentials, endpoint, transport and retries: a ``BlobServiceClient`` made when a
call needs one, and where the lean path sends a container's requests without it.

The credential order and the client tuning are described in the package docstring
(``datamover.stores.azure``). Secrets come from the environment only and never appear
in a message.

``plain_target`` works out, without the SDK, the container URL and Shared Key or SAS
credential the SDK's client would use, for the cases where that is certain (a
connection string with an account key or a SAS, an account with a key or a SAS);
anything else (DefaultAzureCredential, ``UseDevelopmentStorage``, a URL that carries a
query, a SAS the SDK would take for a key) gets its ``LeanTarget`` from the SDK's
client, as before. ``ServiceClient`` makes that client on first use (``sdk.py``).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlparse, urlsplit

from datamover.errors import ConfigError
from datamover.stores import StoreSettings, referenced_secret
from datamover.stores.azure import sdk
from datamover.stores.base import MiB, PartLimits

if TYPE_CHECKING:
    from azure.core.pipeline.transport import RequestsTransport
    from azure.storage.blob import BlobServiceClient

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
    # deferred: requests and urllib3 serve only the SDK's transport (~0.05 CPU-s).
    import requests
    from urllib3.util.retry import Retry

    # deferred: as requests (the bounds the SDK's transport reads bodies under).
    from datamover.stores.httpbounds import BoundedAdapter

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
    transport: RequestsTransport = sdk.transport().RequestsTransport(
        session=session,
        session_owner=True,
        connection_data_block_size=MiB,
        connection_timeout=_CONNECT_TIMEOUT,
        read_timeout=_READ_TIMEOUT,
    )
    return transport


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
    blob = sdk.blob()
    transport = _transport(settings.connections)
    client: BlobServiceClient
    options: dict[str, Any] = {
        "transport": transport,
        "retry_policy": blob.ExponentialRetry(
            initial_backoff=1, increment_base=2, retry_total=retries, random_jitter_range=1
        ),
        "max_single_put_size": LIMITS.max_single_put,
        "max_single_get_size": 32 * MiB,
        "max_chunk_get_size": 8 * MiB,
        "connection_data_block_size": MiB,
    }
    if conn:
        try:
            client = blob.BlobServiceClient.from_connection_string(conn, **options)
        except ValueError as e:
            transport.close()
            # The SDK's message does not echo the string; ours must not either.
            raise ConfigError(f"{ENV_CONNECTION_STRING} is malformed") from e
    else:
        try:
            client = blob.BlobServiceClient(url, credential=credential, **options)
        except ValueError as e:
            transport.close()
            # Scheme, host and path only: a pasted URL may carry a SAS in its query.
            shown = urlsplit(url)._replace(query="", fragment="").geturl()
            reason = str(e).replace(url, shown)
            raise ConfigError(f"bad Azure account URL {shown}: {reason}") from None
    return client


#: The API version the lean path sends when no SDK client says which: the newest the
#: locked azure-storage-blob speaks (a unit test holds the two equal).
API_VERSION = "2026-10-06"
#: SAS query parameters (a subset of the SDK's ``QueryStringConstants``): a SAS made
#: of these alone is one to the SDK too; any other string it reads as an account key.
_SAS_PARAMS = frozenset(
    {"sig", "sp", "st", "se", "sr", "si", "sip", "spr", "sv", "ss", "srt"}
    | {"rscc", "rscd", "rsce", "rscl", "rsct"}
)


@dataclass(frozen=True)
class LeanTarget:
    """Where and how the lean path (``lean.py``) sends a container's requests: the
    container URL (with the SAS query when a SAS is the credential), the API version,
    and the Shared Key (account, base64 key) or a token credential. Never shown
    (``repr`` leaves out the URL, the key and the credential)."""

    url: str = field(repr=False)
    api_version: str
    account: str = ""
    key: str | None = field(default=None, repr=False)
    token_credential: Any = field(default=None, repr=False)

    @classmethod
    def of_client(cls, container_client: Any) -> LeanTarget:
        """What the SDK's ``ContainerClient`` sends with."""
        credential = container_client.credential
        account, key, token = "", None, None
        if credential is not None and hasattr(credential, "account_key"):
            account, key = str(credential.account_name), str(credential.account_key)
        elif credential is not None and hasattr(credential, "get_token"):
            token = credential
        url, version = str(container_client.url), str(container_client.api_version)
        return cls(url, version, account, key, token)


def _connection_fields(conn: str) -> dict[str, str] | None:
    """A connection string's fields, names upper-cased, as the SDK splits them."""
    fields: dict[str, str] = {}
    for part in conn.rstrip(";").split(";"):
        name, sep, value = part.partition("=")
        if not sep:
            return None  # malformed: the SDK says so
        fields[name.upper()] = value
    return fields


def _connection_target(conn: str) -> tuple[str, Any] | None:
    """The account URL and credential the SDK takes from a connection string, when
    they are plain (see ``plain_target``)."""
    fields = _connection_fields(conn)
    if fields is None or fields.get("USEDEVELOPMENTSTORAGE") == "true":
        return None
    if fields.get("ACCOUNTNAME") is not None and fields.get("ACCOUNTKEY") is not None:
        credential: Any = {
            "account_name": fields["ACCOUNTNAME"],
            "account_key": fields["ACCOUNTKEY"],
        }
    else:
        credential = fields.get("SHAREDACCESSSIGNATURE")
    if "BLOBENDPOINT" in fields:
        return fields["BLOBENDPOINT"], credential
    if "BLOBSECONDARYENDPOINT" in fields or "ACCOUNTNAME" not in fields:
        return None  # the SDK refuses it
    suffix = fields.get("ENDPOINTSUFFIX")
    protocol = fields.get("DEFAULTENDPOINTSPROTOCOL") if suffix is not None else None
    return (
        f"{protocol or 'https'}://{fields['ACCOUNTNAME']}.blob.{suffix or 'core.windows.net'}",
        credential,
    )


def _is_sas(credential: str) -> bool:
    query = parse_qs(credential.lstrip("?"))
    return bool(query) and "sig" in query and all(name in _SAS_PARAMS for name in query)


def plain_target(settings: StoreSettings, container: str) -> LeanTarget | None:
    """The ``LeanTarget`` the SDK's client for ``settings`` would give, worked out
    without the SDK where that is certain: an account URL without a query and a Shared
    Key, or a SAS made of the usual parameters. None: ask the SDK's client (token
    credentials, development storage, anything unusual). Raises ``ConfigError`` as
    ``make_service_client`` does for missing or malformed credentials."""
    conn, url, credential = _resolve_credentials(settings)
    if conn:
        found = _connection_target(conn)
        if found is None:
            return None
        url, credential = found
    if not url.lower().startswith("http"):
        url = "https://" + url
    parts = urlparse(url.rstrip("/"))
    if not parts.netloc or parts.query or parts.params or parts.fragment:
        return None
    # As the SDK: an Azure host name drops the URL's path; any other host keeps it
    # (Azurite, emulators and private endpoints name the account in the path).
    host = parts.netloc
    if ".blob.core." not in host:
        host = (host + parts.path).rstrip("/")
    container_url = f"{parts.scheme}://{host}/{quote(container.encode('utf-8'))}"
    if isinstance(credential, dict):
        account, key = credential.get("account_name"), credential.get("account_key")
        if not account or not key:
            return None
        return LeanTarget(container_url, API_VERSION, account=account, key=key)
    if isinstance(credential, str) and _is_sas(credential):
        # Re-encoded as the SDK's container client does (``parse_query``).
        query = {k: v[0] for k, v in parse_qs(credential.lstrip("?")).items()}
        sas = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
        return LeanTarget(f"{container_url}?{sas}", API_VERSION)
    return None


class ServiceClient:
    """The ``BlobServiceClient`` for one store, made on first use (``client``) from
    the settings, or one given ready-made. Thread-safe."""

    def __init__(
        self,
        settings: StoreSettings | None = None,
        *,
        retries: int = 3,
        client: BlobServiceClient | None = None,
    ) -> None:
        self._settings = settings or StoreSettings()
        self._retries = retries
        self._client = client
        self._lock = threading.Lock()

    @property
    def made(self) -> bool:
        return self._client is not None

    @property
    def client(self) -> BlobServiceClient:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = make_service_client(self._settings, retries=self._retries)
                client = self._client
        return client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
