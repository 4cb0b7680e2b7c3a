"""Google Cloud Storage store (``gs://bucket/key``). The backend is in ``store``; its
module docstring explains the design."""

from __future__ import annotations

from datamover.stores.gcs.store import (
    COMPOSE_MAX_SOURCES,
    DEFAULT_PAGE_SIZE,
    DEFAULT_PROJECT,
    DEFAULT_RETRY_DEADLINE,
    DEFAULT_TEMP_PREFIX,
    UPLOAD_KEY_METADATA,
    GCSStore,
    GCSWriter,
    crc32c_combine,
)

__all__ = [
    "COMPOSE_MAX_SOURCES",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_PROJECT",
    "DEFAULT_RETRY_DEADLINE",
    "DEFAULT_TEMP_PREFIX",
    "UPLOAD_KEY_METADATA",
    "GCSStore",
    "GCSWriter",
    "crc32c_combine",
]
