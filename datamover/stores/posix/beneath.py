"""``Beneath``: one directory opened once, and every name below it reached without
leaving it. The POSIX store writes, links, changes attributes, deletes and (unless it
follows links on purpose) reads through it; the mount is meant to open its files
through it too.

The contract, which is what confinement means for datamover:

* **The root** is opened once, the first time a call needs it, by its path as the
  caller named it: symlinks on the way *to* the root, and one at the root's own place,
  are the caller's choice and are followed. A root that does not exist is made
  (``mkdir -p``) by the first call that may create. It is never looked up again.
* **Below the root nothing is followed.** Names are ``/``-separated relative paths of
  plain components (no empty, ``.`` or ``..`` component: ``ChildKeys`` checked them).
  A name's parent directory is reached from the root (or from the nearest cached
  ancestor) with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
  RESOLVE_NO_MAGICLINKS)`` where the kernel has it (Linux >= 5.6; probed once), else
  one ``openat(O_DIRECTORY | O_NOFOLLOW)`` per component. The operation itself is the
  ``*at`` system call on that directory's descriptor, with ``O_NOFOLLOW`` /
  ``AT_SYMLINK_NOFOLLOW``: a symlink at the name itself is opened as nothing, replaced
  (``rename``), removed (``unlink``) or refused, never written through. A parent that
  is a symlink or not a directory raises ``NotBeneath``; nothing is made there.
* **Directory descriptors are cached**: at most ``dir_cache`` per tree (least
  recently used closed first; one in use is never closed, so in-flight operations
  can briefly hold more), so a tree of many small files opens each directory once per
  run, not once per file. A cached directory is the directory that was opened: if
  somebody renames it elsewhere during the run, what this run still puts in it follows
  it there (renaming needs write permission on both places, so this can't aim a write
  anywhere its mover could not write already). One that was removed is noticed (its
  link count is 0) and the name resolved again.
* Every method raises ``OSError`` (``NotBeneath`` for the refusals above,
  ``FileNotFoundError`` for what is missing) and is safe to call from several threads
  at once. ``close`` closes every descriptor; a closed tree opens its root again on
  next use.

Holding a directory (``hold``/``release``, or ``directory()`` as a context manager)
gives its descriptor for several ``*at`` calls in a row: a writer holds its target
directory from the temp file's creation to the rename, so both happen in one
directory whatever the path does meanwhile.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import errno
import os
import stat
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Directory descriptors one tree keeps open (least recently used closed first). A
#: copy walks its tree depth first, so this covers the directories being written in
#: with room to spare; each costs one file descriptor.
DIR_CACHE = 128

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: A directory we may search but not read (mode 0311, not root): a path descriptor
#: still serves every ``*at`` call, just not a listing or an ``fsync``.
_O_DIR_PATH = getattr(os, "O_PATH", 0) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
_SYS_OPENAT2 = 437  # the same number on every Linux architecture since 5.6


class NotBeneath(OSError):
    """A parent of the name is a symlink (``errno`` ``ELOOP``) or not a directory
    (``ENOTDIR``): reaching the name would leave the tree, or there is no directory to
    put it in. Nothing was made or changed."""


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


class _Openat2:
    """``openat2(2)`` through libc's ``syscall`` (Python has no wrapper). Whether the
    kernel (and a seccomp filter, in containers) lets it through is probed once."""

    def __init__(self) -> None:
        self.available: bool | None = None
        self._call: Callable[..., int] | None = None
        name = ctypes.util.find_library("c") if sys.platform == "linux" else None
        if name:
            syscall = ctypes.CDLL(name, use_errno=True).syscall
            syscall.restype = ctypes.c_long
            self._call = syscall
        else:
            self.available = False

    def __call__(self, dirfd: int, path: str, flags: int) -> int:
        assert self._call is not None
        how = _OpenHow(flags, 0, _RESOLVE)
        fd = self._call(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_int(dirfd),
            ctypes.c_char_p(os.fsencode(path)),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        return int(fd)

    def usable(self, dirfd: int) -> bool:
        if self.available is None:
            try:
                os.close(self(dirfd, ".", _O_DIR))
                self.available = True
            except OSError:  # ENOSYS (kernel < 5.6), EPERM (seccomp), ...
                self.available = False
        return self.available


OPENAT2 = _Openat2()


class Dir:
    """A held directory: ``fd`` stays open until ``Beneath.release``."""

    __slots__ = ("_dev", "dropped", "fd", "refs", "rel")

    def __init__(self, rel: str, fd: int) -> None:
        self.rel = rel
        self.fd = fd
        self.refs = 1
        self.dropped = False
        self._dev: int | None = None

    @property
    def dev(self) -> int:
        """``st_dev`` of the directory (one ``fstat``, the first time)."""
        if self._dev is None:
            self._dev = os.fstat(self.fd).st_dev
        return self._dev


def _open_dir_at(dirfd: int, name: str) -> int:
    """``name`` in ``dirfd`` as a directory, never through a symlink."""
    try:
        try:
            return os.open(name, _O_DIR, dir_fd=dirfd)
        except PermissionError:
            if not hasattr(os, "O_PATH"):
                raise
            return os.open(name, _O_DIR_PATH, dir_fd=dirfd)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        code = e.errno
        if code == errno.ENOTDIR:  # O_DIRECTORY answers ENOTDIR for a symlink too: which?
            with contextlib.suppress(OSError):
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                code = errno.ELOOP if stat.S_ISLNK(st.st_mode) else code
        raise NotBeneath(code, os.strerror(code), name) from e


def removed(fd: int) -> bool:
    """Whether the directory open at ``fd`` has been removed (no name links to it)."""
    try:
        return os.fstat(fd).st_nlink == 0
    except OSError:
        return True


def split(rel: str) -> tuple[str, str]:
    """``(parent, name)`` of a relative name; the parent of a top-level name is ``""``."""
    head, _, name = rel.rpartition("/")
    return head, name


class _Held:
    """A held directory as a context manager (a class, not a generator: it is on the
    path of every file)."""

    __slots__ = ("d", "tree")

    def __init__(self, tree: Beneath, d: Dir) -> None:
        self.tree, self.d = tree, d

    def __enter__(self) -> Dir:
        return self.d

    def __exit__(self, *exc: object) -> None:
        self.tree.release(self.d)


class Beneath:
    """The tree below one directory; see the module docstring for the contract.

    ``path`` is the root as the caller named it (absolute). ``dir_cache`` bounds the
    directory descriptors kept open (0: none kept, each call opens what it needs).
    ``use_openat2=False`` forces the component walk (tests; kernels that lie)."""

    def __init__(self, path: str, *, dir_cache: int = DIR_CACHE, use_openat2: bool = True) -> None:
        self.path = path.rstrip("/") or "/"
        self._lock = threading.Lock()
        self._root: Dir | None = None
        self._dirs: collections.OrderedDict[str, Dir] = collections.OrderedDict()
        self._max = max(0, dir_cache)
        self._openat2 = OPENAT2 if use_openat2 else None

    def __repr__(self) -> str:
        return f"Beneath({self.path!r})"

    # -- the root and the directory cache ------------------------------------------------

    def root(self, *, create: bool = False) -> Dir:
        """The root, held (``release`` it), opened the first time (made first, with
        ``create``, if missing)."""
        with self._lock:
            root = self._root
            if root is None:
                flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
                try:
                    fd = os.open(self.path, flags)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.makedirs(self.path, exist_ok=True)
                    fd = os.open(self.path, flags)
                root = self._root = Dir("", fd)
                root.refs = 0
            root.refs += 1
            return root

    def hold(self, rel_dir: str, *, create: bool = False, mode: int = 0o777) -> Dir:
        """The directory ``rel_dir`` (``""``: the root), made first with ``create``
        (``mkdir`` of each missing component: ``mode`` for the last, ``0777`` for the
        others, less the umask), held open until ``release``. Raises ``NotBeneath``
        when a component is a symlink or not a directory (the last one included),
        ``FileNotFoundError`` when missing."""
        if rel_dir == "":
            return self.root(create=create)
        with self._lock:
            d = self._dirs.get(rel_dir)
            if d is not None:
                d.refs += 1
                self._dirs.move_to_end(rel_dir)
                return d
            parts = rel_dir.split("/")
            base, start = None, 0
            for i in range(len(parts) - 1, 0, -1):
                base = self._dirs.get("/".join(parts[:i]))
                if base is not None:
                    base.refs += 1
                    start = i
                    break
        if base is None:
            base = self.root(create=create)
        try:
            return self._resolve(base, parts, start, create, mode)
        except FileNotFoundError:
            if base.rel == "" or not removed(base.fd):
                raise
            self.forget(base.rel)  # a cached ancestor was removed too: from the root
        finally:
            self.release(base)
        root = self.root(create=create)
        try:
            return self._resolve(root, parts, 0, create, mode)
        finally:
            self.release(root)

    def release(self, d: Dir) -> None:
        with self._lock:
            d.refs -= 1
            if d.dropped:
                if d.refs == 0:
                    os.close(d.fd)
            elif d.rel != "":  # the root stays open until close()
                self._evict()

    def directory(self, rel_dir: str, *, create: bool = False) -> _Held:
        """``with tree.directory(rel_dir) as d``: ``hold`` for the length of the block."""
        return _Held(self, self.hold(rel_dir, create=create))

    def _resolve(self, base: Dir, parts: list[str], start: int, create: bool, mode: int) -> Dir:
        """Open ``parts[start:]`` below ``base`` (held by the caller): one ``openat2``
        when the kernel has it and nothing is to be made, else component by component
        (each opened directory cached on the way)."""
        opener = self._openat2
        if opener is not None and opener.usable(base.fd):
            try:
                fd = opener(base.fd, "/".join(parts[start:]), _O_DIR)
                return self._insert("/".join(parts), fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.EXDEV):
                    raise NotBeneath(errno.ELOOP, os.strerror(errno.ELOOP), "/".join(parts)) from e
                if e.errno == errno.ENOENT and not create:
                    raise FileNotFoundError(e.errno, e.strerror, "/".join(parts)) from e
                # ENOENT: made below, component by component; ENOTDIR (a file, or a
                # symlink: the walk tells which), EAGAIN (a rename raced the lookup),
                # EACCES (no read permission): the walk copes.
        current = base
        try:
            for i in range(start, len(parts)):
                name = parts[i]
                try:
                    fd = _open_dir_at(current.fd, name)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        last = i == len(parts) - 1
                        os.mkdir(name, mode if last else 0o777, dir_fd=current.fd)
                    except FileExistsError:
                        pass  # made meanwhile by another writer (or a non-directory: below)
                    fd = _open_dir_at(current.fd, name)
                child = self._insert("/".join(parts[: i + 1]), fd)
                if current is not base:
                    self.release(current)
                current = child
        except BaseException:
            if current is not base:
                self.release(current)
            raise
        return current

    def _insert(self, rel: str, fd: int) -> Dir:
        """Cache ``fd`` as ``rel`` and hold it (or hold the one another thread cached
        meanwhile, closing ``fd``)."""
        with self._lock:
            d = self._dirs.get(rel)
            if d is not None:
                os.close(fd)
                d.refs += 1
                self._dirs.move_to_end(rel)
                return d
            d = Dir(rel, fd)
            self._dirs[rel] = d
            self._evict()
            return d

    def _evict(self) -> None:
        """Close least recently used directories nobody holds (lock held)."""
        while len(self._dirs) > self._max:
            victim = next((d for d in self._dirs.values() if d.refs == 0), None)
            if victim is None:
                return  # all in use: over the bound until they are released
            del self._dirs[victim.rel]
            os.close(victim.fd)

    def forget(self, rel: str) -> None:
        """Drop ``rel`` and every cached directory below it (removed, renamed, or found
        stale): the next use resolves the name again."""
        prefix = rel + "/"
        with self._lock:
            for key in [k for k in self._dirs if k == rel or k.startswith(prefix)]:
                d = self._dirs.pop(key)
                d.dropped = True
                if d.refs == 0:
                    os.close(d.fd)

    def close(self) -> None:
        """Close every descriptor, the root's too; one still held is closed at its
        ``release`` (never earlier: its number can't be reused under its holder)."""
        with self._lock:
            root, self._root = self._root, None
            for d in [*self._dirs.values(), *([root] if root is not None else [])]:
                d.dropped = True
                if d.refs == 0:
                    os.close(d.fd)
            self._dirs.clear()

    # -- operations on one name ------------------------------------------------------------

    def at(self, rel: str, fn: Callable[[int, str], T], *, create: bool = False) -> T:
        """``fn(parent_fd, name)`` with ``rel``'s parent directory held (made first with
        ``create``). When ``fn`` finds nothing there and that directory turns out to
        have been removed since it was cached, the name is resolved again, once."""
        head, name = split(rel)
        for attempt in (0, 1):
            d = self.hold(head, create=create)
            try:
                return fn(d.fd, name)
            except FileNotFoundError:
                if attempt or head == "" or not removed(d.fd):
                    raise
                self.forget(head)
            finally:
                self.release(d)
        raise AssertionError("unreachable")

    def open(self, rel: str, flags: int, mode: int = 0o666) -> int:
        """``openat`` of ``rel`` with ``flags | O_NOFOLLOW | O_CLOEXEC`` (a symlink there
        gives ``ELOOP``); with ``O_CREAT``, missing parents are made first. Pass
        ``O_EXCL`` to create a name nobody else holds."""
        flags |= os.O_NOFOLLOW | os.O_CLOEXEC
        return self.at(
            rel,
            lambda fd, name: os.open(name, flags, mode, dir_fd=fd),
            create=bool(flags & os.O_CREAT),
        )

    def stat(self, rel: str) -> os.stat_result:
        """``lstat`` of ``rel`` (``""``: the root)."""
        if rel == "":
            with self.directory("") as root:
                return os.fstat(root.fd)
        return self.at(rel, lambda fd, name: os.stat(name, dir_fd=fd, follow_symlinks=False))

    def readlink(self, rel: str) -> str:
        return self.at(rel, lambda fd, name: os.readlink(name, dir_fd=fd))

    def mkdir(self, rel: str, mode: int = 0o777) -> Dir:
        """``rel`` as a directory, made (with its parents) if missing, held: ``hold``
        with ``create``. A symlink or a file there raises ``NotBeneath``."""
        return self.hold(rel, create=True, mode=mode)

    def unlink(self, rel: str) -> None:
        """Remove the name ``rel`` (a symlink there is removed, not followed)."""
        self.at(rel, lambda fd, name: os.unlink(name, dir_fd=fd))

    def rmdir(self, rel: str) -> None:
        """Remove the empty directory ``rel``."""
        self.at(rel, lambda fd, name: os.rmdir(name, dir_fd=fd))
        self.forget(rel)

    def symlink(self, target: str | bytes, rel: str) -> None:
        """Make ``rel`` a symlink to ``target`` (the text is stored, never resolved);
        parents are made as needed."""
        self.at(rel, lambda fd, name: os.symlink(target, name, dir_fd=fd), create=True)

    def link(self, src_rel: str, dst_rel: str) -> None:
        """Make ``dst_rel`` a hard link to the entry at ``src_rel`` (a symlink there is
        linked itself, never followed); ``dst_rel``'s parents are made as needed."""
        src_head, src_name = split(src_rel)
        with self.directory(src_head) as src:
            self.at(
                dst_rel,
                lambda fd, name: os.link(
                    src_name, name, src_dir_fd=src.fd, dst_dir_fd=fd, follow_symlinks=False
                ),
                create=True,
            )

    def rename(self, src_rel: str, dst_rel: str) -> None:
        """``renameat`` within the tree (replacing what ``dst_rel`` names, as
        ``rename(2)`` does); cached directories under ``src_rel`` are forgotten."""
        src_head, src_name = split(src_rel)
        with self.directory(src_head) as src:
            self.at(
                dst_rel,
                lambda fd, name: os.rename(src_name, name, src_dir_fd=src.fd, dst_dir_fd=fd),
            )
        self.forget(src_rel)
        self.forget(dst_rel)

    def listdir(self, rel_dir: str) -> list[tuple[str, os.stat_result | OSError]]:
        """The entries of directory ``rel_dir`` (``""``: the root), each with its
        ``lstat`` (or the error that gave). The directory is read through a descriptor
        of its own (a listing never moves a shared descriptor's position)."""
        with self.directory(rel_dir) as d:
            fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=d.fd)
        try:
            out: list[tuple[str, os.stat_result | OSError]] = []
            with os.scandir(fd) as it:
                for entry in it:
                    try:
                        out.append((entry.name, entry.stat(follow_symlinks=False)))
                    except FileNotFoundError:
                        continue  # removed between readdir and stat
                    except OSError as e:
                        out.append((entry.name, e))
            return out
        finally:
            os.close(fd)


def fd_path(dirfd: int, name: str = "") -> str:
    """A path naming ``name`` in the directory open at ``dirfd`` for calls that take
    only paths (``getxattr``, a child process such as ``lfs``): ``/proc/self/fd/N``
    resolves to that very directory, whatever its path is now."""
    base = f"/proc/self/fd/{dirfd}"
    return f"{base}/{name}" if name else base
