"""S3 and S3-compatible stores (AWS, Ceph RGW, MinIO, SeaweedFS, moto) over boto3.

Endpoint: ``StoreSettings.endpoint``, else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``
(which botocore also reads); any custom endpoint gets path-style addressing, which every
S3-compatible server accepts. Credentials and region come from the standard chain
(env, profile, SSO, instance role); ``StoreSettings.profile`` picks a profile.

Integrity in flight: every part and every small put carries ``x-amz-checksum-crc32c``
computed by the engine from the source bytes, so the server rejects bytes that changed
on the way (SeaweedFS and AWS enforce it; moto does not). botocore's own automatic
checksums are switched to ``when_required`` so nothing is hashed twice.

The whole-object digest can only be known after the last part is read, but S3 takes
metadata when a multipart upload is *created*. So a multipart object is completed with
the POSIX metadata known up front, then copied onto itself server-side with the final
metadata (``MetadataDirective=REPLACE``, guarded by ``CopySourceIfMatch`` on the
completed ETag so a concurrent writer's object is never relabelled). The object is
complete and correct from ``CompleteMultipartUpload`` on; the digest metadata follows a
moment later. If that copy fails, the object stays without the digest metadata and the
manifest still has the digest.

What a server sends is bounded, not trusted: the lean path allocates no more than the
caller's buffer or bound on the word of a ``Content-Length`` (``lean.py``), listings
are checked page by page and can't loop (``listing.py``, ``datamover.stores.bounds``),
and the GetObject bodies read through boto3 are capped the same way (``store.py``).
``docs/SECURITY.md`` lists the bounds.

The modules, each importing only those above it:

==================  ==================================================================
``lean.py``         the lean signed HTTP/1.1 path for single-request object operations
``errors.py``       S3 error codes and botocore exceptions as datamover errors
``objectinfo.py``   ``ObjectInfo`` from HEAD/GET, listing and PUT answers; timestamps
``client.py``       ``BucketClient``: endpoint, credentials, the boto3 client, the lean
                    path beside it, mapped calls; S3's part limits
``listing.py``      ListObjectsV2 (lean XML or boto3) and ListMultipartUploads paging
``copy.py``         server-side copy: CopyObject, or UploadPartCopy beyond 5 GiB
``writer.py``       ``S3Writer``: one multipart upload, resumable
``store.py``        ``S3Store``, the ``Store`` interface over the above
``fsops.py``        ``S3FsOps``, the mount's specialisations
==================  ==================================================================
"""

from __future__ import annotations

from datamover.stores.s3.client import MAX_OBJECT_SIZE, S3_LIMITS
from datamover.stores.s3.errors import classify_error, map_error
from datamover.stores.s3.fsops import S3FsOps
from datamover.stores.s3.store import S3Store
from datamover.stores.s3.writer import S3Writer

# Here, not in store.py: fsops.py imports S3Store, so store.py can't import it.
S3Store.fs_ops_class = S3FsOps

__all__ = [
    "MAX_OBJECT_SIZE",
    "S3_LIMITS",
    "S3FsOps",
    "S3Store",
    "S3Writer",
    "classify_error",
    "map_error",
]
