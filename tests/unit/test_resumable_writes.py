"""Which stores can reopen another process's upload is declared (``Features.resumable_writes``),
not guessed from which methods a class overrides: a wrapper (``.rclonelink`` links) over a
store that can't must not look as if it could. And a Dask worker's destination names its
temp pieces from the job, as the client's does, so a later run finds what a killed worker left."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from datamover.checksums import PartDigests
from datamover.engine.dask.worker import StoreSpec, _store
from datamover.stores import StoreSettings
from datamover.stores.azure.store import AzureStore
from datamover.stores.base import Store
from datamover.stores.fsspec import FsspecStore
from datamover.stores.gcs.store import GCSStore
from datamover.stores.posix import PosixStore
from datamover.stores.posix.paths import job_temp_name
from datamover.stores.rclonelinks import RcloneLinks
from datamover.stores.s3.store import S3Store


@pytest.mark.parametrize(
    "cls", [S3Store, AzureStore, GCSStore, PosixStore, FsspecStore], ids=lambda c: c.__name__
)
def test_a_store_declares_resumable_writes_exactly_when_it_reopens_uploads(cls: type) -> None:
    overrides = cls.resume_writer is not Store.resume_writer
    assert cls.features.resumable_writes == overrides


def test_the_links_wrapper_reports_what_the_store_beneath_it_can() -> None:
    fs = FsspecStore("memory", "bucket")
    assert not RcloneLinks(fs).features.resumable_writes
    assert RcloneLinks(PosixStore()).features.resumable_writes


def test_a_dask_workers_destination_names_temp_files_from_the_job(tmp_path: Path) -> None:
    spec = StoreSpec.from_url(f"file://{tmp_path}", StoreSettings())
    key = f"{tmp_path}/d/f.bin".lstrip("/")
    (tmp_path / "d").mkdir()
    for job in ("job-1", "job-2"):
        store = _store(spec, job)
        assert _store(spec, job) is store  # opened once per job in a worker
        writer = store.open_writer(key, size=4, part_size=4)
        writer.write_part(0, b"abcd", PartDigests(b"abcd"))
        # Not committed, as when the worker is killed here: the piece has the job's name.
        assert job_temp_name("f.bin", job, key) in os.listdir(tmp_path / "d")
        writer.abort()
    assert os.listdir(tmp_path / "d") == []
    assert _store(spec) is not _store(spec, "job-1")
