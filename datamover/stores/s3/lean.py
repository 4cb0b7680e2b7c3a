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
from datamover.stores.bounds import ResponseTooLarge

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: A response head (status line and headers), and a chunk-size line or trailers.
MAX_HEADER_BYTES = 64 * 1024
#: What is read of an error response's body (the rest is dropped with the connection).
MAX_ERROR_BODY = 1024 * 1024
#: Interim (1xx) responses accepted before the real one.
MAX_INTERIM = 8
ATTEMPTS = 3
_RECV = 256 * 1024
_STATUS = re.compile(r"[1-9][0-9][0-9]")

_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]*)</Message>")


#: Opens a TCP connection to (host, port) within a timeout: ``socket.create_connection``.
Transport = Callable[[tuple[str, int], float], socket.socket]


class LeanUnavailable(Exception):
    """This request (and later ones on the same store) should go through boto3."""


class _Malformed(Exception):
    """The response broke HTTP/1.1's framing (status line, header line, length,
    chunking). Handled as a broken connection, retried, and named in the final
    error."""


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
    """One keep-alive HTTP/1.1 connection; used by one thread at a time.

    Everything read from the socket is bounded before it is allocated: the head by
    ``MAX_HEADER_BYTES``, interim (1xx) responses by ``MAX_INTERIM``, a body by the
    caller's ``limit`` (or the buffer it gave) checked against ``Content-Length``
    before a byte of it is read, a chunked body by the same bound as it arrives, its
    chunk-size lines and trailers by ``MAX_HEADER_BYTES``, and an error body by
    ``MAX_ERROR_BODY`` (the rest is not read: the connection is closed instead)."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        transport: Transport = socket.create_connection,
    ) -> None:
        self.scheme, self.host, self.port, self.tls = scheme, host, port, tls
        self.transport = transport
        self.sock: socket.socket | None = None
        self.used = 0  # requests completed on this socket
        self.buf = bytearray()  # bytes received past the previous response
        self.spent = False  # the response was not read to its end: don't reuse

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock, self.used, self.buf = None, 0, bytearray()

    def _connect(self, connect_timeout: float, read_timeout: float) -> socket.socket:
        sock = self.transport((self.host, self.port), connect_timeout)
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
        limit: int,
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
        self.spent = False
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
            if not has_body or status in (204, 304):
                self.buf = buf
            elif 200 <= status < 300:
                self._read_body(response, buf, into, limit)
            else:
                self._read_error_body(response, buf)
        except (_Broken, ResponseTooLarge):
            self.close()
            raise
        except _Malformed as e:
            self.close()
            raise _Broken(e, stale=False) from e
        except (OSError, ValueError) as e:
            self.close()
            raise _Broken(e, stale=reused and not received_any) from e
        if self.spent or headers.get("connection", "").lower() == "close":
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
        """Status, headers and the bytes after them, past any interim (1xx) answers."""
        buf = self.buf
        self.buf = bytearray()
        for _ in range(MAX_INTERIM + 1):
            end = buf.find(b"\r\n\r\n")
            while end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise ResponseTooLarge(f"response headers over {MAX_HEADER_BYTES} bytes")
                searched = max(0, len(buf) - 3)
                if buf:
                    self._recv_more(buf)
                else:
                    assert self.sock is not None
                    chunk = self.sock.recv(_RECV)
                    if not chunk:
                        raise ConnectionResetError("connection closed before the response")
                    buf += chunk
                end = buf.find(b"\r\n\r\n", searched)
            if end > MAX_HEADER_BYTES:
                raise ResponseTooLarge(f"response headers over {MAX_HEADER_BYTES} bytes")
            status, headers = parse_head(bytes(buf[:end]))
            del buf[: end + 4]
            if not 100 <= status < 200:
                return status, headers, buf
        raise _Malformed(f"more than {MAX_INTERIM} interim (1xx) responses")

    def _read_body(
        self, response: Response, buf: bytearray, into: memoryview | None, limit: int
    ) -> None:
        """A success response's body: into ``into`` (no more than it holds) or into a
        new buffer of at most ``limit`` bytes."""
        headers = response.headers
        cap = len(into) if into is not None else limit
        if _is_chunked(headers):
            body, complete = self._read_chunked(buf, cap)
            if not complete:
                raise ResponseTooLarge(f"a chunked body longer than the {cap} bytes accepted")
            if into is not None:
                n = len(body)
                into[:n] = body
                response.length = n
            else:
                response.body = body
            return
        length = content_length(headers)
        if length > cap:
            raise ResponseTooLarge(
                f"a body of {length} bytes, over the {cap} accepted", size=length
            )
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
        have = min(len(buf), length)
        into[:have] = buf[:have]
        self.buf = buf[have:]
        self._recv_exact(into[have:length])
        response.length = length

    def _read_error_body(self, response: Response, buf: bytearray) -> None:
        """An error response's body, its first ``MAX_ERROR_BODY`` bytes at most: the
        error code is near its start. The rest of a longer body is left unread and the
        connection closed after this response."""
        headers = response.headers
        if _is_chunked(headers):
            response.body, complete = self._read_chunked(buf, MAX_ERROR_BODY)
            self.spent = not complete
            return
        length = content_length(headers)
        if length <= MAX_ERROR_BODY:
            self._read_body(response, buf, None, MAX_ERROR_BODY)
            return
        self.spent = True
        out = bytearray(MAX_ERROR_BODY)
        have = min(len(buf), MAX_ERROR_BODY)
        out[:have] = buf[:have]
        self._recv_exact(memoryview(out)[have:])
        response.body = out

    def _recv_exact(self, view: memoryview) -> None:
        assert self.sock is not None
        got, want = 0, len(view)
        while got < want:
            n = self.sock.recv_into(view[got:])
            if not n:
                raise ConnectionResetError(f"body ended after {got} of {want} bytes")
            got += n

    def _line(self, buf: bytearray) -> bytes:
        """The next CRLF-terminated line of ``buf`` (removed from it, without the CRLF),
        reading more as needed; a line over ``MAX_HEADER_BYTES`` is malformed."""
        end = buf.find(b"\r\n")
        while end < 0:
            if len(buf) > MAX_HEADER_BYTES:
                raise _Malformed("a chunk-size or trailer line too long")
            searched = max(0, len(buf) - 1)
            self._recv_more(buf)
            end = buf.find(b"\r\n", searched)
        line = bytes(buf[:end])
        del buf[: end + 2]  # bytearray drops a prefix without moving the rest
        return line

    def _read_chunked(self, buf: bytearray, cap: int) -> tuple[bytearray, bool]:
        """A chunked body of at most ``cap`` bytes: (body, True) when it ended within
        that, else (the first bytes, False) with the rest unread (``spent``)."""
        out = bytearray()
        while True:
            size = parse_chunk_size(self._line(buf))
            if size == 0:
                break
            if len(out) + size > cap:
                self.spent = True
                return out, False
            take = min(len(buf), size)
            with memoryview(buf) as view:
                out += view[:take]
            del buf[:take]
            left = size - take
            while left:
                assert self.sock is not None
                chunk = self.sock.recv(min(_RECV, left))
                if not chunk:
                    raise ConnectionResetError("connection closed inside a chunk")
                out += chunk
                left -= len(chunk)
            if self._line(buf):
                raise _Malformed("chunk data not followed by CRLF")
        trailers = 0
        while line := self._line(buf):  # trailers end with an empty line
            trailers += len(line) + 2
            if trailers > MAX_HEADER_BYTES:
                raise _Malformed(f"trailers over {MAX_HEADER_BYTES} bytes")
        self.buf = buf
        return out, True


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status and headers of a response head (without its final blank line). Names
    are lower-cased; a repeated header keeps its last value. Raises ``_Malformed``."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not _STATUS.fullmatch(parts[1]):
        raise _Malformed(f"bad status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _Malformed(f"bad header line {line[:80]!r}")
        headers[name.lower()] = value.strip()
    return int(parts[1]), headers


def content_length(headers: Mapping[str, str]) -> int:
    """The Content-Length of a response with a body; ``_Malformed`` when it is absent
    (S3 always sends one, or chunks) or not a plain decimal number."""
    value = headers.get("content-length")
    if value is None:
        raise _Malformed("response without a length")
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise _Malformed(f"bad Content-Length {value[:40]!r}")
    return int(value)


def parse_chunk_size(line: bytes) -> int:
    """The size on a chunk-size line (extensions after ``;`` ignored)."""
    digits = line.split(b";", 1)[0].strip()
    if not digits or len(digits) > 15 or digits.strip(b"0123456789abcdefABCDEF"):
        raise _Malformed(f"bad chunk size {line[:40]!r}")
    return int(digits, 16)


def _is_chunked(headers: Mapping[str, str]) -> bool:
    encoding = headers.get("transfer-encoding")
    if encoding is None:
        return False
    if encoding.strip().lower() != "chunked":
        raise _Malformed(f"transfer-encoding {encoding[:40]!r}")
    return True


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
        self._transport, self._sleep = transport, sleep
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
            conn = _Connection(self.scheme, self.host, self.port, self.tls, self._transport)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        _close_all(self._all, self._lock)
        self._local = threading.local()

    def drop_thread_connection(self) -> None:
        """Close this thread's kept-alive connection: its next request opens a fresh
        one (a connection that saw a fault is not trusted again)."""
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()

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

    def _exchange(
        self,
        conn: _Connection,
        method: str,
        head: bytes,
        body: Any,
        into: memoryview | None,
        limit: int,
    ) -> Response:
        kwargs = {
            "has_body": method != "HEAD",
            "into": into,
            "limit": limit,
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


__all__ = [
    "MAX_ERROR_BODY",
    "MAX_HEADER_BYTES",
    "LeanS3",
    "LeanUnavailable",
    "Response",
    "ResponseTooLarge",
    "content_length",
    "lean_enabled",
    "parse_chunk_size",
    "parse_head",
]
