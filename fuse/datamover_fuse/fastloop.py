"""pyfuse3's request loop without a trip through trio's scheduler per request.

pyfuse3 waits for each FUSE request with ``trio.Lock`` and
``trio.lowlevel.wait_readable``; both always yield to trio's scheduler, which runs one
``epoll_wait`` per batch. When a reader keeps the kernel's queue full (four ``fio`` jobs
reading from the cache), that round trip is a third of the daemon's time per request.
pyfuse3 reaches trio through its module global ``trio`` (its own ``pyfuse3.asyncio``
swaps it the same way); :func:`install` puts a delegate there that takes up to
``DRAIN`` queued requests in a row without yielding (a zero-timeout ``poll`` says one is
queued), then yields once, so other tasks wait at most ``DRAIN`` requests.
"""

from __future__ import annotations

import select
import sys
import types
from typing import Any

import trio

DRAIN = 32


class _Lock:
    """``trio.Lock`` whose uncontended acquire does not yield."""

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def __aenter__(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()


class _Lowlevel:
    def __init__(self) -> None:
        self._streak = 0
        self._polls: dict[int, select.poll] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(trio.lowlevel, name)

    async def wait_readable(self, fd: int) -> None:
        if self._streak < DRAIN:
            p = self._polls.get(fd)
            if p is None:
                p = self._polls[fd] = select.poll()
                p.register(fd, select.POLLIN)
            if p.poll(0):
                self._streak += 1
                return
        self._streak = 0
        await trio.lowlevel.wait_readable(fd)


class _Trio(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("datamover_fuse.fastloop.trio")
        self.lowlevel = _Lowlevel()
        self.Lock = _Lock

    def __getattr__(self, name: str) -> Any:
        return getattr(trio, name)


def install() -> None:
    pyfuse3 = sys.modules["pyfuse3"]
    if not isinstance(pyfuse3.trio, _Trio):
        pyfuse3.trio = _Trio()
