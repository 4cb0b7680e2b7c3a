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

from datamover.errors import UsageError
from datamover.job import SyncRules

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


def test_bad_input_is_a_usage_error_not_an_internal_one(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reproductions: each of these said "internal error ... please report it"
    (exit 2), and with -vv exited 1 (documented as "some files failed") with no
    `datamover:` line. No server is needed: each is refused before any request."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    env = dict(os.environ)
    manifest = tmp_path / "m.jsonl"
    made = subprocess.run(
        [*DM, "copy", str(src), str(tmp_path / "dst"), "--manifest", str(manifest)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    bad_endpoint = {**env, "AWS_ENDPOINT_URL": "not-a-url"}
    bad_endpoint.update(AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s")  # the lean path too
    no_keys = {k: v for k, v in bad_endpoint.items() if not k.startswith("AWS_") or "URL" in k}
    sums = tmp_path / "nodir" / "sums.txt"
    port = _closed_port()
    cases: list[tuple[list[str], dict[str, str], tuple[str, ...]]] = [
        (
            ["copy", str(src), f"ftp://127.0.0.1:{port}/x"],
            env,
            (f"cannot reach ftp://127.0.0.1:{port}/", "Connection refused"),
        ),
        (
            ["copy", str(src), str(tmp_path / "out"), "--dask", "bogus"],
            env,
            ("--dask bogus", "HOST:PORT", "local:N"),
        ),
        (
            ["copy", str(src), str(tmp_path / "out"), "--dask", "foo://h:1"],
            env,
            ("unknown scheduler protocol foo://", "tcp://"),
        ),
        (["ls", "s3://bench/"], bad_endpoint, ("AWS_ENDPOINT_URL is 'not-a-url'", "http(s)://")),
        (["ls", "s3://bench/"], no_keys, ("AWS_ENDPOINT_URL is 'not-a-url'",)),
        (["manifest", "export", str(manifest), "-o", str(sums)], env, (f"cannot write {sums}",)),
    ]
    for args, case_env, needles in cases:
        _fails_cleanly(args, case_env, *needles)
        # -vv: the traceback, then the same line, and still exit 2
        run = subprocess.run(
            [*DM, "-vv", *args], capture_output=True, text=True, env=case_env, timeout=120
        )
        assert run.returncode == 2, run.stderr
        last = run.stderr.rstrip().splitlines()[-1]
        assert last.startswith("datamover: error: ") and needles[0] in last, run.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "nodir").exists()


def test_internal_error_with_vv_is_still_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug (an exception datamover did not map): one line, exit 2; -vv adds the
    traceback before it rather than raising out of main (exit 1, no datamover line)."""
    from datamover import cli
    from datamover.cli import checks

    def broken(args: object, out: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(checks, "cmd_hash", broken)
    assert cli.main(["hash", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("datamover: internal error: RuntimeError: a bug (run with -vv")
    assert cli.main(["-vv", "hash", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.rstrip().splitlines()[-1] == (
        "datamover: internal error: RuntimeError: a bug (please report it)"
    )


def test_an_option_without_its_partner_is_a_usage_error(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rclone-style: an option that only means something with another one is refused,
    in one line naming the partner, before anything is copied."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    env = dict(os.environ)
    dst = tmp_path / "dst"
    cases = [
        (["sync", "--max-delete", "1"], "--max-delete goes with --delete"),
        (["sync", "--shard-files", "0"], "--shard-files goes with --dask"),
        (["copy", "--shard-size", "1MiB"], "--shard-size goes with --dask"),
        (["copy", "--bag-info", "A=b"], "--bag-info goes with --bagit"),
    ]
    for args, needle in cases:
        _fails_cleanly([*args, str(src), str(dst)], env, needle)
    assert not dst.exists()
    # With their partners they are taken.
    run = subprocess.run(
        [*DM, "sync", str(src), str(dst), "--delete", "--max-delete", "1", "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    with pytest.raises(UsageError, match="--max-delete goes with --delete"):
        SyncRules(max_delete=3)


def test_a_dead_target_or_a_wrong_secret_stops_verify_with_one_line(
    seaweed_env: ServerEnv, src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify stops as copy does (exit 2, one line) rather than printing an ERROR line
    per file and exiting 1; and a bad secret is "credentials rejected" for the commands
    that read one object (a HEAD's 403 has no body to say so) as it is for ls and copy."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    env = dict(os.environ)
    manifest = tmp_path / "m.jsonl"
    made = subprocess.run(
        [*DM, "copy", str(src), seaweed_env.url("run1/"), "--manifest", str(manifest)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    closed = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}"}
    _fails_cleanly(["verify", str(manifest)], closed, "cannot reach", "check the endpoint")
    wrong = {**env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    _fails_cleanly(["verify", str(manifest)], wrong, "credentials rejected")
    for command in (["stat"], ["cat"], ["hash"], ["rm"], ["ls"], ["du"]):
        line = _fails_cleanly(
            [*command, seaweed_env.url("run1/f0.txt")], wrong, "credentials rejected", "AWS_"
        )
        assert "not-the-secret" not in line
    # Nothing was removed by the refused rm, and the right secret still verifies.
    run = subprocess.run(
        [*DM, "verify", str(manifest)], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0 and run.stdout.startswith("OK: 3 of 3"), run.stdout + run.stderr


def test_hash_of_a_prefix_says_it_is_one(
    seaweed_env: ServerEnv, src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hash reads one object: a prefix (or a local directory) is refused as cat refuses
    it, not reported as "not found" (nor, for a directory, an internal error)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    env = dict(os.environ)
    made = subprocess.run(
        [*DM, "copy", str(src), seaweed_env.url("run1/")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    for url in (seaweed_env.url("run1"), seaweed_env.url("run1/"), str(src)):
        for command in ("hash", "cat"):
            _fails_cleanly([command, url], env, "is a directory or prefix, not an object")
    _fails_cleanly(["hash", seaweed_env.url("nothing")], env, "no such object")
    run = subprocess.run(
        [*DM, "hash", seaweed_env.url("run1/f0.txt")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    digest = "9a271f2a916b0b6ee6cecb2426f0b3206ef074578be55d9bc94f6f3fe3ab86aa"  # "0\n"
    assert run.stdout == f"{digest}  {seaweed_env.url('run1/f0.txt')}\n"


def test_a_missing_bucket_with_an_invalid_name_says_so(
    seaweed_env: ServerEnv, src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "create it" is no advice for a name no bucket can have; a valid name keeps it.
    Nothing is refused up front: the server's NoSuchBucket is what is explained."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    env = dict(os.environ)
    for bucket in ("ab", "Bad_Bucket"):
        for args in (["ls", f"s3://{bucket}/"], ["stat", f"s3://{bucket}/x"]):
            line = _fails_cleanly(
                args, env, f"bucket {bucket!r} does not exist", "not a valid S3 bucket name"
            )
            assert "create it" not in line
        _fails_cleanly(["copy", str(src), f"s3://{bucket}/x"], env, "not a valid S3 bucket name")
    line = _fails_cleanly(["ls", "s3://no-such-bucket-dm/"], env, "create it")
    assert "not a valid" not in line


def test_a_manifest_under_a_file_says_it_is_no_directory(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))  # the journal: tmp_path/datamover
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    env = dict(os.environ)
    for manifest in ("afile/m.jsonl", "afile/deeper/m.jsonl"):
        line = _fails_cleanly(
            ["copy", str(src), str(tmp_path / "dst"), "--manifest", manifest],
            env,
            f"cannot write manifest {manifest}: afile is not a directory",
        )
        assert "File exists" not in line
    # Nothing ran, so no job is left behind "running" in the journal.
    listed = subprocess.run(
        [*DM, "jobs", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert listed.returncode == 0 and "running" not in listed.stdout, listed.stdout
    assert not (tmp_path / "dst").exists()


def test_jobs_commands_never_create_a_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    env = dict(os.environ)
    missing = tmp_path / "nonexistent"
    run = subprocess.run(
        [*DM, "jobs", "list", "--state-dir", str(missing)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0 and run.stdout == "", run.stdout
    assert run.stderr == f"no journal in {missing} (no jobs yet)\n"
    for action in (["show", "J1"], ["resume", "J1"], ["clean", "J1"]):
        _fails_cleanly(
            ["jobs", *action, "--state-dir", str(missing)],
            env,
            f"no journal in {missing} (no jobs yet)",
        )
    run = subprocess.run(
        [*DM, "jobs", "clean", "--state-dir", str(missing)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    run = subprocess.run(
        [*DM, "jobs", "list"], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0 and "no journal in" in run.stderr, run.stderr
    assert not missing.exists() and not (tmp_path / "state").exists()
