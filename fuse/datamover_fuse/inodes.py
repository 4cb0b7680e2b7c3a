"""Inodes: what the kernel knows, and what it is told about each (``InodeTable``).

**Inodes.** One ``Inode`` per key the kernel knows: a file, symlink or special file
(FIFO, socket, device) is an object key, a directory a prefix ending in ``/`` (``""``
or the mount's prefix for the root). A file with hard links has one inode and several
keys: its object's (``key``) and its link markers' (``links``), all in the table.
Inode numbers are never reused. The kernel's lookup count keeps an inode in the
table; ``forget`` drops it once no handle or pending write needs it, so the table is
bounded by the kernel's own inode cache.

**Attributes.** An inode's mode, owner and mtime are the stored ones where the
object (or the directory's marker) carries them, else the mount's defaults (``uid``,
``gid``, ``umask``). An inode whose attributes are not complete yet (listed, not
HEADed) is *provisional*: the kernel gets it with a zero TTL, so it asks again
(see ``datamover_fuse.readdir``), unless ``attrs_from_list`` trusts the LIST (never
for zero-byte objects: those may be special files or hard links).

**Times.** mtime, ctime and atime are stored (``ctime`` always, ``atime`` once set
explicitly; s3fs's keys). A directory's mtime and ctime also change when entries are
added or removed through this mount; that is not stored (a write per created file),
so ``dir_times`` remembers it for the mount's lifetime, at most ``DIR_TIMES`` of them.
A directory's link count is 2 plus its subdirectories where the mount knows them (it
made the directory, or listed it completely), else 2.
"""

from __future__ import annotations

import enum
import errno
import itertools
import math
import stat as statmod
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from datamover.posixmeta import (
    ATIME,
    CTIME,
    MODE,
    RDEV,
    PosixAttrs,
    format_mtime_ns,
    parse_mtime_ns,
)
from datamover.stores.base import DIR_META_NAME, HARDLINK_KEY, MiB, ObjectInfo
from datamover_fuse import native
from datamover_fuse.cache import Clock, TTLCache
from datamover_fuse.fserrors import FsError
from datamover_fuse.options import MountOptions
from datamover_fuse.writes import LocalFile

ROOT_INO = 1
NAME_MAX = 255
KEY_MAX = 1024
#: The longest symlink target (PATH_MAX less its NUL).
TARGET_MAX = 4095
BLKSIZE = 1 * MiB
#: Directories whose times this mount changed (entries added or removed) remembered.
DIR_TIMES = 100_000
_NO_ATTRS = PosixAttrs()
#: User metadata of a file with hard links: the keys of its link markers.
LINKS_KEY = "datamover-links"
_SPECIAL = frozenset({statmod.S_IFIFO, statmod.S_IFSOCK, statmod.S_IFCHR, statmod.S_IFBLK})


class Kind(enum.Enum):
    FILE = "file"
    DIR = "dir"
    LINK = "link"
    #: A FIFO, socket or device node: a zero-byte object with its type in ``mode``.
    SPECIAL = "special"


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
    atime_ns: int = 0
    rdev: int = 0


