"""Azure Blob Storage store (``az://container/blob``), on azure-storage-blob.

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
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import IO, Any, cast
from urllib.parse import urlsplit

import requests
from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    IncompleteReadError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import (
    BlobBlock,
    BlobClient,
    BlobPrefix,
    BlobProperties,
    BlobServiceClient,
    ContentSettings,
    ExponentialRetry,
)
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from datamover.checksums import ALGORITHMS, PartDigests
from datamover.errors import (
    AuthError,
    BucketNotFound,
    ConfigError,
    IntegrityError,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    StoreError,
    Throttled,
    TransientError,
    Unsupported,
    UsageError,
)
from datamover.posixmeta import PosixAttrs
from datamover.stores import StoreSettings, referenced_secret
from datamover.stores.base import (
    DIGEST_KEY_PREFIX,
    Buffer,
    ChunkWriter,
    Features,
    MiB,
    ObjectInfo,
    PartLimits,
    PartReceipt,
    PendingUpload,
    Store,
    digest_metadata_key,
)
from datamover.stores.fsops import FsOps
from datamover.urls import Location

ENV_CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
ENV_ACCOUNT = "AZURE_STORAGE_ACCOUNT"
ENV_KEY = "AZURE_STORAGE_KEY"
ENV_SAS = "AZURE_STORAGE_SAS_TOKEN"
#: ``StoreSettings.extra`` keys of a remote naming the env vars that hold its secrets.
_SECRET_REFS = ("connection_string_env", "account_key_env", "sas_token_env")

#: Azure's own ceiling for one List Blobs page.
MAX_PAGE_SIZE = 5000
#: How long ``copy_object`` waits for a pending server-side copy before giving up.
DEFAULT_COPY_TIMEOUT = 600.0

_CONNECT_TIMEOUT = 20
_READ_TIMEOUT = 120
_BLOCK_ID_DIGITS = 8
#: Get Block List probes of committed blobs, in flight / per batch (cleanup listings).
_PROBE_WORKERS = 8
_PROBE_BATCH = 256
_TOKEN_RE = re.compile(r"^[0-9a-f]{12}$")
#: A datamover block id: upload token, part index, part MD5 (hex).
_BLOCK_ID_RE = re.compile(r"^([0-9a-f]{12})([0-9]{8})([0-9a-f]{32})$")

# Container names: 3-63 of [a-z0-9-], starting with a letter or digit, no "--";
# plus the three reserved names the service defines.
_CONTAINER_RE = re.compile(r"^(?=.{3,63}$)[a-z0-9](?!.*--)[a-z0-9-]*$|^\$(root|logs|web)$")
_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MD5_HEX_RE = re.compile(r"^[0-9a-f]{32}$")

_NO_CREDENTIALS = (
    "no Azure credentials: set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT "
    "with AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN (or pip install azure-identity "
    "to use DefaultAzureCredential)"
)


# --- metadata ----------------------------------------------------------------------


def to_azure_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Our lower-case keys to Azure metadata names: ``-`` becomes ``_``."""
    out: dict[str, str] = {}
    for key, value in metadata.items():
        name = key.replace("-", "_")
        if not _IDENTIFIER_RE.match(name):
            raise UsageError(
                f"metadata key {key!r} can't be stored in Azure: names must be letters, "
                "digits, '-' or '_', not starting with a digit"
            )
        out[name] = value
    return out


