"""Errors a user can act on: each is one line on stderr saying what is wrong and what
to do, exit 2, no traceback (unless -vv). Run through the CLI against real servers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serverenv import ServerEnv

pytestmark = pytest.mark.cloud
DM = [sys.executable, "-m", "datamover"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fails_cleanly(args: list[str], env: dict[str, str], *needles: str) -> str:
    run = subprocess.run([*DM, *args], capture_output=True, text=True, env=env, timeout=120)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2, run.stderr
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert lines[0].startswith("datamover: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    for i in range(3):
        (root / f"f{i}.txt").write_text(f"{i}\n")
    return root


def test_actionable_errors(
    seaweed_env: ServerEnv, src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    env = dict(os.environ)

    # A bucket that does not exist: as a destination and as a listing.
    _fails_cleanly(
        ["copy", str(src), "s3://no-such-bucket-dm/x"], env, "does not exist", "create it"
    )
    # With --json, stdout still ends in a summary event a pipeline can read.
    run = subprocess.run(
        [*DM, "copy", str(src), "s3://no-such-bucket-dm/x", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    summary = json.loads(run.stdout.splitlines()[-1])
    assert run.returncode == 2 and summary["event"] == "summary" and not summary["ok"]
    _fails_cleanly(["ls", "s3://no-such-bucket-dm/"], env, "does not exist")

    # Credentials: none at all, and a wrong secret (SeaweedFS checks signatures).
    bare = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    _fails_cleanly(["ls", seaweed_env.url()], bare, "no AWS credentials", "AWS_ACCESS_KEY_ID")
    wrong = {**env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    line = _fails_cleanly(["copy", str(src), seaweed_env.url("x/")], wrong, "credentials rejected")
    assert "not-the-secret" not in line

    # A wrong endpoint (nothing listens): one line within seconds, not per-file retries.
    closed = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}"}
    started = time.monotonic()
    _fails_cleanly(
        ["copy", str(src), seaweed_env.url("x/")], closed, "cannot reach", "check the endpoint"
    )
    _fails_cleanly(["ls", seaweed_env.url()], closed, "check the endpoint")
    assert time.monotonic() - started < 40

    # A typo'd scheme, a forgotten //, an unknown remote.
    _fails_cleanly(["ls", "s4://bucket/x"], env, "unknown URL scheme s4://", "did you mean s3://")
    _fails_cleanly(["copy", str(src), "s3:bucket/x"], env, "did you mean s3://bucket/x")
    _fails_cleanly(["ls", "nosuch:bucket/x"], env, "unknown remote 'nosuch'", "[remotes.nosuch]")
    # A config that holds a literal secret is refused without echoing it.
    config = tmp_path / "bad.toml"
    config.write_text('[remotes.lab]\ntype = "s3"\nsecret_key = "LiteralSecret42"\n')
    line = _fails_cleanly(["--config", str(config), "remotes", "list"], env, "secret_key_env")
    assert "LiteralSecret42" not in line


def test_traceback_only_with_vv(seaweed_env: ServerEnv, tmp_path: Path) -> None:
    run = subprocess.run(
        [*DM, "-vv", "ls", "s3://no-such-bucket-dm/"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 2 and "Traceback" in run.stderr
    assert run.stderr.rstrip().splitlines()[-1].startswith("datamover: error: ")
