"""Files being written: one local staging file each, and how its bytes reach the store.

Every file open for writing has a ``LocalFile``: a sparse staging file under the cache
directory holding the file's current bytes. Reads of that file come from it, so a
writer sees its own writes.

**Streaming.** A file that starts empty (created, or opened with ``O_TRUNC``) and is
written sequentially becomes a multipart upload as soon as one part's worth of bytes
is there: each full part is read back from the staging file (page cache, usually)
and uploaded while the writer goes on, several parts in flight, and ``close``
uploads the last, short part and commits. Only stores that can start a multipart
write without knowing its size stream (``FsOps.can_stream``: S3); the others
upload the staged file at ``close`` with its exact size.

**Staging.** The first write below the part already handed to the upload, a
truncate, or opening an existing object for writing makes the file *staged*: the
stream (if any) is aborted and the whole file is uploaded at ``close``/``fsync``
(one ``put`` up to 8 MiB, else a multipart upload of exact size, parts in parallel).
An existing object is downloaded into the staging file on the first write, not at
``open``: a program that opens read-write and only reads costs nothing extra.

**Disk.** Staging files share ``cache_size`` bytes. When it is full, parts of
streaming files that are already uploaded are punched out of their staging files
(``fallocate(PUNCH_HOLE)``), waiting for in-flight parts if needed; when nothing can
be freed the write fails with ``ENOSPC``. A streaming file whose uploaded bytes were
punched can no longer switch to staging: a write there fails with ``EIO``. This is
what lets a file larger than the cache stream.

**Memory.** Part buffers (uploads and downloads) come from one ``ByteBudget``
(``write_buffer``). A stream takes a part's budget *before* scheduling it, in part
order: the whole-file sha256 is computed in part order while parts upload in
parallel (a part that finished early waits, holding its buffer), and taking budget in
order guarantees the part everyone waits for already has its bytes.

**Integrity and visibility.** Every object is created by one write (one put, one
completion: never a copy onto itself). A staged upload carries ``datamover-sha256``
(computed over the bytes uploaded, before the upload starts) with its POSIX metadata.
A stream's digest is known only at its end: it is stored where the commit takes
metadata (``FsOps.commit_stream``); on S3 the object instead carries the store's
full-object checksum. Nothing is visible before the commit; a failed upload is
aborted and the error is returned from ``close``/``fsync``.
"""

from __future__ import annotations

import errno
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from datamover.checksums import PartDigests
from datamover.errors import SourceChanged
from datamover.stores.base import ChunkWriter, MiB, ObjectInfo, digest_metadata_key
from datamover.stores.fsops import OpenFile
from datamover_fuse.fserrors import FsError, first_leaf
from datamover_fuse.runtime import Runtime
from datamover_fuse.staging import StagedFile

log = logging.getLogger(__name__)

#: Staged files up to this size are one ``put``.
SMALL_PUT = 8 * MiB
#: Chunk size for downloading an existing object into its staging file, and hashing.
CHUNK = 8 * MiB
#: Parts of one stream scheduled but not yet uploaded before a write waits.
MAX_PARTS_AHEAD = 8
DIGEST_ALGORITHM = "sha256"
DIGEST_KEY = digest_metadata_key(DIGEST_ALGORITHM)


class OrderedHasher:
    """sha256 over parts fed in any order, hashed in part order (on a worker
    thread). ``abandon`` releases every waiter when the upload failed."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.next = 0
        self._waiters: dict[int, trio.Event] = {}
        self.abandoned = False

    async def feed(self, rt: Runtime, index: int, data: bytes) -> None:
        while self.next != index and not self.abandoned:
            event = self._waiters.setdefault(index, trio.Event())
            await event.wait()
        if self.abandoned:
            return
        await rt.disk(self._hash.update, data)
        self.next += 1
        if self.next in self._waiters:
            self._waiters.pop(self.next).set()

    def abandon(self) -> None:
        self.abandoned = True
        for event in self._waiters.values():
            event.set()
        self._waiters.clear()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class Stream:
    """A multipart upload fed from the staging file while it is written."""

    def __init__(self, writer: ChunkWriter, part_size: int, capacity: int) -> None:
        self.writer = writer
        self.part_size = part_size
        self.capacity = capacity
        self.scheduled = 0
        self.inflight = 0
        self.done: set[int] = set()
        self.done_upto = 0
        self.error: BaseException | None = None
        self.aborted = False
        self.hasher = OrderedHasher()
        self._changed = trio.Event()

    @property
    def frozen_end(self) -> int:
        """Bytes below this are handed to the upload and must not change."""
        return self.scheduled * self.part_size

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self) -> None:
        await self._changed.wait()


class LocalFile:
    """Write state of one file. ``lock`` serialises writes, truncates and commits.

    ``metadata`` gives the file's POSIX metadata at the time it is asked (for the
    stream's initial metadata; the commit passes the final one)."""

    def __init__(
        self,
        staged: StagedFile,
        key: str,
        metadata: Callable[[], dict[str, str]],
        *,
        size: int,
        base_loaded: bool,
        streamable: bool,
    ) -> None:
        self.staged = staged
        self.key = key
        self.metadata = metadata
        self.size = size
        self.base_loaded = base_loaded
        self.streamable = streamable
        self.stream: Stream | None = None
        self.dirty = False
        #: Bytes below this were uploaded by a stream and punched out of the staging file.
        self.punched = 0
        #: Why the file can't be uploaded (it lost bytes a program wrote), and the errno
        #: ``close``/``fsync`` then return (ENOSPC for a full cache, else EIO).
        self.failed: str | None = None
        self.failed_errno = errno.EIO
        #: chmod/chown/utime while written: they go with the upload at close.
        self.attrs_changed = False
        self.unlinked = False
        self.handles = 0
        self.lock = trio.Lock()


