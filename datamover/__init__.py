"""datamover: move bulk research data between POSIX filesystems and object stores,
with checksum manifests that prove what arrived is what left.

The public API::

    import datamover

    report = datamover.copy("/data/run1", "s3://bucket/run1", transfers=16,
                            manifest="run1.jsonl", include=["*.h5"])
    assert report.ok, report.failures
    assert datamover.verify(report.manifest).passed

    with datamover.open("s3://bucket/run1/meta.json", "r") as fh:
        meta = json.load(fh)

``copy``/``sync``/``verify`` take a ``TransferOptions`` or its fields as keywords,
filters as keywords (``include``, ``exclude``, ``files_from``, ``min_size``,
``max_size``, ``min_age``, ``max_age``) or a ``FileFilter``, ``progress=callable``
for event dicts (``datamover.events``), ``dry_run=`` and ``report=PATH``. Every error
raised on purpose is a ``datamover.errors.DatamoverError``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from datamover import errors
from datamover.api import copy, make_options, sync, verify
from datamover.engine import TransferReport, VerifyReport, hash_url
from datamover.engine.observer import Observer, RunInfo
from datamover.engine.runner import Listener
from datamover.fileio import open
from datamover.filters import FileFilter
from datamover.options import RetryPolicy, TransferOptions
from datamover.stores import StoreSettings, open_store

__all__ = [
    "FileFilter",
    "Listener",
    "Observer",
    "RetryPolicy",
    "RunInfo",
    "StoreSettings",
    "TransferOptions",
    "TransferReport",
    "VerifyReport",
    "__version__",
    "copy",
    "errors",
    "hash_url",
    "make_options",
    "open",
    "open_store",
    "sync",
    "verify",
]
