"""A file name with a backslash, against stores that keep ``\\`` in keys (moto, like AWS
and Ceph RGW; fake-gcs-server) and stores that turn it into ``/`` (SeaweedFS, Azurite,
like Azure Blob). Where the store rewrites it, ``a\\b`` would land on ``a/b``, over the
file of that name, with every request answered 200: such a file fails alone, named,
and nothing else is touched. Where the store keeps it, it is copied as any name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from datamover.stores import open_store

from serverenv import ServerEnv, use_server

pytestmark = pytest.mark.cloud
DM = [sys.executable, "-m", "datamover"]


def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "b").write_bytes(b"slash\n")
    (src / "a\\b").write_bytes(b"backslash\n")
    (src / "plain.txt").write_bytes(b"plain\n")
    return src


def copy(src: Path, url: str, manifest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DM, "copy", str(src), url, "--manifest", str(manifest)],
        capture_output=True,
        text=True,
    )


def statuses(manifest: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    return {r["path"]: r["status"] for r in rows if r.get("type") == "file"}


@pytest.fixture(params=["seaweed", "azurite"])
def rewriting(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    return use_server(request.getfixturevalue(request.param), monkeypatch)


@pytest.fixture(params=["moto", "gcs"])
def keeping(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    return use_server(request.getfixturevalue(request.param), monkeypatch)


def test_a_backslash_name_fails_alone_where_the_store_rewrites_it(
    rewriting: ServerEnv, tmp_path: Path
) -> None:
    manifest = tmp_path / "m.jsonl"
    p = copy(tree(tmp_path), rewriting.url("t/"), manifest)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    failed = [line for line in p.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "a\\b" in failed[0] and "rename the file" in failed[0]
    assert statuses(manifest) == {"a/b": "ok", "a\\b": "failed", "plain.txt": "ok"}
    store, _ = open_store(rewriting.url())
    try:
        assert store.read("t/a/b") == b"slash\n"  # not overwritten
        assert sorted(i.key for i in store.list("t/")) == ["t/a/b", "t/plain.txt"]
        if rewriting.scheme == "s3":  # the probe's upload was aborted
            assert list(store.list_pending_uploads("")) == []
    finally:
        store.close()


def test_a_backslash_name_is_copied_where_the_store_keeps_it(
    keeping: ServerEnv, tmp_path: Path
) -> None:
    manifest = tmp_path / "m.jsonl"
    src = tree(tmp_path)
    p = copy(src, keeping.url("t/"), manifest)
    assert p.returncode == 0, p.stderr
    assert set(statuses(manifest).values()) == {"ok"}
    store, _ = open_store(keeping.url())
    try:
        assert store.read("t/a\\b") == b"backslash\n"
        assert store.read("t/a/b") == b"slash\n"
        if keeping.scheme == "s3":
            assert list(store.list_pending_uploads("")) == []
    finally:
        store.close()
    back = tmp_path / "back"
    p = subprocess.run([*DM, "copy", keeping.url("t/"), str(back)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (back / "a\\b").read_bytes() == b"backslash\n"
    assert (back / "a" / "b").read_bytes() == b"slash\n"
