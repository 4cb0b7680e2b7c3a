"""rclone's ``--links`` symlinks on an object store: a symlink ``NAME`` is the object
``NAME.rclonelink`` whose body is the link's target text (rclone ``copy -l``).

``RcloneLinks`` wraps any object store (``open_location`` puts it around one when the
run asks for ``links``, ``--links``/``-l``; never around a POSIX store, whose links are
real). Above it, the engine sees ``NAME`` as a symlink object (mode ``S_IFLNK | 0777``,
body = target) exactly like an s3fs-style link object, and every rule for links from an
untrusted bucket applies unchanged (written beneath the destination root, never
followed; a target with a NUL byte is refused for that file, named). Below it the key
is ``NAME.rclonelink``:

* listings rename ``NAME.rclonelink`` (an object, not a marker) to ``NAME``; one
  larger than ``LINK_MAX`` bytes is listed with ``problem`` set (that file fails,
  named). When the bucket also holds a plain ``NAME`` (one ``stat`` per link found
  tells), the link object is listed as itself, untranslated, with a warning: one key
  never stands for two objects, so ``--delete`` can't remove the wrong one. The renamed
  key sorts a little earlier than the original; the engine's merge (sync) reorders
  within its bounded window.
* ``stat``/``read``/``read_object``/``delete`` of ``NAME`` reach ``NAME`` when it
  exists, else ``NAME.rclonelink``.
* ``put`` of a symlink (mode ``S_IFLNK`` in its metadata) writes ``NAME.rclonelink``
  with the target as its body and no ``mode`` key (a link has no permissions; rclone
  ``-M`` reads an s3fs decimal mode as octal), then removes a plain ``NAME`` it
  replaces. A file written over a name this store listed as a link (sync) removes
  the link object once committed. Every other write is passed through.

datamover's own link objects (s3fs style: mode metadata, no suffix) are read as links
whatever the option says; with it, new links are written the rclone way. Server-side
copy is off through this wrapper (a link's key differs on the two sides).
"""

from __future__ import annotations

import dataclasses
import logging
import stat as statmod
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from datamover.checksums import PartDigests
from datamover.errors import NotFound, UnsafePath
from datamover.posixmeta import MODE
from datamover.stores.base import Buffer, ChunkWriter, ObjectInfo, ResumableWriter, Store

log = logging.getLogger("datamover")

SUFFIX = ".rclonelink"
#: Longest link target read from a ``.rclonelink`` object (PATH_MAX): a bigger body is
#: no link any system could make, and is never read whole.
LINK_MAX = 4096
LINK_MODE = statmod.S_IFLNK | 0o777
#: Names this store listed as links, remembered so that a file written over one (sync
#: replacing a link with a file) removes the ``.rclonelink`` object; past this many the
#: rest are not remembered (that old link object then stays beside the file).
LINKS_REMEMBERED = 100_000


def _is_link_meta(metadata: Mapping[str, str] | None) -> bool:
    raw = (metadata or {}).get(MODE)
    return raw is not None and raw.isascii() and raw.isdigit() and statmod.S_ISLNK(int(raw))


def as_link(info: ObjectInfo, key: str, *, listed: bool = False) -> ObjectInfo:
    """``info`` of a ``.rclonelink`` object as the symlink ``key`` it stands for.
    ``listed``: from a listing, whose empty metadata means "HEAD for it" (sync): kept
    empty then."""
    meta = dict(info.metadata)
    if meta or not listed:
        meta[MODE] = str(LINK_MODE)
    problem = info.problem
    if problem is None and info.size > LINK_MAX:
        problem = (
            f"an rclone link object ({key}{SUFFIX}) of {info.size} bytes, longer than a "
            f"link target can be ({LINK_MAX})"
        )
    return dataclasses.replace(info, key=key, mode=LINK_MODE, metadata=meta, problem=problem)


