"""Multipart uploads' temporary objects: their layout under the temp prefix (see the
package docstring), and the uploads left behind, found by grouping a listing of the
temp prefix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from datamover.errors import StoreError
from datamover.stores.base import PendingUpload

DEFAULT_TEMP_PREFIX = ".datamover-tmp/"
#: Metadata on each temporary part object: the key the upload is writing.
UPLOAD_KEY_METADATA = "datamover-upload-key"
UPLOAD_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{16}$")


def _upload_dir(name: str) -> str:
    """``<temp prefix><upload id>/`` of a temporary object's name."""
    return name.rsplit("/", 1)[0] + "/"


class _Group:
    """What one upload's temporary objects add up to, kept as they are listed (a
    running total, not the objects: memory stays the same however many there are)."""

    def __init__(self, upload_dir: str) -> None:
        self.upload_dir = upload_dir
        self.keys: set[str] = set()  # at most two: one key, or "more than one"
        self.created: float | None = None
        self.size = 0

    def add(self, blob: Any) -> None:
        if blob.name.rsplit("/", 1)[-1].startswith("part-") and len(self.keys) < 2:
            key = (blob.metadata or {}).get(UPLOAD_KEY_METADATA)
            if isinstance(key, str):
                self.keys.add(key)
        if blob.time_created is not None:
            created = blob.time_created.timestamp()
            self.created = created if self.created is None else min(self.created, created)
        self.size += int(blob.size or 0)

    def pending(self, prefix: str) -> PendingUpload | None:
        key = next(iter(self.keys)) if len(self.keys) == 1 else ""
        if not key.startswith(prefix) or (not key and prefix):
            return None
        return PendingUpload(
            key=key,
            initiated=self.created,
            size=self.size,
            token={"temp_dir": self.upload_dir},
        )


def pending_uploads(blobs: Iterable[Any], prefix: str) -> Iterator[PendingUpload]:
    """``blobs`` (the temp prefix's raw listing, in name order) as one ``PendingUpload``
    per upload whose key starts with ``prefix``; see ``GCSStore.list_pending_uploads``.
    A resource of the wrong shape raises ``StoreError``."""
    group: _Group | None = None
    for blob in blobs:
        if group is None or group.upload_dir != _upload_dir(blob.name):
            if group is not None and (upload := group.pending(prefix)) is not None:
                yield upload
            group = _Group(_upload_dir(blob.name))
        try:
            group.add(blob)
        except (ValueError, TypeError, AttributeError, OverflowError) as e:
            raise StoreError(
                f"{blob.name[:200]}: the server sent a malformed object resource "
                f"({type(e).__name__})"
            ) from e
    if group is not None and (upload := group.pending(prefix)) is not None:
        yield upload
