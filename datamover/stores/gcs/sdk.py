"""google-cloud-storage, google-auth and google-api-core, imported on first need (one
place, so the deferral is explicit).

Importing them cost ~0.45 CPU-s at every start, in every process of a copy (with
``--processes``, the coordinator and each worker): ``import datamover.stores.gcs.store``
took 0.64 CPU-s with them, 0.21 without (``import datamover.stores`` alone: 0.19). A
copy against an endpoint with anonymous credentials (an emulator:
``STORAGE_EMULATOR_HOST``) never needs them: the lean path (``lean.py``) sends the data
calls, listings, compose and deletes itself. They are imported when something does
need them: Application Default Credentials and their token refresh (``client.py``,
``lean.py``), the SDK client for what stays on it (rewrite, ``DATAMOVER_GCS_LEAN=0``,
a client the lean path can't serve) and its retry policy (``store.py``), and error
mapping of the SDK's exceptions (``errors.py``, which asks ``loaded`` instead of
importing them to learn a "no")."""

from __future__ import annotations

import sys
from types import ModuleType


def storage() -> ModuleType:
    """The ``google.cloud.storage`` package (its ``retry`` and ``exceptions`` loaded)."""
    # deferred: ~0.45 CPU-s of imports (google-auth, api-core, requests, protobuf).
    import google.cloud.storage
    import google.cloud.storage.exceptions
    import google.cloud.storage.retry

    module: ModuleType = google.cloud.storage
    return module


def auth() -> ModuleType:
    """The ``google.auth`` package (``default``, its ``credentials``, ``exceptions``
    and the ``requests`` transport loaded): only for credentials that are not
    anonymous."""
    # deferred: as ``storage`` above; an emulator's anonymous client needs none of it.
    import google.auth
    import google.auth.credentials
    import google.auth.exceptions
    import google.auth.transport.requests

    return google.auth


def service_account() -> ModuleType:
    """``google.oauth2.service_account`` (a remote's key file)."""
    import google.oauth2.service_account

    return google.oauth2.service_account


def api_exceptions() -> ModuleType:
    """``google.api_core.exceptions``: the SDK's exception classes."""
    # deferred: as ``storage`` above.
    import google.api_core.exceptions

    return google.api_core.exceptions


def loaded(name: str) -> ModuleType | None:
    """Module ``name`` if something already imported it, else None: an exception can
    only be one of the SDK's (or requests') classes once that module is loaded, so
    error mapping asks this instead of importing the SDK to learn a "no"."""
    return sys.modules.get(name)