class RcloneLinks(Store):
    """``inner`` with rclone's ``.rclonelink`` objects shown as symlinks (module doc)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.scheme = inner.scheme
        self.features = inner.features
        self.limits = inner.limits
        self._listed_links: set[str] = set()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # backend extras (client, bucket, ...)
        return getattr(self.inner, name)

    # -- names ----------------------------------------------------------------------

    def _linked(self, key: str) -> bool:
        """Does ``key`` name a ``.rclonelink`` object (no plain ``key`` there)?"""
        if not key or key.endswith("/") or key.endswith(SUFFIX):
            return False
        try:
            self.inner.stat(key)
        except NotFound:
            return True
        return False

    def _shown(self, info: ObjectInfo) -> ObjectInfo:
        if info.is_dir or not info.key.endswith(SUFFIX) or info.key.endswith("/"):
            return info
        name = info.key[: -len(SUFFIX)]
        if not name or name.endswith("/"):
            return info
        try:
            self.inner.stat(name)
        except NotFound:
            with self._lock:
                if len(self._listed_links) < LINKS_REMEMBERED:
                    self._listed_links.add(name)
            return as_link(info, name, listed=True)
        log.warning(
            "%s: both %s and %s exist; the rclone link is copied as the object it is",
            self.url(name),
            name,
            info.key,
        )
        return info

    # -- reads ----------------------------------------------------------------------

    def url(self, key: str = "") -> str:
        return self.inner.url(key)

    def endpoint(self) -> str | None:
        return self.inner.endpoint()

    def place(self, key: str, *, resolve: bool = False) -> str | None:
        return self.inner.place(key, resolve=resolve)

    def local_path(self, key: str) -> str | None:
        return self.inner.local_path(key)

    def stat(self, key: str) -> ObjectInfo:
        try:
            return self.inner.stat(key)
        except NotFound:
            if not key or key.endswith(("/", SUFFIX)):
                raise
        return as_link(self.inner.stat(key + SUFFIX), key)

    def list(self, prefix: str, *, recursive: bool = True) -> Iterator[ObjectInfo]:
        for info in self.inner.list(prefix, recursive=recursive):
            yield self._shown(info)

    def probe(self, prefix: str) -> None:
        self.inner.probe(prefix)

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        if self._linked(key):
            return self.inner.read(key + SUFFIX, offset, LINK_MAX + 1 if length is None else length)
        return self.inner.read(key, offset, length)

    def readinto(
        self, key: str, offset: int, buf: memoryview, *, expect: ObjectInfo | None = None
    ) -> int:
        return self.inner.readinto(
            key + SUFFIX if self._linked(key) else key, offset, buf, expect=expect
        )

    def read_object(
        self, key: str, info: ObjectInfo | None = None
    ) -> tuple[bytes | bytearray, ObjectInfo]:
        if not self._linked(key):
            return self.inner.read_object(key, info)
        if info is not None:
            if info.size > LINK_MAX:
                raise UnsafePath(f"{self.url(key)}{SUFFIX}: too long for a link target", key=key)
            info = dataclasses.replace(info, key=key + SUFFIX)
        data, got = self.inner.read_object(key + SUFFIX, info)
        if len(data) > LINK_MAX:
            raise UnsafePath(f"{self.url(key)}{SUFFIX}: too long for a link target", key=key)
        return data, as_link(got, key)

    # -- writes ---------------------------------------------------------------------

    def prepare_writes(self, key: str = "") -> Mapping[str, Any]:
        return self.inner.prepare_writes(key)

    def use_job(self, job_id: str) -> None:
        self.inner.use_job(job_id)

    def discard_job_pieces(self, job_id: str, keys: Iterable[str]) -> None:
        self.inner.discard_job_pieces(job_id, keys)

    def put(
        self,
        key: str,
        data: Buffer,
        *,
        metadata: Mapping[str, str] | None = None,
        digests: PartDigests | None = None,
    ) -> ObjectInfo:
        if not _is_link_meta(metadata) or key.endswith("/"):
            info = self.inner.put(key, data, metadata=metadata, digests=digests)
            self.replaced(key)
            return info
        meta = {k: v for k, v in (metadata or {}).items() if k != MODE}
        info = self.inner.put(key + SUFFIX, data, metadata=meta, digests=digests)
        self._remove(key)  # the plain object the link replaces, if any
        return as_link(info, key)

    def replaced(self, key: str) -> None:
        """``key`` was written as a file: remove the link object a listing showed there."""
        with self._lock:
            if key not in self._listed_links:
                return
            self._listed_links.discard(key)
        self._remove(key + SUFFIX)

    def _remove(self, key: str) -> None:
        try:
            self.inner.delete(key)
        except NotFound:
            pass

    def open_writer(
        self,
        key: str,
        *,
        size: int,
        part_size: int,
        metadata: Mapping[str, str] | None = None,
    ) -> ChunkWriter:
        writer = self.inner.open_writer(key, size=size, part_size=part_size, metadata=metadata)
        return _Replacing(writer, self, key)

    def resume_writer(
        self,
        key: str,
        *,
        size: int,
        part_size: int,
        state: Mapping[str, Any],
        metadata: Mapping[str, str] | None = None,
    ) -> ResumableWriter:
        writer = self.inner.resume_writer(
            key, size=size, part_size=part_size, state=state, metadata=metadata
        )
        return _Replacing(writer, self, key)

    def list_pending_uploads(self, prefix: str) -> Iterator[Any]:
        return self.inner.list_pending_uploads(prefix)

    def abort_pending_upload(self, upload: Any) -> None:
        self.inner.abort_pending_upload(upload)

    def delete(self, key: str) -> None:
        self.inner.delete(key + SUFFIX if self._linked(key) else key)

    def copy_object(
        self, src_key: str, dst_key: str, *, metadata: Mapping[str, str] | None = None
    ) -> ObjectInfo:
        return self.inner.copy_object(src_key, dst_key, metadata=metadata)

    def child_key(self, root: str, rel: str) -> str:
        return self.inner.child_key(root, rel)

    def refused_key(self, key: str) -> str | None:
        return self.inner.refused_key(key)

    def confine(self, root: str) -> None:
        self.inner.confine(root)

    def can_copy_from(self, source: Store) -> bool:
        return False

    def sync(self) -> None:
        self.inner.sync()

    def drop_connections(self) -> None:
        self.inner.drop_connections()

    def close(self) -> None:
        self.inner.close()


class _Replacing:
    """A writer of ``key`` that, once committed, removes the link object it replaces."""

    def __init__(self, inner: ChunkWriter, links: RcloneLinks, key: str) -> None:
        self._inner = inner
        self._links = links
        self._key = key

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:  # ``writer.size = ...`` (streaming writes) goes to the real writer
            setattr(self._inner, name, value)

    def commit(self, metadata: Mapping[str, str]) -> ObjectInfo:
        info = self._inner.commit(metadata)
        self._links.replaced(self._key)
        return info
