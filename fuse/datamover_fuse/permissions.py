"""Who may change what: the POSIX ownership rules the core applies itself.

The mount is mounted with ``default_permissions``: the kernel checks every access
(read, write, search, create, delete, sticky directories) against the mode and owner
the mount reports, and refuses with EACCES/EPERM before a request reaches the core.
The core applies the same rules once more where the kernel's view can be older than
the store's, and where the kernel leaves the work to the filesystem:

* **Ownership changes** (``check_setattr``): only root changes a file's owner; the
  owner may change its group to one of their groups; only the owner or root changes
  the mode (anyone may drop the set-ID bits: the kernel does so for a writer); a
  non-root caller who is not in the file's (new) group loses ``S_ISGID``.
  Times are left to the kernel: pyfuse3 does not tell ``UTIME_NOW`` (any writer may)
  from an explicit time (owner only).
* **New entries** (``new_owner``): in a directory with ``S_ISGID`` a new entry gets
  the directory's group, and a new directory keeps ``S_ISGID`` (the kernel leaves
  both to the filesystem); else the caller's group.

A ``Caller`` carries the request's uid, gid and supplementary groups (read from
``/proc/<pid>/status``; the primary group alone when that can't be read).
"""

from __future__ import annotations

import errno
import stat as statmod
from dataclasses import dataclass

from datamover_fuse.fserrors import FsError
from datamover_fuse.inodes import Inode, SetAttrs


@dataclass(frozen=True, slots=True)
class Caller:
    uid: int
    gid: int
    groups: frozenset[int] = frozenset()

    @property
    def root(self) -> bool:
        return self.uid == 0

    def in_group(self, gid: int) -> bool:
        return gid == self.gid or gid in self.groups

    @classmethod
    def of(cls, uid: int, gid: int, pid: int) -> Caller:
        """The caller of a request, with its supplementary groups from ``/proc``."""
        return cls(uid, gid, frozenset(_groups(pid)))


def _groups(pid: int) -> list[int]:
    if pid <= 0:
        return []
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Groups:"):
                    return [int(g) for g in line.split()[1:]]
    except (OSError, ValueError):
        pass
    return []


def check_setattr(node: Inode, changes: SetAttrs, caller: Caller) -> None:
    """EPERM when ``caller`` may not make ``changes`` to ``node`` (see the module
    docstring); clears ``S_ISGID`` from a new mode the caller may not keep."""
    if caller.root:
        return
    owner = caller.uid == node.uid
    if changes.uid is not None and changes.uid != node.uid:
        raise FsError(errno.EPERM, "only root changes an owner")
    if (
        changes.gid is not None
        and changes.gid != node.gid
        and not (owner and caller.in_group(changes.gid))
    ):
        raise FsError(errno.EPERM, "only the owner changes the group, to one of theirs")
    if changes.mode is not None:
        kill = statmod.S_IMODE(node.mode) & ~(statmod.S_ISUID | statmod.S_ISGID)
        if not owner and statmod.S_IMODE(changes.mode) != kill:
            # (The kernel drops set-ID bits for a non-owner who writes: allowed.)
            raise FsError(errno.EPERM, "only the owner changes the mode")
        gid = changes.gid if changes.gid is not None else node.gid
        if changes.mode & statmod.S_ISGID and not caller.in_group(gid):
            changes.mode &= ~statmod.S_ISGID


def new_owner(parent: Inode, mode: int, caller_gid: int, *, is_dir: bool) -> tuple[int, int]:
    """``(gid, mode)`` of a new entry in ``parent``: set-group-ID directories pass
    their group on (and, to new directories, the bit itself)."""
    if not parent.mode & statmod.S_ISGID:
        return caller_gid, mode
    if is_dir:
        mode |= statmod.S_ISGID
    return parent.gid, mode
