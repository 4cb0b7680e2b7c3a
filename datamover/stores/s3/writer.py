"""Multipart uploads: ``S3Writer`` writes, resumes (``verify_parts``), commits and
aborts one. Each part carries the check the endpoint enforces (``checks.py``); the
completion is the object's one and only write: S3 takes metadata when an upload is
created, and ``commit`` never copies the object onto itself to add more (the package
docstring says why).

What a commit is verified by: the check every part was verified by, since
CompleteMultipartUpload can only assemble the parts it names by the ETag the store
returned for each verified part (a part whose ETag differs is refused, InvalidPart).
With a ``FULL_OBJECT`` CRC the completion also carries the whole object's CRC,
combined from the parts' CRCs, and the store compares it with what it assembled.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from typing import Any

from datamover.checksums import PartDigests, b64, crc_combine, unb64
from datamover.errors import IntegrityError, StoreError
from datamover.stores.base import Buffer, ObjectInfo, PartLimits, PartReceipt, parts_verified
from datamover.stores.s3.checks import Checks, checks_for, returned_checksum
from datamover.stores.s3.client import BucketClient, request_body
from datamover.stores.s3.objectinfo import boto_info, put_info

log = logging.getLogger(__name__)


def composite_etag(etags: list[str]) -> str | None:
    """The ETag S3 (and RGW, SeaweedFS, moto) gives a multipart object: the MD5 of
    the parts' binary MD5 ETags, then ``-N``. None when a part's ETag is not an MD5."""
    raw = b""
    for etag in etags:
        tag = etag.strip('"')
        if len(tag) != 32 or "-" in tag:
            return None
        try:
            raw += bytes.fromhex(tag)
        except ValueError:
            return None
    return f"{hashlib.md5(raw).hexdigest()}-{len(etags)}"


#: S3's part numbers run from 1 to this.
MAX_PART_NUMBER = 10_000


class S3Writer:
    """One multipart upload, sent the way ``checks`` says (resumed: the way it was
    started, from its ``state``)."""

    def __init__(
        self,
        s3: BucketClient,
        limits: PartLimits,
        key: str,
        size: int,
        part_size: int,
        metadata: dict[str, str],
        *,
        upload_id: str | None = None,
        checks: Checks | None = None,
    ) -> None:
        limits.check_part_size(part_size) if size > part_size else None
        if -(-size // part_size) > limits.max_parts:
            raise StoreError(
                f"{s3.url(key)}: {size} bytes in {part_size}-byte parts exceeds "
                f"{limits.max_parts} parts; use a larger part size",
                key=key,
            )
        self.s3 = s3
        self.key = key
        self.size = size
        self.part_size = part_size
        self._initial_metadata = metadata
        self._parts: dict[int, PartReceipt] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.checks = checks or checks_for(s3, key)
        if upload_id is not None:
            self.upload_id = upload_id
            return
        r = s3.call(
            key,
            s3.client.create_multipart_upload,
            Key=key,
            Metadata=metadata,
            **self.checks.create_args(),
        )
        self.upload_id = r["UploadId"]

    def state(self) -> dict[str, Any]:
        return {
            "upload_id": self.upload_id,
            "metadata": self._initial_metadata,
            "checks": self.checks.to_state(),
        }

    @staticmethod
    def checks_from_state(state: Mapping[str, Any], current: Checks) -> Checks:
        """How a resumed upload is sent: as it was started (parts must carry the
        upload's checksum algorithm); what that is verified by is what the store
        enforces now. A state from before checks were recorded: CRC32C parts."""
        saved = state.get("checks")
        if not isinstance(saved, Mapping):
            saved = {"send": "crc32c", "full_object": False}
        send = saved.get("send")
        send = send if send in ("crc64nvme", "crc32c", "md5") else None
        if send == current.send or current.verified == "sha256-payload":
            verified = current.verified
        else:
            verified = None
        return Checks(send, verified, bool(saved.get("full_object")), current.signed_payload)

    def verify_parts(self, claimed: Mapping[int, PartReceipt]) -> set[int]:
        """ListParts, and keep the claimed parts whose ETag and size the server agrees
        with; those become this writer's parts as if written now (verified by what
        this upload's parts are verified by: the store accepted them that way). The
        server's part list is checked as it comes: part numbers within S3's 1..10,000
        and rising from page to page (so the paging ends, and at most one entry per
        part is held), each with an ETag and a size; else ``StoreError``."""
        held: dict[int, tuple[str, int]] = {}
        marker = 0
        where = self.s3.url(self.key)
        while True:
            r = self.s3.call(
                self.key,
                self.s3.client.list_parts,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumberMarker=marker,
            )
            for p in r.get("Parts") or ():
                number, etag, size = p.get("PartNumber"), p.get("ETag"), p.get("Size")
                if (
                    type(number) is not int
                    or not marker < number <= MAX_PART_NUMBER
                    or not isinstance(etag, str)
                    or type(size) is not int
                ):
                    raise StoreError(
                        f"{where}: the server listed a bad part ({number!r:.20}) after "
                        f"part {marker}",
                        key=self.key,
                    )
                held[number - 1] = (etag, size)
            if not r.get("IsTruncated"):
                break
            following = r.get("NextPartNumberMarker")
            if type(following) is not int or not marker < following <= MAX_PART_NUMBER:
                raise StoreError(
                    f"{where}: the server's part listing did not move on from part {marker} "
                    f"(next marker {following!r:.20}); a server bug",
                    key=self.key,
                )
            marker = following
        valid = set()
        for index, receipt in claimed.items():
            p = held.get(index)
            if p and p[0].strip('"') == (receipt.etag or "").strip('"') and p[1] == receipt.size:
                valid.add(index)
                with self._lock:
                    self._parts[index] = PartReceipt(
                        index, receipt.size, receipt.etag, receipt.checksum, self.checks.verified
                    )
        return valid

    def write_part(self, index: int, data: Buffer, digests: PartDigests) -> PartReceipt:
        """UploadPart: over the lean path where it can (the part buffer is sent as it
        is), else boto3. botocore's signer copies every body it signs (awscrt's
        ``BytesIO(body)``), a second part-sized buffer per part in flight, outside
        ``--memory-budget``."""
        checks = self.checks
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        lean = self.s3.lean_request(
            "PUT",
            self.key,
            headers=checks.headers(digests),
            body=view,
            query={"partNumber": str(index + 1), "uploadId": self.upload_id},
        )
        answer: Mapping[str, Any]
        if lean is not None:
            if lean.status != 200:
                raise self.s3.lean_upload_error(
                    lean, self.key, signed_payload=checks.signed_payload
                )
            answer, size = lean.headers, view.nbytes
            etag = answer.get("etag")
        else:
            body = request_body(data)
            answer = self.s3.upload(
                self.key,
                self.s3.client.upload_part,
                signed_payload=checks.signed_payload,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=index + 1,
                Body=body,
                **checks.boto_args(digests),
            )
            size, etag = len(body), answer.get("ETag")
        if not etag:
            raise StoreError(
                f"{self.s3.url(self.key)}: part {index + 1} accepted without an ETag; "
                "the upload can't be completed",
                key=self.key,
            )
        sent = checks.digest(digests)
        if checks.send in ("crc64nvme", "crc32c") and sent is not None:
            returned = returned_checksum(answer, checks.send)
            if returned and unb64(returned) != sent:
                raise IntegrityError(
                    f"{self.s3.url(self.key)}: part {index + 1} stored with "
                    f"{checks.send} {returned}, sent {b64(sent)}",
                    key=self.key,
                )
        receipt = PartReceipt(
            index,
            size,
            str(etag),
            b64(sent) if sent is not None else None,
            checks.verified,
        )
        with self._lock:
            self._parts[index] = receipt
        return receipt

    def commit(self, metadata: Mapping[str, str]) -> ObjectInfo:
        with self._lock:
            parts = [self._parts[i] for i in sorted(self._parts)]
        expected = -(-self.size // self.part_size)
        if len(parts) != expected:
            raise StoreError(
                f"{self.s3.url(self.key)}: commit with {len(parts)} of {expected} parts",
                key=self.key,
            )
        dropped = sorted(k for k, v in metadata.items() if self._initial_metadata.get(k) != v)
        if dropped:
            # The ChunkWriter contract: S3 can't take metadata at completion, and a
            # second write (a self-copy) is what this store never does.
            log.debug(
                "%s: metadata %s not stored: S3 takes metadata when an upload starts",
                self.s3.url(self.key),
                ", ".join(dropped),
            )
        checks = self.checks
        alg = checks.send if checks.send in ("crc64nvme", "crc32c") else None
        name = f"Checksum{alg.upper()}" if alg else ""
        listed: list[dict[str, Any]] = []
        for p in parts:
            entry: dict[str, Any] = {"PartNumber": p.index + 1, "ETag": p.etag}
            if alg and p.checksum:
                entry[name] = p.checksum
            listed.append(entry)
        extra: dict[str, Any] = {}
        whole: bytes | None = None
        if alg and checks.full_object and all(p.checksum for p in parts):
            whole = unb64(parts[0].checksum or "")
            for p in parts[1:]:
                whole = crc_combine(alg, whole, unb64(p.checksum or ""), p.size)
            extra = {name: b64(whole), "ChecksumType": "FULL_OBJECT"}
        r = self.s3.call(
            self.key,
            self.s3.client.complete_multipart_upload,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": listed},
            **extra,
        )
        self._closed = True
        verified = parts_verified(parts)
        checked: dict[str, str] = {}
        if whole is not None and alg is not None:
            returned = returned_checksum(r, alg)
            if returned and unb64(returned) != whole:
                raise IntegrityError(
                    f"{self.s3.url(self.key)}: completed with {alg} {returned}, the parts "
                    f"add up to {b64(whole)}",
                    key=self.key,
                )
            if verified == alg:
                checked[alg] = whole.hex()
        etag = r.get("ETag", "").strip('"') or None
        version = r.get("VersionId")
        if etag is None:
            etag, version = self._etag_after_complete(parts, version)
        return put_info(
            self.key,
            self.size,
            self._initial_metadata,
            etag,
            version,
            r.get("ServerSideEncryption"),
            verified=verified,
            checked=checked,
        )

    def _etag_after_complete(
        self, parts: list[PartReceipt], version: str | None
    ) -> tuple[str | None, str | None]:
        """Ceph RGW 16 answers CompleteMultipartUpload with an empty ETag. HEAD shows
        it; it is taken only when it is the one these parts make (another writer may
        have replaced the object already). Nothing else relies on it."""
        expected = composite_etag([p.etag or "" for p in parts])
        if expected is None:
            return None, version
        try:
            head = self.s3.call(self.key, self.s3.client.head_object, Key=self.key)
        except StoreError as e:
            log.debug("%s: no ETag after completion: %s", self.s3.url(self.key), e)
            return None, version
        info = boto_info(self.key, head, int(head["ContentLength"]))
        if info.etag != expected:
            return None, version
        return info.etag, version or info.version

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.s3.abort_upload(self.key, self.upload_id)
