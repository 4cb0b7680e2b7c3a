"""``stores.rclonelinks`` over an in-memory object store: what the engine sees of
rclone's ``NAME.rclonelink`` objects (names, order, sync, ``--delete``) and what it
writes for a symlink; and sync's handling of a source root's own ``root/`` marker."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from datamover.engine import copy_between, sync_between
from datamover.options import TransferOptions
from datamover.posixmeta import MODE
from datamover.stores.posix import PosixStore
from datamover.stores.rclonelinks import LINK_MAX, RcloneLinks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuse"))
from memstore import MemoryStore


def _opts(tmp_path: Path, name: str) -> TransferOptions:
    return TransferOptions(
        state_dir=str(tmp_path / "state"), manifest=str(tmp_path / f"{name}.jsonl"), links=True
    )


def _bucket() -> MemoryStore:
    mem = MemoryStore()
    mem.put("p/", b"")  # the root's own marker (rclone --create-empty-src-dirs)
    mem.put("p/a", b"a")
    mem.put("p/a-b", b"sorts between a and a.rclonelink")
    mem.put("p/a.rclonelink", b"../x")
    mem.put("p/both", b"plain")
    mem.put("p/both.rclonelink", b"a")
    mem.put("p/big.rclonelink", b"x" * (LINK_MAX + 1))
    return mem


def test_a_plain_name_beside_its_rclonelink_keeps_both_apart() -> None:
    store = RcloneLinks(_bucket())
    keys = [i.key for i in store.list("p/")]
    want = ["p/", "p/a", "p/a-b", "p/a.rclonelink", "p/big", "p/both", "p/both.rclonelink"]
    assert sorted(keys) == want, keys
    assert store.read("p/a") == b"a"  # the plain object, not the link's target


def test_download_sync_and_delete(tmp_path: Path) -> None:
    mem = _bucket()
    mem.delete("p/a")  # now a.rclonelink is the only "a"
    store = RcloneLinks(mem)
    infos = list(store.list("p/"))
    keys = [i.key for i in infos]
    assert keys.count("p/a") == 1 and "p/a.rclonelink" not in keys
    link = next(i for i in infos if i.key == "p/a")
    assert link.mode is not None and stat.S_ISLNK(link.mode) and link.size == 4
    assert next(i for i in infos if i.key == "p/big").problem  # never read whole
    assert "p/both.rclonelink" in keys  # beside a plain "both": not renamed
    data, info = store.read_object("p/a", link)
    assert data == b"../x" and stat.S_ISLNK(int(info.metadata[MODE]))

    dst = tmp_path / "dst"
    dst.mkdir()
    posix = PosixStore()
    report = copy_between(store, "p/", posix, str(dst).lstrip("/") + "/", _opts(tmp_path, "c"))
    assert [p for p, _ in report.failures] == ["big"], report.failures
    assert os.readlink(dst / "a") == "../x"
    assert (dst / "both.rclonelink").read_bytes() == b"a"
    # sync down: the root's own "p/" marker is no entry (its path would be empty).
    down = sync_between(store, "p/", posix, str(dst).lstrip("/") + "/", _opts(tmp_path, "r"))
    assert [p for p, _ in down.failures] == ["big"], down.failures
    # An unchanged link is skipped; a link gone from the source: only its object goes.
    os.unlink(dst / "a")
    os.symlink("../x", dst / "a")
    os.utime(dst / "a", ns=(0, 0), follow_symlinks=False)
    up = sync_between(
        posix, str(dst).lstrip("/") + "/", store, "p/", _opts(tmp_path, "s"), delete=True
    )
    assert up.ok, up.failures
    assert mem.data("p/a.rclonelink") == b"../x" and "p/a" not in mem.objects
    os.unlink(dst / "a")
    gone = sync_between(
        posix, str(dst).lstrip("/") + "/", store, "p/", _opts(tmp_path, "d"), delete=True
    )
    assert gone.ok and len(gone.deleted) == 1, gone
    assert "p/a.rclonelink" not in mem.objects and "p/a-b" in mem.objects


def test_a_symlink_is_written_as_an_rclonelink_object() -> None:
    mem = MemoryStore()
    mem.put("k/x", b"old plain object")
    store = RcloneLinks(mem)
    meta = {MODE: str(stat.S_IFLNK | 0o777), "mtime": "1700000000"}
    info = store.put("k/x", b"target", metadata=meta)
    assert info.key == "k/x" and "k/x" not in mem.objects
    assert mem.data("k/x.rclonelink") == b"target"
    assert MODE not in mem.meta("k/x.rclonelink") and mem.meta("k/x.rclonelink")["mtime"]
    store.put("k/y", b"file", metadata={MODE: str(0o100644)})
    assert mem.data("k/y") == b"file"
    store.delete("k/x")
    assert "k/x.rclonelink" not in mem.objects


def test_sync_writing_files_over_links_removes_the_link_objects(tmp_path: Path) -> None:
    mem = MemoryStore()
    mem.put("q/small.rclonelink", b"t")
    mem.put("q/large.rclonelink", b"t")
    src = tmp_path / "src"
    src.mkdir()
    (src / "small").write_bytes(b"now a file")
    (src / "large").write_bytes(os.urandom(300_000))
    opts = _opts(tmp_path, "f").with_(multipart_threshold=100_000, part_size=64 * 1024)
    report = sync_between(PosixStore(), str(src).lstrip("/") + "/", RcloneLinks(mem), "q/", opts)
    assert report.ok, report.failures
    assert sorted(mem.objects) == ["q/large", "q/small"]
    assert len(mem.writers) == 1  # the large one went by parts
