"""Secrets never appear in anything datamover produces: recognisable fake secrets (an
AWS secret key, an Azure connection string's AccountKey, a SAS token) are set, copy /
ls / verify / sync run with --json, --report and maximal logging (-vvv: every
library's debug output too), and stdout, stderr, manifests, reports and the journal
database are searched for them."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from serverenv import ServerEnv, use_server
from servers import AZURITE_ACCOUNT, AZURITE_KEY, AzuriteServer, MotoServer

pytestmark = pytest.mark.cloud
DM = [sys.executable, "-m", "datamover"]

FAKE_KEY_ID = "AKIAFAKEKEYID7777777"
FAKE_SECRET = "FAKE/secret+Key9876543210zyxwVUTSrqpo"


def _variants(secret: str) -> set[str]:
    """The secret as it could appear: raw, URL-encoded, and its distinctive middle."""
    return {secret, quote(secret, safe=""), secret[4:-4]}


class Outputs:
    """Everything the runs produced, to search afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.texts: list[tuple[str, str]] = []

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        run = subprocess.run([*DM, *args], capture_output=True, text=True, env=env, timeout=180)
        self.texts.append((f"stdout of {args[:2]}", run.stdout))
        self.texts.append((f"stderr of {args[:2]}", run.stderr))
        return run

    def check(self, secrets: set[str], state: Path) -> None:
        blobs = [(name, text.encode()) for name, text in self.texts]
        for path in self.tmp_path.rglob("*"):
            in_state = path.is_relative_to(state)
            if path.is_file() and (in_state or path.suffix in {".jsonl", ".json", ".partial"}):
                blobs.append((str(path), path.read_bytes()))  # journal.db (and -wal) included
        assert any(name.endswith("journal.db") for name, _ in blobs), "journal not found"
        for secret in secrets:
            for name, blob in blobs:
                assert secret.encode() not in blob, f"secret found in {name}"


def test_no_secret_in_any_output_s3(
    moto: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = use_server(moto, monkeypatch)  # moto accepts any key pair
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}.bin").write_bytes(os.urandom(1000 * (i + 1)))
    out = Outputs(tmp_path)
    up = out.run(
        "-vvv",
        "copy",
        str(src),
        s3.url("up/"),
        "--json",
        "--report",
        str(tmp_path / "report.json"),
        "--manifest",
        str(tmp_path / "m.jsonl"),
    )
    assert up.returncode == 0, up.stderr[-2000:]
    assert "DEBUG" in up.stderr  # the libraries' debug logs really were on
    assert out.run("-vv", "ls", "-l", s3.url("up/")).returncode == 0
    assert out.run("-vv", "verify", str(tmp_path / "m.jsonl")).returncode == 0
    sync = out.run(
        "-vvv", "sync", str(src), s3.url("up/"), "--delete", "--report", str(tmp_path / "sync.json")
    )
    assert sync.returncode == 0
    assert out.run("-vv", "ls", "s3://no-such-bucket-dm/").returncode == 2
    out.check(_variants(FAKE_SECRET), state)


def test_no_secret_in_any_output_azure(
    azurite: AzuriteServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    az: ServerEnv = use_server(azurite, monkeypatch)
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("azure\n")
    (src / "b.bin").write_bytes(os.urandom(5000))
    out = Outputs(tmp_path)

    # 1. A connection string with AccountKey, from the environment.
    up = out.run(
        "-vvv",
        "copy",
        str(src),
        az.url("cs/"),
        "--report",
        str(tmp_path / "r1.json"),
        "--manifest",
        str(tmp_path / "m1.jsonl"),
    )
    assert up.returncode == 0, up.stderr[-2000:]
    assert out.run("-vv", "verify", str(tmp_path / "m1.jsonl")).returncode == 0

    # 2. A SAS token, by reference from a named remote; no connection string at all.
    sas = generate_container_sas(
        AZURITE_ACCOUNT,
        az.bucket,
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, write=True, list=True, delete=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )
    signature = dict(p.split("=", 1) for p in sas.split("&"))["sig"]
    config = tmp_path / "cfg" / "datamover" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        "[remotes.vault]\n"
        'type = "az"\n'
        f'endpoint = "{azurite.endpoint}"\n'
        f'account = "{AZURITE_ACCOUNT}"\n'
        'sas_token_env = "DM_TEST_SAS"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
    env["DM_TEST_SAS"] = sas
    run = out.run(
        "-vvv",
        "copy",
        str(src),
        f"vault:{az.bucket}/sas/",
        "--json",
        "--report",
        str(tmp_path / "r2.json"),
        "--manifest",
        str(tmp_path / "m2.jsonl"),
        env=env,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    # The lean path logs no request lines; the SDK's (DATAMOVER_AZURE_LEAN=0) log the
    # SAS in every URL, scrubbed.
    sdk = out.run(
        "-vvv",
        "copy",
        str(src),
        f"vault:{az.bucket}/sas-sdk/",
        "--manifest",
        str(tmp_path / "m3.jsonl"),
        env={**env, "DATAMOVER_AZURE_LEAN": "0"},
    )
    assert sdk.returncode == 0, sdk.stderr[-2000:]
    assert "sig=***" in sdk.stderr
    assert out.run("-vvv", "ls", "-l", f"vault:{az.bucket}/sas/", env=env).returncode == 0
    assert out.run("remotes", "show", "vault", env=env).returncode == 0
    secrets = _variants(AZURITE_KEY) | _variants(signature) | {sas}
    out.check(secrets, state)
