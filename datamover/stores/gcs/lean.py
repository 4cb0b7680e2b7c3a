"""A lean request path for GCS's data calls (JSON API): multipart media upload, the
object resource, ranged media GET, delete, compose, objects.list and whether the
bucket exists.

google-cloud-storage spends ~1.5 ms of client CPU per request (google-resumable-media,
requests, retry wrappers, the blob model) and reads downloads through several copies.
For the calls that carry one object's bytes this module builds the request itself on
``leanhttp`` (one keep-alive connection per thread, a download received straight into
the caller's buffer, every response bounded: a resource by ``MAX_RESOURCE``, an error
by ``MAX_ERROR_BODY``) and authorizes it with the SDK client's credentials: none for an
anonymous client (emulators), else ``Authorization: Bearer`` from the google-auth
credentials, refreshed by google-auth under a lock when they are no longer valid (and
the quota project header when the credentials name one).

The endpoint is the SDK client's (``client.py``: ``settings.endpoint``,
``STORAGE_EMULATOR_HOST`` or storage.googleapis.com). Listings are lean too
(``list_page``: ``objects.list`` with ``fields=`` trimming each entry to what a listing
reads; ``store._pages`` pages and guards them as it does the SDK's), and so are the
compose of a multipart upload's parts and the temporaries' cleanup: with anonymous
credentials a copy needs no SDK at all (``sdk.py``). Rewrite and bucket administration
stay on the SDK.
``DATAMOVER_GCS_LEAN=0`` turns the lean path off; a proxy, a client without a plain
endpoint or metadata that is not plain text make it unavailable (``LeanUnavailable``).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from datamover.checksums import PartDigests
from datamover.errors import IntegrityError, SourceChanged, StoreError
from datamover.stores.base import ObjectInfo, check_whole_read, replaced, versions_differ
from datamover.stores.bounds import ResponseTooLarge
from datamover.stores.gcs import sdk
from datamover.stores.gcs.client import max_response_body
from datamover.stores.gcs.crc import crc_from_b64
from datamover.stores.gcs.errors import refresh_error, status_error
from datamover.stores.gcs.metadata import blob_info
from datamover.stores.leanhttp import LeanHTTP, LeanUnavailable, Response, quote_param
from datamover.stores.leanpipe import LeanPipeline, PipelinedGets, Whole

#: The most an object resource (JSON, user metadata up to 8 KiB) may hold.
MAX_RESOURCE = 1024 * 1024
#: What a listing asks for of each object: what ``blob_info`` (and the pending
#: uploads' listing: ``timeCreated``) reads, nothing more.
LIST_FIELDS = (
    "items(name,size,generation,etag,crc32c,md5Hash,metadata,updated,timeCreated),"
    "prefixes,nextPageToken"
)


def lean_enabled() -> bool:
    value = os.environ.get("DATAMOVER_GCS_LEAN", "1").strip().lower()
    return value not in ("0", "false", "no")


def _crc(data: Any) -> int:
    return int.from_bytes(PartDigests(data).get("crc32c"), "big")


def _hash_crc(headers: Mapping[str, str]) -> int | None:
    """The CRC32C in an ``x-goog-hash`` header (``crc32c=...,md5=...``), if any."""
    for part in headers.get("x-goog-hash", "").split(","):
        name, sep, value = part.strip().partition("=")
        if sep and name == "crc32c":
            return crc_from_b64(value)
    return None


class Resource:
    """An object resource (the JSON API's dict) with the attributes ``blob_info`` and
    the writer read of an SDK blob; a value of the wrong type raises ``ValueError`` or
    ``TypeError`` there, as the SDK's properties do."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    @property
    def name(self) -> Any:
        return self._data.get("name")

    @property
    def size(self) -> int | None:
        value = self._data.get("size")
        return None if value is None else int(value)

    @property
    def generation(self) -> int | None:
        value = self._data.get("generation")
        return None if value is None else int(value)

    @property
    def etag(self) -> Any:
        return self._data.get("etag")

    @property
    def crc32c(self) -> Any:
        return self._data.get("crc32c")

    @property
    def md5_hash(self) -> Any:
        return self._data.get("md5Hash")

    @property
    def metadata(self) -> Any:
        return self._data.get("metadata")

    @property
    def updated(self) -> datetime | None:
        return self._time("updated")

    @property
    def time_created(self) -> datetime | None:
        return self._time("timeCreated")

    def _time(self, name: str) -> datetime | None:
        value = self._data.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise TypeError(f"{name} is not text")
        return datetime.fromisoformat(value.replace("Z", "+00:00"))


class LeanGCS:
    """Data calls on one bucket; thread-safe (one connection per thread)."""

    def __init__(self, client: Any, bucket: str, bucket_is_there: Callable[[], bool]) -> None:
        """``client``: the SDK client or a ``client.Connection`` (its ``api_endpoint``
        and ``_credentials``, None or ``AnonymousCredentials`` for none)."""
        endpoint = str(getattr(client, "api_endpoint", "") or "").rstrip("/")
        if not endpoint:
            raise LeanUnavailable("no endpoint")
        self.bucket = bucket
        self._credentials: Any = getattr(client, "_credentials", None)
        self._anonymous = self._credentials is None or type(self._credentials).__name__ == (
            "AnonymousCredentials"
        )
        self._bucket_is_there = bucket_is_there
        ca = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None
        self.http = LeanHTTP(endpoint, ca_bundle=ca)
        base = endpoint.split("://", 1)[1]
        path = base[base.find("/") :] if "/" in base else ""
        self._object_base = f"{path}/storage/v1/b/{quote_param(bucket)}/o"
        self._upload_path = f"{path}/upload/storage/v1/b/{quote_param(bucket)}/o"
        self._lock = threading.Lock()
        self._request: Any = None

    def close(self) -> None:
        self.http.close()

    def _authorize(
        self, method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str]
    ) -> str:
        if self._anonymous:
            return ""
        creds = self._credentials
        if not creds.valid:
            with self._lock:
                if not creds.valid:
                    if self._request is None:  # google-auth: only with real credentials
                        self._request = sdk.auth().transport.requests.Request()
                    try:
                        creds.refresh(self._request)
                    except Exception as e:
                        raise refresh_error(e, self.bucket) from None
        headers["authorization"] = f"Bearer {creds.token}"
        quota = getattr(creds, "quota_project_id", None)
        if quota:
            headers["x-goog-user-project"] = str(quota)
        return ""

    def _where(self, key: str) -> str:
        return f"gs://{self.bucket}/{key}"

    def _call(
        self,
        method: str,
        path: str,
        key: str,
        *,
        query: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
        into: memoryview | None = None,
        max_body: int = MAX_RESOURCE,
    ) -> Response:
        return self.http.request(
            method,
            path,
            where=self._where(key),
            key=key,
            query=query,
            headers=headers,
            body=body,
            into=into,
            max_body=max_body,
            authorize=self._authorize,
            retry_status=lambda r: r.status == 408,
        )

    def error(self, response: Response, key: str | None, *, missing: str = "object") -> StoreError:
        """The mapped error of a failed response (reason from the JSON error);
        ``missing`` as in ``errors.status_error``."""
        reason, message = "", ""
        try:
            doc = json.loads(bytes(response.body[:65536]))
            err = doc.get("error", {}) if isinstance(doc, dict) else {}
            message = str(err.get("message", ""))[:1000]
            errors = err.get("errors") or []
            if errors and isinstance(errors[0], dict):
                reason = str(errors[0].get("reason", ""))[:100]
        except (ValueError, AttributeError, TypeError):
            message = bytes(response.body[:1000]).decode("utf-8", "replace")
        text = f"{response.status} {reason}" if reason else str(response.status)
        retry = response.headers.get("retry-after", "")
        return status_error(
            response.status,
            text,
            message,
            float(retry) if retry.isdigit() else None,
            key=key,
            bucket=self.bucket,
            bucket_is_there=self._bucket_is_there,
            missing=missing,
        )

    def _resource(self, response: Response, key: str) -> Resource:
        try:
            data = json.loads(bytes(response.body))
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise StoreError(
                f"{self._where(key)}: the server sent a malformed object resource", key=key
            )
        return Resource(data)

    def _object_path(self, key: str) -> str:
        return f"{self._object_base}/{quote_param(key)}"

    # --- the data calls -----------------------------------------------------------

    def stat(self, key: str) -> Resource:
        """The object resource (``objects.get``)."""
        response = self._call("GET", self._object_path(key), key)
        if response.status != 200:
            raise self.error(response, key)
        return self._resource(response, key)

    def get(
        self,
        key: str,
        offset: int,
        length: int | None,
        *,
        into: memoryview | None = None,
        max_body: int,
        generation: int | None = None,
    ) -> Response:
        """The media of ``key`` from ``offset`` (``length`` None: to the end). A 416
        (range past the end) and a 412 (``generation`` no longer current) are
        returned, not raised."""
        headers: dict[str, str] = {}
        if length is not None:
            headers["range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            headers["range"] = f"bytes={offset}-"
        query = [("alt", "media")]
        if generation is not None:
            query.append(("ifGenerationMatch", str(generation)))
        response = self._call(
            "GET",
            self._object_path(key),
            key,
            query=query,
            headers=headers,
            into=into,
            max_body=max_body,
        )
        if response.status in (200, 206, 412, 416):
            return response
        raise self.error(response, key)

    def get_head(self, key: str, length: int, generation: int) -> bytes:
        """The head of ``get(key, 0, length, generation=...)`` (for a
        ``LeanPipeline``)."""
        return self.http.get_head(
            self._object_path(key),
            query=[("alt", "media"), ("ifGenerationMatch", str(generation))],
            headers={"range": f"bytes=0-{length - 1}"},
            authorize=self._authorize,
        )

    def pipelined(self, width: int, single_put: int) -> PipelinedGets:
        """``Store.pipelined_reads``: ``read_object``'s one request (the listed
        generation's bytes), taken only when ``checked_media`` takes it."""

        def head(key: str, info: ObjectInfo) -> bytes | None:
            generation = info.version or ""
            if not (0 < info.size <= single_put and generation.isdigit()):
                return None
            return self.get_head(key, info.size, int(generation))

        def accept(key: str, info: ObjectInfo, r: Response) -> Whole | None:
            return self.checked_media(info, r)

        return PipelinedGets(LeanPipeline.over(self.http, width), head, accept, lambda i: i.size)

    def checked_media(self, info: ObjectInfo, response: Response) -> Whole | None:
        """The answer to ``get_head``'s GET as ``read_object``'s one request takes it:
        all of ``info.size`` bytes whose CRC32C is the one GCS sends (else the
        listing's); None otherwise."""
        body = response.body
        if response.status not in (200, 206) or len(body) != info.size:
            return None
        expected = _hash_crc(response.headers)
        if expected is None and "crc32c" in info.provider_checksums:
            expected = int(info.provider_checksums["crc32c"], 16)
        if expected is None or expected != _crc(body):
            return None
        return body, info

    def upload(
        self,
        key: str,
        payload: Any,
        crc32c_b64: str,
        content_type: str,
        metadata: Mapping[str, str] | None,
    ) -> Resource:
        """A multipart media upload: the resource (name, CRC32C for GCS to check,
        content type, metadata) and the bytes in one request; returns the resource."""
        resource: dict[str, Any] = {"name": key, "crc32c": crc32c_b64, "contentType": content_type}
        if metadata:
            resource["metadata"] = dict(metadata)
        boundary = "dm" + secrets.token_hex(12)
        head = (
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
            + json.dumps(resource)
            + f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\n\r\n"
        ).encode("utf-8")
        # Sent as three buffers (one gathering write): the payload is not copied.
        body = (head, payload, f"\r\n--{boundary}--\r\n".encode("ascii"))
        response = self._call(
            "POST",
            self._upload_path,
            key,
            query=[("uploadType", "multipart")],
            headers={"content-type": f"multipart/related; boundary={boundary}"},
            body=body,
        )
        if response.status != 200:
            raise self.error(response, key)
        return self._resource(response, key)

    def list_page(
        self, prefix: str, delimiter: str | None, token: str | None, page_size: int
    ) -> tuple[list[Resource], list[Any], str | None]:
        """One ``objects.list`` page, trimmed to the fields a listing reads
        (``LIST_FIELDS``), its body at most ``max_list_body(page_size)`` bytes: the
        objects, the prefixes and the next page's token (None on the last). A 404 is
        the bucket's; a body that is not an objects list is a ``StoreError``."""
        query = [("maxResults", str(page_size)), ("fields", LIST_FIELDS)]
        if prefix:
            query.append(("prefix", prefix))
        if delimiter:
            query.append(("delimiter", delimiter))
        if token:
            query.append(("pageToken", token))
        response = self._call(
            "GET",
            self._object_base,
            prefix,
            query=query,
            max_body=max_response_body(page_size),
        )
        if response.status != 200:
            raise self.error(response, prefix or None, missing="bucket")
        try:
            doc = json.loads(bytes(response.body))
        except ValueError:
            doc = None
        items = doc.get("items", []) if isinstance(doc, dict) else None
        prefixes = doc.get("prefixes", []) if isinstance(doc, dict) else None
        following = doc.get("nextPageToken") if isinstance(doc, dict) else None
        if (
            not isinstance(items, list)
            or not isinstance(prefixes, list)
            or not all(isinstance(item, dict) for item in items)
            or not isinstance(following, str | None)
        ):
            raise StoreError(
                f"{self._where(prefix)}: the server sent a malformed listing", key=prefix
            )
        return [Resource(item) for item in items], prefixes, following or None

    def compose(
        self,
        key: str,
        sources: Sequence[tuple[str, int]],
        content_type: str,
        metadata: Mapping[str, str] | None,
    ) -> Resource:
        """``objects.compose`` of ``sources`` (name, generation; each pinned with
        ``ifGenerationMatch``, as the SDK's ``if_source_generation_match``) into
        ``key`` with ``content_type`` and ``metadata``; returns the new resource."""
        # What the SDK's compose sends: the destination's properties, not its name.
        destination: dict[str, Any] = {"contentType": content_type}
        if metadata:
            destination["metadata"] = dict(metadata)
        request = {
            "sourceObjects": [
                {"name": n, "generation": g, "objectPreconditions": {"ifGenerationMatch": g}}
                for n, g in sources
            ],
            "destination": destination,
        }
        response = self._call(
            "POST",
            f"{self._object_path(key)}/compose",
            key,
            headers={"content-type": "application/json; charset=UTF-8"},
            body=json.dumps(request).encode("utf-8"),
        )
        if response.status != 200:
            raise self.error(response, key)
        return self._resource(response, key)

    def bucket_exists(self) -> bool:
        """Whether the bucket exists (``buckets.get``): a 404 says no, any other
        failure raises (the caller can't tell)."""
        response = self._call(
            "GET", self._object_base[: -len("/o")], "", query=[("fields", "name")]
        )
        if response.status == 200:
            return True
        if response.status == 404:
            return False
        raise self.error(response, None, missing="bucket")

    def delete(self, key: str, generation: int | None = None) -> Response:
        """``objects.delete`` (of that ``generation`` only, when given); the response,
        a failure mapped by the caller (a missing object may be fine)."""
        query = [("ifGenerationMatch", str(generation))] if generation is not None else None
        return self._call("DELETE", self._object_path(key), key, query=query)

    # --- what the store asks ----------------------------------------------------------

    def read(self, key: str, offset: int, length: int | None, limit: int) -> bytes:
        """``Store.read``: a whole read is checked against the CRC32C GCS reports."""
        got = self.get(key, offset, length, max_body=limit)
        if got.status == 416:
            return b""
        data = bytes(got.body)
        if offset == 0 and length is None:
            expected = _hash_crc(got.headers)
            if expected is not None and expected != _crc(data):
                raise IntegrityError(
                    f"{self._where(key)}: downloaded bytes failed their checksum", key=key
                )
        return data

    def read_object(
        self, key: str, info: ObjectInfo | None, single_put: int
    ) -> tuple[bytes | bytearray, ObjectInfo]:
        """``Store.read_object``: the resource, then its bytes pinned to that generation
        (``ifGenerationMatch``) into a buffer of the resource's size, checked against
        its CRC32C; an object replaced in between is read again (three times, then
        ``SourceChanged``). With a listing's ``info`` naming a generation, one
        request: the bytes of that generation, checked against the CRC32C GCS sends
        (else the listing's), and the listing's info; a newer generation falls back
        to the above."""
        if info is not None and info.size > 0 and (info.version or "").isdigit():
            check_whole_read(self._where(key), key, info.size, info, single_put)
            data = bytearray(info.size)
            response = self.get(
                key,
                0,
                info.size,
                into=memoryview(data),
                max_body=info.size,
                generation=int(info.version or 0),
            )
            if response.length == info.size:
                response.body = data
                checked = self.checked_media(info, response)
                if checked is not None:
                    return checked
        for _ in range(3):
            resource = self.stat(key)
            got = blob_info(resource, key)
            check_whole_read(self._where(key), key, got.size, info, single_put)
            data = bytearray(got.size)
            if not got.size:
                return data, got
            response = self.get(
                key,
                0,
                got.size,
                into=memoryview(data),
                max_body=got.size,
                generation=resource.generation,
            )
            if response.status in (412, 416):
                continue
            expected = crc_from_b64(resource.crc32c)
            if response.length == got.size and expected in (None, _crc(data)):
                return data, got
        raise SourceChanged(f"{self._where(key)}: replaced while being read", key=key)

    def readinto(
        self, key: str, offset: int, view: memoryview, generation: int | None = None
    ) -> int:
        """``Store.readinto``; of that ``generation`` only, when given."""
        try:
            got = self.get(
                key, offset, len(view), into=view, max_body=len(view), generation=generation
            )
        except ResponseTooLarge as e:
            raise ResponseTooLarge(
                f"{self._where(key)}: the server answered with {e.size} bytes "
                f"for a range of {len(view)}",
                key=key,
                size=e.size,
            ) from None
        if generation is not None and (
            got.status == 412
            or versions_differ(str(generation), got.headers.get("x-goog-generation"))
        ):
            raise replaced(self._where(key), key)
        if got.status == 412:
            raise self.error(got, key)
        return 0 if got.status == 416 else got.length


__all__ = ["LeanGCS", "LeanUnavailable", "Resource", "lean_enabled"]
