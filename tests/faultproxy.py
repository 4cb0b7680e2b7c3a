"""A fault-injecting HTTP/1.1 reverse proxy for tests.

``FaultProxy`` listens on 127.0.0.1 (a free port) and forwards every request to one
upstream server on 127.0.0.1, usually a real local object store (SeaweedFS, Azurite,
fake-gcs-server). At a configurable rate it breaks the exchange in one of these ways:

==================  =================================================================
kind                what the client sees
==================  =================================================================
status_500          a 500 (S3 ``InternalError``; Azure/GCS equivalents); not forwarded
status_503          a 503 (S3 ``SlowDown``, Azure ``ServerBusy``, GCS ``backendError``),
                    with ``Retry-After: 1`` half the time; not forwarded
reset_mid_body      forwarded; the response is cut after some of its bytes (inside the
                    body, or inside the headers when there is no body) with a TCP RST
truncate_body       forwarded; headers carry the full Content-Length but only part of
                    the body is sent, then the connection is closed cleanly (FIN)
stall               a 0.5-2 s pause before forwarding (bounded, far below SDK timeouts)
flip_request_bit    one bit of an upload's *payload* flipped before forwarding
flip_response_bit   one bit of a download's *payload* flipped on the way back
==================  =================================================================

Bit flips touch object data only: PUT bodies of S3 PutObject/UploadPart and Azure Put
Blob/Put Block, the media part of a GCS multipart upload, and GET responses that carry
object bytes. Control documents (XML/JSON listings, block lists, part lists, metadata)
are never flipped: nothing above TLS can detect that, and it is not what part and
whole-file checksums are for. The other kinds hit any request.

Choosing faults: for each request a seeded RNG draws whether to inject (``fault_rate``,
the total over all kinds); if so, the kind is picked among those that can apply to this
request by smooth weighted round-robin over ``weights`` (nginx's algorithm). So each
kind's share of the injected faults follows its weight even in a short run: a test
with a few dozen faults still sees every kind, and can assert that it did. When a
response-side fault turns out not to apply (a flip picked for a GET whose response is a
listing), the request goes through clean and the kind is counted in ``skipped``.
``counts`` holds what was actually injected; ``injected`` is their sum.

Per chunk: with ``per_chunk=True`` the rate is per forwarded 64 KiB chunk (``BLOCK``)
rather than per request: a request carrying n chunks (its body, plus the object bytes
a GET asks for by ``Range``/``x-ms-range``; at least one) is faulted with probability
``1 - (1 - fault_rate) ** n``, still at most one fault per request (the first one
breaks the exchange anyway). So 1 % per chunk hits about 55 % of 5 MiB part requests.

Protocol support, enough for boto3, azure-storage-blob and google-cloud-storage:
keep-alive on both sides (one upstream connection per client connection), request
bodies with Content-Length or chunked (re-sent with Content-Length), ``Expect:
100-continue`` (answered by the proxy itself; a status fault is then sent instead of
the 100 and the connection closed, as a real server rejecting early would), HEAD and
other body-less responses, and response bodies streamed in 64 KiB blocks (a chunked
response, only ever a small control document, is read whole and re-sent with a length).
Request bodies are read whole (at most ``MAX_BODY``): they are single parts.

TLS: with ``tls=(certfile, keyfile)`` (``make_certificate`` writes a self-signed pair
for 127.0.0.1) the proxy terminates https (client to proxy) and forwards plain http
to the upstream, as a TLS-terminating load balancer in front of Ceph RGW does; the
client trusts the certificate (``AWS_CA_BUNDLE``). ``rewrite(request)`` may change a
request (its ``headers`` list) after its body is read and before any fault: a test
that wants a store to look as if it ignored some headers strips them there (and
re-signs).

Use::

    with FaultProxy(server.endpoint, flavor="s3", fault_rate=0.05, seed=1) as proxy:
        proxy.enabled = False   # set-up runs clean
        ...
        proxy.enabled = True
        ...                      # point clients at proxy.url
        assert proxy.counts["flip_request_bit"] > 0
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import random
import re
import socket
import socketserver
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, BinaryIO, Literal
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"

KINDS = (
    "status_500",
    "status_503",
    "reset_mid_body",
    "truncate_body",
    "stall",
    "flip_request_bit",
    "flip_response_bit",
)
Flavor = Literal["s3", "azure", "gcs"]

#: Largest request body (or chunked response) held in memory.
MAX_BODY = 256 * 1024 * 1024
#: Response bodies are streamed in blocks of this size.
BLOCK = 64 * 1024
#: An idle client connection is dropped after this long.
IDLE_TIMEOUT = 120.0
#: Upstream connect/read timeout.
UPSTREAM_TIMEOUT = 120.0
STALL_RANGE = (0.5, 2.0)

_MAX_LINE = 65536
_MAX_HEADERS = 200
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
}


class _ClientGone(Exception):
    """The client closed the connection or sent something unparseable."""


@dataclass(slots=True)
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)

    def body_announced(self) -> bool:
        te = (self.header("transfer-encoding") or "").lower()
        return "chunked" in te or int(self.header("content-length") or 0) > 0

    def wants_close(self) -> bool:
        conn = (self.header("connection") or "").lower()
        return "close" in conn or (self.version == "HTTP/1.0" and "keep-alive" not in conn)


@dataclass(slots=True)
class _Stats:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    requests: int = 0
    chosen: int = 0
    #: (method, target) of every request, when the proxy was asked to record them.
    seen: list[tuple[str, str]] = field(default_factory=list)
    log: collections.deque[tuple[str, str, str]] = field(
        default_factory=lambda: collections.deque(maxlen=2000)
    )


# -- parsing ----------------------------------------------------------------------------


def _readline(rfile: BinaryIO) -> bytes:
    line = rfile.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise _ClientGone("line too long")
    return line


def _read_head(rfile: BinaryIO) -> _Request | None:
    line = _readline(rfile)
    while line in (b"\r\n", b"\n"):  # tolerate stray CRLF between requests
        line = _readline(rfile)
    if not line:
        return None
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3:
        raise _ClientGone(f"bad request line {line[:80]!r}")
    headers: list[tuple[str, str]] = []
    while True:
        raw = _readline(rfile)
        if not raw:
            raise _ClientGone("EOF in headers")
        if raw in (b"\r\n", b"\n"):
            break
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep or len(headers) >= _MAX_HEADERS:
            raise _ClientGone("bad header")
        headers.append((name.strip(), value.strip()))
    return _Request(parts[0], parts[1], parts[2], headers)


def _read_exact(rfile: BinaryIO, n: int) -> bytes:
    if n > MAX_BODY:
        raise _ClientGone(f"body of {n} bytes is over MAX_BODY")
    data = rfile.read(n)
    if len(data) != n:
        raise _ClientGone("EOF in body")
    return data


def _read_body(req: _Request, rfile: BinaryIO) -> bytes:
    if "chunked" in (req.header("transfer-encoding") or "").lower():
        out = bytearray()
        while True:
            size_line = _readline(rfile).split(b";", 1)[0].strip()
            if not size_line:
                raise _ClientGone("bad chunk size")
            size = int(size_line, 16)
            if size == 0:
                while _readline(rfile) not in (b"\r\n", b"\n", b""):
                    pass  # trailers: dropped
                return bytes(out)
            if len(out) + size > MAX_BODY:
                raise _ClientGone("chunked body over MAX_BODY")
            out += _read_exact(rfile, size)
            _readline(rfile)  # CRLF after each chunk
    return _read_exact(rfile, int(req.header("content-length") or 0))


# -- where bit flips may land -------------------------------------------------------------


def _payload_span(req: _Request, flavor: Flavor) -> tuple[int, int] | None:
    """The byte range of ``req.body`` that is object data (None: not an upload)."""
    if not req.body:
        return None
    if flavor in ("s3", "azure"):
        if req.method != "PUT":
            return None
        if flavor == "azure" and req.query.get("comp", [""])[0] == "blocklist":
            return None
        return 0, len(req.body)
    upload_type = req.query.get("uploadType", [""])[0]
    if upload_type == "media" or (upload_type == "resumable" and req.method == "PUT"):
        return 0, len(req.body)
    if upload_type != "multipart":
        return None
    m = re.search(r'boundary="?([^";]+)"?', req.header("content-type") or "")
    if not m:
        return None
    # multipart/related: part one is the JSON resource, the last part the media.
    delimiter = b"--" + m.group(1).encode("latin-1")
    last = req.body.rfind(delimiter, 0, req.body.rfind(delimiter))
    head_end = req.body.find(b"\r\n\r\n", last)
    end = req.body.rfind(b"\r\n" + delimiter)
    if last < 0 or head_end < 0 or end <= head_end + 4:
        return None
    return head_end + 4, end


def _may_fetch_data(req: _Request, flavor: Flavor) -> bool:
    """Whether ``req`` asks for object bytes (decided before the response is seen)."""
    if req.method != "GET":
        return False
    query = req.query
    if flavor == "s3":
        has_key = len(req.path.strip("/").split("/", 1)) == 2
        return has_key and not {"uploadId", "tagging", "acl", "attributes"} & query.keys()
    if flavor == "azure":
        return not {"comp", "restype"} & query.keys()
    return query.get("alt", [""])[0] == "media"


_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


def _chunks(req: _Request, flavor: Flavor) -> int:
    """How many ``BLOCK`` chunks ``req`` forwards: its body's, plus those of the object
    bytes a data GET asks for by range (a GET without one counts one chunk)."""
    length = req.header("content-length") or "0"
    n = -(-int(length) // BLOCK) if length.isdigit() else 1
    if _may_fetch_data(req, flavor):
        m = _RANGE.fullmatch(req.header("x-ms-range") or req.header("range") or "")
        n += -(-(int(m.group(2)) - int(m.group(1)) + 1) // BLOCK) if m else 1
    return max(1, n)


def _is_data_response(req: _Request, resp: http.client.HTTPResponse, flavor: Flavor) -> bool:
    if not _may_fetch_data(req, flavor) or not 200 <= resp.status < 300:
        return False
    if flavor == "s3":
        return resp.getheader("ETag") is not None  # object GETs; listings have none
    if flavor == "azure":
        return resp.getheader("x-ms-blob-type") is not None
    return True


def _flip(data: bytes | bytearray, lo: int, hi: int, rng: random.Random) -> bytes:
    out = bytearray(data)
    bit = rng.randrange((hi - lo) * 8)
    out[lo + bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# -- error bodies -------------------------------------------------------------------------


def _error_response(flavor: Flavor, status: int, retry_after: bool) -> tuple[list[str], bytes]:
    if flavor == "s3":
        code = "SlowDown" if status == 503 else "InternalError"
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>injected by faultproxy</Message>"
            "<RequestId>faultproxy</RequestId><HostId>faultproxy</HostId></Error>"
        ).encode()
        headers = ["Content-Type: application/xml", "x-amz-request-id: faultproxy"]
    elif flavor == "azure":
        code = "ServerBusy" if status == 503 else "InternalError"
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f"<Error><Code>{code}</Code><Message>injected by faultproxy</Message></Error>"
        ).encode()
        headers = [
            "Content-Type: application/xml",
            f"x-ms-error-code: {code}",
            "x-ms-request-id: faultproxy",
        ]
    else:
        reason = "backendError"
        body = json.dumps(
            {
                "error": {
                    "code": status,
                    "message": "injected by faultproxy",
                    "errors": [{"reason": reason, "message": "injected by faultproxy"}],
                }
            }
        ).encode()
        headers = ["Content-Type: application/json; charset=UTF-8"]
    if retry_after:
        headers.append("Retry-After: 1")
    return headers, body


# -- the server ---------------------------------------------------------------------------


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__((HOST, 0), _Handler)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server
    timeout = IDLE_TIMEOUT
    disable_nagle_algorithm = True

    def setup(self) -> None:
        tls = self.server.proxy._tls
        if tls is not None:
            self.request.settimeout(IDLE_TIMEOUT)
            try:
                self.request = tls.wrap_socket(self.request, server_side=True)
            except (OSError, ssl.SSLError):
                self.request.close()
                raise
        try:
            super().setup()
        except OSError:
            # finish() won't run: close the TLS wrapper here (socketserver closes only
            # the socket it accepted, which the wrapper detached)
            self.request.close()
            raise

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self.server.proxy._tls is not None:
                # socketserver closes the socket it accepted, not its TLS wrapper.
                with contextlib.suppress(OSError):
                    self.request.close()

    def handle(self) -> None:
        proxy = self.server.proxy
        sock: socket.socket = self.connection
        proxy._track(sock, add=True)
        upstream = _Upstream(proxy.upstream_port)
        try:
            while not proxy._stopping.is_set():
                req = _read_head(self.rfile)  # type: ignore[arg-type]
                if req is None or not proxy._exchange(req, self.rfile, self.wfile, sock, upstream):  # type: ignore[arg-type]
                    return
        except (_ClientGone, OSError, http.client.HTTPException, ValueError):
            return
        finally:
            upstream.close()
            proxy._track(sock, add=False)


class _Upstream:
    """One keep-alive connection to the upstream server, reopened when it drops."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def send(self, req: _Request) -> http.client.HTTPResponse:
        for attempt in (1, 2):
            reused = self.conn is not None
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=UPSTREAM_TIMEOUT)
            try:
                self.conn.putrequest(
                    req.method, req.target, skip_host=True, skip_accept_encoding=True
                )
                for name, value in req.headers:
                    if name.lower() not in _HOP_BY_HOP:
                        self.conn.putheader(name, value)
                if req.body or req.header("content-length") is not None or req.body_announced():
                    self.conn.putheader("Content-Length", str(len(req.body)))
                self.conn.endheaders(req.body or None)
                return self.conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # A kept-alive connection the server had closed: one fresh try.
                self.close()
                if not reused or attempt == 2:
                    raise
        raise AssertionError("unreachable")


