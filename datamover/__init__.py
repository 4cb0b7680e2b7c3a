"""datamover: move bulk research data between POSIX filesystems and object stores,
with checksum manifests that prove what arrived is what left.

The public API::

    import datamover
    report = datamover.copy("/data/run1", "s3://bucket/run1")
    result = datamover.verify(report.manifest)
"""

from __future__ import annotations

__version__ = "0.1.0"

from datamover import errors
from datamover.engine import TransferReport, VerifyReport, copy, hash_url, sync, verify
from datamover.options import RetryPolicy, TransferOptions
from datamover.stores import StoreSettings, open_store

__all__ = [
    "RetryPolicy",
    "StoreSettings",
    "TransferOptions",
    "TransferReport",
    "VerifyReport",
    "__version__",
    "copy",
    "errors",
    "hash_url",
    "open_store",
    "sync",
    "verify",
]
