"""A bounded LRU map whose entries expire: the attribute, listing and negative-lookup
caches. The clock is injected so tests move time by hand."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

Clock = Callable[[], float]


class TTLCache(Generic[K, V]):
    """At most ``max_weight`` total weight (each entry weighs 1 unless told), least
    recently used evicted first; an entry older than its TTL reads as absent."""

    def __init__(self, max_weight: int, ttl: float, clock: Clock = time.monotonic) -> None:
        self.max_weight = max_weight
        self.ttl = ttl
        self._clock = clock
        self._items: OrderedDict[K, tuple[float, int, V]] = OrderedDict()
        self._weight = 0

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, _, value = item
        if expires <= self._clock():
            self.pop(key)
            return None
        self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V, *, weight: int = 1, ttl: float | None = None) -> None:
        self.pop(key)
        if weight > self.max_weight or (ttl if ttl is not None else self.ttl) <= 0:
            return
        expires = self._clock() + (self.ttl if ttl is None else ttl)
        self._items[key] = (expires, weight, value)
        self._weight += weight
        while self._weight > self.max_weight:
            _, (_, w, _) = self._items.popitem(last=False)
            self._weight -= w

    def pop(self, key: K) -> V | None:
        item = self._items.pop(key, None)
        if item is None:
            return None
        self._weight -= item[1]
        return item[2]

    def clear(self) -> None:
        self._items.clear()
        self._weight = 0

    def keys(self) -> list[K]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def weight(self) -> int:
        return self._weight
