"""The user's side of the CLI against a real S3 server (SeaweedFS), as subprocesses:
ls/stat/cat/du/rm/hash, --json events, --report, filters, --dry-run, sync --delete
with filters, and a named remote from a config file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from serverenv import ServerEnv

pytestmark = pytest.mark.cloud

ROOT = Path(__file__).resolve().parents[2]
REPORT_SCHEMA = json.loads((ROOT / "manifests" / "report.schema.json").read_text())
DM = [sys.executable, "-m", "datamover"]


def dm(
    *args: str, env: dict[str, str] | None = None, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    run = subprocess.run([*DM, *args], capture_output=True, text=True, env=env, timeout=120)
    if ok:
        assert run.returncode == 0, run.stdout + run.stderr
    return run


def _tree(root: Path) -> dict[str, bytes]:
    files = {
        "raw/a.h5": os.urandom(1000),
        "raw/b.h5": os.urandom(2000),
        "raw/notes.txt": b"notes\n",
        "tmp/scratch.h5": os.urandom(10),
        "bin.dat": bytes(range(256)) * 64,
    }
    for i in range(12):
        files[f"many/f{i:02d}.txt"] = f"{i}\n".encode()
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config-home"))
    monkeypatch.delenv("DATAMOVER_CONFIG", raising=False)
    return dict(os.environ)


def test_upload_with_events_report_and_filters_then_browse(
    seaweed_env: ServerEnv, tmp_path: Path, env: dict[str, str]
) -> None:
    src = tmp_path / "src"
    files = _tree(src)
    report = tmp_path / "report.json"
    run = dm(
        "copy",
        str(src),
        seaweed_env.url("run1"),
        "--json",
        "--report",
        str(report),
        "--manifest",
        str(tmp_path / "m.jsonl"),
        "--exclude",
        "tmp/**",
        "--exclude",
        "many/f1?.txt",
    )
    events = [json.loads(line) for line in run.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "summary"
    taken = sorted(e["path"] for e in events if e["event"] == "file_done")
    expected = sorted(k for k in files if not k.startswith("tmp/") and not k.startswith("many/f1"))
    assert taken == expected and events[-1]["ok"] and events[-1]["files_ok"] == len(expected)
    doc = json.loads(report.read_text())
    jsonschema.validate(doc, REPORT_SCHEMA)
    assert doc["status"] == "ok" and [f["path"] for f in doc["files"]] == expected
    assert doc["provenance"]["command_line"][:2] == ["datamover", "copy"]

    run = dm("ls", seaweed_env.url("run1"))
    assert run.stdout.split() == ["bin.dat", "many/", "raw/"]
    run = dm("ls", "-lR", seaweed_env.url("run1/raw"))
    assert [line.split()[-1] for line in run.stdout.splitlines()] == ["a.h5", "b.h5", "notes.txt"]
    run = dm("ls", "--json", "-R", seaweed_env.url("run1/many/"))
    assert len([json.loads(x) for x in run.stdout.splitlines()]) == 10
    stat = json.loads(dm("stat", "--json", seaweed_env.url("run1/raw/a.h5")).stdout)
    digest = hashlib.sha256(files["raw/a.h5"]).hexdigest()
    assert stat["size"] == 1000 and stat["checksums"]["sha256"] == digest
    du = json.loads(dm("du", "--json", seaweed_env.url("run1")).stdout)
    assert du == {
        "url": seaweed_env.url("run1"),
        "files": len(expected),
        "bytes": sum(len(files[k]) for k in expected),
    }
    blob = subprocess.run([*DM, "cat", seaweed_env.url("run1/bin.dat")], capture_output=True)
    assert blob.returncode == 0 and blob.stdout == files["bin.dat"]

    # rm: a prefix needs -r; more than 10 objects go without asking off a terminal.
    run = dm("rm", seaweed_env.url("run1/many"), ok=False)
    assert run.returncode == 2 and "rm -r" in run.stderr
    run = dm("rm", "-r", seaweed_env.url("run1/many"))
    assert "deleted 10 objects" in run.stdout
    dm("rm", seaweed_env.url("run1/bin.dat"))
    # (SeaweedFS may still show the emptied many/ as a directory for a moment.)
    assert dm("ls", "-R", seaweed_env.url("run1")).stdout.split() == [
        "raw/a.h5",
        "raw/b.h5",
        "raw/notes.txt",
    ]


def test_dry_run_transfers_and_records_nothing(
    seaweed_env: ServerEnv, tmp_path: Path, env: dict[str, str]
) -> None:
    src = tmp_path / "src"
    _tree(src)
    state = tmp_path / "state"
    run = dm(
        "copy",
        str(src),
        seaweed_env.url("dry"),
        "--dry-run",
        "--include",
        "*.h5",
        "--state-dir",
        str(state),
        "--manifest",
        str(tmp_path / "m.jsonl"),
    )
    lines = run.stdout.splitlines()
    assert sorted(lines[:-1]) == [
        "would copy raw/a.h5 (1000 B)",
        "would copy raw/b.h5 (2.0 KiB)",
        "would copy tmp/scratch.h5 (10 B)",
    ]
    assert lines[-1].startswith("dry run: would copy 3 files")
    assert dm("ls", seaweed_env.url(""), ok=False).stdout == ""  # the bucket is still empty
    assert not (tmp_path / "m.jsonl").exists() and not (tmp_path / "m.jsonl.partial").exists()
    assert not state.exists()  # no journal was even opened


def test_sync_delete_spares_excluded_files(
    seaweed_env: ServerEnv, tmp_path: Path, env: dict[str, str]
) -> None:
    src = tmp_path / "src"
    _tree(src)
    url = seaweed_env.url("mirror")
    dm("sync", str(src), url, "--exclude", "many/**")
    (src / "raw" / "a.h5").unlink()
    (src / "raw" / "notes.txt").unlink()
    run = dm(
        "sync",
        str(src),
        url,
        "--delete",
        "--exclude",
        "many/**",
        "--exclude",
        "*.txt",
        "--dry-run",
        "--json",
    )
    events = [json.loads(line) for line in run.stdout.splitlines()]
    assert [e["path"] for e in events if e["event"] == "would_delete"] == ["raw/a.h5"]
    assert events[-1]["dry_run"] and events[-1]["files_skipped"] == 3
    run = dm("sync", str(src), url, "--delete", "--exclude", "many/**", "--exclude", "*.txt")
    assert "1 deleted" in run.stdout
    listed = dm("ls", "-R", url).stdout.split()
    assert "raw/a.h5" not in listed and "raw/notes.txt" in listed  # excluded: kept


def test_named_remote_with_env_referenced_keys(
    seaweed_env: ServerEnv, tmp_path: Path, env: dict[str, str]
) -> None:
    server = seaweed_env.server
    config = tmp_path / "config.toml"
    config.write_text(
        "[remotes.lab]\n"
        'type = "s3"\n'
        f'endpoint = "{server.endpoint}"\n'  # type: ignore[attr-defined]
        'region = "us-east-1"\n'
        'access_key_env = "LAB_KEY_ID"\n'
        'secret_key_env = "LAB_SECRET"\n'
        f'root = "{seaweed_env.bucket}"\n'
    )
    bare = {k: v for k, v in env.items() if not k.startswith("AWS_ACCESS") and "SECRET" not in k}
    bare.pop("AWS_ENDPOINT_URL", None)
    bare["LAB_KEY_ID"] = server.access_key  # type: ignore[attr-defined]
    bare["LAB_SECRET"] = server.secret_key  # type: ignore[attr-defined]
    src = tmp_path / "one.txt"
    src.write_text("via a remote\n")
    dm("--config", str(config), "copy", str(src), "lab:in/", env=bare)
    run = dm("--config", str(config), "cat", "lab:in/one.txt", env=bare)
    assert run.stdout == "via a remote\n"
    shown = dm("--config", str(config), "remotes", "show", "lab", env=bare).stdout
    assert "$LAB_SECRET (set)" in shown and server.secret_key not in shown  # type: ignore[attr-defined]
    # The same remote with the variable unset: one line saying which variable.
    del bare["LAB_SECRET"]
    run = dm("--config", str(config), "ls", "lab:in", env=bare, ok=False)
    assert run.returncode == 2 and "$LAB_SECRET, which is not set" in run.stderr


def test_verify_without_target_goes_through_the_remote_the_copy_used(
    moto_env: ServerEnv, tmp_path: Path, env: dict[str, str]
) -> None:
    """The header keeps the remote's name beside the URL: ``verify MANIFEST`` opens the
    destination through it (endpoint, keys), as the copy did; without that remote in
    the config, the error names it and what to do."""
    server = moto_env.server
    config = tmp_path / "config.toml"
    config.write_text(
        "[remotes.myremote]\n"
        'type = "s3"\n'
        f'endpoint = "{server.endpoint}"\n'  # type: ignore[attr-defined]
        'region = "us-east-1"\n'
        'access_key_env = "LAB_KEY_ID"\n'
        'secret_key_env = "LAB_SECRET"\n'
    )
    bare = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    bare["LAB_KEY_ID"] = server.access_key  # type: ignore[attr-defined]
    bare["LAB_SECRET"] = server.secret_key  # type: ignore[attr-defined]
    bare["AWS_CONFIG_FILE"] = bare["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
    src = tmp_path / "data"
    _tree(src)
    manifest = tmp_path / "m.jsonl"
    target = f"myremote:{moto_env.bucket}/x"
    dm("--config", str(config), "copy", str(src), target, "--manifest", str(manifest), env=bare)
    header = json.loads(manifest.read_text().splitlines()[0])
    assert header["destination"] == f"s3://{moto_env.bucket}/x/"
    assert header["destination_remote"] == "myremote"

    run = dm("--config", str(config), "verify", str(manifest), env=bare)
    assert run.stdout.startswith("OK: 17 of 17 files match"), run.stdout

    other = tmp_path / "other.toml"
    other.write_text('[remotes.elsewhere]\ntype = "file"\nroot = "/tmp"\n')
    run = dm("--config", str(other), "verify", str(manifest), env=bare, ok=False)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert "no AWS credentials" in lines[0]
    assert "the copy went through remote 'myremote', which the config does not" in lines[0]
