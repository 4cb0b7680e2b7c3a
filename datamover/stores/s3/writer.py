"""Multipart uploads: ``S3Writer`` writes, resumes (``verify_parts``), commits and
aborts one. Parts carry CRC32C checksums the server verifies; the digest metadata known
only at commit follows by a server-side copy of the object onto itself (the package
docstring says why)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from datamover.checksums import PartDigests, b64, unb64
from datamover.errors import IntegrityError, StoreError, Unsupported
from datamover.stores.base import Buffer, ObjectInfo, PartLimits, PartReceipt
from datamover.stores.s3.client import BucketClient, request_body
from datamover.stores.s3.copy import copy_object

#: S3's part numbers run from 1 to this.
MAX_PART_NUMBER = 10_000


class S3Writer:
    """One multipart upload. Parts carry CRC32C checksums the server verifies."""

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
        if upload_id is not None:
            self.upload_id = upload_id
            return
        r = s3.call(
            key,
            s3.client.create_multipart_upload,
            Key=key,
            Metadata=metadata,
            ChecksumAlgorithm="CRC32C",
        )
        self.upload_id = r["UploadId"]

    def state(self) -> dict[str, Any]:
        return {"upload_id": self.upload_id, "metadata": self._initial_metadata}

    def verify_parts(self, claimed: Mapping[int, PartReceipt]) -> set[int]:
        """ListParts, and keep the claimed parts whose ETag and size the server agrees
        with; those become this writer's parts as if written now. The server's part
        list is checked as it comes: part numbers within S3's 1..10,000 and rising
        from page to page (so the paging ends, and at most one entry per part is
        held), each with an ETag and a size; else ``StoreError``."""
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
                    self._parts[index] = receipt
        return valid

    def write_part(self, index: int, data: Buffer, digests: PartDigests) -> PartReceipt:
        crc = b64(digests.get("crc32c"))
        body = request_body(data)
        r = self.s3.call(
            self.key,
            self.s3.client.upload_part,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=index + 1,
            Body=body,
            ChecksumCRC32C=crc,
        )
        returned = r.get("ChecksumCRC32C")
        if returned and unb64(returned) != unb64(crc):
            raise IntegrityError(
                f"{self.s3.url(self.key)}: part {index + 1} stored with CRC32C {returned}, "
                f"sent {crc}",
                key=self.key,
            )
        receipt = PartReceipt(index, len(body), r["ETag"], crc)
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
        r = self.s3.call(
            self.key,
            self.s3.client.complete_multipart_upload,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={
                "Parts": [
                    {"PartNumber": p.index + 1, "ETag": p.etag, "ChecksumCRC32C": p.checksum}
                    for p in parts
                ]
            },
        )
        self._closed = True
        etag = r.get("ETag", "").strip('"') or None
        info = ObjectInfo(
            key=self.key,
            size=self.size,
            etag=etag,
            version=r.get("VersionId"),
            metadata=dict(self._initial_metadata),
        )
        # commit's metadata is merged over open_writer's (the ChunkWriter contract).
        final = {**self._initial_metadata, **metadata}
        if final != self._initial_metadata:
            try:
                info = copy_object(
                    self.s3, self.key, self.key, metadata=final, if_match=etag, size=self.size
                )
            except Unsupported:
                pass
        return info

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.s3.abort_upload(self.key, self.upload_id)
