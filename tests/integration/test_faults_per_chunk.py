"""TCP faults at 1 % per forwarded 64 KiB chunk (issue 15, points 5 and 6).

A 64 MiB file plus ~200 small files go up to and come back from S3 (SeaweedFS, the
lean path), Azure (Azurite) and GCS (fake-gcs-server) through the chaos proxy
(``tests/faultproxy.py``, ``per_chunk=True``: resets, truncations, stalls, 5xx and bit
flips both ways, from a seeded schedule). Both directions must end byte-identical
with exit 0; the test prints the faults the proxy injected and the retries the run
did (``pytest -s``).

Then a retry budget that runs out: every request for one file's bytes is broken, so
that file fails, is named, is marked failed in the manifest, nothing of it (no
partial object, no pending upload, no temp file) is left at the destination, and the
exit is 1, while every other file arrives.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from datamover.errors import Unsupported
from datamover.stores import open_store
from datamover.stores.base import Store

from faultproxy import FaultProxy
from serverenv import ServerEnv, use_server

pytestmark = [pytest.mark.cloud, pytest.mark.slow, pytest.mark.timeout(600)]

MiB = 1024 * 1024
DM = [sys.executable, "-m", "datamover"]
FLAVOR = {"s3": "s3", "az": "azure", "gs": "gcs"}
SERVER_FIXTURE = {"s3": "seaweed", "az": "azurite", "gs": "gcs"}
CLI_TIMEOUT = 420
#: The issue's tree: 64 MiB in one file, plus ~200 small ones.
BIG = 64 * MiB
SMALL = 200
#: The seeded schedule and the rate; overridable to explore (the defaults are CI's).
SEED = int(os.environ.get("DM_FAULT_SEED", "1505"))
RATE = float(os.environ.get("DM_FAULT_RATE", "0.01"))


@dataclass
class Target:
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
    with FaultProxy(server.endpoint, flavor=FLAVOR[scheme], seed=SEED, per_chunk=True) as proxy:  # type: ignore[arg-type]
        yield Target(env, proxy, proxy.client_env(server), direct)


def _make_tree(root: Path, *, big: int, small: int, seed: int) -> None:
    rng = random.Random(seed)
    files = {"big/file.bin": rng.randbytes(big)} if big else {}
    for i in range(small):
        files[f"small/d{i % 8}/f{i:03d}.dat"] = rng.randbytes(rng.randint(1, 48 * 1024))
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _dm(args: list[str], env: Mapping[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    run = subprocess.run(
        [*DM, *args], env=dict(env), capture_output=True, text=True, timeout=CLI_TIMEOUT
    )
    return run, time.monotonic() - started


def _retries(run: subprocess.CompletedProcess[str]) -> int:
    m = re.search(r"(\d+) retries", run.stdout + run.stderr)
    return int(m.group(1)) if m else 0


def _copy(
    src: str, dst: str, manifest: Path, env: Mapping[str, str], proxy: FaultProxy | None = None
) -> tuple[int, float]:
    run, seconds = _dm(["copy", src, dst, "--manifest", str(manifest)], env)
    faults = "\n".join(" ".join(f) for f in proxy.log()[-40:]) if proxy is not None else ""
    assert run.returncode == 0, (
        f"copy {src} -> {dst} exit {run.returncode}\n{run.stdout}{run.stderr}\n"
        f"last faults:\n{faults}"
    )
    return _retries(run), seconds


def _report(label: str, proxy: FaultProxy, retries: int, seconds: float) -> str:
    line = (
        f"{label}: {seconds:.1f}s; proxy injected {proxy.summary()}; "
        f"the run survived them with {retries} retries"
    )
    print(line)
    return line


def test_tree_round_trip_at_1_percent_per_chunk(target: Target, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _make_tree(src, big=BIG, small=SMALL, seed=15)
    proxy = target.proxy
    proxy.fault_rate = RATE

    up_retries, up_s = _copy(str(src), target.url("run"), tmp_path / "up.jsonl", target.env, proxy)
    _report(f"{target.server.scheme} upload", proxy, up_retries, up_s)
    up = proxy.counts
    proxy.reset_counts()

    back = tmp_path / "back"
    down_retries, down_s = _copy(
        target.url("run"), str(back), tmp_path / "down.jsonl", target.env, proxy
    )
    _report(f"{target.server.scheme} download", proxy, down_retries, down_s)
    down = proxy.counts

    assert _tree(back) == _tree(src)
    proxy.enabled = False
    for manifest in ("up.jsonl", "down.jsonl"):
        run, _ = _dm(["verify", str(tmp_path / manifest)], target.direct_env)
        assert run.returncode == 0, f"verify {manifest}: {run.stdout}{run.stderr}"
    # Faults really happened, of the kinds that matter, and were survived by retrying.
    assert sum(up.values()) >= 3 and sum(down.values()) >= 3, (up, down)
    assert up_retries + down_retries >= 3, (up_retries, down_retries)


# -- a retry budget that runs out ---------------------------------------------------------


def _names(fragment: str) -> Callable[[str, str, Mapping[str, str]], bool]:
    """Faults only for requests whose target names ``fragment`` (a key's last part)."""
    return lambda method, target, headers: fragment in target


def _leftovers(store: Store, prefix: str) -> list[str]:
    """Keys of unfinished uploads under ``prefix`` (none where a store keeps no pieces)."""
    try:
        # Azure keeps uncommitted blocks until they expire (no way to remove them, and
        # never visible): they come back with ``cannot_abort``.
        return [u.key for u in store.list_pending_uploads(prefix) if u.cannot_abort is None]
    except Unsupported:
        return []


def _failed(manifest: Path) -> dict[str, str]:
    out = {}
    for line in manifest.read_text().splitlines():
        e = json.loads(line)
        if e.get("type") == "file" and e.get("status") != "ok":
            out[e["path"]] = e.get("status", "")
    return out


def test_exhausted_retries_leave_nothing_half_written(target: Target, tmp_path: Path) -> None:
    """Every data request for ``doomed*`` files is broken (request or response bits
    flipped, connections reset): those files fail after their retries, named, exit 1,
    and nothing of them is visible at the destination, in either direction."""
    src = tmp_path / "src"
    _make_tree(src, big=0, small=30, seed=6)
    rng = random.Random(6)
    (src / "doomed-big.bin").write_bytes(rng.randbytes(20 * MiB))
    (src / "doomed-small.bin").write_bytes(rng.randbytes(100_000))
    proxy = target.proxy
    scheme = target.server.scheme

    # Upload: every request carrying a doomed file's bytes (told by its size: the other
    # files are under 48 KiB; a GCS upload names its object in the body) has a request
    # bit flipped (the store refuses it), or its answer is lost (reset).
    proxy.weights = {"flip_request_bit": 3.0, "reset_mid_body": 1.0}
    proxy.fault_rate = 1.0
    proxy.per_chunk = False
    proxy.only = lambda method, t, headers: int(headers.get("content-length") or 0) > 90_000
    manifest = tmp_path / "up.jsonl"
    run, up_s = _dm(
        ["copy", str(src), target.url("x"), "--part-size", "5MiB", "--manifest", str(manifest)],
        target.env,
    )
    print(
        f"{scheme} doomed upload: {up_s:.1f}s, exit {run.returncode}, {proxy.summary()}, "
        f"{_retries(run)} retries"
    )
    out = run.stdout + run.stderr
    failed = _failed(manifest)
    assert run.returncode == 1, out
    assert set(failed) == {"doomed-big.bin", "doomed-small.bin"}, (failed, out)
    assert set(failed.values()) == {"failed"}, failed
    assert "doomed-big.bin" in out and "doomed-small.bin" in out, out
    assert "Traceback" not in out, out
    proxy.enabled = False
    store, _ = open_store(target.url("x"))
    try:
        keys = {o.key for o in store.list("x/")}
        # No partial object is ever visible. A PUT the store applied but whose answer
        # was lost (a reset) may leave the whole object although the file is reported
        # failed: then it holds exactly the source's bytes. A multipart upload that
        # never committed leaves no object at all.
        assert "x/doomed-big.bin" not in keys, keys
        for key in keys:
            if "doomed" in key:
                assert store.read(key) == (src / key[2:]).read_bytes(), key
        left = _leftovers(store, "x/")
        if scheme == "az":
            # The Azure writer's abort leaves the uncommitted blocks (never visible;
            # Azure drops them after 7 days; ``datamover cleanup`` clears them).
            print(f"az doomed upload: uncommitted blocks left for {left}")
        else:
            assert not left, f"pending upload pieces left behind: {left}"
        assert len([k for k in keys if "/small/" in k]) == 30, keys
    finally:
        store.close()

    # Download: put the doomed files there cleanly, then every GET of their bytes comes
    # back with a bit flipped or cut off. (GCS: flips only. google-cloud-storage
    # retries a reset download itself until its own deadline, minutes, before the
    # engine's budget is even reached.)
    _copy(str(src), target.url("y"), tmp_path / "seed.jsonl", target.direct_env)
    proxy.reset_counts()
    proxy.enabled = True
    proxy.weights = {"flip_response_bit": 3.0, "reset_mid_body": 0.0 if scheme == "gs" else 1.0}
    proxy.only = lambda method, t, headers: method == "GET" and "doomed" in t
    back = tmp_path / "back"
    manifest = tmp_path / "down.jsonl"
    run, down_s = _dm(
        ["copy", target.url("y"), str(back), "--part-size", "5MiB", "--manifest", str(manifest)],
        target.env,
    )
    print(
        f"{scheme} doomed download: {down_s:.1f}s, exit {run.returncode}, {proxy.summary()}, "
        f"{_retries(run)} retries"
    )
    out = run.stdout + run.stderr
    failed = _failed(manifest)
    assert run.returncode == 1, out
    assert set(failed) == {"doomed-big.bin", "doomed-small.bin"}, (failed, out)
    assert "doomed-big.bin" in out and "doomed-small.bin" in out, out
    assert "Traceback" not in out, out
    left = sorted(str(p.relative_to(back)) for p in back.rglob("*") if p.is_file())
    assert not [p for p in left if "doomed" in p], left  # no partial or temp file
    want = {k: v for k, v in _tree(src).items() if "doomed" not in k}
    assert _tree(back) == want
