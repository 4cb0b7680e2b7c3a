"""What reaches a user's terminal: keys are shown, never obeyed. A key holding escape
sequences is printed escaped on a terminal (as GNU ``ls`` does) and raw to a pipe;
a listing never shows a row with an empty name."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from serverenv import ServerEnv

pytestmark = pytest.mark.cloud
DM = [sys.executable, "-m", "datamover"]
HOSTILE = "a\x1b]0;owned\x07\x1b[31mred\rb\x9bc"


def _on_a_terminal(args: list[str], env: dict[str, str]) -> bytes:
    """Run the command with stdout and stderr on a pseudo-terminal; what it wrote."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(args, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    out = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=60)
    os.close(leader)
    return out


def test_hostile_keys_are_escaped_on_a_terminal_and_raw_in_a_pipe(
    moto_env: ServerEnv, tmp_path: Path
) -> None:
    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    client.put_object(Bucket=moto_env.bucket, Key="d/" + HOSTILE, Body=b"x")
    env = dict(os.environ)
    shown = _on_a_terminal([*DM, "ls", moto_env.url("d/")], env)
    assert (
        b"\x1b" not in shown
        and b"\x07" not in shown
        and b"\x9b" not in shown.replace(b"\r\n", b"\n")
    )
    assert b"a\\033]0;owned\\007\\033[31mred\\rb\\233c" in shown
    piped = subprocess.run(
        [*DM, "ls", moto_env.url("d/")], capture_output=True, env=env, check=True
    )
    assert HOSTILE.encode() in piped.stdout  # scripts read names byte for byte

    # An error naming the key is escaped too (the object is not a directory to copy into).
    failed = _on_a_terminal([*DM, "cat", moto_env.url("d/" + HOSTILE + "/missing")], env)
    assert b"\x1b" not in failed and b"datamover: error:" in failed


def test_recursive_long_listing_of_a_prefix_with_a_marker_has_no_empty_row(
    moto_env: ServerEnv,
) -> None:
    """Stores that list a prefix's own marker (moto, Ceph RGW) once gave it a row."""
    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    for key, body in (("p/", b""), ("p/a.txt", b"a"), ("p/sub/", b""), ("p/sub/b.txt", b"bb")):
        client.put_object(Bucket=moto_env.bucket, Key=key, Body=body)
    run = subprocess.run(
        [*DM, "ls", "-l", "-R", moto_env.url("p/")], capture_output=True, text=True, check=True
    )
    # Rows are "SIZE(12)  WHEN(19)  NAME".
    names = [line[12 + 2 + 19 + 2 :] for line in run.stdout.splitlines()]
    assert "" not in names, run.stdout
    assert "a.txt" in names and "sub/b.txt" in names
