"""Writing into the destination tree: ``PosixWriter`` (parts ``pwrite`` into a temp
file next to the target, committed by a rename), and the directories, symlinks and hard
links ``put`` makes.

Everything is made beneath the tree's root (``beneath.Beneath``): the target's
directory is opened without following a symlink anywhere below the root and *held*
from the temp name's creation to the rename, so the temp file, its attributes and the
rename all happen in that one directory whatever its path does meanwhile. Every file
and link is made under a fresh temp name, created exclusively (``O_EXCL``,
``symlinkat``, ``linkat``), and renamed into place, so a reader of the final name sees
the old entry or the new one, and a symlink already there is replaced, never written
through. Attributes go to the open temp file (``fchmod``, ``fchown``, ``futimens``,
``fsetxattr``), never to a path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as statmod
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from datamover.checksums import PartDigests
from datamover.errors import DigestMismatch, NotFound, StoreError, UnsafePath
from datamover.posixmeta import PosixAttrs
from datamover.stores.base import Buffer, ObjectInfo, PartReceipt
from datamover.stores.posix.attrs import apply_attrs, apply_xattrs, info_from_stat, parse_attrs
from datamover.stores.posix.beneath import Beneath, Dir, NotBeneath, fd_path, split
from datamover.stores.posix.durability import Durability
from datamover.stores.posix.errors import map_oserror
from datamover.stores.posix.lustre import lfs_setstripe
from datamover.stores.posix.paths import create_temp
from datamover.stores.posix.sparse import is_zeros, write_sparse

_O_TEMP = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _replace(d: Dir, temp: str, name: str, key: str, durability: Durability) -> None:
    """Atomically put ``temp`` at ``name`` in the directory ``d`` (a link there is
    replaced, never written through), then make the rename durable as ``durability``
    says (an ``fsync`` of the directory, or noted for the next ``sync``)."""
    try:
        os.rename(temp, name, src_dir_fd=d.fd, dst_dir_fd=d.fd)
    except OSError as e:
        if e.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
            raise
        _unlink_quietly(d, temp)
        raise UnsafePath(
            f"/{key}: is a directory here (the source has a name that is both a file and "
            "a prefix); refusing this one",
            key=key,
        ) from e
    durability.renamed(d)


def _unlink_quietly(d: Dir, name: str) -> None:
    try:
        os.unlink(name, dir_fd=d.fd)
    except OSError:
        pass


def _open_lustre_temp(dirfd: int, temp: str, layout: tuple[int, int]) -> int | None:
    """The temp file ``lfs setstripe`` created with ``layout`` (None when it made none).
    ``lfs`` creates by name and can't be told ``O_EXCL``: the name is unguessable
    (``temp_name(unguessable=True)``), ``lfs`` is handed the directory we hold
    (``/proc/self/fd/N/NAME``), and what it made must be an empty regular file of ours
    with one link, opened without following a symlink."""
    try:
        os.stat(temp, dir_fd=dirfd, follow_symlinks=False)
        raise FileExistsError(errno.EEXIST, "exists", temp)  # never hand lfs a taken name
    except FileNotFoundError:
        pass
    if not lfs_setstripe(fd_path(dirfd, temp), layout, pass_fds=(dirfd,)):
        return None
    try:
        fd = os.open(temp, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dirfd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dirfd)
        raise
    st = os.fstat(fd)
    if not (
        statmod.S_ISREG(st.st_mode)
        and st.st_nlink == 1
        and st.st_uid == os.geteuid()
        and st.st_size == 0
    ):
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dirfd)
        raise UnsafePath(f"{temp}: not the empty file lfs setstripe was to make")
    return fd


class PosixWriter:
    """Parts ``pwrite`` into ``.<name>.dmtmp-<suffix>`` next to the target
    (``fixed_temp``: the job's name for it, ``paths.job_temp_name``, tried first).

    ``tree`` is the tree the key's ``rel`` lives in (a writer without one works in the
    key's parent directory, opened by its path as given); with ``owns_tree`` (or
    without a tree) the writer closes it when done.
    ``presize=False`` (whole files written at once by ``put``) leaves out the
    ``ftruncate`` to the final size unless the bytes written end short of it (a
    trailing hole); resumable writers keep it, since a resume checks the temp file's
    size. ``create_mode`` is the temp file's mode at creation (less the umask): ``0600``
    when metadata will set the mode, ``0666`` otherwise, so a file without mode
    metadata ends up ``0666 & ~umask``, as after ``cp``. ``setid``: keep set-user-ID and
    set-group-ID bits from metadata (dropped otherwise)."""

    #: Metadata given to ``open_writer``; ``commit``'s is merged over it.
    initial_metadata: Mapping[str, str] = MappingProxyType({})

    def __init__(
        self,
        key: str,
        size: int,
        part_size: int,
        *,
        tree: Beneath | None = None,
        rel: str | None = None,
        owns_tree: bool = False,
        resume_from: str | None = None,
        layout: tuple[int, int] | None = None,
        presize: bool = True,
        durability: Durability | None = None,
        create_mode: int = 0o600,
        setid: bool = False,
        fixed_temp: str | None = None,
    ) -> None:
        self._fixed_temp = fixed_temp
        #: Parts are journaled (a resumable multipart write, not ``put``'s one part).
        self._journaled = presize
        self.durability = durability or Durability("file")
        self.key = key
        self.size = size
        self.part_size = part_size
        self.path = "/" + key
        self.setid = setid
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one pwrite at a time (sparse.write_sparse)
        self._written: set[int] = set()
        self._end = size  # where the written bytes end, when not pre-sized
        self._owned: Beneath | None = tree if owns_tree else None
        if tree is None or rel is None:
            directory, rel = os.path.split(self.path)
            tree = self._owned = Beneath(directory, dir_cache=0)
        self.tree = tree
        self.rel = rel
        head, self.name = split(rel)
        self._dir: Dir | None = None
        try:
            if resume_from is not None:
                self._fd: int | None = self._reopen(head, resume_from)
            else:
                self._fd = self._create(layout, create_mode)
        except BaseException:
            self._close_tree()
            raise
        if presize and resume_from is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as e:
                self.abort()
                raise map_oserror(e, key) from e
        elif not presize:
            self._end = 0

    def _create(self, layout: tuple[int, int] | None, create_mode: int) -> int:
        def make(dirfd: int, temp: str) -> int:
            if layout is not None:
                fd = _open_lustre_temp(dirfd, temp, layout)
                if fd is not None:
                    return fd
            return os.open(temp, _O_TEMP, create_mode, dir_fd=dirfd)

        try:
            self._dir, self.temp, fd = create_temp(
                self.tree,
                self.rel,
                make,
                unguessable=layout is not None,
                fixed=self._fixed_temp if layout is None else None,
            )
        except OSError as e:
            raise map_oserror(e, self.key) from e
        return fd

    def _reopen(self, head: str, temp: str) -> int:
        """The temp file a journal named, if it is one this process may trust: a
        regular file (not followed), with one link, owned by us, of the final size."""
        self.temp = temp
        try:
            self._dir = self.tree.hold(head)
            fd = os.open(
                temp,
                os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                dir_fd=self._dir.fd,
            )
        except FileNotFoundError as e:
            raise NotFound(f"{self.path}: partial download {temp} is gone", key=self.key) from e
        except OSError as e:
            if e.errno != errno.ELOOP or isinstance(e, NotBeneath):
                raise map_oserror(e, self.key) from e
            raise NotFound(
                f"{self.path}: partial download {temp} is a symlink, not ours", key=self.key
            ) from e
        st = os.fstat(fd)
        why = None
        if not statmod.S_ISREG(st.st_mode) or st.st_nlink != 1:
            why = "is not a file with one link"
        elif st.st_uid != os.geteuid():
            why = f"belongs to uid {st.st_uid}, not to this process"
        elif st.st_size != self.size:
            why = "has the wrong size"
        if why is not None:
            os.close(fd)
            raise NotFound(f"{self.path}: partial download {temp} {why}", key=self.key)
        return fd

    def _close_tree(self) -> None:
        d, self._dir = self._dir, None
        if d is not None:
            self.tree.release(d)
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    @property
    def temp_path(self) -> str:
        return os.path.join(os.path.dirname(self.path), self.temp)

    def state(self) -> dict[str, Any]:
        return {"temp_path": self.temp_path}

    def verify_parts(self, claimed: Mapping[int, PartReceipt]) -> set[int]:
        """Re-read each claimed part from the temp file and check its CRC32C."""
        fd = self._fd
        if fd is None:
            return set()
        valid = set()
        for index, receipt in claimed.items():
            length = min(self.part_size, self.size - index * self.part_size)
            if receipt.checksum is None or receipt.size != length or length <= 0:
                continue
            buf = os.pread(fd, length, index * self.part_size)
            if len(buf) == length and PartDigests(buf).get("crc32c").hex() == receipt.checksum:
                valid.add(index)
        with self._lock:
            self._written |= valid
        return valid

    def read_part(self, index: int, buf: memoryview) -> int:
        """Bytes of an already written part, for hashing on resume (no network)."""
        fd = self._fd
        if fd is None:
            raise StoreError(f"/{self.key}: read after commit or abort", key=self.key)
        return os.preadv(fd, [buf], index * self.part_size)

    def read_at(self, offset: int, buf: memoryview) -> int:
        """Bytes of the unfinished temp file at ``offset`` (the engine's read-back
        before the commit, ``engine.proof``). The first read tells the kernel the
        file is read sequentially from here (readahead, should it have left the page
        cache)."""
        fd = self._fd
        if fd is None:
            raise StoreError(f"/{self.key}: read after commit or abort", key=self.key)
        try:
            if offset == 0 and hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            return os.preadv(fd, [buf], offset)
        except OSError as e:
            raise map_oserror(e, self.key) from e

    def check_holds(self, data: Buffer) -> None:
        """Before the commit of a whole file written with one ``write_part``: read the
        temp file back (one byte past its size) and compare it with ``data``.
        ``DigestMismatch`` when it holds other bytes or another length; the caller
        aborts, and nothing was visible."""
        fd = self._fd
        if fd is None:
            raise StoreError(f"/{self.key}: read after commit or abort", key=self.key)
        want = memoryview(data).cast("B")
        buf = bytearray(len(want) + 1)
        n = 0
        try:
            if self._end < self.size:  # ends in a hole (zeros not written): its size
                os.ftruncate(fd, self.size)
                self._end = self.size
            with memoryview(buf) as view:
                while n < len(buf) and (got := os.preadv(fd, [view[n:]], n)) > 0:
                    n += got
        except OSError as e:
            raise map_oserror(e, self.key) from e
        del buf[n:]
        if buf != want:  # (bytearray against a buffer: one memcmp)
            raise DigestMismatch(
                f"/{self.key}: read back before its rename, it holds {n} bytes that are not "
                f"the {len(want)} received; the disk holds other bytes than arrived "
                "(removed; the file is sent again)",
                key=self.key,
            )

    def write_part(self, index: int, data: Buffer, digests: PartDigests) -> PartReceipt:
        fd = self._fd
        if fd is None:
            raise StoreError(f"/{self.key}: write after commit or abort", key=self.key)
        end = 0
        try:
            if not is_zeros(data, digests):  # the temp file is pre-sized: zeros stay holes
                view = memoryview(data).cast("B")
                end = write_sparse(fd, view, index * self.part_size, self._write_lock)
            if self._journaled and self._dir is not None:
                self.durability.part_data(fd, self._dir)  # durable before journaled
        except OSError as e:
            raise map_oserror(e, self.key) from e
        with self._lock:
            self._written.add(index)
            self._end = max(self._end, end)
        return PartReceipt(index, len(data), checksum=digests.get("crc32c").hex())

    def commit(
        self,
        metadata: Mapping[str, str],
        *,
        checked: PosixAttrs | None = None,
        verified: str | None = None,
    ) -> ObjectInfo:
        """Commit with ``metadata`` merged over ``initial_metadata``. ``checked``: the
        merged metadata's attributes, already parsed by the caller (``put``);
        ``verified``: the check that covered the bytes, for the returned info."""
        with self._lock:
            # A part never written would be a hole of zeros in the file: refuse, and
            # leave the temp file to abort().
            missing = [i for i in range(-(-self.size // self.part_size)) if i not in self._written]
            if missing and self._fd is not None:
                raise StoreError(
                    f"/{self.key}: commit with {len(missing)} part(s) never written "
                    f"(first: {missing[0]})",
                    key=self.key,
                )
            merged = {**self.initial_metadata, **metadata} if self.initial_metadata else metadata
            # Checked before anything changes (abort() cleans up after a refusal).
            attrs = checked if checked is not None else parse_attrs(merged, self.key)
            fd, self._fd = self._fd, None
        if fd is None or self._dir is None:
            raise StoreError(f"/{self.key}: commit after commit or abort", key=self.key)
        try:
            try:
                if self._end < self.size:  # not pre-sized, and it ends in a hole
                    os.ftruncate(fd, self.size)
                apply_xattrs(fd, merged, self.key)
                # The committed file's attributes come from the file itself (a stat of
                # the name after the rename could see somebody else's file).
                st = apply_attrs(fd, attrs, self.key, setid=self.setid)
                self.durability.file_data(fd)
            finally:
                os.close(fd)
            _replace(self._dir, self.temp, self.name, self.key, self.durability)
        except OSError as e:
            raise map_oserror(e, self.key) from e
        self._close_tree()
        return info_from_stat(self.key, st, verified=verified)

    def release(self) -> None:
        """Close the temp file and let go of its directory, leaving the temp file as
        it is (a journaled write a later run resumes). Nothing can be written or
        committed afterwards. Called by the store's ``close``."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        self._close_tree()

    def abort(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        if self._dir is not None:
            _unlink_quietly(self._dir, self.temp)
        self._close_tree()


def make_dir(
    tree: Beneath,
    rel: str,
    key: str,
    attrs: PosixAttrs,
    durability: Durability,
    *,
    setid: bool,
) -> ObjectInfo:
    """Make the directory ``rel`` (and its parents) with the mode, owner and mtime in
    ``attrs``, or set them on the one there; a symlink or a file at its place (or
    above it) is refused, never followed."""
    try:
        d = tree.mkdir(rel, 0o700 if attrs.mode is not None else 0o777)
    except OSError as e:
        raise map_oserror(e, key) from e
    try:
        st = apply_attrs(d.fd, attrs, key, setid=setid)
        if durability.mode == "job":
            durability.renamed(d)
        return info_from_stat(key, st)
    except OSError as e:
        raise map_oserror(e, key) from e
    finally:
        tree.release(d)


def make_symlink(
    tree: Beneath, rel: str, key: str, target: bytes, attrs: PosixAttrs, durability: Durability
) -> ObjectInfo:
    """Make ``rel`` a symlink to ``target`` (a temp name, then a rename). The target
    text is stored as given and never resolved here."""
    if not target or b"\0" in target:
        raise UnsafePath(f"/{key}: a symlink to an empty name or one with a NUL byte", key=key)
    text = os.fsdecode(target)
    try:
        d, temp, _ = create_temp(tree, rel, lambda fd, t: os.symlink(text, t, dir_fd=fd))
    except OSError as e:
        raise map_oserror(e, key) from e
    try:
        if attrs.mtime_ns is not None:
            ns = (attrs.mtime_ns, attrs.mtime_ns)
            os.utime(temp, ns=ns, dir_fd=d.fd, follow_symlinks=False)
        _replace(d, temp, split(rel)[1], key, durability)
        return info_from_stat(key, os.stat(split(rel)[1], dir_fd=d.fd, follow_symlinks=False))
    except OSError as e:
        _unlink_quietly(d, temp)
        raise map_oserror(e, key) from e
    finally:
        tree.release(d)


def make_hardlink(
    tree: Beneath, rel: str, key: str, target_rel: str, durability: Durability
) -> ObjectInfo:
    """Make ``rel`` a hard link to ``target_rel``, a regular file of the same tree
    (a temp name, then a rename). The target is reached like any name here (no symlink
    followed on the way, none linked)."""
    head, name = split(target_rel)
    try:
        with tree.directory(head) as src:
            before = os.stat(name, dir_fd=src.fd, follow_symlinks=False)
            if not statmod.S_ISREG(before.st_mode):
                raise UnsafePath(
                    f"/{key}: its hard-link target {target_rel!r} is not a regular file in "
                    "the destination; refusing this one",
                    key=key,
                )
            d, temp, _ = create_temp(
                tree,
                rel,
                lambda fd, t: os.link(
                    name, t, src_dir_fd=src.fd, dst_dir_fd=fd, follow_symlinks=False
                ),
            )
    except OSError as e:
        raise map_oserror(e, key) from e
    try:
        st = os.stat(temp, dir_fd=d.fd, follow_symlinks=False)
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise UnsafePath(
                f"/{key}: its hard-link target {target_rel!r} changed while being linked",
                key=key,
            )
        _replace(d, temp, split(rel)[1], key, durability)
        # rename(2) does nothing when both names are already the same file (the link
        # an earlier run made): the temp name is left, and must go.
        with contextlib.suppress(FileNotFoundError):
            left = os.stat(temp, dir_fd=d.fd, follow_symlinks=False)
            if (left.st_dev, left.st_ino) == (st.st_dev, st.st_ino):
                _unlink_quietly(d, temp)
        return info_from_stat(key, st)
    except (OSError, UnsafePath) as e:
        _unlink_quietly(d, temp)
        if isinstance(e, UnsafePath):
            raise
        raise map_oserror(e, key) from e
    finally:
        tree.release(d)
