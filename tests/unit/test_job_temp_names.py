"""Job-derived temp names (#16): the same name in every run of a job, what stands under
it removed (a symlink never followed), a directory there passed over; and the job lock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from datamover.checksums import PartDigests
from datamover.journal.lock import JobBusy, JobLock, is_live
from datamover.stores.posix import PosixStore
from datamover.stores.posix.paths import NAME_MAX, is_temp_for, job_temp_name


def _write(store: PosixStore, key: str, data: bytes) -> str:
    writer = store.open_writer(key, size=len(data), part_size=max(1, len(data)))
    temp = os.path.basename(writer.temp_path)  # type: ignore[attr-defined]
    writer.write_part(0, data, PartDigests(data))
    writer.commit({})
    return temp


def test_job_temp_name_is_stable_per_job_and_key_and_looks_like_ours() -> None:
    a = job_temp_name("f.bin", "job1", "d/f.bin")
    assert a == job_temp_name("f.bin", "job1", "d/f.bin")
    assert a != job_temp_name("f.bin", "job2", "d/f.bin")
    assert a != job_temp_name("f.bin", "job1", "e/f.bin")
    assert is_temp_for(a, "f.bin")
    long = "x" * 250
    t = job_temp_name(long, "job1", long)
    assert len(os.fsencode(t)) <= NAME_MAX and is_temp_for(t, long)


def test_leftover_and_planted_symlink_under_the_job_temp_name(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    store = PosixStore()
    store.use_job("job-A")
    key = f"{root}/sub/f.bin".lstrip("/")
    name = job_temp_name("f.bin", "job-A", key)
    (root / "sub").mkdir()
    (root / "sub" / name).symlink_to(victim)  # planted where the job's temp goes
    assert _write(store, key, b"new bytes") == name
    assert victim.read_bytes() == b"precious"
    assert (root / "sub" / "f.bin").read_bytes() == b"new bytes"
    assert sorted(os.listdir(root / "sub")) == ["f.bin"]
    (root / "sub" / name).write_bytes(b"a killed run's leftover")
    assert _write(store, key, b"again") == name
    assert sorted(os.listdir(root / "sub")) == ["f.bin"]
    (root / "sub" / name).mkdir()  # can't be unlinked: fresh names instead
    other = _write(store, key, b"third")
    assert other != name and is_temp_for(other, "f.bin")
    assert (root / "sub" / "f.bin").read_bytes() == b"third"
    store.close()


def test_job_lock_refuses_a_second_holder_and_names_the_job(tmp_path: Path) -> None:
    first = JobLock(str(tmp_path), "ab" * 16)
    first.acquire()
    first.holds("20261206T000000Z-12345678")
    assert is_live(str(tmp_path), "ab" * 16)
    second = JobLock(str(tmp_path), "ab" * 16)
    with pytest.raises(JobBusy, match=r"job 20261206T000000Z-12345678 \(pid \d+\) is already"):
        second.acquire()
    # The holder is this very process (two threads of a library caller, a notebook's
    # cells): the message says so instead of sending them looking for a process.
    with pytest.raises(JobBusy, match="in another thread of this process"):
        second.acquire()
    first.release()
    assert not is_live(str(tmp_path), "ab" * 16)
    second.acquire()
    second.release()
    with pytest.raises(Exception, match="not one datamover made"):
        JobLock(str(tmp_path), "../x")
