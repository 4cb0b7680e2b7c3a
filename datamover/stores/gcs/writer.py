"""``GCSWriter``: a multipart upload as temporary part objects, composed into the key
at commit (in levels of ``COMPOSE_MAX_SOURCES``), with the parts' CRC32Cs folded into
the CRC32C the composite object must have. See the package docstring for the layout,
resume and integrity.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from datamover.checksums import PartDigests
from datamover.errors import IntegrityError, NotFound, StoreError
from datamover.stores.base import Buffer, ObjectInfo, PartLimits, PartReceipt
from datamover.stores.gcs.client import pool_map
from datamover.stores.gcs.crc import crc32c_combine, crc_from_b64
from datamover.stores.gcs.metadata import blob_info
from datamover.stores.gcs.uploads import UPLOAD_KEY_METADATA

log = logging.getLogger(__name__)

COMPOSE_MAX_SOURCES = 32


class PartStore(Protocol):
    """What a ``GCSWriter`` uses of its store (``GCSStore``): its limits, temp prefix
    and fan-out, and its operations on temporary objects, which raise datamover errors.
    """

    limits: PartLimits
    temp_prefix: str
    connections: int

    def url(self, key: str = "") -> str: ...

    def _temp_blobs(self, prefix: str) -> Iterator[Any]: ...

    def _upload(
        self,
        name: str,
        data: Buffer,
        digests: PartDigests,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> Any: ...

    def _compose(
        self,
        name: str,
        sources: Sequence[tuple[str, int]],
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> Any: ...

    def _delete_generation(self, name: str, generation: int | None) -> None: ...

    def _delete_under(self, prefix: str) -> None: ...


@dataclass(frozen=True, slots=True)
class _Part:
    name: str
    generation: int
    size: int
    crc: int


class GCSWriter:
    """Parts as temporary objects, composed into ``key`` at commit.

    ``metadata`` given to ``open_writer`` and to ``commit`` are merged (``commit`` wins);
    nothing is written to the key before the final compose.
    """

    def __init__(
        self,
        store: PartStore,
        key: str,
        *,
        size: int,
        part_size: int,
        metadata: Mapping[str, str] | None,
        upload_id: str | None = None,
    ) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        self.key = key
        self.size = size
        self.part_size = part_size
        self.nparts = max(1, -(-size // part_size))
        if self.nparts > store.limits.max_parts:
            raise ValueError(
                f"{store.url(key)}: {self.nparts} parts exceed the limit of "
                f"{store.limits.max_parts}; use a larger part size"
            )
        self._store = store
        self._metadata = dict(metadata or {})
        if upload_id is None:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            upload_id = f"{stamp}-{secrets.token_hex(8)}"
        self.upload_id = upload_id
        self.temp_dir = f"{store.temp_prefix}{self.upload_id}/"
        self._parts: dict[int, _Part] = {}
        self._lock = threading.Lock()
        self._state = "open"

    def _expected_size(self, index: int) -> int:
        if index == self.nparts - 1:
            return self.size - index * self.part_size
        return self.part_size

    def _part_name(self, index: int) -> str:
        return f"{self.temp_dir}part-{index:06d}"

    def state(self) -> dict[str, Any]:
        return {"upload_id": self.upload_id, "metadata": dict(self._metadata)}

    def verify_parts(self, claimed: Mapping[int, PartReceipt]) -> set[int]:
        """List this upload's part objects and keep the claimed parts whose object has
        the receipt's size, CRC32C and (when the receipt has one) ETag; those are
        composed at commit with the generation listed. Raises ``NotFound`` when no part
        of the upload is left, or the parts were written for another key. Only names
        of this upload's parts are held (at most one per part), and a part resource of
        the wrong shape raises ``StoreError``."""
        try:
            return self._verify_parts(claimed)
        except (ValueError, TypeError, AttributeError, OverflowError) as e:
            raise StoreError(
                f"{self._store.url(self.key)}: the server sent a malformed part resource "
                f"({type(e).__name__})",
                key=self.key,
            ) from e

    def _verify_parts(self, claimed: Mapping[int, PartReceipt]) -> set[int]:
        names = {self._part_name(i) for i in range(self.nparts)}
        held: dict[str, Any] = {}
        for blob in self._store._temp_blobs(self.temp_dir):
            if blob.name in names:
                held[blob.name] = blob
        owner = {(b.metadata or {}).get(UPLOAD_KEY_METADATA, self.key) for b in held.values()}
        if not held or owner != {self.key}:
            raise NotFound(
                f"{self._store.url(self.key)}: upload {self.upload_id} has no parts left "
                "(committed, aborted or cleaned up)",
                key=self.key,
            )
        valid = set()
        for index, receipt in claimed.items():
            if not 0 <= index < self.nparts or receipt.size != self._expected_size(index):
                continue
            blob = held.get(self._part_name(index))
            if blob is None or blob.generation is None:
                continue
            crc = crc_from_b64(blob.crc32c)
            if (
                crc is None
                or f"{crc:08x}" != (receipt.checksum or "").lower()
                or int(blob.size or 0) != receipt.size
                or (receipt.etag is not None and blob.etag != receipt.etag)
            ):
                continue
            valid.add(index)
            with self._lock:
                self._parts[index] = _Part(blob.name, int(blob.generation), receipt.size, crc)
        return valid

    def write_part(self, index: int, data: Buffer, digests: PartDigests) -> PartReceipt:
        if not 0 <= index < self.nparts:
            raise ValueError(f"part {index} outside 0..{self.nparts - 1}")
        nbytes = memoryview(data).nbytes
        if nbytes != self._expected_size(index):
            raise ValueError(
                f"part {index} has {nbytes} bytes, expected {self._expected_size(index)}"
            )
        if self._state != "open":
            raise StoreError(
                f"{self._store.url(self.key)}: write after {self._state}", key=self.key
            )
        name = self._part_name(index)
        blob = self._store._upload(name, data, digests, metadata={UPLOAD_KEY_METADATA: self.key})
        part = _Part(
            name, int(blob.generation), nbytes, int.from_bytes(digests.get("crc32c"), "big")
        )
        with self._lock:
            self._parts[index] = part
        return PartReceipt(
            index, nbytes, etag=blob.etag, checksum=f"{part.crc:08x}", verified="crc32c"
        )

    def commit(self, metadata: Mapping[str, str]) -> ObjectInfo:
        store = self._store
        with self._lock:
            if self._state != "open":
                raise StoreError(f"{store.url(self.key)}: commit after {self._state}", key=self.key)
            missing = [i for i in range(self.nparts) if i not in self._parts]
            if missing:
                raise StoreError(
                    f"{store.url(self.key)}: {len(missing)} part(s) not written, "
                    f"first {missing[0]}",
                    key=self.key,
                )
            parts = [self._parts[i] for i in range(self.nparts)]
            self._state = "committing"
        try:
            final = self._compose_all(parts, {**self._metadata, **metadata})
        except BaseException:
            with self._lock:
                self._state = "open"
            raise
        expected = _fold_crc(parts)
        got = crc_from_b64(final.crc32c)
        if got != expected or int(final.size or 0) != self.size:
            store._delete_generation(self.key, final.generation)
            self._remove_temporaries(raise_errors=False)
            with self._lock:
                self._state = "aborted"
            raise IntegrityError(
                f"{store.url(self.key)}: composed object has crc32c {got or 0:08x} / "
                f"{final.size} bytes, parts add up to {expected:08x} / {self.size} bytes",
                key=self.key,
            )
        with self._lock:
            self._state = "committed"
        self._remove_temporaries(raise_errors=False)
        # Every part's CRC32C was compared on upload, the compose pinned their
        # generations, and the composite's CRC32C equals the parts' folded CRC32C.
        return blob_info(final, self.key, verified="crc32c")

    def _compose_all(self, parts: Sequence[_Part], metadata: Mapping[str, str]) -> Any:
        store = self._store
        sources: list[tuple[str, int]] = [(p.name, p.generation) for p in parts]
        level = 0
        while len(sources) > COMPOSE_MAX_SOURCES:
            level += 1
            groups = [
                (
                    f"{self.temp_dir}compose-{level}-{i // COMPOSE_MAX_SOURCES:06d}",
                    sources[i : i + COMPOSE_MAX_SOURCES],
                )
                for i in range(0, len(sources), COMPOSE_MAX_SOURCES)
            ]

            def compose_group(group: tuple[str, list[tuple[str, int]]]) -> tuple[str, int]:
                blob = store._compose(group[0], group[1])
                return group[0], int(blob.generation)

            sources = pool_map(compose_group, groups, store.connections)
        return store._compose(self.key, sources, metadata=metadata)

    def _remove_temporaries(self, *, raise_errors: bool) -> None:
        try:
            self._store._delete_under(self.temp_dir)
        except StoreError as e:
            if raise_errors:
                raise
            # The object is committed and correct; what is left is debris under the
            # temp prefix, which abort() or a lifecycle rule removes.
            log.warning("%s: temporary parts left behind: %s", self._store.url(self.temp_dir), e)

    def abort(self) -> None:
        with self._lock:
            if self._state == "open":
                self._state = "aborted"
        self._remove_temporaries(raise_errors=True)


def _fold_crc(parts: Iterable[_Part]) -> int:
    crc = 0
    for p in parts:
        crc = crc32c_combine(crc, p.crc, p.size)
    return crc
