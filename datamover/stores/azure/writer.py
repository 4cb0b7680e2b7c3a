"""Multipart writes to a block blob: ``AzureBlockWriter``.

One Put Block per part, one Put Block List to commit, both on the lean path when the
store has one (the SDK's ``BlobClient`` is then asked for only by resume's Get Block
List). The block-id scheme, resume and the abort caveat are described in the package
docstring (``datamover.stores.azure``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from datamover.checksums import PartDigests
from datamover.errors import NotFound, StoreError
from datamover.stores.azure import sdk
from datamover.stores.azure.errors import map_error
from datamover.stores.azure.lean import LeanAzure, LeanUnavailable
from datamover.stores.azure.metadata import headers_info, response_info, to_azure_metadata
from datamover.stores.base import (
    Buffer,
    ObjectInfo,
    PartReceipt,
    digest_metadata_key,
    parts_verified,
)

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient

_BLOCK_ID_DIGITS = 8
#: The random per-upload prefix of a writer's block ids (its resume ``state``).
TOKEN_RE = re.compile(r"^[0-9a-f]{12}$")
#: A datamover block id: upload token, part index, part MD5 (hex).
_BLOCK_ID_RE = re.compile(r"^([0-9a-f]{12})([0-9]{8})([0-9a-f]{32})$")
_MD5_HEX_RE = re.compile(r"^[0-9a-f]{32}$")


def bytes_view(data: Buffer) -> memoryview:
    """``data`` as a flat memoryview of bytes, without copying."""
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class AzureBlockWriter:
    """A block-blob upload: ``stage_block`` per part, ``commit_block_list`` at the end.

    See the package docstring for the block-id scheme and why ``abort`` can't delete
    the staged blocks. ``abort`` is idempotent and never raises.
    """

    def __init__(
        self,
        blob: Callable[[], BlobClient],
        container: str,
        key: str,
        *,
        size: int,
        part_size: int,
        metadata: Mapping[str, str],
        token: str | None = None,
        render: Callable[[Mapping[str, str]], dict[str, str]] = dict,
        lean: LeanAzure | None = None,
    ) -> None:
        """``blob`` gives the SDK's client for the blob (made on first need);
        ``lean``: stage and commit blocks on the lean path (``azure/lean.py``), else
        the SDK."""
        self.key = key
        self._lean = lean
        self.size = size
        self.part_size = part_size
        self._blob = blob
        self._container = container
        self._metadata = dict(metadata)
        self._render = render  # datamover's POSIX keys -> the store's styles
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
            _committed, uncommitted = self._blob().get_block_list("uncommitted")
        except Exception as e:
            raise map_error(e, self._container, self.key) from e
        held: dict[tuple[int, str], int] = {}
        for block in uncommitted:
            m = _BLOCK_ID_RE.match(str(block.id))
            if m and m.group(1) == self._token:
                if type(block.size) is not int:
                    raise StoreError(
                        f"{self._where()}: the server listed a block without a size", key=self.key
                    )
                held[(int(m.group(2)), m.group(3))] = block.size
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
                    self._written[index] = PartReceipt(
                        index, receipt.size, checksum=md5_hex, verified="md5"
                    )
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
        view = bytes_view(data)
        expected = self._expected_size(index)
        if len(view) != expected:
            raise ValueError(
                f"{self._where()}: part {index} has {len(view)} bytes, expected {expected}"
            )
        md5 = digests.get("md5")
        if self._lean is not None:
            self._lean.put_block(self.key, self._block_id(index, md5.hex()), view, md5)
        else:
            self._stage(index, view, md5)
        # The service checked the block against its transactional MD5.
        receipt = PartReceipt(index, len(view), checksum=md5.hex(), verified="md5")
        with self._lock:
            self._written[index] = receipt
        return receipt

    def _stage(self, index: int, view: memoryview, md5: bytes) -> None:
        try:
            # The SDK sends any bytes-like body as is; its annotation only says bytes.
            self._blob().stage_block(
                self._block_id(index, md5.hex()),
                cast(bytes, view),
                length=len(view),
                transactional_content_md5=md5,
            )
        except Exception as e:
            raise map_error(e, self._container, self.key) from e

    def commit(self, metadata: Mapping[str, str]) -> ObjectInfo:
        with self._lock:
            if self._state != "open":
                raise StoreError(f"{self._where()}: commit after {self._state}", key=self.key)
            missing = [i for i in range(self._parts) if i not in self._written]
            committed = [r for i, r in sorted(self._written.items()) if i < self._parts]
            ids = [self._block_id(r.index, r.checksum or "") for r in committed]
        if missing:
            raise StoreError(
                f"{self._where()}: {len(missing)} of {self._parts} parts never written "
                f"(first: {missing[0]})",
                key=self.key,
            )
        final = {**self._metadata, **self._render(metadata)}
        md5_hex = final.get(digest_metadata_key("md5"), "").lower()
        blob_md5 = bytes.fromhex(md5_hex) if _MD5_HEX_RE.match(md5_hex) else None
        azure_metadata = to_azure_metadata(final)  # UsageError for a name Azure can't take
        # Ids go in the "latest" list: if a commit whose first attempt did land is
        # retried, the blocks are committed by then and still resolve.
        info: ObjectInfo | None = None
        if self._lean is not None:
            try:
                response = self._lean.put_block_list(self.key, ids, blob_md5, azure_metadata)
            except LeanUnavailable:
                pass  # a value the lean path can't send: the SDK's Put Block List
            else:
                # Only these: the response's Content-MD5 is the block list's.
                kept = ("etag", "last-modified", "x-ms-version-id")
                headers = {k: v for k, v in response.headers.items() if k in kept}
                info = headers_info(self.key, self.size, headers, whole=False, metadata=final)
        if info is None:
            info = self._sdk_commit(ids, blob_md5, azure_metadata, final)
        with self._lock:
            self._state = "commit"
        # Each id carries its block's MD5, checked when it was staged, so the list
        # can only assemble those blocks.
        return dataclasses.replace(info, verified=parts_verified(committed))

    def _sdk_commit(
        self,
        ids: list[str],
        blob_md5: bytes | None,
        azure_metadata: dict[str, str],
        final: Mapping[str, str],
    ) -> ObjectInfo:
        blob = sdk.blob()
        content = (
            None if blob_md5 is None else blob.ContentSettings(content_md5=bytearray(blob_md5))
        )
        try:
            response = self._blob().commit_block_list(
                [blob.BlobBlock(block_id) for block_id in ids],
                content_settings=content,
                metadata=azure_metadata,
            )
        except Exception as e:
            raise map_error(e, self._container, self.key) from e
        # The response's Content-MD5 is that of the block list request, not the blob.
        return response_info(self.key, self.size, final, response, None)

    def abort(self) -> None:
        with self._lock:
            if self._state == "open":
                self._state = "abort"
