"""Checking what a copy wrote: re-read a tree and compare it with its manifest; the
digest of one object. Both read with the runner's parallel ranged reads."""

from __future__ import annotations

import dataclasses
import time

from datamover.engine.observer import Listener
from datamover.engine.plan import FileJob
from datamover.engine.results import FileResult, VerifyReport
from datamover.engine.runner import Runner
from datamover.errors import DatamoverError, NotFound, SourceChanged
from datamover.manifest import STATUS_OK, STATUS_SKIPPED, Manifest
from datamover.options import TransferOptions
from datamover.stores.base import ObjectInfo, Store


def verify_store(
    manifest: Manifest,
    manifest_path: str,
    store: Store,
    key: str,
    options: TransferOptions,
    *,
    listener: Listener | None = None,
) -> VerifyReport:
    """Re-read the tree at ``key`` in ``store`` (open; the caller closes it) and compare
    every file ``manifest`` lists as copied with its size and digest."""
    algorithm = manifest.algorithm
    options = options.with_(checksum=algorithm, manifest=None)
    root = key if key == "" or key.endswith("/") else key + "/"
    report = VerifyReport(manifest_path, store.url(root))
    expected = {
        e.path: e
        for e in manifest.entries
        if e.status == STATUS_OK or (e.status == STATUS_SKIPPED and e.digest)
    }
    for e in list(expected.values()):
        if e.kind == "hardlink" and e.link_to is not None and e.link_to in expected:
            # Where links are real (POSIX) the path is the target's inode: read it like a
            # file. Elsewhere it is a marker naming the target, whose own check covers it.
            if not store.features.hardlinks:
                report.ok += 1
                report.checked += 1
                del expected[e.path]
            else:
                linked = expected[e.link_to]
                expected[e.path] = dataclasses.replace(
                    e, kind=None, size=linked.size, digest=linked.digest
                )
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
        elif want.kind == "dir":
            report.ok += 1
        elif result.digests.get(algorithm) != want.digest:
            report.mismatched.append(
                (path, f"{algorithm} {result.digests.get(algorithm)} != manifest {want.digest}")
            )
        else:
            report.ok += 1
            report.bytes += result.size

    jobs = (
        FileJob(
            e.path,
            root + e.path,
            "",
            ObjectInfo(key=root + e.path, size=e.size, is_dir=e.kind == "dir"),
        )
        for e in expected.values()
    )
    # Read below the root as the copy wrote it: no link below it followed.
    Runner(store, None, options, on_result, listener=listener, roots=(root, "")).run(jobs)
    report.seconds = time.monotonic() - started
    return report


def hash_object(store: Store, key: str, options: TransferOptions) -> dict[str, str]:
    """Digest of one object or file, read with the engine's parallel ranged reads."""
    out: dict[str, str] = {}
    errors: list[DatamoverError] = []

    def on_result(result: FileResult) -> None:
        if result.error is not None:
            errors.append(result.error)
        out.update(result.digests)

    info = store.stat(key)
    Runner(store, None, options, on_result).run([FileJob(key, key, "", info)])
    if errors:
        raise errors[0]
    return out
