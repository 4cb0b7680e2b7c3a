"""Azure Blob Storage store (``az://container/blob``), on a lean request path and
azure-storage-blob.

One ``AzureStore`` is one container; keys are blob names. Objects are block blobs.

**Credentials**, first match wins; secrets are read from the environment only and
never appear in a message or log line:

1. ``AZURE_STORAGE_CONNECTION_STRING``;
2. the account (``StoreSettings.account``, else ``AZURE_STORAGE_ACCOUNT``) with
   ``AZURE_STORAGE_KEY`` or ``AZURE_STORAGE_SAS_TOKEN``;
3. ``DefaultAzureCredential`` (managed identity, ``az login``, ...) when azure-identity
   is installed;
4. otherwise ``ConfigError`` naming the variables to set.

``StoreSettings.endpoint`` replaces the account URL (Azurite, sovereign clouds,
private endpoints); the default is ``https://<account>.blob.core.windows.net``.

**Client tuning.** Reads come off the socket in 1 MiB blocks (the SDK's 4 KiB default
caps a download near 74 MB/s); the requests pool holds ``StoreSettings.connections``
connections so that many worker threads never open and drop sockets; the SDK retries a
request at most 3 times with short backoff (its default waits 15 s first), because the
engine retries parts on top of it (see ``datamover.errors``). ``put`` is always one
Put Blob (up to 5000 MiB), never the SDK's own chunked upload, so the Content-MD5 we
send covers the whole body.

**Metadata names.** Azure metadata names must be C# identifiers, so ``-`` (which our
keys use: ``datamover-sha256``) is stored as ``_`` (``datamover_sha256``) and turned
back into ``-`` when read; names come back lower-cased. A key that is still not an
identifier after that (one starting with a digit, say) is refused with ``UsageError``.
Caveat: a key that itself contains ``_`` reads back with ``-``.

**Integrity.** Every Put Blob and Put Block carries a transactional Content-MD5 taken
from the engine's ``PartDigests`` (so it is computed once), and the service rejects a
body that does not match (``IntegrityError``). A blob written by one Put Blob keeps that
MD5 as its Content-MD5 property, and ``stat``/``list`` report it as the ``md5``
checksum. A block-list commit gets a Content-MD5 property only when the commit metadata
carries ``datamover-md5``; the service stores that value without checking it.

**Multipart writes** stage blocks with ids
``<12 random hex><part index, 8 digits><part MD5, 32 hex>`` (the SDK base64-encodes
them; all ids of one blob have the same length, as Azure requires). The random part is
per upload, so two uploads racing to one key can never mix their blocks: the first
commit wins and the other's commit fails. The commit lists the blocks in part order
with the final metadata.

**Resume.** A writer's ``state()`` is its random id prefix and its open-time metadata.
``resume_writer`` reopens it, and ``verify_parts`` asks Get Block List for the blob's
uncommitted blocks: a journaled part is kept only when a block with its index, its MD5
(from the id; Get Block List reports no checksum) and its size is there. When no
uncommitted block carries the prefix any more (committed, discarded by another
upload's commit, or expired) the upload is ``NotFound``.

**Abort caveat.** Azure has no call that deletes uncommitted blocks. They are invisible
(a blob with only uncommitted blocks does not exist for Get, List or Stat), they are
discarded by the next commit or Put Blob to that name, and the service garbage-collects
them after 7 days; until then they count toward the account's stored bytes. ``abort``
therefore only marks the writer finished. It never deletes the key, since that would
destroy an older committed blob the upload was meant to replace.

**Errors** are mapped in ``map_error``: a missing container is ``BucketNotFound``
(fatal), a missing blob ``NotFound``, rejected credentials ``AuthError``, other 403s
``PermissionDenied``, 429/503 ``Throttled`` (with the Retry-After hint), other 5xx and
network failures ``TransientError``.

**Bounds.** What the service sends is bounded, not trusted: the transport's
``requests`` adapter (``datamover.stores.httpbounds``) reads a body read whole (a List
Blobs page) up to ``client.MAX_RESPONSE_BODY`` and an object body up to the range asked
for, refusing more before it is read (the lean path's List Blobs pages to the same
bound); ``read_object`` asks for at most the listed size + 1; every List Blobs page,
lean or the SDK's, goes through a ``PageGuard`` (``listing``: no ``NextMarker`` named
twice, no endless empty pages, names under the prefix); and whatever the SDK raises on
a malformed answer, ``AzureError`` or not, becomes a ``StoreError``.

**Lean data path** (``lean``): Put Blob, Put Block, Get Blob (ranged, into the
caller's buffer), Get Blob Properties, Delete Blob and List Blobs (its XML parsed in
``listing``: no DTD, ``Encoded`` names decoded as the SDK does) are sent on
``datamover.stores.leanhttp`` (keep-alive socket per thread, bounded bodies) with the
SDK client's credentials: Shared Key signed as the SDK signs, the SAS query appended,
or a bearer token from a token credential (cached until 5 minutes before expiry). Put
Block List (a multipart commit) is lean too. The SDK keeps copies, pending uploads
(and their listing), resume's Get Block List and the container's own calls.
``DATAMOVER_AZURE_LEAN=0`` sends everything through the SDK.

**The SDK is imported on first need** (``sdk``): importing azure-storage-blob costs
~0.4 CPU-s in every process (the coordinator and each ``--processes`` worker). With a
connection string, or an account with a key or a SAS, ``client.plain_target`` gives
the lean path the container URL and credential the SDK's client would use, and the
``BlobServiceClient`` is made only when a call needs it; error mapping asks
``sdk.loaded`` instead of importing the SDK. Other credentials (DefaultAzureCredential,
``UseDevelopmentStorage``) make the SDK's client at the start, as before.

**Modules.** Arrows point one way: ``store`` uses ``client``, ``errors``, ``metadata``,
``listing``, ``writer`` and ``pending``; ``writer`` and ``pending`` use ``errors`` (and
``metadata``, ``listing``); ``fsops`` uses ``store``. None imports the engine, the API,
the CLI or the mount.

- ``sdk``: azure-storage-blob / azure-core, imported on first need;
- ``client``: credentials, endpoint, transport and retries (``make_service_client``,
  ``ServiceClient``), and ``plain_target`` (the lean path's target without the SDK);
- ``errors``: ``map_error`` and Azure's error codes (``status_error`` for the lean path);
- ``lean``: ``LeanAzure``, the data calls without the SDK's pipeline;
- ``headersort``: the Shared Key order of ``x-ms-`` headers (the SDK's comparison);
- ``listing``: List Blobs page by page (lean: ``parse_list_page``), through a
  ``PageGuard``;
- ``metadata``: metadata names, ``ObjectInfo`` from properties, directory markers;
- ``writer``: ``AzureBlockWriter``, block ids, resume;
- ``pending``: finding and clearing uncommitted blocks;
- ``store``: ``AzureStore``;
- ``fsops``: ``AzureFsOps``, the mount's extras, wired here as
  ``AzureStore.fs_ops_class``.
"""

from __future__ import annotations

from datamover.stores.azure.client import (
    ENV_ACCOUNT,
    ENV_CONNECTION_STRING,
    ENV_KEY,
    ENV_SAS,
    make_service_client,
)
from datamover.stores.azure.errors import map_error
from datamover.stores.azure.fsops import AzureFsOps
from datamover.stores.azure.metadata import from_azure_metadata, to_azure_metadata
from datamover.stores.azure.store import DEFAULT_COPY_TIMEOUT, MAX_PAGE_SIZE, AzureStore
from datamover.stores.azure.writer import AzureBlockWriter

AzureStore.fs_ops_class = AzureFsOps

__all__ = [
    "DEFAULT_COPY_TIMEOUT",
    "ENV_ACCOUNT",
    "ENV_CONNECTION_STRING",
    "ENV_KEY",
    "ENV_SAS",
    "MAX_PAGE_SIZE",
    "AzureBlockWriter",
    "AzureFsOps",
    "AzureStore",
    "from_azure_metadata",
    "make_service_client",
    "map_error",
    "to_azure_metadata",
]
