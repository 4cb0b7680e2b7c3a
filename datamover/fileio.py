"""``datamover.open(url, mode)``: a file object over any store, for workflow code.

Reading (``"rb"``, ``"r"``): ranged reads through the store, buffered
(``block_size``, default 4 MiB), seekable, so ``h5py``/``xarray``/``pandas`` can read
pieces of a large object without fetching all of it. A failed range read is retried
like an engine part (``RetryPolicy``).

Writing (``"wb"``, ``"w"``): nothing is visible at the URL until ``close`` succeeds.
Bytes collect in a spool that stays in memory up to ``multipart_threshold`` (default
8 MiB) and spills to a temporary file (``$TMPDIR``) beyond it, so memory stays
bounded whatever is written; ``close`` then sends the object as one request, or as
a multipart upload (parts read back from the spool, ``transfers`` at a time) that is
committed at the end. Leaving a ``with`` block by an exception (or calling
``discard()``) aborts instead: no object appears, no upload is left behind. The
object gets the same ``datamover-<alg>`` digest metadata a copy would give it.

Caveat: a spilled write needs local space for the whole object before upload starts.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import IO, Any, TypeVar

from datamover.checksums import PartDigests, new_hasher
from datamover.errors import DatamoverError, UsageError
from datamover.options import MiB, TransferOptions
from datamover.retry import call_with_retries
from datamover.stores import StoreSettings, open_store
from datamover.stores.base import ChunkWriter, Store, digest_metadata_key

T = TypeVar("T")

DEFAULT_BLOCK_SIZE = 4 * MiB
_MODES = {"rb", "r", "rt", "wb", "w", "wt"}


class StoreReader(io.RawIOBase):
    """Raw, seekable reads of one object; wrap it in ``io.BufferedReader``."""

    def __init__(self, store: Store, key: str, options: TransferOptions) -> None:
        super().__init__()
        self._store = store
        self.key = key
        self._retry = options.retry
        self.info = store.stat(key)
        if self.info.is_dir:
            raise UsageError(f"{store.url(key)} is a directory")
        self.size = self.info.size
        self._pos = 0
        self.name = store.url(key)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), max(0, self.size - self._pos))
        if want == 0:
            return 0
        target = view[:want]
        pos = self._pos
        # Pinned to the version opened: a replaced object raises SourceChanged rather
        # than go on with the new object's bytes.
        n = call_with_retries(
            lambda: self._store.readinto(self.key, pos, target, expect=self.info), self._retry
        )
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._store.close()


class StoreWriter(io.RawIOBase):
    """Spooled, all-or-nothing writes of one object (see the module docstring)."""

    def __init__(self, store: Store, key: str, options: TransferOptions) -> None:
        super().__init__()
        if key == "" or key.endswith("/"):
            store.close()
            raise UsageError(f"{store.url(key)} names a directory, not an object")
        self._store = store
        self.key = key
        self._options = options
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=max(options.multipart_threshold, 1), prefix="datamover-"
        )
        self._hasher = new_hasher(options.checksum)
        self._size = 0
        self._finished = False
        self.name = store.url(key)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed or self._finished:
            raise ValueError("write to a closed file")
        view = memoryview(data).cast("B")
        self._spool.write(view)
        self._hasher.update(view)
        self._size += len(view)
        return len(view)

    def tell(self) -> int:
        return self._size

    def discard(self) -> None:
        """Abandon the write: nothing appears at the URL."""
        if not self._finished:
            self._finished = True
            self._spool.close()
        if not self.closed:
            super().close()
            self._store.close()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._finished:
                self._commit()
        finally:
            self._finished = True
            self._spool.close()
            super().close()
            self._store.close()

    def _retrying(self, fn: Callable[[], T]) -> T:
        return call_with_retries(fn, self._options.retry)

    def _commit(self) -> None:
        opts = self._options
        meta = {digest_metadata_key(opts.checksum): self._hasher.hexdigest()}
        store, key, size = self._store, self.key, self._size
        if size <= opts.multipart_threshold:
            self._spool.seek(0)
            data = self._spool.read()
            digests = PartDigests(data)
            self._retrying(lambda: store.put(key, data, metadata=meta, digests=digests))
            return
        part_size = store.limits.choose_part_size(size, opts.part_size)
        count = -(-size // part_size)
        writer: ChunkWriter = self._retrying(
            lambda: store.open_writer(key, size=size, part_size=part_size, metadata=meta)
        )
        try:
            self._spool.flush()
            fd = self._spool.fileno()  # the spool is on disk past the threshold

            def part(index: int) -> None:
                offset = index * part_size
                buf = bytearray(min(part_size, size - offset))
                view, done = memoryview(buf), 0
                while done < len(buf):  # positional reads: safe from many threads
                    n = os.preadv(fd, [view[done:]], offset + done)
                    if n == 0:
                        raise OSError(f"spool file ended at {offset + done} of {size} bytes")
                    done += n
                digests = PartDigests(buf)
                self._retrying(lambda: writer.write_part(index, buf, digests))

            # At most ``transfers`` parts (each one buffer) in memory at once.
            with ThreadPoolExecutor(max(1, min(opts.transfers, count))) as pool:
                for future in [pool.submit(part, i) for i in range(count)]:
                    future.result()
            self._retrying(lambda: writer.commit(meta))
        except BaseException:
            try:
                writer.abort()
            except DatamoverError:
                pass
            raise


class _AbortingText(io.TextIOWrapper):
    """Text over a ``StoreWriter``: leaving ``with`` on an exception aborts."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            raw = self.buffer.raw if isinstance(self.buffer, io.BufferedWriter) else None
            if isinstance(raw, StoreWriter):
                raw.discard()
                return
        super().__exit__(exc_type, exc, tb)


class _AbortingBuffered(io.BufferedWriter):
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and isinstance(self.raw, StoreWriter):
            self.raw.discard()
            return
        super().__exit__(exc_type, exc, tb)

    def discard(self) -> None:
        """Abandon the write: nothing appears at the URL."""
        if isinstance(self.raw, StoreWriter):
            self.raw.discard()


def open(  # datamover.open mirrors the builtin on purpose
    url: str,
    mode: str = "rb",
    *,
    options: TransferOptions | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    encoding: str | None = "utf-8",
    errors: str | None = None,
    newline: str | None = None,
) -> IO[Any]:
    """Open ``url`` (any store, or a local path) as a file object.

    ``mode``: ``"rb"``/``"r"`` to read, ``"wb"``/``"w"`` to write (whole objects: no
    append, no read-write). ``options`` supplies the checksum, multipart threshold,
    part size, ``transfers`` and retry policy. Raises ``NotFound`` for a missing object
    when reading, and the usual ``datamover.errors`` otherwise."""
    if mode not in _MODES:
        raise UsageError(f"mode {mode!r} is not supported; use 'rb', 'r', 'wb' or 'w'")
    options = options or TransferOptions()
    store, key = open_store(url, StoreSettings(connections=options.transfers + 2))
    text = "b" not in mode
    if mode.startswith("r"):
        try:
            reader = StoreReader(store, key, options)
        except BaseException:
            store.close()
            raise
        buffered = io.BufferedReader(reader, buffer_size=block_size)
        if text:
            return io.TextIOWrapper(buffered, encoding=encoding, errors=errors, newline=newline)
        return buffered
    writer = StoreWriter(store, key, options)
    out = _AbortingBuffered(writer, buffer_size=block_size)
    if text:
        return _AbortingText(out, encoding=encoding, errors=errors, newline=newline)
    return out
