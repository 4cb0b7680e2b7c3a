"""The lean S3 request path's pieces that need no server: SigV4 against AWS's published
examples, key quoting, and when it declines (proxy, redirect)."""

from __future__ import annotations

import socket
import threading
from types import SimpleNamespace

import pytest

from datamover.stores.s3.lean import EMPTY_SHA256, LeanS3, LeanUnavailable, _quote, _Signer

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
ACCESS = "AKIAIOSFODNN7EXAMPLE"


def test_sigv4_get_object_example() -> None:
    """AWS's "GET Object" example (Signature Version 4, header-based auth)."""
    headers = {"range": "bytes=0-9"}
    _Signer("us-east-1").sign(
        "GET",
        "examplebucket.s3.amazonaws.com",
        "/test.txt",
        "",
        headers,
        EMPTY_SHA256,
        ACCESS,
        SECRET,
        None,
        amz_date="20130524T000000Z",
    )
    assert headers["authorization"] == (
        f"AWS4-HMAC-SHA256 Credential={ACCESS}/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_sigv4_put_object_example() -> None:
    """AWS's "PUT Object" example: a signed payload, a quoted key and extra headers."""
    import hashlib

    body = b"Welcome to Amazon S3."
    headers = {"date": "Fri, 24 May 2013 00:00:00 GMT", "x-amz-storage-class": "REDUCED_REDUNDANCY"}
    _Signer("us-east-1").sign(
        "PUT",
        "examplebucket.s3.amazonaws.com",
        "/" + _quote("test$file.text"),
        "",
        headers,
        hashlib.sha256(body).hexdigest(),
        ACCESS,
        SECRET,
        None,
        amz_date="20130524T000000Z",
    )
    assert headers["authorization"].endswith(
        "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
    )


def test_quote_keeps_slashes_and_encodes_the_rest() -> None:
    assert _quote("a b/c+d~e%é") == "a%20b/c%2Bd~e%25%C3%A9"


def _creds() -> SimpleNamespace:
    return SimpleNamespace(access_key=ACCESS, secret_key=SECRET, token=None)


def test_declines_when_a_proxy_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(LeanUnavailable):
        LeanS3(
            endpoint="http://s3.example.invalid:8333",
            bucket="b",
            region="us-east-1",
            path_style=True,
            credentials=_creds,
            ca_bundle=None,
        )


def test_redirect_turns_the_lean_path_off() -> None:
    """A 301 (a bucket in another region) is boto3's to follow: the lean path raises
    LeanUnavailable and stays off."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 301 Moved Permanently\r\nContent-Length: 0\r\n"
                b"x-amz-bucket-region: eu-west-1\r\n\r\n"
            )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    lean = LeanS3(
        endpoint=f"http://127.0.0.1:{port}",
        bucket="b",
        region="us-east-1",
        path_style=True,
        credentials=_creds,
        ca_bundle=None,
    )
    with pytest.raises(LeanUnavailable):
        lean.request("HEAD", "k")
    assert lean.disabled
    with pytest.raises(LeanUnavailable):
        lean.request("HEAD", "k")
    thread.join(5)
    listener.close()
    lean.close()
