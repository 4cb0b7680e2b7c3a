"""``PosixFsOps.open_file``, what each handle of a mount over a POSIX tree holds
(issue #20.4): the file's descriptor, opened with ``O_NOFOLLOW`` in its directory's
descriptor, and that directory, held so that the store's writes of the key land
there until ``close``, whatever is renamed or swapped for a symlink meanwhile."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from datamover.errors import SourceChanged, UnsafePath
from datamover.stores.fsops import FsOps, for_store
from datamover.stores.posix import PosixStore
from datamover.stores.posix.beneath import OPENAT2
from datamover.stores.posix.fsops import PosixFsOps


def k(path: Path) -> str:
    return str(path).lstrip("/")


@pytest.fixture(params=["openat2", "walk"])
def ops(request: pytest.FixtureRequest, tmp_path: Path) -> PosixFsOps:
    if request.param == "openat2":
        fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
        try:
            if not OPENAT2.usable(fd):
                pytest.skip("this kernel has no openat2")
        finally:
            os.close(fd)
    (tmp_path / "root" / "d").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(b"secret")
    store = PosixStore(use_openat2=request.param == "openat2", dir_cache=0)
    store.confine(k(tmp_path / "root") + "/")
    fsops = for_store(store)
    assert isinstance(fsops, PosixFsOps) and fsops.pins_files
    return fsops


def test_object_stores_pin_nothing() -> None:
    class Dummy:
        features = PosixStore.features

    assert FsOps(Dummy()).open_file("k", existing=True) is None  # type: ignore[arg-type]


def test_reads_go_to_the_file_opened_whatever_is_at_its_name_now(
    ops: PosixFsOps, tmp_path: Path
) -> None:
    f = tmp_path / "root" / "d" / "f"
    f.write_bytes(b"the file opened")
    handle = ops.open_file(k(f), existing=True)
    try:
        f.unlink()
        f.symlink_to(tmp_path / "outside" / "secret")
        assert handle.readable and handle.size() == 15
        assert handle.read(4, 100) == b"file opened"
    finally:
        handle.close()


def test_a_symlink_fifo_or_symlinked_parent_at_open_is_refused(
    ops: PosixFsOps, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "ln").symlink_to(tmp_path / "outside" / "secret")
    with pytest.raises(SourceChanged):
        ops.open_file(k(root / "ln"), existing=True)
    os.mkfifo(root / "fifo")
    with pytest.raises(SourceChanged):  # and it does not hang
        ops.open_file(k(root / "fifo"), existing=True)
    (root / "up").symlink_to(tmp_path / "outside")
    with pytest.raises(UnsafePath):
        ops.open_file(k(root / "up" / "secret"), existing=True)
    with pytest.raises(UnsafePath):
        ops.open_file(k(root / "up" / "new"), existing=False)
    assert sorted(os.listdir(tmp_path / "outside")) == ["secret"]


def test_writes_of_the_key_land_in_the_directory_held_since_open(
    ops: PosixFsOps, tmp_path: Path
) -> None:
    """No directory cache (``dir_cache=0``): only the hold keeps ``d``'s descriptor,
    and the store's write of the key while it is held goes there, not through the
    symlink now at ``d``'s name; after ``close`` the name is resolved again (and a
    symlink refused)."""
    d = tmp_path / "root" / "d"
    key = k(d / "new")
    handle = ops.open_file(key, existing=False)
    try:
        assert not handle.readable
        d.rename(tmp_path / "root" / "d.old")
        d.symlink_to(tmp_path / "outside")
        ops.store.put(key, b"planted")
    finally:
        handle.close()
    assert (tmp_path / "root" / "d.old" / "new").read_bytes() == b"planted"
    assert sorted(os.listdir(tmp_path / "outside")) == ["secret"]
    with pytest.raises(UnsafePath):
        ops.store.put(key, b"again")
    assert sorted(os.listdir(tmp_path / "outside")) == ["secret"]
