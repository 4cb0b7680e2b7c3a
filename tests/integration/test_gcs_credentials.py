"""A GCS remote's ``credentials_file_env``: the key file it names is what a copy
authenticates with (it was accepted and never read: Application Default Credentials
were used instead, or none at all against an endpoint), and what google-auth raises
refreshing credentials is a one-line datamover error, not ``RefreshError``.

fake-gcs-server takes any token; the service-account key's ``token_uri`` points at a
token endpoint of this test's own on 127.0.0.1, which records what it is asked and
answers as the test says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import datamover
from datamover.errors import AuthError, ConfigError

from serverenv import ServerEnv, use_server
from servers import FakeGcsServer

pytestmark = [pytest.mark.cloud, pytest.mark.timeout(120)]

DM = [sys.executable, "-m", "datamover"]


class TokenEndpoint:
    """OAuth2 token endpoint: grants a token, or refuses with ``invalid_grant``."""

    def __init__(self) -> None:
        self.asked = 0
        self.refuse = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                owner.asked += 1
                if owner.refuse:
                    body, status = b'{"error": "invalid_grant"}', 400
                else:
                    body = json.dumps(
                        {"access_token": "tok", "expires_in": 3600, "token_type": "Bearer"}
                    ).encode()
                    status = 200
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def token() -> Iterator[TokenEndpoint]:
    endpoint = TokenEndpoint()
    try:
        yield endpoint
    finally:
        endpoint.close()


@pytest.fixture
def remote(
    gcs: FakeGcsServer, token: TokenEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ServerEnv:
    env = use_server(gcs, monkeypatch)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    keyfile = tmp_path / "sa.json"
    keyfile.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "p",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": "dm@p.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": token.url,
            }
        )
    )
    config = tmp_path / "config" / "datamover" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'[remotes.gsa]\ntype = "gs"\nendpoint = "{gcs.endpoint}"\n'
        'credentials_file_env = "GSA_KEYFILE"\n'
    )
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("GSA_KEYFILE", str(keyfile))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    return env


def _src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"hello\n")
    return src


def test_the_key_file_a_remote_names_is_used(
    remote: ServerEnv, token: TokenEndpoint, tmp_path: Path
) -> None:
    report = datamover.copy(str(_src(tmp_path)), f"gsa:{remote.bucket}/k/")
    assert report.ok, report.failures
    assert token.asked >= 1  # the named key was exchanged for a token


def test_a_refused_key_is_one_auth_error(
    remote: ServerEnv, token: TokenEndpoint, tmp_path: Path
) -> None:
    token.refuse = True
    src = _src(tmp_path)
    with pytest.raises(AuthError, match="credentials were rejected or expired") as err:
        datamover.copy(str(src), f"gsa:{remote.bucket}/k/")
    assert "\n" not in str(err.value)
    cli = subprocess.run(
        [*DM, "copy", str(src), f"gsa:{remote.bucket}/k/"],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
    )
    assert cli.returncode == 2, cli.stdout + cli.stderr
    assert "credentials were rejected" in cli.stderr
    assert "internal error" not in cli.stderr and "Traceback" not in cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1, cli.stderr


def test_a_key_file_that_is_not_there_is_a_config_error(
    remote: ServerEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GSA_KEYFILE", str(tmp_path / "nope.json"))
    with pytest.raises(ConfigError, match=r"\$GSA_KEYFILE names .*nope.json'?: no such file"):
        datamover.copy(str(_src(tmp_path)), f"gsa:{remote.bucket}/k/")
