"""The requests to one bucket: endpoint, credentials and region resolved once (as the
package docstring says), a boto3 client made on first use, and the lean path
(``lean.py``) beside it for the single-request object operations. Errors come out
mapped (``errors.py``)."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from datamover.errors import (
    AuthError,
    ConfigError,
    IntegrityError,
    NotFound,
    StoreError,
    TransientError,
    UsageError,
)
from datamover.options import S3_CHECKSUMS
from datamover.stores import StoreSettings, referenced_secret
from datamover.stores.base import Buffer, GiB, MiB, PartLimits, TiB
from datamover.stores.s3.errors import classify_error, map_error, no_such_bucket
from datamover.stores.s3.lean import LeanS3, LeanUnavailable, Response, lean_enabled
from datamover.stores.s3.objectinfo import parse_timestamp
from datamover.stores.s3.sdk import boto3, botocore
from datamover.stores.urls import check_endpoint

_UPLOAD_ID = re.compile(rb"<UploadId>([^<]{1,1024})</UploadId>")

S3_LIMITS = PartLimits(
    min_part_size=5 * MiB, max_part_size=5 * GiB, max_parts=10_000, max_single_put=5 * GiB
)
MAX_OBJECT_SIZE = 5 * TiB


def _endpoint(settings: StoreSettings) -> str | None:
    """The endpoint URL to use (None: AWS's own), checked where it is read so a typo
    is one line naming where it came from, not an SDK's ValueError."""
    for where, url in (
        ("the remote's endpoint", settings.endpoint),
        ("AWS_ENDPOINT_URL_S3", os.environ.get("AWS_ENDPOINT_URL_S3")),
        ("AWS_ENDPOINT_URL", os.environ.get("AWS_ENDPOINT_URL")),
    ):
        if url:
            return check_endpoint(url, where)
    return None


class Keys:
    """A set of keys as botocore's frozen credentials carry them (what ``lean.py``
    reads)."""

    def __init__(self, access_key: str, secret_key: str, token: str | None) -> None:
        self.access_key, self.secret_key, self.token = access_key, secret_key, token


def plain_keys(
    settings: StoreSettings, key_id: str | None, secret: str | None, token: str | None
) -> Keys | None:
    """The keys botocore's chain would settle on, when that is certain without it:
    keys a remote names, or (no profile asked for) AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY, the chain's first source. None: ask botocore (profiles,
    SSO, web identity, IMDS, expiring env keys, ...)."""
    if settings.profile:
        return None  # botocore reads (and checks) the profile
    if key_id and secret:
        return Keys(key_id, secret, token)
    if key_id or secret or token:
        return None
    env = os.environ
    if any(env.get(v) for v in ("AWS_CREDENTIAL_EXPIRATION", "AWS_SECURITY_TOKEN")):
        return None  # refreshable env credentials / the legacy token name: botocore
    if any(env.get(v) for v in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE")):
        return None  # a profile named: botocore reads (and checks) it
    access, secret_key = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not access or not secret_key:
        return None
    return Keys(access, secret_key, env.get("AWS_SESSION_TOKEN") or None)


def _config_file() -> bool:
    """An AWS config file exists (it may set the region, CA bundle, ... per profile)."""
    path = os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config"
    return os.path.exists(os.path.expanduser(path))


def plain_region(settings: StoreSettings) -> str | None:
    """The region botocore would settle on, when that is certain without it (the
    setting, AWS_DEFAULT_REGION, or no config file: us-east-1); None: ask botocore."""
    region = settings.region or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    return None if _config_file() else "us-east-1"


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
        self._profile, self._keys = settings.profile, (key_id, secret, token)
        self._core: Any = None
        self._session: Any = None
        self._config: Any = None
        self._endpoint = endpoint
        self._connections = settings.connections
        self._boto: Any = None
        self._boto_lock = threading.Lock()
        self.lean: LeanS3 | None = None
        self.identity: tuple[str | None, str | None]
        keys = plain_keys(settings, key_id, secret, token) if endpoint else None
        region = plain_region(settings) if keys else None
        if keys is not None and region is not None and lean_enabled():
            # Endpoint, keys and region known without botocore: boto3 is imported
            # only if a call needs it (``sdk.py``); the lean path does the rest.
            self.identity = (settings.profile, keys.access_key)
            self._region = region
            self.lean = self._make_lean(endpoint, lambda: keys, None)
            return
        session = self._boto_session()
        credentials = session.get_credentials()
        self.identity = (settings.profile, credentials.access_key if credentials else None)
        self._region = settings.region or session.region_name or "us-east-1"
        if endpoint is None:
            self._boto = self._new_client()  # AWS: its endpoint URL comes from the client
        if lean_enabled() and credentials is not None:
            self.lean = self._make_lean(endpoint, credentials.get_frozen_credentials, self._core)

    def _boto_session(self) -> Any:
        """The boto3 session (and client config), made on first need."""
        if self._session is not None:
            return self._session
        core = botocore().session.get_session()
        core.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=parse_timestamp
        )
        key_id, secret, token = self._keys
        try:
            session = boto3().session.Session(
                botocore_session=core,
                profile_name=self._profile,
                aws_access_key_id=key_id,
                aws_secret_access_key=secret,
                aws_session_token=token,
            )
        except Exception as e:  # botocore ProfileNotFound and friends
            raise ConfigError(f"AWS profile {self._profile!r}: {e}") from e
        self._config = botocore().config.Config(
            max_pool_connections=max(10, self._connections),
            retries={"mode": "standard", "max_attempts": 3},
            s3={"addressing_style": "path" if self._endpoint else "auto"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            tcp_keepalive=True,
            connect_timeout=10,
            read_timeout=60,
        )
        self._core, self._session = core, session
        return session

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
        return self._boto_session().client(
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
                    self._boto = self._new_client()  # the session, too, if not yet made
                client = self._boto
        return client

    def _make_lean(
        self, endpoint: str | None, credentials: Callable[[], Any], core: Any
    ) -> LeanS3 | None:
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
        verify: Any = None
        if url.startswith("https://"):
            verify = os.environ.get("AWS_CA_BUNDLE") if core is None else None
            if not verify:  # the config file's, else botocore's default bundle
                self._boto_session()
                verify = self._core.get_config_variable("ca_bundle")
                verify = verify or botocore().httpsession.get_cert_path(True)
        try:
            return LeanS3(
                endpoint=url,
                bucket=self.bucket,
                region=self.client.meta.region_name if endpoint is None else self._region,
                path_style=endpoint is not None,
                credentials=credentials,
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
                raise no_such_bucket(self.bucket, key) from e
            return
        self._bucket_seen = True

    def explain_denied(self, key: str) -> None:
        """Raise ``AuthError`` if a HEAD's bare 403 was really rejected credentials. A
        HEAD's answer has no body, so it can't say whether the signature or key was
        refused (SignatureDoesNotMatch, InvalidAccessKeyId) or the request was not
        allowed (AccessDenied); one small listing, whose error has a body, tells. Asked
        only while no request of this client has been accepted; when the listing
        fails otherwise (no ListBucket permission) the caller's error stands."""
        if self.authenticated:
            return
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
        except Exception as e:
            mapped = map_error(e, self.bucket, key)
            if isinstance(mapped, AuthError):
                raise mapped from e
            return
        self.authenticated = True  # the 403 was a denial: no need to ask again

    def create_upload(self, key: str, headers: Mapping[str, str], **boto_args: Any) -> str:
        """CreateMultipartUpload (lean where it can, else boto3 with ``boto_args``,
        the same request): its UploadId."""
        r = self.lean_request("POST", key, query={"uploads": ""}, headers=headers)
        if r is None:
            answer = self.call(key, self.client.create_multipart_upload, Key=key, **boto_args)
            return str(answer["UploadId"])
        if r.status != 200:
            raise self.lean_error(r, key)
        found = _UPLOAD_ID.search(bytes(r.body))
        if found is None:
            raise TransientError(f"{self.url(key)}: CreateMultipartUpload: no UploadId", key=key)
        return found.group(1).decode("utf-8", "replace")

    def abort_upload(self, key: str, upload_id: str) -> None:
        """AbortMultipartUpload; an upload already gone (NoSuchUpload) is no error."""
        r = self.lean_request("DELETE", key, query={"uploadId": upload_id})
        if r is not None:
            if r.status < 300:
                return
            mapped = self.lean_error(r, key)
            if not isinstance(mapped, NotFound):  # NoSuchUpload: already gone
                raise mapped
            return
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
