"""PosixStore's per-file costs (issue #9) without weaker promises: directories made
once, temp names without randomness per file, a directory fsync after each rename
still, chown only when it changes something, whole small files without ftruncate,
reads without an lstat first."""

from __future__ import annotations

import itertools
import os
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import datamover.stores.posix.durability as posix_durability
import datamover.stores.posix.paths as posix_paths
from datamover.checksums import PartDigests
from datamover.errors import StoreError, UnsafePath
from datamover.stores.posix import TEMP_MARK, PosixStore, PosixWriter


def k(path: Path) -> str:
    return str(path).lstrip("/")


def recording(calls: list[Any], real: Callable[..., Any]) -> Callable[..., Any]:
    """``real``, noting each call's first two arguments in ``calls``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[:2] if len(args) > 1 else args[0])
        return real(*args, **kwargs)

    return wrapper


def test_put_returns_the_committed_files_attributes(tmp_path: Path) -> None:
    store = PosixStore()
    meta = {"mode": str(0o100640), "mtime": "1700000000.123456789"}
    meta |= {"uid": str(os.getuid()), "gid": str(os.getgid())}
    info = store.put(k(tmp_path / "d" / "f"), b"x" * 4096, metadata=meta)
    st = os.lstat(tmp_path / "d" / "f")
    assert (info.size, info.mode, info.mtime) == (4096, st.st_mode, st.st_mtime_ns / 1e9)
    assert st.st_mode == 0o100640 and st.st_mtime_ns == 1700000000123456789
    assert info.metadata["uid"] == str(st.st_uid) and info.metadata["gid"] == str(st.st_gid)
    assert info == store.stat(k(tmp_path / "d" / "f"))
    assert os.listdir(tmp_path / "d") == ["f"]


def test_no_chown_when_the_new_file_already_has_the_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(os, "fchown", recording(calls, os.fchown))
    meta = {"uid": str(os.geteuid()), "gid": str(os.getegid()), "mode": str(0o100644)}
    PosixStore().put(k(tmp_path / "f"), b"data", metadata=meta)
    assert calls == []
    assert (tmp_path / "f").stat().st_uid == os.geteuid()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another owner needs root")
def test_chown_to_another_owner_keeps_setuid_bits_only_when_asked(tmp_path: Path) -> None:
    meta = {"uid": "12345", "gid": "23456", "mode": str(0o106750), "mtime": "1700000000.5"}
    info = PosixStore(preserve_setid=True).put(k(tmp_path / "f"), b"#!/bin/true\n", metadata=meta)
    st = (tmp_path / "f").stat()
    assert (st.st_uid, st.st_gid, st.st_mode) == (12345, 23456, 0o106750)
    assert st.st_mtime_ns == 1_700_000_000_500_000_000
    assert (info.metadata["uid"], info.metadata["gid"], info.mode) == ("12345", "23456", st.st_mode)
    # By default (metadata is untrusted) set-ID bits are dropped, the owner still set.
    PosixStore().put(k(tmp_path / "g"), b"#!/bin/true\n", metadata=meta)
    st = (tmp_path / "g").stat()
    assert (st.st_uid, st.st_gid, st.st_mode) == (12345, 23456, 0o100750)


@pytest.mark.parametrize("openat2", [True, False])
def test_directories_are_opened_once_and_again_when_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, openat2: bool
) -> None:
    made: list[Any] = []
    monkeypatch.setattr(os, "mkdir", recording(made, os.mkdir))
    opened: list[Any] = []
    real_open = os.open

    def counting_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, *args, **kwargs)
        if flags & os.O_DIRECTORY and path != ".":
            opened.append(path)
        return fd

    monkeypatch.setattr(os, "open", counting_open)
    store = PosixStore(use_openat2=openat2)
    store.confine(k(tmp_path) + "/")
    for i in range(20):
        store.put(k(tmp_path / "a" / "b" / f"f{i}"), b"%d" % i)
    assert made == [("a", 0o777), ("b", 0o777)]  # each made once, relative to its parent
    assert opened.count("b") == 1  # and opened once (by name, beneath its parent)
    # Removed behind the store's back: the failed create makes it again.
    for p in (tmp_path / "a" / "b").iterdir():
        p.unlink()
    (tmp_path / "a" / "b").rmdir()
    (tmp_path / "a").rmdir()
    store.put(k(tmp_path / "a" / "b" / "again"), b"x")
    assert (tmp_path / "a" / "b" / "again").read_bytes() == b"x"
    # Replaced by a file, or by a symlink: refused, nothing written anywhere.
    for p in (tmp_path / "a" / "b").iterdir():
        p.unlink()
    (tmp_path / "a" / "b").rmdir()
    (tmp_path / "a" / "b").write_bytes(b"file")
    with pytest.raises(UnsafePath, match="both a file and a prefix"):
        store.put(k(tmp_path / "a" / "b" / "c"), b"x")
    w = None
    with pytest.raises(UnsafePath):
        w = store.open_writer(k(tmp_path / "a" / "b" / "d"), size=1, part_size=1)
    assert w is None and os.listdir(tmp_path / "a") == ["b"]
    (tmp_path / "a" / "b").unlink()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "a" / "b").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePath, match="symlink"):
        store.put(k(tmp_path / "a" / "b" / "c"), b"x")
    assert os.listdir(tmp_path / "elsewhere") == []
    store.close()


def test_temp_names_skip_a_clash_and_need_no_randomness_per_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PosixStore()
    store.put(k(tmp_path / "first"), b"0")  # the directory is known from here on
    monkeypatch.setattr(posix_paths, "_temp_counter", itertools.count(1000))
    leftover = tmp_path / f".f{TEMP_MARK}{posix_paths._temp_prefix}{1000:x}"
    leftover.write_bytes(b"somebody else's")
    monkeypatch.setattr("secrets.token_hex", lambda n=None: pytest.fail("random per file"))
    monkeypatch.setattr(os, "urandom", lambda n: pytest.fail("random per file"))
    store.put(k(tmp_path / "f"), b"mine")
    assert (tmp_path / "f").read_bytes() == b"mine"
    assert leftover.read_bytes() == b"somebody else's"  # never opened, never removed
    w = store.open_writer(k(tmp_path / "g"), size=3, part_size=3)
    assert isinstance(w, PosixWriter)
    assert Path(w.state()["temp_path"]).name == f".g{TEMP_MARK}{posix_paths._temp_prefix}{1002:x}"
    w.abort()


def test_a_forked_child_draws_its_own_temp_prefix() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(w, posix_paths._temp_prefix.encode())
        os._exit(0)
    os.close(w)
    child = os.read(r, 100).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert child and child != posix_paths._temp_prefix


def test_whole_file_put_writes_once_and_keeps_a_trailing_hole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    truncated: list[Any] = []
    monkeypatch.setattr(os, "ftruncate", recording(truncated, os.ftruncate))
    store = PosixStore()
    store.put(k(tmp_path / "small"), b"s" * 4096)
    store.put(k(tmp_path / "empty"), b"")
    assert truncated == []
    data = os.urandom(64 * 1024) + bytes(256 * 1024)  # data, then a 256 KiB hole
    store.put(k(tmp_path / "sparse"), data)
    assert [n for _, n in truncated] == [len(data)]
    assert (tmp_path / "sparse").read_bytes() == data
    assert (tmp_path / "empty").read_bytes() == b""
    st = (tmp_path / "sparse").stat()
    if st.st_blocks * 512 >= len(data):
        pytest.skip("this filesystem doesn't keep holes")
    # The multipart writer still pre-sizes (a resume checks the temp file's size).
    w = store.open_writer(k(tmp_path / "big"), size=10, part_size=5)
    assert isinstance(w, PosixWriter)
    assert os.stat(w.state()["temp_path"]).st_size == 10
    w.abort()


def test_a_zero_part_at_the_end_of_a_writer_still_sizes_the_file(tmp_path: Path) -> None:
    size = 3 * 64 * 1024
    w = PosixWriter(k(tmp_path / "f"), size, 64 * 1024, presize=False)
    for i, part in enumerate([os.urandom(64 * 1024), bytes(64 * 1024), bytes(64 * 1024)]):
        w.write_part(i, part, PartDigests(part))
    w.commit({})
    assert (tmp_path / "f").stat().st_size == size


class _Syncs:
    """Records which names each directory fsync could cover: those present when it
    started. A put may return only once a covering fsync has finished."""

    def __init__(self, delay: float, fail_first: int = 0) -> None:
        self.delay = delay
        self.fail_first = fail_first
        self.lock = threading.Lock()
        self.durable: set[str] = set()
        self.count = 0

    def __call__(self, path: str) -> None:
        with self.lock:
            self.count += 1
            fail = self.count <= self.fail_first
        covered = set(os.listdir(path))
        time.sleep(self.delay)
        if fail:
            raise OSError(5, "Input/output error")
        with self.lock:
            self.durable |= covered


def test_each_put_returns_after_a_directory_fsync_that_started_after_its_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = _Syncs(delay=0.01)
    monkeypatch.setattr(posix_durability, "_fsync_dir", syncs)
    store = PosixStore()
    store.put(k(tmp_path / "d" / "first"), b"")

    def put(i: int) -> None:
        store.put(k(tmp_path / "d" / f"f{i}"), b"%d" % i)
        with syncs.lock:
            assert f"f{i}" in syncs.durable  # a sync that began after the rename ended

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(200)))
    assert len(os.listdir(tmp_path / "d")) == 201


def test_a_failed_directory_fsync_fails_only_the_files_it_was_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = _Syncs(delay=0.01, fail_first=1)
    monkeypatch.setattr(posix_durability, "_fsync_dir", syncs)
    store = PosixStore()
    (tmp_path / "d").mkdir()

    def put(i: int) -> str:
        try:
            store.put(k(tmp_path / "d" / f"f{i}"), b"x")
        except StoreError:
            return "failed"
        with syncs.lock:
            return "ok" if f"f{i}" in syncs.durable else "not durable"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(put, range(40)))
    assert results.count("failed") == 1 and results.count("ok") == 39


def test_symlinks_and_hard_links_still_commit_through_temp_names(tmp_path: Path) -> None:
    store = PosixStore()
    store.confine(k(tmp_path) + "/")  # a hard link is made only within a confined tree
    store.put(k(tmp_path / "t" / "target"), b"body")
    link_meta = {"mode": str(stat.S_IFLNK | 0o777), "mtime": "1700000000.0"}
    store.put(k(tmp_path / "t" / "sym"), b"target", metadata=link_meta)
    store.put(k(tmp_path / "t" / "sym"), b"elsewhere", metadata=link_meta)  # replaces
    hard = {"datamover-hardlink": k(tmp_path / "t" / "target")}
    store.put(k(tmp_path / "t" / "hard"), b"", metadata=hard)
    assert os.readlink(tmp_path / "t" / "sym") == "elsewhere"
    assert (tmp_path / "t" / "hard").stat().st_ino == (tmp_path / "t" / "target").stat().st_ino
    assert sorted(os.listdir(tmp_path / "t")) == ["hard", "sym", "target"]


def test_read_object_needs_no_lstat_for_files_and_still_tells_links_and_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_bytes(b"abc")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "link").symlink_to("file")
    (tmp_path / "dirlink").symlink_to("dir")
    store = PosixStore()
    lstats: list[Any] = []
    monkeypatch.setattr(os, "lstat", recording(lstats, os.lstat))
    data, info = store.read_object(k(tmp_path / "file"))
    assert (bytes(data), info.size) == (b"abc", 3)
    data, info = store.read_object(k(tmp_path / "empty"))
    assert (bytes(data), info.size) == (b"", 0)
    assert lstats == []
    data, info = store.read_object(k(tmp_path / "link"))
    assert bytes(data) == b"file" and info.mode is not None and stat.S_ISLNK(info.mode)
    data, info = store.read_object(k(tmp_path / "dirlink"))
    assert bytes(data) == b"dir" and info.mode is not None and stat.S_ISLNK(info.mode)
    data, info = store.read_object(k(tmp_path / "dir"))
    assert data == b"" and info.is_dir and info.key.endswith("dir/")
    data, info = PosixStore(follow_symlinks=True).read_object(k(tmp_path / "link"))
    assert bytes(data) == b"abc" and info.mode is not None and stat.S_ISREG(info.mode)


def test_child_key_reads_only_the_text_and_the_write_refuses_symlinked_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "sneaky").symlink_to(tmp_path / "out")
    store = PosixStore(case_insensitive=False)
    root = k(tmp_path) + "/"
    lstats: list[Any] = []
    monkeypatch.setattr(os, "lstat", recording(lstats, os.lstat))
    assert store.child_key(root, "real/a") == root + "real/a"
    assert store.child_key(root, "sneaky/a") == root + "sneaky/a"
    assert lstats == []  # planning costs no system call per key
    store.put(root + "real/a", b"in")
    for key in ("sneaky/a", "sneaky/deeper/b", "sneaky/"):
        with pytest.raises(UnsafePath, match="symlink"):
            store.put(root + key, b"out")
    assert os.listdir(tmp_path / "out") == []
    store.close()
