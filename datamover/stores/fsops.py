"""What a filesystem needs from a store beyond the ``Store`` interface.

The ``Store`` interface is the engine's: whole objects, parts of a known total size,
no directories. A filesystem (the mount) also needs directory markers, metadata
updates in place and multipart writes whose size is unknown until ``close``. Each such
need is one method of ``FsOps``, written here against ``Store`` alone; a backend that
can do better, or where the generic version can't work, subclasses it in its own
package and names the subclass in ``Store.fs_ops_class``. ``for_store`` picks it.

==================  =============================  ==================================
need                generic (``Store`` only)       specialisations
==================  =============================  ==================================
directory marker    ``put("dir/", b"")``           Azure: adds ``hdi_isfolder=true``
                                                   as HNS accounts write; POSIX: ``mkdir``
marker metadata     ``stat("dir/")``               S3: ``read_object`` (``stat``
                                                   refuses ``dir/`` keys)
metadata update     ``copy_object`` onto itself,   POSIX: ``chmod``/``chown``/``utime``
                    else re-``put`` when small
copy                ``copy_object``, else streamed
streamed write      ``features.streaming_writes``  S3: ``S3Writer`` only counts parts
of unknown size                                    with ``size``; set at commit
                                                   (metadata: ``commit_stream``)
"has a child"       ``list`` (a whole page)        S3: a LIST of at most 2 keys
==================  =============================  ==================================

Each row is a gap in the ``Store`` interface; docs/SEMANTICS.md says what it costs.
"""

from __future__ import annotations

from collections.abc import Mapping

from datamover.checksums import PartDigests
from datamover.errors import NotFound, StoreError, Unsupported
from datamover.posixmeta import MTIME
from datamover.stores.base import ChunkWriter, MiB, ObjectInfo, Store

#: Objects up to this size are re-``put`` (or copied through memory) when the store
#: has no server-side copy.
SMALL_OBJECT = 8 * MiB


def for_store(store: Store) -> FsOps:
    """The filesystem operations for ``store``: its own subclass, else the generic."""
    return (store.fs_ops_class or FsOps)(store)


class FsOps:
    """Generic versions, written against the ``Store`` interface only. A backend that
    can do better names its subclass in ``Store.fs_ops_class``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        #: Whether ``list`` returns user metadata (mode, uid, gid, mtime) with each entry.
        self.listing_has_metadata = store.features.listing_metadata
        #: Whether ``open_stream`` can start a multipart write of unknown final size.
        self.can_stream = store.features.streaming_writes

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
        ``commit``; only when ``can_stream``. Where the store takes metadata only when
        an upload starts (``features.metadata_at_commit`` False: S3), the POSIX
        ``mtime`` is left out: the stream starts long before its last write, and the
        object's own modification time (its completion) is then the file's mtime."""
        if not self.can_stream:
            raise Unsupported(f"{self.store.scheme} store can't stream unknown sizes", key=key)
        if not self.store.features.metadata_at_commit:
            metadata = {k: v for k, v in metadata.items() if k != MTIME}
        return self.store.open_writer(key, size=size_hint, part_size=part_size, metadata=metadata)

    def finish_stream(self, writer: ChunkWriter, size: int) -> None:
        writer.size = size

    def commit_stream(
        self, writer: ChunkWriter, metadata: Mapping[str, str], *, attrs_changed: bool
    ) -> ObjectInfo:
        """Commit a stream with its final ``metadata``. The commit is the object's one
        write (``ChunkWriter.commit``); where it can't carry metadata (S3), the object
        keeps what the stream opened with, plus the store's full-object checksum, and
        the final digest is not stored. Only when the program changed the file's
        attributes while it was being written (``attrs_changed``: chmod, chown,
        utime, as ``cp -p`` does before closing) are they stored afterwards, as that
        change on a closed file would be: a metadata update (``update_metadata``)."""
        info = writer.commit(metadata)
        if self.store.features.metadata_at_commit or not attrs_changed:
            return info
        return self.update_metadata(info, {**info.metadata, **metadata})

    def warm(self) -> None:
        """Do at mount time what the first request would otherwise do inside the
        first ``ls`` (no data is read or cached)."""

    def close(self) -> None:
        """Release what the extension opened besides the store."""
