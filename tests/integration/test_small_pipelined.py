"""Small downloads from S3 (SeaweedFS), Azure (Azurite) and GCS (fake-gcs-server) move
on one thread with their GETs in flight (``engine/smallreads.py`` over
``stores/leanpipe.py``). Driven as a user would: the CLI in a subprocess, its
manifest checked with ``sha256sum -c``, ``-vv`` telling how many files took that
path. Through the fault proxy, every broken, refused or corrupted answer still ends
with the right bytes (the ordinary path reads such a file again), and nothing
half-written is left."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from faultproxy import FaultProxy
from serverenv import ServerEnv, use_server

pytestmark = [pytest.mark.cloud, pytest.mark.timeout(240)]

DM = [sys.executable, "-m", "datamover"]
FLAVOR = {"s3": "s3", "az": "azure", "gs": "gcs"}
SERVER_FIXTURE = {"s3": "seaweed", "az": "azurite", "gs": "gcs"}
FILES = 150
COUNTS = re.compile(r"small files: (\d+) read with requests in flight, (\d+) by the ordinary")


@pytest.fixture(params=["s3", "az", "gs"])
def served(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[ServerEnv, FaultProxy, dict[str, str]]]:
    scheme = request.param
    server = request.getfixturevalue(SERVER_FIXTURE[scheme])
    env = use_server(server, monkeypatch)
    src = tmp_path / "src"
    for i in range(FILES):
        path = src / f"d{i % 4}" / f"f{i:03d}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1000 + 37 * i))
    _dm(["copy", str(src), env.url("tree")], server.client_env())
    with FaultProxy(server.endpoint, flavor=FLAVOR[scheme], seed=77) as proxy:  # type: ignore[arg-type]
        yield env, proxy, proxy.client_env(server)


def _dm(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    run = subprocess.run([*DM, *args], env=env, capture_output=True, text=True, timeout=200)
    assert run.returncode == 0, f"{args}: exit {run.returncode}\n{run.stdout}{run.stderr}"
    return run


def _download(env: ServerEnv, proxied: dict[str, str], out: Path) -> tuple[int, int]:
    manifest = out.parent / f"{out.name}.jsonl"
    run = _dm(
        ["-vv", "copy", env.url("tree"), str(out), "--processes", "1", "--transfers", "8",
         "--manifest", str(manifest)],
        proxied,
    )  # fmt: skip
    found = COUNTS.search(run.stderr)
    assert found, run.stderr[-3000:]
    return int(found.group(1)), int(found.group(2))


def _same_tree(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == FILES
    assert sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) == files
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_small_downloads_are_read_with_requests_in_flight(
    served: tuple[ServerEnv, FaultProxy, dict[str, str]], tmp_path: Path
) -> None:
    env, proxy, proxied = served
    proxy.enabled = False
    out = tmp_path / "out"
    answered, ordinary = _download(env, proxied, out)
    assert (answered, ordinary) == (FILES, 0)
    _same_tree(tmp_path / "src", out)
    # the manifest, exported as sha256sum lines, checks the files with coreutils
    sums = tmp_path / "SHA256SUMS"
    _dm(["manifest", "export", str(tmp_path / "out.jsonl"), "--format", "sha256sum",
         "-o", str(sums)], os.environ.copy())  # fmt: skip
    check = subprocess.run(["sha256sum", "-c", "--quiet", str(sums)], cwd=out, text=True)
    assert check.returncode == 0


def test_faulty_answers_go_to_the_ordinary_path_and_still_arrive(
    served: tuple[ServerEnv, FaultProxy, dict[str, str]], tmp_path: Path
) -> None:
    env, proxy, proxied = served
    proxy.weights = {
        "status_500": 1.0,
        "status_503": 1.0,
        "reset_mid_body": 1.0,
        "truncate_body": 1.0,
        "flip_response_bit": 1.0,
    }
    proxy.fault_rate = 0.12
    out = tmp_path / "out"
    answered, ordinary = _download(env, proxied, out)
    assert proxy.injected >= 8, proxy.counts
    assert ordinary > 0 and answered + ordinary == FILES
    _same_tree(tmp_path / "src", out)
    assert not [p for p in out.rglob("*") if ".dmtmp-" in p.name]
