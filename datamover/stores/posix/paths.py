"""Names in the destination tree: which keys are safe to write under a root
(``ChildKeys``), the temp names files are written under before their rename, the
directories made or found on the way (``KnownDirs``), and the temp files left by
interrupted writes (``walk_temps``).

Everything here works on paths, and the checks are made before the writes: a parent
directory found to be real by ``ChildKeys`` is not looked at again.
"""

from __future__ import annotations

import itertools
import os
import secrets
import stat as statmod
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from datamover.errors import StoreError, UnsafePath
from datamover.stores.base import PendingUpload
from datamover.stores.posix.errors import map_oserror

TEMP_MARK = ".dmtmp-"
NAME_MAX = 255

T = TypeVar("T")

# Temp-file suffixes: a random prefix per process (drawn again in a forked child) and a
# counter, so a file costs no getrandom; the temp file is created O_EXCL and a clash (a
# leftover of another process) just takes the next name.
_temp_prefix = secrets.token_hex(5)
_temp_counter = itertools.count()


def _fresh_temp_prefix() -> None:
    global _temp_prefix, _temp_counter
    _temp_prefix = secrets.token_hex(5)
    _temp_counter = itertools.count()


os.register_at_fork(after_in_child=_fresh_temp_prefix)


def _temp_name(directory: str, name: str) -> str:
    suffix = f"{TEMP_MARK}{_temp_prefix}{next(_temp_counter):x}"
    raw = os.fsencode(name)
    room = 255 - 1 - len(suffix)  # NAME_MAX, the leading dot, the suffix
    if len(raw) > room:  # a long name: its temp file keeps only its start
        name = os.fsdecode(raw[:room])
    return os.path.join(directory, f".{name}{suffix}")


