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

from collections.abc import Callable

from datamover.stores.base import ObjectInfo
from datamover.stores.bounds import ResponseTooLarge
from datamover.stores.leanhttp import ConnectionPool, LeanHTTP, Response, _Broken, _Connection


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
        self, pool: ConnectionPool, *, width: int, connect_timeout: float, read_timeout: float
    ) -> None:
        """Connections to where ``pool`` connects (its TLS set-up and transport), but
        this pipeline's own."""
        self.pool = pool
        self.width = max(1, width)
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._idle: list[_Connection] = []
        self._all: list[_Connection] = []  # at most ``width``: closed by ``close``
        self._busy = 0

    @classmethod
    def over(cls, http: LeanHTTP, width: int) -> LeanPipeline:
        """A pipeline to ``http``'s endpoint, with its timeouts."""
        return cls(
            http.pool,
            width=width,
            connect_timeout=http.connect_timeout,
            read_timeout=http.read_timeout,
        )

    def send(self, head: bytes) -> Sent | None:
        """Write a request without a body (``head``: request line and headers, ready
        to send); None when it could not be written (the caller uses its ordinary
        path). Raises ``RuntimeError`` when ``width`` requests are already in flight."""
        if self._busy >= self.width:
            raise RuntimeError(f"over {self.width} requests in flight")
        if self._idle:
            conn = self._idle.pop()
        else:
            conn = self.pool.new_connection()
            self._all.append(conn)
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
        """Close every connection, idle or with an answer not read (a caller that
        stopped on an error)."""
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._idle.clear()


#: (key, listed info) -> the head of its GET, or None (read it the ordinary way).
HeadFor = Callable[[str, ObjectInfo], bytes | None]
#: The body and info ``read_object`` would return.
Whole = tuple[bytes | bytearray, ObjectInfo]
#: (key, listed info, answer) -> what ``read_object`` would return, or None.
Accept = Callable[[str, ObjectInfo, Response], Whole | None]


class _Started:
    __slots__ = ("info", "key", "sent")

    def __init__(self, key: str, info: ObjectInfo, sent: Sent) -> None:
        self.key, self.info, self.sent = key, info, sent


class PipelinedGets:
    """``stores.base.PipelinedReads`` over a ``LeanPipeline``: each backend gives the
    request of an object (``head``), what to make of an answer (``accept``) and the
    most an answer's body may hold (``limit``, from the listed info)."""

    def __init__(
        self,
        pipe: LeanPipeline,
        head: HeadFor,
        accept: Accept,
        limit: Callable[[ObjectInfo], int],
    ) -> None:
        self.pipe, self._head, self._accept, self._limit = pipe, head, accept, limit

    def start(self, key: str, info: ObjectInfo) -> object | None:
        head = self._head(key, info)
        if head is None:
            return None
        sent = self.pipe.send(head)
        return None if sent is None else _Started(key, info, sent)

    def finish(self, started: object) -> Whole | None:
        assert isinstance(started, _Started)
        r = self.pipe.receive(started.sent, limit=self._limit(started.info))
        return None if r is None else self._accept(started.key, started.info, r)

    def abandon(self, started: object) -> None:
        assert isinstance(started, _Started)
        self.pipe.abandon(started.sent)

    def close(self) -> None:
        self.pipe.close()


__all__ = ["Accept", "HeadFor", "LeanPipeline", "PipelinedGets", "Sent", "Whole"]
