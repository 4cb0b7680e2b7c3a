"""The engine's retry loop, shared by every caller that retries one request.

``errors.py`` says which layer retries what: the SDKs retry one HTTP request; this
loop retries one *part* or one small file's request, per a ``RetryPolicy``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from datamover.errors import DatamoverError, Throttled
from datamover.options import RetryPolicy

T = TypeVar("T")


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rand: Callable[[], float] = random.random,
    on_retry: Callable[[DatamoverError, int, float], None] | None = None,
) -> T:
    """Run ``fn``; retry ``retryable`` datamover errors per ``policy`` (errors.py
    says which layer retries what). Anything else propagates at once."""
    attempt = 1
    while True:
        try:
            return fn()
        except DatamoverError as e:
            if not e.retryable or attempt >= policy.attempts:
                raise
            delay = min(policy.cap, policy.base * 2 ** (attempt - 1)) * rand()
            if isinstance(e, Throttled) and e.retry_after is not None:
                delay = max(delay, min(e.retry_after, policy.cap * 3))
            if on_retry is not None:
                on_retry(e, attempt, delay)
            sleep(delay)
            attempt += 1
