"""The google-cloud-storage client: endpoint, credentials and project, and the
connection pool sized for the threads that share it.

An endpoint (``settings.endpoint``, else ``STORAGE_EMULATOR_HOST``) means anonymous
credentials, as emulators want; otherwise Application Default Credentials. The
project comes from ``settings.extra["project"]``, ``GOOGLE_CLOUD_PROJECT``, ADC, or
is ``DEFAULT_PROJECT`` against an anonymous endpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import google.auth
import google.auth.exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from requests.adapters import HTTPAdapter

from datamover.errors import ConfigError
from datamover.stores import StoreSettings
from datamover.stores.base import KiB, MiB
from datamover.stores.httpbounds import BoundedAdapter

DEFAULT_PROJECT = "datamover"

_T = TypeVar("_T")
_R = TypeVar("_R")


def make_client(bucket: str, settings: StoreSettings) -> Any:
    """A ``storage.Client`` for ``settings``. An endpoint (``settings.endpoint``, else
    ``STORAGE_EMULATOR_HOST``; ``http://`` assumed without a scheme) means anonymous
    credentials unless ``settings.extra["anonymous"]`` is false (a private endpoint
    that still needs ADC). ``bucket`` only names the store in errors. Raises
    ``ConfigError`` when ADC finds no credentials."""
    extra = settings.extra
    endpoint = settings.endpoint or os.environ.get("STORAGE_EMULATOR_HOST")
    if endpoint and "://" not in endpoint:
        endpoint = "http://" + endpoint
    project = extra.get("project") or os.environ.get("GOOGLE_CLOUD_PROJECT")
    credentials: Any
    if endpoint and extra.get("anonymous", True):
        credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
        project = project or DEFAULT_PROJECT
    else:
        try:
            credentials, adc_project = google.auth.default(scopes=list(storage.Client.SCOPE))
        except google.auth.exceptions.DefaultCredentialsError as e:
            raise ConfigError(
                f"gs://{bucket}: no usable Google credentials; set "
                "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file or run "
                "`gcloud auth application-default login`"
            ) from e
        project = project or adc_project
    return storage.Client(
        project=project,
        credentials=credentials,
        client_options={"api_endpoint": endpoint} if endpoint else None,
    )


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
    other than the plain one (mTLS) are left as they are."""
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
