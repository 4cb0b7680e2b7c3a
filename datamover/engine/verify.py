"""Checking what a copy wrote: re-read a tree and compare it with its manifest; the
digest of one object. Both read with the runner's parallel ranged reads.

The manifest is untrusted (``manifest.rules`` has checked every path: relative, no
``..``), and every key read is ``root + path``, so nothing outside the root is named.
Where the tree is a local filesystem (``Store.local_path``), a path could still leave
it through a symlink inside the tree (``data -> /etc`` with a crafted ``data/shadow``
entry), so each path is also checked with ``lstat`` before it is read: a parent that is
a symlink is refused, and so is a symlink where the manifest lists a file or a
directory; a symlink the manifest lists as one is read as its link text. The size
``lstat`` gives, not the manifest's, decides how a file is read (a link goes through
the no-follow read of small files; a large file is not read into one buffer because
a crafted entry called it small). The checks cost one
``lstat`` per file and one per directory (cached, bounded). With ``copy_links`` the
caller asked for links to be followed, and these link checks are skipped. A link
swapped in between the check and the read is caught only by the store's own
no-follow open.
"""

from __future__ import annotations

import dataclasses
import os
import stat as statmod
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from datamover.engine.observer import Listener
from datamover.engine.plan import FileJob
from datamover.engine.results import FileResult, VerifyReport
from datamover.engine.runner import Runner
from datamover.errors import (
    DatamoverError,
    IntegrityError,
    NotFound,
    SourceChanged,
    UnsafePath,
)
from datamover.manifest import STATUS_OK, STATUS_SKIPPED, Manifest, ManifestEntry
from datamover.options import TransferOptions
from datamover.stores.base import HARDLINK_KEY, ObjectInfo, Store
from datamover.stores.browse import the_object


def verify_store(
    manifest: Manifest,
    manifest_path: str,
    store: Store,
    key: str,
    options: TransferOptions,
    *,
    listener: Listener | None = None,
    no_download: bool = False,
    allow_download: bool = False,
) -> VerifyReport:
    """Re-read the tree at ``key`` in ``store`` (open; the caller closes it) and compare
    every file ``manifest`` lists as copied with its size and digest.

    ``no_download``: read nothing; prove each file by the checksums the store computed
    over the bytes it holds (``prove_by_checksums``). Files that can't be proven so are
    ``report.unproven``, or, with ``allow_download``, read as without it."""
    algorithm = manifest.algorithm
    options = options.with_(checksum=algorithm, manifest=None)
    root = key if key == "" or key.endswith("/") else key + "/"
    report = VerifyReport(manifest_path, store.url(root))
    expected = {
        e.path: e
        for e in manifest.entries
        if e.status == STATUS_OK or (e.status == STATUS_SKIPPED and e.digest)
    }
    markers: list[ManifestEntry] = []
    _, undigested = manifest.files_with_digests()
    size_only: list[ManifestEntry] = []
    for e in undigested:  # unchanged in a sync that did not read them
        if e.kind == "hardlink" and e.link_to is not None and not store.features.hardlinks:
            markers.append(e)
        else:
            size_only.append(e)
    for e in list(expected.values()):
        if e.kind == "hardlink" and e.link_to is not None and e.link_to in expected:
            # Where links are real (POSIX) the path is the target's inode: read it like a
            # file. Elsewhere it is a marker naming the target, whose own check covers
            # its bytes; the marker itself must be there and name that target.
            if not store.features.hardlinks:
                markers.append(e)
                del expected[e.path]
            else:
                linked = expected[e.link_to]
                expected[e.path] = dataclasses.replace(
                    e, kind=None, size=linked.size, digest=linked.digest
                )
    started = time.monotonic()
    _check_markers(markers, store, root, options.transfers, report)
    _check_sizes(size_only, store, root, options.transfers, report)
    if no_download:
        files = [e for e in expected.values() if e.kind != "dir"]
        unproven = prove_by_checksums(files, store, root, algorithm, options.transfers, report)
        for path, why in unproven:
            if allow_download:
                continue
            report.unproven.append((path, why))
            report.checked += 1
            del expected[path]
        proven = {e.path for e in files} - {path for path, _ in unproven}
        for path in proven:
            del expected[path]

    def on_result(result: FileResult) -> None:
        path = result.job.rel
        want = expected[path]
        report.checked += 1
        err = result.error
        if isinstance(err, NotFound):
            report.missing.append(path)
        elif isinstance(err, SourceChanged) or (err is None and result.size != want.size):
            report.mismatched.append((path, f"size differs from the manifest's {want.size}"))
        elif isinstance(err, IntegrityError):
            # The bytes read disagree with a digest (the object's own label, a
            # provider checksum): the stored bytes are not what the manifest says.
            report.mismatched.append((path, str(err)))
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

    base = None if options.copy_links else store.local_path(root)
    beneath = _Beneath(base) if base is not None else None

    def jobs() -> Iterator[FileJob]:
        for e in expected.values():
            key = root + e.path
            info = ObjectInfo(key=key, size=e.size, is_dir=e.kind == "dir")
            problem = None
            if beneath is not None:
                info, why = beneath.check(e, info)
                if why is not None:
                    problem = UnsafePath(f"{why}; not following it out of the tree", key=key)
            yield FileJob(e.path, key, "", info, problem=problem)

    # Read below the root as the copy wrote it: no link below it followed.
    Runner(store, None, options, on_result, listener=listener, roots=(root, "")).run(jobs())
    report.seconds = time.monotonic() - started
    return report


