"""Direct SDK download of one S3 object, the baseline for reads through a mount.

``python bench/sdk_download.py BUCKET KEY`` downloads with boto3's managed transfer
(16 MiB ranged GETs, 8 threads) into a sink that discards the bytes, so the number
is the SDK's own speed, not the disk's. Endpoint and credentials come from the
standard ``AWS_*`` variables.
"""

from __future__ import annotations

import sys

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config


class NullSink:
    """A seekable file object that throws the bytes away."""

    def __init__(self) -> None:
        self.total = 0
        self._pos = 0

    def write(self, data: bytes) -> int:
        self.total += len(data)
        self._pos += len(data)
        return len(data)

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True


def main() -> int:
    bucket, key = sys.argv[1], sys.argv[2]
    client = boto3.client(
        "s3",
        config=Config(
            s3={"addressing_style": "path"},
            max_pool_connections=16,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )
    size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
    sink = NullSink()
    config = TransferConfig(
        multipart_threshold=16 * 1024 * 1024,
        multipart_chunksize=16 * 1024 * 1024,
        max_concurrency=8,
    )
    client.download_fileobj(bucket, key, sink, Config=config)
    if sink.total != size:
        print(f"got {sink.total} bytes, expected {size}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
