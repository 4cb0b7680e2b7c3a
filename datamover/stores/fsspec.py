"""Any other fsspec protocol (memory://, sftp://, http(s):// read-only, ...) as a Store.

One adapter for every filesystem fsspec knows, so a URL whose scheme has no native
backend still works as a source or destination. What fsspec can't promise, this store
doesn't either, and says so:

* **No user metadata.** fsspec has no portable object metadata, so digests and POSIX
  attributes are not stored on the files (``features.metadata`` is False); the manifest
  still has them.
* **Multipart writes are staged locally.** fsspec has no portable parallel-part upload:
  parts ``pwrite`` into a temp file (in ``$TMPDIR``), and ``commit`` uploads it with
  ``put_file``. Nothing is visible at the key before that upload; whether the upload
  itself is atomic is up to the filesystem (it is for memory://).
* Missing implementations raise ``ConfigError`` quoting fsspec's own hint (``Install
  paramiko to access SFTP``), and so does a host a connecting filesystem (ftp://,
  sftp://) can't reach; unknown schemes raise ``UsageError``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from datamover.checksums import PartDigests
from datamover.errors import ConfigError, NotFound, StoreError, TransientError, UsageError
from datamover.stores import StoreSettings
from datamover.stores.base import (
    Buffer,
    ChunkWriter,
    Features,
    GiB,
    ObjectInfo,
    PartLimits,
    PartReceipt,
    Store,
    TiB,
)
from datamover.stores.posix import PosixWriter
from datamover.stores.urls import Location


def _mtime(info: Mapping[str, Any]) -> float | None:
    for field in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(field)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


class _StagedWriter:
    """Parts go to a local temp file; ``commit`` uploads it with ``put_file``."""

    def __init__(self, store: FsspecStore, key: str, size: int, part_size: int) -> None:
        self.store = store
        self.key = key
        self.size = size
        self.part_size = part_size
        fd, path = tempfile.mkstemp(prefix="datamover-fsspec-")
        os.close(fd)
        self._spool = PosixWriter(path.lstrip("/"), size, part_size)
        os.unlink(path)

    def write_part(self, index: int, data: Buffer, digests: PartDigests) -> PartReceipt:
        return self._spool.write_part(index, data, digests)

    def commit(self, metadata: Mapping[str, str]) -> ObjectInfo:
        self._spool.commit({})
        local = self._spool.path
        try:
            self.store._do(self.key, self.store.fs.put_file, local, self.store.path(self.key))
        finally:
            os.unlink(local)
        return self.store.stat(self.key)

    def abort(self) -> None:
        self._spool.abort()


class FsspecStore(Store):
    limits = PartLimits(
        min_part_size=1, max_part_size=4 * GiB, max_parts=1_000_000, max_single_put=64 * TiB
    )
    features = Features(metadata=False)

    def __init__(self, protocol: str, bucket: str) -> None:
        import fsspec
        import fsspec.core

        self.scheme = protocol
        self.bucket = bucket
        try:
            fsspec.get_filesystem_class(protocol)
        except ValueError as e:
            raise UsageError(
                f"unknown URL scheme {protocol}://; use a local path, s3://, az://, gs:// or "
                "a protocol fsspec knows (memory://, sftp://, https://, ...)"
            ) from e
        except ImportError as e:
            raise ConfigError(f"{protocol}:// is not available: {e}") from e
        try:
            # Some filesystems connect here (ftp://, sftp://): a host that does not
            # resolve or answer is a configuration error, not an internal one.
            self.fs, root = fsspec.core.url_to_fs(f"{protocol}://{bucket}")
        except OSError as e:
            raise ConfigError(
                f"cannot reach {protocol}://{bucket}/ ({e.strerror or e}); check the host "
                "name (and port) and that the server is up"
            ) from e
        self._root = root.rstrip("/")

    @classmethod
    def from_location(cls, loc: Location, settings: StoreSettings) -> FsspecStore:
        return cls(loc.scheme, loc.bucket)

    def url(self, key: str = "") -> str:
        return f"{self.scheme}://{self.bucket}/{key}"

    def place(self, key: str, *, resolve: bool = False) -> str | None:
        # The URL names the host (or bucket) the filesystem reaches.
        return self.url(key)

    def path(self, key: str) -> str:
        return f"{self._root}/{key}"

    def _key(self, path: str) -> str:
        root = self._root.lstrip("/")
        path = path.lstrip("/")
        return path[len(root) + 1 :] if root else path

    def _do(self, key: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FileNotFoundError as e:
            raise NotFound(f"{self.url(key)}: not found", key=key) from e
        except (ConnectionError, TimeoutError) as e:
            raise TransientError(f"{self.url(key)}: {type(e).__name__}", key=key) from e
        except NotImplementedError as e:
            raise StoreError(f"{self.url(key)}: not supported by {self.scheme}://", key=key) from e
        except OSError as e:
            raise StoreError(f"{self.url(key)}: {e.strerror or e}", key=key) from e

    def _info(self, key: str, info: Mapping[str, Any]) -> ObjectInfo:
        is_dir = info.get("type") == "directory"
        return ObjectInfo(
            key=key + "/" if is_dir and not key.endswith("/") else key,
            size=int(info.get("size") or 0),
            mtime=_mtime(info),
            etag=info.get("ETag") or info.get("etag"),
            is_dir=is_dir,
        )

    def stat(self, key: str) -> ObjectInfo:
        if key == "" or key.endswith("/"):
            raise NotFound(f"{self.url(key)}: not an object", key=key)
        info = self._do(key, self.fs.info, self.path(key))
        if info.get("type") == "directory":
            raise NotFound(f"{self.url(key)}: is a directory", key=key)
        return self._info(key, info)

    def list(self, prefix: str, *, recursive: bool = True) -> Iterator[ObjectInfo]:
        if not recursive and prefix and not prefix.endswith("/"):
            prefix += "/"  # one level down means "this directory", never a name prefix
        directory, _, _ = prefix.rpartition("/")
        base = self.path(directory) if directory else self._root or "/"
        try:
            if recursive:
                found = self.fs.find(base, withdirs=False, detail=True)
                entries = list(found.values())
            else:
                entries = self.fs.ls(base, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            raise StoreError(f"{self.url(prefix)}: {e.strerror or e}", key=prefix) from e
        items = []
        for info in entries:
            key = self._key(info["name"])
            if not key.startswith(prefix) or key == prefix.rstrip("/"):
                continue
            items.append(self._info(key, info))
        items.sort(key=lambda i: i.key)
        yield from items

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        if length is not None and length <= 0:
            self.stat(key)
            return b""
        end = None if length is None else offset + length
        size = self.stat(key).size
        if offset >= size:
            return b""
        data: bytes = self._do(key, self.fs.cat_file, self.path(key), offset, end)
        return data

    def put(
        self,
        key: str,
        data: Buffer,
        *,
        metadata: Mapping[str, str] | None = None,
        digests: PartDigests | None = None,
    ) -> ObjectInfo:
        body = data if isinstance(data, bytes) else bytes(data)
        path = self.path(key)
        parent = path.rsplit("/", 1)[0]
        if parent:
            self._do(key, self.fs.makedirs, parent, exist_ok=True)
        self._do(key, self.fs.pipe_file, path, body)
        return ObjectInfo(key=key, size=len(body))

    def open_writer(
        self,
        key: str,
        *,
        size: int,
        part_size: int,
        metadata: Mapping[str, str] | None = None,
    ) -> ChunkWriter:
        return _StagedWriter(self, key, size, part_size)

    def delete(self, key: str) -> None:
        try:
            self._do(key, self.fs.rm_file, self.path(key))
        except NotFound:
            pass
