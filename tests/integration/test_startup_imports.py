"""A plain ``datamover copy`` up and down whose endpoint and keys come from the
environment (as the fixtures and the benchmark pass them) moves its bytes on the lean
paths and never imports a cloud SDK: boto3/botocore, azure.storage.blob / azure.core,
google.cloud.storage cost ~0.35-0.6 CPU-s of start-up each (issue #18). The copy runs
in a child process that reports which SDK modules it loaded. ``--version``, ``--help``
and an argument error import none either."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serverenv import ServerEnv, use_server
from servers import AzuriteServer

#: Top-level names of the SDK modules a lean copy must not load.
SDK = ("boto3", "botocore", "azure.storage", "azure.core", "google.cloud.storage")

CHILD = f"""
import json, sys
from datamover.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
sdk = sorted(m for m in sys.modules if m.startswith({SDK!r}))
print("SDK-MODULES " + json.dumps([code, sdk]))
"""


def _run(*argv: str) -> tuple[object, list[str]]:
    r = subprocess.run(
        [sys.executable, "-c", CHILD, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    sys.stderr.write(r.stderr)  # shown when a test fails
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("SDK-MODULES ")), None)
    assert line is not None, r.stdout + r.stderr
    code, loaded = json.loads(line.removeprefix("SDK-MODULES "))
    return code, [m for m in loaded if m.split(".")[0] in {"boto3", "botocore"} or "." in m]


def _roundtrip(env: ServerEnv, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "small.bin").write_bytes(os.urandom(4096))
    code, loaded = _run("copy", str(src), env.url("up/"))
    assert code == 0 and loaded == [], loaded
    code, loaded = _run("copy", env.url("up/"), str(tmp_path / "down"))
    assert code == 0 and loaded == [], loaded
    assert (tmp_path / "down" / "small.bin").read_bytes() == (src / "small.bin").read_bytes()


@pytest.mark.cloud
def test_s3_copy_imports_no_sdk(seaweed_env: ServerEnv, tmp_path: Path) -> None:
    _roundtrip(seaweed_env, tmp_path)


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["copy", "--no-such-flag"]])
def test_cli_basics_import_no_sdk(argv: list[str]) -> None:
    _code, loaded = _run(*argv)
    assert loaded == []


@pytest.mark.cloud
def test_azure_copy_imports_no_sdk(
    azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """More in ``test_azure_deferred_sdk.py`` (multipart, ls, verify, workers)."""
    _roundtrip(use_server(azurite, monkeypatch), tmp_path)
