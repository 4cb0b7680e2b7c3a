"""``cleanup``: find and abort what unfinished uploads left behind, on SeaweedFS (S3),
Azurite, fake-gcs-server and a local directory. Each test leaves an orphan (a writer
with parts written, dropped without abort), then runs cleanup as a dry run, with an
age the orphan does not reach, and for real."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from datamover.checksums import PartDigests
from datamover.errors import Unsupported, UsageError
from datamover.job import cleanup
from datamover.options import KiB, MiB
from datamover.stores import open_store
from datamover.stores.base import Store
from datamover.stores.gcs import DEFAULT_TEMP_PREFIX

from serverenv import ServerEnv, use_server

pytestmark = [pytest.mark.cloud, pytest.mark.timeout(120)]


@dataclass
class Place:
    """A backend made ready for one test: ``url(key)`` for keys under it, a store on
    its namespace, the key prefix of ``url("")``, and a look behind the store's back
    at the pieces of unfinished uploads (keys they were for)."""

    name: str
    url: Callable[[str], str]
    store: Store
    root: str
    part_size: int
    leftovers: Callable[[], list[str]]


def _s3_leftovers(env: ServerEnv) -> Callable[[], list[str]]:
    def look() -> list[str]:
        client: Any = env.server.client()  # type: ignore[attr-defined]
        try:
            uploads = client.list_multipart_uploads(Bucket=env.bucket).get("Uploads", [])
        finally:
            client.close()
        return sorted(u["Key"] for u in uploads)

    return look


def _azure_leftovers(env: ServerEnv) -> Callable[[], list[str]]:
    def look() -> list[str]:
        client: Any = env.server.client()  # type: ignore[attr-defined]
        try:
            container = client.get_container_client(env.bucket)
            out = []
            for props in container.list_blobs(include=["uncommittedblobs"]):
                blob = container.get_blob_client(props.name)
                if blob.get_block_list("uncommitted")[1]:
                    out.append(props.name)
            return sorted(out)
        finally:
            client.close()

    return look


def _gcs_leftovers(env: ServerEnv) -> Callable[[], list[str]]:
    def look() -> list[str]:
        client: Any = env.server.client()  # type: ignore[attr-defined]
        try:
            blobs = client.list_blobs(env.bucket, prefix=DEFAULT_TEMP_PREFIX)
            return sorted({(b.metadata or {}).get("datamover-upload-key", "?") for b in blobs})
        finally:
            client.close()

    return look


@pytest.fixture(params=["s3", "azure", "gcs", "posix"])
def place(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Place]:
    name = request.param
    if name == "posix":
        base = tmp_path / "dst"
        base.mkdir()

        def url(key: str) -> str:
            return f"{base}/{key}"

        def look() -> list[str]:
            return sorted(
                str(p.parent / p.name[1 : p.name.index(".dmtmp-")]) for p in base.rglob("*.dmtmp-*")
            )

        store, root = open_store(url(""))
        yield Place(name, url, store, root, 64 * KiB, look)
        return
    server = request.getfixturevalue({"s3": "seaweed", "azure": "azurite"}.get(name, name))
    env = use_server(server, monkeypatch)
    look = {"s3": _s3_leftovers, "azure": _azure_leftovers, "gcs": _gcs_leftovers}[name](env)
    store, root = open_store(env.url(""))
    with store:
        yield Place(name, env.url, store, root, 5 * MiB if name == "s3" else 64 * KiB, look)


def _orphan(place: Place, key: str) -> None:
    """A three-part upload with two parts written, then dropped (no abort, no commit)."""
    size = 2 * place.part_size + 10
    writer = place.store.open_writer(place.root + key, size=size, part_size=place.part_size)
    for i in range(2):
        chunk = os.urandom(place.part_size)
        writer.write_part(i, chunk, PartDigests(chunk))


def test_cleanup_dry_run_age_filter_then_aborts(place: Place) -> None:
    keep = place.root + "c/keep.txt"
    place.store.put(keep, b"keep me")
    _orphan(place, "c/sub/orphan.bin")
    _orphan(place, "other/orphan.bin")  # outside the prefix cleaned up
    orphan, other = place.root + "c/sub/orphan.bin", place.root + "other/orphan.bin"
    if place.name == "posix":
        orphan, other = "/" + orphan, "/" + other
    assert place.leftovers() == sorted([orphan, other])

    dry = cleanup(place.url("c/"), dry_run=True)
    assert [u.key for u in dry.found] == [place.root + "c/sub/orphan.bin"]
    assert [e.action for e in dry.entries] == ["would-abort"]
    [found] = dry.found
    assert found.initiated is not None
    # S3 would need a ListParts per upload; a POSIX temp file has the full length.
    sizes = {"s3": None, "posix": 2 * place.part_size + 10}
    assert found.size == sizes.get(place.name, 2 * place.part_size)
    assert dry.entries[0].age is not None and 0 <= dry.entries[0].age < 600
    assert place.leftovers() == sorted([orphan, other])  # nothing removed

    young = cleanup(place.url("c/"), older_than=3600)
    assert [e.action for e in young.entries] == ["skipped"]
    assert "not older" in (young.entries[0].reason or "")
    assert place.leftovers() == sorted([orphan, other])

    done = cleanup(place.url("c/"))
    assert done.ok and [e.action for e in done.entries] == ["aborted"]
    assert place.leftovers() == [other]
    assert place.store.read(keep) == b"keep me"
    assert [i.key for i in place.store.list(place.root + "c/") if not i.is_dir] == [keep]

    # Idempotent: the upload is gone, aborting it again is fine, a rerun finds nothing.
    place.store.abort_pending_upload(found)
    assert cleanup(place.url("c/")).entries == []
    # A prefix that is part of a name matches as names do.
    assert [u.key for u in cleanup(place.url("oth"), dry_run=True).found] == [
        place.root + "other/orphan.bin"
    ]


def test_cleanup_of_everything_and_of_nothing(place: Place) -> None:
    assert cleanup(place.url(""), dry_run=True).entries == []
    _orphan(place, "a.bin")
    report = cleanup(place.url(""))
    assert [(e.upload.key, e.action) for e in report.entries] == [(place.root + "a.bin", "aborted")]
    assert place.leftovers() == []


def test_azure_uncommitted_blocks_beside_a_committed_blob_are_reported_and_kept(
    azurite: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = use_server(azurite, monkeypatch)
    store, _ = open_store(env.url(""))
    with store:
        store.put("c/blob", b"committed")
        writer = store.open_writer("c/blob", size=10, part_size=10)
        writer.write_part(0, b"0123456789", PartDigests(b"0123456789"))
        report = cleanup(env.url("c/"))
        [entry] = report.entries
        assert entry.action == "skipped" and "committed blob" in (entry.reason or "")
        assert entry.upload.size == 10 and entry.upload.initiated is None
        assert store.read("c/blob") == b"committed"
        assert _azure_leftovers(env)() == ["c/blob"]
        # Asked directly, the store refuses rather than touch the committed blob.
        with pytest.raises(Unsupported, match="committed blob"):
            store.abort_pending_upload(entry.upload)
        assert store.read("c/blob") == b"committed"


def test_cleanup_where_unsupported_is_a_usage_error(tmp_path: Path) -> None:
    from datamover.engine.cleanup import cleanup_store
    from datamover.stores.posix import PosixStore

    class Plain(PosixStore):
        list_pending_uploads = Store.list_pending_uploads  # type: ignore[assignment]

    with pytest.raises(UsageError, match="not supported"):
        cleanup_store(Plain(), str(tmp_path).lstrip("/"))
    with pytest.raises(UsageError):
        cleanup(str(tmp_path), older_than=-1)


def test_cleanup_command_line(seaweed_env: ServerEnv) -> None:
    import subprocess
    import sys

    store, _ = open_store(seaweed_env.url())
    writer = store.open_writer("cli/orphan.bin", size=6 * MiB, part_size=5 * MiB)
    writer.write_part(0, bytes(5 * MiB), PartDigests(bytes(5 * MiB)))
    dm = [sys.executable, "-m", "datamover", "cleanup", seaweed_env.url("cli/")]
    listed = subprocess.run([*dm, "--dry-run"], capture_output=True, text=True)
    # Each upload is named by its URL, so a line can be acted on as printed.
    assert listed.returncode == 0, listed.stderr
    assert f"would abort  {seaweed_env.url('cli/orphan.bin')}  (" in listed.stdout
    young = subprocess.run([*dm, "--older-than", "1h"], capture_output=True, text=True)
    assert "1 skipped" in young.stdout
    done = subprocess.run(dm, capture_output=True, text=True)
    assert done.returncode == 0 and "1 aborted" in done.stdout
    assert not list(store.list_pending_uploads("cli/"))
