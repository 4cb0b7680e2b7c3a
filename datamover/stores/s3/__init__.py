"""S3 and S3-compatible stores; ``store.py`` holds the backend, ``lean.py`` its lean
request path."""

from __future__ import annotations

from datamover.stores.s3.store import (
    MAX_OBJECT_SIZE,
    S3_LIMITS,
    S3FsOps,
    S3Store,
    S3Writer,
    classify_error,
    map_error,
)

__all__ = [
    "MAX_OBJECT_SIZE",
    "S3_LIMITS",
    "S3FsOps",
    "S3Store",
    "S3Writer",
    "classify_error",
    "map_error",
]
