"""Multipart uploads' temporary objects: their layout under the temp prefix (see the
package docstring), and the uploads left behind, found by grouping a listing of the
temp prefix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from datamover.stores.base import PendingUpload

DEFAULT_TEMP_PREFIX = ".datamover-tmp/"
#: Metadata on each temporary part object: the key the upload is writing.
UPLOAD_KEY_METADATA = "datamover-upload-key"
UPLOAD_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{16}$")


def _upload_dir(name: str) -> str:
    """``<temp prefix><upload id>/`` of a temporary object's name."""
    return name.rsplit("/", 1)[0] + "/"


def pending_uploads(blobs: Iterable[Any], prefix: str) -> Iterator[PendingUpload]:
    """``blobs`` (the temp prefix's raw listing, in name order) as one ``PendingUpload``
    per upload whose key starts with ``prefix``; see ``GCSStore.list_pending_uploads``."""
    group: list[Any] = []
    for blob in blobs:
        if group and _upload_dir(group[0].name) != _upload_dir(blob.name):
            upload = _pending(group, prefix)
            if upload is not None:
                yield upload
            group = []
        group.append(blob)
    if group:
        upload = _pending(group, prefix)
        if upload is not None:
            yield upload


def _pending(blobs: Sequence[Any], prefix: str) -> PendingUpload | None:
    keys = {
        (b.metadata or {}).get(UPLOAD_KEY_METADATA)
        for b in blobs
        if b.name.rsplit("/", 1)[-1].startswith("part-")
    }
    keys.discard(None)
    key = str(keys.pop()) if len(keys) == 1 else ""
    if not key.startswith(prefix) or (not key and prefix):
        return None
    created = [b.time_created.timestamp() for b in blobs if b.time_created is not None]
    return PendingUpload(
        key=key,
        initiated=min(created) if created else None,
        size=sum(int(b.size or 0) for b in blobs),
        token={"temp_dir": _upload_dir(blobs[0].name)},
    )
