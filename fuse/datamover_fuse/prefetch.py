"""Reading an object through one open file handle.

A handle reading sequentially gets a read-ahead window that starts at 1 MiB and
doubles with every segment it schedules, up to ``MountOptions.read_window`` (64 MiB);
the window is fetched as ranged GETs of at most ``read_part_size`` (16 MiB) each
(``store.readinto`` into a buffer), several in flight at once, so one reader can use
many connections as goofys and mountpoint-s3 do. A read far from where the handle was
reading (more than a window behind or ahead) is random access: the window is dropped
and the read is served by one exact ranged GET of the bytes the kernel asked for, or
by ``random_read`` when the mount has a block cache (``datamover_fuse.randomread``).

Memory: every segment buffer is taken from the one ``PrefetchBudget`` shared by all
handles. When it is spent, a sequential reader just reads what the kernel asks for,
directly, until buffers come back. Segments the reader has passed are returned at
once, so a reader holds at most its window (and what the kernel's out-of-order
requests still need, below).

The kernel may deliver the read requests of one reader slightly out of order (its own
read-ahead sends several at once), so a read a little behind the current position is
still sequential: served from a live segment if there is one, else directly, without
dropping the window.

The bytes go to the kernel without a copy in Python: a read that lies in one segment
(every request of a plain sequential reader: the kernel's read-ahead asks for 1 MiB
pieces from MiB-aligned offsets, and segment bounds are MiB multiples) is answered
with a ``memoryview`` of the segment, which pyfuse3 writes to ``/dev/fuse`` as soon
as the handler returns, before any other request or fetch runs, so the buffer can't
be reused under it. A read straddling two segments is joined into new bytes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable

import trio

from datamover.stores.base import MiB, ObjectInfo
from datamover_fuse.runtime import Buffer, Runtime

INITIAL_WINDOW = 1 * MiB
#: Segments at least this far behind the oldest read in progress are kept for
#: stragglers (more when the kernel's read-ahead, ``MountOptions.read_ahead``, is
#: larger): the kernel's own read-ahead sends requests that arrive out of order by
#: about that much.
BEHIND_SLACK = 16 * MiB


class _Segment:
    __slots__ = ("buf", "done", "dropped", "end", "error", "filled", "released", "start", "users")

    def __init__(self, start: int, end: int, buf: Buffer) -> None:
        self.start = start
        self.end = end
        self.buf = buf
        self.filled = 0
        self.done = trio.Event()
        self.error: BaseException | None = None
        self.dropped = False
        self.users = 0
        self.released = False


class Prefetcher:
    """Read-ahead state of one open handle. ``key`` is asked for on every request so
    a rename while the file is open is followed; ``pin`` is the object version every
    GET is pinned to (None: not pinned), and ``made_for`` what its owner made it for
    (``FsCore``: the version's ETag and size)."""

    def __init__(
        self,
        rt: Runtime,
        key: Callable[[], str],
        size: int,
        random_read: Callable[[int, int, bool], Awaitable[bytes | memoryview]] | None = None,
        pin: ObjectInfo | None = None,
        made_for: tuple[object, ...] = (),
    ) -> None:
        self._rt = rt
        self._random_read = random_read
        self._key = key
        self._pin = pin
        self.made_for = made_for
        self.size = size
        self._segments: deque[_Segment] = deque()
        self._fetch_end = 0
        self._next = 0
        options = rt.options
        self._part = options.read_part_size
        self._max_window = options.read_window
        self._slack = max(BEHIND_SLACK, options.read_ahead)
        self._window = min(INITIAL_WINDOW, self._max_window)
        self._closed = False
        self._reading: list[int] = []
        self.direct_reads = 0
        self.prefetched_bytes = 0

    async def read(self, offset: int, length: int) -> bytes | memoryview:
        """The bytes at ``offset``: a view into a segment when one segment holds them
        all (pyfuse3 replies from any buffer, so the bytes are copied once, by the
        kernel), else a new ``bytes``."""
        if offset >= self.size or length <= 0:
            return b""
        end = min(self.size, offset + length)
        if not self._is_sequential(offset):
            # Far: more than the kernel's read-ahead can scatter one reader's requests
            # (a sequential reader whose window is spent reads here too).
            far = abs(offset - self._next) > min(self._slack, self.size // 4)
            self._reset()
            self._next = end
            self.direct_reads += 1
            if self._random_read is not None:
                return await self._random_read(offset, end - offset, far)
            return await self._direct(offset, end - offset)
        if offset > self._fetch_end:  # a skip forward: what is fetched is all behind
            while self._segments:
                self._drop(self._segments.popleft())
            self._fetch_end = offset
        self._schedule(offset)
        out: list[bytes | memoryview] = []
        pos = offset
        self._reading.append(offset)
        try:
            while pos < end:
                seg = self._find(pos)
                if seg is None:
                    out.append(await self._direct(pos, end - pos))
                    self.direct_reads += 1
                    break
                seg.users += 1
                try:
                    await seg.done.wait()
                    if seg.error is not None:
                        raise seg.error
                    stop = min(end, seg.start + seg.filled)
                    if stop <= pos:
                        break  # the object ended early: it shrank since it was opened
                    view = memoryview(seg.buf)[pos - seg.start : stop - seg.start]
                    # A view only when it is the whole answer: while this read awaits
                    # another segment, this one may be released and its buffer reused.
                    out.append(view if stop >= end and not out else bytes(view))
                finally:
                    seg.users -= 1
                    if seg.dropped and not seg.users and seg.done.is_set():
                        self._release(seg)
                pos = stop
        finally:
            self._reading.remove(offset)
        self._next = max(self._next, end)
        self._free_behind(min(self._reading, default=offset))
        return out[0] if len(out) == 1 else b"".join(out)

    def close(self) -> None:
        self._closed = True
        self._reset()

    # -- internals ------------------------------------------------------------------

    def _is_sequential(self, offset: int) -> bool:
        if offset == self._next:
            return True
        if not self._segments:
            return False
        # Stragglers behind (served directly when their segment is gone, without
        # dropping the window), or a short skip forward within the window.
        return self._next - self._max_window <= offset <= self._fetch_end + self._window

    def _find(self, pos: int) -> _Segment | None:
        for seg in self._segments:
            if seg.start <= pos < seg.end:
                return seg
        return None

    def _schedule(self, pos: int) -> None:
        target = min(self.size, pos + self._window)
        budget = self._rt.prefetch
        while self._fetch_end < target and not self._closed:
            length = min(self._part, self._window, self.size - self._fetch_end)
            buf = budget.take(length)
            if buf is None:
                return
            seg = _Segment(self._fetch_end, self._fetch_end + length, buf)
            self._segments.append(seg)
            self._rt.spawn(self._fetch, seg)
            self._fetch_end = seg.end
            self._window = min(self._max_window, self._window * 2)
            self.prefetched_bytes += length

    async def _fetch(self, seg: _Segment) -> None:
        try:
            seg.filled = await self._rt.call(
                self._rt.store.readinto,
                self._key(),
                seg.start,
                memoryview(seg.buf),
                expect=self._pin,
            )
        except Exception as e:
            seg.error = e
        finally:
            seg.done.set()
            if seg.dropped and not seg.users:
                self._release(seg)

    def _release(self, seg: _Segment) -> None:
        if seg.released:
            return
        seg.released = True
        self._rt.prefetch.give(seg.buf)
        seg.buf = bytearray()

    def _drop(self, seg: _Segment) -> None:
        """Give the segment's bytes back once no read uses it and its fetch is over."""
        seg.dropped = True
        if seg.done.is_set() and not seg.users:
            self._release(seg)

    def _free_behind(self, offset: int) -> None:
        while self._segments and self._segments[0].end + self._slack <= offset:
            self._drop(self._segments.popleft())

    def _reset(self) -> None:
        while self._segments:
            self._drop(self._segments.popleft())
        self._window = min(INITIAL_WINDOW, self._max_window)
        self._fetch_end = 0

    async def _direct(self, offset: int, length: int) -> memoryview:
        return await self._rt.read_range(self._key(), offset, length, self._pin)
