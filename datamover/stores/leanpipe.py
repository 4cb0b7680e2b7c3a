"""Whole-object GETs kept in flight from one thread: ``LeanPipeline``.

The engine's many-small-files path (``engine/smallreads.py``) asks for the next objects
before it reads the first answer, so the server works on them while this process
writes the file before. Each request in flight has a connection of its own (no HTTP/1.1
pipelining on one connection: a server that closes mid-stream then loses only one
request); answers are read in the order asked. One thread does all of it, so no thread
waits on another for the interpreter lock: with ``--transfers 32`` threads each doing
one blocking request, a 4 KiB download cost ~100 futex calls (~0.1 CPU-ms) of lock
hand-overs alone (bench/RESULTS.md, eighth session).

Nothing here is retried or mapped to a store error: ``receive`` answers None for any
failure (broken connection, malformed or too large an answer) and the caller reads
that object again through the store's ordinary path, which retries and names the
error. A status other than the caller's is returned as is, for the caller to hand over
the same way. Bounds: at most ``width`` connections and requests in flight; each answer
is bounded by the caller's ``limit`` before its body is read (``_Connection``).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from datamover.stores.bounds import ResponseTooLarge
from datamover.stores.leanhttp import Response, Transport, _Broken, _Connection

if TYPE_CHECKING:
    import ssl


class Sent:
    """A request written and not yet answered: its connection, and whether that was
    kept alive from an earlier request."""

    __slots__ = ("conn", "reused")

    def __init__(self, conn: _Connection, reused: bool) -> None:
        self.conn, self.reused = conn, reused


class LeanPipeline:
    """Up to ``width`` requests in flight to one ``scheme://host:port``, from one
    thread (not thread-safe: one pipeline per thread)."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        *,
        width: int,
        connect_timeout: float,
        read_timeout: float,
        transport: Transport = socket.create_connection,
    ) -> None:
        self.scheme, self.host, self.port, self.tls = scheme, host, port, tls
        self.width = max(1, width)
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._transport = transport
        self._idle: list[_Connection] = []
        self._busy = 0

    def send(self, head: bytes) -> Sent | None:
        """Write a request without a body (``head``: request line and headers, ready
        to send); None when it could not be written (the caller uses its ordinary
        path). Raises ``RuntimeError`` when ``width`` requests are already in flight."""
        if self._busy >= self.width:
            raise RuntimeError(f"over {self.width} requests in flight")
        conn = (
            self._idle.pop()
            if self._idle
            else _Connection(self.scheme, self.host, self.port, self.tls, self._transport)
        )
        self._busy += 1
        try:
            reused = conn.send(
                head, None, connect_timeout=self.connect_timeout, read_timeout=self.read_timeout
            )
        except _Broken:
            self._done(conn)
            return None
        return Sent(conn, reused)

    def receive(self, sent: Sent, *, limit: int) -> Response | None:
        """The answer to ``sent``, its success body read whole (at most ``limit``
        bytes); None on any failure (the connection is then closed)."""
        conn = sent.conn
        try:
            return conn.receive(has_body=True, into=None, limit=limit, reused=sent.reused)
        except (_Broken, ResponseTooLarge):
            return None
        finally:
            self._done(conn)

    def abandon(self, sent: Sent) -> None:
        """Drop a request whose answer will not be read (its connection is closed)."""
        sent.conn.close()
        self._done(sent.conn)

    def _done(self, conn: _Connection) -> None:
        self._busy -= 1
        self._idle.append(conn)

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


__all__ = ["LeanPipeline", "Sent"]
