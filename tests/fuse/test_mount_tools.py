"""Ordinary tools on a real mount, on SeaweedFS (S3), Azurite and fake-gcs-server
(``cp -a``, ``rsync -a``, ``tar`` and friends: ``test_mount_legacy.py``).

What lands in the bucket is checked through the SDK (``target.store``), never through
the mount that wrote it; persistence is checked through a second, fresh mount.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from datamover.stores.base import MiB

from mounting import Target

pytestmark = [pytest.mark.fuse, pytest.mark.cloud, pytest.mark.timeout(180)]


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
        subprocess.Popen(
            ["sha256sum", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    done = [p.communicate(timeout=120) for p in procs]
    assert [out.split()[:1] for out, _ in done] == [[hashlib.sha256(data).hexdigest()]] * 2, done


def test_mmap_reads_and_shared_writes_reach_the_object(target: Target) -> None:
    """Codes that map files (``numpy.memmap``, ``np.load(mmap_mode=...)``, LMDB) read
    through the page cache and write back dirty pages: both reach the object."""
    import mmap

    np = pytest.importorskip("numpy")
    path = target.path / "m.bin"
    data = bytearray(os.urandom(3 * MiB))
    path.write_bytes(data)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert m[:] == bytes(data)
        assert m[2 * MiB + 7 : 2 * MiB + 100] == bytes(data[2 * MiB + 7 : 2 * MiB + 100])
    with open(path, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as m:
        m[10:20] = b"x" * 10
        m[3 * MiB - 5 :] = b"y" * 5
        m.flush()
    data[10:20] = b"x" * 10
    data[3 * MiB - 5 :] = b"y" * 5
    assert path.read_bytes() == bytes(data)
    assert target.store.read(target.key("m.bin")) == bytes(data)

    arr = np.memmap(target.path / "np.dat", dtype="float64", mode="w+", shape=(1000, 100))
    arr[:] = np.arange(100_000, dtype="float64").reshape(1000, 100)
    arr.flush()
    del arr
    stored = target.store.read(target.key("np.dat"))
    assert np.frombuffer(stored, dtype="float64")[-1] == 99_999.0 and len(stored) == 800_000
    back = np.memmap(target.path / "np.dat", dtype="float64", mode="r", shape=(1000, 100))
    assert float(back[999, 99]) == 99_999.0


def test_zip_append_locks_and_a_build_run_in_the_mount(target: Target) -> None:
    """A zip archive appended to (its central directory rewritten at the end), flock
    and lockf, and ``make`` building a program that then runs from the mount."""
    import fcntl
    import zipfile

    archive = target.path / "a.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(20):
            zf.writestr(f"d/f{i}.txt", os.urandom(5000).hex())
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("late.txt", "hello")
    with zipfile.ZipFile(archive) as zf:
        assert zf.testzip() is None and zf.read("late.txt") == b"hello"

    with open(target.path / "lockfile", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)

    project = target.path / "proj"
    project.mkdir()
    (project / "hello.c").write_text('#include <stdio.h>\nint main(void){puts("hi");return 0;}\n')
    (project / "Makefile").write_text("hello: hello.c\n\tcc -o hello hello.c\n")
    build = subprocess.run(["make", "-C", str(project)], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    ran = subprocess.run([str(project / "hello")], capture_output=True, text=True)
    assert ran.stdout == "hi\n", ran
    assert target.store.stat(target.key("proj/hello")).size == (project / "hello").stat().st_size
