"""sync --delete on object stores touches its own prefix only, and two sides that are
provably the same place (same endpoint, bucket and prefix, however they are named) are
refused as on POSIX (tests/unit/test_sync_overlaps.py); the same names at different
endpoints are no overlap."""

from __future__ import annotations

from pathlib import Path

import pytest

import datamover
from datamover.errors import UsageError
from datamover.stores import open_store

from serverenv import use_server

pytestmark = pytest.mark.cloud


def _objects(url: str) -> dict[str, int]:
    store, key = open_store(url)
    with store:
        return {i.key: i.size for i in store.list(key) if not i.key.endswith("/")}


def _put(url: str, tmp_path: Path, objects: dict[str, bytes]) -> None:
    up = tmp_path / "up"
    for name, body in objects.items():
        (up / name).parent.mkdir(parents=True, exist_ok=True)
        (up / name).write_bytes(body)
    assert datamover.copy(str(up), url).ok
    for name in objects:
        (up / name).unlink()


@pytest.mark.parametrize("server", ["moto", "azurite", "gcs"])
def test_sync_delete_stays_inside_its_prefix(
    server: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Not SeaweedFS: it can't hold an object "data" beside a prefix "data/".
    env = use_server(request.getfixturevalue(server), monkeypatch)
    _put(
        env.url(),
        tmp_path,
        {
            "data2/x": b"sibling",
            "data.bak/y": b"sibling",
            "data/old": b"old",
            "data/keep.tmp": b"excluded",
        },
    )
    store, _ = open_store(env.url())
    with store:
        store.put("data", b"an object named exactly data")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_bytes(b"a")
    (src / "sub" / "b").write_bytes(b"b")
    before = _objects(env.url())

    dry = datamover.sync(str(src), env.url("data"), delete=True, dry_run=True)
    assert dry.ok and dry.deleted == ["keep.tmp", "old"]
    assert _objects(env.url()) == before
    with pytest.raises(UsageError, match="more than --max-delete 0"):
        datamover.sync(str(src), env.url("data"), delete=True, max_delete=0)

    for spelling in ("data", "data/"):
        report = datamover.sync(
            str(src), env.url(spelling), delete=True, exclude=["*.tmp"], resume=False
        )
        assert report.ok, report.failures
    assert _objects(env.url()) == {
        "data": 28,
        "data.bak/y": 7,
        "data/a": 1,
        "data/keep.tmp": 8,
        "data/sub/b": 1,
        "data2/x": 7,
    }


@pytest.mark.parametrize("server", ["moto", "azurite", "gcs"])
def test_overlapping_prefixes_are_refused(
    server: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = use_server(request.getfixturevalue(server), monkeypatch)
    _put(env.url(), tmp_path, {"p/a": b"a", "p/sub/b": b"b", "p2/c": b"c"})
    before = _objects(env.url())
    p, sub = env.url("p"), env.url("p/sub")
    refused = {
        "same place": [
            lambda: datamover.copy(p, p),
            lambda: datamover.sync(p, p + "/", delete=True),
        ],
        "inside source": [lambda: datamover.sync(p, sub, delete=True)],
        "would delete the source": [lambda: datamover.sync(sub, p, delete=True, dry_run=True)],
        "same file": [lambda: datamover.copy(env.url("p/a"), p + "/")],
    }
    for says, runs in refused.items():
        for run in runs:
            with pytest.raises(UsageError, match=says):
                run()
    assert _objects(env.url()) == before
    # A sibling prefix whose name starts alike is another place.
    assert datamover.sync(p, env.url("p2"), dry_run=True).ok


def test_one_place_named_two_ways_and_two_places_named_alike(
    seaweed: object, moto: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mo = use_server(moto, monkeypatch)  # type: ignore[arg-type]  # the env's endpoint
    bucket = mo.bucket
    seaweed.make_bucket(bucket)  # type: ignore[attr-defined]  # same name, other server
    config = tmp_path / "config.toml"
    config.write_text(
        f'[remotes.sw]\ntype = "s3"\nendpoint = "{seaweed.endpoint}"\n'  # type: ignore[attr-defined]
        f'[remotes.mo]\ntype = "s3"\nendpoint = "{moto.endpoint}"\nroot = "{bucket}/p"\n'  # type: ignore[attr-defined]
    )
    monkeypatch.setenv("DATAMOVER_CONFIG", str(config))
    _put(mo.url(), tmp_path, {"p/a": b"a", "p/sub/b": b"b"})
    _put(f"sw:{bucket}/", tmp_path, {"x": b"x"})
    # The same bucket and prefix through a remote and through the env's endpoint.
    with pytest.raises(UsageError, match="would delete the source"):
        datamover.sync("mo:sub", mo.url("p"), delete=True)
    with pytest.raises(UsageError, match="same place"):
        datamover.sync("mo:", mo.url("p/"))
    # The same names on two servers: no overlap.
    report = datamover.sync(mo.url("p"), f"sw:{bucket}/p/sub", delete=True)
    assert report.ok, report.failures
    assert _objects(f"sw:{bucket}/") == {"x": 1, "p/sub/a": 1, "p/sub/sub/b": 1}
    assert _objects(mo.url()) == {"p/a": 1, "p/sub/b": 1}


@pytest.mark.parametrize("server", ["moto", "azurite", "gcs"])
def test_a_tree_onto_an_object_is_refused(
    server: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """As on POSIX (and as rclone: "is a file not a directory"): the object "solo"
    would become both a file and a directory, which no download can lay out."""
    env = use_server(request.getfixturevalue(server), monkeypatch)
    _put(env.url(), tmp_path, {"solo": b"an object", "solo2/x": b"x"})
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    before = _objects(env.url())
    for spelling in ("solo", "solo/"):
        with pytest.raises(UsageError, match="solo is a file, not a directory"):
            datamover.sync(str(src), env.url(spelling), delete=True)
        with pytest.raises(UsageError, match="solo is a file, not a directory"):
            datamover.copy(str(src), env.url(spelling), dry_run=True)
    assert _objects(env.url()) == before
    # A file copied there is the object's new version, as before.
    assert datamover.copy(str(src / "a"), env.url("solo")).ok
    assert _objects(env.url())["solo"] == 1
