"""A tree round the clouds, through the CLI: POSIX -> S3 (SeaweedFS) -> Azure (Azurite)
-> GCS (fake-gcs-server) -> POSIX, every hop with its own part size; and a cloud-to-cloud
copy that must not stage anything on local disk.

All three servers' variables are in the environment at once (S3 endpoint and keys,
``AZURE_STORAGE_CONNECTION_STRING``, ``STORAGE_EMULATOR_HOST``), as a user moving data
between clouds would have them, and every ``datamover`` run is a real subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from datamover.options import MiB
from datamover.stores import open_store

from serverenv import ServerEnv, use_server

pytestmark = pytest.mark.cloud

ROOT = Path(__file__).resolve().parents[2]
# One validator, built once: jsonschema.validate() re-checks the schema on every call.
MANIFEST_LINE = jsonschema.Draft202012Validator(
    json.loads((ROOT / "manifests" / "manifest.schema.json").read_text())
)
DM = [sys.executable, "-m", "datamover"]
BIG = "big/ünïcødé 64MiB.bin"
BIG_SIZE = 64 * MiB


@pytest.fixture
def clouds(
    seaweed: Any, azurite: Any, gcs: Any, monkeypatch: pytest.MonkeyPatch
) -> dict[str, ServerEnv]:
    """One fresh bucket on each server, all three servers' variables set together."""
    return {
        "s3": use_server(seaweed, monkeypatch),
        "az": use_server(azurite, monkeypatch),
        "gs": use_server(gcs, monkeypatch),
    }


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _make_tree(root: Path) -> dict[str, bytes]:
    """A 64 MiB file and 200 files of 1-20 KiB in nested dirs, some with unicode names
    and spaces. Returns ``{relative path: bytes}``."""
    rng = random.Random(20261)
    files = {BIG: os.urandom(BIG_SIZE)}
    dirs = ["", "a/", "a/b/", "a/b/c d/", "ünïcødé/", "日本語/フォルダ/", "deep/1/2/3/4/"]
    stems = ["file", "naïve ☃", "ファイル", "with space", "x"]
    for i in range(200):
        name = f"{dirs[i % len(dirs)]}{stems[i % len(stems)]} {i:03d}.dat"
        files[name] = rng.randbytes(rng.randint(1 * 1024, 20 * 1024))
    for rel, data in files.items():
        _write(root / rel, data)
    return files


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    # os.environ carries every server's variables (monkeypatch sets them there).
    return subprocess.run(
        [*DM, *args], capture_output=True, text=True, env=dict(os.environ), timeout=300
    )


