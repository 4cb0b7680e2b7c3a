"""No write is called verified unless the store proved its bytes (issue: "Ceph RGW for
real"): uploads through the fault proxy with request bits flipped, to

* Ceph RGW 16 over https, TLS terminated by the proxy (client -> proxy https with a
  generated certificate, proxy -> RGW http), where the lean path sends
  UNSIGNED-PAYLOAD and RGW ignores CRC headers: the store must learn that only
  Content-MD5 covers the body there;
* SeaweedFS over plain http made to look like a store that ignores checksum headers
  (the proxy strips every ``x-amz-checksum-*`` and ``Content-MD5`` and signs the
  request again): SeaweedFS does not check the signed payload SHA-256 either, so
  nothing covers the body, and the store must say so (``verified = None``).

Whatever the exit code: every object a write reported as verified holds exactly the
bytes sent; flipped requests are refused and retried, or the write fails with its key
named. Files the manifest marks ok hold the source's bytes on both: on RGW by the
store's check, on the stripped SeaweedFS by the engine's read-back.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

import datamover
from datamover.errors import IntegrityError
from datamover.manifest.reader import read_manifest
from datamover.options import MiB
from datamover.stores import open_store
from datamover.stores.s3.lean import _quote_param, _Signer

from faultproxy import FaultProxy, _Request, make_certificate
from serverenv import ServerEnv, use_server

pytestmark = [pytest.mark.cloud, pytest.mark.timeout(300)]

PART = 5 * MiB


@dataclass
class Flipped:
    env: ServerEnv
    proxy: FaultProxy
    direct: Any  # a boto3 client straight to the server
    verified_by: str | None


def _resign(secret: str) -> Callable[[_Request], None]:
    """A proxy rewrite that strips every checksum header a store could check and signs
    the request again (with the SHA-256 of the payload the client signed)."""
    signer = _Signer("us-east-1")

    def rewrite(req: _Request) -> None:
        def checksum(name: str) -> bool:
            n = name.lower()
            return n.startswith(("x-amz-checksum-", "x-amz-sdk-checksum")) or n == "content-md5"

        auth = req.header("authorization")
        if not auth or not any(checksum(n) for n, _ in req.headers):
            return
        m = re.search(r"Credential=([^/]+)/\d+/[^/]+/s3/aws4_request, SignedHeaders=([^,]+)", auth)
        assert m is not None, auth
        access, signed = m.group(1), m.group(2).split(";")
        kept = [(n, v) for n, v in req.headers if not checksum(n)]
        own = ("host", "authorization", "x-amz-date", "x-amz-content-sha256")
        headers = {n.lower(): v for n, v in kept if n.lower() in signed and n.lower() not in own}
        parts = urlsplit(req.target)
        query = "&".join(
            f"{_quote_param(k)}={_quote_param(v)}"
            for k, v in sorted(parse_qsl(parts.query, keep_blank_values=True))
        )
        signer.sign(
            req.method,
            req.header("host") or "",
            parts.path,
            query,
            headers,
            req.header("x-amz-content-sha256") or "",
            access,
            secret,
            None,
            req.header("x-amz-date"),
        )
        req.headers[:] = [(n, v) for n, v in kept if n.lower() != "authorization"]
        req.headers.append(("Authorization", headers["authorization"]))

    return rewrite


@pytest.fixture(params=["rgw-https", "seaweed-stripped"])
def flipped(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Flipped]:
    if request.param == "rgw-https":
        server = request.getfixturevalue("ceph")  # RGW's plain-http frontend
        request.node.add_marker(pytest.mark.ceph)
        cert, key = make_certificate(str(tmp_path))
        options: dict[str, Any] = {"tls": (cert, key)}
        verified_by = "md5"
    else:
        server = request.getfixturevalue("seaweed")
        cert = None
        options = {"rewrite": _resign(server.secret_key)}
        verified_by = None
    env = use_server(server, monkeypatch)
    with FaultProxy(
        server.endpoint,
        flavor="s3",
        seed=20261206,
        weights={"flip_request_bit": 1.0},
        fault_rate=0.0,
        **options,
    ) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        if cert is not None:
            monkeypatch.setenv("AWS_CA_BUNDLE", cert)
        direct = server.client()
        try:
            yield Flipped(env, proxy, direct, verified_by)
        finally:
            direct.close()


def _stored(f: Flipped, key: str) -> bytes:
    body: bytes = f.direct.get_object(Bucket=f.env.bucket, Key=key)["Body"].read()
    return body


def test_writes_reported_verified_hold_the_bytes_sent(flipped: Flipped) -> None:
    f = flipped
    store, _ = open_store(f.env.url())
    rng = random.Random(5)
    try:
        store.put("warm-up.bin", b"probe through a clean proxy")  # learn what it checks
        f.proxy.fault_rate = 0.3
        verified: dict[str, bytes] = {}
        refused = 0
        for i in range(40):
            key = f"put/{i:02d}.bin"
            data = rng.randbytes(rng.randint(1, 200_000))
            try:
                info = store.put(key, data)
            except IntegrityError as e:
                assert key in str(e)  # the write fails, named
                refused += 1
                continue
            assert info.verified == f.verified_by
            if info.verified is not None:
                verified[key] = data
        data = rng.randbytes(3 * PART + 11)
        writer = store.open_writer("multi.bin", size=len(data), part_size=PART)
        for i in range(4):
            chunk = memoryview(data)[i * PART : (i + 1) * PART]
            for _ in range(20):  # what the engine's part retries do
                try:
                    receipt = writer.write_part(i, chunk, _digests(chunk))
                    break
                except IntegrityError:
                    refused += 1
            assert receipt.verified == f.verified_by
        f.proxy.fault_rate = 0.0
        info = writer.commit({})
        assert info.verified == f.verified_by
        if info.verified is not None:
            verified["multi.bin"] = data
    finally:
        store.close()
    assert f.proxy.counts["flip_request_bit"] >= 5, f.proxy.summary()
    if f.verified_by is not None:
        assert refused >= 5, refused  # flips were refused by the store, not stored
        assert len(verified) >= 30
    else:
        assert refused == 0 and not verified  # nothing checked, nothing claimed
    for key, data in verified.items():
        assert _stored(f, key) == data, key


def _digests(data: memoryview) -> Any:
    from datamover.checksums import PartDigests

    return PartDigests(data)


def test_copy_never_marks_a_wrong_file_ok(flipped: Flipped, tmp_path: Path) -> None:
    """The reported failure: ``datamover copy`` exited 0 with files its manifest marks
    ok holding other bytes. Now every file marked ok holds the source's bytes, and says
    what proved it: the store's check (Content-MD5 on RGW), or, where nothing the store
    enforced covered the bytes, the engine's read-back (``--unverified readback``, the
    default), which finds the flipped uploads the store accepted and sends them again."""
    f = flipped
    rng = random.Random(11)
    src = tmp_path / "src"
    files: dict[str, bytes] = {}
    for i in range(45):
        files[f"small/{i:02d}.dat"] = rng.randbytes(rng.randint(1, 300_000))
    for i in range(3):
        files[f"big/{i}.bin"] = os.urandom(2 * PART + rng.randint(1, PART))
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    # 0.15 of requests: ~60 requests carry a body, so ~9 flips are expected; which
    # requests draw them depends on thread timing, hence the looser floor below.
    f.proxy.fault_rate = 0.15
    manifest = str(tmp_path / "up.jsonl")
    report = datamover.copy(
        str(src), f.env.url("t"), manifest=manifest, part_size=PART, multipart_threshold=PART
    )
    f.proxy.fault_rate = 0.0
    assert f.proxy.counts["flip_request_bit"] >= 3, f.proxy.summary()
    entries = read_manifest(manifest).entries
    ok = {e.path for e in entries if e.status == "ok"}
    failed = {path for path, _ in report.failures}
    assert ok | failed == set(files)
    assert len(ok) >= 40, report.failures  # flips are retried, not given up at once
    for name in ok:
        assert _stored(f, f"t/{name}") == files[name], name
    verified = {e.verified for e in entries if e.status == "ok"}
    assert verified == {f.verified_by or "readback"}, verified
    for path, error in report.failures:
        assert path in files and error  # a file that fails is named, with why
