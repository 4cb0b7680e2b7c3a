"""A lean HTTP/1.1 client for one service endpoint, shared by the Azure and GCS lean
paths (``stores/azure/lean.py``, ``stores/gcs/lean.py``).

It is the connection machinery of the S3 lean path (``stores/s3/lean.py``: one
keep-alive connection per thread, the request written with one ``sendmsg``, the body
received with ``recv_into`` straight into the caller's buffer, every part of a response
bounded before it is allocated) with the signing left to the caller: ``authorize``
adds the headers (or query) a request needs just before each attempt, so a token that
is refreshed between attempts is picked up.

Retries are those of the S3 lean path: three attempts with jittered backoff on a
connection error, a malformed response, a 429 or a 5xx; an idle keep-alive the server
had closed is retried once for free. Messages name the ``where`` the caller gives
(``az://container/key``), never the request line, its query (a SAS signature) or its
headers (keys, tokens).
"""

from __future__ import annotations

import os
import random
import re
import socket
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from datamover.errors import TransientError
from datamover.stores.bounds import ResponseTooLarge

if TYPE_CHECKING:
    import ssl

#: A response head (status line and headers), and a chunk-size line or trailers.
MAX_HEADER_BYTES = 64 * 1024
#: What is read of an error response's body (the rest is dropped with the connection).
MAX_ERROR_BODY = 1024 * 1024
#: Interim (1xx) responses accepted before the real one.
MAX_INTERIM = 8
ATTEMPTS = 3
_RECV = 256 * 1024
#: Each connection's receive buffer for heads, chunk lines and small answers.
_SCRATCH = 64 * 1024
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
        self._scratch: memoryview | None = None  # _recv_more's, _SCRATCH bytes

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock, self.used, self.buf = None, 0, bytearray()

    def _connect(self, connect_timeout: float, read_timeout: float) -> socket.socket:
        sock = self.transport((self.host, self.port), connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self.tls is not None:
                # wrap_socket takes the descriptor over and closes it if the handshake
                # fails; closing ``sock`` afterwards is then a no-op
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(read_timeout)
        except BaseException:
            sock.close()
            raise
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
        reused = self.send(head, body, connect_timeout=connect_timeout, read_timeout=read_timeout)
        return self.receive(has_body=has_body, into=into, limit=limit, reused=reused)

    def send(self, head: bytes, body: Any, *, connect_timeout: float, read_timeout: float) -> bool:
        """Write one request (connecting first if need be); True when the connection
        was kept alive from an earlier request. Raises ``_Broken``."""
        reused = self.sock is not None
        if self.sock is None:
            try:
                self.sock = self._connect(connect_timeout, read_timeout)
            except OSError as e:
                self.close()
                raise _Broken(e, stale=False) from e
        self.spent = False
        try:
            _send(self.sock, [head, *body_parts(body)], gather=self.tls is None)
        except (OSError, ValueError) as e:
            self.close()
            raise _Broken(e, stale=reused) from e
        return reused

    def receive(
        self, *, has_body: bool, into: memoryview | None, limit: int, reused: bool
    ) -> Response:
        """The response to the request ``send`` wrote, read to its end (bounded as the
        class docstring says). Raises ``_Broken`` (``stale`` when a reused connection
        failed before any byte of the response) or ``ResponseTooLarge``."""
        received_any = False
        try:
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

    def _recv_more(self, buf: bytearray, closed: str = "connection closed by the server") -> None:
        """Append what the socket has to ``buf`` (at most ``_SCRATCH`` bytes), received
        into this connection's own buffer: a fresh 256 KiB ``recv`` per answer cost an
        ``mmap``, ``mremap`` and ``munmap`` each (glibc maps allocations that large)."""
        assert self.sock is not None
        scratch = self._scratch
        if scratch is None:
            scratch = self._scratch = memoryview(bytearray(_SCRATCH))
        n = self.sock.recv_into(scratch)
        if not n:
            raise ConnectionResetError(closed)
        buf += scratch[:n]

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
                    self._recv_more(buf, "connection closed before the response")
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


def body_parts(body: Any) -> list[Any]:
    """A request body as the buffers to send: one buffer, or a tuple or list of them
    sent one after another without being joined (a multipart body's framing around
    the caller's bytes); empty ones dropped."""
    if body is None:
        return []
    parts = body if isinstance(body, tuple | list) else (body,)
    return [part for part in parts if memoryview(part).nbytes]


def body_size(body: Any) -> int:
    """The length in bytes of a request body (``body_parts``' buffers together)."""
    return sum(memoryview(part).nbytes for part in body_parts(body))


def _send(sock: socket.socket, parts: list[Any], *, gather: bool) -> None:
    """Send ``parts`` in order: a plain socket with one ``sendmsg`` (a gathering write,
    finished with ``sendall`` when the kernel took only part), TLS one by one."""
    if not gather:
        for part in parts:
            sock.sendall(part)
        return
    views = [memoryview(part).cast("B") for part in parts]
    sent = sock.sendmsg(views)
    for view in views:
        if sent >= len(view):
            sent -= len(view)
            continue
        sock.sendall(view[sent:])
        sent = 0


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
    # On POSIX, urllib's proxies come only from ``*_proxy`` variables; without one, no
    # need to import urllib.request (and http.client, ~10 ms of every start-up).
    if os.name == "posix" and not any(k.lower().endswith("_proxy") for k in os.environ):
        return False
    import urllib.request  # deferred: see above

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


class ConnectionPool:
    """One kept-alive connection per thread to one ``scheme://host:port`` (TLS set up
    once), all closed by ``close`` or when the pool is collected, so no socket is left
    to the garbage collector's ResourceWarning."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        ca_bundle: str | None,
        verify: bool,
        transport: Transport,
    ) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self.transport = transport
        self.tls: ssl.SSLContext | None = None
        if scheme == "https":
            import ssl  # deferred: ~3 ms of start-up that plain-http endpoints never use

            self.tls = ssl.create_default_context(cafile=ca_bundle)
            if not verify:
                self.tls.check_hostname = False
                self.tls.verify_mode = ssl.CERT_NONE
        self._local = threading.local()
        self.all: list[_Connection] = []
        self._lock = threading.Lock()
        weakref.finalize(self, _close_all, self.all, self._lock)

    def conn(self) -> _Connection:
        """This thread's connection (made on first use)."""
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.new_connection()
            self._local.conn = conn
            with self._lock:
                self.all.append(conn)
        return conn

    def new_connection(self) -> _Connection:
        """A connection of the caller's own (not this thread's, not closed by
        ``close``): a ``LeanPipeline``'s."""
        return _Connection(self.scheme, self.host, self.port, self.tls, self.transport)

    def close(self) -> None:
        _close_all(self.all, self._lock)
        self._local = threading.local()

    def drop_thread_connection(self) -> None:
        """Close this thread's kept-alive connection: its next request opens a fresh
        one (a connection that saw a fault is not trusted again)."""
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()


#: Adds auth to a request's headers: (method, path, query pairs, headers) -> query
#: suffix to append ("" or "&sig=..."), the headers changed in place.
Authorize = Callable[[str, str, list[tuple[str, str]], dict[str, str]], str]


def quote_path(value: str) -> str:
    return urllib.parse.quote(value, safe="/~")


def quote_param(value: str) -> str:
    return urllib.parse.quote(value, safe="-_.~")


class LeanHTTP:
    """Requests to one ``scheme://host:port``; thread-safe, one connection per thread."""

    def __init__(
        self,
        endpoint: str,
        *,
        ca_bundle: str | None = None,
        verify: bool = True,
        connect_timeout: float = 20,
        read_timeout: float = 120,
        transport: Transport = socket.create_connection,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LeanUnavailable(f"endpoint scheme {parts.scheme!r}")
        if _proxied(parts.scheme, parts.hostname):
            raise LeanUnavailable("proxy configured")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        self.host_header = self.host if default_port else f"{self.host}:{self.port}"
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

    def close(self) -> None:
        self.pool.close()

    def drop_thread_connection(self) -> None:
        self.pool.drop_thread_connection()

    def request(
        self,
        method: str,
        path: str,
        *,
        where: str,
        key: str | None = None,
        query: list[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        into: memoryview | None = None,
        max_body: int = MAX_ERROR_BODY,
        authorize: Authorize | None = None,
        retry_status: Callable[[Response], bool] | None = None,
    ) -> Response:
        """One request (``path`` already percent-encoded, ``query`` raw pairs, ``body``
        one buffer or a tuple of them: ``body_parts``), retried
        as the module docstring says. Returns the final response whatever its status;
        raises ``TransientError`` when every attempt failed on the connection and
        ``ResponseTooLarge`` when a success body is over ``into``/``max_body``."""
        pairs = list(query or [])
        size = body_size(body)
        extra = dict(headers or {})
        for name, value in extra.items():
            if not value.isascii() or "\n" in value or "\r" in value:
                raise LeanUnavailable(f"header {name} is not plain ASCII")
        failure: BaseException | None = None
        for attempt in range(ATTEMPTS):
            if attempt:
                self._sleep(min(20.0, random.random() * (2**attempt) * 0.5))
            head = self._head(method, path, pairs, extra, size, authorize)
            try:
                response = self._exchange(self.pool.conn(), method, head, body, into, max_body)
            except _Broken as e:
                failure = e.cause
                continue
            except ResponseTooLarge as e:
                raise ResponseTooLarge(f"{where}: {e}", key=key, size=e.size) from None
            retry = response.status >= 500 or response.status == 429
            if retry_status is not None:
                retry = retry or retry_status(response)
            if retry and attempt + 1 < ATTEMPTS:
                continue
            return response
        if isinstance(failure, _Malformed):
            raise TransientError(
                f"{where}: malformed response from the server ({failure})", key=key
            )
        reason = type(failure).__name__
        if isinstance(failure, OSError) and failure.strerror:
            reason = failure.strerror.lower()
        raise TransientError(f"{where}: network error ({reason})", key=key)

    def _head(
        self,
        method: str,
        path: str,
        pairs: list[tuple[str, str]],
        extra: Mapping[str, str],
        size: int,
        authorize: Authorize | None,
    ) -> bytes:
        """A request's head, authorized now (at each attempt: a refreshed token is
        picked up)."""
        sent = dict(extra)
        suffix = authorize(method, path, pairs, sent) if authorize is not None else ""
        query_string = "&".join(f"{quote_param(k)}={quote_param(v)}" for k, v in pairs)
        query_string = (query_string + suffix) if query_string else suffix.lstrip("&")
        target = f"{path}?{query_string}" if query_string else path
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{name}: {value}" for name, value in sent.items()]
        if (method in ("PUT", "POST") or size) and "content-length" not in sent:
            lines.append(f"Content-Length: {size}")
        lines.append("User-Agent: datamover")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def get_head(
        self,
        path: str,
        *,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        authorize: Authorize | None,
    ) -> bytes:
        """The head of a GET as ``request`` sends it (for a ``pipeline``); the caller
        gives plain ASCII header values."""
        return self._head("GET", path, list(query), headers, 0, authorize)

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


def exchange(
    conn: _Connection,
    method: str,
    head: bytes,
    body: Any,
    into: memoryview | None,
    limit: int,
    connect_timeout: float,
    read_timeout: float,
) -> Response:
    """One request and its response on ``conn``. A keep-alive connection the server had
    closed while idle (``_Broken.stale``) gets one fresh try, free."""
    kwargs = {
        "has_body": method != "HEAD",
        "into": into,
        "limit": limit,
        "connect_timeout": connect_timeout,
        "read_timeout": read_timeout,
    }
    try:
        return conn.exchange(head, body, **kwargs)  # type: ignore[arg-type]
    except _Broken as e:
        if not e.stale:
            raise
    return conn.exchange(head, body, **kwargs)  # type: ignore[arg-type]


def content_range_total(headers: Mapping[str, str]) -> int | None:
    """The total size from ``Content-Range: bytes a-b/total`` (None when absent or
    ``*``)."""
    value = headers.get("content-range", "")
    _, sep, total = value.rpartition("/")
    if not sep or not (total.isascii() and total.isdigit() and len(total) <= 18):
        return None
    return int(total)


__all__ = [
    "ATTEMPTS",
    "MAX_ERROR_BODY",
    "MAX_HEADER_BYTES",
    "MAX_INTERIM",
    "Authorize",
    "LeanHTTP",
    "LeanUnavailable",
    "Response",
    "Transport",
    "body_parts",
    "body_size",
    "content_length",
    "content_range_total",
    "parse_chunk_size",
    "parse_head",
    "quote_param",
    "quote_path",
]
