"""S3 and S3-compatible stores (AWS, Ceph RGW, MinIO, SeaweedFS, moto) over boto3.

Endpoint: ``StoreSettings.endpoint``, else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``
(which botocore also reads); any custom endpoint gets path-style addressing, which every
S3-compatible server accepts. Credentials and region come from the standard chain
(env, profile, SSO, instance role); ``StoreSettings.profile`` picks a profile.
boto3/botocore are imported only when a call needs them (``sdk.py``): with a custom
endpoint, keys from a remote or ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (no
profile named, no expiry) and a region known without botocore (the setting,
``AWS_DEFAULT_REGION``, or no config file), the lean path does single PUTs, GETs, HEADs,
deletes, listings and the checksum probe without them (~0.3 CPU-s less per process);
anything else goes through botocore's chain, and a multipart upload's create and
complete, copies and the other rare calls import boto3 when they come. A multipart
upload's parts (UploadPart) go over the lean path whenever it is on, whoever found
the credentials: botocore's signer copies every body it signs, a second part-sized
buffer per part in flight outside ``--memory-budget`` (peak RSS of a 1 GiB upload,
8 parts of 16 MiB in flight: 447 MiB through botocore, 191 MiB lean).

Integrity in flight (``checks.py``): every PutObject and UploadPart carries the check
this endpoint really makes, learnt once per process by a probe that writes no object
(a multipart upload with a deliberately wrong checksum on one part, then aborted;
``checks.py`` says why not a probe PUT): CRC64NVME where the store checks it (AWS,
SeaweedFS; multipart uploads then carry a ``FULL_OBJECT`` CRC64NVME the store compares
at completion, combined from the parts' CRCs), else CRC32C, else, over plain http, the
SigV4-signed payload SHA-256 both request paths already send (Ceph RGW 16 checks it,
and ignores CRC headers), else Content-MD5 (RGW over https). ``--s3-checksum`` (remote
option ``s3_checksum``) forces one, or ``off``. Every write says which check covered
its bytes (``verified``), None where the store checks none (moto, which echoes what
it is sent). A store that refuses a signed payload answers SignatureDoesNotMatch;
for an upload, after the probe has shown the credentials good, that is an
``IntegrityError`` (retried), not a fatal ``AuthError``. botocore's own automatic
checksums are switched to ``when_required`` so nothing is hashed twice.

One write per object: S3 takes metadata when a multipart upload is *created*, and
CompleteMultipartUpload takes none, so ``Features.metadata_at_commit`` is False and
``S3Writer.commit`` stores nothing beyond ``open_writer``'s metadata (commit's extra
keys are dropped with a debug log; ``base.ChunkWriter.commit``). It used to copy the
object onto itself with the digest: a second version on versioned buckets, a refusal
under Object Lock and on stores that refuse self-copy, a second full write of the
bytes, and on RGW (empty ETag from the completion, CopySourceIfMatch ignored) a race
that could label another writer's object. Nothing relies on the completion's ETag
(RGW 16 sends none; the writer takes HEAD's only when it is the composite of its own
parts) or on copy preconditions (RGW 16 ignores them).

HEAD asks for checksums (``x-amz-checksum-mode: ENABLED``; dropped for the store if
it gets AccessDenied, as SSE-KMS objects without kms:Decrypt do), so ``stat`` reports
a full-object CRC as a provider checksum; composite (``…-N``) values never are.

What a server sends is bounded, not trusted: the lean path allocates no more than the
caller's buffer or bound on the word of a ``Content-Length`` (``lean.py``), listings
are checked page by page and can't loop (``listing.py``, ``datamover.stores.bounds``),
and the GetObject bodies read through boto3 are capped the same way (``store.py``).
``docs/SECURITY.md`` lists the bounds.

The modules, each importing only those above it:

==================  ==================================================================
``sdk.py``          boto3/botocore, imported on first need
``lean.py``         the lean signed HTTP/1.1 path for single-request object operations
``errors.py``       S3 error codes and botocore exceptions as datamover errors
``objectinfo.py``   ``ObjectInfo`` from HEAD/GET, listing and PUT answers; timestamps
``client.py``       ``BucketClient``: endpoint, credentials, the boto3 client, the lean
                    path beside it, mapped calls; S3's part limits
``checks.py``       what the endpoint checks (the probe), how writes carry it
``probes.py``       the probe's upload keys (their owner) and the sweep of killed ones
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
