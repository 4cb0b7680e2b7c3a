"""azure-storage-blob / azure-core, imported on first need (one place, so the deferral
is explicit).

Importing azure.storage.blob (with azure-core and requests) costs ~0.4 CPU-s at every
start, in the coordinator and in each ``--processes`` worker (measured on the 2-core
box: importing the store 0.64 -> 0.21 CPU-s, of which the interpreter and
datamover.stores are ~0.18). A copy whose connection string, account key or SAS comes
from the environment never needs it (the lean path, ``lean.py``, signs and sends the
requests; ``client.plain_target`` says where). The SDK is imported when a call needs
it: a credential the lean path can't sign with (DefaultAzureCredential, a SAS the SDK
would read as a key, a development-storage string), ``DATAMOVER_AZURE_LEAN=0``,
copies, pending uploads and resume (Get Block List), the mount's directory markers,
and a value the lean path refuses (``LeanUnavailable``)."""

from __future__ import annotations

import sys
from types import ModuleType


def blob() -> ModuleType:
    """The ``azure.storage.blob`` package."""
    # deferred: ~0.4 CPU-s of imports that the lean path does not need.
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
