"""Store registry: URL scheme -> backend module, imported only when first used.

Each backend lives in its own module and depends on its SDK; importing datamover does
not import boto3, azure or google. A missing SDK gives one line naming the package to
install, as fsspec's ``known_implementations`` does.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from datamover.errors import ConfigError, UsageError
from datamover.stores.base import ChunkWriter, ObjectInfo, PartLimits, PartReceipt, Store
from datamover.urls import Location, parse_url

__all__ = [
    "ChunkWriter",
    "ObjectInfo",
    "PartLimits",
    "PartReceipt",
    "Store",
    "StoreSettings",
    "open_location",
    "open_store",
]


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Per-backend settings from a named remote or the command line. Secrets are never
    held here: only names of env vars or profiles that the SDK chains resolve.

    ``connections`` sizes the HTTP connection pool; the engine sets it to at least its
    number of worker threads.
    """

    endpoint: str | None = None
    region: str | None = None
    profile: str | None = None
    account: str | None = None
    connections: int = 16
    extra: Mapping[str, Any] = field(default_factory=dict)


# scheme -> (module, class, package to install)
_BACKENDS: dict[str, tuple[str, str, str]] = {
    "file": ("datamover.stores.posix", "PosixStore", ""),
    "s3": ("datamover.stores.s3", "S3Store", "boto3"),
    "az": ("datamover.stores.azure", "AzureStore", "azure-storage-blob"),
    "gs": ("datamover.stores.gcs", "GCSStore", "google-cloud-storage"),
}


def _backend_class(scheme: str) -> Any:
    entry = _BACKENDS.get(scheme)
    if entry is None:
        module_name, cls_name, package = "datamover.stores.fsspec", "FsspecStore", "fsspec"
    else:
        module_name, cls_name, package = entry
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"{scheme}:// needs the {package!r} package ({e.name} is missing): "
            f"pip install {package}"
        ) from e
    return getattr(module, cls_name)


def open_location(loc: Location, settings: StoreSettings | None = None) -> Store:
    """The store for ``loc``'s namespace (its bucket, or ``/`` for POSIX)."""
    if loc.remote is not None:
        raise UsageError(
            f"unknown remote {loc.remote!r}: define it in the config file or use a URL "
            "such as s3://bucket/path"
        )
    cls = _backend_class(loc.scheme)
    store: Store = cls.from_location(loc, settings or StoreSettings())
    return store


def open_store(url: str, settings: StoreSettings | None = None) -> tuple[Store, str]:
    """Parse ``url`` and open its store; returns ``(store, key)``."""
    loc = parse_url(url)
    return open_location(loc, settings), loc.key
