"""Names in the destination tree: which keys can be paths under a root at all
(``ChildKeys``, a check of the text only), the temp names files are written under
before their rename (``temp_name``, ``create_temp``, ``is_temp_for``), and the temp
files left by interrupted writes (``walk_temps``).

Nothing here looks at the filesystem to decide whether a write is safe: that is
decided where the write happens, beneath the root's descriptor (``beneath``), so a
directory swapped for a symlink after a check can't redirect it.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import secrets
import stat as statmod
from collections.abc import Callable, Iterator
from typing import TypeVar

from datamover.errors import UnsafePath
from datamover.stores.base import PendingUpload
from datamover.stores.posix.beneath import Beneath, Dir, removed, split

TEMP_MARK = ".dmtmp-"
NAME_MAX = 255
#: Longest path the kernel resolves in one call (Linux PATH_MAX, with its NUL).
PATH_MAX = 4096

T = TypeVar("T")

# Temp-file suffixes: a random prefix per process (drawn again in a forked child) and a
# counter, so a file costs no getrandom; the temp file is created O_EXCL and a clash (a
# leftover of another process, or a name somebody planted) just takes the next name.
_temp_prefix = secrets.token_hex(5)
_temp_counter = itertools.count()


def _fresh_temp_prefix() -> None:
    global _temp_prefix, _temp_counter
    _temp_prefix = secrets.token_hex(5)
    _temp_counter = itertools.count()


os.register_at_fork(after_in_child=_fresh_temp_prefix)


def temp_name(name: str, *, unguessable: bool = False) -> str:
    """``.NAME.dmtmp-SUFFIX`` for ``name``, within ``NAME_MAX`` (a long name keeps its
    start). ``unguessable``: 128 random bits instead of the per-process counter, for
    files another program creates by name (``lfs setstripe``), where ``O_EXCL`` is not
    ours to set."""
    suffix = TEMP_MARK + (
        secrets.token_hex(16) if unguessable else f"{_temp_prefix}{next(_temp_counter):x}"
    )
    raw = os.fsencode(name)
    room = NAME_MAX - 1 - len(suffix)  # the leading dot, the suffix
    if len(raw) > room:
        name = os.fsdecode(raw[:room])
    return f".{name}{suffix}"


def is_temp_for(temp: str, name: str) -> bool:
    """Whether ``temp`` is a name ``temp_name(name)`` could have given: what a journal
    claims is a temp file of ours must at least look like one."""
    mark = temp.rfind(TEMP_MARK)
    suffix = temp[mark + len(TEMP_MARK) :]
    if not temp.startswith(".") or mark < 2 or not suffix:
        return False
    if any(c not in "0123456789abcdef" for c in suffix):
        return False
    head = temp[1:mark]
    if head == name:
        return True
    # A long name keeps only its start: then the temp name fills NAME_MAX exactly.
    return len(os.fsencode(temp)) == NAME_MAX and os.fsencode(name).startswith(os.fsencode(head))


def job_temp_name(name: str, job_tag: str, key: str) -> str:
    """The temp name a job gives ``key`` (whose last component is ``name``):
    ``.NAME.dmtmp-<64 bits of sha256(job tag, key)>``, the same in every run of the
    job, so a later run finds (and reuses or removes) what a killed one left."""
    digest = hashlib.sha256(f"{job_tag}\0{key}".encode(errors="surrogateescape")).hexdigest()
    suffix = TEMP_MARK + digest[:16]
    raw = os.fsencode(name)
    room = NAME_MAX - 1 - len(suffix)
    if len(raw) > room:
        name = os.fsdecode(raw[:room])
    return f".{name}{suffix}"


def create_temp(
    tree: Beneath,
    rel: str,
    make: Callable[[int, str], T],
    *,
    unguessable: bool = False,
    fixed: str | None = None,
) -> tuple[Dir, str, T]:
    """``make(dirfd, temp)`` under a fresh temp name next to ``rel`` (``make`` must
    create it exclusively: ``O_CREAT | O_EXCL``, ``symlinkat``, ``linkat``), making the
    directory first if needed. Returns the directory, *held* (release it with
    ``tree.release`` after the rename or the removal of the temp file), the temp name
    and what ``make`` returned. A name clash takes the next name; a directory removed
    since it was cached is resolved again, once.

    ``fixed`` (``job_temp_name``) is tried first: what stands under it is a leftover
    of an earlier run of the same job (or something planted there), so it is unlinked
    (a symlink is removed, never followed) and the name made afresh, exclusively; if
    it is taken again (or is a directory), fresh names are taken as above."""
    head, name = split(rel)
    retried = False
    tries = [fixed, fixed] if fixed is not None else []
    for attempt in range(8 + len(tries)):
        d = tree.hold(head, create=True)
        temp = tries[attempt] if attempt < len(tries) else temp_name(name, unguessable=unguessable)
        try:
            return d, temp, make(d.fd, temp)
        except FileExistsError:
            if attempt == 0 and fixed is not None:
                try:
                    os.unlink(temp, dir_fd=d.fd)  # an earlier run's leftover
                except OSError:
                    tries = [fixed]  # a directory, or gone: go on with fresh names
            tree.release(d)  # somebody's leftover (or plant) under this name: the next one
        except FileNotFoundError:
            stale = not retried and head != "" and removed(d.fd)
            tree.release(d)
            if not stale:
                raise
            tree.forget(head)  # removed since: resolve (and make) it again
            retried = True
        except BaseException:
            tree.release(d)
            raise
    raise FileExistsError(errno.EEXIST, "no free temp file name", rel)


class ChildKeys:
    """Which keys under a destination root can be paths at all (``child_key``): the
    text of the key only, so a plan costs no system call per file. Whether the parents
    on disk are real directories is decided when writing, beneath the root's
    descriptor. Remembers, under roots that ignore case, the keys seen so far by their
    folded name (bounded by the tree)."""

    def __init__(self, case_insensitive: bool | None = None) -> None:
        #: None: probe each destination root; True/False: known (tests, odd mounts).
        self.case_insensitive = case_insensitive
        self._case_folding: dict[str, bool] = {}
        # Folded name -> first key, only for roots that ignore case (bounded by the tree).
        self._case_seen: dict[str, dict[str, str]] = {}

    def child_key(self, root: str, rel: str) -> str:
        """Refuse keys that can't be a path under ``root``: absolute, empty or
        ``.``/``..`` components, NUL, components over ``NAME_MAX`` bytes, a path over
        ``PATH_MAX``, or (under a root that ignores case) a key differing from an
        earlier one only by case."""
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
        elif len(f"/{root}{rel}".encode("utf-8", "surrogateescape")) >= PATH_MAX:
            why = f"its path is longer than PATH_MAX ({PATH_MAX} bytes)"
        if why is None and self.folds_case(root):
            seen = self._case_seen.setdefault(root, {})
            other = seen.setdefault(rel.casefold(), rel)
            if other != rel:
                why = f"it differs from {other!r} only by case, and {root!r} ignores case"
        if why is not None:
            raise UnsafePath(f"refusing key {rel!r}: {why}", key=rel)
        return root + rel

    def folds_case(self, root: str) -> bool:
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


def walk_temps(tree: Beneath, rel_dir: str, base: str, name_prefix: str) -> Iterator[PendingUpload]:
    """Temp files ``.NAME.dmtmp-*`` in the directory ``rel_dir`` of ``tree`` (whose
    keys start with ``base``, a key prefix ending in ``/`` or empty) whose ``NAME``
    starts with ``name_prefix``, and every temp file below the subdirectories whose
    name starts with it (symlinks are not followed; directories that can't be read are
    passed over)."""
    try:
        entries = sorted(tree.listdir(rel_dir))
    except OSError:
        return  # missing, not a directory, or unreadable: nothing to find there
    for name, st in entries:
        if isinstance(st, OSError):
            continue
        if statmod.S_ISDIR(st.st_mode) and name.startswith(name_prefix):
            child = f"{rel_dir}/{name}" if rel_dir else name
            yield from walk_temps(tree, child, f"{base}{name}/", "")
            continue
        mark = name.find(TEMP_MARK)
        target = name[1:mark]
        if not (statmod.S_ISREG(st.st_mode) and name.startswith(".") and mark > 1):
            continue
        if not target.startswith(name_prefix):
            continue
        yield PendingUpload(
            key=base + target,
            initiated=st.st_mtime_ns / 1e9,
            size=st.st_size,
            token={"temp_path": "/" + base + name},
        )