class FaultProxy:
    """See the module docstring. Thread-safe; start/stop or use as a context manager."""

    def __init__(
        self,
        upstream: str,
        *,
        flavor: Flavor = "s3",
        fault_rate: float = 0.0,
        weights: Mapping[str, float] | None = None,
        seed: int = 0,
        enabled: bool = True,
        stall_range: tuple[float, float] = STALL_RANGE,
        only: Callable[[str, str, Mapping[str, str]], bool] | None = None,
        max_faults: int | None = None,
        record: bool = False,
        tls: tuple[str, str] | None = None,
        rewrite: Callable[[_Request], None] | None = None,
        per_chunk: bool = False,
    ) -> None:
        """``upstream``: ``http://127.0.0.1:PORT[/...]`` (only the port is used; any path
        stays the client's business). ``weights`` per kind (default: every kind 1);
        a kind missing from ``weights`` is never injected. ``only(method, target,
        headers)`` (header names lower-cased) limits faults to the requests it accepts;
        ``max_faults`` stops injecting after that many; ``record`` keeps the method
        and target of every request (``seen``); ``tls`` (certificate, key files) serves
        https; ``rewrite`` may change each request before it is forwarded;
        ``per_chunk`` makes ``fault_rate`` a rate per forwarded 64 KiB chunk."""
        parts = urlsplit(upstream if "://" in upstream else f"http://{upstream}")
        if parts.hostname not in (HOST, "localhost") or parts.port is None:
            raise ValueError(f"upstream must be http://{HOST}:PORT, not {upstream!r}")
        unknown = set(weights or ()) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        self.upstream_port = parts.port
        self.flavor: Flavor = flavor
        self.fault_rate = fault_rate
        self.weights = dict(weights) if weights is not None else dict.fromkeys(KINDS, 1.0)
        self.enabled = enabled
        self.stall_range = stall_range
        self.only = only
        self.max_faults = max_faults
        self.record = record
        self.rewrite = rewrite
        self.per_chunk = per_chunk
        self._tls: ssl.SSLContext | None = None
        if tls is not None:
            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls.load_cert_chain(*tls)
        self._rng = random.Random(seed)
        self._credit: dict[str, float] = dict.fromkeys(KINDS, 0.0)
        self._lock = threading.Lock()
        self._stats = _Stats()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> FaultProxy:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="faultproxy",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:  # wake handler threads blocked on a read
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("proxy not started")
        return int(self._server.server_address[1])

    def client_env(self, server: Any) -> dict[str, str]:
        """``server.client_env()`` with its endpoint routed through this proxy (S3's
        endpoint URL, Azure's connection string, GCS's emulator host)."""
        env: dict[str, str] = dict(server.client_env())
        if self.flavor == "s3":
            env["AWS_ENDPOINT_URL"] = self.url
        elif self.flavor == "azure":
            account_path = server.endpoint.split("/", 3)[3]
            env["AZURE_STORAGE_CONNECTION_STRING"] = server.connection_string.replace(
                server.endpoint, f"{self.url}/{account_path}"
            )
        else:
            env["STORAGE_EMULATOR_HOST"] = self.url
        return env

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://{HOST}:{self.port}"

    # -- statistics ---------------------------------------------------------------------

    @property
    def counts(self) -> dict[str, int]:
        """Faults actually injected, per kind."""
        with self._lock:
            return dict(self._stats.counts)

    @property
    def skipped(self) -> dict[str, int]:
        """Faults chosen but not applicable to the response they met."""
        with self._lock:
            return dict(self._stats.skipped)

    @property
    def injected(self) -> int:
        with self._lock:
            return sum(self._stats.counts.values())

    @property
    def requests(self) -> int:
        with self._lock:
            return self._stats.requests

    @property
    def seen(self) -> list[tuple[str, str]]:
        """``(method, target)`` of every request so far (with ``record=True``)."""
        with self._lock:
            return list(self._stats.seen)

    def log(self) -> list[tuple[str, str, str]]:
        """The last faults injected (or skipped) as ``(kind, method, target)``."""
        with self._lock:
            return list(self._stats.log)

    def reset_counts(self) -> None:
        with self._lock:
            self._stats = _Stats()

    def summary(self) -> str:
        counts = {k: v for k, v in self.counts.items() if v}
        return f"{self.injected} faults in {self.requests} requests: {counts}"

    # -- internals ----------------------------------------------------------------------

    def _track(self, sock: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._sockets.add if add else self._sockets.discard)(sock)

    def _count(self, kind: str, req: _Request, *, skipped: str | None = None) -> None:
        """Count an injected fault, or with ``skipped`` (why) one that could not apply."""
        with self._lock:
            if skipped is None:
                self._stats.counts[kind] += 1
                self._stats.log.append((kind, req.method, req.target))
            else:
                self._stats.skipped[kind] += 1
                self._stats.log.append((f"{kind} skipped: {skipped}", req.method, req.target))

    def _choose(self, req: _Request) -> str | None:
        with self._lock:
            self._stats.requests += 1
            if self.record:
                self._stats.seen.append((req.method, req.target))
            if not self.enabled or self.fault_rate <= 0:
                return None
            if self.max_faults is not None and self._stats.chosen >= self.max_faults:
                return None
            if self.only is not None and not self.only(
                req.method, req.target, {k.lower(): v for k, v in req.headers}
            ):
                return None
            rate = self.fault_rate
            if self.per_chunk:
                rate = 1.0 - (1.0 - min(rate, 1.0)) ** _chunks(req, self.flavor)
            if self._rng.random() >= rate:
                return None
            eligible = {k: w for k, w in self.weights.items() if w > 0}
            if not req.body_announced():
                eligible.pop("flip_request_bit", None)
            if not _may_fetch_data(req, self.flavor):
                eligible.pop("flip_response_bit", None)
            if req.method not in ("GET", "POST"):  # PUT, HEAD, DELETE answers: no body
                eligible.pop("truncate_body", None)
            if not eligible:
                return None
            # Smooth weighted round-robin: every kind's share follows its weight.
            for k, w in eligible.items():
                self._credit[k] += w
            kind = max(eligible, key=lambda k: (self._credit[k], -KINDS.index(k)))
            self._credit[kind] -= sum(eligible.values())
            self._stats.chosen += 1
            return kind

    def _uniform(self, lo: float, hi: float) -> float:
        with self._lock:
            return self._rng.uniform(lo, hi)

    def _randrange(self, n: int) -> int:
        with self._lock:
            return self._rng.randrange(n)

    def _exchange(
        self,
        req: _Request,
        rfile: BinaryIO,
        wfile: BinaryIO,
        sock: socket.socket,
        upstream: _Upstream,
    ) -> bool:
        """Serve one request; False when the client connection must end."""
        kind = self._choose(req)
        expect = "100-continue" in (req.header("expect") or "").lower()
        keep = not req.wants_close()

        if kind in ("status_500", "status_503"):
            status = 503 if kind == "status_503" else 500
            with self._lock:
                retry_after = status == 503 and self._rng.random() < 0.5
            if expect:
                keep = False  # answered before the body was sent: the body never comes
            else:
                _read_body(req, rfile)
            headers, body = _error_response(self.flavor, status, retry_after)
            reason = "Service Unavailable" if status == 503 else "Internal Server Error"
            if req.method == "HEAD":
                body = b""
            head = [f"HTTP/1.1 {status} {reason}", *headers, f"Content-Length: {len(body)}"]
            if not keep:
                head.append("Connection: close")
            self._count(kind, req)
            wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            return keep

        if expect and req.body_announced():
            wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        req.body = _read_body(req, rfile)
        if self.rewrite is not None:
            self.rewrite(req)

        if kind == "stall":
            self._count(kind, req)
            time.sleep(self._uniform(*self.stall_range))
        elif kind == "flip_request_bit":
            span = _payload_span(req, self.flavor)
            if span is None:
                self._count(kind, req, skipped="no payload in this body")
            else:
                with self._lock:
                    req.body = _flip(req.body, span[0], span[1], self._rng)
                self._count(kind, req)

        try:
            resp = upstream.send(req)
        except (OSError, http.client.HTTPException):
            upstream.close()
            body = b"upstream unreachable"
            wfile.write(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            return False
        try:
            return self._relay(req, resp, kind, wfile, sock, upstream) and keep
        finally:
            if resp.will_close:
                upstream.close()

    def _relay(
        self,
        req: _Request,
        resp: http.client.HTTPResponse,
        kind: str | None,
        wfile: BinaryIO,
        sock: socket.socket,
        upstream: _Upstream,
    ) -> bool:
        """Send the upstream response to the client, applying a response-side fault."""
        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
        bodyless = req.method == "HEAD" or resp.status in (204, 304) or resp.status < 200
        length: int | None
        if bodyless:
            length = 0
            declared = resp.getheader("Content-Length")
            if declared is not None:
                headers.append(("Content-Length", declared))
            prefix = b""
        else:
            length = resp.length
            prefix = b""
            if length is None:  # chunked or close-delimited: a small control document
                prefix = resp.read(MAX_BODY + 1)
                if len(prefix) > MAX_BODY:
                    raise _ClientGone("response over MAX_BODY")
                length = len(prefix)
            headers.append(("Content-Length", str(length)))
        head = f"HTTP/1.1 {resp.status} {resp.reason}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        head_bytes = head.encode("latin-1")

        if kind == "flip_response_bit" and not (
            length and _is_data_response(req, resp, self.flavor)
        ):
            self._count(kind, req, skipped=f"HTTP {resp.status}, not object data")
            kind = None
        if kind == "truncate_body" and not length:
            self._count(kind, req, skipped=f"HTTP {resp.status}, empty body")
            kind = None

        if kind == "reset_mid_body" and not length:
            self._count(kind, req)
            wfile.write(head_bytes[: 1 + self._randrange(len(head_bytes) - 1)])
            upstream.close()
            self._reset(sock)
            return False

        cut = self._randrange(length) if kind in ("reset_mid_body", "truncate_body") else None
        flip_at = self._randrange(length * 8) if kind == "flip_response_bit" else None
        if kind in ("reset_mid_body", "truncate_body", "flip_response_bit"):
            self._count(kind, req)
        wfile.write(head_bytes)
        sent = 0
        while sent < length:
            block = prefix[sent : sent + BLOCK] if prefix else resp.read(min(BLOCK, length - sent))
            if not block:
                upstream.close()  # upstream sent less than it announced: pass that on
                return False
            if flip_at is not None and sent * 8 <= flip_at < (sent + len(block)) * 8:
                bit = flip_at - sent * 8
                block = _flip_at(block, bit)
            if cut is not None and sent + len(block) > cut:
                wfile.write(block[: cut - sent])
                upstream.close()
                if kind == "reset_mid_body":
                    self._reset(sock)
                else:
                    sock.shutdown(socket.SHUT_WR)
                return False
            wfile.write(block)
            sent += len(block)
        resp.read()  # lets http.client reuse the connection (nothing is left to read)
        return True

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        """Close with an RST instead of a FIN (SO_LINGER on, timeout 0)."""
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()


def make_certificate(directory: str) -> tuple[str, str]:
    """A self-signed certificate and key for 127.0.0.1 in ``directory`` (``openssl``
    CLI); returns (certificate, key) paths. The certificate is its own CA bundle."""
    cert, key = f"{directory}/proxy-cert.pem", f"{directory}/proxy-key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=IP:{HOST}",
            "-keyout", key, "-out", cert,
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _flip_at(block: bytes, bit: int) -> bytes:
    out = bytearray(block)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)
