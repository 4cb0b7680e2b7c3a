"""Manifests are untrusted input: a crafted or corrupt one is refused with one line
naming the file and line (exit 2), never read past, never a crash, and nothing in it
makes verify or the exports read or write outside the tree (docs/SECURITY.md)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import datamover
from datamover import cli
from datamover.errors import ManifestError
from datamover.manifest import read_manifest
from datamover.manifest.bagit import BagError, _copy_hashing, export_bag
from datamover.manifest.rules import MAX_LINE_BYTES

DM = [sys.executable, "-m", "datamover"]
SECRET = b"root:$6$not-for-your-eyes\n"
SECRET_SHA = hashlib.sha256(SECRET).hexdigest()


def _header(destination: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "header",
        "format": "datamover-manifest",
        "format_version": 1,
        "tool": "datamover",
        "tool_version": "0.1.0",
        "job_id": "20260101T000000Z-00000000",
        "operation": "copy",
        "source": "/src/",
        "destination": destination,
        "algorithm": "sha256",
        "part_algorithm": "crc32c",
        "options": {},
        "started": "2026-01-01T00:00:00.000Z",
        "host": "h",
        **extra,
    }


def _file(path: str, data: bytes = b"x", **extra: Any) -> dict[str, Any]:
    return {
        "type": "file",
        "path": path,
        "size": len(data),
        "status": "ok",
        "digest": hashlib.sha256(data).hexdigest(),
        **extra,
    }


def _summary(ok: int, nbytes: int, failed: int = 0) -> dict[str, Any]:
    return {
        "type": "summary",
        "ended": "2026-01-01T00:00:01.000Z",
        "files_ok": ok,
        "files_failed": failed,
        "bytes": nbytes,
    }


def _write(path: Path, *lines: dict[str, Any] | str | bytes) -> Path:
    raw = b""
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line)
        raw += (line.encode() if isinstance(line, str) else line) + b"\n"
    path.write_bytes(raw)
    return path


def _cli_fails(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    """One line on stderr, exit 2, no traceback, not an internal error."""
    code = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("datamover: error: "), err
    assert "internal error" not in err and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A secret beside the tree: nothing may read it."""
    path = tmp_path / "secret"
    path.write_bytes(SECRET)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "sub" / "b.txt").write_bytes(b"beta\n")
    return root


# -- verify never leaves the tree -------------------------------------------------------


