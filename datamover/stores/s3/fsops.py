"""The mount's S3 specialisations of ``FsOps`` (``datamover.stores.fsops`` says what
each need is)."""

from __future__ import annotations

from datamover.errors import NotFound
from datamover.stores.base import ObjectInfo, Store
from datamover.stores.fsops import FsOps
from datamover.stores.s3.errors import map_error
from datamover.stores.s3.listing import page_entries
from datamover.stores.s3.store import S3Store


class S3FsOps(FsOps):
    """S3: a LIST carries no user metadata; ``stat`` refuses ``dir/`` keys, so a
    marker is read with a GET; whether markers keep metadata depends on the server
    (learnt, see ``datamover.stores.fsops``); ``S3Writer`` uses ``size`` only to
    check the part count at ``__init__`` and ``commit``, so a stream opens with the
    hint and sets the real size before committing."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        assert isinstance(store, S3Store)
        self._s3 = store

    def _stat_marker(self, key: str) -> ObjectInfo | None:
        try:
            _, info = self.store.read_object(key)
        except NotFound:
            return None
        return info

    def warm(self) -> None:
        """The store makes its boto3 client on first use (~0.1-0.15 s of CPU loading
        service models), and the first lookup of a cold mount needs it (``has_child``
        below; the store's HeadBucket after a 404): make it now."""
        self._s3.client  # noqa: B018 - made on first use, wanted now

    def has_child(self, prefix: str) -> bool:
        """One LIST of at most 3 keys (the marker sorts first; its ``DIR_META_NAME``
        object may come next), not a 1,000-key page: every lookup of a name no
        listing has shown asks this."""
        bucket = self._s3.bucket
        try:
            page = self._s3.client.list_objects_v2(
                Bucket=bucket, Prefix=prefix, Delimiter="/", MaxKeys=3
            )
        except Exception as e:
            raise map_error(e, bucket, prefix) from e
        own = (prefix, self.dir_meta_key(prefix))
        return any(entry.key not in own for entry in page_entries(page))
