"""Whether an S3 server keeps a backslash in a key, or stores it as ``/``.

AWS S3, Ceph RGW and MinIO keep ``a\\b`` as a key of its own. SeaweedFS turns every
``\\`` into ``/``: a write of ``a\\b`` lands on ``a/b``, replacing whatever was there,
and answers 200, so a file would be recorded as copied under a name the bucket does
not hold (and a file ``a/b`` of the same tree overwritten). So before the first key
holding a backslash is written, the server is asked, once per endpoint and credentials
in this process: a multipart upload is started under ``.datamover-probe/`` with a key
ending in ``\\x`` and the probe prefix's uploads are listed (one page). The listing
names the key as the server stored it: with the backslash, or with ``/`` in its place.
The upload is aborted right after (an upload never becomes an object: nothing is left
on a versioned bucket; a probe killed before its abort is swept like the checksum
probe's, ``probes.py``). Where ``.datamover-probe/`` is denied, the probe goes next to
the key, as the checksum probe does.

A server that rewrites the backslash gets no key with a backslash: ``S3Store.child_key``
refuses such a file (``UnsafePath``: that file fails, the run goes on; ``EINVAL`` in
the mount). So does a key whose probe could not answer (no permission to list uploads,
an error); that answer is not kept, and the next such key asks again. Keys without a
backslash never probe.
"""

from __future__ import annotations

import logging

from datamover.errors import DatamoverError
from datamover.stores.s3.client import BucketClient
from datamover.stores.s3.probes import PROBE_SUFFIX, Learnt, list_probe_uploads, near, probe_key

log = logging.getLogger(__name__)

#: Where the probe's upload is started (the checksum probe's prefix).
PREFIX = ".datamover-probe/"

#: (endpoint, credentials) -> None when the server keeps ``\``, else why it can't hold it.
_learnt: Learnt[str | None] = Learnt()


def backslash_problem(s3: BucketClient, key: str) -> str | None:
    """None when the server keeps ``\\`` in keys; else why ``key`` (which holds one)
    can't be written as it is. Learnt on first use, then cached."""

    def learn() -> str | None:
        problem = near(key, lambda prefix: _probe(s3, prefix), PREFIX)
        if problem is not None:
            log.info("%s: keys with '\\' are refused: %s", s3.endpoint_url, problem)
        return problem

    try:
        return _learnt.get((s3.endpoint_url, s3.identity), learn)
    except DatamoverError as e:
        # Not learnt (no permission to list uploads, a transient error): this key
        # is refused, and the next one with a backslash asks again.
        return f"could not learn whether this S3 server keeps '\\' in keys ({e})"


def forget() -> None:
    """Drop what was learnt (tests that change a server under a running process)."""
    _learnt.forget()


def _probe(s3: BucketClient, prefix: str) -> str | None:
    base = probe_key(prefix)
    key = base + "\\" + PROBE_SUFFIX
    upload_id = s3.create_upload(key, {})
    try:
        listed = {k for k, _, _ in list_probe_uploads(s3, base)}
    finally:
        try:
            s3.abort_upload(key, upload_id)
        except DatamoverError as e:
            log.debug("%s: probe upload not aborted: %s", s3.url(key), e)
    if key in listed:
        return None
    if base + "/" + PROBE_SUFFIX in listed:
        return "this S3 server stores '\\' in a key as '/' (over the key with '/' there)"
    return "this S3 server did not list the probe upload with '\\' in its key"
