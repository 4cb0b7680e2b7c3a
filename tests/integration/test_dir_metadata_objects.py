"""The mount's directory-metadata objects (``dir/.datamover-dirmeta``, written where a
store's ``dir/`` markers drop metadata, as SeaweedFS's do) are bookkeeping, not data:
``copy`` and ``sync`` neither carry them nor delete them, ``ls`` and ``du`` don't
show them, ``rm -r`` removes them with their directory (docs/SEMANTICS.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

import datamover
from datamover.stores import open_store
from datamover.stores.base import DIR_META_NAME
from datamover.stores.browse import disk_usage, listing, remove

from serverenv import ServerEnv

pytestmark = pytest.mark.cloud


def _plant(env: ServerEnv) -> None:
    store, _ = open_store(env.url())
    with store:
        store.put("t/" + DIR_META_NAME, b"", metadata={"mode": "16877"})
        store.put("t/d/" + DIR_META_NAME, b"", metadata={"mode": "16872"})
        store.put("t/d/f", b"data")
        store.put("t/g", b"g")


def test_copy_and_sync_leave_directory_metadata_objects_alone(
    seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    _plant(seaweed_env)
    down = tmp_path / "down"
    report = datamover.copy(seaweed_env.url("t/"), str(down))
    assert report.ok, report.failures
    assert sorted(str(p.relative_to(down)) for p in down.rglob("*")) == ["d", "d/f", "g"]

    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"data, changed")
    report = datamover.sync(str(src), seaweed_env.url("t/"), delete=True)
    assert report.ok, report.failures
    store, _ = open_store(seaweed_env.url())
    with store:
        keys = sorted(info.key for info in store.list("t/"))
        assert "t/g" not in keys  # deleted: not in the source
        assert "t/" + DIR_META_NAME in keys and "t/d/" + DIR_META_NAME in keys
        assert store.read("t/d/f") == b"data, changed"


def test_ls_and_du_hide_them_and_rm_removes_them(seaweed_env: ServerEnv) -> None:
    _plant(seaweed_env)
    store, _ = open_store(seaweed_env.url())
    with store:
        _, entries = listing(store, "t/d/")
        assert [info.key for info in entries] == ["t/d/f"]
        usage = disk_usage(store, "t")
        assert (usage.files, usage.bytes) == (2, len(b"data") + len(b"g"))
        result = remove(store, "t", recursive=True)
        assert result.failed == 0
        assert list(store.list("t/")) == []
