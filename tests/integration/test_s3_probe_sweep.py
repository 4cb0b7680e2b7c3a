"""The S3 checksum probe's uploads that a killed process left are aborted by the next
run's probe, and only those (``datamover/stores/s3/probes.py``): uploads planted
under ``.datamover-probe/`` as a dead process's, a reused pid's, a live process's,
another machine's, an older version's and a stranger's, then a real ``datamover
copy`` run, over HTTP against SeaweedFS, moto and Ceph RGW (http and https)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from datamover.stores import open_store
from datamover.stores.s3 import probes
from datamover.stores.s3.checks import PROBE_PREFIX

from faultproxy import FaultProxy
from serverenv import ServerEnv, use_server

pytestmark = [pytest.mark.cloud, pytest.mark.timeout(120)]
DM = [sys.executable, "-m", "datamover"]


@pytest.fixture(
    params=[
        "seaweed",
        "moto",
        pytest.param("ceph", marks=pytest.mark.ceph),
        pytest.param("ceph_tls", marks=pytest.mark.ceph, id="ceph-tls"),
    ]
)
def store_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    return use_server(request.getfixturevalue(request.param), monkeypatch)


def _uploads(client: Any, bucket: str) -> set[str]:
    page = client.list_multipart_uploads(Bucket=bucket, Prefix=PROBE_PREFIX)
    return {u["Key"] for u in page.get("Uploads") or ()}


def test_a_run_aborts_only_the_probe_uploads_of_killed_processes(
    store_env: ServerEnv, tmp_path: Path
) -> None:
    me = probes.this_process()
    assert me is not None  # Linux with its own /proc
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(dead.stdout)

    def key(owner: str, pid: int, start: str, at: float | None = None) -> str:
        stamp = int(time.time() if at is None else at)
        return f"{PROBE_PREFIX}{owner}-{pid}-{start}-{stamp}-{secrets.token_hex(8)}"

    older_version = f"{PROBE_PREFIX}{secrets.token_hex(8)}"

    killed = {
        key(me.owner, dead_pid, "12345"),  # its process is gone
        key(me.owner, os.getpid(), str(int(me.start) + 1)),  # its pid is now another process
    }
    kept = {
        key(me.owner, os.getpid(), me.start),  # a live probe (this test's process)
        key("0123456789abcdef", dead_pid, "1"),  # another machine's: only age could tell
        f"{PROBE_PREFIX}someone-else/upload.bin",  # not a probe's key
    }
    # Age needs the store's word too (Initiated): another machine's probe whose key says
    # it is two hours old (its clock may be wrong) but that the store says started just
    # now is kept, and an older version's key has no time: Initiated alone decides.
    # moto lists every upload as started in 2010: there both count as old.
    by_age = {key("0123456789abcdef", dead_pid, "1", time.time() - 7200), older_version}
    (killed if store_env.server.__class__.__name__ == "MotoServer" else kept).update(by_age)
    store, _ = open_store(store_env.url())
    client: Any = store.client  # type: ignore[attr-defined]
    ids: dict[str, str] = {}
    try:
        for k in killed | kept:
            ids[k] = client.create_multipart_upload(Bucket=store_env.bucket, Key=k)["UploadId"]
        assert _uploads(client, store_env.bucket) == killed | kept
        (tmp_path / "f.txt").write_bytes(b"x" * 4096)
        env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
        run = subprocess.run(
            [*DM, "copy", str(tmp_path / "f.txt"), store_env.url("d/")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        # The run's own probes were aborted too; only the live and unknown ones stay.
        assert _uploads(client, store_env.bucket) == kept
    finally:
        for k, upload_id in ids.items():
            try:
                client.abort_multipart_upload(Bucket=store_env.bucket, Key=k, UploadId=upload_id)
            except Exception:  # already aborted by the sweep
                pass
        store.close()


def test_a_run_killed_inside_the_probe_leaves_an_upload_the_next_run_aborts(
    seaweed: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The resume test's kill "while starting up" by design, not by timing: the probe's
    part is held at a proxy until the process is killed."""
    s3 = use_server(seaweed, monkeypatch)
    reached, release = threading.Event(), threading.Event()

    def hold_probe_parts(request: Any) -> None:
        if request.method == "PUT" and "/.datamover-probe/" in request.path:
            reached.set()
            release.wait(30)

    (tmp_path / "f.txt").write_bytes(b"x" * 4096)
    cmd = [*DM, "copy", str(tmp_path / "f.txt"), s3.url("d/")]
    client: Any = seaweed.client()
    with FaultProxy(seaweed.endpoint, rewrite=hold_probe_parts) as proxy:
        env = proxy.client_env(seaweed)
        env.pop("AWS_ENDPOINT_URL_S3", None)
        env["XDG_STATE_HOME"] = str(tmp_path / "state")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert reached.wait(60), "the probe never sent a part"
        finally:
            proc.kill()
            proc.wait(30)
            release.set()
        assert len(_uploads(client, s3.bucket)) == 1  # the killed probe's
        proxy.rewrite = None
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
    assert _uploads(client, s3.bucket) == set()
