"""The fault proxy itself: transparent at rate 0, and each fault kind has the effect it
promises, as the real SDKs see it (through a real server: the session fixtures).

SDK retries are off here (or nearly), so each injected fault reaches the caller; the
stores' ``map_error`` must turn each into the datamover error the engine retries.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from datamover.checksums import PartDigests, b64
from datamover.errors import IntegrityError, StoreError, Throttled, TransientError
from datamover.stores import StoreSettings
from datamover.stores.azure import AzureStore, make_service_client
from datamover.stores.gcs import GCSStore
from datamover.stores.s3 import map_error
from datamover.stores.urls import Location

from faultproxy import KINDS, FaultProxy
from serverenv import new_bucket_name
from servers import AzuriteServer, FakeGcsServer, SeaweedServer

pytestmark = [pytest.mark.cloud, pytest.mark.timeout(120)]

MiB = 1024 * 1024
DATA = os.urandom(2 * MiB + 123)


def _s3(proxy: FaultProxy, server: SeaweedServer, attempts: int = 1) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=proxy.url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"mode": "standard", "total_max_attempts": attempts},
            read_timeout=30,
        ),
    )


@pytest.fixture
def s3_proxy(seaweed: SeaweedServer) -> Iterator[tuple[FaultProxy, Any, str]]:
    bucket = new_bucket_name()
    seaweed.make_bucket(bucket)
    with FaultProxy(seaweed.endpoint, flavor="s3", seed=7) as proxy:
        client = _s3(proxy, seaweed)
        client.put_object(Bucket=bucket, Key="k", Body=DATA)
        proxy.reset_counts()
        yield proxy, client, bucket
        client.close()


def _bits_differ(a: bytes, b: bytes) -> int:
    assert len(a) == len(b)
    return sum(bin(x ^ y).count("1") for x, y in zip(a, b, strict=True))


def test_transparent_at_rate_zero(s3_proxy: tuple[FaultProxy, Any, str]) -> None:
    proxy, s3, bucket = s3_proxy
    small = os.urandom(1000)
    s3.put_object(Bucket=bucket, Key="dir/small", Body=small)
    assert s3.get_object(Bucket=bucket, Key="dir/small")["Body"].read() == small
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == DATA
    part = s3.get_object(Bucket=bucket, Key="k", Range="bytes=100-199")["Body"].read()
    assert part == DATA[100:200]
    assert s3.head_object(Bucket=bucket, Key="k")["ContentLength"] == len(DATA)
    assert s3.head_object(Bucket=bucket, Key="dir/small")["ContentLength"] == 1000
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["dir/small", "k"]
    # A multipart upload: Expect: 100-continue bodies, XML request and response bodies.
    chunk = os.urandom(5 * MiB)
    mpu = s3.create_multipart_upload(Bucket=bucket, Key="mp")
    parts = []
    for n in (1, 2):
        r = s3.upload_part(
            Bucket=bucket, Key="mp", UploadId=mpu["UploadId"], PartNumber=n, Body=chunk
        )
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=mpu["UploadId"], MultipartUpload={"Parts": parts}
    )
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == chunk * 2
    s3.delete_object(Bucket=bucket, Key="mp")
    assert proxy.injected == 0 and proxy.requests == 13


def _one(proxy: FaultProxy, kind: str) -> None:
    proxy.weights = {kind: 1.0}
    proxy.fault_rate = 1.0


def _mapped(call: Any, bucket: str) -> StoreError | None:
    try:
        call()
    except Exception as e:
        return map_error(e, bucket, "k")
    return None


def test_status_500(s3_proxy: tuple[FaultProxy, Any, str]) -> None:
    proxy, s3, bucket = s3_proxy
    _one(proxy, "status_500")
    for call in (
        lambda: s3.get_object(Bucket=bucket, Key="k"),
        lambda: s3.head_object(Bucket=bucket, Key="k"),
        lambda: s3.put_object(Bucket=bucket, Key="k2", Body=DATA),  # Expect: 100-continue
    ):
        err = _mapped(call, bucket)
        assert type(err) is TransientError, err
    assert proxy.counts["status_500"] == 3 == proxy.injected
    proxy.enabled = False
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == DATA  # connection fine


def test_status_503_sometimes_with_retry_after(s3_proxy: tuple[FaultProxy, Any, str]) -> None:
    proxy, s3, bucket = s3_proxy
    _one(proxy, "status_503")
    hints = []
    for _ in range(12):
        err = _mapped(lambda: s3.get_object(Bucket=bucket, Key="k"), bucket)
        assert isinstance(err, Throttled), err
        hints.append(err.retry_after)
    assert set(hints) == {None, 1.0}
    err = _mapped(lambda: s3.put_object(Bucket=bucket, Key="k2", Body=DATA), bucket)
    assert isinstance(err, Throttled)
    assert proxy.counts["status_503"] == 13


def test_reset_mid_body(s3_proxy: tuple[FaultProxy, Any, str]) -> None:
    proxy, s3, bucket = s3_proxy
    _one(proxy, "reset_mid_body")
    for call in (
        lambda: s3.get_object(Bucket=bucket, Key="k")["Body"].read(),
        lambda: s3.head_object(Bucket=bucket, Key="k"),  # no body: cut in the headers
        lambda: s3.put_object(Bucket=bucket, Key="k2", Body=b"x" * 1000),
    ):
        err = _mapped(call, bucket)
        assert type(err) is TransientError, err
    assert proxy.counts["reset_mid_body"] == 3


def test_truncate_body(s3_proxy: tuple[FaultProxy, Any, str]) -> None:
    proxy, s3, bucket = s3_proxy
    _one(proxy, "truncate_body")
    for _ in range(3):
        err = _mapped(lambda: s3.get_object(Bucket=bucket, Key="k")["Body"].read(), bucket)
        assert type(err) is TransientError, err
    # PUT answers have no body to truncate: never picked.
    s3.put_object(Bucket=bucket, Key="k2", Body=b"y")
    assert proxy.counts["truncate_body"] == 3 and proxy.requests == 4


def test_stall(s3_proxy: tuple[FaultProxy, Any, str]) -> None:
    proxy, s3, bucket = s3_proxy
    _one(proxy, "stall")
    started = time.monotonic()
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == DATA
    assert 0.5 <= time.monotonic() - started < 10
    assert proxy.counts["stall"] == 1


def test_flip_request_bit_is_rejected_by_the_server(s3_proxy: tuple[FaultProxy, Any, str]) -> None:
    proxy, s3, bucket = s3_proxy
    _one(proxy, "flip_request_bit")
    crc = b64(PartDigests(DATA).get("crc32c"))
    err = _mapped(
        lambda: s3.put_object(Bucket=bucket, Key="k2", Body=DATA, ChecksumCRC32C=crc), bucket
    )
    assert isinstance(err, IntegrityError), err
    # Requests without a body are never picked for a request flip.
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == DATA
    assert proxy.counts == {**dict.fromkeys(KINDS, 0), "flip_request_bit": 1}


def test_flip_response_bit_changes_one_bit_of_data_only(
    s3_proxy: tuple[FaultProxy, Any, str],
) -> None:
    proxy, s3, bucket = s3_proxy
    _one(proxy, "flip_response_bit")
    got = s3.get_object(Bucket=bucket, Key="k")["Body"].read()
    assert _bits_differ(got, DATA) == 1
    # A listing is a control document, a HEAD has no body: both are left alone.
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["k"]
    assert s3.head_object(Bucket=bucket, Key="k")["ContentLength"] == len(DATA)
    assert proxy.counts["flip_response_bit"] == 1 and proxy.requests == 3


def test_kinds_are_spread_by_weight(s3_proxy: tuple[FaultProxy, Any, str]) -> None:
    proxy, s3, bucket = s3_proxy
    proxy.weights = {"stall": 0.0, "status_500": 1.0, "status_503": 2.0}
    proxy.fault_rate = 1.0
    for _ in range(9):
        _mapped(lambda: s3.head_object(Bucket=bucket, Key="k"), bucket)
    assert proxy.counts["status_500"] == 3 and proxy.counts["status_503"] == 6


def test_only_and_max_faults(s3_proxy: tuple[FaultProxy, Any, str]) -> None:
    proxy, s3, bucket = s3_proxy
    _one(proxy, "status_500")
    proxy.only = lambda method, target, headers: "range" in headers
    proxy.max_faults = 2
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == DATA  # no Range
    for _ in range(2):
        err = _mapped(lambda: s3.get_object(Bucket=bucket, Key="k", Range="bytes=0-9"), bucket)
        assert type(err) is TransientError
    assert s3.get_object(Bucket=bucket, Key="k", Range="bytes=0-9")["Body"].read() == DATA[:10]
    assert proxy.injected == 2


def test_disabled_is_transparent(s3_proxy: tuple[FaultProxy, Any, str]) -> None:
    proxy, s3, bucket = s3_proxy
    proxy.fault_rate = 1.0
    proxy.enabled = False
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == DATA
    assert proxy.injected == 0


def test_only_local_upstreams() -> None:
    with pytest.raises(ValueError):
        FaultProxy("http://example.com:80")
    with pytest.raises(ValueError):
        FaultProxy("http://127.0.0.1:1", weights={"nonsense": 1.0})


# -- the other flavours, through the stores ---------------------------------------------


@pytest.fixture(params=["azure", "gcs"])
def store_proxy(request: pytest.FixtureRequest) -> Iterator[tuple[FaultProxy, Any]]:
    bucket = new_bucket_name()
    if request.param == "azure":
        az: AzuriteServer = request.getfixturevalue("azurite")
        az.make_bucket(bucket)
        with FaultProxy(az.endpoint, flavor="azure", seed=3) as proxy:
            conn = az.connection_string.replace(az.endpoint, f"{proxy.url}/devstoreaccount1")
            mp = pytest.MonkeyPatch()
            mp.setenv("AZURE_STORAGE_CONNECTION_STRING", conn)
            try:
                store: Any = AzureStore(bucket, make_service_client(StoreSettings(), retries=0))
            finally:
                mp.undo()
            yield proxy, store
            store.close()
    else:
        gcs: FakeGcsServer = request.getfixturevalue("gcs")
        gcs.make_bucket(bucket)
        with FaultProxy(gcs.endpoint, flavor="gcs", seed=3) as proxy:
            settings = StoreSettings(endpoint=proxy.url, extra={"retry_deadline": 0.1})
            store = GCSStore.from_location(Location("gs", bucket, ""), settings)
            yield proxy, store
            store.close()


def test_flavours_error_bodies_and_flips(store_proxy: tuple[FaultProxy, Any]) -> None:
    proxy, store = store_proxy
    store.put("k", DATA)
    proxy.fault_rate = 1.0

    _one(proxy, "status_503")
    with pytest.raises(TransientError):
        store.stat("k")
    _one(proxy, "status_500")
    with pytest.raises(TransientError):
        store.stat("k")

    _one(proxy, "flip_request_bit")
    with pytest.raises(IntegrityError):
        store.put("k2", DATA)

    _one(proxy, "flip_response_bit")
    buf = bytearray(MiB)
    assert store.readinto("k", 4096, memoryview(buf)) == MiB
    assert _bits_differ(bytes(buf), DATA[4096 : 4096 + MiB]) == 1

    assert proxy.counts["flip_request_bit"] == 1
    assert proxy.counts["flip_response_bit"] == 1
    assert proxy.counts["status_500"] >= 1 and proxy.counts["status_503"] >= 1
    proxy.enabled = False
    assert store.read("k") == DATA
