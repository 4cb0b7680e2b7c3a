"""Hard links across re-runs and filters, and directories the mount made as their
metadata object alone (found by a new-user re-test): a second sync of an unchanged
tree moves nothing and keeps the links, in both directions; a link added later to a
file already there becomes a marker; a sync into POSIX leaves no temp name behind; a
filter that leaves out one name of a linked file copies the name it keeps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import datamover
from datamover.errors import NotFound
from datamover.manifest import read_manifest
from datamover.stores import open_store
from datamover.stores.base import DIR_META_NAME, HARDLINK_KEY

from serverenv import ServerEnv, use_server

pytestmark = pytest.mark.cloud

DM_EXPORT = [sys.executable, "-m", "datamover", "manifest", "export"]


def _tree(root: Path) -> None:
    root.mkdir()
    (root / "a").write_bytes(b"data" * 1000)
    os.link(root / "a", root / "b")
    (root / "c").write_bytes(b"plain")


def _is_marker(url: str, key: str) -> bool:
    store, _ = open_store(url)
    with store:
        info = store.stat(key)
    return info.size == 0 and HARDLINK_KEY in info.metadata


def test_second_sync_to_a_bucket_moves_nothing_and_keeps_the_link(
    seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _tree(src)
    url = seaweed_env.url("hl")
    first = datamover.sync(str(src), url)
    assert first.ok and first.files_ok == 3, first.failures
    again = datamover.sync(str(src), url)
    assert again.ok, again.failures
    assert (again.files_ok, again.bytes, again.files_skipped) == (0, 0, 3)
    assert _is_marker(seaweed_env.url(), "hl/b")
    # A link made later to a file already there: a marker too, the target untouched.
    os.link(src / "a", src / "b2")
    later = datamover.sync(str(src), url)
    assert later.ok, later.failures
    assert later.files_ok == 1, later
    assert _is_marker(seaweed_env.url(), "hl/b2"), later
    assert _is_marker(seaweed_env.url(), "hl/b2")
    back = tmp_path / "back"
    assert datamover.copy(url, str(back)).ok
    inodes = {n: (back / n).stat().st_ino for n in ("a", "b", "b2")}
    assert len(set(inodes.values())) == 1, inodes
    assert (back / "b2").read_bytes() == b"data" * 1000


def test_sync_from_a_bucket_again_leaves_no_temp_and_moves_nothing(
    seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _tree(src)
    url = seaweed_env.url("hl2")
    assert datamover.copy(str(src), url).ok
    dst = tmp_path / "dst"
    for run in range(3):
        report = datamover.sync(url, str(dst))
        assert report.ok, report.failures
        if run:
            assert (report.files_ok, report.bytes_moved) == (0, 0), run
        assert sorted(os.listdir(dst)) == ["a", "b", "c"], run
    assert (dst / "a").stat().st_ino == (dst / "b").stat().st_ino
    assert (dst / "a").stat().st_nlink == 2


@pytest.mark.parametrize("to_bucket", [False, True], ids=["posix", "bucket"])
def test_a_filter_that_leaves_out_one_name_of_a_link_copies_the_other(
    seaweed_env: ServerEnv, tmp_path: Path, to_bucket: bool
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "z.h5").write_bytes(b"x" * 100)
    os.link(src / "z.h5", src / "a.link")  # sorts first: the first name of the pair
    dst = seaweed_env.url("flt") if to_bucket else str(tmp_path / "dst")
    report = datamover.copy(str(src), dst, include=["*.h5"])
    assert report.ok and report.files_ok == 1, report.failures
    only = datamover.copy(str(src), dst + "-from", files_from=["z.h5"])
    assert only.ok and only.files_ok == 1, only.failures
    if not to_bucket:
        assert os.listdir(dst) == ["z.h5"]
        assert (Path(dst) / "z.h5").read_bytes() == b"x" * 100


def test_a_directory_only_its_dir_meta_object_shows_is_copied_and_listed(
    seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    """Where markers drop metadata the mount makes (and renames) a directory as its
    ``.datamover-dirmeta`` object alone (found by a new-user re-test: empty
    directories renamed through a SeaweedFS mount were lost by copy, sync and ls -R)."""
    store, _ = open_store(seaweed_env.url())
    with store:
        store.put("dm/e4/" + DIR_META_NAME, b"", metadata={"mode": "16872"})
        store.put("dm/top/sub/" + DIR_META_NAME, b"")
        store.put("dm/top/file", b"x")
        store.put("dm/" + DIR_META_NAME, b"")  # the root's own: no directory of its own
    url = seaweed_env.url("dm")
    out = tmp_path / "out"
    report = datamover.copy(url, str(out))
    assert report.ok, report.failures
    found = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert found == ["e4", "top", "top/file", "top/sub"], found
    assert not any(DIR_META_NAME in p for p in found)
    again = tmp_path / "again"
    assert datamover.sync(url, str(again)).ok
    assert (again / "e4").is_dir() and (again / "top" / "sub").is_dir()
    assert datamover.sync(url, str(again)).files_ok == 0  # the second: nothing to do
    ls = subprocess.run(
        [sys.executable, "-m", "datamover", "ls", "-R", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "e4/" in ls and "sub/" in ls and DIR_META_NAME not in ls, ls


def test_linking_a_name_that_already_is_that_link_leaves_no_temp(tmp_path: Path) -> None:
    """``rename(2)`` of two names of one file does nothing: the temp name of a link
    made again (a marker written where the link already is) must still go."""
    root = tmp_path / "t"
    root.mkdir()
    (root / "a").write_bytes(b"x" * 10)
    os.link(root / "a", root / "b")
    store, key = open_store(str(root))
    with store:
        base = key.rstrip("/") + "/"
        store.confine(base)
        store.put(base + "b", b"", metadata={HARDLINK_KEY: base + "a"})
    assert sorted(os.listdir(root)) == ["a", "b"]
    assert (root / "a").stat().st_ino == (root / "b").stat().st_ino


def test_a_crafted_marker_at_the_destination_is_written_again_not_followed(
    seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    """A destination marker whose target leaves the tree (``../``, the bucket
    writer's word) never makes the sync look outside it: the link is written again."""
    src = tmp_path / "src"
    _tree(src)
    url = seaweed_env.url("crafted")
    assert datamover.sync(str(src), url).ok
    store, _ = open_store(seaweed_env.url())
    with store:
        store.put("crafted/b", b"", metadata={HARDLINK_KEY: "crafted/../../etc/hostname"})
    again = datamover.sync(str(src), url)
    assert again.ok and again.files_ok == 1, again.failures
    with store:
        assert store.stat("crafted/b").metadata[HARDLINK_KEY] == "crafted/a"


def test_verify_finds_a_hard_link_marker_gone_or_repointed(
    seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    """On a store without hard links, a link is a marker object: verify checks it is
    there and names the manifest's target (it counted it ok unread)."""
    src = tmp_path / "src"
    _tree(src)
    manifest = tmp_path / "m.jsonl"
    assert datamover.copy(str(src), seaweed_env.url("v"), manifest=str(manifest)).ok
    assert datamover.verify(str(manifest)).passed
    store, _ = open_store(seaweed_env.url())
    with store:
        store.put("v/b", b"", metadata={HARDLINK_KEY: "v/c"})
        wrong = datamover.verify(str(manifest))
        assert not wrong.passed and [p for p, _ in wrong.mismatched] == ["b"], wrong
        store.delete("v/b")
    gone = datamover.verify(str(manifest))
    assert not gone.passed and gone.missing == ["b"], gone


def test_a_sync_manifests_unread_files_are_checked_by_size_and_not_exported_unasked(
    seaweed_env: ServerEnv, tmp_path: Path
) -> None:
    """A sync that leaves a multipart object unread has no digest to record for it:
    verify found it and counted nothing (now: found, at its size, said so; gone:
    MISSING), and the sha256sum export dropped every unchanged file without a word
    (now: those with digests are exported, and one without is refused unless
    --partial)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(6 * 1024 * 1024))
    (src / "small.txt").write_text("small")
    url = seaweed_env.url("s")
    opts = {"multipart_threshold": 5 * 1024 * 1024, "part_size": 5 * 1024 * 1024}
    assert datamover.sync(str(src), url, **opts).ok
    manifest = tmp_path / "m.jsonl"
    again = datamover.sync(str(src), url, manifest=str(manifest), **opts)
    assert again.ok and again.files_skipped == 2, again
    checked = datamover.verify(str(manifest))
    assert checked.passed and checked.size_only == ["big.bin"], checked
    assert checked.ok == 1  # small.txt, whose digest the object's label gave
    dm = [sys.executable, "-m", "datamover", "manifest", "export", str(manifest)]
    refused = subprocess.run(dm, capture_output=True, text=True)
    assert refused.returncode == 2 and "--partial" in refused.stderr, refused.stderr
    some = subprocess.run([*dm, "--partial"], capture_output=True, text=True)
    assert some.returncode == 0 and some.stdout.endswith("  small.txt\n"), some
    # Locally too, a sync's unchanged files come without digests: no bag from it.
    assert datamover.sync(str(src), str(tmp_path / "local")).ok
    local = tmp_path / "local.jsonl"
    assert datamover.sync(str(src), str(tmp_path / "local"), manifest=str(local)).ok
    bag = subprocess.run(
        [*dm[:-1], str(local), "--format", "bagit", "-o", str(tmp_path / "bag")],
        capture_output=True,
        text=True,
    )
    assert bag.returncode == 2 and "no digest" in bag.stderr, bag.stderr
    verified = subprocess.run([*dm[:-3], "verify", str(local)], capture_output=True, text=True)
    assert verified.returncode == 0 and "checked by size only" in verified.stdout, verified
    store, _ = open_store(seaweed_env.url())
    with store:
        store.delete("s/big.bin")
    gone = datamover.verify(str(manifest))
    assert not gone.passed and gone.missing == ["big.bin"], gone


@pytest.mark.parametrize("name", ["seaweed", "azurite", "gcs"])
def test_links_from_a_bucket_are_recorded_at_their_size_and_copied_within_it(
    name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A download recorded a link's marker size (0) beside its target's digest, which
    broke the bag export and the bag of ``copy --bagit``; a copy within the store sent
    the marker as it was (naming the source tree's target) or failed it as corrupt."""
    env = use_server(request.getfixturevalue(name), monkeypatch)
    src = tmp_path / "src"
    _tree(src)
    assert datamover.copy(str(src), env.url("t")).ok
    down = tmp_path / "down.jsonl"
    assert datamover.copy(env.url("t"), str(tmp_path / "down"), manifest=str(down)).ok
    sizes = {e.path: e.size for e in read_manifest(down).entries}
    assert sizes == {"a": 4000, "b": 4000, "c": 5}, sizes
    assert (tmp_path / "down" / "b").stat().st_ino == (tmp_path / "down" / "a").stat().st_ino
    bag = subprocess.run(
        [*DM_EXPORT, str(down), "--format", "bagit", "-o", str(tmp_path / "bag")],
        capture_output=True,
        text=True,
    )
    assert bag.returncode == 0, bag.stderr
    within = tmp_path / "within.jsonl"
    report = datamover.copy(env.url("t"), env.url("u"), manifest=str(within))
    assert report.ok, report.failures
    assert {e.path: e.size for e in read_manifest(within).entries} == sizes
    assert _is_marker(env.url(), "u/b")
    store, _ = open_store(env.url())
    with store:
        assert store.stat("u/b").metadata[HARDLINK_KEY] == "u/a"
    assert datamover.verify(str(within)).passed


def test_a_crafted_marker_copied_within_a_store_names_nothing_outside(
    seaweed_env: ServerEnv,
) -> None:
    """A marker another bucket writer planted, naming a key outside the copied tree:
    a copy within the store (server-side) fails that one file, named, and writes no
    marker that points out of the destination."""
    store, _ = open_store(seaweed_env.url())
    with store:
        store.put("c/real", b"data")
        store.put("c/evil", b"", metadata={HARDLINK_KEY: "../../etc/passwd"})
        store.put("c/other", b"", metadata={HARDLINK_KEY: "elsewhere/secret"})
        report = datamover.copy(seaweed_env.url("c"), seaweed_env.url("d"))
        assert sorted(p for p, _ in report.failures) == ["evil", "other"], report.failures
        assert all("outside the copied tree" in why for _, why in report.failures)
        assert store.read("d/real") == b"data"
        for name in ("evil", "other"):
            with pytest.raises(NotFound):
                store.stat(f"d/{name}")
