"""BagIt export and copy --bagit (validated by the ``bagit`` package), datamover.open,
and the everyday CLI commands, on POSIX (no servers but moto, for a bag from S3)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import bagit
import pytest

import datamover
from datamover import cli
from datamover.errors import NotFound, SourceChanged, UsageError
from datamover.manifest.bagit import BagError, export_bag
from datamover.options import MiB

from serverenv import ServerEnv

DM = [sys.executable, "-m", "datamover"]


def _tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"alpha\n",
        "sub/b.bin": os.urandom(70_000),
        "sub/deeper/c d.txt": b"with space\n",
        "ünï.txt": b"unicode\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


@pytest.mark.parametrize("algorithm", ["sha256", "sha512", "md5"])
def test_copy_bagit_is_a_valid_bag(tmp_path: Path, algorithm: str) -> None:
    src, bag = tmp_path / "src", tmp_path / "bag"
    files = _tree(src)
    report = datamover.copy(
        str(src),
        str(bag),
        bagit=True,
        checksum=algorithm,
        bag_info={"Source-Organization": "Test Lab"},
        multipart_threshold="64K",
    )
    assert report.ok
    assert (bag / "data" / "sub" / "b.bin").read_bytes() == files["sub/b.bin"]
    assert (bag / f"manifest-{algorithm}.txt").exists()
    assert (bag / f"tagmanifest-{algorithm}.txt").exists()
    parsed = bagit.Bag(str(bag))
    parsed.validate()  # fixity of every payload file, Payload-Oxum, tag manifests
    size = sum(len(v) for v in files.values())
    assert parsed.info["Payload-Oxum"] == f"{size}.{len(files)}"
    assert parsed.info["Source-Organization"] == "Test Lab"


def test_payload_paths_are_percent_encoded_per_rfc_8493(tmp_path: Path) -> None:
    # RFC 8493 §2.1.3 encodes %, CR and LF. (bagit-python <= 1.9 encodes only CR and
    # LF, LibraryOfCongress/bagit-python#157, so it can't validate a path with a %.)
    src = tmp_path / "src"
    src.mkdir()
    (src / "50%.txt").write_text("half")
    (src / "line\nbreak.txt").write_text("nl")
    assert datamover.copy(str(src), str(tmp_path / "bag"), bagit=True).ok
    lines = (tmp_path / "bag" / "manifest-sha256.txt").read_text().splitlines()
    assert sorted(line.split("  ", 1)[1] for line in lines) == [
        "data/50%25.txt",
        "data/line%0Abreak.txt",
    ]


def test_copy_bagit_refuses_what_bagit_cant_hold(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    with pytest.raises(BagError, match="sha256, sha512 or md5"):
        datamover.copy(str(src), str(tmp_path / "bag"), bagit=True, checksum="crc32c")
    with pytest.raises(UsageError, match="POSIX"):
        datamover.copy(str(src), "s3://bucket/x", bagit=True)
    stray = tmp_path / "bag2" / "data"
    stray.mkdir(parents=True)
    (stray / "old.txt").write_text("not from this copy")
    with pytest.raises(BagError, match="did not write"):
        datamover.copy(str(src), str(tmp_path / "bag2"), bagit=True)


@pytest.mark.parametrize("link", [True, False])
def test_manifest_export_bagit(tmp_path: Path, link: bool) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    report = datamover.copy(str(src), str(dst), manifest=str(tmp_path / "m.jsonl"))
    result = export_bag(str(tmp_path / "m.jsonl"), str(tmp_path / "bag"), link=link)
    assert (result.linked, result.copied) == ((4, 0) if link else (0, 4))
    bagit.Bag(str(tmp_path / "bag")).validate()
    assert report.manifest is not None
    with pytest.raises(BagError, match="not an empty directory"):
        export_bag(report.manifest, str(tmp_path / "bag"))
    (dst / "a.txt").write_bytes(b"tampered")
    with pytest.raises(BagError, match="changed after the copy"):
        export_bag(report.manifest, str(tmp_path / "bag3"), link=link)


def test_manifest_export_bagit_cli(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    datamover.copy(str(src), str(dst), manifest=str(tmp_path / "m.jsonl"))
    out = tmp_path / "bag"
    code = cli.main(
        ["manifest", "export", str(tmp_path / "m.jsonl"), "--format", "bagit", "-o", str(out)]
    )
    assert code == 0
    bagit.Bag(str(out)).validate()


def test_open_reads_and_writes_all_or_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out" / "big.bin"
    data = os.urandom(300_000)
    opts = datamover.make_options(multipart_threshold="64K", part_size="64K", transfers=3)
    with datamover.open(str(target), "wb", options=opts) as fh:
        for i in range(0, len(data), 10_000):
            fh.write(data[i : i + 10_000])
        assert not target.exists()  # nothing visible before close
    assert target.read_bytes() == data

    with datamover.open(str(target), "rb", block_size=4096) as fh:
        fh.seek(123_456)
        assert fh.read(10) == data[123_456:123_466]
        fh.seek(-5, io.SEEK_END)
        assert fh.read() == data[-5:]

    small = tmp_path / "out" / "note.txt"
    with datamover.open(str(small), "w") as fh:
        fh.write("héllo\nwörld\n")
    with datamover.open(str(small), "r") as fh:
        assert fh.read().splitlines() == ["héllo", "wörld"]

    aborted = tmp_path / "out" / "aborted.bin"
    with pytest.raises(RuntimeError), datamover.open(str(aborted), "wb", options=opts) as fh:
        fh.write(data)
        raise RuntimeError("workflow step failed")
    assert not aborted.exists()
    assert not [p for p in (tmp_path / "out").iterdir() if "dmtmp" in p.name]
    with pytest.raises(RuntimeError), datamover.open(str(aborted), "w") as fh:
        fh.write("partial")
        raise RuntimeError("text too")
    assert not aborted.exists()

    with pytest.raises(NotFound):
        datamover.open(str(tmp_path / "missing"), "rb")
    with pytest.raises(UsageError, match="mode"):
        datamover.open(str(small), "a")


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_everyday_commands_on_posix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "t"
    files = _tree(root)
    code, out, _ = _run(["ls", str(root)], capsys)
    assert code == 0 and out.split() == ["a.txt", "sub/", "ünï.txt"]
    code, out, _ = _run(["ls", "-lR", "-h", str(root)], capsys)
    assert "68.4 KiB" in out and "sub/deeper/c d.txt" in out
    code, out, _ = _run(["ls", "--json", "-R", str(root / "sub")], capsys)
    docs = [json.loads(line) for line in out.splitlines()]
    assert {d["name"] for d in docs} == {"b.bin", "deeper/c d.txt"}
    code, out, _ = _run(["stat", "--json", str(root / "a.txt")], capsys)
    assert json.loads(out)["size"] == 6
    code, out, _ = _run(["du", str(root)], capsys)
    assert out.split("\t")[:2] == [str(sum(map(len, files.values()))), "4 files"]
    code, _, err = _run(["rm", str(root / "sub")], capsys)
    assert code == 2 and "use rm -r" in err and (root / "sub" / "b.bin").exists()
    code, out, _ = _run(["rm", "-r", str(root / "sub")], capsys)
    assert code == 0 and "deleted 2 objects" in out and not (root / "sub").exists()
    code, _, err = _run(["stat", str(root / "nope")], capsys)
    assert code == 2 and err.count("\n") == 1 and "no such" in err


def test_cat_is_binary_safe_through_a_pipe(tmp_path: Path) -> None:
    blob = bytes(range(256)) * 1000
    (tmp_path / "blob").write_bytes(blob)
    run = subprocess.run([*DM, "cat", str(tmp_path / "blob")], capture_output=True, check=True)
    assert run.stdout == blob


def test_copy_bagit_from_s3_follows_stored_symlinks(moto_env: ServerEnv, tmp_path: Path) -> None:
    # A tree with symlinks, uploaded as is: each link is an object holding its target
    # with a mode saying it is a link. A bag (which holds bytes, not links) follows a
    # stored link to another object of the copied prefix; one it can't follow safely
    # (out of the prefix, absolute, dangling, a loop, a directory) fails alone.
    src = tmp_path / "run1"
    files = _tree(src)
    big = os.urandom(200_000)  # copied by parts when followed
    (src / "big.bin").write_bytes(big)
    os.symlink("a.txt", src / "link.txt")
    os.symlink("../a.txt", src / "sub" / "up.txt")
    os.symlink("link.txt", src / "chain.txt")  # a link to a link
    os.symlink("big.bin", src / "big-link.bin")
    opts = {"multipart_threshold": "64K", "part_size": "64K"}
    assert datamover.copy(str(src), moto_env.url("run1"), **opts).ok

    bag = tmp_path / "bag1"
    report = datamover.copy(moto_env.url("run1"), str(bag), bagit=True, **opts)
    assert report.ok, report.failures
    expected = {**files, "big.bin": big, "big-link.bin": big}
    expected.update({"link.txt": files["a.txt"], "sub/up.txt": files["a.txt"]})
    expected["chain.txt"] = files["a.txt"]
    for rel, data in expected.items():
        path = bag / "data" / rel
        assert not path.is_symlink() and path.read_bytes() == data, rel
    bagit.Bag(str(bag)).validate()
    listed = (bag / "manifest-sha256.txt").read_text()
    assert "data/link.txt" in listed and "data/big-link.bin" in listed
    # -L between buckets (a server-side copy) follows them too.
    assert datamover.copy(moto_env.url("run1"), moto_env.url("followed"), copy_links=True).ok
    assert datamover.copy(moto_env.url("followed"), str(tmp_path / "down")).ok
    assert not (tmp_path / "down" / "chain.txt").is_symlink()
    assert (tmp_path / "down" / "chain.txt").read_bytes() == files["a.txt"]

    # Links a bag can't follow safely: each fails with its reason, the rest is
    # copied, nothing is read from outside the prefix, and no tag files are written.
    bad = tmp_path / "run2"
    _tree(bad)
    (tmp_path / "secret.txt").write_bytes(b"outside the prefix\n")
    assert datamover.copy(str(tmp_path / "secret.txt"), moto_env.url("secret.txt")).ok
    os.symlink("../secret.txt", bad / "escape.txt")
    os.symlink(str(tmp_path / "secret.txt"), bad / "absolute.txt")
    os.symlink("missing.txt", bad / "dangling.txt")
    os.symlink("loop2", bad / "loop1")
    os.symlink("loop1", bad / "loop2")
    os.symlink("sub", bad / "dir-link")
    assert datamover.copy(str(bad), moto_env.url("run2")).ok
    bag2 = tmp_path / "bag2"
    report = datamover.copy(moto_env.url("run2"), str(bag2), bagit=True)
    assert not report.ok
    failed = dict(report.failures)
    assert sorted(failed) == [
        "absolute.txt",
        "dangling.txt",
        "dir-link",
        "escape.txt",
        "loop1",
        "loop2",
    ]
    assert "outside" in failed["escape.txt"] and "absolute" in failed["absolute.txt"]
    assert "no object" in failed["dangling.txt"] and "directory" in failed["dir-link"]
    assert "loop" in failed["loop1"]
    assert all("\n" not in why for why in failed.values())
    written = list((bag2 / "data").rglob("*"))
    assert not [p for p in written if p.is_symlink()]
    payload = {p.relative_to(bag2 / "data").as_posix() for p in written if p.is_file()}
    assert payload == set(files)  # nothing for the failed links
    assert not any((bag2 / "data").rglob("*secret*"))
    assert sorted(p.name for p in bag2.iterdir()) == ["data"]  # not a bag (yet)
    # Leaving the unfollowable links out finishes the bag.
    report = datamover.copy(moto_env.url("run2"), str(bag2), bagit=True, exclude=sorted(failed))
    assert report.ok, report.failures
    bagit.Bag(str(bag2)).validate()


@pytest.mark.parametrize("how", ["replaced", "rewritten"])
def test_open_of_a_local_file_reads_one_version(tmp_path: Path, how: str) -> None:
    """A local file replaced (``os.replace``) or rewritten in place while open for
    reading: the reader opened the path anew for each block and handed on the new
    file's bytes after the old one's. Now its next block raises SourceChanged."""
    path = tmp_path / "pf.bin"
    path.write_bytes(b"A" * (6 * MiB))
    with datamover.open(str(path), "rb", block_size=MiB) as fh:
        assert fh.read(4) == b"AAAA"
        if how == "replaced":
            (tmp_path / "new").write_bytes(b"B" * (6 * MiB))
            os.replace(tmp_path / "new", path)
        else:
            with open(path, "r+b") as f:
                f.write(b"B" * (6 * MiB))
            os.utime(path, ns=(1, 10**18))  # a later mtime, whatever the clock's step
        fh.seek(5 * MiB)
        with pytest.raises(SourceChanged):
            fh.read(4)
    with datamover.open(str(path), "rb") as fh:
        assert fh.read() == b"B" * (6 * MiB)
