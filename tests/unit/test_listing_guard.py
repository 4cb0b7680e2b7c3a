"""``PageGuard`` and ``Recurrence`` (``datamover/stores/bounds.py``) on their own, and
what the sync merge-join does with a listing that names a key twice."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping

import pytest

from datamover.engine.sync import SyncPlanner
from datamover.errors import StoreError
from datamover.stores.base import Buffer, ChunkWriter, Features, ObjectInfo, Store
from datamover.stores.bounds import MAX_EMPTY_PAGES, RECENT, PageGuard, Recurrence


def _turns_until_seen(sequence: Iterator[bytes], limit: int) -> int | None:
    seen = Recurrence()
    for n, value in enumerate(itertools.islice(sequence, limit)):
        if seen.seen(value):
            return n
    return None


@pytest.mark.parametrize("cycle", [1, 2, 7, RECENT - 1, RECENT + 1, 5 * RECENT])
@pytest.mark.parametrize("lead", [0, 3, 2 * RECENT])
def test_every_cycle_is_caught_within_a_few_turns(cycle: int, lead: int) -> None:
    """A sequence that runs ``lead`` values and then repeats a cycle of ``cycle``: an
    exact repeat is caught at once for short cycles, within a few turns for long ones."""

    def sequence() -> Iterator[bytes]:
        yield from (f"lead{i}".encode() for i in range(lead))
        for i in itertools.count():
            yield f"c{i % cycle}".encode()

    caught = _turns_until_seen(sequence(), 10 * (lead + cycle) + 10)
    assert caught is not None
    if cycle <= RECENT:
        assert caught == lead + cycle
    else:
        assert caught <= 4 * (lead + cycle)


def test_no_false_alarm_on_a_long_listing() -> None:
    assert _turns_until_seen((f"t{i}".encode() for i in range(200_000)), 200_000) is None


def test_memory_does_not_grow_with_the_listing() -> None:
    seen = Recurrence()
    for i in range(20 * RECENT):
        seen.seen(f"t{i}".encode())
    assert len(seen._recent) == RECENT and len(seen._set) == RECENT


def _guard(**kwargs: object) -> PageGuard:
    return PageGuard("s3://b/p/", prefix="p/", **kwargs)  # type: ignore[arg-type]


def test_a_correct_listing_passes() -> None:
    guard = _guard(page_size=3)
    guard.page(3, "t1", "p/a", "p/c")
    guard.page(0, "t2")  # an empty page now and then is fine
    guard.page(2, "t3", "p/d", "p/e")
    guard.page(1, None, "p/f", "p/f")


@pytest.mark.parametrize(
    ("pages", "fault"),
    [
        ([(1, "A", "p/a"), (1, "B", "p/b"), (1, "A", "p/c")], "repeated the continuation token"),
        ([(2, "A", "p/a"), (2, "B", "p/a")], "repeated a page"),
        ([(4, "A", "p/a")], "4 entries in a page of at most 3"),
        ([(1, "A", "q/a")], "outside the prefix"),
    ],
)
def test_faults_are_named(pages: list[tuple[int, str, str]], fault: str) -> None:
    guard = _guard(page_size=3)
    with pytest.raises(StoreError) as caught:
        for count, token, key in pages:
            guard.page(count, token, key, key)
    assert fault in str(caught.value)
    assert "s3://b/p/" in str(caught.value) and "server bug" in str(caught.value)


def test_empty_pages_are_bounded_in_a_row_not_in_total() -> None:
    guard = _guard()
    tokens = (f"t{i}" for i in itertools.count())
    for round_ in range(3):
        for _ in range(MAX_EMPTY_PAGES):
            guard.page(0, next(tokens))
        guard.page(1, next(tokens), f"p/{round_}", f"p/{round_}")
    for _ in range(MAX_EMPTY_PAGES):
        guard.page(0, next(tokens))
    with pytest.raises(StoreError, match="empty pages in a row"):
        guard.page(0, next(tokens))


# -- sync: a key listed twice -----------------------------------------------------------


class _Listed(Store):
    """A store that only lists (what a test says it holds)."""

    scheme = "mem"
    features = Features(listing_metadata=True)

    def __init__(self, entries: list[ObjectInfo]) -> None:
        self.entries = entries

    def url(self, key: str = "") -> str:
        return f"mem://{key}"

    def stat(self, key: str) -> ObjectInfo:
        raise NotImplementedError

    def list(self, prefix: str, *, recursive: bool = True) -> Iterator[ObjectInfo]:
        return iter(self.entries)

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        raise NotImplementedError

    def put(
        self, key: str, data: Buffer, *, metadata: Mapping[str, str] | None = None, digests=None
    ) -> ObjectInfo:  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def open_writer(
        self, key: str, *, size: int, part_size: int, metadata: Mapping[str, str] | None = None
    ) -> ChunkWriter:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError


def test_a_key_listed_twice_makes_the_listing_out_of_order() -> None:
    """The destination names ``b`` twice (a server repeating itself): the second ``b``
    has no source partner and would be taken for a destination-only file, i.e.
    deleted by ``sync --delete`` although the source has it. Counted as out of order,
    which makes the run refuse every deletion."""
    src = _Listed([ObjectInfo(key=f"s/{k}", size=1) for k in "abc"])
    dst = _Listed([ObjectInfo(key=f"d/{k}", size=2) for k in "abbc"])
    planner = SyncPlanner(src, "s/", dst, "d/", algorithm="sha256", checksum=False, delete=True)
    list(planner.jobs())
    assert planner.plan.to_delete == ["d/b"]  # what the merge alone concludes
    assert planner.plan.out_of_order  # ... which is why nothing will be deleted
