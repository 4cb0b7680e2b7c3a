"""A lean request path for Azure Blob's data calls: Put Blob, Put Block, Get Blob
(ranged), Get Blob Properties, Delete Blob and List Blobs.

azure-storage-blob spends 2-3 ms of client CPU on every request (a pipeline of policies,
response models, logging hooks): more than a whole small file costs rclone. For the
calls that carry one blob's bytes this module builds the request itself on
``leanhttp`` (one keep-alive connection per thread, the body received straight into the
caller's buffer, every response bounded) and authorizes it the way the SDK would:

- Shared Key: the SDK's string-to-sign (x-ms-date, x-ms-version and every other
  ``x-ms-`` header in the service's order, the canonical resource and query), HMAC-
  SHA256 with the decoded account key, which is decoded once;
- SAS: the SDK client's SAS query appended to every request (never shown: messages
  name ``az://container/key`` only);
- a token credential (azure-identity): a bearer token for the storage scope, cached
  until five minutes before it expires.

The container URL and credentials are a ``client.LeanTarget``: worked out without the
SDK for a connection string, account key or SAS (``client.plain_target``), else the
SDK client's. List Blobs is lean too (``list_page``; the XML is parsed in
``listing.py``), and so is Put Block List (``put_block_list``); anything else (copies,
pending uploads' listings, Get Block List, the container's own calls) stays on the
SDK. ``DATAMOVER_AZURE_LEAN=0`` turns the lean path
off; a credential it doesn't know, a proxy or a non-ASCII metadata value makes the
store use the SDK for that call (``LeanUnavailable``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time
from collections.abc import Mapping
from email.utils import formatdate
from typing import Any
from urllib.parse import urlsplit

from datamover.errors import NotFound, StoreError
from datamover.stores.azure.client import MAX_RESPONSE_BODY, LeanTarget
from datamover.stores.azure.errors import retry_after, status_error
from datamover.stores.azure.headersort import header_order
from datamover.stores.azure.metadata import headers_info
from datamover.stores.base import ObjectInfo
from datamover.stores.leanhttp import (
    LeanHTTP,
    LeanUnavailable,
    Response,
    content_length,
    content_range_total,
    quote_path,
)
from datamover.stores.leanpipe import LeanPipeline, PipelinedGets, Whole

#: A List Blobs page's body: what the SDK path allows (``client.MAX_RESPONSE_BODY``).
MAX_LIST_BODY = MAX_RESPONSE_BODY
#: The OAuth scope of Azure Storage (what the SDK asks a token credential for).
STORAGE_SCOPE = "https://storage.azure.com/.default"
_SIGNED = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
)


def lean_enabled() -> bool:
    value = os.environ.get("DATAMOVER_AZURE_LEAN", "1").strip().lower()
    return value not in ("0", "false", "no")


class LeanAzure:
    """Data calls on one container; thread-safe (one connection per thread)."""

    def __init__(self, target: LeanTarget, container: str) -> None:
        parts = urlsplit(target.url)
        self.container = container
        self._sas = parts.query
        self._path = parts.path.rstrip("/")
        self._version = target.api_version
        self._key: bytes | None = None
        self._account = ""
        self._token_credential: Any = None
        if self._sas:
            pass
        elif target.key is not None:
            self._account = target.account
            self._key = base64.b64decode(target.key)
        elif target.token_credential is not None:
            self._token_credential = target.token_credential
        else:
            raise LeanUnavailable("credential kind")
        ca = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None
        self.http = LeanHTTP(f"{parts.scheme}://{parts.netloc}", ca_bundle=ca)
        self._orders: dict[tuple[str, ...], list[str]] = {}
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()
        self._date: tuple[int, str] = (0, "")

    def close(self) -> None:
        self.http.close()

    def _now(self) -> str:
        second = int(time.time())
        cached = self._date
        if cached[0] == second:
            return cached[1]
        value = formatdate(second, usegmt=True)
        self._date = (second, value)
        return value

    def _bearer(self) -> str:
        with self._lock:
            if self._token is None or self._token[1] - 300 < time.time():
                token = self._token_credential.get_token(STORAGE_SCOPE)
                self._token = (str(token.token), float(token.expires_on))
            return self._token[0]

    def _authorize(
        self, method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str]
    ) -> str:
        headers["x-ms-date"] = self._now()
        headers["x-ms-version"] = self._version
        if self._sas:
            return "&" + self._sas
        if self._token_credential is not None:
            headers["authorization"] = f"Bearer {self._bearer()}"
            return ""
        assert self._key is not None
        names = tuple(n for n in headers if n.startswith("x-ms-"))
        order = self._orders.get(names)
        if order is None:
            order = header_order(names)
            if len(self._orders) > 256:
                self._orders.clear()
            self._orders[names] = order
        standard = [headers.get(n, "") for n in _SIGNED]
        if standard[2] == "0":
            standard[2] = ""
        text = "\n".join(
            (
                method,
                *standard,
                "",  # Range: the SDK (and this path) sends x-ms-range instead
                "".join(f"{n}:{headers[n]}\n" for n in order) + f"/{self._account}{path}",
            )
        )
        if query:
            text += "".join(f"\n{k.lower()}:{v}" for k, v in sorted(query))
        digest = hmac.digest(self._key, text.encode("utf-8"), hashlib.sha256)
        headers["authorization"] = (
            f"SharedKey {self._account}:{base64.b64encode(digest).decode('ascii')}"
        )
        return ""

    def _where(self, key: str) -> str:
        return f"az://{self.container}/{key}"

    def _blob_path(self, key: str) -> str:
        return f"{self._path}/{quote_path(key)}"

    def call(
        self,
        method: str,
        key: str,
        *,
        query: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
        into: memoryview | None = None,
        max_body: int = 1024 * 1024,
    ) -> Response:
        """One request on blob ``key``; the response whatever its status (see
        ``error``)."""
        sent = dict(headers or {})
        size = 0 if body is None else memoryview(body).nbytes
        if method in ("PUT", "POST") or size:
            sent["content-length"] = str(size)
        return self.http.request(
            method,
            self._blob_path(key),
            where=self._where(key),
            key=key,
            query=query,
            headers=sent,
            body=body,
            into=into,
            max_body=max_body,
            authorize=self._authorize,
        )

    def error(self, response: Response, key: str | None) -> StoreError:
        """The mapped error of a failed response (code from ``x-ms-error-code``)."""
        headers = response.headers
        text = bytes(response.body[:4096]).decode("utf-8", "replace")
        return status_error(
            response.status,
            headers.get("x-ms-error-code", ""),
            text,
            retry_after(headers),
            container=self.container,
            key=key,
        )

    # --- the data calls -----------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo:
        """Get Blob Properties (HEAD)."""
        response = self.call("HEAD", key)
        if response.status == 403:
            # A HEAD's error has no body, and Azurite tells a bad signature from a
            # denial only there: ask with a one-byte GET for the words.
            probe = self.call("GET", key, headers={"x-ms-range": "bytes=0-0"}, max_body=1)
            if probe.status >= 300:
                raise self.error(probe, key)
        if response.status != 200:
            raise self.error(response, key)
        try:
            size = content_length(response.headers)
        except Exception:
            raise StoreError(f"{self._where(key)}: a response without a size", key=key) from None
        return headers_info(key, size, response.headers, whole=True)

    def get(
        self,
        key: str,
        offset: int,
        length: int | None,
        *,
        into: memoryview | None = None,
        max_body: int,
        etag: str | None = None,
    ) -> Response:
        """Get Blob of ``length`` bytes from ``offset`` (``length`` None: to the end;
        no range at all from 0), of that ``etag`` only when given (a 412 is then
        ``PreconditionFailed``). A 416 (range past the end) is returned, not raised."""
        headers: dict[str, str] = {}
        if etag:
            headers["if-match"] = f'"{etag}"'
        if length is not None:
            headers["x-ms-range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            headers["x-ms-range"] = f"bytes={offset}-"
        response = self.call("GET", key, headers=headers, into=into, max_body=max_body)
        if response.status in (200, 206, 416):
            return response
        raise self.error(response, key)

    def get_head(self, key: str, length: int) -> bytes:
        """The head of a Get Blob of the first ``length`` bytes, as ``get`` sends it
        (for a ``LeanPipeline``)."""
        return self.http.get_head(
            self._blob_path(key),
            query=[],
            headers={"x-ms-range": f"bytes=0-{length - 1}"},
            authorize=self._authorize,
        )

    def pipelined(self, width: int, single_put: int) -> PipelinedGets:
        """``Store.pipelined_reads``: ``read_object``'s ranged Get Blob of the listed
        size and one byte more; taken only when the whole blob came back at its
        listed size (else ``read_object`` reads it again and says why)."""

        def head(key: str, info: ObjectInfo) -> bytes | None:
            return self.get_head(key, info.size + 1) if 0 < info.size <= single_put else None

        def accept(key: str, info: ObjectInfo, r: Response) -> Whole | None:
            body = r.body
            total = content_range_total(r.headers) if r.status == 206 else None
            if r.status == 200:
                total = len(body)
            if total is None or total != len(body) or total != info.size:
                return None
            if info.etag and r.headers.get("etag", "").strip('"') == info.etag:
                return body, info  # the blob the listing described (as read_object)
            return body, headers_info(key, total, r.headers, whole=r.status == 200)

        pipe = LeanPipeline.over(self.http, width)
        return PipelinedGets(pipe, head, accept, lambda i: i.size + 1)

    def put_blob(
        self,
        key: str,
        body: Any,
        md5: bytes,
        azure_metadata: Mapping[str, str],
        metadata: Mapping[str, str],
    ) -> ObjectInfo:
        """Put Blob of a whole block blob, checked by the service against ``md5``."""
        headers = {
            "content-md5": base64.b64encode(md5).decode("ascii"),
            "content-type": "application/octet-stream",
            "x-ms-blob-type": "BlockBlob",
            **meta_headers(azure_metadata),
        }
        response = self.call("PUT", key, headers=headers, body=body)
        if response.status != 201:
            raise self.error(response, key)
        size = memoryview(body).nbytes
        return headers_info(
            key,
            size,
            response.headers,
            whole=False,
            verified="md5",
            stored_md5=md5,
            metadata=metadata,
        )

    def put_block(self, key: str, raw_id: str, body: Any, md5: bytes) -> None:
        """Put Block, checked by the service against ``md5``."""
        headers = {"content-md5": base64.b64encode(md5).decode("ascii")}
        query = [("blockid", block_id(raw_id)), ("comp", "block")]
        response = self.call("PUT", key, query=query, headers=headers, body=body)
        if response.status != 201:
            raise self.error(response, key)

    def put_block_list(
        self,
        key: str,
        raw_ids: list[str],
        blob_md5: bytes | None,
        azure_metadata: Mapping[str, str],
    ) -> Response:
        """Put Block List committing ``raw_ids`` (block ids before base64) from the
        "latest" list, with the blob's metadata and, when given, its Content-MD5
        property (stored as given: the service does not check it). Returns the 201
        response; a failure raises mapped."""
        body = (
            "<?xml version='1.0' encoding='utf-8'?>\n<BlockList>"
            + "".join(f"<Latest>{block_id(raw)}</Latest>" for raw in raw_ids)
            + "</BlockList>"
        ).encode("ascii")
        headers = {"content-type": "application/xml; charset=utf-8", **meta_headers(azure_metadata)}
        if blob_md5 is not None:
            headers["x-ms-blob-content-md5"] = base64.b64encode(blob_md5).decode("ascii")
        response = self.call("PUT", key, query=[("comp", "blocklist")], headers=headers, body=body)
        if response.status != 201:
            raise self.error(response, key)
        return response

    def list_page(
        self, prefix: str, delimiter: str | None, marker: str | None, max_results: int
    ) -> bytes | bytearray:
        """One List Blobs page (metadata included) as the service's XML, at most
        ``MAX_LIST_BODY`` bytes; a failure mapped (a missing container:
        ``BucketNotFound``)."""
        query = [("comp", "list"), ("include", "metadata"), ("restype", "container")]
        query.append(("maxresults", str(max_results)))
        if prefix:
            query.append(("prefix", prefix))
        if delimiter:
            query.append(("delimiter", delimiter))
        if marker:
            query.append(("marker", marker))
        response = self.http.request(
            "GET",
            self._path,
            where=self._where(prefix),
            key=prefix,
            query=query,
            max_body=MAX_LIST_BODY,
            authorize=self._authorize,
        )
        if response.status != 200:
            raise self.error(response, prefix or None)
        return response.body

    def delete(self, key: str) -> None:
        """Delete Blob with its snapshots; a missing blob is fine."""
        response = self.call("DELETE", key, headers={"x-ms-delete-snapshots": "include"})
        if response.status not in (202, 200):
            error = self.error(response, key)
            if not isinstance(error, NotFound):
                raise error


def meta_headers(metadata: Mapping[str, str]) -> dict[str, str]:
    """Azure metadata (names already valid identifiers) as request headers."""
    return {f"x-ms-meta-{name}": value for name, value in metadata.items()}


def block_id(raw: str) -> str:
    """A block id as the SDK sends it: base64 of the id text."""
    return base64.b64encode(raw.encode("ascii")).decode("ascii")


__all__ = ["LeanAzure", "LeanUnavailable", "block_id", "lean_enabled", "meta_headers"]
