"""The store's connection to GCS: endpoint, credentials and project, the
google-cloud-storage client made from them on first need, and that client's
connection pool sized for the threads that share it.

An endpoint (``settings.endpoint``, else ``STORAGE_EMULATOR_HOST``) means anonymous
credentials, as emulators want; otherwise Application Default Credentials. The
project comes from ``settings.extra["project"]``, ``GOOGLE_CLOUD_PROJECT``, ADC, or
is ``DEFAULT_PROJECT`` against an anonymous endpoint.

With anonymous credentials nothing here imports the SDK (``sdk.py``): the lean path
needs only the endpoint, and the SDK client is made when a call needs it
(``Connection.client``). ADC imports google-auth and makes the SDK client at once:
the SDK settles the endpoint (mTLS, universe domain, its override variables) and the
lean path authorizes with the credentials google-auth found.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from datamover.errors import ConfigError
from datamover.stores import StoreSettings, referenced_secret
from datamover.stores.base import KiB, MiB
from datamover.stores.gcs import sdk

DEFAULT_PROJECT = "datamover"
#: ``storage.Client.SCOPE``, asked of ADC.
SCOPES = (
    "https://www.googleapis.com/auth/devstorage.full_control",
    "https://www.googleapis.com/auth/devstorage.read_only",
    "https://www.googleapis.com/auth/devstorage.read_write",
)

_T = TypeVar("_T")
_R = TypeVar("_R")


class Connection:
    """What a ``GCSStore`` talks to GCS with: ``api_endpoint`` and ``_credentials``
    (None: anonymous; the names an SDK client gives them, so ``LeanGCS`` reads
    either) and the SDK client, made on first use of ``client`` with its pool sized by
    ``size``. Thread-safe."""

    def __init__(
        self,
        api_endpoint: str | None,
        credentials: Any,
        project: str | None,
        *,
        client: Any = None,
    ) -> None:
        self.api_endpoint = api_endpoint
        self._credentials = credentials
        self.project = project
        self._client = client
        self._lock = threading.Lock()
        self._pool: tuple[int, int] | None = None

    @classmethod
    def of(cls, client: Any) -> Connection:
        """A connection around an SDK client made elsewhere (tests, ADC)."""
        credentials = getattr(client, "_credentials", None)
        if type(credentials).__name__ == "AnonymousCredentials":
            credentials = None
        return cls(
            getattr(client, "api_endpoint", None),
            credentials,
            getattr(client, "project", None),
            client=client,
        )

    @property
    def made(self) -> bool:
        """Whether the SDK client exists (so closing it means something)."""
        return self._client is not None

    def size(self, connections: int, page_size: int) -> None:
        """Size the SDK client's pool (``size_pool``): now if it exists, else when
        it is made."""
        with self._lock:
            self._pool = (connections, page_size)
            client = self._client
        if client is not None:
            size_pool(client, connections, page_size)

    @property
    def client(self) -> Any:
        """The ``storage.Client``, made (importing the SDK) on first use."""
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                storage = sdk.storage()
                credentials = self._credentials
                if credentials is None:
                    credentials = sdk.auth().credentials.AnonymousCredentials()
                client = storage.Client(
                    project=self.project,
                    credentials=credentials,
                    client_options={"api_endpoint": self.api_endpoint}
                    if self.api_endpoint
                    else None,
                )
                if self._pool is not None:
                    size_pool(client, *self._pool)
                self._client = client
            return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def make_client(bucket: str, settings: StoreSettings) -> Connection:
    """The ``Connection`` for ``settings``. An endpoint (``settings.endpoint``, else
    ``STORAGE_EMULATOR_HOST``; ``http://`` assumed without a scheme) means anonymous
    credentials unless ``settings.extra["anonymous"]`` is false (a private endpoint
    that still needs ADC). ``bucket`` only names the store in errors. Raises
    ``ConfigError`` when ADC finds no credentials."""
    extra = settings.extra
    endpoint = settings.endpoint or os.environ.get("STORAGE_EMULATOR_HOST")
    if endpoint and "://" not in endpoint:
        endpoint = "http://" + endpoint
    project = extra.get("project") or os.environ.get("GOOGLE_CLOUD_PROJECT")
    # A remote's credentials_file_env names the variable holding a key file's path.
    key_file = referenced_secret(settings, "credentials_file_env")
    if endpoint and extra.get("anonymous", True) and key_file is None:
        # No SDK: the lean path needs only the endpoint (see the module docstring).
        return Connection(endpoint, None, project or DEFAULT_PROJECT)
    auth = sdk.auth()
    if key_file is not None:
        credentials, adc_project = _from_file(auth, key_file, bucket, extra)
    else:
        try:
            credentials, adc_project = auth.default(scopes=list(SCOPES))
        except auth.exceptions.DefaultCredentialsError as e:
            raise ConfigError(
                f"gs://{bucket}: no usable Google credentials; set "
                "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file or run "
                "`gcloud auth application-default login`"
            ) from e
    client = sdk.storage().Client(
        project=project or adc_project,
        credentials=credentials,
        client_options={"api_endpoint": endpoint} if endpoint else None,
    )
    return Connection.of(client)


def _from_file(auth: Any, path: str, bucket: str, extra: Mapping[str, Any]) -> tuple[Any, Any]:
    """Credentials from the service-account key file a remote names (only that kind:
    a file of another type could send the token request anywhere it says); a file that
    can't be used is a ``ConfigError`` naming the variable and the path, never the
    file's text."""
    var = extra.get("credentials_file_env")
    try:
        credentials = sdk.service_account().Credentials.from_service_account_file(
            path, scopes=list(SCOPES)
        )
        project = credentials.project_id
    except (auth.exceptions.GoogleAuthError, OSError, ValueError, KeyError):
        why = "no such file" if not os.path.exists(path) else "not a Google credentials file"
        raise ConfigError(
            f"gs://{bucket}: ${var} names {path!r}: {why}; point it at a service-account "
            "key file (JSON)"
        ) from None
    return credentials, project


def max_response_body(page_size: int) -> int:
    """The most a JSON answer read whole may hold: a listing page of ``page_size``
    objects with their metadata (up to 8 KiB each) and properties, escaped, with room
    to spare; never less than 16 MiB."""
    return max(16 * MiB, page_size * 16 * KiB)


def size_pool(client: Any, connections: int, page_size: int = 1000) -> None:
    """Let every thread hold a connection: requests' default pool keeps 10 per host and
    discards the rest after use, so more threads would reconnect on every request.
    Commits fan out compose/delete calls ``connections`` wide while other files' parts
    are in flight, hence the headroom. The adapter bounds what a response may make the
    SDK read (``httpbounds``; ``page_size`` sizes a listing page's bound). Adapters
    other than the plain one (mTLS) are left as they are. Only called with an SDK
    client, so requests is loaded already."""
    # deferred: requests comes with the SDK client (``sdk.py``) only.
    from requests.adapters import HTTPAdapter

    # deferred: httpbounds imports requests.
    from datamover.stores.httpbounds import BoundedAdapter

    session = client._http
    for prefix in ("https://", "http://"):
        if type(session.adapters.get(prefix)) is HTTPAdapter:
            adapter = BoundedAdapter(
                pool_maxsize=max(4 * connections, 32),
                max_retries=0,
                max_body=max_response_body(page_size),
            )
            session.mount(prefix, adapter)


def pool_map(fn: Callable[[_T], _R], items: Sequence[_T], workers: int) -> list[_R]:
    """``map`` over a bounded thread pool; inline for one item. Raises the first error."""
    if len(items) <= 1 or workers <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))