class WriteManager:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.streams: set[LocalFile] = set()
        self._part_done = trio.Event()
        self._background = 0
        self._idle = trio.Event()
        self._idle.set()
        limits = rt.store.limits
        self.stream_part_size = limits.choose_part_size(rt.options.stream_size_hint)
        self.stream_capacity = self.stream_part_size * limits.max_parts
        #: The largest object the store's multipart limits allow: EFBIG beyond.
        self.max_size = limits.max_part_size * limits.max_parts

    def new_file(
        self,
        key: str,
        metadata: Callable[[], dict[str, str]],
        *,
        size: int = 0,
        base_loaded: bool = True,
        streamable: bool = False,
    ) -> LocalFile:
        return LocalFile(
            self.rt.cache.new_file(),
            key,
            metadata,
            size=size,
            base_loaded=base_loaded,
            streamable=streamable and self.rt.fsops.can_stream,
        )

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Background work that must finish before unmount (part uploads, aborts)."""

        async def run() -> None:
            try:
                await fn(*args)
            finally:
                self._background -= 1
                if not self._background:
                    self._idle.set()

        self._background += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self.rt.spawn(run)

    async def idle(self) -> None:
        await self._idle.wait()

    # -- disk budget ------------------------------------------------------------------

    async def reserve(self, lf: LocalFile, n: int) -> None:
        cache = self.rt.cache
        while not cache.try_reserve(n):
            if await self._reclaim():
                continue
            if any(f.stream is not None and f.stream.inflight for f in self.streams):
                await self._part_done.wait()
                continue
            raise FsError(errno.ENOSPC, "the mount's cache is full (--cache-size)")
        lf.staged.charged += n

    def unreserve(self, lf: LocalFile, n: int) -> None:
        n = min(n, lf.staged.charged)
        lf.staged.charged -= n
        self.rt.cache.release(n)

    async def _reclaim(self) -> bool:
        freed = False
        for lf in list(self.streams):
            st = lf.stream
            if st is None or st.aborted:
                continue
            end = min(st.done_upto * st.part_size, lf.size)
            if end > lf.punched:
                await self.rt.disk(lf.staged.punch, lf.punched, end - lf.punched)
                self.unreserve(lf, end - lf.punched)
                lf.punched = end
                freed = True
        return freed

    # -- reads and writes ---------------------------------------------------------------

    async def read(self, lf: LocalFile, offset: int, length: int) -> bytes:
        if offset >= lf.size:
            return b""
        length = min(length, lf.size - offset)
        if offset < lf.punched:
            raise FsError(errno.EIO, f"{lf.key}: bytes already uploaded and evicted from the cache")
        return await self.rt.disk(lf.staged.pread, offset, length)

    async def write(self, lf: LocalFile, offset: int, data: bytes) -> None:
        """Caller holds ``lf.lock`` and has loaded the base."""
        end = offset + len(data)
        if end > self.max_size:
            raise FsError(errno.EFBIG, f"{lf.key}: larger than the store can hold")
        if offset < lf.punched:
            raise FsError(errno.EIO, f"{lf.key}: bytes already uploaded and evicted from the cache")
        st = lf.stream
        if st is not None and (offset < st.frozen_end or end > st.capacity):
            await self._unstream(lf, errno.EFBIG if end > st.capacity else errno.EIO)
        if lf.stream is None and offset != lf.size:
            lf.streamable = False
        if end > lf.size:
            await self.reserve(lf, end - lf.size)
        await self.rt.disk(lf.staged.pwrite, offset, data)
        lf.size = max(lf.size, end)
        lf.dirty = True
        if lf.stream is None and lf.streamable and lf.size >= self.stream_part_size:
            await self._start_stream(lf)
        st = lf.stream
        if st is not None:
            await self._schedule(lf, st, final=False)
            while st.inflight > MAX_PARTS_AHEAD and st.error is None:
                await st.changed()
            if st.error is not None:
                raise FsError(errno.EIO, f"{lf.key}: upload failed: {st.error}")

    async def truncate(self, lf: LocalFile, size: int) -> None:
        """Caller holds ``lf.lock`` and has loaded the base (unless ``size`` is 0)."""
        if size > self.max_size:
            raise FsError(errno.EFBIG, f"{lf.key}: larger than the store can hold")
        if lf.stream is not None:
            await self._unstream(lf)
        if lf.punched:
            raise FsError(errno.EIO, f"{lf.key}: truncating a file larger than the cache")
        lf.streamable = False
        if size > lf.size:
            await self.reserve(lf, size - lf.size)
        else:
            self.unreserve(lf, lf.size - size)
        await self.rt.disk(lf.staged.truncate, size)
        lf.size = size
        lf.base_loaded = True
        lf.dirty = True

    async def load_base(
        self,
        lf: LocalFile,
        size: int,
        source: OpenFile | None = None,
        version: ObjectInfo | None = None,
    ) -> None:
        """Download the existing object into the staging file (chunks in parallel):
        from ``source``, the file the writing handle opened, where the store pinned
        one (``FsOps.open_file``), else by key, each chunk of ``version`` (the object
        as the mount knows it) only: a copy mixing two versions is never written back.
        Raises ``SourceChanged`` when the object changed meanwhile."""
        await self.reserve(lf, size)
        rt = self.rt

        async def one(offset: int) -> None:
            n = min(CHUNK, size - offset)
            granted = await rt.write_budget.acquire(n)
            try:
                buf = bytearray(n)
                if source is not None:
                    got = await rt.call(source.readinto, offset, memoryview(buf))
                else:
                    got = await rt.call(
                        rt.store.readinto,
                        lf.key,
                        offset,
                        memoryview(buf),
                        expect=version,
                    )
                if got != n:
                    raise SourceChanged(f"{lf.key}: changed while being opened", key=lf.key)
                await rt.disk(lf.staged.pwrite, offset, buf)
            finally:
                rt.write_budget.release(granted)

        try:
            async with trio.open_nursery() as nursery:
                for offset in range(0, size, CHUNK):
                    nursery.start_soon(one, offset)
        except ExceptionGroup as group:
            e = first_leaf(group)  # what failed, not "1 sub-exception"
            if isinstance(e, SourceChanged):
                raise FsError(
                    errno.ESTALE, f"{lf.key}: replaced by another client while being opened"
                ) from e
            raise e from None
        lf.size = size
        lf.base_loaded = True

    # -- streams ------------------------------------------------------------------------

    async def _start_stream(self, lf: LocalFile) -> None:
        rt = self.rt
        part = self.stream_part_size
        writer = await rt.call(
            rt.fsops.open_stream, lf.key, part, rt.options.stream_size_hint, lf.metadata()
        )
        lf.stream = Stream(writer, part, self.stream_capacity)
        self.streams.add(lf)

    async def _schedule(self, lf: LocalFile, st: Stream, *, final: bool) -> None:
        part = st.part_size
        limit = -(-lf.size // part) if final else lf.size // part
        while st.scheduled < limit and st.error is None and not st.aborted:
            index = st.scheduled
            offset = index * part
            length = min(part, lf.size - offset)
            granted = await self.rt.write_budget.acquire(length)
            st.scheduled += 1
            st.inflight += 1
            self._spawn(self._upload_part, lf, st, index, offset, length, granted)

    async def _upload_part(
        self, lf: LocalFile, st: Stream, index: int, offset: int, length: int, granted: int
    ) -> None:
        rt = self.rt
        try:
            if st.aborted or st.error is not None:
                return
            buf = await rt.disk(lf.staged.pread, offset, length)
            if len(buf) < length:  # a hole at the end of a sparse file reads short
                buf += bytes(length - len(buf))
            await rt.call(st.writer.write_part, index, buf, PartDigests(buf))
            await st.hasher.feed(rt, index, buf)
            st.done.add(index)
            while st.done_upto in st.done:
                st.done.discard(st.done_upto)
                st.done_upto += 1
        except Exception as e:
            if st.error is None:
                st.error = e
                log.warning("%s: part %d failed: %s", lf.key, index, e)
            st.hasher.abandon()
        finally:
            rt.write_budget.release(granted)
            st.inflight -= 1
            st.notify()
            self._part_done.set()
            self._part_done = trio.Event()

    async def _unstream(self, lf: LocalFile, code: int = errno.EIO) -> None:
        """Turn a streaming file into a staged one: the upload so far is dropped.
        Impossible once uploaded bytes were punched out: then fail with ``code``."""
        if lf.punched:
            raise FsError(code, f"{lf.key}: uploaded bytes were evicted from the cache")
        self._forget_stream(lf)

    async def drop_stream(self, lf: LocalFile) -> None:
        """Abort the file's stream, if any (it is unlinked, or moves to another key),
        under its lock so that no write or commit is half-way through it."""
        async with lf.lock:
            if lf.stream is not None:
                self._forget_stream(lf)

    def _forget_stream(self, lf: LocalFile) -> None:
        st = lf.stream
        lf.stream = None
        lf.streamable = False
        self.streams.discard(lf)
        if st is not None:
            st.aborted = True
            st.hasher.abandon()
            self._spawn(self._abort_stream, lf.key, st)

    async def _abort_stream(self, key: str, st: Stream) -> None:
        while st.inflight:
            await st.changed()
        with trio.CancelScope(shield=True):
            try:
                await self.rt.call(st.writer.abort)
            except Exception as e:
                log.warning("%s: could not abort an upload: %s", key, e)

    # -- commit ---------------------------------------------------------------------------

    async def commit(self, lf: LocalFile, metadata: Mapping[str, str]) -> ObjectInfo:
        """Upload the file as it is now. Caller holds ``lf.lock``. Raises on failure,
        with any multipart upload aborted."""
        if lf.stream is not None:
            return await self._commit_stream(lf, lf.stream, metadata)
        rt = self.rt
        size = lf.size
        if size <= SMALL_PUT:
            granted = await rt.write_budget.acquire(max(size, 1))
            try:
                data = await rt.disk(lf.staged.pread, 0, size)
                digest = await rt.disk(_sha256, data)
                meta = {**metadata, DIGEST_KEY: digest}
                return await rt.call(rt.store.put, lf.key, data, metadata=meta)
            finally:
                rt.write_budget.release(granted)
        digest = await self._hash_staged(lf, size)
        meta = {**metadata, DIGEST_KEY: digest}
        part = rt.store.limits.choose_part_size(size)
        writer = await rt.call(
            rt.store.open_writer, lf.key, size=size, part_size=part, metadata=meta
        )

        async def one(index: int, offset: int) -> None:
            n = min(part, size - offset)
            granted = await rt.write_budget.acquire(n)
            try:
                buf = await rt.disk(lf.staged.pread, offset, n)
                if len(buf) < n:
                    buf += bytes(n - len(buf))
                await rt.call(writer.write_part, index, buf, PartDigests(buf))
            finally:
                rt.write_budget.release(granted)

        try:
            async with trio.open_nursery() as nursery:
                for index, offset in enumerate(range(0, size, part)):
                    nursery.start_soon(one, index, offset)
            return await rt.call(writer.commit, meta)
        except BaseException:
            with trio.CancelScope(shield=True):
                try:
                    await rt.call(writer.abort)
                except Exception as e:
                    log.warning("%s: could not abort an upload: %s", lf.key, e)
            raise

    async def _hash_staged(self, lf: LocalFile, size: int) -> str:
        def run() -> str:
            h = hashlib.sha256()
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            for offset in range(0, size, CHUNK):
                n = lf.staged.readinto(offset, view[: min(CHUNK, size - offset)])
                h.update(view[:n])
                if n < min(CHUNK, size - offset):  # sparse tail
                    h.update(bytes(min(CHUNK, size - offset) - n))
            return h.hexdigest()

        granted = await self.rt.write_budget.acquire(CHUNK)
        try:
            return await self.rt.disk(run)
        finally:
            self.rt.write_budget.release(granted)

    async def _commit_stream(
        self, lf: LocalFile, st: Stream, metadata: Mapping[str, str]
    ) -> ObjectInfo:
        rt = self.rt
        try:
            await self._schedule(lf, st, final=True)
            while st.inflight:
                await st.changed()
            if st.error is not None:
                raise st.error
            if st.hasher.next != st.scheduled:
                raise FsError(errno.EIO, f"{lf.key}: stream digest incomplete")
            rt.fsops.finish_stream(st.writer, lf.size)
            meta = {**metadata, DIGEST_KEY: st.hasher.hexdigest()}
            info = await rt.call(
                rt.fsops.commit_stream, st.writer, meta, attrs_changed=lf.attrs_changed
            )
        except BaseException:
            self._forget_stream(lf)
            raise
        lf.stream = None
        lf.streamable = False
        self.streams.discard(lf)
        return info

    async def discard(self, lf: LocalFile) -> None:
        """Drop the staging file (and any stream) without uploading."""
        if lf.stream is not None:
            self._forget_stream(lf)
        self.streams.discard(lf)
        self.unreserve(lf, lf.staged.charged)
        await self.rt.disk(lf.staged.close)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
