"""Server-side copies on one endpoint: CopyObject up to 5 GiB; beyond, UploadPartCopy
in 1 GiB parts (larger when 10,000 would not hold the object), eight at a time, the
upload aborted on any failure."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from datamover.stores.base import GiB, ObjectInfo
from datamover.stores.s3.client import S3_LIMITS, BucketClient
from datamover.stores.s3.errors import map_error


def copy_object(
    s3: BucketClient,
    src_key: str,
    dst_key: str,
    *,
    metadata: Mapping[str, str] | None = None,
    if_match: str | None = None,
    size: int | None = None,
    src_bucket: str | None = None,
) -> ObjectInfo:
    """Server-side copy: CopyObject up to 5 GiB, UploadPartCopy beyond."""
    src_bucket = src_bucket or s3.bucket
    if size is None:
        head = (
            s3.call(src_key, s3.client.head_object, Key=src_key)
            if (src_bucket == s3.bucket)
            else _head_other(s3, src_bucket, src_key)
        )
        size = int(head["ContentLength"])
    extra: dict[str, Any] = {}
    if metadata is not None:
        extra["Metadata"] = dict(metadata)
        extra["MetadataDirective"] = "REPLACE"
    if if_match:
        extra["CopySourceIfMatch"] = f'"{if_match}"'
    source = {"Bucket": src_bucket, "Key": src_key}
    if size <= S3_LIMITS.max_single_put:
        r = s3.call(dst_key, s3.client.copy_object, Key=dst_key, CopySource=source, **extra)
        etag = r.get("CopyObjectResult", {}).get("ETag", "").strip('"') or None
        return ObjectInfo(
            key=dst_key,
            size=size,
            etag=etag,
            version=r.get("VersionId"),
            metadata=dict(metadata or {}),
        )
    return _multipart_copy(s3, source, dst_key, size, metadata, if_match)


def _head_other(s3: BucketClient, bucket: str, key: str) -> Any:
    try:
        return s3.client.head_object(Bucket=bucket, Key=key)
    except Exception as e:
        raise map_error(e, bucket, key) from e


def _multipart_copy(
    s3: BucketClient,
    source: dict[str, str],
    dst_key: str,
    size: int,
    metadata: Mapping[str, str] | None,
    if_match: str | None,
) -> ObjectInfo:
    if metadata is None:
        metadata = _head_other(s3, source["Bucket"], source["Key"]).get("Metadata", {})
    part_size = S3_LIMITS.choose_part_size(size, 1 * GiB)
    mpu = s3.call(dst_key, s3.client.create_multipart_upload, Key=dst_key, Metadata=dict(metadata))
    upload_id = mpu["UploadId"]
    cond = {"CopySourceIfMatch": f'"{if_match}"'} if if_match else {}

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
            **cond,
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