@pytest.mark.parametrize("path", ["../secret", "sub/../../secret", "/SECRET", "./../secret"])
def test_verify_refuses_paths_that_leave_the_tree(
    tmp_path: Path, tree: Path, outside: Path, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = path.replace("/SECRET", str(outside))
    m = _write(
        tmp_path / "m.jsonl",
        _header(str(tree) + "/"),
        _file("a.txt", b"alpha\n"),
        _file(path, b"guess"),
        _summary(2, 11),
    )
    line = _cli_fails(["verify", str(m)], capsys, f"{m}:3:", "refused")
    assert SECRET_SHA not in line


def test_verify_does_not_follow_symlinks_in_the_tree(
    tmp_path: Path, tree: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A crafted entry can't reach outside through a symlink that is in the tree: a
    symlinked parent directory, or a symlink where the manifest says a file is."""
    (tree / "up").symlink_to(tmp_path)  # a legitimate link, pointing out of the tree
    (tree / "leak").symlink_to(outside)
    m = _write(
        tmp_path / "m.jsonl",
        _header(str(tree) + "/"),
        _file("up/secret", SECRET),
        _file("leak", b"y" * 20_000_000),  # claims to be large: the ranged read path
        _summary(2, len(SECRET) + 20_000_000),
    )
    code = cli.main(["verify", str(m)])
    out = capsys.readouterr().out
    assert code == 1
    assert SECRET_SHA not in out
    assert "ERROR up/secret:" in out and "is a symlink" in out
    assert "ERROR leak:" in out and "the manifest lists a file" in out
    assert "FAILED: 0 of 2" in out


def test_verify_of_object_keys_is_root_plus_path(tmp_path: Path) -> None:
    """For any store the key read is ``root + path``; the same rules apply first."""
    m = _write(
        tmp_path / "m.jsonl",
        _header("s3://bucket/run/"),
        _file("../other-run/x"),
        _summary(1, 1),
    )
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: .*'\.\.'"):
        datamover.verify(str(m))


# -- corrupt lines ------------------------------------------------------------------------


def test_a_corrupt_line_in_the_middle_is_an_error_not_skipped(
    tmp_path: Path, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It used to be skipped, and verify said "OK: 2 of 2" of a tree whose third file
    (listed on the corrupt line) had been modified."""
    (tree / "c.txt").write_bytes(b"gamma\n")
    report = datamover.copy(str(tree), str(tmp_path / "dst"), manifest=str(tmp_path / "m.jsonl"))
    assert report.ok and report.manifest
    lines = Path(report.manifest).read_bytes().splitlines(keepends=True)
    c = next(i for i, line in enumerate(lines) if b'"c.txt"' in line)
    lines[c] = lines[c][:40] + b"\n"  # cut short, but not the last line
    Path(report.manifest).write_bytes(b"".join(lines))
    (tmp_path / "dst" / "c.txt").write_bytes(b"GAMMA\n")
    _cli_fails(["verify", report.manifest], capsys, f"{report.manifest}:{c + 1}:", "not JSON")


def test_only_a_torn_last_line_without_newline_is_left_out(tmp_path: Path, tree: Path) -> None:
    report = datamover.copy(str(tree), str(tmp_path / "dst"), manifest=str(tmp_path / "m.jsonl"))
    assert report.manifest
    whole = Path(report.manifest).read_bytes()
    body = whole[: whole.rindex(b'{"type":"summary"')]  # a killed run: no summary
    torn = body + b'{"type":"file","path":"sub/c.t'
    Path(report.manifest).write_bytes(torn)
    m = read_manifest(report.manifest)
    assert sorted(e.path for e in m.entries) == ["a.txt", "sub/b.txt"]
    assert m.torn_at == len(body) and m.summary is None
    Path(report.manifest).write_bytes(torn + b"\n")  # ended by a newline: not torn
    with pytest.raises(ManifestError, match=r":4: not a datamover manifest line: not JSON"):
        read_manifest(report.manifest)
    Path(report.manifest).write_bytes(torn + b"\n" + whole[len(body) :])  # not last
    with pytest.raises(ManifestError, match=r":4: "):
        read_manifest(report.manifest)


def _malformed(tmp_path: Path) -> dict[str, tuple[list[Any], str]]:
    h = _header(str(tmp_path) + "/")
    ok = _file("a")
    return {
        "format_version not a number": ([{**h, "format_version": "x"}], ":1: 'format_version'"),
        "format_version true": ([{**h, "format_version": True}], ":1: 'format_version'"),
        "format_version 0": ([{**h, "format_version": 0}], ":1: 'format_version'"),
        "format_version newer": ([{**h, "format_version": 2}], ":1: manifest format version 2"),
        "unknown algorithm": ([{**h, "algorithm": "rot13"}], ":1: unknown algorithm"),
        # (a header naming no algorithm is a sha256 one: unit/test_checksum_choice.py)
        "entry of another algorithm": ([h, {**ok, "algorithm": "md5"}], ":2: entry "),
        "not a header first": ([ok, h], ":1: not a datamover manifest"),
        "second header": ([h, ok, h], ":3: a second header"),
        "unknown line type": ([h, {"type": "oops"}], ":2: unknown line type"),
        "no type": ([h, {"path": "a"}], ":2: unknown line type"),
        "missing size": ([h, {k: v for k, v in ok.items() if k != "size"}], ":2: "),
        "negative size": ([h, {**ok, "size": -1}], ":2: 'size'"),
        "boolean size": ([h, {**ok, "size": True}], ":2: 'size' must be an integer"),
        "float size": ([h, {**ok, "size": 1.5}], ":2: 'size' must be an integer"),
        "string size": ([h, {**ok, "size": "1"}], ":2: 'size' must be an integer"),
        "huge integer": ([h, '{"type":"file","path":"a","size":' + "9" * 5000 + "}"], ":2: "),
        "unknown status": ([h, {**ok, "status": "maybe"}], ":2: unknown status"),
        "unknown kind": ([h, {**ok, "kind": "fifo"}], ":2: unknown kind"),
        "ok without digest": ([h, {k: v for k, v in ok.items() if k != "digest"}], ":2: "),
        "failed without error": ([h, {**ok, "status": "failed"}], ":2: a failed entry"),
        "short digest": ([h, {**ok, "digest": "abc"}], ":2: 'digest' has 3 hex digits"),
        "upper-case digest": ([h, {**ok, "digest": ok["digest"].upper()}], ":2: 'digest'"),
        "digest not a string": ([h, {**ok, "digest": 5}], ":2: 'digest'"),
        "bad part digest": ([h, {**ok, "parts": ["zz"]}], ":2: 'parts[0]'"),
        "parts not a list": ([h, {**ok, "parts": "00000000"}], ":2: 'parts'"),
        "bad mtime": ([h, {**ok, "mtime": "yesterday"}], ":2: 'mtime'"),
        "bad mode": ([h, {**ok, "mode": "rwxr-xr-x"}], ":2: 'mode'"),
        "NaN seconds": ([h, json.dumps(ok)[:-1] + ', "seconds": NaN}'], ":2: "),
        "infinite seconds": ([h, json.dumps(ok)[:-1] + ', "seconds": 1e999}'], ":2: 'seconds'"),
        "NUL in a path": ([h, {**ok, "path": "a\u0000b"}], ":2: path 'a\\x00b' refused: it"),
        "NUL in a failed path": (
            [h, {**ok, "path": "a\u0000b", "status": "failed", "error": "e"}],
            ":2: path",
        ),
        "lone surrogate": (
            [h, '{"type":"file","path":"a\\udc80","size":0,"status":"deleted"}'],
            ":2: ",
        ),
        "empty path": ([h, {**ok, "path": ""}], ":2: path '' refused"),
        "absolute path": ([h, {**ok, "path": "/etc/passwd"}], ":2: path '/etc/passwd' refused"),
        "dot-dot": ([h, {**ok, "path": "a/../../b"}], ":2: path 'a/../../b' refused"),
        "empty component": ([h, {**ok, "path": "a//b"}], "empty component"),
        "dot component": ([h, {**ok, "path": "./a"}], "'.' component"),
        "link_to leaves": ([h, {**ok, "kind": "hardlink", "link_to": "../x"}], ":2: link_to"),
        "source_path absolute": ([h, {**ok, "source_path": "/x"}], ":2: source_path"),
        "path not a string": ([h, {**ok, "path": ["a"]}], ":2: 'path' must be a string"),
        "not an object": ([h, "[1, 2]"], ":2: not a datamover manifest line: not a JSON object"),
        "not UTF-8": ([h, b'{"type":"file","path":"\xff"}'], ":2: not a datamover manifest line"),
        "deep nesting": ([h, "[" * 100_000 + "]" * 100_000], ":2: not a datamover manifest line"),
        "deep in a header": ([{**h, "options": _nested(40)}], ":1: not a datamover manifest"),
        "summary says more": ([h, ok, _summary(3, 3)], ":3: the summary says files_ok 3"),
        "summary bytes": ([h, ok, _summary(1, 99)], ":3: the summary says bytes 99"),
        "summary failed": ([h, ok, _summary(1, 1, failed=2)], ":3: the summary says files_failed"),
        "summary without counts": ([h, ok, {"type": "summary", "ended": "x"}], ":3: "),
        "unknown verified": ([h, {**ok, "verified": "trust-me"}], ":2: 'verified' must be one"),
        "verified not a string": ([h, {**ok, "verified": 1}], ":2: 'verified' must be a string"),
        "provider_checksums a list": (
            [h, {**ok, "provider_checksums": ["md5"]}],
            ":2: 'provider_checksums' must be an object",
        ),
        "provider checksum unknown": (
            [h, {**ok, "provider_checksums": {"rot13": "00"}}],
            ":2: 'provider_checksums' names an unknown algorithm",
        ),
        "provider checksum short": (
            [h, {**ok, "provider_checksums": {"crc64nvme": "abc"}}],
            ":2: 'provider_checksums.crc64nvme' has 3 hex digits",
        ),
        "provider checksum upper": (
            [h, {**ok, "provider_checksums": {"crc32c": "ABCDEF01"}}],
            ":2: 'provider_checksums.crc32c' must be lower-case hex",
        ),
        "provider checksum nested": (
            [h, {**ok, "provider_checksums": {"md5": {"x": 1}}}],
            ":2: 'provider_checksums.md5' must be lower-case hex",
        ),
        "summary unverified a string": (
            [h, ok, {**_summary(1, 1), "files_unverified": "1"}],
            ":3: 'files_unverified'",
        ),
        "summary count a string": ([h, ok, {**_summary(1, 1), "files_ok": "1"}], ":3: 'files_ok'"),
    }


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize("case", sorted(_malformed(Path("/x"))))
def test_malformed_manifests_are_one_line_errors_exit_2(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lines, needle = _malformed(tmp_path)[case]
    m = _write(tmp_path / "m.jsonl", *lines)
    for argv in (
        ["manifest", "show", str(m)],
        ["verify", str(m)],
        ["manifest", "export", str(m)],
        ["manifest", "export", str(m), "--format", "bagit", "-o", str(tmp_path / "bag")],
    ):
        line = _cli_fails(argv, capsys, str(m), needle)
        assert len(line) < 600  # one readable line, whatever the input held
    assert not (tmp_path / "bag").exists()


def test_an_overlong_line_is_refused_without_reading_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = tmp_path / "m.jsonl"
    with m.open("wb") as fh:
        fh.write(json.dumps(_header("/x/")).encode() + b"\n")
        fh.write(b'{"type":"file","path":"' + b"a" * (MAX_LINE_BYTES + 10) + b'"}\n')
    _cli_fails(["manifest", "show", str(m)], capsys, f"{m}:2: line longer than 16 MiB")


def test_a_malformed_manifest_through_the_real_cli(tmp_path: Path) -> None:
    """The reproduction: these gave "internal error ... please report it"."""
    for obj in (
        {**_header("/x/"), "format_version": "x"},
        {"type": "file", "path": "a\u0000b", "size": 1, "status": "ok"},
    ):
        m = _write(tmp_path / "m.jsonl", obj if obj["type"] == "header" else _header("/x/"), obj)
        run = subprocess.run([*DM, "verify", str(m)], capture_output=True, text=True, timeout=60)
        assert run.returncode == 2, run.stderr
        assert run.stderr.count("\n") == 1 and run.stderr.startswith("datamover: error: ")
        assert "internal error" not in run.stderr


def test_records_of_refused_keys_are_readable(tmp_path: Path) -> None:
    """failed and deleted entries only record a key (refused, perhaps, because it was
    unsafe): they are shown, never opened, so only the text rules apply."""
    m = _write(
        tmp_path / "m.jsonl",
        _header(str(tmp_path) + "/"),
        _file("a"),
        {"type": "file", "path": "../x", "size": 0, "status": "failed", "error": "refused"},
        {"type": "file", "path": "/abs", "size": 0, "status": "deleted"},
        _summary(1, 1, failed=1),
    )
    manifest = read_manifest(str(m))
    assert [e.path for e in manifest.entries] == ["a", "../x", "/abs"]
    assert manifest.summary is not None
    assert datamover.verify(str(m)).checked == 1  # only "a"


def test_summary_counts_follow_the_last_entry_per_path(tmp_path: Path) -> None:
    """A resumed job lists a path again; an earlier attempt's summary counts the
    entries before it; only a summary on the last line is the manifest's summary."""
    fail = {"type": "file", "path": "a", "size": 1, "status": "failed", "error": "boom"}
    lines = [_header("/x/"), fail, {**_summary(0, 0, failed=1), "aborted": "stop"}, _file("a")]
    manifest = read_manifest(str(_write(tmp_path / "m.jsonl", *lines)))
    assert manifest.summary is None and [e.status for e in manifest.entries] == ["ok"]
    manifest = read_manifest(str(_write(tmp_path / "m.jsonl", *lines, _summary(1, 1))))
    assert manifest.summary is not None and manifest.summary["files_ok"] == 1


def _incomplete(whole: bytes) -> dict[str, bytes]:
    """Ways a finished run's manifest (header, entries, summary) loses its summary."""
    lines = whole.splitlines(keepends=True)
    summary_at = whole.rindex(b'{"type":"summary"')
    return {
        "head": b"".join(lines[:-1]),  # `head -n N`: whole lines, the summary gone
        "cut mid-line": whole[: summary_at - 5],  # an entry torn, no summary
        "header only": lines[0],
        # a resumed run killed while appending after the aborted attempt's summary
        "torn after a summary": whole + b'{"type":"file","path":"sub/c.t',
    }


@pytest.mark.parametrize("how", ["head", "cut mid-line", "header only", "torn after a summary"])
def test_an_incomplete_manifest_is_refused_unless_partial(
    tmp_path: Path, tree: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    """The reproduction: `head -n 5 run1.jsonl > t.jsonl; datamover verify t.jsonl` said
    "OK: 4 of 4 files match" (exit 0), and export wrote the shorter list. A manifest
    at its final path always ends with its summary (manifests/SPEC.md)."""
    report = datamover.copy(str(tree), str(tmp_path / "dst"), manifest=str(tmp_path / "m.jsonl"))
    assert report.ok and report.manifest
    m = tmp_path / "t.jsonl"
    m.write_bytes(_incomplete(Path(report.manifest).read_bytes())[how])
    listed = [e for e in read_manifest(str(m)).entries if e.kind is None]
    for argv, verb in (
        (["verify", str(m)], "verify"),
        (["verify", "--no-download", str(m)], "verify"),
        (["manifest", "export", str(m)], "export"),
        (["manifest", "export", str(m), "-o", str(tmp_path / "SUMS")], "export"),
    ):
        _cli_fails(
            argv,
            capsys,
            f"{m}: manifest has no summary line: it is incomplete",
            f"{verb} the complete manifest, or give --partial",
        )
    assert not (tmp_path / "SUMS").exists()
    with pytest.raises(ManifestError, match="manifest has no summary line"):
        datamover.verify(str(m))
    # Asked for explicitly, the files it lists are checked / exported.
    assert cli.main(["verify", "--partial", str(m)]) == 0
    out = capsys.readouterr().out
    assert f"OK: {len(listed)} of {len(listed)} files match" in out
    assert datamover.verify(str(m), partial=True).checked == len(listed)
    assert cli.main(["manifest", "export", "--partial", str(m)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(listed)
    # manifest show says so too
    assert cli.main(["manifest", "show", str(m)]) == 0
    assert "(incomplete: no summary)" in capsys.readouterr().out


def test_a_complete_manifest_still_verifies_and_exports(
    tmp_path: Path, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = datamover.copy(str(tree), str(tmp_path / "dst"), manifest=str(tmp_path / "m.jsonl"))
    assert report.manifest
    assert cli.main(["verify", report.manifest]) == 0
    assert "OK: 2 of 2 files match" in capsys.readouterr().out
    assert cli.main(["manifest", "export", report.manifest]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    _cli_fails(
        ["manifest", "export", report.manifest, "--format", "bagit", "-o", "x", "--partial"],
        capsys,
        "--partial goes with --format sha256sum",
    )


def test_a_summary_that_does_not_add_up_is_refused(
    tmp_path: Path, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An entry cut out of a finished manifest: its summary disagrees, verify refuses."""
    report = datamover.copy(str(tree), str(tmp_path / "dst"), manifest=str(tmp_path / "m.jsonl"))
    assert report.manifest
    lines = Path(report.manifest).read_bytes().splitlines(keepends=True)
    m = tmp_path / "t.jsonl"
    m.write_bytes(b"".join(line for line in lines if b'"a.txt"' not in line))
    for argv in (["verify", str(m)], ["manifest", "export", str(m)]):
        _cli_fails(argv, capsys, "the summary says files_ok 2, the entries above it add up to 1")


def test_export_to_a_missing_directory_is_one_line(
    tmp_path: Path, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reproduction: "internal error: FileNotFoundError: ... sums.txt.dmtmp-14943"."""
    report = datamover.copy(str(tree), str(tmp_path / "dst"), manifest=str(tmp_path / "m.jsonl"))
    assert report.manifest
    out = tmp_path / "nodir" / "sums.txt"
    _cli_fails(
        ["manifest", "export", report.manifest, "-o", str(out)],
        capsys,
        f"cannot write {out}: No such file or directory",
    )
    assert not (tmp_path / "nodir").exists()


# -- exports ------------------------------------------------------------------------------


def test_sums_export_refuses_a_path_that_leaves_the_tree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = _write(tmp_path / "m.jsonl", _header("/x/"), _file("../../etc/passwd"), _summary(1, 1))
    _cli_fails(["manifest", "export", str(m)], capsys, ":2: path '../../etc/passwd' refused")
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("copy", [False, True])
@pytest.mark.parametrize("path", ["../victim", "/VICTIM", "data/../../victim"])
def test_bagit_export_writes_only_inside_its_data_directory(
    tmp_path: Path, tree: Path, copy: bool, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reproduction: payload landed outside data/, and with an absolute path and
    --copy an outside file was truncated."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    path = path.replace("/VICTIM", str(victim))
    m = _write(
        tmp_path / "m.jsonl",
        _header(str(tree) + "/"),
        _file("a.txt", b"alpha\n"),
        _file(path, b"keep me"),
        _summary(2, 13),
    )
    bag = tmp_path / "bag"
    argv = ["manifest", "export", str(m), "--format", "bagit", "-o", str(bag)]
    _cli_fails([*argv, "--copy"] if copy else argv, capsys, ":3: path", "refused")
    assert victim.read_bytes() == b"keep me"
    assert not bag.exists()


@pytest.mark.parametrize("copy", [False, True])
def test_bagit_export_follows_no_symlink_in_the_copy(
    tmp_path: Path, tree: Path, outside: Path, copy: bool
) -> None:
    (tree / "up").symlink_to(tmp_path)
    (tree / "leak").symlink_to(outside)
    for entry in (_file("up/secret", SECRET), _file("leak", SECRET)):
        m = _write(tmp_path / "m.jsonl", _header(str(tree) + "/"), entry, _summary(1, len(SECRET)))
        bag = tmp_path / f"bag-{entry['path'].replace('/', '-')}"
        with pytest.raises(BagError, match="symlink"):
            export_bag(str(m), str(bag), link=not copy)
        found = [p for p in bag.rglob("*") if p.is_file()]
        assert found == [], found


def test_bagit_copy_never_truncates_or_follows(tmp_path: Path, outside: Path) -> None:
    src = tmp_path / "payload"
    src.write_bytes(b"new bytes")
    fd = os.open(src, os.O_RDONLY)
    bag = tmp_path / "bag"
    bag.mkdir()
    (bag / "there").write_bytes(b"already here")
    (bag / "link").symlink_to(outside)
    dir_fd = os.open(bag, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in ("there", "link"):
            with pytest.raises(BagError, match="already in the bag"):
                _copy_hashing(fd, os.fstat(fd), dir_fd, name, "sha256")
    finally:
        os.close(fd)
        os.close(dir_fd)
    assert (bag / "there").read_bytes() == b"already here"
    assert outside.read_bytes() == SECRET


def test_bagit_tag_files_refuse_a_planted_symlink(
    tmp_path: Path, tree: Path, outside: Path
) -> None:
    bag = tmp_path / "bag"
    report = datamover.copy(str(tree), str(bag), bagit=True)
    assert report.ok
    (bag / "bag-info.txt").unlink()
    (bag / "bag-info.txt").symlink_to(outside)
    from datamover.manifest.bagit import finish_bag

    assert report.manifest
    with pytest.raises(BagError, match="already exists"):
        finish_bag(str(bag), report.manifest)
    assert outside.read_bytes() == SECRET


# -- the engine writes only what the reader reads ------------------------------------------


def test_keys_a_manifest_cant_hold_fail_per_file_on_any_destination(tmp_path: Path) -> None:
    """An object key with '..', an empty or a '.' component can't be listed as copied
    (verify or an export would be sent out of the tree): it fails, and the manifest
    of the run reads back."""
    import fsspec

    fs = fsspec.filesystem("memory")
    keys = {"ok.txt": b"fine", "a/../b": b"dots", "c//d": b"empty", "./e": b"dot"}
    for key, data in keys.items():
        with fs.open(f"/hostile-keys/src/{key}", "wb") as fh:
            fh.write(data)
    try:
        report = datamover.copy(
            "memory://hostile-keys/src",
            "memory://hostile-keys/dst",
            manifest=str(tmp_path / "m.jsonl"),
        )
        manifest = read_manifest(str(tmp_path / "m.jsonl"))
    finally:
        fs.rm("/hostile-keys", recursive=True)
    by_path = {e.path: e for e in manifest.entries}
    assert sorted(by_path) == sorted(keys)
    assert by_path["ok.txt"].status == "ok"
    for path in ("a/../b", "c//d", "./e"):
        assert by_path[path].status == "failed"
        assert "refusing key" in (by_path[path].error or "")
    assert (report.files_ok, report.files_failed) == (1, 3)


@pytest.mark.parametrize(
    "path",
    [
        "a",
        "a/b",
        "dir/",
        "...",
        "a..b",
        "ü/ñ",
        "a\nb",
        "../x",
        "/x",
        "a//b",
        "./a",
        "a/.",
        "a/../b",
        ".",
        "..",
        "a\u0000b",
    ],
)
@pytest.mark.parametrize("status", ["ok", "failed"])
def test_the_schema_and_the_reader_agree_on_paths(tmp_path: Path, path: str, status: str) -> None:
    import jsonschema

    schema = json.loads((Path(__file__).parents[2] / "manifests/manifest.schema.json").read_text())
    entry = {**_file(path), "status": status, **({"error": "e"} if status == "failed" else {})}
    try:
        jsonschema.validate(entry, schema)
        schema_ok = True
    except jsonschema.ValidationError:
        schema_ok = False
    summary = _summary(int(status == "ok"), int(status == "ok"), failed=int(status != "ok"))
    m = _write(tmp_path / "m.jsonl", _header("/x/"), entry, summary)
    try:
        read_manifest(str(m))
        reader_ok = True
    except ManifestError:
        reader_ok = False
    assert schema_ok == reader_ok


def test_malformed_digests_from_a_store_never_reach_a_manifest() -> None:
    """Metadata and provider headers are anybody's to write; ``ObjectInfo`` keeps a
    digest only when it is hex of its algorithm's length (so a server-side copy or a
    sync skip never records garbage as a digest)."""
    from datamover.stores.base import ObjectInfo, digests_from_metadata

    good = "AB" * 32
    info = ObjectInfo(
        "k",
        1,
        checksums={"sha256": good, "md5": "z" * 32, "crc32c": "123", "sha512": "\n" * 128},
    )
    assert info.checksums == {"sha256": good.lower()}
    meta = {"datamover-sha256": "../../etc/passwd", "datamover-md5": "0" * 32}
    assert ObjectInfo("k", 1, checksums=digests_from_metadata(meta)).checksums == {"md5": "0" * 32}


def test_an_unchanged_key_a_manifest_cant_hold_is_failed_not_skipped(tmp_path: Path) -> None:
    """sync finds ``a//b`` equal on both sides: it is recorded as refused, not as a
    skipped file verify would read."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for side in ("src", "dst"):
        for key in ("ok.txt", "c//d"):
            with fs.open(f"/hostile-sync/{side}/{key}", "wb") as fh:
                fh.write(b"same bytes")
    try:
        report = datamover.sync(
            "memory://hostile-sync/src",
            "memory://hostile-sync/dst",
            checksum=True,
            manifest=str(tmp_path / "m.jsonl"),
        )
        manifest = read_manifest(str(tmp_path / "m.jsonl"))
    finally:
        fs.rm("/hostile-sync", recursive=True)
    by_path = {e.path: e for e in manifest.entries}
    assert by_path["ok.txt"].status == "skipped"
    assert by_path["c//d"].status == "failed" and "refusing key" in (by_path["c//d"].error or "")
    assert (report.files_skipped, report.files_failed) == (1, 1)


@pytest.mark.parametrize(("path", "accepted"), [("d/", True), ("d", False), ("a/b", False)])
def test_a_directory_entry_is_a_path_ending_in_a_slash(
    tmp_path: Path, path: str, accepted: bool
) -> None:
    """A hand-edited ``"kind": "dir"`` on a file's path made verify pass it unread:
    refused by the reader and by the schema alike."""
    import jsonschema

    schema = json.loads((Path(__file__).parents[2] / "manifests/manifest.schema.json").read_text())
    entry = {"type": "file", "path": path, "size": 0, "status": "ok", "kind": "dir"}
    try:
        jsonschema.validate(entry, schema)
        schema_ok = True
    except jsonschema.ValidationError:
        schema_ok = False
    m = _write(tmp_path / "m.jsonl", _header("/x/"), entry, _summary(1, 0))
    try:
        read_manifest(str(m))
        reader_ok = True
    except ManifestError as e:
        assert "does not end in '/'" in str(e)
        reader_ok = False
    assert schema_ok == reader_ok == accepted
