"""Ordinary tools on a real mount, on SeaweedFS (S3), Azurite and fake-gcs-server.

What lands in the bucket is checked through the SDK (``target.store``), never through
the mount that wrote it; persistence is checked through a second, fresh mount.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest

from datamover.posixmeta import PosixAttrs
from datamover.stores.base import MiB

from mounting import Target, run

pytestmark = [pytest.mark.fuse, pytest.mark.cloud, pytest.mark.timeout(180)]

OLD_NS = 1_500_000_000_123_456_789


def make_tree(root: Path) -> Path:
    """Nested directories, an empty one, a symlink, files from 0 bytes to 9 MiB (past the
    single-put threshold), various modes and old mtimes with nanoseconds."""
    files = {
        "empty.txt": b"",
        "small.txt": b"hello world\n",
        "sub/a.txt": os.urandom(4097),
        "sub/deeper/b.bin": os.urandom(1 * MiB + 3),
        "sub/deeper/c.bin": os.urandom(9 * MiB + 1),
        "other dir/spaced name.txt": b"spaces are fine\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "emptydir").mkdir()
    os.symlink("sub/a.txt", root / "link")
    os.chmod(root / "small.txt", 0o600)
    os.chmod(root / "sub/a.txt", 0o755)
    os.chmod(root / "sub/deeper", 0o750)
    for i, path in enumerate(sorted(root.rglob("*"), reverse=True)):
        os.utime(path, ns=(OLD_NS + i, OLD_NS + i * 1001), follow_symlinks=False)
    return root


def assert_same_attrs(src: Path, dst: Path, *, dirs: bool = True) -> None:
    """Modes and nanosecond mtimes of every file (and directory) under ``src``."""
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        a, b = path.lstat(), (dst / rel).lstat()
        assert stat.S_IFMT(a.st_mode) == stat.S_IFMT(b.st_mode), rel
        if stat.S_ISDIR(a.st_mode) and not dirs:
            continue
        if stat.S_ISLNK(a.st_mode):
            assert os.readlink(path) == os.readlink(dst / rel)
            continue
        assert oct(stat.S_IMODE(a.st_mode)) == oct(stat.S_IMODE(b.st_mode)), rel
        assert a.st_mtime_ns == b.st_mtime_ns, rel
        if stat.S_ISREG(a.st_mode):
            assert a.st_size == b.st_size, rel


def test_cp_a_a_tree_in_and_diff_it_back(target: Target, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    dir_errors_ok = not target.backend.dir_metadata
    run(["cp", "-a", str(src), str(target.path / "src")], dir_errors_ok=dir_errors_ok)
    run(["diff", "-r", str(src), str(target.path / "src")])
    assert_same_attrs(src, target.path / "src", dirs=target.backend.dir_metadata)
    assert (
        target.store.read(target.key("src/sub/deeper/c.bin"))
        == (src / "sub/deeper/c.bin").read_bytes()
    )
    info = target.store.stat(target.key("src/sub/a.txt"))
    assert PosixAttrs.from_metadata(info.metadata).mode == stat.S_IFREG | 0o755


def test_tar_x_into_the_mount_and_tar_c_out_of_it(target: Target, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    archive = tmp_path / "in.tar"
    run(["tar", "--format=posix", "-cf", str(archive), "-C", str(src), "."])
    dst = target.path / "x"
    dst.mkdir()
    run(["tar", "xf", str(archive), "-C", str(dst)], dir_errors_ok=not target.backend.dir_metadata)
    run(["diff", "-r", str(src), str(dst)])
    out = tmp_path / "out.tar"
    run(["tar", "--format=posix", "-cf", str(out), "-C", str(dst), "."])
    back = tmp_path / "back"
    back.mkdir()
    run(["tar", "xf", str(out), "-C", str(back)])
    run(["diff", "-r", str(src), str(back)])
    assert_same_attrs(src, back, dirs=target.backend.dir_metadata)


def test_rsync_a_preserves_modes_and_mtimes_after_a_remount(target: Target, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    dirs = target.backend.dir_metadata
    run(["rsync", "-a", f"{src}/", f"{target.path / 'r'}/"], dir_errors_ok=not dirs)
    with target.remount(tmp_path) as fresh:
        dst = fresh.path / target.prefix / "r"
        run(["diff", "-r", str(src), str(dst)])
        assert_same_attrs(src, dst, dirs=dirs)
        again = run(["rsync", "-a", "--dry-run", "--itemize-changes", f"{src}/", f"{dst}/"])
        assert [line for line in again.stdout.splitlines() if line[:2] in (">f", "cd")] == []


def test_random_writes_and_appends_make_the_right_object(target: Target) -> None:
    path = target.path / "rw.bin"
    data = bytearray(os.urandom(3 * MiB))
    path.write_bytes(data)
    with open(path, "r+b") as fh:
        for offset in (100, 2 * MiB + 5, 0, 1_234_567, 3 * MiB - 10):
            chunk = os.urandom(1000)
            fh.seek(offset)
            fh.write(chunk)
            data[offset : offset + 1000] = chunk
    with open(path, "ab") as fh:
        tail = os.urandom(5000)
        fh.write(tail)
        data += tail
    assert target.store.read(target.key("rw.bin")) == bytes(data)

    sparse = target.path / "sparse.bin"
    with open(sparse, "wb") as fh:
        fh.seek(5 * MiB)
        fh.write(b"end")
        fh.seek(0)
        fh.write(b"start")
    expected = b"start" + bytes(5 * MiB - 5) + b"end"
    assert target.store.read(target.key("sparse.bin")) == expected
    info = target.store.stat(target.key("sparse.bin"))
    assert info.checksums.get("sha256") == hashlib.sha256(expected).hexdigest()


def test_h5py_creates_and_rereads_a_dataset(target: Target, tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    import numpy as np

    path = target.path / "data.h5"
    arr = np.arange(500_000, dtype="f8").reshape(500, 1000)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=arr, chunks=(50, 100), compression="gzip")
        f.attrs["units"] = "K"
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["x"][...], arr)
        assert f.attrs["units"] == "K"
    with h5py.File(path, "a") as f:
        f["x"][0, :10] = -1
        f.create_dataset("y", data=np.ones(10))
    arr[0, :10] = -1
    copy = tmp_path / "copy.h5"
    copy.write_bytes(target.store.read(target.key("data.h5")))
    with h5py.File(copy, "r") as f:
        np.testing.assert_array_equal(f["x"][...], arr)
        np.testing.assert_array_equal(f["y"][...], np.ones(10))


def test_rename_over_an_existing_file_and_a_directory_tree(target: Target) -> None:
    a, b = target.path / "a", target.path / "b"
    a.write_bytes(b"new")
    b.write_bytes(b"old")
    os.rename(a, b)
    assert b.read_bytes() == b"new" and not a.exists()
    assert target.store.read(target.key("b")) == b"new"
    assert not [i for i in target.store.list(target.key("a"), recursive=True) if i.key == "a"]

    tree = target.path / "d1"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub/f").write_bytes(b"f")
    (tree / "g").write_bytes(b"g")
    (tree / "empty").mkdir()
    os.rename(tree, target.path / "d2")
    assert sorted(p.name for p in (target.path / "d2").iterdir()) == ["empty", "g", "sub"]
    assert (target.path / "d2/sub/f").read_bytes() == b"f"
    keys = sorted(i.key for i in target.store.list(target.prefix, recursive=True))
    assert not [k for k in keys if "/d1/" in "/" + k]
    assert target.key("d2/sub/f") in keys


def test_two_processes_read_one_file(target: Target) -> None:
    data = os.urandom(24 * MiB)
    key = target.fresh_key("shared.bin")
    target.store.put(key, data)
    path = target.mount.path / key
    procs = [
        subprocess.Popen(["sha256sum", str(path)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0].split()[0] for p in procs]
    assert outs == [hashlib.sha256(data).hexdigest()] * 2
