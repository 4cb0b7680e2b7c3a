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

import random
import socket
import ssl
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from datamover.errors import TransientError
from datamover.stores.bounds import ResponseTooLarge
from datamover.stores.s3.lean import (
    ATTEMPTS,
    MAX_ERROR_BODY,
    LeanUnavailable,
    Response,
    Transport,
    _Broken,
    _close_all,
    _Connection,
    _Malformed,
    _proxied,
)

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
        """One request (``path`` already percent-encoded, ``query`` raw pairs), retried
        as the module docstring says. Returns the final response whatever its status;
        raises ``TransientError`` when every attempt failed on the connection and
        ``ResponseTooLarge`` when a success body is over ``into``/``max_body``."""
        pairs = list(query or [])
        size = 0 if body is None else memoryview(body).nbytes
        extra = dict(headers or {})
        for name, value in extra.items():
            if not value.isascii() or "\n" in value or "\r" in value:
                raise LeanUnavailable(f"header {name} is not plain ASCII")
        failure: BaseException | None = None
        for attempt in range(ATTEMPTS):
            if attempt:
                self._sleep(min(20.0, random.random() * (2**attempt) * 0.5))
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
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            try:
                response = self._exchange(self._conn(), method, head, body, into, max_body)
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
    "Authorize",
    "LeanHTTP",
    "LeanUnavailable",
    "Response",
    "content_range_total",
    "quote_param",
    "quote_path",
]