#: Stats in flight at once while proving by checksums (bounds the futures held).
_STAT_BATCH = 1024


def _stat_all(
    entries: list[ManifestEntry], store: Store, root: str, threads: int
) -> Iterator[tuple[ManifestEntry, ObjectInfo | None, DatamoverError | None]]:
    """``store.stat`` of each entry's key, on up to 32 threads, ``_STAT_BATCH`` at a
    time, in order: the info, or the error it gave."""

    def one(e: ManifestEntry) -> tuple[ManifestEntry, ObjectInfo | None, DatamoverError | None]:
        try:
            return e, store.stat(root + e.path), None
        except DatamoverError as err:
            return e, None, err

    if not entries:
        return
    with ThreadPoolExecutor(max(1, min(threads, 32)), thread_name_prefix="dm-stat") as pool:
        for start in range(0, len(entries), _STAT_BATCH):
            yield from pool.map(one, entries[start : start + _STAT_BATCH])


def _check_sizes(
    entries: list[ManifestEntry], store: Store, root: str, threads: int, report: VerifyReport
) -> None:
    """Files a sync left unread and the manifest gives no digest for: each is there,
    as a file of the size recorded (``report.size_only``); nothing more can be told."""
    for e, info, err in _stat_all(entries, store, root, threads):
        report.checked += 1
        if isinstance(err, NotFound) or (info is not None and info.is_dir):
            report.missing.append(e.path)
        elif err is not None or info is None:
            report.errors.append((e.path, str(err)))
        elif info.size != e.size:
            report.mismatched.append(
                (e.path, f"the store holds {info.size} bytes, the manifest says {e.size}")
            )
        else:
            report.size_only.append(e.path)


def _check_markers(
    entries: list[ManifestEntry], store: Store, root: str, threads: int, report: VerifyReport
) -> None:
    """Hard links on a store without them: each marker object is there, holds no
    bytes, and names the key of the file the manifest links it to (the target's own
    entry checks the bytes)."""
    for e, info, err in _stat_all(entries, store, root, threads):
        report.checked += 1
        if isinstance(err, NotFound):
            report.missing.append(e.path)
        elif err is not None or info is None:
            report.errors.append((e.path, str(err)))
        elif info.is_dir or info.size != 0 or HARDLINK_KEY not in info.metadata:
            report.mismatched.append(
                (e.path, f"not a hard-link marker (a {info.size}-byte object)")
            )
        elif not _names(info.metadata[HARDLINK_KEY], root, str(e.link_to)):
            report.mismatched.append(
                (
                    e.path,
                    f"the hard-link marker names {info.metadata[HARDLINK_KEY]!r:.300}, "
                    f"the manifest links it to {e.link_to!r}",
                )
            )
        else:
            report.ok += 1


def _names(target: str, root: str, link_to: str) -> bool:
    """Whether a marker's target key is the manifest's ``link_to`` below ``root`` (or
    below the root it was written under, for a tree since moved by another tool)."""
    return target == root + link_to or target.endswith("/" + link_to)


def prove_by_checksums(
    entries: list[ManifestEntry],
    store: Store,
    root: str,
    algorithm: str,
    threads: int,
    report: VerifyReport,
) -> list[tuple[str, str]]:
    """Compare each of ``entries`` with what ``store`` reports now (``stat``: size,
    checksums), reading no data. Counted in ``report`` (ok, missing, mismatched,
    errors) are the files this settles; returned, with why, are those it can't.

    Proven: the size, and one whole-object checksum the provider computed over the
    bytes it holds now (``ObjectInfo.provider_checksums``) equal to the one it
    reported when the file was written (the manifest's ``provider_checksums``,
    recorded only for writes a check covered). Mismatched: another size, or any
    checksum the store reports now (its own or a ``datamover-<alg>`` label) that
    differs from the manifest's. A value the store merely keeps (Azure's Content-MD5
    of a block blob, a label) can show a change but never prove equality."""

    def one(e: ManifestEntry) -> tuple[ManifestEntry, ObjectInfo | None, DatamoverError | None]:
        try:
            return e, store.stat(root + e.path), None
        except DatamoverError as err:
            return e, None, err

    left: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max(1, min(threads, 32)), thread_name_prefix="dm-stat") as pool:
        for start in range(0, len(entries), _STAT_BATCH):
            for e, info, err in pool.map(one, entries[start : start + _STAT_BATCH]):
                why = _judge(e, info, err, algorithm, report)
                if why is not None:
                    left.append((e.path, why))
    return left


