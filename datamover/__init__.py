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

Each of them builds one job (``datamover.job``: ``TransferJob``, ``VerifyJob``,
``HashJob``) and runs it through ``datamover.run``, which a program may also call
directly with a job it built; ``datamover.resume(job_id)`` runs a journaled job again.
``copy``/``sync``/``verify`` take a ``TransferOptions`` or its fields as keywords,
filters as keywords (``include``, ``exclude``, ``files_from``, ``min_size``,
``max_size``, ``min_age``, ``max_age``) or a ``FileFilter``, ``progress=callable``
for event dicts (``datamover.events``), ``dry_run=`` and ``report=PATH``. Every error
raised on purpose is a ``datamover.errors.DatamoverError``.
"""

from __future__ import annotations

import logging

from datamover import errors
from datamover._version import __version__
from datamover.api import copy, hash_url, make_options, sync, verify
from datamover.fileio import open
from datamover.filters import FileFilter
from datamover.job import (
    HashJob,
    Listener,
    Observer,
    RunInfo,
    SyncRules,
    TransferJob,
    TransferReport,
    VerifyJob,
    VerifyReport,
    resume,
    run,
)
from datamover.options import RetryPolicy, TransferOptions
from datamover.stores import StoreSettings, open_store

# A library prints nothing on its own: without this, Python's last-resort handler
# writes datamover's warnings to the stderr of a program that configured no logging
# (a notebook, a Snakemake rule). The CLI and the mount configure handlers of their
# own (on the root logger), which still get every record.
logging.getLogger("datamover").addHandler(logging.NullHandler())

__all__ = [
    "FileFilter",
    "HashJob",
    "Listener",
    "Observer",
    "RetryPolicy",
    "RunInfo",
    "StoreSettings",
    "SyncRules",
    "TransferJob",
    "TransferOptions",
    "TransferReport",
    "VerifyJob",
    "VerifyReport",
    "__version__",
    "copy",
    "errors",
    "hash_url",
    "make_options",
    "open",
    "open_store",
    "resume",
    "run",
    "sync",
    "verify",
]
