"""What the mount needs from a store beyond the ``Store`` interface, per backend.

The ``Store`` interface is the engine's: whole objects, parts of a known total size,
no directories. A filesystem also needs directory markers, metadata updates in place
and multipart writes whose size is unknown until ``close``. Each such need is one
method here, with a generic version written against ``Store`` and a specialisation
where a backend can do better or the generic one can't work:

==================  =============================  ==================================
need                generic (``Store`` only)       specialisations
==================  =============================  ==================================
directory marker    ``put("dir/", b"")``           Azure: its SDK (``put`` refuses
                                                   ``dir/`` keys); POSIX: ``mkdir``
marker metadata     ``stat("dir/")``               S3: ``read_object`` (``stat``
                                                   refuses ``dir/`` keys)
metadata update     ``copy_object`` onto itself,   POSIX: ``chmod``/``chown``/``utime``
                    else re-``put`` when small
copy                ``copy_object``, else streamed
streamed write      not possible (``open_writer``  S3: ``S3Writer`` only counts parts
of unknown size     takes the size up front)       with ``size``; set at commit
listing carries     no                             Azure, GCS, POSIX: yes
POSIX metadata
"has a child"       ``list`` (a whole page)        S3: a LIST of at most 2 keys
==================  =============================  ==================================

Each row is a gap in the ``Store`` interface; docs/SEMANTICS.md says what it costs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as statmod
from collections.abc import Mapping
from typing import Any

from datamover.checksums import PartDigests
from datamover.errors import NotFound, StoreError, Unsupported, UsageError
from datamover.posixmeta import PosixAttrs
from datamover.stores import StoreSettings
from datamover.stores.base import ChunkWriter, MiB, ObjectInfo, Store

#: Objects up to this size are re-``put`` (or copied through memory) when the store
#: has no server-side copy.
SMALL_OBJECT = 8 * MiB


class StoreExt:
    """Generic versions, written against the ``Store`` interface only."""

    #: Whether ``list`` returns user metadata (mode, uid, gid, mtime) with each entry.
    listing_has_metadata = False
    #: Whether ``open_stream`` can start a multipart write of unknown final size.
    can_stream = False

    def __init__(self, store: Store) -> None:
        self.store = store
        override = getattr(store, "listing_has_metadata", None)
        if isinstance(override, bool):
            self.listing_has_metadata = override
        if getattr(store, "accepts_unknown_size", False) is True:
            self.can_stream = True

    @staticmethod
    def for_store(store: Store, settings: StoreSettings | None = None) -> StoreExt:
        scheme = store.scheme
        if scheme == "s3":
            return S3Ext(store)
        if scheme == "az":
            return AzureExt(store, settings or StoreSettings())
        if scheme == "gs":
            return GcsExt(store)
        if scheme == "file":
            return PosixExt(store)
        return StoreExt(store)

    # -- directories ------------------------------------------------------------------

    def make_dir(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        """Write the zero-byte marker ``key`` (ending in ``/``); replaces one there."""
        return self.store.put(key, b"", metadata=metadata)

    def stat_dir(self, key: str) -> ObjectInfo | None:
        """The marker's info, or None when the directory has no marker (implicit)."""
        try:
            return self.store.stat(key)
        except NotFound:
            return None

    def remove_dir(self, key: str) -> None:
        """Remove the marker; succeeds when there is none. The caller checked that
        nothing is under the prefix."""
        self.store.delete(key)

    def rename_dir(self, old_prefix: str, new_prefix: str) -> bool:
        """Rename a whole directory natively; False when the store can't (the caller
        then moves object by object)."""
        return False

    def has_child(self, prefix: str) -> bool:
        """Whether any key other than the marker ``prefix`` is under ``prefix``."""
        return any(info.key != prefix for info in self.store.list(prefix, recursive=False))

    # -- metadata -----------------------------------------------------------------

    def update_metadata(self, info: ObjectInfo, metadata: Mapping[str, str]) -> ObjectInfo:
        """Replace ``info.key``'s user metadata, keeping its bytes. Raises
        ``Unsupported`` when the store can neither copy in place nor re-put (large)."""
        try:
            return self.store.copy_object(info.key, info.key, metadata=metadata)
        except Unsupported:
            if info.size > SMALL_OBJECT:
                raise
        data, _ = self.store.read_object(info.key, info)
        return self.store.put(info.key, data, metadata=metadata)

    def update_dir_metadata(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        return self.make_dir(key, metadata)

    # -- copy -----------------------------------------------------------------------

    def copy(self, info: ObjectInfo, dst: str) -> None:
        """Copy ``info.key`` to ``dst`` with its metadata: server-side when the store
        can, else through memory part by part (the whole object is never held)."""
        try:
            self.store.copy_object(info.key, dst)
            return
        except Unsupported:
            pass
        meta = info.metadata or self.store.stat(info.key).metadata
        if info.size <= SMALL_OBJECT:
            data, got = self.store.read_object(info.key, info)
            self.store.put(dst, data, metadata=got.metadata or meta)
            return
        part = self.store.limits.choose_part_size(info.size)
        writer = self.store.open_writer(dst, size=info.size, part_size=part, metadata=meta)
        try:
            buf = bytearray(part)
            for index, offset in enumerate(range(0, info.size, part)):
                view = memoryview(buf)[: min(part, info.size - offset)]
                got_n = self.store.readinto(info.key, offset, view)
                if got_n != len(view):
                    raise StoreError(f"{info.key}: changed while being copied", key=info.key)
                writer.write_part(index, view, PartDigests(view))
            writer.commit(meta)
        except BaseException:
            writer.abort()
            raise

    # -- streamed writes -------------------------------------------------------------

    def open_stream(
        self, key: str, part_size: int, size_hint: int, metadata: Mapping[str, str]
    ) -> ChunkWriter:
        """A multipart write whose final size is set by ``finish_stream`` before
        ``commit``; only when ``can_stream``."""
        if not self.can_stream:
            raise Unsupported(f"{self.store.scheme} store can't stream unknown sizes", key=key)
        return self.store.open_writer(key, size=size_hint, part_size=part_size, metadata=metadata)

    def finish_stream(self, writer: ChunkWriter, size: int) -> None:
        writer.size = size

    def warm(self) -> None:
        """Do at mount time what the first request would otherwise do inside the
        first ``ls`` (no data is read or cached)."""

    def close(self) -> None:
        """Release what the extension opened besides the store."""


class S3Ext(StoreExt):
    """S3: a LIST carries no user metadata; ``stat`` refuses ``dir/`` keys, so the
    marker is read with a GET; ``S3Writer`` uses ``size`` only to check the part count
    at ``__init__`` and ``commit``, so a stream opens with the hint and sets the real
    size before committing."""

    listing_has_metadata = False
    can_stream = True

    def stat_dir(self, key: str) -> ObjectInfo | None:
        try:
            _, info = self.store.read_object(key)
        except NotFound:
            return None
        return info

    def warm(self) -> None:
        """The store makes its boto3 client on first use (~0.1-0.15 s of CPU loading
        service models), and the first lookup of a cold mount needs it (``has_child``
        below; the store's HeadBucket after a 404): make it now."""
        getattr(self.store, "client", None)

    def has_child(self, prefix: str) -> bool:
        """One LIST of at most 2 keys (the marker sorts first), not a 1,000-key page:
        every lookup of a name no listing has shown asks this."""
        client = getattr(self.store, "client", None)
        bucket = getattr(self.store, "bucket", None)
        if client is None or not isinstance(bucket, str):
            return super().has_child(prefix)
        from datamover.stores.s3 import map_error

        try:
            page = client.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/", MaxKeys=2)
        except Exception as e:
            raise map_error(e, bucket, prefix) from e
        keys = [p["Prefix"] for p in page.get("CommonPrefixes", ())]
        keys += [o["Key"] for o in page.get("Contents", ())]
        return any(k != prefix for k in keys)


class GcsExt(StoreExt):
    listing_has_metadata = True


class AzureExt(StoreExt):
    """Azure: ``AzureStore.put`` refuses ``dir/`` keys, so markers go through the SDK
    with the store's own client settings (the public ``make_service_client``). The
    marker also carries ``hdi_isfolder=true``, as the portal and HNS accounts write."""

    listing_has_metadata = True

    def __init__(self, store: Store, settings: StoreSettings) -> None:
        super().__init__(store)
        self._settings = settings
        self._service: Any = None

    def _container(self) -> Any:
        from datamover.stores.azure import make_service_client

        if self._service is None:
            self._service = make_service_client(self._settings)
        return self._service.get_container_client(getattr(self.store, "container", ""))

    def make_dir(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        from datamover.stores.azure import map_error, to_azure_metadata

        meta = {**metadata, "hdi_isfolder": "true"}
        try:
            self._container().get_blob_client(key).upload_blob(
                b"", length=0, overwrite=True, metadata=to_azure_metadata(meta)
            )
        except Exception as e:
            raise map_error(e, getattr(self.store, "container", ""), key) from e
        return ObjectInfo(key=key, size=0, metadata=meta, is_dir=True)

    def close(self) -> None:
        if self._service is not None:
            self._service.close()
            self._service = None


class PosixExt(StoreExt):
    """A POSIX tree has real directories and real attributes: use them."""

    listing_has_metadata = True

    @staticmethod
    def _path(key: str) -> str:
        return "/" + key.rstrip("/")

    def make_dir(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        path = self._path(key)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        self._apply(path, metadata)
        return self._dir_info(key)

    def _dir_info(self, key: str) -> ObjectInfo:
        st = os.stat(self._path(key))
        return ObjectInfo(
            key=key,
            size=0,
            mtime=st.st_mtime_ns / 1e9,
            mode=st.st_mode,
            is_dir=True,
            metadata=PosixAttrs.from_stat(st).to_metadata(),
        )

    def stat_dir(self, key: str) -> ObjectInfo | None:
        try:
            info = self._dir_info(key)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return info if info.mode is not None and statmod.S_ISDIR(info.mode) else None

    def remove_dir(self, key: str) -> None:
        try:
            os.rmdir(self._path(key))
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise UsageError(f"/{key}: directory not empty") from e
            raise StoreError(f"/{key}: {e.strerror}", key=key) from e

    def rename_dir(self, old_prefix: str, new_prefix: str) -> bool:
        os.rename(self._path(old_prefix), self._path(new_prefix))
        return True

    @staticmethod
    def _apply(path: str, metadata: Mapping[str, str]) -> None:
        attrs = PosixAttrs.from_metadata(metadata)
        if attrs.uid is not None or attrs.gid is not None:
            os.chown(
                path, -1 if attrs.uid is None else attrs.uid, -1 if attrs.gid is None else attrs.gid
            )
        if attrs.mode is not None:
            os.chmod(path, statmod.S_IMODE(attrs.mode))
        if attrs.mtime_ns is not None:
            os.utime(path, ns=(attrs.mtime_ns, attrs.mtime_ns))

    def update_metadata(self, info: ObjectInfo, metadata: Mapping[str, str]) -> ObjectInfo:
        try:
            self._apply(self._path(info.key), metadata)
        except FileNotFoundError as e:
            raise NotFound(f"/{info.key}: no such file", key=info.key) from e
        except OSError as e:
            raise StoreError(f"/{info.key}: {e.strerror}", key=info.key) from e
        return self.store.stat(info.key)

    def update_dir_metadata(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        return self.make_dir(key, metadata)
