"""Bounds on the HTTP answers of the SDKs that talk through ``requests`` (Azure Blob,
GCS): a ``requests`` adapter that reads no more of a response than it can hold.

The SDKs read some bodies whole (a listing page, an object resource, an error
message: ``requests`` reads them before the SDK sees the response) and stream others
(object bytes), and bound neither: a listing body is read to whatever end the server
gives it, and the first answer of an Azure download is read whole even when it holds
more than the range asked for. ``BoundedAdapter`` bounds them before the SDK sees
them, from the request alone (no knowledge of the SDK):

* a body read whole (``stream=False``) may be at most ``max_body`` bytes: a
  ``Content-Length`` over that is refused before any of the body is read, and a
  chunked body as soon as it passes it (``ResponseTooLarge``, not retried);
* an error's body (status 300 and up) is read up to ``MAX_ERROR_BODY`` and cut
  there (its code and message are at the start); the connection is then closed;
* a streamed success answer to a ranged request (``Range`` or ``x-ms-range``:
  ``bytes=FIRST-LAST``) may be at most the range's length: a ``Content-Length`` over
  it is refused before the body is read; a chunked one is read here, up to that
  length, and handed on from memory.

A streamed answer to a request without a closed range is left to the caller, which
in datamover always reads it into a buffer of its own size (``readinto``, or a sink
that refuses more). HEAD answers carry the object's size as their length and no
body: they pass untouched.

Decoding: ``requests`` asks for gzip, so a body read whole may be compressed. It is
decoded here by urllib3, which from 2.6 never decodes more than the bytes asked for
in one read, so ``max_body`` bounds the decoded bytes too.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.response import HTTPResponse

from datamover.stores.bounds import ResponseTooLarge

#: What is kept of an error response's body.
MAX_ERROR_BODY = 1024 * 1024

_RANGE = re.compile(r"bytes=([0-9]{1,19})-([0-9]{1,19})")


def range_length(headers: Mapping[str, Any]) -> int | None:
    """The length of a request's closed byte range (``x-ms-range`` or ``Range``), or
    None when it asks for no closed range."""
    value = headers.get("x-ms-range") or headers.get("Range")
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    match = _RANGE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        return None
    first, last = int(match.group(1)), int(match.group(2))
    return last - first + 1 if last >= first else None


def declared_length(headers: Mapping[str, str]) -> int | None:
    """A response's Content-Length when it is a plain decimal number, else None."""
    value = headers.get("Content-Length")
    if value is None or not (value.isascii() and value.isdigit() and len(value) <= 18):
        return None
    return int(value)


def _where(request: requests.PreparedRequest) -> str:
    # Scheme, host and path only: the query may carry a SAS signature.
    return (request.url or "").split("?", 1)[0][:300]


class BoundedAdapter(HTTPAdapter):
    """``HTTPAdapter`` whose responses are bounded as the module docstring says;
    ``max_body`` is the most a body read whole may hold (a listing page, say)."""

    def __init__(self, *args: Any, max_body: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_body = max_body

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, stream: bool = False, **kwargs: Any
    ) -> requests.Response:
        response = super().send(request, stream=stream, **kwargs)
        try:
            self._bound(request, response, stream)
        except BaseException:
            response.close()
            raise
        return response

    def _bound(
        self, request: requests.PreparedRequest, response: requests.Response, stream: bool
    ) -> None:
        # Failures while reading are raised as requests raises them from a body read
        # (which is where the SDKs expect them), not as urllib3's own.
        try:
            self._check(request, response, stream)
        except urllib3.exceptions.ProtocolError as e:
            raise requests.exceptions.ChunkedEncodingError(e) from e
        except urllib3.exceptions.DecodeError as e:
            raise requests.exceptions.ContentDecodingError(e) from e
        except urllib3.exceptions.ReadTimeoutError as e:
            raise requests.exceptions.ConnectionError(e) from e
        except urllib3.exceptions.SSLError as e:
            raise requests.exceptions.SSLError(e) from e

    def _check(
        self, request: requests.PreparedRequest, response: requests.Response, stream: bool
    ) -> None:
        status = response.status_code
        if request.method == "HEAD" or status in (204, 304) or status < 200:
            return
        declared = declared_length(response.headers)
        if status >= 300:
            self._preread(response, MAX_ERROR_BODY, declared, truncate=True)
        elif not stream:
            if declared is not None and declared > self.max_body:
                raise ResponseTooLarge(
                    f"{_where(request)}: a body of {declared} bytes, over the "
                    f"{self.max_body} accepted",
                    size=declared,
                )
            if not self._preread(response, self.max_body, declared, truncate=False):
                raise ResponseTooLarge(
                    f"{_where(request)}: a body longer than the {self.max_body} bytes accepted"
                )
        else:
            asked = range_length(request.headers)
            if asked is None:
                return
            if declared is not None:
                if declared > asked:
                    raise ResponseTooLarge(
                        f"{_where(request)}: {declared} bytes sent for a range of {asked}",
                        size=declared,
                    )
                return  # urllib3 reads no further than the Content-Length
            raw = response.raw
            data = raw.read(asked + 1, decode_content=False)
            if len(data) > asked:
                raise ResponseTooLarge(
                    f"{_where(request)}: more bytes sent than the range of {asked} asked for"
                )
            response.raw = HTTPResponse(
                body=io.BytesIO(data),
                headers=raw.headers,
                status=raw.status,
                preload_content=False,
                decode_content=raw.decode_content,
            )

    @staticmethod
    def _preread(
        response: requests.Response, limit: int, declared: int | None, *, truncate: bool
    ) -> bool:
        """Read the body now, at most ``limit`` (decoded) bytes, and give it to
        ``requests`` as the response's content. False when there was more: then with
        ``truncate`` the first ``limit`` bytes are kept, and the connection (with the
        rest unread) is closed either way."""
        raw = response.raw
        if declared is not None and declared > limit:
            data = raw.read(limit, decode_content=True)
            complete = False
        else:
            data = raw.read(limit + 1, decode_content=True)
            complete = len(data) <= limit
        if not complete:
            raw.close()
            if not truncate:
                return False
            data = data[:limit]
        response._content = data
        response._content_consumed = True
        return complete


__all__ = ["MAX_ERROR_BODY", "BoundedAdapter", "declared_length", "range_length"]
