"""``sync --delete --max-delete N``: deletions come after the copies (as in rclone),
so a run stopped by the limit has copied the new and changed files; its one-line
error says so, and its manifest (left unfinished, so a rerun resumes) lists them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DM = [sys.executable, "-m", "datamover"]


def _sync(
    src: Path, dst: Path, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DM, "sync", str(src), str(dst), "--delete", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_max_delete_says_the_copies_were_made(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "same").write_bytes(b"same")
    (src / "new").write_bytes(b"new")
    (src / "changed").write_bytes(b"changed now")
    (dst / "changed").write_bytes(b"old")
    (dst / "gone1").write_bytes(b"1")
    (dst / "gone2").write_bytes(b"2")
    os.utime(src / "same", ns=(1, 1_000_000_000))
    (dst / "same").write_bytes(b"same")
    os.utime(dst / "same", ns=(1, 1_000_000_000))
    manifest = tmp_path / "m.jsonl"
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    run = _sync(src, dst, "--max-delete", "1", "--manifest", str(manifest), env=env)
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines == [
        "datamover: error: sync would delete 2 files, more than --max-delete 1; nothing "
        "was deleted (the 2 new and changed files were copied; raise --max-delete to "
        "allow the deletions)"
    ], run.stderr
    assert (dst / "new").read_bytes() == b"new"
    assert (dst / "changed").read_bytes() == b"changed now"
    assert (dst / "gone1").exists() and (dst / "gone2").exists()
    records = [json.loads(line) for line in Path(f"{manifest}.partial").read_text().splitlines()]
    ok = sorted(r["path"] for r in records if r.get("status") == "ok")
    assert ok == ["changed", "new"]

    # With the limit raised, the same sync resumes that job and deletes.
    again = _sync(src, dst, "--max-delete", "2", "--manifest", str(manifest), env=env)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in dst.iterdir()) == ["changed", "new", "same"]
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert sorted(r["path"] for r in records if r.get("status") == "deleted") == [
        "gone1",
        "gone2",
    ]


def test_delete_removes_a_whole_extra_tree_in_one_run(tmp_path: Path) -> None:
    """A destination-only tree goes in one run, its directories too, deepest first
    (it went one level per run: a listing shows only a tree's empty leaves); a
    directory the source has stays, and so does one holding an excluded file."""
    import datamover

    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "keep").mkdir(parents=True)
    (src / "keep" / "k").write_text("k")
    (dst / "extra" / "a" / "b").mkdir(parents=True)
    (dst / "extra" / "a" / "b" / "f").write_text("1")
    (dst / "extra" / "g").write_text("2")
    (dst / "keep" / "sub").mkdir(parents=True)
    (dst / "keep" / "sub" / "z").write_text("3")
    (dst / "kept" / "deep").mkdir(parents=True)
    (dst / "kept" / "deep" / "x.tmp").write_text("excluded")
    (dst / "kept" / "y").write_text("4")
    report = datamover.sync(str(src), str(dst), delete=True, exclude=["*.tmp"])
    assert report.ok, report.failures
    left = sorted(str(p.relative_to(dst)) for p in dst.rglob("*"))
    assert left == ["keep", "keep/k", "kept", "kept/deep", "kept/deep/x.tmp"], left
    assert {"extra/", "extra/a/", "extra/a/b/", "keep/sub/"} <= set(report.deleted)
    again = datamover.sync(str(src), str(dst), delete=True, exclude=["*.tmp"])
    assert again.ok and again.deleted == [], again.deleted


def test_a_dry_run_counts_an_empty_directory_as_no_bytes_and_one_file_as_one(
    tmp_path: Path,
) -> None:
    """A dry run said "would copy emptydir/ (4.0 KiB)" (the directory's st_size) and
    "1 files"."""
    src = tmp_path / "src"
    (src / "emptydir").mkdir(parents=True)
    run = subprocess.run(
        [*DM, "copy", str(src), str(tmp_path / "dst"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "would copy emptydir/ (0 B)",
        "dry run: would copy 1 file (0 B); nothing was transferred",
    ]
