"""Google Cloud Storage store (``gs://bucket/key``), on google-cloud-storage's JSON API.

Credentials come from Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``,
``gcloud auth application-default login``, the metadata server). When
``STORAGE_EMULATOR_HOST`` is set, or an endpoint is configured, the client talks to that
endpoint with anonymous credentials: that is how the local fake-gcs-server is used.

Lean data path (``lean``): uploads (multipart media upload: resource with its CRC32C
and the bytes in one request), object resources, ranged media GETs (into the caller's
buffer; a small file's read pinned to its listed generation, one request), listings,
compose, deletes and the bucket's existence are sent on ``datamover.stores.leanhttp``
with the connection's endpoint and credentials (a bearer token from google-auth, none
for an anonymous emulator client). Rewrite and bucket administration stay on the SDK.
``DATAMOVER_GCS_LEAN=0`` sends everything through the SDK.

The SDK (google-cloud-storage, google-auth, google-api-core: ~0.45 CPU-s of imports in
every process) is imported on first need, in one place (``sdk``): with anonymous
credentials (an emulator) a copy never imports it; Application Default Credentials
import google-auth and make the SDK client when the store is opened.

Multipart writes: GCS has no S3-style multipart upload on its JSON API (the XML API has
one, but the emulators lack it, and a resumable upload takes its bytes in order only).
So each part is uploaded as its own *temporary object*, in parallel, and ``commit``
concatenates them server-side with ``compose``. Temporary objects live under one
bucket-level prefix, by default ``.datamover-tmp/``::

    .datamover-tmp/<YYYYmmddTHHMMSSZ>-<16 hex>/part-<index:06d>
    .datamover-tmp/<YYYYmmddTHHMMSSZ>-<16 hex>/compose-<level>-<index:06d>

Each part object carries the key it is for in its metadata (``datamover-upload-key``),
so ``list_pending_uploads`` can say which key a leftover upload was writing.

One prefix (rather than parts next to each key) keeps them out of users' directories,
lets ``abort`` find every trace of an upload with one listing, and lets an operator add
one lifecycle rule (``matchesPrefix: [".datamover-tmp/"]``, age 7 days) as the net under
uploads whose process died. The timestamp in the upload id says how old debris is.
``list`` never shows objects under that prefix; user keys starting with it are
reserved. Where IAM only allows writing under some prefix, set
``settings.extra["temp_prefix"]`` to a prefix the credentials may write (it must end in
``/``).

Resume: a writer's ``state()`` is its upload id (and its open-time metadata);
``resume_writer`` reopens it and ``verify_parts`` lists the upload's part objects,
keeping a journaled part only when its object is there with the receipt's size, CRC32C
and ETag (the verified parts are composed with the generation the listing reports).
An upload none of whose parts remain (committed, aborted, cleaned up) is ``NotFound``.

Compose takes at most 32 sources, so more parts are composed in levels: groups of 32
become intermediate temporary objects, which are composed again, until one compose
writes the final key with its metadata. 10,000 parts need three levels.

Integrity: each part is uploaded with its CRC32C in the object resource, so GCS verifies
it on arrival; the CRC32C the server reports back is also compared with ours (the
emulator does not verify). At commit the parts' CRC32Cs are combined (``crc32c_combine``)
into the whole object's CRC32C, and the composite object's CRC32C must equal it.
Composite objects have no md5Hash: their ``checksums`` carry ``crc32c`` only (plus
datamover's own ``datamover-<alg>`` metadata).

Costs and caveats: an upload of up to 8 MiB is one request (the SDK's multipart
upload); above that the SDK uses a resumable session (one request to start it, one PUT
per 100 MiB). A payload that is not ``bytes`` is copied once to ``bytes``, and the SDK
copies it again into the request body. Each part and each intermediate is a billed
Class A operation, and deleting temporaries is one request per object (done in
parallel, ``connections`` at a time). ``abort`` must not race ``write_part``: a part
that lands after abort's listing stays behind (for the lifecycle rule).

fake-gcs-server differs from GCS (tests run on it): it accepts a wrong CRC32C in the
upload resource (the comparison with the reported CRC32C catches that), ignores
generation preconditions on compose and delete, reports an md5Hash for composite
objects, and sends every prefix of a delimited listing on the first page.

Retries: the SDK retries transient failures (429, 5xx, connection errors) with its
exponential backoff up to a bounded deadline (``settings.extra["retry_deadline"]``,
default 60 s); what survives that is mapped to ``TransientError`` for the engine.
Writes here are idempotent in effect (temporary parts have unique names; a repeated
compose or delete gives the same result), so they are retried too, which the SDK does
not do by default without generation preconditions.

What the server sends is bounded, not trusted: the client's ``requests`` session
carries ``datamover.stores.httpbounds.BoundedAdapter`` (a JSON answer read whole, a
listing page say, is at most ``client.max_response_body(page_size)``; an object body
at most the range asked for), downloads land in sinks that refuse bytes past the
caller's buffer or bound (``read_object``: the listed size; ``read`` without a length:
``MAX_WHOLE_READ``), listing pages go through a ``PageGuard`` (no ``pageToken`` named
twice, no endless empty pages, names under the prefix), ``rewrite`` stops when its
token repeats or it stops progressing, and an object resource of the wrong shape is a
``StoreError`` (``metadata.blob_info``).

Modules, lower ones first: ``crc`` (CRC32C combination and its base64 form),
``sdk`` (the SDK's modules, imported on first need), ``errors`` (SDK exceptions to
datamover errors), ``client`` (endpoint, credentials, the SDK client made on first
use, its connection pool), ``metadata`` (blob resources to ``ObjectInfo``), ``lean`` (the data
calls and objects.list without the SDK: ``LeanGCS``), ``listing`` (objects.list page
by page, lean or the SDK's), ``uploads`` (the temporary-object layout and leftover
uploads), ``writer`` (``GCSWriter``), ``sdk_reads`` (downloads through the SDK, when
the lean path is off), ``store`` (``GCSStore``).

The lean path's listing pages are bounded as the SDK's (``client.max_response_body``)
and trimmed with ``fields=`` to what ``blob_info`` reads.
"""

from __future__ import annotations

from datamover.stores.gcs.client import DEFAULT_PROJECT
from datamover.stores.gcs.crc import crc32c_combine
from datamover.stores.gcs.store import DEFAULT_PAGE_SIZE, DEFAULT_RETRY_DEADLINE, GCSStore
from datamover.stores.gcs.uploads import DEFAULT_TEMP_PREFIX, UPLOAD_KEY_METADATA
from datamover.stores.gcs.writer import COMPOSE_MAX_SOURCES, GCSWriter

__all__ = [
    "COMPOSE_MAX_SOURCES",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_PROJECT",
    "DEFAULT_RETRY_DEADLINE",
    "DEFAULT_TEMP_PREFIX",
    "UPLOAD_KEY_METADATA",
    "GCSStore",
    "GCSWriter",
    "crc32c_combine",
]
