"""Ceph RGW (``CephRgwServer`` in tests/servers.py): a real one-node Ceph cluster.

What is checked here: the cluster's life cycle (three daemons, all on 127.0.0.1, all
gone after ``stop()``), https with a self-signed certificate that clients trust
through ``AWS_CA_BUNDLE`` alone (boto3 and datamover's lean path), a copy + verify
round trip over https, ``python tests/servers.py ceph``, and what this RGW (16.2.15)
does differently from AWS: pinned as it is, and where datamover's integrity contract
relies on what RGW doesn't do, how the S3 store copes: it learns what RGW checks
(Content-MD5 and the signed payload SHA-256, not CRC headers) and says so in every
write's ``verified``; nothing relies on the completion's ETag or on copy
preconditions.

The conformance suite and the ``s3`` fixture (test_copy_s3.py, test_s3_lean.py) run
on this cluster too, over http; test_copy_s3.py, the sync/resume tests
(test_sync_resume.py) and the mount's legacy-tool tests (tests/fuse/test_mount_legacy.py)
over http and https.
"""

from __future__ import annotations

import base64
import hashlib
import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

import datamover
from datamover.checksums import PartDigests, digest_bytes
from datamover.errors import IntegrityError, NotFound
from datamover.options import MiB
from datamover.stores import open_store
from datamover.stores.base import digest_metadata_key
from datamover.stores.s3 import S3Store

from serverenv import ServerEnv, use_server
from servers import REPO_ROOT, CephRgwServer, S3Endpoint

# Tests that use the session cluster get the ``ceph`` marker from conftest.py; those
# that start their own carry it here.
pytestmark = pytest.mark.cloud

DM = [sys.executable, "-m", "datamover"]
PART = 5 * MiB  # RGW, like AWS, refuses smaller parts except the last
SHA_KEY = digest_metadata_key("sha256")


# -- helpers ---------------------------------------------------------------------------------


