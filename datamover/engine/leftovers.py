"""Uploads a killed run of a job opened but never journaled, aborted when the job ends.

A run opens an upload (S3 ``CreateMultipartUpload``, the first Azure block, a GCS part
object) and journals its token right after; a ``kill -9`` between the two leaves an
upload no journal names, which a resume can neither continue nor abort. When a
*resumed* job ends with every file done, its writers are all committed or aborted, so
an upload still pending on one of the job's own keys, started after the job was
created, can only be such a leftover (or a concurrent run of another job writing the
very same keys, which the user can't have meant): it is aborted. One listing of the
destination prefix, on resumed runs of object-store destinations only (POSIX temp
files are named after the job and found by the next write: ``Store.use_job``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from datamover.errors import DatamoverError, Unsupported
from datamover.stores.base import Store

log = logging.getLogger("datamover")

#: Clock slack between this machine and the store when comparing start times.
SKEW_SECONDS = 300.0


def abort_unjournaled(
    store: Store, root: str, created: float, is_ours: Callable[[str], bool]
) -> int:
    """Abort pending uploads under ``root`` on keys ``is_ours`` (given the key relative
    to ``root``) started after ``created`` (less ``SKEW_SECONDS``); returns how many.
    Uploads of unknown start time or key are left alone; failures are logged."""
    if store.features.local:
        return 0
    aborted = 0
    try:
        pending = list(store.list_pending_uploads(root))
    except (Unsupported, DatamoverError) as e:
        log.debug("not looking for unjournaled uploads under %s: %s", store.url(root), e)
        return 0
    for upload in pending:
        if upload.initiated is None or upload.initiated < created - SKEW_SECONDS:
            continue
        if not upload.key.startswith(root) or not is_ours(upload.key[len(root) :]):
            continue
        try:
            store.abort_pending_upload(upload)
            aborted += 1
            log.info("aborted an upload a killed run left: %s", store.url(upload.key))
        except (Unsupported, DatamoverError) as e:
            log.warning("could not abort a killed run's upload %s: %s", store.url(upload.key), e)
    return aborted
