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
directory metadata  on the marker; in              POSIX: the directory's own
                    ``dir/.datamover-dirmeta``     attributes
                    where markers drop it (and at
                    the bucket root)
marker metadata     ``stat("dir/")``               S3: ``read_object`` (``stat``
                                                   refuses ``dir/`` keys)
metadata update     ``copy_object`` onto itself,   POSIX: ``chmod``/``chown``/``utime``
                    else re-``put`` when small
special file        zero-byte object, type in      POSIX: ``mknod``
                    ``mode`` (as s3fs)
hard link           zero-byte object naming its    POSIX: refused (``Unsupported``)
                    target (``datamover-hardlink``)
copy                ``copy_object``, else streamed
rename (a file)     copy, then delete              POSIX: ``renameat`` (``rename_file``)
streamed write      ``features.streaming_writes``  S3: ``S3Writer`` only counts parts
of unknown size                                    with ``size``; set at commit
                                                   (metadata: ``commit_stream``)
"has a child"       ``list`` (a whole page)        S3: a LIST of at most 3 keys
an open file        none: reads go by key          POSIX: the file's descriptor and
                                                   its directory's, held from open
                                                   to release (``open_file``)
==================  =============================  ==================================

Each row is a gap in the ``Store`` interface; docs/SEMANTICS.md says what it costs.

