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

from datamover.engine.observer import Listener
from datamover.engine.plan import FileJob
from datamover.engine.results import FileResult, VerifyReport
from datamover.engine.runner import Runner
from datamover.errors import DatamoverError, NotFound, SourceChanged, UnsafePath
from datamover.manifest import STATUS_OK, STATUS_SKIPPED, Manifest, ManifestEntry
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

    info = store.stat(key)
    Runner(store, None, options, on_result).run([FileJob(key, key, "", info)])
    if errors:
        raise errors[0]
    return out
