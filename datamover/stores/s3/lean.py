"""A lean HTTP/1.1 path for S3's single-request object operations.

boto3 spends ~1.7 ms of CPU on every request here (event hooks, request and response
models, ``email``-based header parsing, SigV4 through several layers), more than the
whole per-file cost of rclone. For the operations that carry one object's bytes in one
request (HEAD, GET with an optional Range, PUT of a whole small object, DELETE) this
module signs and sends the request itself: SigV4 with the signing key cached per day,
one persistent connection per thread, the request written with one ``sendmsg`` and the
response parsed from one buffer. Everything else (listings, multipart, copies, bucket
calls, anything unusual) stays on boto3.

What is kept from boto3: the credentials (the same session's resolver, refreshable
credentials included: each request asks for the current frozen set), the region, the
endpoint and its addressing style, the CA bundle, connect/read timeouts, retries of
throttling/5xx/connection errors (three attempts with jittered backoff, as botocore's
"standard" mode), and the error mapping (``errors.classify_error``). Over plain http the
payload's SHA-256 is signed, as botocore does; over https the payload is
``UNSIGNED-PAYLOAD`` as botocore does when a checksum header is sent, and the PUT's
checksum header (the one the store checks: ``checks.py``) guards the bytes.

When the lean path can't be sure it behaves as boto3 would, it is not used: a proxy in
the environment, FIPS/dual-stack/accelerate endpoints, a bucket name that can't be a
virtual host on AWS, non-ASCII metadata. A redirect or a region error (an AWS bucket
in another region) falls back to boto3 for that request and turns the lean path off
for the store (``LeanUnavailable``). ``DATAMOVER_S3_LEAN=0`` turns it off entirely.

Nothing a server sends is allocated on its word alone. A success body goes into the
caller's buffer, never past its end, or into a new one of at most the caller's bound
(``max_body``: the size a listing gave for a whole-object read, a listing page's cap);
a ``Content-Length`` over that is refused before a byte of the body is read, and a
chunked body is cut off as soon as it passes it (``ResponseTooLarge``, not retried).
Headers, chunk-size lines and trailers are bounded by ``MAX_HEADER_BYTES``, interim
1xx answers by ``MAX_INTERIM``, error bodies by ``MAX_ERROR_BODY`` (the rest is left
unread and the connection closed). Malformed framing (status line, header lines,
lengths, chunk sizes) is handled like a broken connection: retried, then a
``TransientError`` that says the response was malformed. Parsing costs nothing per
byte in Python: the body is received with ``recv_into`` straight into its buffer.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from datamover.errors import TransientError
from datamover.stores.bounds import ResponseTooLarge
from datamover.stores.leanhttp import (  # the connection machinery, shared
    ATTEMPTS,
    MAX_ERROR_BODY,
    MAX_HEADER_BYTES,
    MAX_INTERIM,
    ConnectionPool,
    LeanUnavailable,
    Response,
    Transport,
    _Broken,
    _Connection,
    _Malformed,
    _proxied,
    content_length,
    exchange,
    parse_chunk_size,
    parse_head,
)
from datamover.stores.leanpipe import LeanPipeline

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def lean_enabled() -> bool:
    return os.environ.get("DATAMOVER_S3_LEAN", "1").strip().lower() not in ("0", "false", "no")


def _quote(key: str) -> str:
    return urllib.parse.quote(key, safe="/~")


def _quote_param(value: str) -> str:
    return urllib.parse.quote(value, safe="-_.~")


class _Signer:
    """SigV4 for service ``s3`` with the signing key derived once per (secret, day)."""

    def __init__(self, region: str) -> None:
        self.region = region
        self._keys: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    def _key(self, secret: str, day: str) -> bytes:
        cached = self._keys.get((secret, day))
        if cached is not None:
            return cached
        k = hmac.digest(("AWS4" + secret).encode(), day.encode(), "sha256")
        for part in (self.region, "s3", "aws4_request"):
            k = hmac.digest(k, part.encode(), "sha256")
        with self._lock:
            if len(self._keys) > 8:  # rotated secrets or a new day: keep it small
                self._keys.clear()
            self._keys[(secret, day)] = k
        return k

    def sign(
        self,
        method: str,
        host: str,
        path: str,
        query: str,
        headers: dict[str, str],
        payload_hash: str,
        access_key: str,
        secret: str,
        token: str | None,
        amz_date: str | None = None,
    ) -> None:
        """Add x-amz-date, x-amz-content-sha256, the token and Authorization to
        ``headers`` (lower-case names, every one of them signed, with ``host``)."""
        amz_date = amz_date or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        day = amz_date[:8]
        headers["x-amz-date"] = amz_date
        headers["x-amz-content-sha256"] = payload_hash
        if token:
            headers["x-amz-security-token"] = token
        signed = {"host": host}
        for name, value in headers.items():
            signed[name] = " ".join(value.split())
        names = sorted(signed)
        canonical = "\n".join(
            (
                method,
                path,
                query,
                "".join(f"{n}:{signed[n]}\n" for n in names),
                ";".join(names),
                payload_hash,
            )
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = (
            f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n"
            + hashlib.sha256(canonical.encode()).hexdigest()
        )
        signature = hmac.new(self._key(secret, day), to_sign.encode(), "sha256").hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )


class LeanS3:
    """Signed single requests to one bucket. Thread-safe: each thread has its own
    connection (bounded by the caller's thread count)."""

    def __init__(
        self,
        *,
        endpoint: str,
        bucket: str,
        region: str,
        path_style: bool,
        credentials: Callable[[], Any],
        ca_bundle: str | None,
        verify: bool = True,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        transport: Transport = socket.create_connection,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``transport`` opens a TCP connection (``socket.create_connection``'s
        signature; tests give an in-memory one) and ``sleep`` waits between
        attempts."""
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LeanUnavailable(f"endpoint scheme {parts.scheme!r}")
        host = parts.hostname
        if not path_style:
            host = f"{bucket}.{host}"
        if _proxied(parts.scheme, host):
            raise LeanUnavailable("proxy configured")
        self.scheme = parts.scheme
        self.host = host
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        self.host_header = host if default_port else f"{host}:{self.port}"
        base = parts.path.rstrip("/")
        self.prefix = f"{base}/{_quote(bucket)}/" if path_style else f"{base}/"
        self.bucket = bucket
        self.credentials = credentials
        self.signer = _Signer(region)
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._sleep = sleep
        self.pool = ConnectionPool(
            self.scheme,
            self.host,
            self.port,
            ca_bundle=ca_bundle,
            verify=verify,
            transport=transport,
        )
        self.tls = self.pool.tls
        self.disabled = False

    def close(self) -> None:
        self.pool.close()

    def drop_thread_connection(self) -> None:
        self.pool.drop_thread_connection()

    def request(
        self,
        method: str,
        key: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        into: memoryview | None = None,
        query: Mapping[str, str] | None = None,
        max_body: int = MAX_ERROR_BODY,
        sign_payload: bool | None = None,
        payload_hash: str | None = None,
    ) -> Response:
        """One signed request, retried on connection errors, throttling and 5xx (three
        attempts). Returns the final response whatever its status; raises
        ``TransientError`` when every attempt failed on the connection (or got a
        malformed answer), ``ResponseTooLarge`` when a success response's body is
        longer than ``into`` holds or than ``max_body`` (when ``into`` is None), and
        ``LeanUnavailable`` when boto3 should take this request. ``key`` "" with a
        ``query`` addresses the bucket itself (a listing). ``sign_payload`` overrides
        the default (signed over http, UNSIGNED-PAYLOAD over https); ``payload_hash``
        signs that value instead of the body's (the store's probe: a wrong one)."""
        if self.disabled:
            raise LeanUnavailable("disabled")
        bucket_level = key == "" and bool(query)
        path = (self.prefix.rstrip("/") or "/") if bucket_level else self.prefix + _quote(key)
        canonical_query = "&".join(
            f"{_quote_param(k)}={_quote_param(v)}" for k, v in sorted((query or {}).items())
        )
        size = 0 if body is None else memoryview(body).nbytes
        if sign_payload is None:
            sign_payload = self.scheme != "https"
        if payload_hash is None:
            if not size:
                payload_hash = EMPTY_SHA256
            elif sign_payload:
                payload_hash = hashlib.sha256(body).hexdigest()
            else:
                payload_hash = "UNSIGNED-PAYLOAD"
        extra = dict(headers or {})
        for name, value in extra.items():
            if not value.isascii() or "\n" in value or "\r" in value:
                raise LeanUnavailable(f"header {name} is not plain ASCII")
        failure: BaseException | None = None
        for attempt in range(ATTEMPTS):
            if attempt:
                self._sleep(min(20.0, random.random() * (2**attempt) * 0.5))
            head = self._head(method, path, canonical_query, extra, payload_hash, size)
            conn = self.pool.conn()
            try:
                response = self._exchange(conn, method, head, body, into, max_body)
            except _Broken as e:
                failure = e.cause
                continue
            except ResponseTooLarge as e:
                raise ResponseTooLarge(
                    f"s3://{self.bucket}/{key}: {e}", key=key, size=e.size
                ) from None
            if response.status in (301, 302, 307, 308) or (
                response.status == 400
                and response.error()[0] in ("AuthorizationHeaderMalformed", "PermanentRedirect")
            ):
                self.disabled = True
                raise LeanUnavailable(f"HTTP {response.status}: region or redirect")
            if (response.status >= 500 or response.status == 429) and attempt + 1 < ATTEMPTS:
                continue
            return response
        if isinstance(failure, _Malformed):
            raise TransientError(
                f"s3://{self.bucket}/{key}: malformed response from the server ({failure})",
                key=key,
            )
        raise TransientError(
            f"s3://{self.bucket}/{key}: connection problem ({type(failure).__name__})", key=key
        )

    def _head(
        self,
        method: str,
        path: str,
        canonical_query: str,
        extra: Mapping[str, str],
        payload_hash: str,
        size: int,
    ) -> bytes:
        """A request's head, signed now (credentials are read at each attempt, so a
        refreshed token is picked up). Raises ``LeanUnavailable`` without
        credentials."""
        creds = self.credentials()
        if creds is None:
            raise LeanUnavailable("no credentials")
        signed = dict(extra)
        self.signer.sign(
            method,
            self.host_header,
            path,
            canonical_query,
            signed,
            payload_hash,
            creds.access_key,
            creds.secret_key,
            creds.token,
        )
        target = f"{path}?{canonical_query}" if canonical_query else path
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{name}: {value}" for name, value in signed.items()]
        if method in ("PUT", "POST") or size:
            lines.append(f"Content-Length: {size}")
        lines.append("User-Agent: datamover")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def get_head(self, key: str) -> bytes:
        """The signed head of a plain GET of ``key``, as ``request`` sends it (for a
        ``LeanPipeline``). Raises ``LeanUnavailable`` when this path is off."""
        if self.disabled:
            raise LeanUnavailable("disabled")
        return self._head("GET", self.prefix + _quote(key), "", {}, EMPTY_SHA256, 0)

    def pipeline(self, width: int) -> LeanPipeline:
        """A ``LeanPipeline`` to this endpoint (connections of its own)."""
        return LeanPipeline(
            self.pool,
            width=width,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
        )

    def _exchange(
        self,
        conn: _Connection,
        method: str,
        head: bytes,
        body: Any,
        into: memoryview | None,
        limit: int,
    ) -> Response:
        return exchange(
            conn, method, head, body, into, limit, self.connect_timeout, self.read_timeout
        )


__all__ = [
    "MAX_ERROR_BODY",
    "MAX_HEADER_BYTES",
    "MAX_INTERIM",
    "LeanS3",
    "LeanUnavailable",
    "Response",
    "ResponseTooLarge",
    "content_length",
    "lean_enabled",
    "parse_chunk_size",
    "parse_head",
]
