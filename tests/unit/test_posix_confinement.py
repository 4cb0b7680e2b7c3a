"""The POSIX store never writes, links, chmods, reads or deletes outside the tree it
was confined to (``Store.confine``), whatever a key, its metadata or a concurrent change
on disk says; and ``Beneath``, the resolver it (and next the mount) works through,
keeps its contract with and without ``openat2``."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from datamover.checksums import PartDigests
from datamover.errors import InvalidMetadata, NotFound, SourceChanged, StoreError, UnsafePath
from datamover.stores.fsops import for_store
from datamover.stores.posix import (
    LUSTRE_MAGIC,
    TEMP_MARK,
    Beneath,
    NotBeneath,
    PosixStore,
    PosixWriter,
)
from datamover.stores.posix.beneath import OPENAT2

LINK = str(stat.S_IFLNK | 0o777)


def k(path: Path) -> str:
    return str(path).lstrip("/")


@pytest.fixture(params=["openat2", "walk"])
def use_openat2(request: pytest.FixtureRequest) -> bool:
    if request.param == "openat2":
        fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
        try:
            if not OPENAT2.usable(fd):
                pytest.skip("this kernel has no openat2")
        finally:
            os.close(fd)
    return bool(request.param == "openat2")


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    (tmp_path / "dest").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(b"outside bytes")
    os.chmod(tmp_path / "outside", 0o755)
    return tmp_path / "dest"


@pytest.fixture
def store(dest: Path, use_openat2: bool) -> Any:
    s = PosixStore(use_openat2=use_openat2)
    s.confine(k(dest) + "/")
    yield s
    s.close()


def outside_untouched(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    assert sorted(os.listdir(outside)) == ["secret"]
    assert (outside / "secret").read_bytes() == b"outside bytes"
    st = outside.stat()
    assert stat.S_IMODE(st.st_mode) == 0o755 and (outside / "secret").stat().st_nlink == 1


# -- writes ------------------------------------------------------------------------------


def test_no_write_of_any_kind_goes_through_a_symlinked_directory(
    store: PosixStore, dest: Path, tmp_path: Path
) -> None:
    (dest / "s").symlink_to(tmp_path / "outside")
    (dest / "real").mkdir()
    (dest / "real" / "deep").symlink_to(tmp_path / "outside")
    root = k(dest) + "/"
    meta = {"mode": str(0o100777), "mtime": "1.0"}
    attempts = {
        "file": lambda key: store.put(key, b"x", metadata=meta),
        "dir": lambda key: store.put(key + "/", b"", metadata={"mode": str(0o40777)}),
        "symlink": lambda key: store.put(key, b"/etc", metadata={"mode": LINK}),
        "multipart": lambda key: store.open_writer(key, size=4, part_size=2),
        "hardlink": lambda key: store.put(key, b"", metadata={"datamover-hardlink": root + "f"}),
    }
    (dest / "f").write_bytes(b"target")
    for kind, attempt in attempts.items():
        for bad in ("s/x", "s/new/x", "real/deep/x"):
            with pytest.raises(UnsafePath, match="symlink"):
                attempt(root + bad)
            assert kind  # (which kind failed shows in the traceback)
    # The symlink at the very name is replaced (files) or refused (directories).
    with pytest.raises(UnsafePath, match="symlink"):
        store.put(root + "s/", b"", metadata={"mode": str(0o40777), "mtime": "1.0"})
    store.put(root + "s", b"a file now", metadata=meta)
    assert (dest / "s").read_bytes() == b"a file now"
    outside_untouched(tmp_path)


def test_make_dir_on_a_symlink_never_chmods_its_target(
    store: PosixStore, dest: Path, tmp_path: Path
) -> None:
    """put("d/") with d -> outside: the mkdir finds a link and refuses; the target's
    mode and mtime stay (it used to be chmodded and utimed through the link)."""
    (dest / "d").symlink_to(tmp_path / "outside")
    with pytest.raises(UnsafePath):
        store.put(k(dest / "d") + "/", b"", metadata={"mode": str(0o40777), "mtime": "5.0"})
    fsops = for_store(store)
    with pytest.raises(UnsafePath):
        fsops.make_dir(k(dest / "d") + "/", {"mode": str(0o40777)})
    outside_untouched(tmp_path)


def test_hard_link_targets_must_be_regular_files_in_the_same_confined_tree(
    store: PosixStore, dest: Path, tmp_path: Path
) -> None:
    root = k(dest) + "/"
    (dest / "ok").write_bytes(b"mine")
    (dest / "link").symlink_to(tmp_path / "outside" / "secret")
    (dest / "dir").mkdir()
    for target in (
        "etc/passwd",  # a key outside the tree
        root + "../outside/secret",  # '..'
        root + "link",  # a symlink in the tree (linkat would link the link)
        root + "dir",  # a directory
        root + "link/x",
    ):
        with pytest.raises((UnsafePath, NotFound)):
            store.put(root + "h", b"", metadata={"datamover-hardlink": target})
        assert not (dest / "h").exists()
    store.put(root + "sub/h", b"", metadata={"datamover-hardlink": root + "ok"})
    assert (dest / "sub" / "h").stat().st_ino == (dest / "ok").stat().st_ino
    # Unconfined (no root declared), a store makes no hard links at all.
    with pytest.raises(UnsafePath):
        PosixStore().put(k(tmp_path / "h2"), b"", metadata={"datamover-hardlink": root + "ok"})
    outside_untouched(tmp_path)


def test_bad_metadata_fails_the_file_before_anything_is_made(store: PosixStore, dest: Path) -> None:
    root = k(dest) + "/"
    bad = [
        {"mode": "abc"},
        {"mode": "-1"},
        {"mode": str(1 << 40)},
        {"uid": "root"},
        {"uid": str(1 << 40)},
        {"gid": "-5"},
        {"mtime": "yesterday"},
        {"mtime": "9" * 40},
    ]
    for meta in bad:
        with pytest.raises(InvalidMetadata, match=next(iter(meta))):
            store.put(root + "f", b"x", metadata=meta)
        with pytest.raises(InvalidMetadata):
            store.put(root + "d/", b"", metadata=meta)
        with pytest.raises(InvalidMetadata):
            store.open_writer(root + "big", size=4, part_size=2, metadata=meta)
    for meta in ({"lustre-stripe-size": "abc", "lustre-stripe-count": "2"},):
        with pytest.raises(InvalidMetadata, match="stripe"):
            store.open_writer(root + "big", size=4, part_size=2, metadata=meta)
    with pytest.raises(UnsafePath, match="NUL"):
        store.put(root + "l", b"a\0b", metadata={"mode": LINK})
    assert os.listdir(dest) == []


def test_setid_bits_and_default_modes(dest: Path) -> None:
    umask = os.umask(0o027)
    os.umask(umask)
    root = k(dest) + "/"
    plain = PosixStore()
    meta = {"mode": str(0o106755)}
    plain.put(root + "suid", b"#!/bin/sh\n", metadata=meta)
    plain.put(root + "sgid-dir/", b"", metadata={"mode": str(0o42775)})
    assert stat.S_IMODE((dest / "suid").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "sgid-dir").stat().st_mode) == 0o775
    asked = PosixStore(preserve_setid=True)
    asked.put(root + "suid2", b"#!/bin/sh\n", metadata=meta)
    assert stat.S_IMODE((dest / "suid2").stat().st_mode) == 0o6755
    # No mode metadata: what cp would make (0666 / 0777 less the umask), not 0600.
    plain.put(root + "nomode/file", b"x")
    w = plain.open_writer(root + "nomode/big", size=2, part_size=1)
    for i in range(2):
        w.write_part(i, b"y", PartDigests(b"y"))
    w.commit({})
    plain.put(root + "nomode/empty/", b"")
    assert stat.S_IMODE((dest / "nomode" / "file").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((dest / "nomode" / "big").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((dest / "nomode" / "empty").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((dest / "nomode").stat().st_mode) == 0o777 & ~umask


# -- reads -----------------------------------------------------------------------------


def test_reads_never_follow_a_symlink_that_replaced_a_listed_file(
    tmp_path: Path, use_openat2: bool
) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"listed")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f").write_bytes(b"outside bytes")
    store = PosixStore(use_openat2=use_openat2)
    store.confine(k(src) + "/")
    [info] = [i for i in store.list(k(src) + "/") if not i.is_dir]
    # The file is swapped for a symlink after the listing.
    (src / "d" / "f").unlink()
    (src / "d" / "f").symlink_to(tmp_path / "outside" / "f")
    data, got = store.read_object(info.key)
    assert bytes(data) == str(tmp_path / "outside" / "f").encode()  # the link, as a link
    assert got.mode is not None and stat.S_ISLNK(got.mode)
    with pytest.raises(SourceChanged, match="symlink"):
        store.readinto(info.key, 0, memoryview(bytearray(16)))
    with pytest.raises(SourceChanged):
        store.read(info.key)
    # A parent directory swapped for a symlink: never read through. A store that has
    # the directory open already reads on in it (wherever it was moved); one that
    # hasn't refuses.
    (src / "d" / "f").unlink()
    (src / "d" / "f").write_bytes(b"listed")
    os.rename(src / "d", tmp_path / "d.real")
    (src / "d").symlink_to(tmp_path / "outside")
    data, _ = store.read_object(info.key)
    assert bytes(data) == b"listed"
    fresh = PosixStore(use_openat2=use_openat2)
    fresh.confine(k(src) + "/")
    for read in (
        lambda: fresh.read_object(info.key),
        lambda: fresh.readinto(info.key, 0, memoryview(bytearray(16))),
    ):
        with pytest.raises(UnsafePath):
            read()
    fresh.close()
    store.close()
    store = PosixStore(use_openat2=use_openat2)
    store.confine(k(src) + "/")
    # A FIFO swapped in does not hang the reader.
    (src / "d").unlink()
    (src / "d").mkdir()
    os.mkfifo(src / "d" / "f")
    with pytest.raises(UnsafePath, match="regular file"):
        store.read_object(info.key)
    store.close()


def test_read_object_of_a_directory_key_that_is_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/etc")
    data, info = PosixStore().read_object(k(tmp_path / "link") + "/")
    assert bytes(data) == b"/etc" and info.mode is not None and stat.S_ISLNK(info.mode)


def test_copy_links_listing_reports_loops_and_long_paths_as_problems(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_bytes(b"x")
    (src / "sub" / "up").symlink_to("..")  # a loop
    (src / "a").symlink_to("b")  # a cycle the kernel reports (ELOOP)
    (src / "b").symlink_to("a")
    infos = list(PosixStore(follow_symlinks=True).list(k(src) + "/"))
    problems = {i.key.removeprefix(k(src) + "/"): i.problem for i in infos if i.problem}
    assert set(problems) == {"a", "b", "sub/up/"}
    assert "loop" in (problems["sub/up/"] or "")
    assert [i.key for i in infos if not i.problem] == [k(src) + "/sub/f"]


def test_listing_a_tree_deeper_than_path_max_reports_the_deep_part(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok").write_bytes(b"ok")
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(20):  # 20 x 250 bytes: past PATH_MAX
        os.mkdir("d" * 250, dir_fd=fd)
        nfd = os.open("d" * 250, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(os.open("leaf", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    os.close(fd)
    for follow in (False, True):
        infos = list(PosixStore(follow_symlinks=follow).list(k(src) + "/"))
        assert [i.key for i in infos if not i.problem] == [k(src) + "/ok"]
        [bad] = [i for i in infos if i.problem]
        assert "PATH_MAX" in (bad.problem or ""), bad


# -- resume and temp files -------------------------------------------------------------------


def test_resume_writer_trusts_only_its_own_temp_files(store: PosixStore, dest: Path) -> None:
    root = k(dest) + "/"
    (dest / "precious").write_bytes(b"p" * 4)
    temp = f".big{TEMP_MARK}0123abcd"
    for state in (
        {"temp_path": str(dest / "precious")},  # not a temp name
        {"temp_path": "/etc/passwd"},  # another directory
        {"temp_path": str(dest / f".other{TEMP_MARK}00")},  # another file's temp name
        {"temp_path": 42},
    ):
        with pytest.raises(NotFound):
            store.resume_writer(root + "big", size=4, part_size=2, state=state)
    (dest / temp).symlink_to(dest / "precious")  # a temp name that is a link
    with pytest.raises((NotFound, UnsafePath)):
        store.resume_writer(
            root + "big", size=4, part_size=2, state={"temp_path": str(dest / temp)}
        )
    (dest / temp).unlink()
    os.link(dest / "precious", dest / temp)  # one with two links
    with pytest.raises(NotFound, match="one link"):
        store.resume_writer(
            root + "big", size=4, part_size=2, state={"temp_path": str(dest / temp)}
        )
    (dest / temp).unlink()
    (dest / temp).write_bytes(b"pp")
    with pytest.raises(NotFound, match="size"):
        store.resume_writer(
            root + "big", size=4, part_size=2, state={"temp_path": str(dest / temp)}
        )
    if os.geteuid() == 0:
        os.truncate(dest / temp, 4)
        os.chown(dest / temp, 4321, 4321)
        with pytest.raises(NotFound, match="uid 4321"):
            store.resume_writer(
                root + "big", size=4, part_size=2, state={"temp_path": str(dest / temp)}
            )
    assert (dest / "precious").read_bytes() == b"pppp"
    assert not (dest / "big").exists()


def test_lustre_temp_files_are_unguessable_and_checked(
    dest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin" / "lfs"
    fake.parent.mkdir()
    seen = tmp_path / "lfs-args"
    fake.write_text(f'#!/bin/sh\nfor a; do last=$a; done\necho "$last" >> {seen}\n: > "$last"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    store = PosixStore(fs_type=lambda path: LUSTRE_MAGIC)
    store.confine(k(dest) + "/")
    meta = {"lustre-stripe-count": "2", "lustre-stripe-size": str(1 << 20)}
    w = store.open_writer(k(dest / "big"), size=2, part_size=1, metadata=meta)
    assert isinstance(w, PosixWriter)
    name = os.path.basename(w.state()["temp_path"])
    assert len(name.rsplit(TEMP_MARK, 1)[1]) == 32  # 128 random bits
    arg = seen.read_text().strip()
    assert arg.startswith("/proc/self/fd/") and arg.endswith(name)  # the held directory
    for i in range(2):
        w.write_part(i, b"z", PartDigests(b"z"))
    w.commit({})
    assert (dest / "big").read_bytes() == b"zz"
    # An lfs that leaves something else than a fresh empty file of ours is refused.
    fake.write_text(
        f'#!/bin/sh\nfor a; do last=$a; done\nln -s {tmp_path}/outside/secret "$last"\n'
    )
    with pytest.raises(StoreError, match="symbolic links"):
        store.open_writer(k(dest / "big2"), size=2, part_size=1, metadata=meta)
    assert sorted(os.listdir(dest)) == ["big"]  # what lfs made under our name is gone
    outside_untouched(tmp_path)


# -- the mount's operations and deletes ------------------------------------------------------


def test_fsops_change_the_entry_named_never_a_link_target(
    store: PosixStore, dest: Path, tmp_path: Path
) -> None:
    (dest / "l").symlink_to(tmp_path / "outside" / "secret")
    (dest / "ld").symlink_to(tmp_path / "outside")
    fsops = for_store(store)
    info = store.stat(k(dest / "l"))
    fsops.update_metadata(info, {"mode": str(0o100777), "mtime": "7.0"})
    assert os.lstat(dest / "l").st_mtime_ns == 7 * 10**9  # the link's own time
    assert fsops.stat_dir(k(dest / "ld") + "/") is None
    with pytest.raises(UnsafePath):
        fsops.update_dir_metadata(k(dest / "ld") + "/", {"mode": str(0o40777)})
    store.delete(k(dest / "ld"))  # the link goes, the directory it names stays
    assert not (dest / "ld").is_symlink()
    outside_untouched(tmp_path)
    secret = tmp_path / "outside" / "secret"
    assert secret.stat().st_mtime_ns != 7 * 10**9


# -- Beneath itself ------------------------------------------------------------------------------


def test_beneath_contract(tmp_path: Path, use_openat2: bool) -> None:
    tree = Beneath(str(tmp_path / "root"), dir_cache=2, use_openat2=use_openat2)
    with pytest.raises(FileNotFoundError):
        tree.stat("")
    d = tree.mkdir("a/b/c")  # the root is made by the first call that may create
    tree.release(d)
    fd = tree.open("a/b/c/f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b"hi")
    os.close(fd)
    tree.symlink(str(tmp_path), "a/up")
    tree.link("a/b/c/f", "a/hard")
    tree.rename("a/hard", "a/hard2")
    assert tree.readlink("a/up") == str(tmp_path)
    assert tree.stat("a/hard2").st_nlink == 2
    for rel in ("a/up/x", "a/up/root/a/b"):
        with pytest.raises(NotBeneath) as e:
            tree.open(rel, os.O_WRONLY | os.O_CREAT)
        assert e.value.errno == errno.ELOOP
    with pytest.raises(OSError) as link:
        tree.open("a/up", os.O_RDONLY)  # O_NOFOLLOW on the name itself
    assert link.value.errno == errno.ELOOP and not isinstance(link.value, NotBeneath)
    with pytest.raises(NotBeneath):
        tree.mkdir("a/b/c/f/g")  # a file where a directory is needed (ENOTDIR)
    # Many directories, few descriptors: the cache stays at its bound.
    for i in range(30):
        tree.release(tree.mkdir(f"many/{i}"))
    assert len(tree._dirs) <= 2
    # A cached directory removed and made again is found again.
    tree.release(tree.mkdir("x/y"))
    os.rmdir(tmp_path / "root" / "x" / "y")
    os.rmdir(tmp_path / "root" / "x")
    os.close(tree.open("x/y/z", os.O_WRONLY | os.O_CREAT))
    assert (tmp_path / "root" / "x" / "y" / "z").exists()
    tree.unlink("x/y/z")
    tree.rmdir("x/y")
    assert sorted(n for n, _ in tree.listdir("a")) == ["b", "hard2", "up"]
    # Closing the tree never closes a descriptor somebody still holds.
    held, root = tree.hold("a"), tree.root()
    tree.close()
    assert os.fstat(held.fd).st_ino == (tmp_path / "root" / "a").stat().st_ino
    assert os.fstat(root.fd).st_ino == (tmp_path / "root").stat().st_ino
    tree.release(held)
    tree.release(root)
    with pytest.raises(OSError):
        os.fstat(held.fd)
