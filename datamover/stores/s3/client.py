"""The requests to one bucket: endpoint, credentials and region resolved once (as the
package docstring says), a boto3 client made on first use, and the lean path
(``lean.py``) beside it for the single-request object operations. Errors come out
mapped (``errors.py``)."""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
import botocore.config
import botocore.session
from botocore.httpsession import get_cert_path

from datamover.errors import (
    AuthError,
    BucketNotFound,
    ConfigError,
    IntegrityError,
    NotFound,
    StoreError,
    UsageError,
)
from datamover.options import S3_CHECKSUMS
from datamover.stores import StoreSettings, referenced_secret
from datamover.stores.base import Buffer, GiB, MiB, PartLimits, TiB
from datamover.stores.s3.errors import classify_error, map_error
from datamover.stores.s3.lean import LeanS3, LeanUnavailable, Response, lean_enabled
from datamover.stores.s3.objectinfo import parse_timestamp

S3_LIMITS = PartLimits(
    min_part_size=5 * MiB, max_part_size=5 * GiB, max_parts=10_000, max_single_put=5 * GiB
)
MAX_OBJECT_SIZE = 5 * TiB


def _endpoint(settings: StoreSettings) -> str | None:
    return (
        settings.endpoint
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or None
    )


def _virtual_host_ok(bucket: str) -> bool:
    """A bucket name usable as a TLS host label (no dots, lower case, 3-63 chars)."""
    return (
        3 <= len(bucket) <= 63
        and bucket.isascii()
        and all(c.islower() or c.isdigit() or c == "-" for c in bucket)
        and bucket[0].isalnum()
        and bucket[-1].isalnum()
    )


def payload_error(error: StoreError, signed_payload: bool, where: str, key: str) -> StoreError:
    """A SignatureDoesNotMatch on an upload whose payload hash was signed, as the
    ``IntegrityError`` it is (see ``BucketClient.upload``); other errors unchanged."""
    if signed_payload and isinstance(error, AuthError) and "SignatureDoesNotMatch" in str(error):
        return IntegrityError(
            f"{where}: the store refused the body's signed SHA-256 (SignatureDoesNotMatch): "
            "the bytes changed on the way",
            key=key,
        )
    return error


def request_body(data: Buffer) -> bytes | bytearray:
    """``data`` as botocore takes a body (bytes or bytearray, not memoryview), without
    a copy when it is a view of a whole bytes/bytearray: the engine's part buffers are
    ``memoryview(bytearray(n))``, and copying each part cost a pass over every byte
    and a second part-sized buffer per thread."""
    if isinstance(data, bytes | bytearray):
        return data
    view = memoryview(data)
    base = view.obj
    if isinstance(base, bytes | bytearray) and view.c_contiguous and view.nbytes == len(base):
        return base
    return view.tobytes()


