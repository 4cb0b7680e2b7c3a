"""Copies through a fault-injecting proxy (``tests/faultproxy.py``) to and from S3
(SeaweedFS), Azure (Azurite) and GCS (fake-gcs-server).

Every copy is the real CLI in a subprocess, talking to the proxy instead of the server;
the proxy runs in the test process, so the test can count what it injected. Each test
asserts that faults were actually injected, so none can pass because nothing happened.
Set-up (buckets, seeding a source) and ``verify`` go straight to the server.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from faultproxy import KINDS, FaultProxy
from serverenv import ServerEnv, use_server

pytestmark = [pytest.mark.cloud, pytest.mark.timeout(240)]

MiB = 1024 * 1024
DM = [sys.executable, "-m", "datamover"]
FLAVOR = {"s3": "s3", "az": "azure", "gs": "gcs"}
SERVER_FIXTURE = {"s3": "seaweed", "az": "azurite", "gs": "gcs"}
CLI_TIMEOUT = 200


@dataclass
class Target:
    """One store behind a proxy: ``env`` reaches it through the proxy, ``direct_env``
    reaches the server itself."""

    server: ServerEnv
    proxy: FaultProxy
    env: dict[str, str]
    direct_env: dict[str, str]

    def url(self, key: str = "") -> str:
        return self.server.url(key)


@pytest.fixture(params=["s3", "az", "gs"])
def target(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    scheme = request.param
    server = request.getfixturevalue(SERVER_FIXTURE[scheme])
    env = use_server(server, monkeypatch)
    direct = server.client_env()
    with FaultProxy(server.endpoint, flavor=FLAVOR[scheme], seed=1234) as proxy:  # type: ignore[arg-type]
        yield Target(env, proxy, proxy.client_env(server), direct)


def _make_tree(root: Path, *, big: list[int], small: int, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    for i, size in enumerate(big):
        files[f"big/file{i}.bin"] = os.urandom(size)
    for i in range(small):
        files[f"small/d{i % 4}/f{i:03d}.dat"] = os.urandom(rng.randint(1024, 50 * 1024))
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".dmtmp-" not in p.name
    }


def _dm(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DM, *args], env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT
    )


def _copy(src: str, dst: str, manifest: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    run = _dm(["copy", src, dst, "--part-size", "5MiB", "--manifest", str(manifest)], env)
    seconds = time.monotonic() - started
    assert run.returncode == 0, (
        f"copy {src} -> {dst} exit {run.returncode}\n{run.stdout}{run.stderr}"
    )
    return seconds


def _verify(manifest: Path, env: dict[str, str]) -> None:
    run = _dm(["verify", str(manifest)], env)
    assert run.returncode == 0, (
        f"verify {manifest}: exit {run.returncode}\n{run.stdout}{run.stderr}"
    )


def _report(label: str, proxy: FaultProxy, seconds: float) -> None:
    # Shown with -rP / -s; handy when tuning rates.
    print(f"{label}: {seconds:.1f}s, {proxy.summary()}, skipped {proxy.skipped}")


def test_mixed_tree_round_trip_at_5_percent_faults(target: Target, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _make_tree(src, big=[40 * MiB, 12 * MiB], small=400, seed=1)
    proxy = target.proxy
    proxy.fault_rate = 0.05

    up_s = _copy(str(src), target.url("run"), tmp_path / "up.jsonl", target.env)
    _report("upload", proxy, up_s)
    up_counts = proxy.counts
    proxy.reset_counts()

    back = tmp_path / "back"
    down_s = _copy(target.url("run"), str(back), tmp_path / "down.jsonl", target.env)
    _report("download", proxy, down_s)
    down_counts = proxy.counts

    assert _tree(back) == _tree(src)
    proxy.enabled = False
    _verify(tmp_path / "up.jsonl", target.direct_env)
    _verify(tmp_path / "down.jsonl", target.direct_env)

    total = {k: up_counts[k] + down_counts[k] for k in KINDS}
    assert sum(total.values()) >= 30, total
    assert up_counts["flip_request_bit"] > 0, up_counts
    assert down_counts["flip_response_bit"] > 0, down_counts
    missing = [k for k, n in total.items() if n == 0]
    assert not missing, f"never injected: {missing} ({total})"


def test_upload_bit_flips_are_caught_and_resent(target: Target, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _make_tree(src, big=[12 * MiB], small=40, seed=2)
    proxy = target.proxy
    proxy.weights = {"flip_request_bit": 1.0}
    proxy.fault_rate = 0.2

    seconds = _copy(str(src), target.url("up"), tmp_path / "up.jsonl", target.env)
    _report("upload flips", proxy, seconds)
    assert proxy.counts["flip_request_bit"] >= 5, proxy.counts

    proxy.enabled = False
    _verify(tmp_path / "up.jsonl", target.direct_env)
    back = tmp_path / "back"
    _copy(target.url("up"), str(back), tmp_path / "down.jsonl", target.direct_env)
    assert _tree(back) == _tree(src)


def test_download_bit_flips_are_never_committed(target: Target, tmp_path: Path) -> None:
    """20% of object GETs come back with a bit flipped. Small files are re-read until
    their digest matches; a multipart download caught by its whole-file digest is redone
    with every part read until two reads agree. Should a file still fail, it must be
    absent and reported, never half-written."""
    src = tmp_path / "src"
    _make_tree(src, big=[12 * MiB], small=40, seed=3)
    proxy = target.proxy
    _copy(str(src), target.url("down"), tmp_path / "up.jsonl", target.direct_env)

    proxy.weights = {"flip_response_bit": 1.0}
    proxy.fault_rate = 0.2
    back = tmp_path / "back"
    manifest = tmp_path / "down.jsonl"
    started = time.monotonic()
    run = _dm(
        ["copy", target.url("down"), str(back), "--part-size", "5MiB", "--manifest", str(manifest)],
        target.env,
    )
    _report("download flips", proxy, time.monotonic() - started)
    assert proxy.counts["flip_response_bit"] >= 5, proxy.counts

    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    failed = {e["path"] for e in entries if e.get("type") == "file" and e["status"] != "ok"}
    print(f"download flips: failed {sorted(failed) or 'none'}")
    assert run.returncode == (1 if failed else 0), run.stdout + run.stderr
    assert failed <= {"big/file0.bin"}, failed  # small files: 5 x 3 reads each
    got, want = _tree(back), _tree(src)
    assert got == {k: v for k, v in want.items() if k not in failed}
    assert not [p for p in back.rglob("*") if ".dmtmp-" in p.name]
    if not failed:
        proxy.enabled = False
        _verify(manifest, target.direct_env)


def test_download_part_corrupted_three_times_is_reread(target: Target, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _make_tree(src, big=[12 * MiB], small=0, seed=4)
    proxy = target.proxy
    _copy(str(src), target.url("p"), tmp_path / "up.jsonl", target.direct_env)

    # The second part's GET (Range or x-ms-range "bytes=5242880-...") comes back with a
    # flipped bit three times in a row, then clean.
    proxy.weights = {"flip_response_bit": 1.0}
    proxy.fault_rate = 1.0
    proxy.max_faults = 3
    proxy.only = lambda method, target, headers: any(
        v.startswith(f"bytes={5 * MiB}-") for v in headers.values()
    )
    back = tmp_path / "back"
    try:
        _copy(target.url("p"), str(back), tmp_path / "down.jsonl", target.env)
    finally:
        assert proxy.counts["flip_response_bit"] == 3, proxy.summary()
    assert _tree(back) == _tree(src)


COMMIT = {
    "s3": lambda method, target, headers: method == "POST" and "uploadId=" in target,
    "az": lambda method, target, headers: "comp=blocklist" in target,
    "gs": lambda method, target, headers: method == "POST" and "/compose" in target,
}


def test_commit_whose_answer_is_lost_is_not_a_failure(target: Target, tmp_path: Path) -> None:
    """The server completes the multipart upload but the client never hears it (RST in
    the answer), twice; the retried commit must not turn into a failed file."""
    times = 2
    src = tmp_path / "src"
    _make_tree(src, big=[12 * MiB], small=0, seed=5)
    proxy = target.proxy
    proxy.weights = {"reset_mid_body": 1.0}
    proxy.fault_rate = 1.0
    proxy.max_faults = times
    proxy.only = COMMIT[target.server.scheme]
    _copy(str(src), target.url("c"), tmp_path / "up.jsonl", target.env)
    assert proxy.counts["reset_mid_body"] == times, proxy.summary()
    proxy.enabled = False
    _verify(tmp_path / "up.jsonl", target.direct_env)
