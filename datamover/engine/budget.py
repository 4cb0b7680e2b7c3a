"""Bounds on work in flight: a byte budget, and retries with backoff."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class ByteBudget:
    """A counting semaphore in bytes: ``acquire(n)`` blocks until ``n`` more bytes fit.

    A request larger than the whole budget is granted alone (when nothing else is
    held), so one oversized part can't deadlock the run. Grants are FIFO only in the
    sense that the engine acquires from a single scheduler thread, in plan order:
    that ordering is what lets in-order hashing never wait on a part that has no
    budget.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self.peak = 0
        self._cond = threading.Condition()
        #: What a blocked ``acquire`` needs free before it is woken: its own request,
        #: or an eighth of the budget if that is more. Waking the scheduler for every
        #: small file's release cost a thread hand-over per file; now it wakes when a
        #: batch of work fits and queues that batch at once.
        self._wake_at: int | None = None
        self._slack = limit // 8

    def acquire(self, n: int, stop: threading.Event | None = None) -> bool:
        """Returns False (having acquired nothing) if ``stop`` is set while waiting."""
        n = min(n, self.limit)
        with self._cond:
            while self._used and self._used + n > self.limit:
                if stop is not None and stop.is_set():
                    self._wake_at = None
                    return False
                self._wake_at = max(0, self.limit - max(n, self._slack))
                self._cond.wait(0.2)
            self._wake_at = None
            self._used += n
            self.peak = max(self.peak, self._used)
            return True

    def release(self, n: int) -> None:
        n = min(n, self.limit)
        with self._cond:
            self._used -= n
            wake_at = self._wake_at
            if wake_at is not None and (self._used <= wake_at or self._used == 0):
                self._cond.notify_all()

    @property
    def used(self) -> int:
        with self._cond:
            return self._used


class BufferPool:
    """Part buffers kept for reuse, so a part of a large file doesn't cost a fresh
    zero-filled allocation: ``bytearray(n)`` writes n zeros and the kernel faults in
    every page again (83k page faults per 256 MiB).

    Bounded by ``limit`` (the memory budget): buffers in use plus idle ones never
    exceed it, so the pool adds nothing beyond what the budget already allows in
    flight. ``take(n)`` reuses an idle buffer of n to 2n bytes (the caller slices it);
    a file's last, shorter part usually fits a full-size one.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._idle: list[bytearray] = []
        self._idle_bytes = 0
        self._in_use = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bytearray:
        """A buffer of at least ``n`` bytes (at most 2n); its contents are whatever
        was there. Give it back with ``give``."""
        with self._lock:
            for i, buf in enumerate(self._idle):
                if n <= len(buf) <= 2 * n:
                    del self._idle[i]
                    self._idle_bytes -= len(buf)
                    self._in_use += len(buf)
                    return buf
            self._in_use += n
        return bytearray(n)

    def give(self, buf: bytearray) -> None:
        n = len(buf)
        with self._lock:
            self._in_use -= n
            while self._idle and self._idle_bytes + self._in_use + n > self.limit:
                self._idle_bytes -= len(self._idle.pop(0))  # the oldest goes first
            if self._idle_bytes + self._in_use + n <= self.limit:
                self._idle.append(buf)
                self._idle_bytes += n

    @property
    def idle_bytes(self) -> int:
        with self._lock:
            return self._idle_bytes


class TokenBucket:
    """One bandwidth limit shared by every worker thread (``--bwlimit``).

    ``consume(n)`` blocks until ``n`` bytes of allowance have accrued at ``rate`` bytes
    per second; the bucket holds at most ``burst`` bytes (default: one second's worth),
    so an idle period can't be saved up into a flood. Requests larger than the burst
    are paid for in full, by waiting longer.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else rate
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()

    def consume(self, n: int) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            debt = -self._tokens
        if debt > 0:
            self._sleep(debt / self.rate)