@dataclass(slots=True)
class SetAttrs:
    """The fields a ``setattr`` changes (None: unchanged)."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    mtime_ns: int | None = None
    atime_ns: int | None = None
    #: Set mtime/atime to "now" (``UTIME_NOW``): the owner or a writer may.
    times_now: bool = False


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
    #: Stored atime; None: not stored (reads as the mtime).
    atime_ns: int | None = None
    rdev: int = 0
    #: The object version's name: its ETag (or GCS generation, when no ETag); None
    #: when not known (a POSIX file, or after this mount moved the object without
    #: learning the new one).
    etag: str | None = None
    #: ``ObjectInfo.version`` of that version (GCS: the generation reads are pinned to).
    generation: str | None = None
    #: Times a refresh found the object replaced by another client (a new ETag or size
    #: where one was known): a handle opened before reads no more of it (``FsCore.read``).
    replaced: int = 0
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
    #: Keys of this file's hard-link markers (its other names).
    links: set[str] = field(default_factory=set)
    #: A directory's subdirectories, where known (its link count is 2 more).
    subdirs: int | None = None
    #: Times this mount stored the file (a handle's pinned file is stale after one).
    stored: int = 0
    #: (size, mtime) as the kernel was last told them (``InodeTable.attr``): a listing
    #: that updates the inode tells the kernel nothing.
    told: tuple[int, int] | None = None


def set_version(node: Inode, info: ObjectInfo | None) -> None:
    """This mount made ``info`` (None: a version it could not learn) the node's object
    (a commit, a copy for a rename, a metadata update): unlike a refresh that finds
    another client's, the node's open handles go on reading it."""
    node.etag = None if info is None else info.etag or info.version
    node.generation = None if info is None else info.version
    native.invalidate()


def pin_of(node: Inode) -> ObjectInfo | None:
    """The version reads of ``node`` are pinned to (``Store.readinto``'s ``expect``):
    a store holding another answers ``SourceChanged``. None: not known, not pinned."""
    if node.etag is None and node.generation is None:
        return None
    return ObjectInfo(key=node.key, size=node.size, etag=node.etag, version=node.generation)


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
    if mode is not None and statmod.S_IFMT(mode) in _SPECIAL:
        return Kind.SPECIAL
    return Kind.FILE


def link_target(info: ObjectInfo) -> str | None:
    """The key a hard-link marker names, or None: not a marker."""
    return info.metadata.get(HARDLINK_KEY) if info.metadata else None


def parse_links(meta: dict[str, str]) -> set[str]:
    """The link-marker keys a file's ``LINKS_KEY`` metadata lists."""
    raw = meta.get(LINKS_KEY, "")
    return {unquote(k) for k in raw.split(" ") if k}


def format_links(keys: set[str]) -> str:
    return " ".join(quote(k, safe="/") for k in sorted(keys))


def default_mode(kind: Kind, umask: int) -> int:
    """The mode of an object of ``kind`` that carries no ``mode`` metadata."""
    if kind is Kind.DIR:
        return statmod.S_IFDIR | (0o777 & ~umask)
    if kind is Kind.LINK:
        return statmod.S_IFLNK | 0o777
    return statmod.S_IFREG | (0o666 & ~umask)


def is_reserved(name: str) -> bool:
    """The mount's own bookkeeping name (a directory's metadata object)."""
    return name == DIR_META_NAME


def check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name:
        raise FsError(errno.EINVAL, f"bad name {name!r}")
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG)


def new_key(parent: Inode, name: str) -> str:
    """``child_key`` for a name about to be created: the reserved name is refused."""
    key = child_key(parent, name)
    if is_reserved(name):
        raise FsError(errno.EPERM, f"{name} is the mount's own (directory metadata)")
    return key


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
    """The node's stored POSIX attributes (s3fs's keys), with its link list."""
    meta = PosixAttrs(node.mode, node.uid, node.gid, node.mtime_ns).to_metadata()
    meta[CTIME] = format_mtime_ns(node.ctime_ns)
    if node.atime_ns is not None:
        meta[ATIME] = format_mtime_ns(node.atime_ns)
    if node.kind is Kind.SPECIAL and node.rdev:
        meta[RDEV] = str(node.rdev)
    if node.links:
        meta[LINKS_KEY] = format_links(node.links)
    return meta