class KnownDirs:
    """The directories a store has made or found, bounded (``MAX``; the set is simply
    emptied when full), so writing many files costs one ``makedirs`` per directory
    instead of one per file. A directory removed or replaced meanwhile is noticed by
    the create that fails in it (``ENOENT``/``ENOTDIR``), which forgets it and retries
    once through ``makedirs``."""

    MAX = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: set[str] = set()

    def ensure(self, directory: str, key: str) -> bool:
        """Make the directory unless known to exist; whether it was known."""
        if directory in self._known:
            return True
        try:
            os.makedirs(directory, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as e:
            raise UnsafePath(
                f"/{key}: a parent of it is a file, not a directory (the source has a "
                "name that is both a file and a prefix); refusing this one",
                key=key,
            ) from e
        except OSError as e:
            raise map_oserror(e, key) from e
        with self._lock:
            if len(self._known) >= self.MAX:
                self._known.clear()
            self._known.add(directory)
        return False

    def forget(self, directory: str) -> None:
        with self._lock:
            self._known.discard(directory)

    def clear(self) -> None:
        with self._lock:
            self._known.clear()

    def create(self, key: str, make: Callable[[str], T]) -> tuple[str, T]:
        """``make(temp)`` a fresh temp name next to ``key`` (which must create it
        exclusively: ``O_EXCL``, ``symlink``, ``link``), making the directory first if
        this store hasn't. Returns the temp path and what ``make`` returned. A name
        clash takes the next name; a directory gone meanwhile is made again."""
        directory, name = os.path.split("/" + key)
        retried = False
        for _ in range(8):
            known = self.ensure(directory, key)
            temp = _temp_name(directory, name)
            try:
                return temp, make(temp)
            except FileExistsError:
                continue  # somebody's leftover under this name: take the next one
            except (FileNotFoundError, NotADirectoryError):
                if not known or retried:
                    raise
                self.forget(directory)  # removed or replaced since: makedirs again
                retried = True
        raise StoreError(f"/{key}: no free temp file name in {directory}", key=key)


class ChildKeys:
    """Which keys under a destination root are safe to write (``child_key``), with
    what that needs remembered: the parents found to be real directories (bounded),
    whether each root ignores case, and, under a root that does, the keys seen so far
    by their folded name (bounded by the tree)."""

    def __init__(self, case_insensitive: bool | None = None) -> None:
        #: None: probe each destination root; True/False: known (tests, odd mounts).
        self.case_insensitive = case_insensitive
        self._case_folding: dict[str, bool] = {}
        # Folded name -> first key, only for roots that ignore case (bounded by the tree).
        self._case_seen: dict[str, dict[str, str]] = {}
        # Parents child_key found to be real directories (not symlinks), bounded.
        self._real_dirs: set[str] = set()

    def forget_dirs(self) -> None:
        """Forget the parents found to be real directories (the case-folding answers
        and the keys seen under case-folding roots are kept)."""
        self._real_dirs.clear()

    def child_key(self, root: str, rel: str) -> str:
        """Refuse keys that can't be a path under ``root`` safely: absolute, empty or
        ``.``/``..`` components, NUL, components over 255 bytes, or a parent directory
        (below ``root``) that is a symlink, which writing would follow out of the tree."""
        trailing = rel.endswith("/")
        parts = (rel[:-1] if trailing else rel).split("/")
        why = None
        if rel.startswith("/"):
            why = "it is absolute"
        elif "\0" in rel:
            why = "it contains a NUL byte"
        elif any(p in ("", ".", "..") for p in parts):
            why = "it has an empty, '.' or '..' component that would leave the tree"
        elif any(len(p.encode("utf-8", "surrogateescape")) > NAME_MAX for p in parts):
            why = f"a component is longer than {NAME_MAX} bytes"
        if why is None:
            path = "/" + root
            for part in parts[:-1]:
                path = os.path.join(path, part)
                if path in self._real_dirs:
                    continue  # seen a real directory already (a tree's keys share parents)
                try:
                    st = os.lstat(path)
                except OSError:
                    break  # missing (made as a real directory when written) or unreadable
                if statmod.S_ISLNK(st.st_mode):
                    why = f"{path} is a symlink, and writing through it would leave the tree"
                    break
                if statmod.S_ISDIR(st.st_mode):
                    if len(self._real_dirs) >= KnownDirs.MAX:
                        self._real_dirs.clear()
                    self._real_dirs.add(path)
        if why is None and self._folds_case(root):
            seen = self._case_seen.setdefault(root, {})
            other = seen.setdefault(rel.casefold(), rel)
            if other != rel:
                why = f"it differs from {other!r} only by case, and {root!r} ignores case"
        if why is not None:
            raise UnsafePath(f"refusing key {rel!r}: {why}", key=rel)
        return root + rel

    def _folds_case(self, root: str) -> bool:
        """Whether names under ``root`` are case-insensitive (vfat, SMB, casefold ext4):
        probed once per root by creating a name and looking it up in upper case."""
        known = self._case_folding.get(root)
        if known is None:
            if self.case_insensitive is not None:
                known = self.case_insensitive
            else:
                # Probe the nearest existing directory (same filesystem, in practice):
                # planning, a dry run included, must not create the destination.
                directory = "/" + root
                while not os.path.isdir(directory) and directory != "/":
                    directory = os.path.dirname(directory.rstrip("/")) or "/"
                probe = os.path.join(directory, f".dmcase-{secrets.token_hex(4)}")
                try:
                    with open(probe, "x"):
                        pass
                    known = os.path.exists(os.path.join(directory, os.path.basename(probe).upper()))
                    os.unlink(probe)
                except OSError:
                    known = False
            self._case_folding[root] = known
        return known


def walk_temps(base: str, name_prefix: str) -> Iterator[PendingUpload]:
    """Temp files ``.NAME.dmtmp-*`` in the directory ``base`` (a key prefix ending in
    ``/``, or empty) whose ``NAME`` starts with ``name_prefix``, and every temp file
    below the subdirectories whose name starts with it (symlinks are not followed;
    directories that can't be read are passed over)."""
    try:
        with os.scandir("/" + base) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return  # missing, not a directory, or unreadable: nothing to find there
    for entry in entries:
        name = entry.name
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            is_file = entry.is_file(follow_symlinks=False)
        except OSError:
            continue
        if is_dir and name.startswith(name_prefix):
            yield from walk_temps(f"{base}{name}/", "")
            continue
        mark = name.find(TEMP_MARK)
        target = name[1:mark]
        if not (is_file and name.startswith(".") and mark > 1):
            continue
        if not target.startswith(name_prefix):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # vanished meanwhile
        yield PendingUpload(
            key=base + target,
            initiated=st.st_mtime_ns / 1e9,
            size=st.st_size,
            token={"temp_path": "/" + base + name},
        )
