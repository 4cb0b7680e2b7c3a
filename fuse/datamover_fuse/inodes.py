"""Inodes: what the kernel knows, and what it is told about each (``InodeTable``).

**Inodes.** One ``Inode`` per key the kernel knows: a file or symlink is an object
key, a directory a prefix ending in ``/`` (``""`` or the mount's prefix for the root).
Inode numbers are never reused. The kernel's lookup count keeps an inode in the table;
``forget`` drops it once no handle or pending write needs it, so the table is bounded
by the kernel's own inode cache.

**Attributes.** An inode's mode, owner and mtime are the stored ones where the
object (or the directory's marker) carries them, else the mount's defaults (``uid``,
``gid``, ``umask``). An inode whose attributes are not complete yet (listed, not
HEADed) is *provisional*: the kernel gets it with a zero TTL, so it asks again
(see ``datamover_fuse.readdir``), unless ``attrs_from_list`` trusts the LIST.
"""

from __future__ import annotations

import enum
import errno
import itertools
import math
import stat as statmod
from dataclasses import dataclass, field

from datamover.posixmeta import MODE, PosixAttrs
from datamover.stores.base import MiB, ObjectInfo
from datamover_fuse.cache import Clock
from datamover_fuse.fserrors import FsError
from datamover_fuse.options import MountOptions
from datamover_fuse.writes import LocalFile

ROOT_INO = 1
NAME_MAX = 255
KEY_MAX = 1024
BLKSIZE = 1 * MiB
_NO_ATTRS = PosixAttrs()


class Kind(enum.Enum):
    FILE = "file"
    DIR = "dir"
    LINK = "link"


@dataclass(slots=True)
class Attr:
    """What the kernel is told about an inode."""

    ino: int
    mode: int
    size: int
    uid: int
    gid: int
    mtime_ns: int
    ctime_ns: int
    nlink: int
    blksize: int
    blocks: int
    attr_ttl: float
    entry_ttl: float