def _manifest(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines:
        MANIFEST_LINE.validate(line)
    assert lines[0]["type"] == "header" and lines[-1]["type"] == "summary"
    return lines[0], {x["path"]: x for x in lines if x["type"] == "file"}


def _cloud_checksums(url: str, keys: list[str]) -> dict[str, str | None]:
    store, _ = open_store(url)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            infos = pool.map(store.stat, keys)
            return {k: i.checksums.get("sha256") for k, i in zip(keys, infos, strict=True)}
    finally:
        store.close()


@pytest.mark.slow
def test_tree_round_the_clouds_stays_byte_identical(
    clouds: dict[str, ServerEnv], tmp_path: Path
) -> None:
    src = tmp_path / "src"
    files = _make_tree(src)
    want = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
    back = tmp_path / "back"
    hops = [
        ("posix-s3", str(src), clouds["s3"].url("hop1/"), 8 * MiB),
        ("s3-azure", clouds["s3"].url("hop1/"), clouds["az"].url("hop2/"), 5 * MiB),
        ("azure-gcs", clouds["az"].url("hop2/"), clouds["gs"].url("hop3/"), 16 * MiB),
        ("gcs-posix", clouds["gs"].url("hop3/"), str(back), 12 * MiB),
    ]
    for name, source, dest, part in hops:
        manifest = tmp_path / f"{name}.jsonl"
        copy = _run("copy", source, dest, "--manifest", str(manifest), "--part-size", f"{part}")
        assert copy.returncode == 0, f"{name}: {copy.stdout}{copy.stderr}"
        header, entries = _manifest(manifest)
        assert header["destination"].rstrip("/") == dest.rstrip("/"), name
        # Every file, ok, with the source's digest: the same on every hop, whatever the
        # part size (the digest is of the bytes, not of the parts).
        assert {p: e["status"] for p, e in entries.items()} == dict.fromkeys(want, "ok")
        assert {p: e["digest"] for p, e in entries.items()} == want, name
        big = entries[BIG]
        assert big["size"] == BIG_SIZE
        assert big["part_size"] == part, name
        assert len(big["parts"]) == -(-BIG_SIZE // part), name
        verify = _run("verify", str(manifest))
        assert verify.returncode == 0, f"{name}: {verify.stdout}{verify.stderr}"
        assert f"OK: {len(want)} of {len(want)} files match" in verify.stdout
        if not dest.startswith("/"):
            # The whole-object digest travels on the object, whichever cloud.
            prefix = dest.split("/", 3)[3]
            scheme, bucket = dest.split("://")[0], dest.split("/")[2]
            on_cloud = _cloud_checksums(
                f"{scheme}://{bucket}/", [prefix + rel for rel in sorted(want)]
            )
            expected: dict[str, str | None] = {prefix + rel: d for rel, d in sorted(want.items())}
            if name == "posix-s3":
                # S3 takes metadata when an upload starts, before a local file's digest
                # is known, and nothing writes the object twice: the multipart file has
                # the store's full-object CRC64NVME instead (checked on the next hop).
                expected[prefix + BIG] = None
            assert on_cloud == expected, name

    got = _tree(back)
    assert sorted(got) == sorted(files)
    for rel, data in files.items():
        assert got[rel] == data, rel
    # POSIX mtimes rode along in each cloud's metadata, to the nanosecond.
    for rel in files:
        assert (back / rel).stat().st_mtime_ns == (src / rel).stat().st_mtime_ns, rel


def test_cloud_to_cloud_stages_nothing_locally(
    clouds: dict[str, ServerEnv], tmp_path: Path
) -> None:
    """S3 -> GCS moves the bytes through memory only: with TMPDIR pointing at an empty
    directory for the run, nothing is ever created in that directory."""
    rng = random.Random(7)
    files = {"large/parts.bin": os.urandom(20 * MiB + 123)}
    files.update({f"small/{i:02d} ☃.txt": rng.randbytes(rng.randint(1, 50_000)) for i in range(30)})
    s3, _ = open_store(clouds["s3"].url())
    try:
        for rel, data in files.items():
            s3.put("c2c/" + rel, data)
    finally:
        s3.close()
    watched = tmp_path / "watched-tmp"
    watched.mkdir()
    # A directory's mtime moves when an entry is created or removed in it, so this also
    # catches a temp file made and deleted during the run.
    untouched = watched.stat().st_mtime_ns
    manifest = tmp_path / "c2c.jsonl"
    env = dict(os.environ, TMPDIR=str(watched))
    copy = subprocess.run(
        [
            *DM,
            "copy",
            clouds["s3"].url("c2c/"),
            clouds["gs"].url("c2c/"),
            "--manifest",
            str(manifest),
            "--part-size",
            "5MiB",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert copy.returncode == 0, copy.stdout + copy.stderr
    assert list(watched.iterdir()) == []
    assert watched.stat().st_mtime_ns == untouched, "a file was created and removed in TMPDIR"
    _, entries = _manifest(manifest)
    assert {p: e["digest"] for p, e in entries.items()} == {
        rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()
    }
    assert len(entries["large/parts.bin"]["parts"]) == 5
    gs, _ = open_store(clouds["gs"].url())
    try:
        for rel, data in files.items():
            assert gs.read("c2c/" + rel) == data, rel
    finally:
        gs.close()
    verify = _run("verify", str(manifest))
    assert verify.returncode == 0, verify.stdout + verify.stderr
