"""``PosixStore``: the ``Store`` interface over a POSIX tree. Reads and listings are
here; writes go through ``writer``, key checks and temp names through ``paths``,
attributes through ``attrs``, Lustre layouts through ``lustre``, and every name below a
confined root through ``beneath``. The package docstring says what the store promises."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat as statmod
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import FrameType
from typing import Any

from datamover.checksums import PartDigests
from datamover.errors import (
    DatamoverError,
    NotFound,
    SourceChanged,
    StoreError,
    UnsafePath,
    UsageError,
)
from datamover.stores.base import (
    HARDLINK_KEY,
    VERIFIED_READBACK,
    Buffer,
    ChunkWriter,
    Features,
    GiB,
    ObjectInfo,
    PartLimits,
    PendingUpload,
    Store,
    TiB,
)
from datamover.stores.posix.attrs import info_from_stat, parse_attrs, read_xattrs
from datamover.stores.posix.beneath import DIR_CACHE, Beneath, NotBeneath, fd_path, split
from datamover.stores.posix.durability import Durability
from datamover.stores.posix.errors import map_oserror
from datamover.stores.posix.fsops import PosixFsOps
from datamover.stores.posix.lustre import (
    LUSTRE_MAGIC,
    STRIPE_COUNT,
    STRIPE_SIZE,
    lfs_getstripe,
    parse_layout,
    statfs_type,
)
from datamover.stores.posix.paths import (
    PATH_MAX,
    TEMP_MARK,
    ChildKeys,
    is_temp_for,
    job_temp_name,
    walk_temps,
)
from datamover.stores.posix.sparse import read_sparse
from datamover.stores.posix.writer import PosixWriter, make_dir, make_hardlink, make_symlink
from datamover.stores.urls import Location

#: A directory's entries, each with its stat or the error that gave.
_Entries = list[tuple[str, os.stat_result | OSError]]
_O_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO swapped in won't hang


def _as_dir(key: str) -> str:
    return key if key == "" or key.endswith("/") else key + "/"


def _too_long(key: str) -> bool:
    return len(os.fsencode("/" + key)) >= PATH_MAX


def _why(e: OSError) -> str:
    """A listed entry's problem, from the error its ``stat`` gave."""
    if e.errno == errno.ELOOP:
        return "can't be read: a symlink loop"
    if e.errno == errno.ENAMETOOLONG:
        return f"path longer than PATH_MAX ({PATH_MAX})"
    if e.errno == errno.ENOENT:  # only a link's target can be missing from a listing
        return (
            "a dangling symlink, its target does not exist "
            "(exclude it, or copy without -L to keep it as a link)"
        )
    return f"can't be read: {e.strerror}"


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """On the main thread, a SIGINT or SIGTERM with a Python handler (Ctrl-C's
    ``KeyboardInterrupt``) that arrives inside the block is held and handled when it
    ends: a writer is opened and registered for ``close`` as one step, never left
    holding its temp file and directory open, unregistered, by an interrupt in
    between (the scheduler opens writers on the main thread). Elsewhere a no-op:
    Python runs signal handlers on the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[tuple[int, FrameType | None]] = []
    before: dict[int, Callable[[int, FrameType | None], Any]] = {}

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append((signum, frame))

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(sig)
            if callable(handler):
                before[sig] = handler
                signal.signal(sig, hold)
        yield
    finally:
        for num, handler in before.items():
            signal.signal(num, handler)
        if held:
            first, frame = held[0]
            before[first](first, frame)


class _Place:
    """``(tree, rel)`` for a ``with`` block; a tree made for the block is closed after
    it. (A class, not a generator: this is on every read and write.)"""

    __slots__ = ("owned", "rel", "tree")

    def __init__(self, tree: Beneath, rel: str, *, owned: bool) -> None:
        self.tree, self.rel, self.owned = tree, rel, owned

    def __enter__(self) -> tuple[Beneath, str]:
        return self.tree, self.rel

    def __exit__(self, *exc: object) -> None:
        if self.owned:
            self.tree.close()


class PosixStore(Store):
    scheme = "file"
    fs_ops_class = PosixFsOps
    features = Features(
        local=True,
        real_dirs=True,
        hardlinks=True,
        max_metadata_bytes=1 << 20,
        listing_metadata=True,
        native_mtime=True,
        resumable_writes=True,
        reads_back_puts=True,
    )
    # No provider limits; these keep part counts and buffers sane.
    limits = PartLimits(
        min_part_size=1, max_part_size=4 * GiB, max_parts=1_000_000, max_single_put=64 * TiB
    )

    def __init__(
        self,
        *,
        follow_symlinks: bool = False,
        xattrs: bool = False,
        fs_type: Callable[[str], int | None] = statfs_type,
        case_insensitive: bool | None = None,
        durability: str = "file",
        preserve_setid: bool = False,
        dir_cache: int = DIR_CACHE,
        use_openat2: bool = True,
    ) -> None:
        self.follow_symlinks = follow_symlinks
        self.durability = Durability(durability)
        self.xattrs = xattrs
        self.preserve_setid = preserve_setid
        self._fs_type = fs_type
        self._lustre: dict[int, bool] = {}
        self._keys = ChildKeys(case_insensitive)
        self._dir_cache = dir_cache
        self._use_openat2 = use_openat2
        self._trees_lock = threading.Lock()
        self._job_tag: str | None = None
        #: Confined roots and their trees, longest root first (replaced, never mutated,
        #: so readers need no lock).
        self._trees: tuple[tuple[str, Beneath], ...] = ()
        #: Multipart writers not yet committed or aborted: ``close`` lets go of their
        #: descriptors (a stopped run keeps their temp files for a resume).
        self._writers: weakref.WeakSet[PosixWriter] = weakref.WeakSet()
        self._writers_lock = threading.Lock()
        self._closed = False

    def _keep_writer(self, writer: PosixWriter, *, resumed: bool = False) -> PosixWriter:
        """Register ``writer`` for ``close``. One opened while (or after) the store
        closed, by a worker still finishing when a Ctrl-C stopped the run, lets go of
        its descriptors at once instead (they would outlive the sweep): a new temp
        file is removed, a resumed one kept for the next resume."""
        with self._writers_lock:
            if not self._closed:
                self._writers.add(writer)
                return writer
        if resumed:
            writer.release()
        else:
            writer.abort()
        raise StoreError(f"/{writer.key}: the store was closed; not written", key=writer.key)

    @classmethod
    def from_location(cls, loc: Location, settings: object) -> PosixStore:
        extra = getattr(settings, "extra", {}) or {}
        return cls(
            follow_symlinks=bool(extra.get("copy_links")),
            xattrs=bool(extra.get("xattrs")),
            durability=str(extra.get("durability") or "file"),
            preserve_setid=bool(extra.get("preserve_setid")),
        )

    def sync(self) -> None:
        try:
            self.durability.sync()
        except OSError as e:
            raise map_oserror(e, "") from e

    def url(self, key: str = "") -> str:
        return "/" + key

    def local_path(self, key: str) -> str | None:
        return "/" + key.rstrip("/")

    def place(self, key: str, *, resolve: bool = False) -> str | None:
        """``file://`` and the real path: symlinks on the way are followed, as the
        copy follows them to its roots (and ``..`` taken after them, as the kernel
        does). A name that is a symlink is itself unless ``resolve`` or a directory
        is meant (``key`` ending in ``/``)."""
        path = "/" + key.rstrip("/")
        if key == "" or key.endswith("/"):
            real = os.path.realpath(path)
            return "file://" + real.rstrip("/") + "/"
        if resolve:
            return "file://" + os.path.realpath(path)
        head, name = os.path.split(path)
        return "file://" + os.path.join(os.path.realpath(head), name)

    # -- where a key lives: a confined tree, or its parent directory as named ---------------

    def confine(self, root: str) -> None:
        """Open ``root`` once (when first used) and reach every key below it beneath its
        descriptor (``beneath.Beneath``): see ``Store.confine``."""
        root = _as_dir(root)
        with self._trees_lock:
            if any(r == root for r, _ in self._trees):
                return
            tree = Beneath("/" + root, dir_cache=self._dir_cache, use_openat2=self._use_openat2)
            trees = [*self._trees, (root, tree)]
            trees.sort(key=lambda rt: len(rt[0]), reverse=True)
            self._trees = tuple(trees)

    def _confined(self, key: str) -> tuple[Beneath, str] | None:
        """The tree of the longest confined root strictly above ``key``, and ``key``'s
        name in it (without a trailing ``/``)."""
        for root, tree in self._trees:
            if key.startswith(root) and len(key.rstrip("/")) > len(root):
                return tree, key[len(root) :].rstrip("/")
        return None

    def beneath(self, key: str) -> _Place:
        """``with store.beneath(key) as (tree, rel)``: the confined tree ``key`` is in
        and its name there; for a key under no confined root, a tree at its parent
        directory, opened by the path as given (and closed after the block), and its
        last name. Everything done through ``tree`` to ``rel`` follows no symlink at
        ``rel`` or (in a confined tree) above it up to the root. The mount's
        descriptor-based operations are meant to start here: ``tree.open(rel, flags)``,
        ``tree.mkdir``, ``tree.rename``, ..."""
        found = self._confined(key)
        if found is not None:
            return _Place(found[0], found[1], owned=False)
        parent, _, name = ("/" + key.rstrip("/")).rpartition("/")
        tree = Beneath(parent or "/", dir_cache=0, use_openat2=self._use_openat2)
        return _Place(tree, name, owned=True)

    @contextlib.contextmanager
    def _beneath_dir(self, base: str) -> Iterator[tuple[Beneath, str]]:
        """``(tree, rel_dir)`` for the directory key ``base`` (``""`` or ending in
        ``/``): a confined root at or above it, else a tree rooted at it."""
        for root, tree in self._trees:
            if base.startswith(root):
                yield tree, base[len(root) :].rstrip("/")
                return
        tree = Beneath("/" + base, dir_cache=DIR_CACHE, use_openat2=self._use_openat2)
        try:
            yield tree, ""
        finally:
            tree.close()

    def _open_for_write(self, key: str) -> tuple[Beneath, str, bool]:
        """``(tree, rel, owned)`` for a writer that outlives this call: ``owned`` when
        the tree was made for it alone (a key under no confined root), for it to close."""
        found = self._confined(key)
        if found is not None:
            return found[0], found[1], False
        directory, name = os.path.split("/" + key)
        return Beneath(directory, dir_cache=0, use_openat2=self._use_openat2), name, True

    # -- reading ----------------------------------------------------------------------

    def _extra(
        self, st: os.stat_result, path: str, xattrs_of: str | int, fds: tuple[int, ...] = ()
    ) -> dict[str, str]:
        """xattrs (with ``xattrs``) of ``xattrs_of`` (a path, not followed, or an open
        descriptor) and the Lustre layout of ``path``, a regular file. ``path`` may name
        our descriptors (``/proc/self/fd/N/...``): ``fds`` hands them to ``lfs``."""
        extra = read_xattrs(xattrs_of) if self.xattrs else {}
        if statmod.S_ISREG(st.st_mode) and self.on_lustre(path, st.st_dev):
            layout = lfs_getstripe(path, pass_fds=fds)
            if layout is not None:
                extra[STRIPE_COUNT], extra[STRIPE_SIZE] = str(layout[0]), str(layout[1])
        return extra

    def on_lustre(self, path: str, dev: int | None = None) -> bool:
        """Whether ``path`` is on Lustre (statfs magic), cached per device."""
        if dev is None:
            try:
                dev = os.stat(path).st_dev
            except OSError:
                return False
        known = self._lustre.get(dev)
        if known is None:
            known = self._lustre[dev] = self._fs_type(path) == LUSTRE_MAGIC
        return known

    def stat(self, key: str) -> ObjectInfo:
        try:
            if self.follow_symlinks:
                path = "/" + key
                st = os.stat(path)
                return info_from_stat(key, st, self._extra(st, path, path))
            with self.beneath(key) as (tree, rel):
                if rel == "":
                    st = tree.stat("")
                    return info_from_stat(key, st)
                head, name = split(rel)
                with tree.directory(head) as d:
                    st = os.stat(name, dir_fd=d.fd, follow_symlinks=False)
                    path = fd_path(d.fd, name)
                    return info_from_stat(key, st, self._extra(st, path, path, (d.fd,)))
        except OSError as e:
            raise map_oserror(e, key) from e

    def ignores_case(self, root: str) -> bool:
        return self._keys.folds_case(root)

    def child_key(self, root: str, rel: str) -> str:
        """Refuse keys that can't be a path under ``root`` (``ChildKeys``: the text
        only), and confine ``root``: the write itself never leaves it."""
        key = self._keys.child_key(root, rel)
        self.confine(root)
        return key

    def list(self, prefix: str, *, recursive: bool = True) -> Iterator[ObjectInfo]:
        """Entries in key order. Without ``copy_links`` the walk is beneath the listed
        directory (or the confined root above it): a symlink is listed as itself and
        never entered. With it, links are followed and a directory reached again below
        itself (a link loop) is listed once, with ``problem`` set. An entry whose path
        is longer than PATH_MAX, a subdirectory that can't be read and a link that
        can't be resolved (ELOOP) come with ``problem`` set instead of stopping the
        listing."""
        if not recursive and prefix and not prefix.endswith("/"):
            prefix += "/"  # one level down means "this directory", never a name prefix
        directory, _, name_prefix = prefix.rpartition("/")
        base = directory + "/" if directory else ""
        if self.follow_symlinks:
            try:
                st = os.stat("/" + base)
            except OSError:
                return
            above = {(st.st_dev, st.st_ino)}
            yield from self._walk_following(base, name_prefix, recursive, above, top=True)
            return
        with self._beneath_dir(base) as (tree, rel_dir):
            yield from self._walk(tree, rel_dir, base, name_prefix, recursive, top=True)

    @staticmethod
    def _sorted(entries: _Entries, name_prefix: str) -> _Entries:
        # Key order, not name order: a directory's keys all carry its "/", so "d.txt" <
        # "d/..." < "d0" ("." < "/" < "0").
        def order(entry: tuple[str, os.stat_result | OSError]) -> str:
            name, st = entry
            is_dir = not isinstance(st, OSError) and statmod.S_ISDIR(st.st_mode)
            return name + "/" if is_dir else name

        return sorted(
            (e for e in entries if e[0].startswith(name_prefix) and TEMP_MARK not in e[0]),
            key=order,
        )

    def _walk(
        self,
        tree: Beneath,
        rel_dir: str,
        base: str,
        name_prefix: str,
        recursive: bool,
        *,
        top: bool,
    ) -> Iterator[ObjectInfo]:
        try:
            entries = self._sorted(tree.listdir(rel_dir), name_prefix)
        except (FileNotFoundError, NotADirectoryError, NotBeneath):
            return  # missing, or (below the top) replaced by a file or a link since listed
        except OSError as e:
            if top:
                raise map_oserror(e, base) from e
            yield ObjectInfo(base, 0, is_dir=True, problem=f"can't be listed: {e.strerror}")
            return
        for name, st in entries:
            key = base + name
            if isinstance(st, OSError):
                yield ObjectInfo(key, 0, problem=_why(st))
                continue
            if statmod.S_ISDIR(st.st_mode):
                if not recursive:
                    yield ObjectInfo(key=key + "/", size=0, mtime=st.st_mtime_ns / 1e9, is_dir=True)
                elif _too_long(key + "/"):
                    yield ObjectInfo(
                        key + "/", 0, is_dir=True, problem=f"path longer than PATH_MAX ({PATH_MAX})"
                    )
                else:
                    found = 0
                    child = f"{rel_dir}/{name}" if rel_dir else name
                    for info in self._walk(tree, child, key + "/", "", True, top=False):
                        found += 1
                        yield info
                    if not found:  # an empty directory is listed so it can be recreated
                        yield info_from_stat(key + "/", st)
            elif statmod.S_ISREG(st.st_mode) or statmod.S_ISLNK(st.st_mode):
                if _too_long(key):
                    yield ObjectInfo(
                        key, st.st_size, problem=f"path longer than PATH_MAX ({PATH_MAX})"
                    )
                    continue
                extra = None
                if self.xattrs:
                    with tree.directory(rel_dir) as d:
                        extra = read_xattrs(fd_path(d.fd, name))
                yield info_from_stat(key, st, extra)

    def _walk_following(
        self,
        base: str,
        name_prefix: str,
        recursive: bool,
        above: set[tuple[int, int]],
        *,
        top: bool,
    ) -> Iterator[ObjectInfo]:
        """``list`` with ``copy_links``: by path, following links; ``above`` holds the
        directories on the way down (``(st_dev, st_ino)``), to tell a loop."""
        entries: _Entries = []
        try:
            with os.scandir("/" + base) as it:
                for entry in it:
                    try:
                        entries.append((entry.name, entry.stat(follow_symlinks=True)))
                    except FileNotFoundError as e:
                        try:
                            os.lstat(entry.path)
                        except OSError:
                            continue  # vanished since the directory was read
                        entries.append((entry.name, e))  # a dangling link: failed, named
                    except OSError as e:
                        entries.append((entry.name, e))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            if top:
                raise map_oserror(e, base) from e
            yield ObjectInfo(base, 0, is_dir=True, problem=f"can't be listed: {e.strerror}")
            return
        for name, st in self._sorted(entries, name_prefix):
            key = base + name
            if isinstance(st, OSError):
                yield ObjectInfo(key, 0, problem=_why(st))
                continue
            if statmod.S_ISDIR(st.st_mode):
                if not recursive:
                    yield ObjectInfo(key=key + "/", size=0, mtime=st.st_mtime_ns / 1e9, is_dir=True)
                elif (st.st_dev, st.st_ino) in above:
                    yield ObjectInfo(
                        key + "/",
                        0,
                        is_dir=True,
                        problem="a symlink loop: it leads back to a directory above it",
                    )
                elif _too_long(key + "/"):
                    yield ObjectInfo(
                        key + "/", 0, is_dir=True, problem=f"path longer than PATH_MAX ({PATH_MAX})"
                    )
                else:
                    found = 0
                    inner = above | {(st.st_dev, st.st_ino)}
                    for info in self._walk_following(key + "/", "", True, inner, top=False):
                        found += 1
                        yield info
                    if not found:
                        yield info_from_stat(key + "/", st)
            elif statmod.S_ISREG(st.st_mode):
                if _too_long(key):
                    yield ObjectInfo(
                        key, st.st_size, problem=f"path longer than PATH_MAX ({PATH_MAX})"
                    )
                    continue
                extra = read_xattrs("/" + key) if self.xattrs else None
                yield info_from_stat(key, st, extra)

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        if length is None:
            # Size and bytes from one open file: a file replaced meanwhile is read whole
            # (a stat, then an open, could read the new file cut to the old size).
            fd = self._open_read(key)
            try:
                chunks = []
                while chunk := os.pread(fd, 1 << 20, offset):
                    chunks.append(chunk)
                    offset += len(chunk)
                return b"".join(chunks)
            except OSError as e:
                raise map_oserror(e, key) from e
            finally:
                os.close(fd)
        buf = bytearray(length)
        n = self.readinto(key, offset, memoryview(buf))
        del buf[n:]
        return bytes(buf)

    def _open_read(self, key: str) -> int:
        """The file ``key`` open for reading: by its path when following links, else
        beneath its tree with ``O_NOFOLLOW`` (a file replaced by a symlink since it was
        listed fails as changed, and is never read through)."""
        try:
            if self.follow_symlinks:
                return os.open("/" + key, _O_READ)
            with self.beneath(key) as (tree, rel):
                return tree.open(rel, _O_READ)
        except OSError as e:
            if e.errno == errno.ELOOP and not isinstance(e, NotBeneath):
                raise SourceChanged(
                    f"/{key}: is a symlink now, not the file it was when listed; not "
                    "followed (run again to copy it as a link)",
                    key=key,
                ) from e
            raise map_oserror(e, key) from e

    def read_object(
        self, key: str, info: ObjectInfo | None = None
    ) -> tuple[bytes | bytearray, ObjectInfo]:
        if self.follow_symlinks:
            if key.endswith("/"):
                try:
                    st = os.stat(("/" + key).rstrip("/") or "/")
                except OSError as e:
                    raise map_oserror(e, key) from e
                if statmod.S_ISDIR(st.st_mode):
                    return b"", info_from_stat(key, st)
            try:
                fd = os.open("/" + key, _O_READ)
            except OSError as e:
                raise map_oserror(e, key) from e
            return self._read_open(fd, key, "/" + key)
        try:
            with self.beneath(key) as (tree, rel):
                head, name = split(rel)
                d = tree.hold(head)
                try:
                    return self._read_at(d.fd, name, key)
                finally:
                    tree.release(d)
        except OSError as e:
            raise map_oserror(e, key) from e

    def _read_at(self, dirfd: int, name: str, key: str) -> tuple[bytes | bytearray, ObjectInfo]:
        """``read_object`` of ``name`` in ``dirfd``, not following it: a symlink's
        content is its text. Only a link or a directory costs an ``lstat`` (the
        ``O_NOFOLLOW`` open tells them: ``ELOOP``), files pay none before their open."""
        if key.endswith("/") or name == "":
            st = os.stat(name or ".", dir_fd=dirfd, follow_symlinks=False)
            if statmod.S_ISLNK(st.st_mode):
                return os.fsencode(os.readlink(name, dir_fd=dirfd)), info_from_stat(key, st)
            if statmod.S_ISDIR(st.st_mode):
                return b"", info_from_stat(key, st)
            raise SourceChanged(f"/{key}: is not a directory any more", key=key)
        try:
            fd = os.open(name, _O_READ | os.O_NOFOLLOW, dir_fd=dirfd)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if not statmod.S_ISLNK(st.st_mode):
                raise
            return os.fsencode(os.readlink(name, dir_fd=dirfd)), info_from_stat(key, st)
        return self._read_open(fd, key, None, (fd,))

    def _read_open(
        self, fd: int, key: str, path: str | None, fds: tuple[int, ...] = ()
    ) -> tuple[bytes | bytearray, ObjectInfo]:
        """The whole file open at ``fd`` (closed here) and its info, checked unchanged.
        ``path`` names it for ``lfs`` (None: ``/proc/self/fd/N`` of ``fd``)."""
        try:
            before = os.fstat(fd)
            if statmod.S_ISDIR(before.st_mode):
                return b"", info_from_stat(key.rstrip("/") + "/", before)
            if not statmod.S_ISREG(before.st_mode):
                raise UnsafePath(f"/{key}: is not a regular file (any more); not read", key=key)
            # One byte more than expected: a file that grew is noticed, not truncated.
            # A short read at the expected size is the end of the file (the fstat
            # after it still catches a change), so it takes no second, empty read.
            buf = bytearray(before.st_size + 1)
            view = memoryview(buf)
            total = 0
            while total < len(view):
                n = os.preadv(fd, [view[total:]], total)
                if n == 0:
                    break
                total += n
                if total == before.st_size:
                    break
            after = os.fstat(fd)
            extra = self._extra(before, path or fd_path(fd), fd, fds) if self.xattrs else None
        except OSError as e:
            raise map_oserror(e, key) from e
        finally:
            os.close(fd)
        if (
            total != before.st_size
            or after.st_size != before.st_size
            or after.st_mtime_ns != before.st_mtime_ns
        ):
            raise SourceChanged(
                f"/{key}: changed while being read (size {before.st_size} -> {after.st_size})",
                key=key,
            )
        del view
        del buf[total:]
        return buf, info_from_stat(key, before, extra)

    def readinto(
        self, key: str, offset: int, buf: memoryview, *, expect: ObjectInfo | None = None
    ) -> int:
        # Each call opens the path anew: ``expect``'s size and mtime stand for its
        # version (a file replaced or rewritten since is another; copies compare them
        # again before they commit).
        fd = self._open_read(key)
        try:
            if expect is not None and expect.mtime is not None:
                st = os.fstat(fd)
                if st.st_size != expect.size or st.st_mtime_ns / 1e9 != expect.mtime:
                    raise SourceChanged(
                        f"{self.url(key)}: changed while being read (its size or mtime is "
                        "not what it was); read it again for the new version",
                        key=key,
                    )
            view = buf.cast("B") if buf.format != "B" else buf
            return read_sparse(fd, view, offset)
        except OSError as e:
            raise map_oserror(e, key) from e
        finally:
            os.close(fd)

    # -- writing ----------------------------------------------------------------------

    def put(
        self,
        key: str,
        data: Buffer,
        *,
        metadata: Mapping[str, str] | None = None,
        digests: PartDigests | None = None,
    ) -> ObjectInfo:
        return self._put(key, data, metadata, digests, read_back=False)

    def put_read_back(
        self,
        key: str,
        data: Buffer,
        *,
        metadata: Mapping[str, str] | None = None,
        digests: PartDigests | None = None,
    ) -> ObjectInfo:
        """A file's temp file is read back and compared with ``data`` before its
        rename (``PosixWriter.check_holds``); directories, links and symlinks are
        made as ``put`` makes them, unverified (the caller checks them itself)."""
        return self._put(key, data, metadata, digests, read_back=True)

    def _put(
        self,
        key: str,
        data: Buffer,
        metadata: Mapping[str, str] | None,
        digests: PartDigests | None,
        *,
        read_back: bool,
    ) -> ObjectInfo:
        meta = metadata or {}
        attrs = parse_attrs(meta, key)  # bad metadata fails this file before anything is made
        parse_layout(meta, key)  # (a whole file is never striped, but its layout is checked)
        if HARDLINK_KEY in meta:
            return self._hardlink(key, meta[HARDLINK_KEY])
        if key.endswith("/"):
            with self.beneath(key) as (tree, rel):
                return make_dir(tree, rel, key, attrs, self.durability, setid=self.preserve_setid)
        if attrs.mode is not None and statmod.S_ISLNK(attrs.mode):
            with self.beneath(key) as (tree, rel):
                return make_symlink(tree, rel, key, bytes(data), attrs, self.durability)
        size = len(memoryview(data).cast("B"))
        tree, rel, owned = self._open_for_write(key)
        writer = PosixWriter(
            key,
            size,
            max(size, 1),
            tree=tree,
            rel=rel,
            owns_tree=owned,
            presize=False,
            durability=self.durability,
            create_mode=0o600 if attrs.mode is not None else 0o666,
            setid=self.preserve_setid,
            fixed_temp=self._temp_for(key),
        )
        try:
            writer.write_part(0, data, digests or PartDigests(data))
            if read_back:
                writer.check_holds(data)
                return writer.commit(meta, checked=attrs, verified=VERIFIED_READBACK)
            return writer.commit(meta, checked=attrs)
        except BaseException:
            writer.abort()
            raise

    def _hardlink(self, key: str, target_key: str) -> ObjectInfo:
        """A hard link at ``key`` to ``target_key``: both must be below one confined
        root (the destination of this run), and the target a regular file there."""
        found = self._confined(key)
        root = key[: len(key) - len(found[1])] if found is not None else None
        if found is None or root is None or not target_key.startswith(root):
            raise UnsafePath(
                f"/{key}: its hard-link target {target_key!r} is not in the destination "
                "tree this store writes; refusing this one",
                key=key,
            )
        tree, rel = found
        target_rel = self._keys.child_key(root, target_key[len(root) :])[len(root) :]
        return make_hardlink(tree, rel, key, target_rel, self.durability)

    def open_writer(
        self,
        key: str,
        *,
        size: int,
        part_size: int,
        metadata: Mapping[str, str] | None = None,
    ) -> ChunkWriter:
        if key == "" or key.endswith("/"):
            raise UsageError(f"/{key} is a directory, not a file name")
        meta = metadata or {}
        attrs = parse_attrs(meta, key)
        layout = parse_layout(meta, key)
        if layout is not None:
            directory = os.path.dirname("/" + key)
            if not self.on_lustre(directory if os.path.isdir(directory) else "/"):
                layout = None
        with _interrupts_deferred():
            tree, rel, owned = self._open_for_write(key)
            writer = PosixWriter(
                key,
                size,
                part_size,
                tree=tree,
                rel=rel,
                owns_tree=owned,
                layout=layout,
                durability=self.durability,
                create_mode=0o600 if attrs.mode is not None else 0o666,
                setid=self.preserve_setid,
                fixed_temp=self._temp_for(key),
            )
            writer.initial_metadata = dict(meta)
            return self._keep_writer(writer)

    def use_job(self, job_id: str) -> None:
        """Temp files of writes from now on are named from ``job_id`` and the key
        (``paths.job_temp_name``): the same name in every run of the job, so a later
        run reuses (journaled, resumable) or removes what a killed one left."""
        self._job_tag = job_id

    def discard_job_pieces(self, job_id: str, keys: Iterable[str]) -> None:
        """Unlink ``job_temp_name`` of each key (never followed; a directory there
        or a name that can't be reached is left alone)."""
        for key in keys:
            head, _, name = key.rpartition("/")
            temp = job_temp_name(name, job_id, key)
            try:
                self._remove(f"{head}/{temp}" if head else temp, key, directory=False)
            except DatamoverError:
                continue

    def _temp_for(self, key: str) -> str | None:
        tag = self._job_tag
        if tag is None:
            return None
        return job_temp_name(os.path.basename(key), tag, key)

    def resume_writer(
        self,
        key: str,
        *,
        size: int,
        part_size: int,
        state: Mapping[str, Any],
        metadata: Mapping[str, str] | None = None,
    ) -> PosixWriter:
        """Reopen the temp file a journal names, if it is one of ours for ``key``: a
        ``.NAME.dmtmp-*`` name in ``key``'s directory, reached like any key (no link
        followed), a regular file with one link, owned by this process, of the final
        size. Anything else raises ``NotFound`` (the file starts over)."""
        temp = state.get("temp_path")
        directory, name = os.path.split("/" + key)
        if (
            not isinstance(temp, str)
            or os.path.dirname(temp) != directory
            or not is_temp_for(os.path.basename(temp), name)
        ):
            raise NotFound(
                f"/{key}: no partial download to resume ({temp!r} is not a temp file of it)",
                key=key,
            )
        with _interrupts_deferred():
            tree, rel, owned = self._open_for_write(key)
            writer = PosixWriter(
                key,
                size,
                part_size,
                tree=tree,
                rel=rel,
                owns_tree=owned,
                resume_from=os.path.basename(temp),
                durability=self.durability,
                setid=self.preserve_setid,
            )
            if metadata:
                writer.initial_metadata = dict(metadata)
            return self._keep_writer(writer, resumed=True)

    def list_pending_uploads(self, prefix: str) -> Iterator[PendingUpload]:
        """Temp files ``.NAME.dmtmp-*`` whose target key starts with ``prefix``, found
        by walking the prefix's directory tree (symlinks are not followed; directories
        that can't be read are passed over). ``initiated`` is the temp file's mtime,
        i.e. when it was last written; ``size`` its length."""
        directory, _, name_prefix = prefix.rpartition("/")
        base = directory + "/" if directory else ""
        with self._beneath_dir(base) as (tree, rel_dir):
            yield from walk_temps(tree, rel_dir, base, name_prefix)

    def abort_pending_upload(self, upload: PendingUpload) -> None:
        temp = upload.token.get("temp_path")
        name = os.path.basename(temp) if isinstance(temp, str) else ""
        if not isinstance(temp, str) or not temp.startswith("/") or TEMP_MARK not in name[1:]:
            raise ValueError(f"/{upload.key}: not a datamover temp file token")
        self._remove(temp.lstrip("/"), upload.key, directory=False)

    def delete(self, key: str) -> None:
        """Remove the file, link (never what it points to) or, for a key ending in
        ``/``, the empty directory at ``key``; nothing there is no error. A directory
        that is not empty raises ``StoreError``."""
        self._remove(key, key, directory=key.endswith("/"))

    def _remove(self, key: str, name_for_errors: str, *, directory: bool) -> None:
        try:
            with self.beneath(key) as (tree, rel):
                if directory:
                    tree.rmdir(rel)
                else:
                    tree.unlink(rel)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise StoreError(f"/{key}: directory not empty", key=name_for_errors) from e
            raise map_oserror(e, name_for_errors) from e

    def rename(self, old_key: str, new_key: str) -> None:
        """``rename(2)`` of one name to another (replacing what the new name holds,
        as ``rename`` does), neither followed; within one confined tree by its
        descriptors. Raises ``StoreError``."""
        old, new = self._confined(old_key), self._confined(new_key)
        try:
            if old is not None and new is not None and old[0] is new[0]:
                old[0].rename(old[1], new[1])
                return
            with self.beneath(old_key) as (src_tree, src_rel):
                src_head, src_name = split(src_rel)
                with (
                    src_tree.directory(src_head) as src,
                    self.beneath(new_key) as (dst_tree, dst_rel),
                ):
                    dst_tree.at(
                        dst_rel,
                        lambda fd, name: os.rename(
                            src_name, name, src_dir_fd=src.fd, dst_dir_fd=fd
                        ),
                    )
                src_tree.forget(src_rel)
        except OSError as e:
            raise map_oserror(e, old_key) from e

    def close(self) -> None:
        # A writer left open (a run stopped by KeyboardInterrupt keeps its temp file
        # for a resume) would hold its file and directory open for the life of the
        # process: the library's caller goes on (a notebook, a workflow).
        with self._writers_lock:
            self._closed = True
            writers = list(self._writers)
        for writer in writers:
            writer.release()
        with self._trees_lock:
            trees, self._trees = self._trees, ()
        for _, tree in trees:
            tree.close()