def _judge(
    e: ManifestEntry,
    info: ObjectInfo | None,
    err: DatamoverError | None,
    algorithm: str,
    report: VerifyReport,
) -> str | None:
    """Count ``e`` in ``report`` when the store's word settles it; else say why not."""
    if isinstance(err, NotFound):
        report.checked += 1
        report.missing.append(e.path)
        return None
    if err is not None or info is None:
        report.checked += 1
        report.errors.append((e.path, str(err)))
        return None
    if info.size != e.size:
        report.checked += 1
        report.mismatched.append(
            (e.path, f"the store holds {info.size} bytes, the manifest says {e.size}")
        )
        return None
    recorded = dict(e.provider_checksums)
    if e.digest:
        recorded.setdefault(algorithm, e.digest)
    for alg, want in sorted(recorded.items()):
        now = info.checksums.get(alg)
        if now is not None and now != want:
            report.checked += 1
            report.mismatched.append(
                (e.path, f"the store's {alg} is now {now}, the manifest recorded {want}")
            )
            return None
    for alg, want in sorted(e.provider_checksums.items()):
        if info.provider_checksums.get(alg) == want:
            report.checked += 1
            report.ok += 1
            report.by_checksum += 1
            return None
    replaced = (
        f" (it was replaced since: ETag now {info.etag}, the manifest recorded {e.etag})"
        if e.etag and info.etag and e.etag != info.etag
        else ""
    )
    if not e.provider_checksums:
        return (
            replaced[2:-1]
            if replaced
            else (
                "the manifest records no checksum the store computed for it (an older manifest, "
                "a write no store check covered, or a store that reports none)"
            )
        )
    if not info.provider_checksums:
        return "the store reports no checksum of its own for it now" + replaced
    return (
        f"the store reports {', '.join(sorted(info.provider_checksums))} now, the manifest "
        f"recorded {', '.join(sorted(e.provider_checksums))}{replaced}"
    )


class _Beneath:
    """The link checks of the module docstring for a tree at the local path ``base``."""

    MAX_DIRS = 4096

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self._dirs: set[str] = set()  # real directories seen (bounded)

    def check(self, entry: ManifestEntry, info: ObjectInfo) -> tuple[ObjectInfo, str | None]:
        """``(info to read with, why not to read it)``."""
        parts = entry.path.rstrip("/").split("/")
        path = self.base
        for part in parts[:-1]:
            path = f"{path}/{part}"
            if path in self._dirs:
                continue
            try:
                st = os.lstat(path)
            except OSError:
                return info, None  # missing or unreadable: the read reports it
            if statmod.S_ISLNK(st.st_mode):
                return info, f"{path} is a symlink"
            if not statmod.S_ISDIR(st.st_mode):
                return info, None  # a file: the read fails with ENOTDIR
            if len(self._dirs) >= self.MAX_DIRS:
                self._dirs.clear()
            self._dirs.add(path)
        path = f"{path}/{parts[-1]}"
        try:
            st = os.lstat(path)
        except OSError:
            return info, None
        if statmod.S_ISLNK(st.st_mode) and entry.kind != "symlink":
            what = "a directory" if entry.kind == "dir" else "a file"
            return info, f"{path} is a symlink, and the manifest lists {what}"
        # The size on disk, not the manifest's, picks how it is read: a crafted small
        # size must not send a large file down the one-buffer path.
        return dataclasses.replace(info, size=st.st_size, is_dir=statmod.S_ISDIR(st.st_mode)), None


def hash_object(store: Store, key: str, options: TransferOptions) -> dict[str, str]:
    """Digest of one object or file, read with the engine's parallel ranged reads."""
    out: dict[str, str] = {}
    errors: list[DatamoverError] = []

    def on_result(result: FileResult) -> None:
        if result.error is not None:
            errors.append(result.error)
        out.update(result.digests)

    info = the_object(store, key)  # a directory or prefix is refused, as cat does
    Runner(store, None, options, on_result).run([FileJob(key, key, "", info)])
    if errors:
        raise errors[0]
    return out
