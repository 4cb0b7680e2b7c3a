"""A ``datamover`` run against fake-gcs-server, as the fixtures and the benchmark
configure it (``STORAGE_EMULATOR_HOST``: anonymous credentials), never imports
google-cloud-storage, google-auth or google-api-core (``stores/gcs/sdk.py``: ~0.45
CPU-s of start-up in every process, issue #18): small files and a multipart upload
(parts and their compose), a download, both with worker processes, verify, a
listing, and the errors of a missing object and a missing bucket. Every Python
process of a run (the coordinator and each ``--processes`` worker) reports its
imports through ``PYTHONPROFILEIMPORTTIME``, which children inherit. Also: with the
lean path off the SDK is imported on first use, and the requests of the two calls
the lean path took over from the SDK for this (compose, the bucket probe)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from importprobe import run_probed

from datamover.errors import PreconditionFailed, StoreError
from datamover.options import KiB, MiB
from datamover.stores import StoreSettings
from datamover.stores.gcs import GCSStore
from datamover.stores.gcs.client import make_client

from rawserver import RawServer, response
from serverenv import ServerEnv, use_server
from servers import FakeGcsServer

pytestmark = [pytest.mark.cloud, pytest.mark.timeout(240)]

#: The SDK packages a run with anonymous credentials must not load.
SDK = ("google.cloud", "google.auth", "google.api_core", "google.resumable_media")


def _run(
    *argv: str, env_extra: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], int, list[str]]:
    """``datamover *argv``: the result, how many Python processes reported their
    imports and which SDK modules any of them loaded."""
    run = run_probed(*argv, env=env_extra)
    sys.stderr.write("\n".join(run.other))  # shown when a test fails
    return run.result, run.processes, run.loaded(SDK)


@pytest.fixture
def gcs_env(gcs: FakeGcsServer, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    return use_server(gcs, monkeypatch)


def test_gcs_copy_up_and_down_imports_no_sdk(gcs_env: ServerEnv, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = {f"d{i % 3}/f{i:03d}.bin": os.urandom(4 * KiB + i) for i in range(40)}
    files["big.bin"] = os.urandom(3 * MiB + 5)  # three parts and their compose
    files["empty.bin"] = b""
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    up, down = tmp_path / "up.json", tmp_path / "down.json"
    sizes = ["--multipart-threshold", "1MiB", "--part-size", "1MiB", "--processes", "2"]

    r, processes, loaded = _run("copy", str(src), gcs_env.url("up/"), "--manifest", str(up), *sizes)
    assert r.returncode == 0 and loaded == [], loaded
    assert processes >= 2  # the coordinator and at least one worker reported

    r, _, loaded = _run("verify", str(up))
    assert r.returncode == 0 and loaded == [], loaded

    r, _, loaded = _run("ls", gcs_env.url("up/"))
    assert r.returncode == 0 and loaded == [], loaded
    assert {"big.bin", "empty.bin", "d0/"} <= set(r.stdout.split())

    dst = tmp_path / "down"
    r, processes, loaded = _run(
        "copy", gcs_env.url("up/"), str(dst), "--manifest", str(down), *sizes
    )
    assert r.returncode == 0 and loaded == [], loaded
    assert processes >= 2
    for rel, data in files.items():
        assert (dst / rel).read_bytes() == data, rel

    r, _, loaded = _run("verify", str(down))
    assert r.returncode == 0 and loaded == [], loaded


def test_gcs_errors_map_without_the_sdk(gcs_env: ServerEnv) -> None:
    r, _, loaded = _run("cat", gcs_env.url("no/such/key"))
    assert r.returncode != 0 and "no such object" in r.stderr and loaded == [], loaded
    r, _, loaded = _run("cat", "gs://no-such-bucket-here/k")
    assert r.returncode != 0 and "bucket does not exist" in r.stderr and loaded == [], loaded


def test_gcs_sdk_path_imports_the_sdk_on_first_use(gcs_env: ServerEnv, tmp_path: Path) -> None:
    """With the lean path off, a fresh process imports the SDK where a call needs it
    (``sdk.py``) and the copy works as before: nothing else loaded it first."""
    src = tmp_path / "src"
    src.mkdir()
    data = {"a.bin": os.urandom(5000), "b.bin": os.urandom(2 * MiB + 3)}
    for name, body in data.items():
        (src / name).write_bytes(body)
    off = {"DATAMOVER_GCS_LEAN": "0"}
    sizes = ["--multipart-threshold", "1MiB", "--part-size", "1MiB"]
    r, _, loaded = _run("copy", str(src), gcs_env.url("sdk/"), *sizes, env_extra=off)
    assert r.returncode == 0 and "google.cloud.storage" in loaded, loaded
    r, _, loaded = _run("copy", gcs_env.url("sdk/"), str(tmp_path / "down"), env_extra=off)
    assert r.returncode == 0 and "google.cloud.storage" in loaded, loaded
    for name, body in data.items():
        assert (tmp_path / "down" / name).read_bytes() == body
    r, _, loaded = _run("cat", gcs_env.url("sdk/missing"), env_extra=off)
    assert r.returncode != 0 and "no such object" in r.stderr


def _resource(name: str) -> bytes:
    body = json.dumps(
        {"name": name, "bucket": "b", "size": "6", "generation": "9", "crc32c": "AAAAAA=="}
    ).encode()
    return response(200, body, {"Content-Type": "application/json"})


def test_lean_compose_and_bucket_probe_requests() -> None:
    """What the lean path sends for a compose (each source pinned to its generation,
    as the SDK's ``if_source_generation_match``; the destination's type and metadata)
    and for the bucket probe, and what their answers mean; the emulator ignores
    compose preconditions, so the request itself is checked here."""
    answers = iter(
        [
            _resource("dst/k"),
            response(404, b"{}"),  # compose: a source is gone
            response(200, b'{"name": "b"}'),  # ... and the bucket is there
            response(412, b"{}"),
            response(404, b"{}"),  # the bucket probe
        ]
    )
    with RawServer(lambda req: next(answers)) as server:
        store = GCSStore(make_client("b", StoreSettings(endpoint=server.url)), "b")
        assert store._lean is not None
        got = store._compose("dst/k", [("t/part-0", 5), ("t/part-1", 7)], metadata={"a": "1"})
        assert (got.generation, got.size) == (9, 6)
        with pytest.raises(StoreError, match="a part to compose has vanished"):
            store._compose("dst/k", [("t/part-0", 5)])
        with pytest.raises(PreconditionFailed):
            store._compose("dst/k", [("t/part-0", 5)])
        assert store._lean.bucket_exists() is False
        store.close()
    first = server.requests[0]
    assert (first.method, first.target) == ("POST", "/storage/v1/b/b/o/dst%2Fk/compose")
    sent = json.loads(first.body)
    assert sent["sourceObjects"] == [
        {"name": "t/part-0", "generation": 5, "objectPreconditions": {"ifGenerationMatch": 5}},
        {"name": "t/part-1", "generation": 7, "objectPreconditions": {"ifGenerationMatch": 7}},
    ]
    assert sent["destination"]["contentType"] == "application/octet-stream"
    assert "name" not in sent["destination"]
    assert sent["destination"]["metadata"]["a"] == "1"
    probe = server.requests[2]
    assert (probe.method, probe.path, probe.query) == ("GET", "/storage/v1/b/b", {"fields": "name"})
