"""A tiny HTTP/1.1 server on 127.0.0.1 that answers every request with whatever bytes
a test's ``answer`` function gives: a misbehaving object store in a few lines.

``faultproxy.FaultProxy`` and ``fuse/counting_proxy.CountingProxy`` sit in front of a
real server and pass its answers on; this one *is* the server, so a test can send what
no real server would: a ``Content-Length`` of 3 GB with a few bytes behind it, an
endless chunked body, a listing that names the same continuation token again, a header
line of 100 KiB. ``answer(request)`` returns the raw response bytes, or an iterable
of byte strings to stream them (an endless generator streams until the client hangs
up). Requests on one connection are answered in turn (keep-alive); request bodies
are read by their ``Content-Length``.

``sent`` counts the bytes written to clients: a test that expects the client to stop
early checks it stayed small. ``requests`` records what was asked.

Use::

    with RawServer(lambda req: b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nhi") as srv:
        ...  # point a client at srv.url
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType

HOST = "127.0.0.1"


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""
    path: str = ""
    query: dict[str, str] = field(default_factory=dict)


Answer = Callable[[Request], bytes | Iterable[bytes]]


def response(status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """A plain response with a correct Content-Length (unless ``headers`` sets one)."""
    head = {"Content-Length": str(len(body)), **(headers or {})}
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in head.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class RawServer:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[Request] = []
        self.sent = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                while len(buf) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                body, buf = buf[:length], buf[length:]
                parts = urllib.parse.urlsplit(target)
                request = Request(
                    method,
                    target,
                    headers,
                    body,
                    urllib.parse.unquote(parts.path),
                    dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True)),
                )
                with self._lock:
                    self.requests.append(request)
                answer = self.answer(request)
                for piece in [answer] if isinstance(answer, bytes) else answer:
                    conn.sendall(piece)
                    with self._lock:
                        self.sent += len(piece)
        except OSError:
            return  # the client hung up (as it should, on an endless answer)
        finally:
            conn.close()
