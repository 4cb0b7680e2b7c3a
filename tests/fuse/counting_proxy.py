"""A pass-through TCP proxy in front of a real S3 server that counts the requests a
mount sends: server-side evidence of how many HEADs a listing cost, and how many were
in flight at once, whatever client library the mount uses underneath.

Bytes are forwarded unchanged in both directions (SigV4 signs the ``Host`` the
client used, the proxy's, and the server checks it against the same header), so the
server answers exactly as it would without the proxy. Request lines are recognised
in the client's stream (``METHOD /path HTTP/1.1`` at the start of a line), which is
enough for the bodies tests send. A request is in flight from its request line until
the first bytes of the server's answer are passed on (HTTP/1.1 without pipelining:
one request at a time per connection). ``head_delay`` holds each answer
to a HEAD back that long, so that requests a mount sends in parallel overlap for
sure even on a fast local server. ``ranges`` records the ``Range`` of each GET whose
request head arrived in one piece (all of them, in practice: a head is one send);
``peak_gets`` the ranges of the GETs in flight when most were. ``slow_gets`` (bytes,
seconds, seconds) holds each answer to a GET of a range at least that long back that
long, and counts those GETs in flight apart, under the method ``"slow GET"``; the
answer to any other GET is held back the third number times the slow GETs in flight
(a server that serves requests in turn, big ones first).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
import urllib.parse
from collections import Counter
from types import TracebackType

_REQUEST_LINE = re.compile(rb"(?:^|\r\n)([A-Z]+) (\S+) HTTP/1\.[01]\r\n")
_TAIL = 8192
_HEAD_END = b"\r\n\r\n"
_RANGE = re.compile(rb"\r\nrange: *bytes=(\d+)-(\d+)\r\n", re.IGNORECASE)


class CountingProxy:
    def __init__(
        self,
        upstream: str,
        *,
        head_delay: float = 0.0,
        slow_gets: tuple[int, float, float] | None = None,
    ) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.head_delay = head_delay
        self.slow_gets = slow_gets
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []  # (method, unquoted path), in order
        self.ranges: list[tuple[str, int, int]] = []  # (path, first, last byte) of GETs
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self._gets: dict[int, tuple[int, int] | None] = {}  # id -> Range, in flight
        self.peak_gets: list[tuple[int, int] | None] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._half_done: set[socket.socket] = set()  # connections one direction ended
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        with self.lock:
            self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self.lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    # -- what tests read -----------------------------------------------------------------

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.ranges.clear()
            self.max_in_flight.clear()
            self.peak_gets.clear()

    def count(self, method: str, path_prefix: str = "/") -> int:
        with self.lock:
            return sum(1 for m, p in self.requests if m == method and p.startswith(path_prefix))

    def paths(self, method: str) -> list[str]:
        with self.lock:
            return [p for m, p in self.requests if m == method]

    # -- forwarding ----------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=30)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(None)
            # (method, id) of requests sent and not answered yet, oldest first
            waiting: list[tuple[str, int]] = []
            with self.lock:
                closed = self._closed
                if not closed:
                    self._sockets += [client, server]
            if closed:  # close() ran while this connection was being set up
                client.close()
                server.close()
                return
            threading.Thread(
                target=self._upstream, args=(client, server, waiting), daemon=True
            ).start()
            threading.Thread(
                target=self._downstream, args=(server, client, waiting), daemon=True
            ).start()

    def _upstream(
        self, src: socket.socket, dst: socket.socket, waiting: list[tuple[str, int]]
    ) -> None:
        tail = b""
        try:
            while data := src.recv(65536):
                buf = tail + data
                with self.lock:
                    for m in _REQUEST_LINE.finditer(buf):
                        if m.end() <= len(tail):
                            continue  # seen with the previous chunk
                        method = m.group(1).decode()
                        path = urllib.parse.unquote(m.group(2).decode().split("?", 1)[0])
                        self.requests.append((method, path))
                        head_end = buf.find(_HEAD_END, m.end() - 2)
                        rng: tuple[int, int] | None = None
                        if method == "GET" and head_end >= 0:
                            r = _RANGE.search(buf, m.end() - 2, head_end + 2)
                            if r is not None:
                                rng = (int(r.group(1)), int(r.group(2)))
                                self.ranges.append((path, *rng))
                        request = len(self.requests)
                        if self._slow(rng):
                            method = "slow GET"
                        waiting.append((method, request))
                        if method == "GET":
                            self._gets[request] = rng
                        self.in_flight[method] += 1
                        if self.in_flight[method] > self.max_in_flight[method]:
                            self.max_in_flight[method] = self.in_flight[method]
                            if method == "GET":
                                self.peak_gets = sorted(
                                    self._gets.values(), key=lambda r: r or (-1, -1)
                                )
                tail = buf[-_TAIL:]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._shut(src, dst)
            self._ended(src, dst)

    def _downstream(
        self, src: socket.socket, dst: socket.socket, waiting: list[tuple[str, int]]
    ) -> None:
        try:
            while data := src.recv(65536):
                with self.lock:
                    method, request = waiting.pop(0) if waiting else (None, 0)
                if method == "HEAD" and self.head_delay:
                    time.sleep(self.head_delay)
                if self.slow_gets is not None:
                    if method == "slow GET":
                        time.sleep(self.slow_gets[1])
                    elif method == "GET":
                        time.sleep(self.slow_gets[2] * self.in_flight["slow GET"])
                if method is not None:
                    with self.lock:
                        self.in_flight[method] -= 1
                        self._gets.pop(request, None)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._shut(src, dst)
            self._ended(dst, src)  # (client, server), as _upstream says it

    def _ended(self, client: socket.socket, server: socket.socket) -> None:
        """One direction of a connection ended (``_shut`` woke the other): the second
        to end closes both sockets, so neither is closed under the other's feet."""
        with self.lock:
            last = client in self._half_done
            if last:
                self._half_done.discard(client)
            else:
                self._half_done.add(client)
        if last:
            client.close()
            server.close()

    def _slow(self, rng: tuple[int, int] | None) -> bool:
        return (
            self.slow_gets is not None
            and rng is not None
            and rng[1] - rng[0] + 1 >= self.slow_gets[0]
        )

    @staticmethod
    def _shut(a: socket.socket, b: socket.socket) -> None:
        for sock in (a, b):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
