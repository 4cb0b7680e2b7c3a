"""What a run tells its caller: each file's result, the report of a transfer, of a
verify."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from datamover.engine.plan import FileJob
from datamover.errors import DatamoverError
from datamover.stores.base import ObjectInfo


def new_job_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


@dataclass(slots=True)
class TransferReport:
    job_id: str
    operation: str
    source: str
    destination: str
    manifest: str | None
    files_ok: int = 0
    files_failed: int = 0
    files_skipped: int = 0
    files_resumed: int = 0
    #: Bytes a resumed run found already done: files finished earlier, and parts of
    #: partly written files the destination still held (checked, not sent again).
    bytes_resumed: int = 0
    bytes: int = 0
    bytes_moved: int = 0
    resumed: bool = False
    retries: int = 0
    deleted: list[str] = field(default_factory=list)
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: Files recorded ok that no check covered (``--unverified accept``).
    files_unverified: int = 0
    #: A dry run: ``files_ok``/``bytes`` count what would be copied, ``deleted`` what
    #: would be deleted; nothing was transferred and no manifest was written.
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return self.files_failed == 0


@dataclass(slots=True)
class VerifyReport:
    manifest: str
    target: str
    checked: int = 0
    ok: int = 0
    missing: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, str]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    #: ``--no-download``: files no checksum the store computed could prove (and not
    #: read, without ``--allow-download``), with why.
    unproven: list[tuple[str, str]] = field(default_factory=list)
    #: ``--no-download``: files proven by the store's own checksums (none read).
    by_checksum: int = 0
    #: Files the manifest lists as unchanged without a digest (a sync did not read
    #: them): found, at the recorded size; their bytes were not checked.
    size_only: list[str] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not (self.missing or self.mismatched or self.errors or self.unproven)


@dataclass(slots=True)
class FileResult:
    """What happened to one file. ``error`` is None on success."""

    job: FileJob
    size: int
    digests: dict[str, str] = field(default_factory=dict)
    part_size: int | None = None
    parts: list[str] = field(default_factory=list)
    dst_info: ObjectInfo | None = None
    src_info: ObjectInfo | None = None
    error: DatamoverError | None = None
    seconds: float = 0.0
    retries: int = 0
    #: The check that covered the bytes written (``manifest.VERIFIED_VALUES``), None
    #: for entries with no bytes of their own and for reads (verify, hash).
    verified: str | None = None
