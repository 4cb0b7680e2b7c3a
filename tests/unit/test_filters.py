"""Filters: rclone-style globs, rule order, file lists, size and age bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamover.errors import UsageError
from datamover.filters import (
    EXCLUDE,
    INCLUDE,
    FileFilter,
    glob_to_regex,
    parse_age,
    parse_duration,
)
from datamover.stores.base import ObjectInfo


def _match(pattern: str, path: str) -> bool:
    return glob_to_regex(pattern).search(path) is not None


@pytest.mark.parametrize(
    ("pattern", "path", "hit"),
    [
        ("*.h5", "x.h5", True),
        ("*.h5", "a/b/x.h5", True),  # unanchored: any depth
        ("*.h5", "a/x.h5.bak", False),
        ("*.h5", "a.h5/x", False),
        ("/top.txt", "top.txt", True),
        ("/top.txt", "a/top.txt", False),  # anchored at the root
        ("raw/*", "raw/x", True),
        ("raw/*", "raw/x/y", False),  # * stays within a segment
        ("raw/**", "raw/x/y", True),
        ("raw/**", "a/raw/x/y", True),
        ("tmp/", "tmp/a/b", True),  # trailing / = everything under
        ("file?.txt", "file1.txt", True),
        ("file?.txt", "file/.txt", False),
        ("[ab].txt", "b.txt", True),
        ("[!ab].txt", "b.txt", False),
        ("[!ab].txt", "c.txt", True),
        ("*.{h5,nc}", "d/x.nc", True),
        ("*.{h5,nc}", "d/x.csv", False),
        ("**/cache/**", "a/cache/b", True),
        ("a+b (1).txt", "a+b (1).txt", True),  # regex metacharacters are literal
        ("x.txt", "ax.txt", False),  # whole segments only
    ],
)
def test_glob_semantics(pattern: str, path: str, hit: bool) -> None:
    assert _match(pattern, path) is hit


def test_first_matching_rule_wins_in_order() -> None:
    keep_raw = FileFilter.build(rules=[(INCLUDE, "raw/keep.tmp"), (EXCLUDE, "*.tmp")])
    assert keep_raw.path_allowed("raw/keep.tmp")
    assert not keep_raw.path_allowed("raw/other.tmp")
    # rclone: with any include rule, a file no rule matches is excluded.
    assert not keep_raw.path_allowed("raw/data.h5")
    only = FileFilter.build(rules=[(EXCLUDE, "tmp/**"), (INCLUDE, "*.h5")])
    assert only.path_allowed("a/x.h5")
    assert not only.path_allowed("tmp/x.h5")  # excluded first
    assert not only.path_allowed("a/x.txt")  # no rule matched, includes exist


def test_exclude_only_keeps_unmatched() -> None:
    flt = FileFilter.build(exclude=["*.tmp", "cache/"])
    assert flt.path_allowed("x.h5")
    assert not flt.path_allowed("a/b.tmp")
    assert not flt.path_allowed("cache/z")


def test_keyword_excludes_are_tried_before_includes() -> None:
    flt = FileFilter.build(include=["*.h5"], exclude=["scratch/**"])
    assert flt.path_allowed("run/a.h5")
    assert not flt.path_allowed("scratch/a.h5")


def test_files_from(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("# wanted\n./a/x.h5\n\n/b.txt\nc d.txt\n")
    flt = FileFilter.build(files_from=str(listing), exclude=["b.txt"])
    assert flt.path_allowed("a/x.h5")
    assert flt.path_allowed("c d.txt")
    assert not flt.path_allowed("b.txt")  # listed but excluded by a rule
    assert not flt.path_allowed("other.h5")
    with pytest.raises(UsageError, match="files-from"):
        FileFilter.build(files_from=str(tmp_path / "missing.txt"))


def test_sizes_are_inclusive_and_take_units() -> None:
    flt = FileFilter.build(min_size="1K", max_size="1M")
    info = lambda n: ObjectInfo("k", n)  # noqa: E731
    assert not flt.allows("k", info(1023))
    assert flt.allows("k", info(1024))
    assert flt.allows("k", info(1024 * 1024))
    assert not flt.allows("k", info(1024 * 1024 + 1))
    with pytest.raises(UsageError, match="larger"):
        FileFilter.build(min_size="2M", max_size="1M")


def test_ages_durations_and_dates() -> None:
    now = 1_700_000_000.0
    assert parse_duration("90") == 90
    assert parse_duration("10m") == 600
    assert parse_duration("1.5h") == 5400
    assert parse_duration("7d") == 7 * 86400
    assert parse_age("2023-11-14T22:13:20Z", now) == now
    assert parse_age("2023-11-14", now) == now - (22 * 3600 + 13 * 60 + 20)
    with pytest.raises(UsageError, match="duration"):
        parse_age("yesterday", now)

    young = FileFilter.build(max_age="1h", now=now)
    assert young.allows("k", ObjectInfo("k", 1, mtime=now - 60))
    assert not young.allows("k", ObjectInfo("k", 1, mtime=now - 7200))
    assert young.allows("k", ObjectInfo("k", 1, mtime=None))  # unknown mtime passes
    old = FileFilter.build(min_age="1d", now=now)
    assert old.allows("k", ObjectInfo("k", 1, mtime=now - 2 * 86400))
    assert not old.allows("k", ObjectInfo("k", 1, mtime=now - 60))
    with pytest.raises(UsageError, match="older"):
        FileFilter.build(max_age="1h", min_age="2h", now=now)


def test_bad_patterns_are_usage_errors() -> None:
    for bad in ("", "[abc", "{a,b"):
        with pytest.raises(UsageError):
            glob_to_regex(bad)
    with pytest.raises(UsageError, match="sign"):
        FileFilter.build(rules=[("*", "x")])


def test_inactive_filter_and_description() -> None:
    assert not FileFilter.build().active
    flt = FileFilter.build(include=["*.h5"], max_size=10)
    assert flt.active and not flt.by_path_only
    assert flt.describe() == {"rules": ["+ *.h5"], "max_size": 10}


def test_dir_excluded_only_when_nothing_below_can_be_taken() -> None:
    # Provably excluded: a rule taking everything below what it matches, before any
    # include rule; or a file list naming nothing below.
    for exclude in (["locked/**"], ["locked/"], ["/locked/**"], ["lo*/**"], ["**"]):
        assert FileFilter.build(exclude=exclude).dir_excluded("locked/"), exclude
    assert FileFilter.build(exclude=["locked/"], include=["*.txt"]).dir_excluded("locked/")
    assert FileFilter.build(exclude=["raw/"]).dir_excluded("x/raw/")
    assert FileFilter.build(files_from=["a", "other/b"]).dir_excluded("locked/")
    # Not provable: something below may still be taken.
    for kwargs in (
        {},
        {"include": ["*.txt"]},  # locked/s.txt
        {"include": ["locked/*.txt"]},
        {"exclude": ["locked/*"]},  # locked/x/y is not excluded
        {"exclude": ["*.dat"]},
        {"rules": [("+", "a"), ("-", "locked/**")]},  # an include comes first
        {"files_from": ["locked/s.txt"]},
        {"exclude": ["/locked/**"]},  # anchored: x/locked/ is another directory
    ):
        flt = FileFilter.build(**kwargs)  # type: ignore[arg-type]
        rel = "x/locked/" if kwargs.get("exclude") == ["/locked/**"] else "locked/"
        assert not flt.dir_excluded(rel), kwargs


def test_paths_from_files_from_the_source_lacks_are_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A --files-from path the source does not have was left out without a word (as
    rsync says "link_stat failed"): a warning names how many and the first; those a
    sync finds unchanged are not among them."""
    import datamover

    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    (src / "b").write_text("b")
    listed = ["a", "b", "gone", "sub/also-gone"]
    with caplog.at_level("WARNING", logger="datamover"):
        report = datamover.copy(str(src), str(tmp_path / "dst"), files_from=listed)
    assert report.ok and report.files_ok == 2
    assert "2 paths given by --files-from are not in the source" in caplog.text
    assert "'gone'" in caplog.text
    caplog.clear()
    (src / "c").write_text("c")
    with caplog.at_level("WARNING", logger="datamover"):
        again = datamover.sync(str(src), str(tmp_path / "dst"), files_from=["a", "b", "c"])
    assert again.ok and again.files_ok == 1 and again.files_skipped == 2
    assert "files-from" not in caplog.text