def _listeners(pids: Iterable[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that ``pids`` hold."""
    inodes: set[str] = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found: list[tuple[str, int]] = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            addr_hex, port_hex = local.split(":")
            raw = bytes.fromhex(addr_hex)
            # The kernel prints the address as 32-bit words in host (little-endian) order.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.append((socket.inet_ntop(family, words), int(port_hex, 16)))
    return found


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


def _crc32c_b64(data: bytes) -> str:
    return base64.b64encode(digest_bytes("crc32c", data)).decode()


def _s3_store(env: ServerEnv) -> S3Store:
    store, _ = open_store(env.url())
    assert isinstance(store, S3Store)
    return store


# -- the cluster -----------------------------------------------------------------------------


def test_session_cluster_listens_on_loopback_only(ceph_cluster: CephRgwServer) -> None:
    assert ceph_cluster.is_running()
    pids = ceph_cluster.pids
    assert sorted(pids) == ["mon", "osd", "rgw"]
    listening = _listeners(pids.values())
    assert listening, "no listening sockets found for the Ceph daemons"
    assert {addr for addr, _ in listening} == {"127.0.0.1"}, listening
    ports = {port for _, port in listening}
    assert ports <= set(ceph_cluster.ports), (ports, ceph_cluster.ports)
    # The gateway on both frontends, the mon on its port, the OSD within the range.
    assert {p for _, p in _listeners([pids["rgw"]])} == {ceph_cluster.port, ceph_cluster.tls_port}
    osd_ports = {p for _, p in _listeners([pids["osd"]])}
    assert osd_ports and osd_ports <= set(ceph_cluster.osd_port_range)
    assert {p for _, p in _listeners([pids["mon"]])} == {ceph_cluster.mon_port}
    # Nothing outside the work dir: config, stores and logs all live there.
    assert f"log file = {ceph_cluster.data_dir}/log/" in ceph_cluster.conf_path.read_text()


@pytest.mark.ceph
def test_own_cluster_round_trip_then_stop_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3

    # Hostile leftovers from a developer's shell: none may reach the daemons, the
    # tools, the server's own client or a client built from server.env.
    monkeypatch.setenv("CEPH_ARGS", "--mon-host=127.0.0.1:9")
    monkeypatch.setenv("CEPH_CONF", "/nonexistent/ceph.conf")
    monkeypatch.setenv("AWS_CA_BUNDLE", "/nonexistent/ca-bundle.pem")
    monkeypatch.setenv("AWS_PROFILE", "datamover-no-such-profile")
    monkeypatch.setenv("PYTHONPATH", "/nonexistent")
    with CephRgwServer(tls=True) as server:
        assert server.startup_seconds is not None
        assert server.endpoint.startswith("https://127.0.0.1:")
        assert server.env["AWS_ENDPOINT_URL"] == server.endpoint
        assert server.env["AWS_CA_BUNDLE"] == str(server.ca_bundle)
        server.make_bucket("own-bucket")
        for key in server.unset_env:
            monkeypatch.delenv(key, raising=False)
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        payload = os.urandom(MiB)
        s3 = boto3.client("s3")  # from the environment alone, https
        try:
            put = s3.put_object(Bucket="own-bucket", Key="dir/one-mib.bin", Body=payload)
            assert put["ETag"].strip('"') == hashlib.md5(payload).hexdigest()
        finally:
            s3.close()
        plain = server.view(tls=False).client()  # the same gateway over http
        try:
            got = plain.get_object(Bucket="own-bucket", Key="dir/one-mib.bin")
            assert got["Body"].read() == payload
        finally:
            plain.close()
        pids, workdir, ports = server.pids, server.workdir, server.ports
        listening = [port for _, port in _listeners(pids.values())]
    assert all(_gone(pid) for pid in pids.values()), pids
    assert not workdir.exists()
    assert all(_refused(port) for port in listening)
    assert not server.is_running() and server.pid is None
    assert set(listening) <= set(ports)


@pytest.mark.ceph
def test_port_clash_is_retried_then_reported() -> None:
    # Bound but not listening: radosgw's bind fails, as when another process won the race.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        server = CephRgwServer(port=blocker.getsockname()[1])
        with pytest.raises(RuntimeError, match="port already in use") as excinfo:
            server.start()
    assert "address already in use" in str(excinfo.value).lower()
    assert not server.is_running() and server.pid is None


@pytest.mark.ceph
def test_missing_tools_are_reported(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="make system-deps"):
        CephRgwServer(bin_dir=tmp_path)


@pytest.mark.ceph
def test_command_line_prints_exports_and_stops_on_sigterm(tmp_path: Path) -> None:
    import boto3

    errors = tmp_path / "stderr.txt"
    with (
        open(errors, "w") as stderr,
        subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "tests" / "servers.py"), "ceph", "--tls"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        ) as proc,
    ):
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            for line in proc.stdout or ():
                lines.put(line.rstrip("\n"))

        threading.Thread(target=read, daemon=True).start()
        printed: list[str] = []
        try:
            deadline = time.monotonic() + 120
            while not printed or printed[-1] != "# Ctrl-C to stop":
                try:
                    printed.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
                except queue.Empty:
                    pytest.fail(f"no '# Ctrl-C to stop' in time; got {printed}")
            env: dict[str, str] = {}
            for line in printed:
                if line.startswith("export "):
                    name, _, value = line.removeprefix("export ").partition("=")
                    env[name] = shlex.split(value)[0]
            assert env["AWS_ENDPOINT_URL"].startswith("https://127.0.0.1:")
            assert Path(env["AWS_CA_BUNDLE"]).is_file()
            daemons = next(line for line in printed if line.startswith("# ceph daemons:"))
            pids = [int(p) for p in re.findall(r"(?:mon|osd|rgw) (\d+)", daemons)]
            assert len(pids) == 3
            s3 = boto3.client(
                "s3",
                endpoint_url=env["AWS_ENDPOINT_URL"],
                aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                region_name=env["AWS_REGION"],
                verify=env["AWS_CA_BUNDLE"],
            )
            try:
                assert s3.list_buckets()["Buckets"] == []
            finally:
                s3.close()
        finally:
            # SIGTERM even on failure: a SIGKILLed servers.py leaves its cluster behind.
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
    assert code == 0, errors.read_text()
    assert "# ceph stopped" in errors.read_text()
    assert all(_gone(pid) for pid in pids)
    assert not Path(env["AWS_CA_BUNDLE"]).exists()


# -- https -----------------------------------------------------------------------------------


def test_https_is_verified_against_the_ca_bundle(
    ceph_tls_env: ServerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from botocore.exceptions import SSLError

    s3 = boto3.client("s3")
    try:
        s3.put_object(Bucket=ceph_tls_env.bucket, Key="k", Body=b"trusted")
        assert s3.get_object(Bucket=ceph_tls_env.bucket, Key="k")["Body"].read() == b"trusted"
    finally:
        s3.close()
    # Without the bundle the self-signed certificate is refused: verification is on.
    monkeypatch.delenv("AWS_CA_BUNDLE")
    s3 = boto3.client("s3", config=_no_retries())
    try:
        with pytest.raises(SSLError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            s3.head_bucket(Bucket=ceph_tls_env.bucket)
    finally:
        s3.close()


def _no_retries() -> Any:
    from botocore.config import Config

    return Config(retries={"total_max_attempts": 1})


@pytest.fixture(params=["lean", "boto3"])
def https_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """datamover's S3 store over its lean HTTP path, or with it switched off."""
    monkeypatch.setenv("DATAMOVER_S3_LEAN", "1" if request.param == "lean" else "0")
    return str(request.param)


def test_copy_and_verify_over_https(
    ceph_tls_env: ServerEnv, https_path: str, tmp_path: Path
) -> None:
    store = _s3_store(ceph_tls_env)
    try:
        if https_path == "lean":
            # The lean path took the certificate from AWS_CA_BUNDLE, as boto3 does.
            assert store._s3.lean is not None and store._s3.lean.tls is not None
        else:
            assert store._s3.lean is None
    finally:
        store.close()
    src = tmp_path / "src"
    files = {
        "empty.bin": b"",
        "small.txt": b"over https\n",
        "dir/ünï cødé.bin": os.urandom(70_000),
        "big/two-parts-plus.bin": os.urandom(2 * PART + 123),
    }
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    manifest = str(tmp_path / "up.jsonl")
    up = datamover.copy(
        str(src), ceph_tls_env.url("t"), manifest=manifest, part_size=PART, multipart_threshold=PART
    )
    assert up.ok, up.failures
    assert up.files_ok == len(files)
    assert datamover.verify(manifest).passed
    # A fresh process that has only the environment (AWS_CA_BUNDLE among it).
    cli = subprocess.run([*DM, "verify", manifest], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    back = tmp_path / "back"
    down_manifest = str(tmp_path / "down.jsonl")
    down = datamover.copy(ceph_tls_env.url("t"), str(back), manifest=down_manifest)
    assert down.ok, down.failures
    assert datamover.verify(down_manifest).passed
    for name, data in files.items():
        assert (back / name).read_bytes() == data
    store = _s3_store(ceph_tls_env)
    try:
        info = store.stat("t/small.txt")  # one PutObject: the digest came with it
        assert info.checksums["sha256"] == hashlib.sha256(files["small.txt"]).hexdigest()
        # A multipart object: one write, so no digest label (S3 took metadata before
        # it was known), and RGW keeps no full-object checksum; its ETag is the
        # composite of the MD5-checked parts.
        big = store.stat("t/big/two-parts-plus.bin")
        assert "sha256" not in big.checksums and not big.provider_checksums
        assert big.etag is not None and big.etag.endswith("-3")
    finally:
        store.close()


# -- RGW 16.2.15 as it is --------------------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["http", "https"])
def gateway(request: pytest.FixtureRequest, ceph_cluster: CephRgwServer) -> S3Endpoint:
    return ceph_cluster.view(tls=bool(request.param))


def test_rgw_quirks_are_as_documented(gateway: S3Endpoint) -> None:
    """What the class docstring says this RGW does. If a Ceph upgrade changes it,
    update the docstring and the xfails below."""
    from botocore.exceptions import ClientError

    bucket = f"quirks-{'https' if gateway.ca_bundle else 'http'}-{os.urandom(4).hex()}"
    gateway.make_bucket(bucket)
    s3 = gateway.client()
    try:
        # A wrong x-amz-checksum-crc32c is accepted, and no checksum comes back.
        put = s3.put_object(Bucket=bucket, Key="a", Body=b"hello", ChecksumCRC32C=_crc32c_b64(b"x"))
        assert "ChecksumCRC32C" not in put
        assert s3.get_object(Bucket=bucket, Key="a")["Body"].read() == b"hello"
        # Content-MD5 is enforced.
        wrong_md5 = base64.b64encode(hashlib.md5(b"x").digest()).decode()
        with pytest.raises(ClientError, match="BadDigest"):
            s3.put_object(Bucket=bucket, Key="m", Body=b"hello", ContentMD5=wrong_md5)
        # UploadPart with a wrong CRC32C is accepted too; Complete answers an empty ETag.
        mpu = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
        first = os.urandom(PART)
        p1 = s3.upload_part(
            Bucket=bucket,
            Key="mp",
            UploadId=mpu,
            PartNumber=1,
            Body=first,
            ChecksumCRC32C=_crc32c_b64(b"x"),
        )
        p2 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=mpu, PartNumber=2, Body=b"tail")
        done = s3.complete_multipart_upload(
            Bucket=bucket,
            Key="mp",
            UploadId=mpu,
            MultipartUpload={
                "Parts": [
                    {"PartNumber": 1, "ETag": p1["ETag"]},
                    {"PartNumber": 2, "ETag": p2["ETag"]},
                ]
            },
        )
        assert done.get("ETag", "") == ""
        assert s3.head_object(Bucket=bucket, Key="mp")["ETag"].endswith('-2"')
        # CopyObject ignores CopySourceIfMatch / CopySourceIfNoneMatch...
        etag = s3.head_object(Bucket=bucket, Key="a")["ETag"]
        source = {"Bucket": bucket, "Key": "a"}
        s3.copy_object(Bucket=bucket, Key="c1", CopySource=source, CopySourceIfMatch='"0123"')
        s3.copy_object(Bucket=bucket, Key="c2", CopySource=source, CopySourceIfNoneMatch=etag)
        # ...while GetObject honours If-Match and PutObject If-None-Match.
        with pytest.raises(ClientError, match="PreconditionFailed"):
            s3.get_object(Bucket=bucket, Key="a", IfMatch='"0123"')
        with pytest.raises(ClientError, match="PreconditionFailed"):
            s3.put_object(Bucket=bucket, Key="a", Body=b"x", IfNoneMatch="*")
    finally:
        s3.close()
    # boto3's default checksum settings (>= 1.36): fine over http, 411 over https.
    eager = gateway.client(
        request_checksum_calculation="when_supported",
        response_checksum_validation="when_supported",
        retries={"total_max_attempts": 1},
    )
    try:
        if gateway.ca_bundle is None:
            eager.put_object(Bucket=bucket, Key="d", Body=b"hello")
        else:
            with pytest.raises(ClientError, match="MissingContentLength"):
                eager.put_object(Bucket=bucket, Key="d", Body=b"hello")
    finally:
        eager.close()


# -- datamover's integrity contract on RGW 16 --------------------------------------------------


class _WrongDigests(PartDigests):
    """The digests of some bytes, except that every checksum a request header can
    carry belongs to other bytes: what the engine would send if the bytes changed
    after it hashed them."""

    def get(self, algorithm: str) -> bytes:
        raw = super().get(algorithm)
        return bytes(b ^ 0xFF for b in raw) if algorithm in ("crc32c", "crc64nvme", "md5") else raw


@pytest.fixture
def gateway_env(gateway: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    return use_server(gateway, monkeypatch)


def _rgw_check(env: ServerEnv) -> str:
    """What RGW 16 checks of an upload: over http the signed payload SHA-256 (both
    request paths sign it there), over https Content-MD5 (CRC headers it ignores)."""
    return "md5" if _is_tls(env) else "sha256-payload"


def _is_tls(env: ServerEnv) -> bool:
    return str(getattr(env.server, "endpoint", "")).startswith("https://")


def test_puts_are_verified_by_what_rgw_checks(gateway_env: ServerEnv) -> None:
    store = _s3_store(gateway_env)
    try:
        data = os.urandom(1000)
        info = store.put("checked.bin", data)
        assert info.verified == _rgw_check(gateway_env)
        assert store.read("checked.bin") == data
        if _is_tls(gateway_env):
            # Content-MD5 is what covers the body here, and RGW refuses a wrong one.
            with pytest.raises(IntegrityError):
                store.put("wrong.bin", data, digests=_WrongDigests(data))
            with pytest.raises(NotFound):
                store.stat("wrong.bin")
    finally:
        store.close()


def test_parts_are_verified_by_what_rgw_checks(gateway_env: ServerEnv) -> None:
    store = _s3_store(gateway_env)
    writer = None
    try:
        data = os.urandom(PART + 10)
        writer = store.open_writer("parts.bin", size=len(data), part_size=PART)
        part = memoryview(data)[:PART]
        if _is_tls(gateway_env):
            with pytest.raises(IntegrityError):
                writer.write_part(0, part, _WrongDigests(part))
        receipts = [
            writer.write_part(i, chunk, PartDigests(chunk))
            for i, chunk in enumerate((data[:PART], data[PART:]))
        ]
        assert {r.verified for r in receipts} == {_rgw_check(gateway_env)}
        info = writer.commit({})
        writer = None
        assert info.verified == _rgw_check(gateway_env)
        # RGW answered the completion with an empty ETag; the one HEAD shows is taken
        # only because it is the composite of these parts' ETags.
        assert info.etag is not None and info.etag.endswith("-2")
        assert info.etag == store.stat("parts.bin").etag
        assert store.read("parts.bin") == data
    finally:
        if writer is not None:
            writer.abort()
        store.close()


def test_a_crc_rgw_ignores_is_not_claimed(
    gateway_env: ServerEnv, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``--s3-checksum crc32c`` on a store that ignores it: sent, never called checked."""
    from datamover.stores import StoreSettings
    from datamover.stores.s3 import checks

    checks.forget()  # learn it here, with its warning
    store, _ = open_store(gateway_env.url(), StoreSettings(extra={"s3_checksum": "crc32c"}))
    try:
        with caplog.at_level("WARNING"):
            info = store.put("unchecked.bin", b"crc32c sent, not checked")
        assert info.verified in (None, "sha256-payload")  # never "crc32c"
        assert info.verified == (None if _is_tls(gateway_env) else "sha256-payload")
        if _is_tls(gateway_env):
            assert "does not check the crc32c checksum" in caplog.text
    finally:
        store.close()


@pytest.mark.parametrize("server", ["seaweed", pytest.param("ceph", marks=[pytest.mark.ceph])])
def test_commit_never_labels_another_writers_object(
    server: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone replaces the object right after our CompleteMultipartUpload. Nothing
    is written after the completion (no metadata copy onto the object), so their
    object keeps their bytes and metadata, and what the commit reports is never
    theirs: RGW's empty completion ETag is not filled in from their HEAD."""
    target = request.getfixturevalue(server)
    env = use_server(target, monkeypatch)
    store = _s3_store(env)
    try:
        data = os.urandom(PART + 10)
        digest = hashlib.sha256(data).hexdigest()
        writer = store.open_writer(
            "raced.bin", size=len(data), part_size=PART, metadata={"x-who": "us"}
        )
        for index, chunk in enumerate((data[:PART], data[PART:])):
            writer.write_part(index, chunk, PartDigests(chunk))
        client = store._s3.client
        complete = client.complete_multipart_upload
        calls: list[str] = []

        def then_replaced(**kwargs: Any) -> Any:
            answer = complete(**kwargs)
            other = target.client()
            try:
                other.put_object(Bucket=env.bucket, Key="raced.bin", Body=b"someone else")
            finally:
                other.close()
            return answer

        monkeypatch.setattr(client, "complete_multipart_upload", then_replaced)
        monkeypatch.setattr(
            client, "copy_object", lambda **kw: calls.append("copy") or pytest.fail("copy")
        )
        info = writer.commit({SHA_KEY: digest})
        now = store.stat("raced.bin")
        assert store.read("raced.bin") == b"someone else"
        assert SHA_KEY not in now.metadata and "x-who" not in now.metadata
        assert info.metadata == {"x-who": "us"}  # what our object carries
        assert info.etag != now.etag
        assert calls == []
    finally:
        store.close()
