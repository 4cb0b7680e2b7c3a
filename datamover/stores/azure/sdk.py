"""azure-storage-blob / azure-core, imported on first need (one place, so the deferral
is explicit).

Importing azure.storage.blob costs ~0.2 CPU-s (and ~0.05 more to build a client) at
every start, in the coordinator and in each ``--processes`` worker; a copy whose
connection string or account key comes from the environment never needs it (the lean
path, ``lean.py``, signs and sends the requests; ``client.plain_target`` says where).
The SDK is imported when a call needs it: a credential the lean path can't sign with
(DefaultAzureCredential, a SAS the SDK would read as a key, a development-storage
string), ``DATAMOVER_AZURE_LEAN=0``, copies, pending uploads and resume (Get Block
List), the mount's directory markers, and a value the lean path refuses
(``LeanUnavailable``)."""

from __future__ import annotations

import sys
from types import ModuleType


def blob() -> ModuleType:
    """The ``azure.storage.blob`` package."""
    # deferred: ~0.2 CPU-s of imports that the lean path does not need.
    import azure.storage.blob

    return azure.storage.blob


def core() -> ModuleType:
    """The ``azure.core`` package (``MatchConditions``)."""
    # deferred: as ``blob`` above.
    import azure.core

    return azure.core


def exceptions() -> ModuleType:
    """``azure.core.exceptions``."""
    # deferred: as ``blob`` above.
    import azure.core.exceptions

    return azure.core.exceptions


def transport() -> ModuleType:
    """``azure.core.pipeline.transport`` (``RequestsTransport``)."""
    # deferred: as ``blob`` above.
    import azure.core.pipeline.transport

    return azure.core.pipeline.transport


def loaded(name: str) -> ModuleType | None:
    """Module ``name`` if something already imported it, else None: an exception can
    only be one of azure-core's (or requests') classes once that module is loaded, so
    error mapping asks this instead of importing the SDK to learn a "no"."""
    return sys.modules.get(name)
