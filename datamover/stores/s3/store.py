"""``S3Store``: the ``Store`` interface over one bucket. Requests go through a
``BucketClient`` (``client.py``: boto3, and the lean path where it can take them);
listings, server-side copies and multipart writes are in ``listing.py``, ``copy.py``
and ``writer.py``. The package docstring explains the backend."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

from datamover.checksums import PartDigests, b64
from datamover.errors import (
    IntegrityError,
    NotFound,
    PermissionDenied,
    StoreError,
    TransientError,
    Unsupported,
)
from datamover.stores import StoreSettings
from datamover.stores.base import (
    PROBE_PAGE,
    Buffer,
    ChunkWriter,
    Features,
    ObjectInfo,
    PendingUpload,
    PipelinedReads,
    Store,
    check_whole_read,
    replaced,
    versions_differ,
    whole_read_limit,
)
from datamover.stores.bounds import ResponseTooLarge
from datamover.stores.conventions import Styles
from datamover.stores.leanhttp import LeanUnavailable
from datamover.stores.leanpipe import PipelinedGets, Whole
from datamover.stores.s3.backslash import backslash_problem
from datamover.stores.s3.checks import Checks, checks_for, remember, returned_checksum
from datamover.stores.s3.client import MAX_OBJECT_SIZE, S3_LIMITS, BucketClient, request_body
from datamover.stores.s3.copy import copy_object
from datamover.stores.s3.errors import error_code, map_error
from datamover.stores.s3.lean import Response
from datamover.stores.s3.listing import list_objects, list_uploads
from datamover.stores.s3.objectinfo import (
    CRC_ALGORITHMS,
    boto_info,
    header_size,
    lean_info,
    put_info,
)
from datamover.stores.s3.writer import S3Writer
from datamover.stores.urls import Location


class S3Store(Store):
    scheme = "s3"
    limits = S3_LIMITS
    features = Features(
        streaming_writes=True,
        marker_metadata=None,
        metadata_at_commit=False,
        resumable_writes=True,
    )

    def __init__(self, bucket: str, settings: StoreSettings, *, page_size: int = 1000) -> None:
        self.bucket = bucket
        self.page_size = page_size
        self._s3 = BucketClient(bucket, settings)
        learnt = settings.extra.get("s3_checks")
        if isinstance(learnt, Mapping):  # a probe another process made (Dask)
            remember(self._s3, Checks(**learnt))
        self._checksum_mode = True
        self._styles = Styles.chosen(
            settings.extra.get("metadata_style"), self.features.metadata_styles
        )

    @classmethod
    def from_location(cls, loc: Location, settings: StoreSettings) -> S3Store:
        return cls(loc.bucket, settings)

    @property
    def client(self) -> Any:
        return self._s3.client

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def endpoint(self) -> str | None:
        return self._s3.endpoint_url

    def place(self, key: str, *, resolve: bool = False) -> str | None:
        # One endpoint's bucket namespace (credentials don't change what a key holds).
        return f"s3+{self._s3.endpoint_url.rstrip('/')}/{self.bucket}/{key}"

    def prepare_writes(self, key: str = "") -> Mapping[str, Any]:
        return {"s3_checks": dataclasses.asdict(checks_for(self._s3, key))}

    def stat(self, key: str) -> ObjectInfo:
        if key == "" or key.endswith("/"):
            raise NotFound(f"{self.url(key)}: not an object", key=key)
        try:
            return self._head(key, self._checksum_mode)
        except PermissionDenied:
            if not self._checksum_mode:
                raise
        # SSE-KMS objects need kms:Decrypt for checksum mode; HEAD as before.
        info = self._head(key, False)
        self._checksum_mode = False
        return info

    def _head(self, key: str, checksum_mode: bool) -> ObjectInfo:
        """HEAD; with ``checksum_mode`` the store also reports its full-object
        checksums (``x-amz-checksum-mode: ENABLED``; stores that don't know it ignore
        it)."""
        s3 = self._s3
        lean = s3.lean_request(
            "HEAD", key, headers={"x-amz-checksum-mode": "ENABLED"} if checksum_mode else None
        )
        if lean is not None:
            if lean.status == 200:
                return lean_info(key, lean, header_size(lean.headers, self.url(key), key))
            error = s3.lean_error(lean, key)
            if isinstance(error, NotFound):
                s3.check_bucket(key)
            elif isinstance(error, PermissionDenied):
                s3.explain_denied(key)
            raise error
        extra = {"ChecksumMode": "ENABLED"} if checksum_mode else {}
        try:
            r = s3.call(key, s3.client.head_object, Key=key, **extra)
        except NotFound:
            s3.check_bucket(key)
            raise
        except PermissionDenied:
            s3.explain_denied(key)
            raise
        return boto_info(key, r, int(r.get("ContentLength") or 0))

    def list(self, prefix: str, *, recursive: bool = True) -> Iterator[ObjectInfo]:
        yield from list_objects(self._s3, prefix, recursive, self.page_size)

    def probe(self, prefix: str) -> None:
        next(iter(list_objects(self._s3, prefix, False, PROBE_PAGE)), None)

    def _get(self, key: str, offset: int, length: int | None, etag: str | None = None) -> Any:
        if length is not None and length <= 0:
            return None
        end = "" if length is None else str(offset + length - 1)
        pin = {"IfMatch": f'"{etag}"'} if etag else {}
        try:
            r = self.client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{end}", **pin
            )
        except Exception as e:
            code = error_code(e)
            if code == "InvalidRange":
                return None  # at or past the end (or an empty object)
            if etag and code in ("PreconditionFailed", "412"):
                raise replaced(self.url(key), key) from None
            raise map_error(e, self.bucket, key) from e
        if versions_differ(etag, r.get("ETag")):
            r["Body"].close()
            raise replaced(self.url(key), key)
        return r

    def _lean_range(
        self,
        key: str,
        offset: int,
        length: int | None,
        into: memoryview | None = None,
        *,
        max_body: int,
        etag: str | None = None,
    ) -> Response | None:
        """A ranged lean GET (of that ``etag`` only, when given: ``replaced`` if the
        object has another); None: boto3 should do it. Raises the mapped error; an
        answer of 416 (at or past the end) comes back as it is."""
        end = "" if length is None else str(offset + length - 1)
        headers = {"range": f"bytes={offset}-{end}"}
        if etag:
            headers["if-match"] = f'"{etag}"'
        r = self._s3.lean_request("GET", key, headers=headers, into=into, max_body=max_body)
        if (
            r is not None
            and etag
            and (
                r.status == 412
                or (r.status in (200, 206) and versions_differ(etag, r.headers.get("etag")))
            )
        ):
            raise replaced(self.url(key), key)
        if r is None or r.status == 206 or r.status == 416:
            return r
        if r.status == 200 and offset == 0:
            return r  # the whole object fit the range
        if r.status == 200:
            raise TransientError(f"{self.url(key)}: server ignored the Range header", key=key)
        raise self._s3.lean_error(r, key)

    def _boto_body(self, key: str, r: Mapping[str, Any], limit: int) -> bytes:
        """The body of a boto3 GetObject answer, at most ``limit`` bytes: more is
        ``ResponseTooLarge``, refused from its Content-Length before it is read."""
        body = r["Body"]
        try:
            declared = r.get("ContentLength")
            if isinstance(declared, int) and declared > limit:
                raise ResponseTooLarge(
                    f"{self.url(key)}: a body of {declared} bytes, over the {limit} accepted",
                    key=key,
                    size=declared,
                )
            data: bytes = body.read(limit + 1)
            if len(data) > limit:
                raise ResponseTooLarge(
                    f"{self.url(key)}: a body longer than the {limit} bytes accepted", key=key
                )
            if isinstance(declared, int) and len(data) < declared:
                raise TransientError(
                    f"{self.url(key)}: body ended after {len(data)} of {declared} bytes", key=key
                )
            return data
        except StoreError:
            raise
        except Exception as e:
            raise map_error(e, self.bucket, key) from e
        finally:
            body.close()

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        if length is not None and length <= 0:
            return b""
        limit = whole_read_limit(None, self.limits.max_single_put) if length is None else length
        try:
            lean = self._lean_range(key, offset, length, max_body=limit)
            if lean is not None:
                return b"" if lean.status == 416 else bytes(lean.body)
            r = self._get(key, offset, length)
            return b"" if r is None else self._boto_body(key, r, limit)
        except ResponseTooLarge as e:
            if length is None and e.size is not None:
                check_whole_read(self.url(key), key, e.size, None, self.limits.max_single_put)
            raise

    def read_object(
        self, key: str, info: ObjectInfo | None = None
    ) -> tuple[bytes | bytearray, ObjectInfo]:
        """One GET: the body and the metadata its headers carry. At most ``info.size``
        bytes (what the listing said, which the caller budgeted for), else
        ``MAX_WHOLE_READ`` (``whole_read_limit``): a larger answer is refused from its
        Content-Length, before any of it is read (``check_whole_read``)."""
        s3 = self._s3
        limit = whole_read_limit(info, self.limits.max_single_put)
        try:
            lean = s3.lean_request("GET", key, max_body=limit)
        except ResponseTooLarge as e:
            if e.size is not None:
                check_whole_read(self.url(key), key, e.size, info, self.limits.max_single_put)
            raise
        if lean is not None:
            if lean.status != 200:
                raise s3.lean_error(lean, key)
            return lean.body, lean_info(key, lean, len(lean.body))
        r = s3.call(key, s3.client.get_object, Key=key)
        try:
            data = self._boto_body(key, r, limit)
        except ResponseTooLarge as e:
            if e.size is not None:
                check_whole_read(self.url(key), key, e.size, info, self.limits.max_single_put)
            raise
        return data, boto_info(key, r, len(data))

    def pipelined_reads(self, width: int) -> PipelinedReads | None:
        """Plain GETs on the lean path; only a 200 is taken (anything else, a redirect
        included, is ``read_object``'s to retry, map or hand to boto3)."""
        s3, lean = self._s3, self._s3.lean
        if lean is None or lean.disabled:
            return None
        single_put = self.limits.max_single_put

        def head(key: str, info: ObjectInfo) -> bytes | None:
            try:
                return lean.get_head(key)
            except LeanUnavailable:
                return None

        def accept(key: str, info: ObjectInfo, r: Response) -> Whole | None:
            if r.status != 200:
                return None
            s3.authenticated = True
            return r.body, lean_info(key, r, len(r.body))

        return PipelinedGets(
            lean.pipeline(width), head, accept, lambda info: whole_read_limit(info, single_put)
        )

    def readinto(
        self, key: str, offset: int, buf: memoryview, *, expect: ObjectInfo | None = None
    ) -> int:
        if len(buf) == 0:
            return 0
        view = buf.cast("B") if buf.format != "B" else buf
        etag = expect.etag if expect is not None else None
        lean = self._lean_range(
            key, offset, view.nbytes, into=view, max_body=view.nbytes, etag=etag
        )
        if lean is not None:
            return 0 if lean.status == 416 else lean.length
        r = self._get(key, offset, len(buf), etag)
        if r is None:
            return 0
        expected = r.get("ContentLength")
        if not isinstance(expected, int) or expected > view.nbytes:
            # No length (chunked), or more than the range: read what fits, refuse more.
            data = self._boto_body(key, r, view.nbytes)
            view[: len(data)] = data
            return len(data)
        raw = r["Body"]._raw_stream  # the urllib3 response
        # urllib3's readinto reads into a new bytes object and copies that into the
        # buffer; the http.client response under it fills the buffer straight from
        # the socket. botocore asks urllib3 not to decode, so the bytes are the same.
        reader = getattr(raw, "_fp", None) or raw
        total = 0
        try:
            while total < expected:
                n = reader.readinto(view[total:expected])
                if not n:
                    break
                total += n
            if reader is not raw and total == expected and reader.isclosed():
                # Body read to its end: hand the connection back to the pool, as
                # urllib3 does itself when its own reads reach the end.
                raw.release_conn()
        except Exception as e:
            raise map_error(e, self.bucket, key) from e
        finally:
            r["Body"].close()
        if total != expected:
            raise TransientError(
                f"{self.url(key)}: body ended after {total} of {expected} bytes", key=key
            )
        return total

    def put(
        self,
        key: str,
        data: Buffer,
        *,
        metadata: Mapping[str, str] | None = None,
        digests: PartDigests | None = None,
    ) -> ObjectInfo:
        s3 = self._s3
        checks = checks_for(s3, key)
        digests = digests or PartDigests(data)
        metadata = self._styles.render(metadata)
        headers = {f"x-amz-meta-{k}": v for k, v in (metadata or {}).items()}
        headers.update(checks.headers(digests))
        view = memoryview(data)
        lean = s3.lean_request(
            "PUT", key, headers=headers, body=view.cast("B") if view.format != "B" else view
        )
        if lean is not None:
            if lean.status != 200:
                raise s3.lean_upload_error(lean, key, signed_payload=checks.signed_payload)
            h = lean.headers
            self._check_returned(key, checks, digests, h)
            return put_info(
                key,
                view.nbytes,
                metadata,
                h.get("etag"),
                h.get("x-amz-version-id"),
                h.get("x-amz-server-side-encryption"),
                verified=checks.verified,
                checked=self._checked(checks, digests),
            )
        body = request_body(data)
        r = s3.upload(
            key,
            s3.client.put_object,
            signed_payload=checks.signed_payload,
            Key=key,
            Body=body,
            Metadata=dict(metadata or {}),
            **checks.boto_args(digests),
        )
        self._check_returned(key, checks, digests, r)
        return put_info(
            key,
            len(body),
            metadata,
            r.get("ETag"),
            r.get("VersionId"),
            r.get("ServerSideEncryption"),
            verified=checks.verified,
            checked=self._checked(checks, digests),
        )

    @staticmethod
    def _checked(checks: Checks, digests: PartDigests) -> dict[str, str]:
        """The whole-object checksum the store verified a PutObject's body against."""
        if checks.verified is None or checks.verified != checks.send:
            return {}
        return {checks.send: digests.get(checks.send).hex()}

    def _check_returned(
        self, key: str, checks: Checks, digests: PartDigests, answer: Mapping[str, Any]
    ) -> None:
        """A checksum the store reports for what it stored that differs from the one
        sent: the store kept other bytes (it didn't check, or it says so)."""
        if checks.send not in CRC_ALGORITHMS:
            return
        returned = returned_checksum(answer, checks.send)
        sent = b64(digests.get(checks.send))
        if returned and returned != sent:
            raise IntegrityError(
                f"{self.url(key)}: stored with {checks.send} {returned}, sent {sent}", key=key
            )

    def open_writer(
        self,
        key: str,
        *,
        size: int,
        part_size: int,
        metadata: Mapping[str, str] | None = None,
    ) -> ChunkWriter:
        if size > MAX_OBJECT_SIZE:
            raise StoreError(f"{self.url(key)}: {size} bytes exceeds S3's 5 TiB limit", key=key)
        meta = self._styles.render(metadata)
        return S3Writer(self._s3, self.limits, key, size, part_size, meta)

    def resume_writer(
        self,
        key: str,
        *,
        size: int,
        part_size: int,
        state: Mapping[str, Any],
        metadata: Mapping[str, str] | None = None,
    ) -> S3Writer:
        upload_id = state.get("upload_id")
        if not isinstance(upload_id, str):
            raise NotFound(f"{self.url(key)}: no upload to resume", key=key)
        initial = state.get("metadata")
        writer = S3Writer(
            self._s3,
            self.limits,
            key,
            size,
            part_size,
            dict(initial if isinstance(initial, dict) else {}),
            upload_id=upload_id,
            checks=S3Writer.checks_from_state(state, checks_for(self._s3, key)),
        )
        writer.verify_parts({})  # NoSuchUpload -> NotFound now, not at the first part
        return writer

    def delete(self, key: str) -> None:
        s3 = self._s3
        lean = s3.lean_request("DELETE", key)
        if lean is not None:
            if not 200 <= lean.status < 300:
                raise s3.lean_error(lean, key)
            return
        s3.call(key, s3.client.delete_object, Key=key)

    def list_pending_uploads(self, prefix: str) -> Iterator[PendingUpload]:
        """ListMultipartUploads under ``prefix``, page by page. ``initiated`` is the
        server's Initiated time; ``size`` is None (it would take a ListParts each)."""
        yield from list_uploads(self._s3, prefix, self.page_size)

    def abort_pending_upload(self, upload: PendingUpload) -> None:
        upload_id = upload.token.get("upload_id")
        if not isinstance(upload_id, str):
            raise ValueError(f"{self.url(upload.key)}: not an S3 upload token")
        self._s3.abort_upload(upload.key, upload_id)

    def refused_key(self, key: str) -> str | None:
        """A key with a backslash where the server stores it as a slash
        (``backslash.py``: SeaweedFS stores ``a\\b`` as ``a/b``, over what is there)."""
        if "\\" not in key:
            return None
        problem = backslash_problem(self._s3, key)
        return None if problem is None else f"{problem}; rename the file (no '\\' in its name)"

    def can_copy_from(self, source: Store) -> bool:
        # One endpoint, one set of credentials: CopyObject works across its buckets.
        return (
            isinstance(source, S3Store)
            and source.client.meta.endpoint_url == self.client.meta.endpoint_url
            and source._s3.identity == self._s3.identity
        )

    def copy_from(
        self,
        source: Store,
        src_key: str,
        dst_key: str,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        if not isinstance(source, S3Store) or not self.can_copy_from(source):
            raise Unsupported(f"no server-side copy from {source.url('')} to {self.url('')}")
        return self.copy_object(src_key, dst_key, metadata=metadata, src_bucket=source.bucket)

    def copy_object(
        self,
        src_key: str,
        dst_key: str,
        *,
        metadata: Mapping[str, str] | None = None,
        size: int | None = None,
        src_bucket: str | None = None,
    ) -> ObjectInfo:
        """Server-side copy: CopyObject up to 5 GiB, UploadPartCopy beyond (``copy.py``
        says what ``verified`` means for a copy)."""
        return copy_object(
            self._s3,
            src_key,
            dst_key,
            metadata=None if metadata is None else self._styles.render(metadata),
            size=size,
            src_bucket=src_bucket,
        )

    def drop_connections(self) -> None:
        self._s3.drop_connections()

    def close(self) -> None:
        self._s3.close()