def from_azure_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Azure metadata names back to our keys: lower-cased, ``_`` becomes ``-``."""
    return {name.lower().replace("_", "-"): value for name, value in (metadata or {}).items()}


def _checksums(
    metadata: Mapping[str, str], content_md5: bytes | bytearray | None
) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in metadata.items():
        if key.startswith(DIGEST_KEY_PREFIX):
            algorithm = key[len(DIGEST_KEY_PREFIX) :]
            if algorithm in ALGORITHMS:
                out[algorithm] = value.strip().lower()
    if content_md5 and "md5" not in out:
        out["md5"] = bytes(content_md5).hex()
    return out


def _etag(etag: str | None) -> str | None:
    # Get Blob Properties quotes the ETag, List Blobs does not: keep one form.
    return etag.strip('"') if etag else None


def _object_info(
    key: str,
    size: int,
    metadata: Mapping[str, str],
    last_modified: datetime | None,
    etag: str | None,
    version: str | None,
    content_md5: bytes | bytearray | None,
) -> ObjectInfo:
    attrs = PosixAttrs.from_metadata(metadata)
    if attrs.mtime_ns is not None:
        mtime: float | None = attrs.mtime_ns / 1e9
    else:
        mtime = last_modified.timestamp() if last_modified else None
    return ObjectInfo(
        key=key,
        size=size,
        mtime=mtime,
        etag=_etag(etag),
        version=version,
        checksums=_checksums(metadata, content_md5),
        metadata=dict(metadata),
        mode=attrs.mode,
    )


def _properties_info(props: BlobProperties, key: str | None = None) -> ObjectInfo:
    settings = props.content_settings
    return _object_info(
        key=props.name if key is None else key,
        size=props.size,
        metadata=from_azure_metadata(props.metadata),
        last_modified=props.last_modified,
        etag=props.etag,
        version=props.version_id,
        content_md5=settings.content_md5 if settings else None,
    )


def _response_info(
    key: str,
    size: int,
    metadata: Mapping[str, str],
    response: Mapping[str, Any],
    content_md5: bytes | None,
) -> ObjectInfo:
    """Info for a blob just written, from the write's response headers (no HEAD)."""
    modified, etag, version = (response.get(k) for k in ("last_modified", "etag", "version_id"))
    return _object_info(
        key,
        size,
        metadata,
        modified if isinstance(modified, datetime) else None,
        etag if isinstance(etag, str) else None,
        version if isinstance(version, str) else None,
        content_md5,
    )


def _item_name(item: BlobProperties | BlobPrefix) -> str:
    return str(item.name)


def _is_directory_marker(props: BlobProperties) -> bool:
    """Zero-byte ``dir/`` blobs (portal, HNS accounts, other tools) are not files."""
    return props.name.endswith("/") or (props.metadata or {}).get("hdi_isfolder") == "true"


# --- errors ------------------------------------------------------------------------


def _headers(e: HttpResponseError) -> Mapping[str, str]:
    headers: Mapping[str, str] | None = getattr(e.response, "headers", None)
    return headers or {}


def _error_code(e: HttpResponseError) -> str:
    code: Any = _headers(e).get("x-ms-error-code")
    if not code:
        code = getattr(e, "error_code", None)
        code = getattr(code, "value", code)  # StorageErrorCode enum -> its string
    return str(code) if code else ""


def _retry_after(e: HttpResponseError) -> float | None:
    headers = _headers(e)
    value = headers.get("x-ms-retry-after-ms")
    try:
        if value:
            return float(value) / 1000
        value = headers.get("Retry-After")
        return float(value) if value else None
    except ValueError:
        return None  # an HTTP-date; the engine's own backoff applies


def _network_reason(e: BaseException) -> str:
    """A short cause for a transport failure, never the exception text (requests puts
    the request URL, SAS signature included, into its messages)."""
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        inner = getattr(cause, "inner_exception", None)
        cause = inner if isinstance(inner, BaseException) else cause.__cause__ or cause.__context__
    return type(e).__name__


def map_error(e: BaseException, container: str, key: str | None = None) -> StoreError:
    """The ``datamover.errors`` exception for an SDK or transport failure.

    Messages are ``az://container/key: <short reason>`` built from the container, the
    key, the HTTP status and Azure's error code only (service messages can echo request
    details; transport messages carry the URL with any SAS signature).
    """
    if isinstance(e, StoreError):
        return e
    where = f"az://{container}/{key}" if key is not None else f"az://{container}"
    if isinstance(e, ClientAuthenticationError):
        return AuthError(f"{where}: credentials rejected ({_error_code(e) or 'auth'})", key=key)
    if isinstance(e, (IncompleteReadError, ServiceRequestError, ServiceResponseError)):
        return TransientError(f"{where}: network error ({_network_reason(e)})", key=key)
    if isinstance(e, HttpResponseError):
        status = e.status_code
        if status is None:  # the SDK's re-raise of a body that could not be read
            return TransientError(f"{where}: network error ({_network_reason(e)})", key=key)
        code = _error_code(e)
        reason = f"{code or 'HTTP'} ({status})"
        if status == 404:
            if code == "ContainerNotFound":
                return BucketNotFound(f"az://{container}: container does not exist", key=key)
            return NotFound(f"{where}: no such blob", key=key)
        if (
            status == 401
            or code in ("AuthenticationFailed", "InvalidAuthenticationInfo")
            # Azurite sends a bad signature as AuthorizationFailure with Azure's
            # AuthenticationFailed wording.
            or (status == 403 and "failed to authenticate" in str(e).lower())
        ):
            return AuthError(f"{where}: credentials rejected ({reason})", key=key)
        if status == 403:
            return PermissionDenied(f"{where}: access denied ({reason})", key=key)
        if code == "Md5Mismatch" or (code == "InvalidOperation" and "md5" in str(e).lower()):
            # Azurite reports a bad Content-MD5 as InvalidOperation.
            return IntegrityError(
                f"{where}: the service rejected the Content-MD5 ({reason})", key=key
            )
        if status == 412:
            return PreconditionFailed(f"{where}: the blob changed ({reason})", key=key)
        if status in (429, 503):
            return Throttled(f"{where}: throttled ({reason})", key=key, retry_after=_retry_after(e))
        if status >= 500:
            return TransientError(f"{where}: server error ({reason})", key=key)
        return StoreError(f"{where}: {reason}", key=key)
    if isinstance(e, (ConnectionError, TimeoutError, requests.ConnectionError)):
        return TransientError(f"{where}: network error ({_network_reason(e)})", key=key)
    return StoreError(f"{where}: {type(e).__name__}", key=key)


