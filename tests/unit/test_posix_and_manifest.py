from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

import datamover
from datamover.checksums import PartDigests
from datamover.errors import NotFound, UsageError
from datamover.manifest import export_sums, read_manifest
from datamover.options import TransferOptions
from datamover.stores.posix import PosixStore


def test_posix_writer_parts_out_of_order_commit_and_abort(tmp_path: Path) -> None:
    store = PosixStore()
    key = str(tmp_path / "out.bin").lstrip("/")
    data = os.urandom(10_000)
    w = store.open_writer(key, size=len(data), part_size=4000)
    for i in (2, 0, 1):
        chunk = data[i * 4000 : (i + 1) * 4000]
        w.write_part(i, chunk, PartDigests(chunk))
    assert not (tmp_path / "out.bin").exists()  # nothing visible before commit
    w.commit({"mtime": "1700000000.123456789", "mode": "33216"})
    assert (tmp_path / "out.bin").read_bytes() == data
    st = (tmp_path / "out.bin").stat()
    assert st.st_mtime_ns == 1700000000123456789 and st.st_mode & 0o777 == 0o700
    w2 = store.open_writer(key, size=10, part_size=10)
    w2.write_part(0, b"x" * 10, PartDigests(b"x" * 10))
    w2.abort()
    w2.abort()
    assert os.listdir(tmp_path) == ["out.bin"]  # old file intact, temp gone


def test_posix_stat_missing_is_not_found_and_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as err:
        PosixStore().stat(str(tmp_path / "nope").lstrip("/"))
    assert isinstance(err.value, FileNotFoundError)


def test_posix_to_posix_with_escaped_names_checks_with_sha256sum(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "back\\slash.txt").write_bytes(b"1")
    (src / "new\nline.txt").write_bytes(b"2")
    (src / "plain.txt").write_bytes(b"3")
    report = datamover.copy(
        str(src), str(tmp_path / "dst"), TransferOptions(manifest=str(tmp_path / "m"))
    )
    assert report.ok and report.files_ok == 3
    buf = io.StringIO()
    assert export_sums(read_manifest(str(tmp_path / "m")), buf) == 3
    (tmp_path / "SUMS").write_text(buf.getvalue())
    check = subprocess.run(
        ["sha256sum", "-c", str(tmp_path / "SUMS")], cwd=tmp_path / "dst", capture_output=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_copy_single_file_into_directory_and_to_new_name(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    (tmp_path / "d").mkdir()
    assert datamover.copy(str(tmp_path / "f.txt"), str(tmp_path / "d")).ok
    assert (tmp_path / "d" / "f.txt").read_text() == "x"
    report = datamover.copy(str(tmp_path / "f.txt"), str(tmp_path / "g.txt"))
    assert (tmp_path / "g.txt").read_text() == "x"
    m = read_manifest(report.manifest or "")
    assert m.entries[0].path == "g.txt" and m.entries[0].source_path == "f.txt"


def test_copy_into_itself_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(UsageError, match="inside source"):
        datamover.copy(str(tmp_path), str(tmp_path / "sub"))


def test_manifest_reader_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("not json\n")
    with pytest.raises(UsageError, match="datamover manifest"):
        read_manifest(str(tmp_path / "x"))
    (tmp_path / "y").write_text(
        '{"type": "header", "format": "datamover-manifest", "format_version": 99}\n'
    )
    with pytest.raises(UsageError, match="newer"):
        read_manifest(str(tmp_path / "y"))


def test_child_key_refuses_unsafe_keys_and_case_collisions(tmp_path: Path) -> None:
    from datamover.errors import UnsafePath

    store = PosixStore(case_insensitive=True)
    root = str(tmp_path).lstrip("/") + "/"
    assert store.child_key(root, "a/B.txt") == root + "a/B.txt"
    for bad in ("/abs", "a/../../x", "a//b", "./x", "nul\0byte", "x" * 256):
        with pytest.raises(UnsafePath):
            store.child_key(root, bad)
    with pytest.raises(UnsafePath, match="only by case"):
        store.child_key(root, "A/b.TXT")
    with pytest.raises(UnsafePath, match="PATH_MAX"):
        store.child_key(root, "/".join(["d" * 200] * 21))
    (tmp_path / "linkdir").symlink_to("/etc")
    key = store.child_key(root, "linkdir/passwd")  # the text is fine: the write refuses
    with pytest.raises(UnsafePath, match="symlink"):
        store.put(key, b"owned")
    assert PosixStore(case_insensitive=False).child_key(root, "A/b.TXT")