@dataclass(slots=True)
class SetAttrs:
    """The fields a ``setattr`` changes (None: unchanged)."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    mtime_ns: int | None = None
    atime_ns: int | None = None


@dataclass(eq=False, slots=True)
class Inode:
    ino: int
    kind: Kind
    key: str
    parent: int
    name: str
    size: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    etag: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    #: Attributes are complete (from HEAD, our own write, or a listing with metadata).
    exact: bool = False
    #: The object (or marker, or prefix) is in the store; False for a new local file.
    remote: bool = True
    marker: bool = False
    expires: float = 0.0
    lookups: int = 0
    opens: int = 0
    local: LocalFile | None = None
    seen: tuple[object, ...] | None = None
    target: bytes | None = None
    detached: bool = False
    #: Position in the parent's last listing, for statahead.
    index: int = -1


def kind_of(info: ObjectInfo) -> Kind:
    if info.is_dir:
        return Kind.DIR
    raw = info.metadata.get(MODE) if info.metadata else None
    mode = info.mode
    if raw is not None:
        try:
            mode = int(raw)
        except ValueError:
            mode = None
    if mode is not None and statmod.S_ISLNK(mode):
        return Kind.LINK
    return Kind.FILE


def default_mode(kind: Kind, umask: int) -> int:
    """The mode of an object of ``kind`` that carries no ``mode`` metadata."""
    if kind is Kind.DIR:
        return statmod.S_IFDIR | (0o777 & ~umask)
    if kind is Kind.LINK:
        return statmod.S_IFLNK | 0o777
    return statmod.S_IFREG | (0o666 & ~umask)


def check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name:
        raise FsError(errno.EINVAL, f"bad name {name!r}")
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG)


def child_key(parent: Inode, name: str) -> str:
    """The key of ``name`` in the directory ``parent`` (EINVAL, ENAMETOOLONG)."""
    check_name(name)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as e:
        raise FsError(errno.EINVAL, "names must be UTF-8") from e
    key = parent.key + name
    if len(key.encode()) + 1 > KEY_MAX:
        raise FsError(errno.ENAMETOOLONG)
    return key


def posix_meta(node: Inode) -> dict[str, str]:
    return PosixAttrs(node.mode, node.uid, node.gid, node.mtime_ns).to_metadata()


class InodeTable:
    """The inodes the kernel knows, by number and by key (see the module docstring),
    and the attributes it is told about them. Holds the root from the start."""

    def __init__(self, root_key: str, options: MountOptions, clock: Clock, mount_ns: int) -> None:
        self.by_ino: dict[int, Inode] = {}
        self.by_key: dict[str, Inode] = {}
        self._numbers = itertools.count(ROOT_INO + 1)
        self.options = options
        self._clock = clock
        self.mount_ns = mount_ns
        self._modes = {kind: default_mode(kind, options.umask) for kind in Kind}
        self._file_mode = self._modes[Kind.FILE]
        self._uid, self._gid = options.owner_uid, options.owner_gid
        #: Attributes from a LIST are final for the kernel (``--attrs-from-list``).
        self._trust_list = options.attrs_from_list
        root = Inode(ROOT_INO, Kind.DIR, root_key, ROOT_INO, "")
        root.mode = self._modes[Kind.DIR]
        root.uid, root.gid = options.owner_uid, options.owner_gid
        root.mtime_ns = root.ctime_ns = mount_ns
        root.exact = True
        root.expires = math.inf
        self.insert(root)

    # -- the table ----------------------------------------------------------------------

    def add(self, kind: Kind, key: str, parent: int, name: str) -> Inode:
        node = Inode(next(self._numbers), kind, key, parent, name)
        self.insert(node)
        return node

    def insert(self, node: Inode) -> None:
        old = self.by_key.get(node.key)
        if old is not None and old is not node:
            old.detached = True
        self.by_ino[node.ino] = node
        self.by_key[node.key] = node

    def at(self, key: str) -> Inode | None:
        return self.by_key.get(key)

    def node(self, ino: int) -> Inode:
        """The inode ``ino`` (ENOENT when the table does not hold it)."""
        node = self.by_ino.get(ino)
        if node is None:
            raise FsError(errno.ENOENT, f"inode {ino} unknown")
        return node

    def directory(self, ino: int) -> Inode:
        """The directory ``ino`` (ENOENT, ENOTDIR)."""
        node = self.node(ino)
        if node.kind is not Kind.DIR:
            raise FsError(errno.ENOTDIR)
        return node

    def parent_of(self, node: Inode) -> Inode | None:
        return self.by_ino.get(node.parent)

    def detach(self, node: Inode) -> None:
        if self.by_key.get(node.key) is node:
            del self.by_key[node.key]
        node.detached = True
        self.maybe_drop(node)

    def rekey(self, node: Inode, key: str, parent: int, name: str) -> None:
        if self.by_key.get(node.key) is node:
            del self.by_key[node.key]
        node.key, node.parent, node.name = key, parent, name
        self.insert(node)

    def maybe_drop(self, node: Inode) -> None:
        if node.ino == ROOT_INO or node.lookups > 0 or node.opens > 0 or node.local is not None:
            return
        self.by_ino.pop(node.ino, None)
        if self.by_key.get(node.key) is node:
            del self.by_key[node.key]

    # -- attributes ---------------------------------------------------------------------

    def attr(self, node: Inode) -> Attr:
        size = node.local.size if node.local is not None else node.size
        provisional = not node.exact and not self._trust_list and node.local is None and node.remote
        ttl = 0.0 if provisional else self.options.attr_ttl
        return Attr(
            ino=node.ino,
            mode=node.mode,
            size=size,
            uid=node.uid,
            gid=node.gid,
            mtime_ns=node.mtime_ns,
            ctime_ns=node.ctime_ns,
            nlink=2 if node.kind is Kind.DIR else 1,
            blksize=BLKSIZE,
            blocks=(size + 511) // 512,
            attr_ttl=ttl,
            entry_ttl=ttl,
        )

    def apply_info(self, node: Inode, info: ObjectInfo, *, exact: bool) -> None:
        # Runs once per listed entry: kept lean (no PosixAttrs parse without metadata).
        meta = dict(info.metadata) if info.metadata else {}
        attrs = PosixAttrs.from_metadata(meta) if meta else _NO_ATTRS
        mode = attrs.mode if attrs.mode is not None else info.mode
        default = self._file_mode if node.kind is Kind.FILE else self._modes[node.kind]
        node.mode = statmod.S_IFMT(default) | statmod.S_IMODE(mode) if mode is not None else default
        node.uid = attrs.uid if attrs.uid is not None else self._uid
        node.gid = attrs.gid if attrs.gid is not None else self._gid
        if attrs.mtime_ns is not None:
            node.mtime_ns = attrs.mtime_ns
        elif info.mtime is not None:
            node.mtime_ns = int(info.mtime * 1e9)
        else:
            node.mtime_ns = self.mount_ns
        node.ctime_ns = node.mtime_ns
        if node.kind is not Kind.DIR:
            if node.etag is not None and node.etag != (info.etag or info.version):
                node.target = None
            node.size = info.size
            node.etag = info.etag or info.version
        node.metadata = meta
        node.exact = exact
        node.remote = True
        node.expires = self._clock() + self.options.attr_ttl

    def file_node(self, parent: Inode, name: str, info: ObjectInfo, *, exact: bool) -> Inode:
        """The inode for a file/symlink entry, created or refreshed from ``info``."""
        key = parent.key + name
        etag = info.etag or info.version
        node = self.at(key)
        if node is not None and (
            node.local is not None or (not exact and node.exact and node.etag == etag)
        ):
            return node
        kind = kind_of(info)
        if not exact and node is not None and node.etag == etag:
            kind = node.kind  # a listing without metadata can't tell a symlink from a file
        if node is not None and node.kind is not kind:
            self.detach(node)
            node = None
        if node is None:
            node = self.add(kind, key, parent.ino, name)
        self.apply_info(node, info, exact=exact)
        return node

    def dir_node(
        self, parent: Inode, name: str, marker: ObjectInfo | None, *, exact: bool
    ) -> Inode:
        key = parent.key + name + "/"
        node = self.at(key)
        if node is None:
            node = self.add(Kind.DIR, key, parent.ino, name)
        elif node.exact and not exact and node.expires > self._clock():
            return node
        self.apply_info(node, marker or ObjectInfo(key=key, size=0, is_dir=True), exact=exact)
        node.marker = marker is not None
        node.expires = self._clock() + self.options.dir_ttl
        return node
