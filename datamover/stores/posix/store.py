"""``PosixStore``: the ``Store`` interface over a POSIX tree. Reads and listings are
here; writes go through ``writer``, key checks and temp names through ``paths``,
attributes through ``attrs``, Lustre layouts through ``lustre``. The package docstring
says what the store promises."""

from __future__ import annotations

import errno
import os
import stat as statmod
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from datamover.checksums import PartDigests
from datamover.errors import NotFound, SourceChanged, UsageError
from datamover.posixmeta import PosixAttrs
from datamover.stores.base import (
    HARDLINK_KEY,
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
from datamover.stores.posix.attrs import info_from_stat, read_xattrs
from datamover.stores.posix.durability import Durability
from datamover.stores.posix.errors import map_oserror
from datamover.stores.posix.fsops import PosixFsOps
from datamover.stores.posix.lustre import (
    LUSTRE_MAGIC,
    STRIPE_COUNT,
    STRIPE_SIZE,
    lfs_getstripe,
    statfs_type,
)
from datamover.stores.posix.paths import TEMP_MARK, ChildKeys, KnownDirs, walk_temps
from datamover.stores.posix.sparse import read_sparse
from datamover.stores.posix.writer import PosixWriter, make_dir, make_hardlink, make_symlink
from datamover.stores.urls import Location


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
    ) -> None:
        self.follow_symlinks = follow_symlinks
        self.durability = Durability(durability)
        self.xattrs = xattrs
        self._fs_type = fs_type
        self._lustre: dict[int, bool] = {}
        self._dirs = KnownDirs()
        self._keys = ChildKeys(case_insensitive)

    @classmethod
    def from_location(cls, loc: Location, settings: object) -> PosixStore:
        extra = getattr(settings, "extra", {}) or {}
        return cls(
            follow_symlinks=bool(extra.get("copy_links")),
            xattrs=bool(extra.get("xattrs")),
            durability=str(extra.get("durability") or "file"),
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

    def _stat(self, path: str) -> os.stat_result:
        return os.stat(path) if self.follow_symlinks else os.lstat(path)

    def _extra(self, path: str, st: os.stat_result) -> dict[str, str] | None:
        extra = read_xattrs(path) if self.xattrs else {}
        if statmod.S_ISREG(st.st_mode) and self.on_lustre(path, st.st_dev):
            layout = lfs_getstripe(path)
            if layout is not None:
                extra[STRIPE_COUNT], extra[STRIPE_SIZE] = str(layout[0]), str(layout[1])
        return extra or None

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
        path = "/" + key
        try:
            st = self._stat(path)
            return info_from_stat(key, st, self._extra(path, st))
        except OSError as e:
            raise map_oserror(e, key) from e

    def child_key(self, root: str, rel: str) -> str:
        """Refuse keys that can't be a path under ``root`` safely (``ChildKeys``)."""
        return self._keys.child_key(root, rel)

    def list(self, prefix: str, *, recursive: bool = True) -> Iterator[ObjectInfo]:
        if not recursive and prefix and not prefix.endswith("/"):
            prefix += "/"  # one level down means "this directory", never a name prefix
        directory, _, name_prefix = prefix.rpartition("/")
        base = directory + "/" if directory else ""
        yield from self._walk(base, name_prefix, recursive)

    def _walk(self, base: str, name_prefix: str, recursive: bool) -> Iterator[ObjectInfo]:
        follow = self.follow_symlinks
        try:
            with os.scandir("/" + base) as it:
                # Key order, not name order: a directory's keys all carry its "/", so
                # "d.txt" < "d/..." < "d0" ("." < "/" < "0").
                entries = sorted(
                    (e for e in it if e.name.startswith(name_prefix)),
                    key=lambda e: e.name + "/" if e.is_dir(follow_symlinks=follow) else e.name,
                )
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            raise map_oserror(e, base) from e
        for entry in entries:
            if TEMP_MARK in entry.name:
                continue
            key = base + entry.name
            try:
                st = entry.stat(follow_symlinks=follow)
            except FileNotFoundError:
                continue  # vanished between readdir and stat (or a dangling followed link)
            except OSError as e:
                raise map_oserror(e, key) from e
            if statmod.S_ISDIR(st.st_mode):
                if not recursive:
                    yield ObjectInfo(key=key + "/", size=0, mtime=st.st_mtime_ns / 1e9, is_dir=True)
                    continue
                found = 0
                for info in self._walk(key + "/", "", True):
                    found += 1
                    yield info
                if not found:  # an empty directory is listed so it can be recreated
                    yield info_from_stat(key + "/", st)
            elif statmod.S_ISREG(st.st_mode) or statmod.S_ISLNK(st.st_mode):
                extra = read_xattrs(entry.path) if self.xattrs else None
                yield info_from_stat(key, st, extra)

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        if length is None:
            # Size and bytes from one open file: a file replaced meanwhile is read whole
            # (a stat, then an open, could read the new file cut to the old size).
            try:
                with open("/" + key, "rb", buffering=0) as f:
                    f.seek(offset)
                    return f.read()
            except OSError as e:
                raise map_oserror(e, key) from e
        buf = bytearray(length)
        n = self.readinto(key, offset, memoryview(buf))
        del buf[n:]
        return bytes(buf)

    def read_object(
        self, key: str, info: ObjectInfo | None = None
    ) -> tuple[bytes | bytearray, ObjectInfo]:
        path = "/" + key
        if key.endswith("/"):
            try:
                st = os.lstat(path.rstrip("/") or "/")
            except OSError as e:
                raise map_oserror(e, key) from e
            if statmod.S_ISLNK(st.st_mode) and not self.follow_symlinks:
                return os.fsencode(os.readlink(path)), info_from_stat(key, st)
            if statmod.S_ISDIR(st.st_mode):
                return b"", info_from_stat(key, st)
        # Not following links: O_NOFOLLOW refuses a link (ELOOP), which only then
        # costs an lstat and a readlink; files pay no lstat before their open.
        nofollow = 0 if self.follow_symlinks else os.O_NOFOLLOW
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | nofollow)
        except OSError as e:
            if e.errno == errno.ELOOP and nofollow:
                try:
                    st = os.lstat(path)
                    if statmod.S_ISLNK(st.st_mode):
                        return os.fsencode(os.readlink(path)), info_from_stat(key, st)
                except OSError as e2:
                    raise map_oserror(e2, key) from e2
            raise map_oserror(e, key) from e
        try:
            before = os.fstat(fd)
            if nofollow and statmod.S_ISDIR(before.st_mode):
                return b"", info_from_stat(key + "/", before)
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
        return buf, info_from_stat(key, before, self._extra(path, before) if self.xattrs else None)

    def readinto(self, key: str, offset: int, buf: memoryview) -> int:
        try:
            fd = os.open("/" + key, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise map_oserror(e, key) from e
        try:
            view = buf.cast("B") if buf.format != "B" else buf
            return read_sparse(fd, view, offset)
        except OSError as e:
            raise map_oserror(e, key) from e
        finally:
            os.close(fd)

    def put(
        self,
        key: str,
        data: Buffer,
        *,
        metadata: Mapping[str, str] | None = None,
        digests: PartDigests | None = None,
    ) -> ObjectInfo:
        meta = metadata or {}
        mode = PosixAttrs.from_metadata(meta).mode
        if key.endswith("/"):
            return make_dir(key, meta, self.durability)
        if HARDLINK_KEY in meta:
            return make_hardlink(key, meta[HARDLINK_KEY], self._dirs, self.durability)
        if mode is not None and statmod.S_ISLNK(mode):
            return make_symlink(key, bytes(data), meta, self._dirs, self.durability)
        size = len(memoryview(data).cast("B"))
        writer = PosixWriter(
            key, size, max(size, 1), dirs=self._dirs, presize=False, durability=self.durability
        )
        try:
            writer.write_part(0, data, digests or PartDigests(data))
            return writer.commit(metadata or {})
        except BaseException:
            writer.abort()
            raise

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
        layout = None
        if STRIPE_COUNT in meta and STRIPE_SIZE in meta:
            directory = os.path.dirname("/" + key)
            if self.on_lustre(directory if os.path.isdir(directory) else "/"):
                layout = (int(meta[STRIPE_COUNT]), int(meta[STRIPE_SIZE]))
        writer = PosixWriter(
            key, size, part_size, layout=layout, dirs=self._dirs, durability=self.durability
        )
        writer.initial_metadata = dict(metadata or {})
        return writer

    def resume_writer(
        self,
        key: str,
        *,
        size: int,
        part_size: int,
        state: Mapping[str, Any],
        metadata: Mapping[str, str] | None = None,
    ) -> PosixWriter:
        temp = state.get("temp_path")
        directory = os.path.dirname("/" + key)
        if not isinstance(temp, str) or os.path.dirname(temp) != directory:
            raise NotFound(f"/{key}: no partial download to resume", key=key)
        return PosixWriter(
            key, size, part_size, resume_from=temp, dirs=self._dirs, durability=self.durability
        )

    def list_pending_uploads(self, prefix: str) -> Iterator[PendingUpload]:
        """Temp files ``.NAME.dmtmp-*`` whose target key starts with ``prefix``, found
        by walking the prefix's directory tree (symlinks are not followed; directories
        that can't be read are passed over). ``initiated`` is the temp file's mtime,
        i.e. when it was last written; ``size`` its length."""
        directory, _, name_prefix = prefix.rpartition("/")
        yield from walk_temps(directory + "/" if directory else "", name_prefix)

    def abort_pending_upload(self, upload: PendingUpload) -> None:
        temp = upload.token.get("temp_path")
        if not isinstance(temp, str) or TEMP_MARK not in os.path.basename(temp):
            raise ValueError(f"/{upload.key}: not a datamover temp file token")
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise map_oserror(e, upload.key) from e

    def delete(self, key: str) -> None:
        try:
            os.unlink("/" + key)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise map_oserror(e, key) from e

    def close(self) -> None:
        self._dirs.clear()
        self._keys.forget_dirs()
