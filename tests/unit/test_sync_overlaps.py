"""Copies and syncs whose two sides overlap, and syncs whose source could not be listed
whole: nothing of the source, and nothing the source still holds, is ever deleted.

As rclone ("can't sync or move files on overlapping remotes"): a tree copied or synced
onto itself, into itself, or (with ``--delete``) from inside the destination, is refused
in one line, before anything is listed, whether the two paths are spelt alike or only
resolve alike (a symlink on the way). A directory of the source that can't be listed
fails the run, even when filters would have dropped the directory's own name, so its
files' copies are never deleted as if the source lacked them.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import datamover
from datamover.errors import StoreError, UsageError
from datamover.stores.posix.beneath import Beneath
from datamover.stores.posix.store import PosixStore

DM = [sys.executable, "-m", "datamover"]


def _tree(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            out[rel] = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
    return out


@pytest.fixture
def place(tmp_path: Path) -> Path:
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "a").write_bytes(b"a")
    (tmp_path / "src" / "sub" / "b").write_bytes(b"b")
    (tmp_path / "alias").symlink_to("src")
    (tmp_path / "src" / "link-to-a").symlink_to("a")
    return tmp_path


Run = Callable[[Path], object]

REFUSED: dict[str, tuple[Run, str]] = {
    "copy onto itself": (lambda t: datamover.copy(f"{t}/src", f"{t}/src"), "same place"),
    "sync onto itself": (
        lambda t: datamover.sync(f"{t}/src/", f"{t}/src", delete=True),
        "same place",
    ),
    "sync onto itself through a symlink": (
        lambda t: datamover.sync(f"{t}/src", f"{t}/alias", delete=True),
        "same place",
    ),
    "sync onto itself through ..": (
        lambda t: datamover.sync(f"{t}/src", f"{t}/src/sub/..", delete=True),
        "same place",
    ),
    "sync into itself through a symlink": (
        lambda t: datamover.sync(f"{t}/src", f"{t}/alias/backup"),
        "inside source",
    ),
    "sync --delete from inside the destination": (
        lambda t: datamover.sync(f"{t}/src/sub", f"{t}/src", delete=True),
        "would delete the source",
    ),
    "sync --delete from inside it, through a symlink": (
        lambda t: datamover.sync(f"{t}/alias/sub", f"{t}/src", delete=True),
        "would delete the source",
    ),
    "dry run too": (
        lambda t: datamover.sync(f"{t}/src/sub", f"{t}/alias", delete=True, dry_run=True),
        "would delete the source",
    ),
    "a file onto itself": (lambda t: datamover.copy(f"{t}/src/a", f"{t}/src/"), "same file"),
    "a file onto itself through a symlink": (
        lambda t: datamover.copy(f"{t}/src/a", f"{t}/alias/a"),
        "same file",
    ),
    # Copied as a link, it would replace the file with a link to itself.
    "a symlink onto the file it points to": (
        lambda t: datamover.copy(f"{t}/src/link-to-a", f"{t}/src/a"),
        "same file",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_overlapping_sides_are_refused_and_nothing_changes(place: Path, case: str) -> None:
    run, says = REFUSED[case]
    before = _tree(place)
    with pytest.raises(UsageError, match=says):
        run(place)
    assert _tree(place) == before


def test_refusal_is_one_line_exit_2(place: Path) -> None:
    env = {**os.environ, "XDG_STATE_HOME": str(place / "state")}
    run = subprocess.run(
        [*DM, "sync", str(place / "src" / "sub"), str(place / "alias"), "--delete"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == [
        f"datamover: error: source {place}/src/sub/ is inside destination {place}/alias/, "
        "so sync --delete would delete the source; sync into a place that does not hold "
        "the source"
    ]
    assert (place / "src" / "a").exists() and (place / "src" / "sub" / "b").exists()


def test_what_overlaps_harmlessly_still_runs(place: Path) -> None:
    # Without --delete nothing can be lost: the subtree's files land beside it (as
    # rclone's copy does).
    assert datamover.sync(f"{place}/src/sub", f"{place}/src").ok
    assert datamover.copy(f"{place}/src/sub", f"{place}/alias").ok
    assert (place / "src" / "b").read_bytes() == b"b"
    # Siblings whose names start alike are no overlap.
    (place / "src2").mkdir()
    assert datamover.sync(f"{place}/src", f"{place}/src2", delete=True).ok
    assert (place / "src2" / "sub" / "b").read_bytes() == b"b"


def test_a_symlink_to_a_directory_is_followed_as_the_root(place: Path) -> None:
    (place / "dst").mkdir()
    (place / "dst" / "gone").write_bytes(b"x")
    (place / "current").symlink_to("dst")
    report = datamover.sync(f"{place}/src", f"{place}/current", delete=True)
    assert report.ok and report.deleted == ["gone"]
    assert (place / "current").is_symlink()
    assert _tree(place / "dst") == {"a": b"a", "sub/b": b"b", "link-to-a": b"a"}


@pytest.fixture
def unlistable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """src/locked can't be listed (EACCES, as for another user's 0700 directory; faked,
    so it holds as root too); dst holds copies of its files and a file the source lacks."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "locked").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"a")
    (src / "locked" / "s.txt").write_bytes(b"s")
    (dst / "locked").mkdir(parents=True)
    (dst / "locked" / "s.txt").write_bytes(b"copy of s")
    (dst / "locked" / "t.dat").write_bytes(b"copy of t")
    (dst / "gone.txt").write_bytes(b"gone")
    real = Beneath.listdir

    def listdir(self: Beneath, rel_dir: str) -> list[tuple[str, os.stat_result | OSError]]:
        if rel_dir.rstrip("/").endswith("locked") and str(src) in self.path:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(self, rel_dir)

    monkeypatch.setattr(Beneath, "listdir", listdir)
    return tmp_path


