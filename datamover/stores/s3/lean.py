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
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import re
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from datamover.errors import TransientError

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_HEADER_BYTES = 64 * 1024
MAX_ERROR_BODY = 1024 * 1024
ATTEMPTS = 3
_RECV = 256 * 1024

_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]*)</Message>")


class LeanUnavailable(Exception):
    """This request (and later ones on the same store) should go through boto3."""


class _Broken(Exception):
    """The connection failed; ``sent_nothing`` when it failed before any response
    byte of a reused connection arrived (a keep-alive the server had closed)."""

    def __init__(self, cause: BaseException, *, stale: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.stale = stale


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes | bytearray = b""
    length: int = 0  # bytes of body read into the caller's buffer (readinto)

    def error(self) -> tuple[str, str]:
        """(code, message) of an S3 XML error body, or ("", "")."""
        body = bytes(self.body[:MAX_ERROR_BODY])
        code = _CODE.search(body)
        message = _MESSAGE.search(body)
        return (
            code.group(1).decode("utf-8", "replace") if code else "",
            message.group(1).decode("utf-8", "replace") if message else "",
        )


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


class _Connection:
    """One keep-alive HTTP/1.1 connection; used by one thread at a time."""

    def __init__(self, scheme: str, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        self.scheme, self.host, self.port, self.tls = scheme, host, port, tls
        self.sock: socket.socket | None = None
        self.used = 0  # requests completed on this socket
        self.buf = bytearray()  # bytes received past the previous response

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock, self.used, self.buf = None, 0, bytearray()

    def _connect(self, connect_timeout: float, read_timeout: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        sock.settimeout(read_timeout)
        return sock

    def exchange(
        self,
        head: bytes,
        body: Any,
        *,
        has_body: bool,
        into: memoryview | None,
        connect_timeout: float,
        read_timeout: float,
    ) -> Response:
        reused = self.sock is not None
        if self.sock is None:
            try:
                self.sock = self._connect(connect_timeout, read_timeout)
            except OSError as e:
                self.close()
                raise _Broken(e, stale=False) from e
        sock = self.sock
        received_any = False
        try:
            if self.tls is None and body is not None and len(body):
                total = len(head) + memoryview(body).nbytes
                sent = sock.sendmsg([head, body])
                if sent < total:  # a large body: finish with sendall
                    if sent < len(head):
                        sock.sendall(memoryview(head)[sent:])
                        sock.sendall(body)
                    else:
                        sock.sendall(memoryview(body)[sent - len(head) :])
            else:
                sock.sendall(head)
                if body is not None and len(body):
                    sock.sendall(body)
            status, headers, buf = self._read_head()
            received_any = True
            response = Response(status, headers)
            if has_body and status not in (204, 304) and not (100 <= status < 200):
                self._read_body(response, buf, into if 200 <= status < 300 else None)
            else:
                self.buf = buf
        except _Broken:
            self.close()
            raise
        except (OSError, ValueError) as e:
            self.close()
            raise _Broken(e, stale=reused and not received_any) from e
        if headers.get("connection", "").lower() == "close":
            self.close()
        else:
            self.used += 1
        return response

    def _recv_more(self, buf: bytearray) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(_RECV)
        if not chunk:
            raise ConnectionResetError("connection closed by the server")
        buf += chunk

    def _read_head(self) -> tuple[int, dict[str, str], bytearray]:
        buf = self.buf
        self.buf = bytearray()
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buf) > MAX_HEADER_BYTES:
                raise ValueError("response headers too large")
            if not buf:
                assert self.sock is not None
                chunk = self.sock.recv(_RECV)
                if not chunk:
                    raise ConnectionResetError("connection closed before the response")
                buf += chunk
            else:
                self._recv_more(buf)
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        rest = buf[end + 4 :]
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ValueError(f"bad status line {lines[0][:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError("bad header line")
            headers[name.strip().lower()] = value.strip()
        if status == 100:  # a stray 100 Continue: the real response follows
            self.buf = rest
            return self._read_head()
        return status, headers, rest

    def _read_body(self, response: Response, buf: bytearray, into: memoryview | None) -> None:
        headers = response.headers
        if "chunked" in headers.get("transfer-encoding", "").lower():
            response.body = self._read_chunked(buf)
            if into is not None:
                n = len(response.body)
                if n > len(into):
                    raise ValueError("response body longer than the buffer")
                into[:n] = response.body
                response.length, response.body = n, b""
            return
        if "content-length" not in headers:
            raise ValueError("response without a length")  # S3 always sends one
        length = int(headers["content-length"])
        if into is None:
            if length > len(buf):
                out = bytearray(length)
                view = memoryview(out)
                have = len(buf)
                view[:have] = buf
                self._recv_exact(view[have:])
                response.body = out
            else:
                response.body = buf[:length] if length < len(buf) else buf
                self.buf = buf[length:] if length < len(buf) else bytearray()
            return
        if length > len(into):
            raise ValueError("response body longer than the buffer")
        have = min(len(buf), length)
        into[:have] = buf[:have]
        self.buf = buf[have:]
        self._recv_exact(into[have:length])
        response.length = length

    def _recv_exact(self, view: memoryview) -> None:
        assert self.sock is not None
        got, want = 0, len(view)
        while got < want:
            n = self.sock.recv_into(view[got:])
            if not n:
                raise ConnectionResetError(f"body ended after {got} of {want} bytes")
            got += n

    def _read_chunked(self, buf: bytearray) -> bytearray:
        out = bytearray()
        while True:
            while b"\r\n" not in buf:
                if len(buf) > MAX_HEADER_BYTES:
                    raise ValueError("bad chunk header")
                self._recv_more(buf)
            line, _, rest = bytes(buf).partition(b"\r\n")
            size = int(line.split(b";")[0].strip() or b"0", 16)
            buf = bytearray(rest)
            if size == 0:
                while b"\r\n" not in buf:  # trailers end with an empty line
                    self._recv_more(buf)
                while not buf.startswith(b"\r\n"):
                    _, _, after = bytes(buf).partition(b"\r\n")
                    buf = bytearray(after)
                    while b"\r\n" not in buf:
                        self._recv_more(buf)
                self.buf = buf[2:]
                return out
            while len(buf) < size + 2:
                self._recv_more(buf)
            out += buf[:size]
            if len(out) > MAX_ERROR_BODY * 64:
                raise ValueError("chunked body too large")
            buf = buf[size + 2 :]


def _proxied(scheme: str, host: str) -> bool:
    proxies = urllib.request.getproxies()
    if scheme not in proxies and "all" not in proxies:
        return False
    return not urllib.request.proxy_bypass(host)


def _close_all(conns: list[_Connection], lock: threading.Lock) -> None:
    with lock:
        taken = list(conns)
        conns.clear()
    for conn in taken:
        conn.close()


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
    ) -> None:
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
        self.tls: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.tls = ssl.create_default_context(cafile=ca_bundle)
            if not verify:
                self.tls.check_hostname = False
                self.tls.verify_mode = ssl.CERT_NONE
        self._local = threading.local()
        self._all: list[_Connection] = []
        self._lock = threading.Lock()
        self.disabled = False
        # A store dropped without close() still closes its sockets (as urllib3's pools
        # do), so no socket is left to the garbage collector's ResourceWarning.
        weakref.finalize(self, _close_all, self._all, self._lock)

    def _conn(self) -> _Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _Connection(self.scheme, self.host, self.port, self.tls)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        _close_all(self._all, self._lock)
        self._local = threading.local()

    def request(
        self,
        method: str,
        key: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        into: memoryview | None = None,
        query: Mapping[str, str] | None = None,
        sign_payload: bool | None = None,
        payload_hash: str | None = None,
    ) -> Response:
        """One signed request, retried on connection errors, throttling and 5xx (three
        attempts). Returns the final response whatever its status; raises
        ``TransientError`` when every attempt failed on the connection and
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
                time.sleep(min(20.0, random.random() * (2**attempt) * 0.5))
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
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            conn = self._conn()
            try:
                response = self._exchange(conn, method, head, body, into)
            except _Broken as e:
                failure = e.cause
                continue
            if response.status in (301, 302, 307, 308) or (
                response.status == 400
                and response.error()[0] in ("AuthorizationHeaderMalformed", "PermanentRedirect")
            ):
                self.disabled = True
                raise LeanUnavailable(f"HTTP {response.status}: region or redirect")
            if (response.status >= 500 or response.status == 429) and attempt + 1 < ATTEMPTS:
                continue
            return response
        raise TransientError(
            f"s3://{self.bucket}/{key}: connection problem ({type(failure).__name__})", key=key
        )

    def _exchange(
        self, conn: _Connection, method: str, head: bytes, body: Any, into: memoryview | None
    ) -> Response:
        kwargs = {
            "has_body": method != "HEAD",
            "into": into,
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
        }
        try:
            return conn.exchange(head, body, **kwargs)  # type: ignore[arg-type]
        except _Broken as e:
            if not e.stale:
                raise
        # The server had closed an idle keep-alive connection: one fresh try, free.
        return conn.exchange(head, body, **kwargs)  # type: ignore[arg-type]


__all__ = ["LeanS3", "LeanUnavailable", "Response", "lean_enabled"]