def _is_invalid_range(e: AzureError) -> bool:
    return isinstance(e, HttpResponseError) and (
        e.status_code == 416 or _error_code(e) == "InvalidRange"
    )


# --- client construction -----------------------------------------------------------


def _connection_string_credential(conn: str) -> Any:
    """The credential inside a connection string, for use with an endpoint override."""
    fields = {}
    for part in conn.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            fields[name.strip().lower()] = value.strip()
    if fields.get("accountname") and fields.get("accountkey"):
        return {"account_name": fields["accountname"], "account_key": fields["accountkey"]}
    if fields.get("sharedaccesssignature"):
        return fields["sharedaccesssignature"].lstrip("?")
    raise ConfigError(
        f"{ENV_CONNECTION_STRING} has no AccountName/AccountKey or SharedAccessSignature "
        "to use with the configured endpoint"
    )


def _default_credential() -> Any:
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        return None
    return DefaultAzureCredential()


def _transport(connections: int) -> RequestsTransport:
    session = requests.Session()
    # Retries belong to the SDK policy, not to urllib3 (as azure-core's own adapter).
    adapter = HTTPAdapter(
        pool_connections=4,
        pool_maxsize=max(1, connections),
        max_retries=Retry(total=False, redirect=False, raise_on_status=False),
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return RequestsTransport(
        session=session,
        session_owner=True,
        connection_data_block_size=MiB,
        connection_timeout=_CONNECT_TIMEOUT,
        read_timeout=_READ_TIMEOUT,
    )


def _resolve_credentials(settings: StoreSettings) -> tuple[str | None, str, Any]:
    """``(connection string, account URL, credential)``; with a connection string the
    other two are unused unless ``settings.endpoint`` overrides its endpoint."""
    env = os.environ
    # A remote that names env vars for its secrets uses only those, never the defaults.
    by_ref = any(settings.extra.get(r) for r in _SECRET_REFS)
    conn = (
        referenced_secret(settings, "connection_string_env")
        if by_ref
        else env.get(ENV_CONNECTION_STRING)
    )
    if conn:
        if not settings.endpoint:
            return conn, "", None
        return None, settings.endpoint, _connection_string_credential(conn)
    account = settings.account or env.get(ENV_ACCOUNT)
    if not account and not settings.endpoint:
        raise ConfigError(_NO_CREDENTIALS)
    url = settings.endpoint or f"https://{account}.blob.core.windows.net"
    if by_ref:
        key = referenced_secret(settings, "account_key_env")
        sas = referenced_secret(settings, "sas_token_env")
    else:
        key, sas = env.get(ENV_KEY), env.get(ENV_SAS)
    if key and account:
        return None, url, {"account_name": account, "account_key": key}
    if sas:
        return None, url, sas.lstrip("?")
    credential = _default_credential()
    if credential is None:
        raise ConfigError(_NO_CREDENTIALS)
    return None, url, credential


def make_service_client(settings: StoreSettings, *, retries: int = 3) -> BlobServiceClient:
    """A ``BlobServiceClient`` from the environment's credentials (see the module
    docstring for the order) with datamover's transport, pool and retry tuning;
    ``retries`` is the SDK's attempt budget per request after the first.
    Raises ``ConfigError`` when no credentials are found; makes no request."""
    conn, url, credential = _resolve_credentials(settings)
    transport = _transport(settings.connections)
    options: dict[str, Any] = {
        "transport": transport,
        "retry_policy": ExponentialRetry(
            initial_backoff=1, increment_base=2, retry_total=retries, random_jitter_range=1
        ),
        "max_single_put_size": AzureStore.limits.max_single_put,
        "max_single_get_size": 32 * MiB,
        "max_chunk_get_size": 8 * MiB,
        "connection_data_block_size": MiB,
    }
    if conn:
        try:
            client = BlobServiceClient.from_connection_string(conn, **options)
        except ValueError as e:
            transport.close()
            # The SDK's message does not echo the string; ours must not either.
            raise ConfigError(f"{ENV_CONNECTION_STRING} is malformed") from e
    else:
        try:
            client = BlobServiceClient(url, credential=credential, **options)
        except ValueError as e:
            transport.close()
            # Scheme, host and path only: a pasted URL may carry a SAS in its query.
            shown = urlsplit(url)._replace(query="", fragment="").geturl()
            reason = str(e).replace(url, shown)
            raise ConfigError(f"bad Azure account URL {shown}: {reason}") from None
    return client


# --- the store ---------------------------------------------------------------------


class _ViewWriter:
    """A write-only stream over a memoryview, so downloads land in the caller's buffer."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def write(self, data: bytes) -> int:
        n = len(data)
        if self._pos + n > len(self._view):
            raise io.UnsupportedOperation("download longer than the buffer")
        self._view[self._pos : self._pos + n] = data
        self._pos += n
        return n

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


def _bytes_view(data: Buffer) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class AzureBlockWriter:
    """A block-blob upload: ``stage_block`` per part, ``commit_block_list`` at the end.

    See the module docstring for the block-id scheme and why ``abort`` can't delete the
    staged blocks. ``abort`` is idempotent and never raises.
    """

    def __init__(
        self,
        blob: BlobClient,
        container: str,
        key: str,
        *,
        size: int,
        part_size: int,
        metadata: Mapping[str, str],
        token: str | None = None,
    ) -> None:
        self.key = key
        self.size = size
        self.part_size = part_size
        self._blob = blob
        self._container = container
        self._metadata = dict(metadata)
        self._parts = math.ceil(size / part_size) if size else 0
        self._token = token or secrets.token_hex(6)
        self._written: dict[int, PartReceipt] = {}
        self._state = "open"
        self._lock = threading.Lock()

    def _block_id(self, index: int, md5_hex: str) -> str:
        return f"{self._token}{index:0{_BLOCK_ID_DIGITS}d}{md5_hex}"

    def state(self) -> dict[str, Any]:
        return {"token": self._token, "metadata": dict(self._metadata)}

    def verify_parts(self, claimed: Mapping[int, PartReceipt]) -> set[int]:
        """Keep the claimed parts staged as uncommitted blocks of this upload with the
        receipt's size and MD5 (carried in the block id). Raises ``NotFound`` when no
        uncommitted block of this upload is left."""
        try:
            _committed, uncommitted = self._blob.get_block_list("uncommitted")
        except AzureError as e:
            raise map_error(e, self._container, self.key) from e
        held: dict[tuple[int, str], int] = {}
        for block in uncommitted:
            m = _BLOCK_ID_RE.match(str(block.id))
            if m and m.group(1) == self._token:
                held[(int(m.group(2)), m.group(3))] = int(block.size)
        if not held:
            raise NotFound(
                f"{self._where()}: upload {self._token} has no uncommitted blocks left "
                "(committed, replaced or expired)",
                key=self.key,
            )
        valid = set()
        for index, receipt in claimed.items():
            md5_hex = (receipt.checksum or "").lower()
            if not 0 <= index < self._parts or receipt.size != self._expected_size(index):
                continue
            if held.get((index, md5_hex)) == receipt.size:
                valid.add(index)
                with self._lock:
                    self._written[index] = PartReceipt(index, receipt.size, checksum=md5_hex)
        return valid

    def _where(self) -> str:
        return f"az://{self._container}/{self.key}"

    def _expected_size(self, index: int) -> int:
        if not 0 <= index < self._parts:
            raise ValueError(f"{self._where()}: part {index} outside 0..{self._parts - 1}")
        return min(self.part_size, self.size - index * self.part_size)

    def write_part(self, index: int, data: Buffer, digests: PartDigests) -> PartReceipt:
        with self._lock:
            if self._state != "open":
                raise StoreError(f"{self._where()}: write after {self._state}", key=self.key)
        view = _bytes_view(data)
        expected = self._expected_size(index)
        if len(view) != expected:
            raise ValueError(
                f"{self._where()}: part {index} has {len(view)} bytes, expected {expected}"
            )
        md5 = digests.get("md5")
        try:
            # The SDK sends any bytes-like body as is; its annotation only says bytes.
            self._blob.stage_block(
                self._block_id(index, md5.hex()),
                cast(bytes, view),
                length=len(view),
                transactional_content_md5=md5,
            )
        except AzureError as e:
            raise map_error(e, self._container, self.key) from e
        receipt = PartReceipt(index, len(view), checksum=md5.hex())
        with self._lock:
            self._written[index] = receipt
        return receipt

    def commit(self, metadata: Mapping[str, str]) -> ObjectInfo:
        with self._lock:
            if self._state != "open":
                raise StoreError(f"{self._where()}: commit after {self._state}", key=self.key)
            missing = [i for i in range(self._parts) if i not in self._written]
            ids = [
                self._block_id(i, r.checksum or "")
                for i, r in sorted(self._written.items())
                if i < self._parts
            ]
        if missing:
            raise StoreError(
                f"{self._where()}: {len(missing)} of {self._parts} parts never written "
                f"(first: {missing[0]})",
                key=self.key,
            )
        final = {**self._metadata, **metadata}
        md5_hex = final.get(digest_metadata_key("md5"), "").lower()
        content = (
            ContentSettings(content_md5=bytearray.fromhex(md5_hex))
            if _MD5_HEX_RE.match(md5_hex)
            else None
        )
        try:
            # Ids go in the "latest" list: if the SDK retries a commit whose first
            # attempt did land, the blocks are committed by then and still resolve.
            response = self._blob.commit_block_list(
                [BlobBlock(block_id) for block_id in ids],
                content_settings=content,
                metadata=to_azure_metadata(final),
            )
        except AzureError as e:
            raise map_error(e, self._container, self.key) from e
        with self._lock:
            self._state = "commit"
        # The response's Content-MD5 is that of the block list request, not the blob.
        return _response_info(self.key, self.size, final, response, None)

    def abort(self) -> None:
        with self._lock:
            if self._state == "open":
                self._state = "abort"


class AzureStore(Store):
    """One Azure Blob Storage container. See the module docstring."""

    scheme = "az"
    features = Features(max_metadata_bytes=8192, listing_metadata=True)
    limits = PartLimits(
        min_part_size=1,
        max_part_size=4000 * MiB,
        max_parts=50_000,
        max_single_put=5000 * MiB,
    )

    def __init__(
        self,
        container: str,
        service: BlobServiceClient,
        *,
        page_size: int = MAX_PAGE_SIZE,
        copy_timeout: float = DEFAULT_COPY_TIMEOUT,
    ) -> None:
        """``page_size`` is blobs per List Blobs request (at most 5000);
        ``copy_timeout`` bounds the wait for a server-side copy, in seconds."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be in [1, {MAX_PAGE_SIZE}], not {page_size}")
        self.container = container
        self._service = service
        self._container_client = service.get_container_client(container)
        self._page_size = page_size
        self._copy_timeout = copy_timeout

    @classmethod
    def from_location(cls, loc: Location, settings: StoreSettings) -> AzureStore:
        if not _CONTAINER_RE.match(loc.bucket):
            raise UsageError(
                f"az://{loc.bucket}: not a valid container name (3-63 lower-case letters, "
                "digits and single hyphens)"
            )
        return cls(loc.bucket, make_service_client(settings))

    def url(self, key: str = "") -> str:
        return f"az://{self.container}/{key}"

    def _blob(self, key: str) -> BlobClient:
        return self._container_client.get_blob_client(key)

    def _error(self, e: BaseException, key: str | None) -> StoreError:
        return map_error(e, self.container, key)

    @staticmethod
    def _check_file_key(key: str) -> None:
        if key == "" or key.endswith("/"):
            raise UsageError(f"{key!r} names a directory, not a blob")

    def stat(self, key: str) -> ObjectInfo:
        if key == "":
            raise NotFound(f"{self.url(key)}: no such blob", key=key)
        try:
            props = self._blob(key).get_blob_properties()
        except AzureError as e:
            raise self._error(e, key) from e
        return _properties_info(props, key)

    def list(self, prefix: str, *, recursive: bool = True) -> Iterator[ObjectInfo]:
        if not recursive and prefix and not prefix.endswith("/"):
            prefix += "/"  # one level down means "this directory", never a name prefix
        client = self._container_client
        try:
            if recursive:
                for props in client.list_blobs(
                    name_starts_with=prefix or None,
                    include=["metadata"],
                    results_per_page=self._page_size,
                ):
                    if _is_directory_marker(props):
                        # Listed so an empty directory can be recreated (base.py).
                        name = props.name if props.name.endswith("/") else props.name + "/"
                        yield ObjectInfo(key=name, size=0, is_dir=True)
                    else:
                        yield _properties_info(props)
                return
            pages = client.walk_blobs(
                name_starts_with=prefix or None,
                include=["metadata"],
                delimiter="/",
                results_per_page=self._page_size,
            ).by_page()
            for page in pages:
                # The SDK hands each page's prefixes first, then its blobs; one page
                # spans one key range, so sorting the page restores key order.
                for item in sorted(page, key=_item_name):
                    if isinstance(item, BlobPrefix):
                        yield ObjectInfo(key=item.name, size=0, is_dir=True)
                    elif not _is_directory_marker(item):
                        yield _properties_info(item)
        except AzureError as e:
            raise self._error(e, prefix) from e

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        if length is not None and length <= 0:
            self.stat(key)  # a ranged GET can't ask for 0 bytes; still honour NotFound
            return b""
        try:
            return (
                self._blob(key)
                .download_blob(offset=offset, length=length, max_concurrency=1)
                .readall()
            )
        except AzureError as e:
            if _is_invalid_range(e):
                return b""
            raise self._error(e, key) from e

    def read_object(
        self, key: str, info: ObjectInfo | None = None
    ) -> tuple[bytes | bytearray, ObjectInfo]:
        """Bytes and properties from one Get Blob (the SDK pins any further ranges to
        the first response's ETag), so both describe the same blob even when it is
        replaced meanwhile; a stat and then a read could pair new bytes with old info."""
        try:
            downloader = self._blob(key).download_blob(max_concurrency=1)
            data = downloader.readall()
        except AzureError as e:
            raise self._error(e, key) from e
        return data, _properties_info(downloader.properties, key)

    def readinto(self, key: str, offset: int, buf: memoryview) -> int:
        view = _bytes_view(buf)
        if len(view) == 0:
            self.stat(key)
            return 0
        try:
            downloader = self._blob(key).download_blob(
                offset=offset, length=len(view), max_concurrency=1
            )
            return downloader.readinto(cast(IO[bytes], _ViewWriter(view)))
        except AzureError as e:
            if _is_invalid_range(e):
                return 0
            raise self._error(e, key) from e

    def put(
        self,
        key: str,
        data: Buffer,
        *,
        metadata: Mapping[str, str] | None = None,
        digests: PartDigests | None = None,
    ) -> ObjectInfo:
        if key == "" or (key.endswith("/") and len(_bytes_view(data))):
            # Only an empty blob may end in "/": a directory marker (empty directory).
            self._check_file_key(key)
        body = data if isinstance(data, bytes) else bytes(_bytes_view(data))
        if len(body) > self.limits.max_single_put:
            raise ValueError(
                f"{self.url(key)}: {len(body)} bytes is over the single-put limit; use open_writer"
            )
        md5 = (digests if digests is not None else PartDigests(body)).get("md5")
        meta = dict(metadata or {})
        try:
            response = self._blob(key).upload_blob(
                body,
                length=len(body),
                overwrite=True,
                metadata=to_azure_metadata(meta),
                transactional_content_md5=md5,
            )
        except AzureError as e:
            raise self._error(e, key) from e
        # Put Blob stores the (service-verified) MD5 as the blob's Content-MD5.
        return _response_info(key, len(body), meta, response, md5)

    def open_writer(
        self,
        key: str,
        *,
        size: int,
        part_size: int,
        metadata: Mapping[str, str] | None = None,
    ) -> ChunkWriter:
        self._check_file_key(key)
        self.limits.check_part_size(part_size)
        if size < 0 or (size and math.ceil(size / part_size) > self.limits.max_parts):
            raise ValueError(
                f"{self.url(key)}: {size} bytes in {part_size}-byte parts is more than "
                f"{self.limits.max_parts} blocks"
            )
        return AzureBlockWriter(
            self._blob(key),
            self.container,
            key,
            size=size,
            part_size=part_size,
            metadata=metadata or {},
        )

    def resume_writer(
        self,
        key: str,
        *,
        size: int,
        part_size: int,
        state: Mapping[str, Any],
        metadata: Mapping[str, str] | None = None,
    ) -> AzureBlockWriter:
        token = state.get("token")
        if not isinstance(token, str) or not _TOKEN_RE.match(token):
            raise NotFound(f"{self.url(key)}: no upload to resume", key=key)
        initial = state.get("metadata")
        writer = AzureBlockWriter(
            self._blob(key),
            self.container,
            key,
            size=size,
            part_size=part_size,
            metadata=initial if isinstance(initial, dict) else (metadata or {}),
            token=token,
        )
        writer.verify_parts({})  # gone -> NotFound now, not at commit
        return writer

    def list_pending_uploads(self, prefix: str) -> Iterator[PendingUpload]:
        """Blobs under ``prefix`` holding uncommitted blocks, one ``PendingUpload`` per
        blob (Azure keeps one uncommitted list per blob name, whoever staged it).

        Two listings, merged by name: List Blobs with ``uncommittedblobs`` and without.
        A name only the first shows has no committed blob: its pieces can be removed
        (see ``abort_pending_upload``); ``initiated`` is its creation time and ``size``
        the sum of its uncommitted blocks (one Get Block List each). A committed blob
        may hold uncommitted blocks too, which only Get Block List reveals: that is one
        request per committed blob under the prefix (``_PROBE_WORKERS`` at a time, in
        batches, so memory stays bounded). Such blocks can't be removed without
        rewriting the blob, so they come back with ``cannot_abort`` set and
        ``initiated`` None; Azure discards them at the blob's next commit or after 7
        days."""
        client = self._container_client
        with ThreadPoolExecutor(max_workers=_PROBE_WORKERS) as pool:
            try:
                with_uncommitted = client.list_blobs(
                    name_starts_with=prefix or None,
                    include=["uncommittedblobs"],
                    results_per_page=self._page_size,
                )
                committed = iter(
                    client.list_blobs(
                        name_starts_with=prefix or None, results_per_page=self._page_size
                    )
                )
                batch: list[str] = []
                current = next(committed, None)
                for props in with_uncommitted:
                    while current is not None and current.name < props.name:
                        current = next(committed, None)
                    if current is not None and current.name == props.name:
                        batch.append(props.name)
                        if len(batch) >= _PROBE_BATCH:
                            yield from self._committed_with_blocks(pool, batch)
                            batch = []
                        continue
                    blocks = self._uncommitted_blocks(props.name)
                    if not blocks:
                        continue  # committed or discarded since the listing
                    created = props.creation_time or props.last_modified
                    yield PendingUpload(
                        key=props.name,
                        initiated=created.timestamp() if created else None,
                        size=sum(int(b.size) for b in blocks),
                        token={"blob": props.name},
                    )
                yield from self._committed_with_blocks(pool, batch)
            except AzureError as e:
                raise self._error(e, prefix) from e

    def _uncommitted_blocks(self, key: str) -> Sequence[Any] | None:
        """The blob's uncommitted blocks; None when there is no blob at all."""
        try:
            _committed, uncommitted = self._blob(key).get_block_list("uncommitted")
        except AzureError as e:
            error = self._error(e, key)
            if isinstance(error, NotFound):
                return None
            raise error from e
        return list(uncommitted)

    def _committed_with_blocks(
        self, pool: ThreadPoolExecutor, names: Sequence[str]
    ) -> Iterator[PendingUpload]:
        for name, blocks in zip(names, pool.map(self._uncommitted_blocks, names), strict=True):
            if blocks:
                yield PendingUpload(
                    key=name,
                    initiated=None,
                    size=sum(int(b.size) for b in blocks),
                    token={"blob": name, "committed": True},
                    cannot_abort=(
                        "a committed blob exists at this name; its uncommitted blocks can't "
                        "be removed without rewriting it (Azure drops them at the blob's "
                        "next commit or after 7 days)"
                    ),
                )

    def abort_pending_upload(self, upload: PendingUpload) -> None:
        """Clear a blob name that holds uncommitted blocks and no committed blob: a Put
        Block List with an empty list and ``If-None-Match: *`` (which fails if a
        committed blob exists, so one is never replaced) discards every uncommitted
        block of the name and leaves an empty blob, which is then deleted if it is still
        the one just written (``If-Match`` on its ETag). That empty blob exists for a
        moment: a BlobCreated event fires for it, and with versioning on it leaves a
        (zero-byte) version. Uncommitted blocks next to a committed blob raise
        ``Unsupported``. A writer still staging blocks at that name loses them; its
        commit then fails. (Put Block List rather than Put Blob: its discarding of
        unlisted blocks is documented, and Azurite honours ``If-None-Match`` for it.)"""
        key = upload.token.get("blob")
        if not isinstance(key, str) or not key:
            raise ValueError(f"{self.url(upload.key)}: not an Azure upload token")
        blob = self._blob(key)
        try:
            response = blob.commit_block_list([], if_none_match="*")
        except HttpResponseError as e:
            exists = _error_code(e) == "BlobAlreadyExists" or e.status_code == 412
            if not exists:
                raise self._error(e, key) from e
            if self._uncommitted_blocks(key):
                raise Unsupported(
                    f"{self.url(key)}: a committed blob exists at this name; its "
                    "uncommitted blocks expire after 7 days",
                    key=key,
                ) from e
            return  # committed meanwhile: nothing pending any more
        except AzureError as e:
            raise self._error(e, key) from e
        try:
            blob.delete_blob(
                etag=str(response["etag"]), match_condition=MatchConditions.IfNotModified
            )
        except AzureError as e:
            error = self._error(e, key)
            if not isinstance(error, NotFound | PreconditionFailed):
                raise error from e

    def delete(self, key: str) -> None:
        if key == "":
            return
        try:
            self._blob(key).delete_blob(delete_snapshots="include")
        except AzureError as e:
            error = self._error(e, key)
            if not isinstance(error, NotFound):
                raise error from e

    def copy_object(
        self, src_key: str, dst_key: str, *, metadata: Mapping[str, str] | None = None
    ) -> ObjectInfo:
        """Async Copy Blob within the container, polled until done for at most
        ``copy_timeout`` seconds (then aborted: ``TransientError``). Without
        ``metadata`` the copy keeps the source's. ``Unsupported`` when the service
        can't verify or perform the copy."""
        self._check_file_key(dst_key)
        source, target = self._blob(src_key), self._blob(dst_key)
        options: dict[str, Any] = {}
        if metadata is not None:
            options["metadata"] = to_azure_metadata(metadata)
        try:
            started = target.start_copy_from_url(source.url, **options)
        except HttpResponseError as e:
            code, status = _error_code(e), e.status_code
            if status == 404 and code in ("BlobNotFound", "CannotVerifyCopySource"):
                raise NotFound(f"{self.url(src_key)}: no such blob", key=src_key) from e
            if status == 501 or code in ("CannotVerifyCopySource", "NotImplemented"):
                raise Unsupported(
                    f"{self.url(dst_key)}: server-side copy refused ({code or status})",
                    key=src_key,
                ) from e
            raise self._error(e, dst_key) from e
        except AzureError as e:
            raise self._error(e, dst_key) from e
        self._wait_for_copy(
            target, dst_key, str(started.get("copy_id", "")), str(started.get("copy_status", ""))
        )
        return self.stat(dst_key)

    def _wait_for_copy(self, target: BlobClient, key: str, copy_id: str, status: str) -> None:
        deadline = time.monotonic() + self._copy_timeout
        delay = 0.05
        try:
            while status == "pending":
                if time.monotonic() >= deadline:
                    # It may have finished meanwhile; the timeout error stands either way.
                    with contextlib.suppress(AzureError):
                        target.abort_copy(copy_id)
                    raise TransientError(
                        f"{self.url(key)}: server-side copy still pending after "
                        f"{self._copy_timeout:.0f} s; aborted",
                        key=key,
                    )
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                copy = target.get_blob_properties().copy
                status = str(copy.status or "")
        except AzureError as e:
            raise self._error(e, key) from e
        if status != "success":
            raise StoreError(
                f"{self.url(key)}: server-side copy ended {status or 'unknown'}", key=key
            )

    def close(self) -> None:
        self._service.close()


class AzureFsOps(FsOps):
    """Azure: ``AzureStore.put`` refuses ``dir/`` keys, so markers are written with the
    store's own container client. The marker also carries ``hdi_isfolder=true``, as
    the portal and HNS accounts write."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        assert isinstance(store, AzureStore)
        self._az = store

    def make_dir(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        meta = {**metadata, "hdi_isfolder": "true"}
        try:
            self._az._blob(key).upload_blob(
                b"", length=0, overwrite=True, metadata=to_azure_metadata(meta)
            )
        except Exception as e:
            raise self._az._error(e, key) from e
        return ObjectInfo(key=key, size=0, metadata=meta, is_dir=True)


AzureStore.fs_ops_class = AzureFsOps
