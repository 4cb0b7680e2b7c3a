"""Transfer operations built on the runner: ``copy``, ``verify`` and ``hash``.

Each operation resolves URLs to stores, plans, runs, and records: ``copy`` writes a
manifest entry per file as it finishes; ``verify`` re-reads a target and compares it
with a manifest. They return reports; they raise only for usage errors and fatal store
errors (after in-flight work has stopped and the manifest is closed).
"""

from __future__ import annotations

import os
import stat as statmod
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from datamover.engine.plan import FileJob, plan_copy
from datamover.engine.runner import FileResult, Listener, Runner
from datamover.errors import DatamoverError, NotFound, SourceChanged, UsageError
from datamover.manifest import (
    STATUS_FAILED,
    STATUS_OK,
    ManifestEntry,
    ManifestWriter,
    make_header,
    read_manifest,
)
from datamover.options import TransferOptions
from datamover.posixmeta import MODE, PosixAttrs, format_mtime_ns
from datamover.stores import StoreSettings, open_location, open_store
from datamover.stores.base import ObjectInfo, Store
from datamover.urls import parse_url

__all__ = [
    "FileResult",
    "Listener",
    "TransferReport",
    "VerifyReport",
    "copy",
    "copy_between",
    "hash_url",
    "verify",
]


def state_dir() -> str:
    """``$XDG_STATE_HOME/datamover`` (default ``~/.local/state/datamover``)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "datamover")


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
    bytes: int = 0
    retries: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.files_failed == 0


def _settings(options: TransferOptions) -> StoreSettings:
    # One pooled connection per worker thread, plus a few for stats and commits.
    return StoreSettings(connections=options.transfers + 4)


def _entry(result: FileResult, algorithm: str) -> ManifestEntry:
    job = result.job
    info = result.src_info or job.info
    attrs = PosixAttrs.from_metadata(info.metadata)
    mtime_ns = attrs.mtime_ns
    if mtime_ns is None and info.mtime is not None:
        mtime_ns = round(info.mtime * 1e9)
    mode = attrs.mode if MODE in info.metadata else info.mode
    entry = ManifestEntry(
        path=job.rel,
        size=result.size,
        status=STATUS_OK if result.error is None else STATUS_FAILED,
        digest=result.digests.get(algorithm),
        mtime=format_mtime_ns(mtime_ns) if mtime_ns is not None else None,
        mode=f"{statmod.S_IMODE(mode):04o}" if mode is not None else None,
        part_size=result.part_size,
        parts=result.parts,
        etag=result.dst_info.etag if result.dst_info else None,
        version=result.dst_info.version if result.dst_info else None,
        error=str(result.error) if result.error is not None else None,
        seconds=round(result.seconds, 6),
        attempts=result.retries + 1 if result.retries else None,
    )
    src_rel = job.src_key.rsplit("/", 1)[-1]
    if job.rel.rsplit("/", 1)[-1] != src_rel:
        entry.source_path = src_rel
    return entry


def copy(
    src: str,
    dst: str,
    options: TransferOptions | None = None,
    *,
    listener: Listener | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> TransferReport:
    """Copy ``src`` (file, directory or prefix) to ``dst`` with a checksum manifest."""
    options = options or TransferOptions()
    settings = _settings(options)
    src_store, src_key = open_store(src, settings)
    dst_store, dst_key = open_store(dst, settings)
    try:
        return copy_between(
            src_store, src_key, dst_store, dst_key, options, listener=listener, sleep=sleep
        )
    finally:
        src_store.close()
        dst_store.close()


def copy_between(
    src_store: Store,
    src_key: str,
    dst_store: Store,
    dst_key: str,
    options: TransferOptions,
    *,
    listener: Listener | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> TransferReport:
    """``copy`` between stores already open (the caller closes them)."""
    started = time.monotonic()
    plan = plan_copy(src_store, src_key, dst_store, dst_key)
    job_id = new_job_id()
    manifest_path = options.manifest or os.path.join(state_dir(), "manifests", f"{job_id}.jsonl")
    report = TransferReport(
        job_id, "copy", src_store.url(plan.src_root), dst_store.url(plan.dst_root), manifest_path
    )
    header = make_header(
        operation="copy",
        source=report.source,
        destination=report.destination,
        algorithm=options.checksum,
        part_algorithm=options.part_checksum,
        options=options.public(),
        job_id=job_id,
        command_line=options.command_line,
    )
    writer = ManifestWriter(manifest_path, header)

    def on_result(result: FileResult) -> None:
        writer.add(_entry(result, options.checksum))
        report.retries += result.retries
        if result.error is None:
            report.files_ok += 1
            report.bytes += result.size
        else:
            report.files_failed += 1
            report.failures.append((result.job.rel, str(result.error)))

    runner = Runner(src_store, dst_store, options, on_result, listener=listener, sleep=sleep)
    aborted: DatamoverError | None = None
    try:
        runner.run(plan.jobs)
    except DatamoverError as e:
        aborted = e
        raise
    finally:
        report.seconds = time.monotonic() - started
        summary: dict[str, object] = {
            "files_ok": report.files_ok,
            "files_failed": report.files_failed,
            "bytes": report.bytes,
            "seconds": round(report.seconds, 3),
            "peak_buffer_bytes": runner.budget.peak,
        }
        if aborted is not None:
            summary["aborted"] = str(aborted)
        writer.close(summary)
    return report


@dataclass(slots=True)
class VerifyReport:
    manifest: str
    target: str
    checked: int = 0
    ok: int = 0
    missing: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, str]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not (self.missing or self.mismatched or self.errors)


def verify(
    manifest_path: str,
    target: str | None = None,
    options: TransferOptions | None = None,
    *,
    listener: Listener | None = None,
) -> VerifyReport:
    """Re-read ``target`` (default: the manifest's destination) and compare every file
    the manifest lists as copied with its size and digest."""
    manifest = read_manifest(manifest_path)
    algorithm = manifest.algorithm
    options = (options or TransferOptions()).with_(checksum=algorithm, manifest=None)
    root_url = target or str(manifest.header.get("destination", ""))
    if not root_url:
        raise UsageError(f"{manifest_path} names no destination; give the TARGET to verify")
    loc = parse_url(root_url)
    store = open_location(loc, _settings(options))
    root = loc.key if loc.key == "" or loc.key.endswith("/") else loc.key + "/"
    report = VerifyReport(manifest_path, store.url(root))
    expected = {e.path: e for e in manifest.entries if e.status == STATUS_OK}
    started = time.monotonic()

    def on_result(result: FileResult) -> None:
        path = result.job.rel
        want = expected[path]
        report.checked += 1
        err = result.error
        if isinstance(err, NotFound):
            report.missing.append(path)
        elif isinstance(err, SourceChanged) or (err is None and result.size != want.size):
            report.mismatched.append((path, f"size differs from the manifest's {want.size}"))
        elif err is not None:
            report.errors.append((path, str(err)))
        elif result.digests.get(algorithm) != want.digest:
            report.mismatched.append(
                (path, f"{algorithm} {result.digests.get(algorithm)} != manifest {want.digest}")
            )
        else:
            report.ok += 1
            report.bytes += result.size

    jobs = (
        FileJob(e.path, root + e.path, "", ObjectInfo(key=root + e.path, size=e.size))
        for e in expected.values()
    )
    try:
        Runner(store, None, options, on_result, listener=listener).run(jobs)
    finally:
        store.close()
    report.seconds = time.monotonic() - started
    return report


def hash_url(url: str, options: TransferOptions | None = None) -> dict[str, str]:
    """Digest of one object or file, read with the engine's parallel ranged reads."""
    options = options or TransferOptions()
    store, key = open_store(url, _settings(options))
    out: dict[str, str] = {}
    errors: list[DatamoverError] = []

    def on_result(result: FileResult) -> None:
        if result.error is not None:
            errors.append(result.error)
        out.update(result.digests)

    try:
        info = store.stat(key)
        Runner(store, None, options, on_result).run([FileJob(key, key, "", info)])
    finally:
        store.close()
    if errors:
        raise errors[0]
    return out
