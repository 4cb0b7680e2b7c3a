"""sync's comparison of a file present on both sides: a failure to compare one file
makes it a file to copy (its copy then reports it by name), never the whole run's end;
a fatal error (credentials, a missing bucket) still stops the run."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest

from datamover.engine.sync import SyncPlanner
from datamover.errors import AuthError, DatamoverError, SourceChanged
from datamover.stores.base import Buffer, ChunkWriter, Features, ObjectInfo, Store


class _Unreadable(Store):
    """A store that lists what a test says and fails every read with ``error``."""

    scheme = "mem"
    features = Features(listing_metadata=True)

    def __init__(self, entries: list[ObjectInfo], error: DatamoverError) -> None:
        self.entries = entries
        self.error = error

    def url(self, key: str = "") -> str:
        return f"mem://{key}"

    def stat(self, key: str) -> ObjectInfo:
        raise NotImplementedError

    def list(self, prefix: str, *, recursive: bool = True) -> Iterator[ObjectInfo]:
        return iter(self.entries)

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        raise self.error

    def readinto(
        self, key: str, offset: int, buf: memoryview, *, expect: ObjectInfo | None = None
    ) -> int:
        raise self.error

    def read_object(
        self, key: str, info: ObjectInfo | None = None
    ) -> tuple[bytes | bytearray, ObjectInfo]:
        raise self.error

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


def _planner(error: DatamoverError) -> SyncPlanner:
    meta = {"mode": "33188"}
    src = _Unreadable([ObjectInfo(key=f"s/{k}", size=5, metadata=meta) for k in "ab"], error)
    dst = _Unreadable([ObjectInfo(key=f"d/{k}", size=5, metadata=meta) for k in "ab"], error)
    return SyncPlanner(src, "s/", dst, "d/", algorithm="sha256", checksum=True, delete=False)


def test_a_file_that_cant_be_compared_is_copied_not_the_run_stopped() -> None:
    planner = _planner(SourceChanged("mem://s/a: changed", key="s/a"))
    assert [job.rel for job in planner.jobs()] == ["a", "b"]
    assert planner.plan.skipped == 0


def test_a_fatal_error_while_comparing_still_stops_the_run() -> None:
    planner = _planner(AuthError("mem: access denied"))
    with pytest.raises(AuthError):
        list(planner.jobs())
