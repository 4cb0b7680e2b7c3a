"""Server-side copies on one endpoint: CopyObject up to 5 GiB; beyond, UploadPartCopy
in 1 GiB parts (larger when 10,000 would not hold the object), eight at a time, the
upload aborted on any failure. Either is one write of the destination, with its
metadata given at the copy.

No precondition is sent: Ceph RGW 16 ignores ``CopySourceIfMatch`` and
``CopySourceIfNoneMatch``, and nothing here relies on one. Instead the result says
what it knows: ``verified`` names a checksum the store reports for the copy that
equals the one it reported for the source when it was looked up (a full-object CRC,
or a plain MD5 ETag), so a source replaced in between shows as ``verified = None``
(and a different ``etag``/size) rather than passing silently."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from datamover.stores.base import GiB, ObjectInfo, digests_from_metadata
from datamover.stores.s3.client import S3_LIMITS, BucketClient
from datamover.stores.s3.errors import map_error
from datamover.stores.s3.objectinfo import CRC_ALGORITHMS, boto_info, provider_checksums


def copy_object(
    s3: BucketClient,
    src_key: str,
    dst_key: str,
    *,
    metadata: Mapping[str, str] | None = None,
    size: int | None = None,
    src_bucket: str | None = None,
) -> ObjectInfo:
    """Server-side copy: CopyObject up to 5 GiB, UploadPartCopy beyond."""
    src_bucket = src_bucket or s3.bucket
    source_info: ObjectInfo | None = None
    if size is None:
        head = (
            s3.call(src_key, s3.client.head_object, Key=src_key, ChecksumMode="ENABLED")
            if (src_bucket == s3.bucket)
            else _head_other(s3, src_bucket, src_key)
        )
        size = int(head["ContentLength"])
        source_info = boto_info(src_key, head, size)
    extra: dict[str, Any] = {}
    if metadata is not None:
        extra["Metadata"] = dict(metadata)
        extra["MetadataDirective"] = "REPLACE"
    source = {"Bucket": src_bucket, "Key": src_key}
    if size <= S3_LIMITS.max_single_put:
        r = s3.call(dst_key, s3.client.copy_object, Key=dst_key, CopySource=source, **extra)
        result = r.get("CopyObjectResult", {})
        etag = result.get("ETag", "").strip('"') or None
        copied = provider_checksums(
            etag,
            r.get("ServerSideEncryption"),
            {alg: result.get(f"Checksum{alg.upper()}") for alg in CRC_ALGORITHMS},
            result.get("ChecksumType"),
        )
        meta = (
            dict(metadata)
            if metadata is not None
            else dict(source_info.metadata if source_info else {})
        )
        return ObjectInfo(
            key=dst_key,
            size=size,
            etag=etag,
            version=r.get("VersionId"),
            metadata=meta,
            checksums={**digests_from_metadata(meta), **copied},
            provider_checksums=copied,
            verified=_same(source_info, copied),
        )
    return _multipart_copy(s3, source, dst_key, size, metadata)


def _same(source: ObjectInfo | None, copied: Mapping[str, str]) -> str | None:
    """The provider checksum the copy and its source share, by preference."""
    if source is None:
        return None
    for alg in (*CRC_ALGORITHMS, "md5"):
        if alg in copied and source.provider_checksums.get(alg) == copied[alg]:
            return alg
    return None


def _head_other(s3: BucketClient, bucket: str, key: str) -> Any:
    try:
        return s3.client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except Exception as e:
        raise map_error(e, bucket, key) from e


def _multipart_copy(
    s3: BucketClient,
    source: dict[str, str],
    dst_key: str,
    size: int,
    metadata: Mapping[str, str] | None,
) -> ObjectInfo:
    if metadata is None:
        metadata = _head_other(s3, source["Bucket"], source["Key"]).get("Metadata", {})
    part_size = S3_LIMITS.choose_part_size(size, 1 * GiB)
    mpu = s3.call(dst_key, s3.client.create_multipart_upload, Key=dst_key, Metadata=dict(metadata))
    upload_id = mpu["UploadId"]

    def copy_part(n: int) -> dict[str, Any]:
        start = n * part_size
        end = min(size, start + part_size) - 1
        r = s3.call(
            dst_key,
            s3.client.upload_part_copy,
            Key=dst_key,
            UploadId=upload_id,
            PartNumber=n + 1,
            CopySource=source,
            CopySourceRange=f"bytes={start}-{end}",
        )
        return {"PartNumber": n + 1, "ETag": r["CopyPartResult"]["ETag"]}

    try:
        count = -(-size // part_size)
        with ThreadPoolExecutor(max_workers=8) as pool:
            parts = list(pool.map(copy_part, range(count)))
        r = s3.call(
            dst_key,
            s3.client.complete_multipart_upload,
            Key=dst_key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )
    except BaseException:
        s3.abort_upload(dst_key, upload_id)
        raise
    return ObjectInfo(
        key=dst_key,
        size=size,
        etag=r.get("ETag", "").strip('"') or None,
        version=r.get("VersionId"),
        metadata=dict(metadata),
    )