def _time(meta: dict[str, str], key: str) -> int | None:
    raw = meta.get(key)
    return parse_mtime_ns(raw) if raw else None


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
        #: Directory key -> (mtime, ctime) this mount gave it by adding or removing
        #: entries (not stored; see the module docstring). No TTL: the mount's own.
        self.dir_times: TTLCache[str, tuple[int, int]] = TTLCache(DIR_TIMES, math.inf, clock)
        #: Directory key -> metadata the store could not keep, kept for the mount's
        #: lifetime (``Metadata.store``); it wins over what the store says.
        self.kept_meta: TTLCache[str, dict[str, str]] = TTLCache(DIR_TIMES, math.inf, clock)
        root = Inode(ROOT_INO, Kind.DIR, root_key, ROOT_INO, "")
        root.mode = self._modes[Kind.DIR]
        root.uid, root.gid = options.owner_uid, options.owner_gid
        root.mtime_ns = root.ctime_ns = mount_ns
        root.exact = True
        root.expires = math.inf
        self.root = root
        self.insert(root)

    # -- the table ----------------------------------------------------------------------

    def add(self, kind: Kind, key: str, parent: int, name: str) -> Inode:
        node = Inode(next(self._numbers), kind, key, parent, name)
        self.insert(node)
        return node

    def insert(self, node: Inode) -> None:
        old = self.by_key.get(node.key)
        self.by_ino[node.ino] = node
        self.by_key[node.key] = node
        if old is not None and old is not node:
            if node.key in old.links:
                old.links.discard(node.key)  # the name was a link of ``old``; now ours
            else:
                old.detached = True
                self.maybe_drop(old)

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

    def dir_holding(self, key: str) -> Inode | None:
        """The directory inode that holds ``key``, when the table has it."""
        head, sep, _ = key.rstrip("/").rpartition("/")
        dkey = head + sep
        if dkey == self.root.key or not dkey.startswith(self.root.key):
            return self.root if dkey == self.root.key else None
        found = self.by_key.get(dkey)
        return found if found is not None and found.kind is Kind.DIR else None

    def alias(self, node: Inode, key: str) -> None:
        """``key`` (a hard-link marker) is another name of ``node``."""
        old = self.by_key.get(key)
        node.links.add(key)
        self.by_key[key] = node
        if old is not None and old is not node:
            old.detached = True  # e.g. the marker, listed as a file before it was read
            self.maybe_drop(old)

    def unalias(self, node: Inode, key: str) -> None:
        node.links.discard(key)
        if self.by_key.get(key) is node:
            del self.by_key[key]

    def detach(self, node: Inode) -> None:
        for key in (node.key, *node.links):
            if self.by_key.get(key) is node:
                del self.by_key[key]
        node.detached = True
        self.maybe_drop(node)

    def rekey(self, node: Inode, key: str, parent: int, name: str) -> None:
        if self.by_key.get(node.key) is node:
            del self.by_key[node.key]
        node.key, node.parent, node.name = key, parent, name
        node.links.discard(key)
        self.insert(node)

    def maybe_drop(self, node: Inode) -> None:
        if node.ino == ROOT_INO or node.lookups > 0 or node.opens > 0 or node.local is not None:
            return
        self.by_ino.pop(node.ino, None)
        for key in (node.key, *node.links):
            if self.by_key.get(key) is node:
                del self.by_key[key]

    # -- attributes ---------------------------------------------------------------------

    def provisional(self, node: Inode) -> bool:
        """Attributes not complete yet: the kernel must ask again (zero TTL). A trusted
        LIST is complete except for zero-byte objects (special files, hard links)."""
        if node.exact or node.local is not None or not node.remote:
            return False
        return not (self._trust_list and (node.size > 0 or node.kind is Kind.DIR))

    def attr(self, node: Inode) -> Attr:
        size = node.local.size if node.local is not None else node.size
        node.told = (size, node.mtime_ns)
        ttl = 0.0 if self.provisional(node) else self.options.attr_ttl
        if node.kind is Kind.DIR:
            nlink = 2 + (node.subdirs or 0)
        elif node.detached and not node.links:
            nlink = 0  # unlinked while open
        else:
            nlink = 1 + len(node.links)
        return Attr(
            ino=node.ino,
            mode=node.mode,
            size=size,
            uid=node.uid,
            gid=node.gid,
            mtime_ns=node.mtime_ns,
            ctime_ns=node.ctime_ns,
            nlink=nlink,
            blksize=BLKSIZE,
            blocks=(size + 511) // 512,
            attr_ttl=ttl,
            entry_ttl=ttl,
            atime_ns=node.mtime_ns if node.atime_ns is None else node.atime_ns,
            rdev=node.rdev,
        )

    def touch_dir(self, node: Inode, now: int) -> None:
        """An entry was added to or removed from the directory ``node`` (see
        ``dir_times``)."""
        node.mtime_ns = node.ctime_ns = now
        self.dir_times.put(node.key, (now, now))

    def apply_info(self, node: Inode, info: ObjectInfo, *, exact: bool) -> None:
        # Runs once per listed entry: kept lean (no PosixAttrs parse without metadata).
        meta = dict(info.metadata) if info.metadata else {}
        if node.kind is Kind.DIR and len(self.kept_meta):
            meta.update(self.kept_meta.get(node.key) or {})
        attrs = PosixAttrs.from_metadata(meta) if meta else _NO_ATTRS
        mode = attrs.mode if attrs.mode is not None else info.mode
        kind = node.kind
        if mode is None:
            node.mode = self._file_mode if kind is Kind.FILE else self._modes[kind]
        elif kind is Kind.SPECIAL:
            node.mode = mode
        else:
            default = self._file_mode if kind is Kind.FILE else self._modes[kind]
            node.mode = statmod.S_IFMT(default) | statmod.S_IMODE(mode)
        node.uid = attrs.uid if attrs.uid is not None else self._uid
        node.gid = attrs.gid if attrs.gid is not None else self._gid
        if attrs.mtime_ns is not None:
            node.mtime_ns = attrs.mtime_ns
        elif info.mtime is not None:
            node.mtime_ns = int(info.mtime * 1e9)
        else:
            node.mtime_ns = self.mount_ns
        if meta:
            ctime = _time(meta, CTIME)
            node.ctime_ns = node.mtime_ns if ctime is None else ctime
            node.atime_ns = _time(meta, ATIME)
        else:
            node.ctime_ns, node.atime_ns = node.mtime_ns, None
        if kind is Kind.DIR:
            ours = self.dir_times.get(node.key)
            if ours is not None:
                node.mtime_ns, node.ctime_ns = ours
        else:
            etag = info.etag or info.version
            if node.etag != etag or node.size != info.size:
                if node.etag is not None:
                    node.target = None
                    if etag is not None:
                        node.replaced += 1  # not by this mount: see ``set_version``
                native.invalidate()  # a handle bound to the old version must not read it
            node.size = info.size
            node.etag = etag
            node.generation = info.version
            if kind is Kind.SPECIAL:
                try:
                    node.rdev = int(meta.get(RDEV, "0"))
                except ValueError:
                    node.rdev = 0
            if exact or LINKS_KEY in meta:
                self._set_links(node, parse_links(meta))
        node.metadata = meta
        node.exact = exact
        node.remote = True
        node.expires = self._clock() + self.options.attr_ttl

    def _set_links(self, node: Inode, keys: set[str]) -> None:
        for key in node.links - keys:
            self.unalias(node, key)
        for key in keys - node.links:
            self.alias(node, key)

    @staticmethod
    def superseded(node: Inode, info: ObjectInfo) -> bool:
        """``info`` is another client's version of a file programs have open: the name
        gets a new inode (``supersede``) rather than that file changing under them."""
        etag = info.etag or info.version
        return (
            node.kind is Kind.FILE
            and node.opens > 0
            and node.local is None
            and not node.detached
            and not node.links
            and node.etag is not None
            and etag is not None
            and etag != node.etag
            and not info.is_dir
        )

    def supersede(self, node: Inode, info: ObjectInfo, *, exact: bool) -> Inode:
        """The name's new inode for ``info``; ``node`` stays what its open handles read
        (its size, and the old version's pages the kernel holds) but reads nothing more
        from the store (``replaced``; ``FsCore`` answers ESTALE), as an NFS client's
        file handle of a file replaced on the server."""
        node.replaced += 1
        self.detach(node)
        native.invalidate()
        return self.object_node(node.key, node.parent, node.name, info, exact=exact)

    def file_node(self, parent: Inode, name: str, info: ObjectInfo, *, exact: bool) -> Inode:
        """The inode for a file/symlink/special entry, created or refreshed from
        ``info`` (never a hard-link marker: see ``Resolver.entry``)."""
        key = parent.key + name
        return self.object_node(key, parent.ino, name, info, exact=exact)

    def object_node(
        self, key: str, parent: int, name: str, info: ObjectInfo, *, exact: bool
    ) -> Inode:
        etag = info.etag or info.version
        node = self.at(key)
        if node is not None and node.key != key:
            return node  # a hard link's name: the marker says nothing of the file
        if node is not None and (
            node.local is not None or (not exact and node.exact and node.etag == etag)
        ):
            return node
        if node is not None and self.superseded(node, info):
            return self.supersede(node, info, exact=exact)
        kind = kind_of(info)
        if not exact and node is not None and node.etag == etag:
            kind = node.kind  # a listing without metadata can't tell a symlink from a file
        if node is not None and node.kind is not kind:
            self.detach(node)
            node = None
        if node is None:
            node = self.add(kind, key, parent, name)
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