class BucketClient:
    """One bucket on one endpoint with one set of credentials. ``lean`` is the lean
    path, or None where it can't promise to behave as boto3 does (and from the moment
    it finds it can't). Thread-safe."""

    def __init__(self, bucket: str, settings: StoreSettings) -> None:
        self.bucket = bucket
        self._bucket_seen = False
        #: A request with these credentials has succeeded (``upload``).
        self.authenticated = False
        endpoint = _endpoint(settings)
        #: ``--s3-checksum`` / the remote's ``s3_checksum`` (``checks.py``).
        self.checksum_mode = str(settings.extra.get("s3_checksum") or "auto")
        if self.checksum_mode not in S3_CHECKSUMS:
            raise UsageError(
                f"unknown --s3-checksum (s3_checksum) {self.checksum_mode!r}; choose one of "
                f"{', '.join(S3_CHECKSUMS)}"
            )
        # A remote may name env vars holding the keys; otherwise the standard chain.
        key_id = referenced_secret(settings, "access_key_env")
        secret = referenced_secret(settings, "secret_key_env")
        token = referenced_secret(settings, "session_token_env")
        core = botocore.session.get_session()
        core.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=parse_timestamp
        )
        try:
            session = boto3.session.Session(
                botocore_session=core,
                profile_name=settings.profile,
                aws_access_key_id=key_id,
                aws_secret_access_key=secret,
                aws_session_token=token,
            )
        except Exception as e:  # botocore ProfileNotFound and friends
            raise ConfigError(f"AWS profile {settings.profile!r}: {e}") from e
        config = botocore.config.Config(
            max_pool_connections=max(10, settings.connections),
            retries={"mode": "standard", "max_attempts": 3},
            s3={"addressing_style": "path" if endpoint else "auto"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            tcp_keepalive=True,
            connect_timeout=10,
            read_timeout=60,
        )
        credentials = session.get_credentials()
        self.identity = (settings.profile, credentials.access_key if credentials else None)
        self._region = settings.region or session.region_name or "us-east-1"
        self._session, self._config, self._endpoint = session, config, endpoint
        self._boto: Any = None
        self._boto_lock = threading.Lock()
        if endpoint is None:
            self._boto = self._new_client()  # AWS: its endpoint URL comes from the client
        self.lean: LeanS3 | None = None
        if lean_enabled() and credentials is not None:
            self.lean = self._make_lean(endpoint, credentials, core)

    @property
    def signs_payload(self) -> bool:
        """Uploads sign the body's SHA-256 (plain http: boto3 and the lean path both
        do; over https they send UNSIGNED-PAYLOAD with a checksum header)."""
        return self.endpoint_url.startswith("http://")

    @property
    def endpoint_url(self) -> str:
        """The endpoint requests go to (the configured one, else AWS's for the region)."""
        return self._endpoint or str(self.client.meta.endpoint_url)

    def _new_client(self) -> Any:
        return self._session.client(
            "s3", endpoint_url=self._endpoint, region_name=self._region, config=self._config
        )

    @property
    def client(self) -> Any:
        """The boto3 client, made on first use: with a custom endpoint the lean path
        may do all the work, and making a client costs ~0.14 s of CPU."""
        client = self._boto
        if client is None:
            with self._boto_lock:
                if self._boto is None:
                    self._boto = self._new_client()
                client = self._boto
        return client

    def _make_lean(self, endpoint: str | None, credentials: Any, core: Any) -> LeanS3 | None:
        """The lean request path (``lean.py``) for this bucket, or None where it can't
        promise to behave as boto3 does here."""
        url = endpoint or self.client.meta.endpoint_url
        if endpoint is None:
            # AWS itself: virtual-hosted addressing as boto3's "auto" picks it, and only
            # for names that are valid TLS host labels; FIPS/dual-stack/accelerate stay
            # on boto3.
            if any(
                core.get_config_variable(v) for v in ("use_fips_endpoint", "use_dualstack_endpoint")
            ) or not _virtual_host_ok(self.bucket):
                return None
            if "fips" in url or "dualstack" in url or "accelerate" in url:
                return None
        verify = core.get_config_variable("ca_bundle") or get_cert_path(True)
        try:
            return LeanS3(
                endpoint=url,
                bucket=self.bucket,
                region=self.client.meta.region_name if endpoint is None else self._region,
                path_style=endpoint is not None,
                credentials=credentials.get_frozen_credentials,
                ca_bundle=verify if isinstance(verify, str) else None,
                connect_timeout=10,
                read_timeout=60,
            )
        except LeanUnavailable:
            return None

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def lean_request(self, method: str, key: str, **kwargs: Any) -> Response | None:
        """The request over the lean path, or None: boto3 should do it."""
        lean = self.lean
        if lean is None:
            return None
        try:
            answer = lean.request(method, key, **kwargs)
        except LeanUnavailable:
            if lean.disabled:
                self.lean = None
            return None
        if answer.status < 400:
            self.authenticated = True
        return answer

    def lean_error(self, r: Response, key: str) -> StoreError:
        code, message = r.error()
        return classify_error(
            code, r.status, message, r.headers.get("retry-after"), self.bucket, key
        )

    def call(self, key: str | None, fn: Any, **kwargs: Any) -> Any:
        """``fn`` (a boto3 client method) on this bucket, its errors mapped."""
        try:
            answer = fn(Bucket=self.bucket, **kwargs)
        except Exception as e:
            raise map_error(e, self.bucket, key) from e
        self.authenticated = True
        return answer

    def upload(self, key: str, fn: Any, *, signed_payload: bool, **kwargs: Any) -> Any:
        """``call`` for a request carrying object bytes (PutObject, UploadPart). With
        the payload's SHA-256 signed, a store that checks it answers a body changed on
        the way with SignatureDoesNotMatch (Ceph RGW, SeaweedFS): credentials that
        this client has already had accepted (``authenticated``: the probe, a HEAD)
        make that an ``IntegrityError``, retried, not a fatal ``AuthError``."""
        try:
            return self.call(key, fn, **kwargs)
        except AuthError as e:
            signed = signed_payload and self.authenticated
            raise payload_error(e, signed, self.url(key), key) from e

    def lean_upload_error(self, r: Response, key: str, *, signed_payload: bool) -> StoreError:
        """``lean_error`` for an upload (see ``upload``)."""
        signed = signed_payload and self.authenticated
        return payload_error(self.lean_error(r, key), signed, self.url(key), key)

    def check_bucket(self, key: str) -> None:
        """Raise ``BucketNotFound`` if the bucket is missing. A HEAD's 404 has no body,
        so it can't say whether the key or the bucket is missing; HeadBucket tells. When
        that can't be asked (no permission) the caller's ``NotFound`` stands. A bucket
        seen once is not asked about again."""
        if self._bucket_seen:
            return
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as e:
            if isinstance(map_error(e, self.bucket, key), NotFound):
                raise BucketNotFound(
                    f"{self.url(key)}: bucket {self.bucket!r} does not exist; create it or "
                    "check the name",
                    key=key,
                ) from e
            return
        self._bucket_seen = True

    def abort_upload(self, key: str, upload_id: str) -> None:
        """AbortMultipartUpload; an upload already gone (NoSuchUpload) is no error."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as e:
            mapped = map_error(e, self.bucket, key)
            if not isinstance(mapped, NotFound):  # NoSuchUpload: already gone
                raise mapped from e

    def drop_connections(self) -> None:
        """Before a retry: this thread's lean connection is closed, and boto3's idle
        pooled ones (urllib3 keeps no per-thread pool: all idle ones go; requests in
        flight finish and their connections are closed when released). Both reconnect
        on the next request."""
        if self.lean is not None:
            self.lean.drop_thread_connection()
        if self._boto is not None:
            self._boto.close()

    def close(self) -> None:
        if self.lean is not None:
            self.lean.close()
        if self._boto is not None:
            self._boto.close()