FILTERS: dict[str, dict[str, object]] = {
    "no filter": {},
    "include *.txt": {"include": ["*.txt"]},
    "include a file below it": {"include": ["locked/*.txt", "a.txt"]},
    "exclude other files": {"exclude": ["*.dat"]},
    "size bounds": {"min_size": 1},
}


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize("name", list(FILTERS))
def test_a_directory_that_cant_be_listed_stops_deletions(
    unlistable: Path, name: str, dry_run: bool
) -> None:
    before = _tree(unlistable / "dst")
    report = datamover.sync(
        f"{unlistable}/src",
        f"{unlistable}/dst",
        delete=True,
        dry_run=dry_run,
        **FILTERS[name],  # type: ignore[arg-type]
    )
    assert not report.ok
    assert [path for path, _ in report.failures] == ["locked/"]
    assert "can't be listed" in report.failures[0][1]
    assert report.deleted == []
    after = _tree(unlistable / "dst")
    assert {k: v for k, v in after.items() if k != "a.txt"} == before


def test_a_directory_the_filter_excludes_whole_may_be_unlistable(unlistable: Path) -> None:
    report = datamover.sync(
        f"{unlistable}/src", f"{unlistable}/dst", delete=True, exclude=["locked/**"]
    )
    assert report.ok and report.deleted == ["gone.txt"]
    assert (unlistable / "dst" / "locked" / "s.txt").read_bytes() == b"copy of s"


def test_a_source_listing_that_breaks_off_deletes_nothing(
    place: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (place / "dst").mkdir()
    for name in ("a", "z-only-in-dst"):
        (place / "dst" / name).write_bytes(b"old")
    real = PosixStore.list
    src_root = str(place / "src").lstrip("/")

    def list_(self: PosixStore, prefix: str, *, recursive: bool = True):  # type: ignore[no-untyped-def]
        for n, info in enumerate(real(self, prefix, recursive=recursive)):
            if prefix.startswith(src_root) and n == 1:
                raise StoreError(f"{prefix}: the listing failed half-way")
            yield info

    monkeypatch.setattr(PosixStore, "list", list_)
    with pytest.raises(StoreError, match="half-way"):
        datamover.sync(f"{place}/src", f"{place}/dst", delete=True)
    assert sorted(os.listdir(place / "dst")) == ["a", "z-only-in-dst"]


def test_a_name_differing_by_case_is_not_deleted_where_case_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On vfat, SMB or casefold ext4, "readme" in the destination *is* the file the
    source's "README" was just written to: deleting it would delete that copy. (The
    folding is faked here: tmp_path is case-sensitive, so both names stay.)"""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "README").write_bytes(b"new")
    (src / "Data").mkdir()
    (src / "Data" / "x").write_bytes(b"x")
    (dst / "readme").write_bytes(b"old")
    (dst / "data").mkdir()
    (dst / "data" / "X").write_bytes(b"old x")
    (dst / "gone").write_bytes(b"gone")
    dst_key = str(dst).lstrip("/") + "/"
    monkeypatch.setattr(PosixStore, "ignores_case", lambda self, root: root == dst_key)
    report = datamover.sync(str(src), str(dst), delete=True)
    assert report.ok and report.deleted == ["gone"]
    assert (dst / "readme").exists() and (dst / "data" / "X").exists()