**Directory metadata.** A directory's mode, owner and times go on its ``dir/`` marker,
where s3fs and rclone read them. Some servers drop the user metadata of ``dir/`` keys
(``Features.marker_metadata`` is None for S3: SeaweedFS does, AWS does not); there, and
at the root of a bucket (which has no marker), they go on a zero-byte object inside
the directory, ``DIR_META_NAME``. Whether markers keep metadata is learnt once: from
the first marker written with metadata (read back), or the first marker read that
has none while a ``DIR_META_NAME`` object is beside it. Why an object *inside* the
directory: it moves, copies and is deleted with the directory by any tool (s3fs,
rclone, ``aws s3 sync``), so it never goes stale, and it does not depend on where a
mount's root is; the cost is one dotfile per such directory for other tools.
"""

from __future__ import annotations

from collections.abc import Mapping

from datamover.checksums import PartDigests
from datamover.errors import NotFound, StoreError, Unsupported
from datamover.posixmeta import MODE, MTIME, PosixAttrs
from datamover.stores.base import (
    DIR_META_NAME,
    HARDLINK_KEY,
    ChunkWriter,
    MiB,
    ObjectInfo,
    Store,
)

#: Objects up to this size are re-``put`` (or copied through memory) when the store
#: has no server-side copy.
SMALL_OBJECT = 8 * MiB
#: The longest key S3, Azure Blob and GCS accept (bytes).
KEY_MAX = 1024


class OpenFile:
    """What ``FsOps.open_file`` gives one open handle of the mount: the file as it
    was when opened, read through what was opened then (never looked up again by
    its name), until ``close``."""

    @property
    def readable(self) -> bool:
        """Whether reads go here (False: a file being created; read by key)."""
        return True

    def size(self) -> int:
        """The file's size now."""
        raise NotImplementedError

    def attrs(self) -> PosixAttrs | None:
        """The opened file's mode (type included), owner and mtime, if known: what
        the caller's permissions were checked against must be what was opened."""
        return None

    def readinto(self, offset: int, buf: memoryview) -> int:
        """Bytes at ``offset`` into ``buf``; fewer (0 at the end) past the end."""
        raise NotImplementedError

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        n = self.readinto(offset, memoryview(buf))
        del buf[n:]
        return bytes(buf)

    def close(self) -> None:
        """Release what was opened; called once, when the handle is released."""


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
        #: Whether ``dir/`` markers keep user metadata: True; False (directory metadata
        #: then lives in ``DIR_META_NAME`` objects); None until learnt (see the module
        #: docstring). Set once from a worker thread; a race only repeats the lesson.
        self.markers_keep_metadata = store.features.marker_metadata
        #: Whether ``open_file`` pins anything (the mount skips the call otherwise).
        self.pins_files = False

    # -- directories ------------------------------------------------------------------

    @staticmethod
    def dir_meta_key(key: str) -> str:
        """The ``DIR_META_NAME`` object of the directory ``key`` ("" or ending in "/")."""
        return key + DIR_META_NAME

    def make_dir(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        """Make the directory ``key`` (ending in ``/``; ``""``: the store's root)
        explicit with ``metadata``, replacing what was there: the marker, or the
        ``DIR_META_NAME`` object where markers drop metadata (and at the root).
        Returns an ``is_dir`` info with the metadata kept: ``{}`` when this
        directory's can't be (markers drop it and the ``DIR_META_NAME`` key would be
        longer than ``KEY_MAX``; the directory is made all the same)."""
        if not key or self.markers_keep_metadata is False:
            return self._put_dir_meta(key, metadata)
        info = self.store.put(key, b"", metadata=metadata)
        if self.markers_keep_metadata is None and MODE in metadata:
            marker = self._stat_marker(key)
            self.markers_keep_metadata = marker is not None and MODE in marker.metadata
            if not self.markers_keep_metadata:
                return self._put_dir_meta(key, metadata)
        return ObjectInfo(key=key, size=0, etag=info.etag, metadata=dict(metadata), is_dir=True)

    def _put_dir_meta(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        meta_key = self.dir_meta_key(key)
        if len(meta_key.encode()) > KEY_MAX:
            info = self.store.put(key, b"", metadata=metadata)
            return ObjectInfo(key=key, size=0, etag=info.etag, metadata={}, is_dir=True)
        info = self.store.put(meta_key, b"", metadata=metadata)
        return ObjectInfo(key=key, size=0, etag=info.etag, metadata=dict(metadata), is_dir=True)

    def stat_dir(self, key: str) -> ObjectInfo | None:
        """The directory's explicit info (``is_dir``, with the metadata it keeps), or
        None when it is implicit: no marker, no ``DIR_META_NAME`` object."""
        if not key or self.markers_keep_metadata is False:
            meta = self._stat_dir_meta(key)
            if meta is not None or not key:
                return meta
        marker = self._stat_marker(key)
        if marker is None:
            return None
        if MODE in marker.metadata:
            self.markers_keep_metadata = True  # only a store that keeps it shows it
        elif self.markers_keep_metadata is None:
            meta = self._stat_dir_meta(key)
            if meta is not None:
                self.markers_keep_metadata = False  # written here because markers drop it
                return meta
        return ObjectInfo(
            key=key,
            size=0,
            mtime=marker.mtime,
            etag=marker.etag,
            metadata=dict(marker.metadata),
            is_dir=True,
        )

    def _stat_marker(self, key: str) -> ObjectInfo | None:
        """The ``dir/`` marker object itself, or None."""
        try:
            return self.store.stat(key)
        except NotFound:
            return None

    def _stat_dir_meta(self, key: str) -> ObjectInfo | None:
        try:
            info = self.store.stat(self.dir_meta_key(key))
        except NotFound:
            return None
        return ObjectInfo(
            key=key, size=0, mtime=info.mtime, etag=info.etag, metadata=info.metadata, is_dir=True
        )

    def remove_dir(self, key: str) -> None:
        """Remove the marker and the ``DIR_META_NAME`` object; succeeds when there is
        neither. The caller checked that nothing else is under the prefix."""
        self.store.delete(self.dir_meta_key(key))
        self.store.delete(key)

    def rename_dir(self, old_prefix: str, new_prefix: str) -> bool:
        """Rename a whole directory natively; False when the store can't (the caller
        then moves object by object)."""
        return False

    def rename_file(self, src_key: str, dst_key: str) -> bool:
        """Rename one file (or special file, or symlink) natively, replacing what
        ``dst_key`` names as ``rename(2)`` does; False when the store can't (the
        caller then copies it and deletes the original)."""
        return False

    def has_child(self, prefix: str) -> bool:
        """Whether any key other than the marker ``prefix`` and its ``DIR_META_NAME``
        object is under ``prefix``."""
        own = (prefix, self.dir_meta_key(prefix))
        return any(info.key not in own for info in self.store.list(prefix, recursive=False))

    def update_dir_metadata(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        """Replace the directory's metadata (``make_dir`` again). Raises
        ``Unsupported`` when this directory's can't be kept (see ``make_dir``)."""
        info = self.make_dir(key, metadata)
        if metadata and not info.metadata:
            raise Unsupported(f"{key}: its metadata object's key would be too long", key=key)
        return info

    # -- special files and hard links ------------------------------------------------

    def make_special(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        """A FIFO, socket or device node at ``key``: a zero-byte object whose ``mode``
        metadata carries the type (and ``rdev`` the device number), as s3fs stores
        them. Replaces what was there."""
        return self.store.put(key, b"", metadata=metadata)

    def make_link(self, key: str, target: str, metadata: Mapping[str, str]) -> ObjectInfo:
        """A hard link at ``key`` to the object ``target``: a zero-byte object whose
        ``datamover-hardlink`` metadata names the target's key, as the engine stores
        the hard links of a tree (so a copy back to POSIX makes a real link). Raises
        ``Unsupported`` where a link can't be stored this way."""
        return self.store.put(key, b"", metadata={**metadata, HARDLINK_KEY: target})

    # -- open files -----------------------------------------------------------------

    def open_file(self, key: str, *, existing: bool) -> OpenFile | None:
        """Pin the file ``key`` for one handle (``existing``: it is there to be read,
        else it is being created): its reads then go to the ``OpenFile``, and the
        store's writes of ``key`` while it is held land where it was opened. None
        where the store has nothing to pin (object stores: a handle reads by key)."""
        return None

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

    # -- copy -----------------------------------------------------------------------

    def copy(
        self, info: ObjectInfo, dst: str, metadata: Mapping[str, str] | None = None
    ) -> ObjectInfo:
        """Copy ``info.key`` to ``dst`` with its metadata (or ``metadata`` instead):
        server-side when the store can, else through memory part by part (the whole
        object is never held; each part's read pinned to the version ``info`` names).
        Returns what the store says of the copy."""
        try:
            return self.store.copy_object(info.key, dst, metadata=metadata)
        except Unsupported:
            pass
        meta = metadata
        if meta is None:
            meta = info.metadata or self.store.stat(info.key).metadata
        if info.size <= SMALL_OBJECT:
            data, got = self.store.read_object(info.key, info)
            return self.store.put(
                dst, data, metadata=metadata if metadata is not None else got.metadata or meta
            )
        part = self.store.limits.choose_part_size(info.size)
        writer = self.store.open_writer(dst, size=info.size, part_size=part, metadata=meta)
        try:
            buf = bytearray(part)
            for index, offset in enumerate(range(0, info.size, part)):
                view = memoryview(buf)[: min(part, info.size - offset)]
                got_n = self.store.readinto(info.key, offset, view, expect=info)
                if got_n != len(view):
                    raise StoreError(f"{info.key}: changed while being copied", key=info.key)
                writer.write_part(index, view, PartDigests(view))
            return writer.commit(meta)
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
