"""BagIt (RFC 8493) bags from datamover manifests.

Two ways to get a bag, both for POSIX destinations:

* ``export_bag(MANIFEST, DIR)`` (``datamover manifest export MANIFEST --format bagit
  --output DIR``): builds a new bag at ``DIR`` from a finished copy. Each copied file
  is **hard-linked** into ``DIR/data/`` (no extra space, instant; the bag and the copy
  then share the same inodes, so editing one edits the other). Where a link is
  impossible (another filesystem, a filesystem without hard links) the file is
  **copied** and hashed on the way, and a digest that differs from the manifest's
  fails the export. ``link=False`` always copies.
* ``copy --bagit`` (``datamover.copy(..., bagit=True)``): the transfer itself writes
  the payload under ``DST/data/``, then ``finish_bag`` writes the tag files from the
  manifest's digests, without re-reading the payload. Tag files are written only
  after every file was copied; a run with failures leaves no tag files (a re-run
  resumes and finishes the bag).

Tag files: ``bagit.txt`` (version 1.0, UTF-8), ``manifest-<alg>.txt`` for the
manifest's algorithm (sha256, sha512 or md5; BagIt has no crc32c or blake3),
``bag-info.txt`` (``Bagging-Date``, ``Payload-Oxum``, ``Bag-Software-Agent``,
``External-Identifier`` = the job id, ``Source-Organization`` and other fields when
given) and ``tagmanifest-<alg>.txt`` over the other tag files. Payload paths are
``data/`` + the manifest path, with ``%``, CR and LF percent-encoded (RFC 8493 §2.1.3).
Only regular files are payload: directory and symlink entries are left out (copy
``--bagit`` follows symlinks, so the bag holds their targets' bytes; links an object
store holds are followed within the copied prefix only, ``engine.storedlinks``).

Safety (the manifest is untrusted input, ``manifest.rules``): payload paths are
canonical relative paths, and each is resolved beneath the copy's root and beneath
``DIR/data/`` one directory at a time with ``O_NOFOLLOW``, so a symlink in either tree
(planted or not) is refused, never followed: nothing is read from or written outside
them. A payload file must be a regular file; a hard link is made without following
and then checked to be the inode that was opened; a copy is created
``O_EXCL|O_NOFOLLOW`` (an existing file is never truncated). Tag files are created
``O_EXCL|O_NOFOLLOW`` too, so a name already taken in the bag directory fails the
export instead of being overwritten or followed. Tag files get the usual file mode
(the umask applies): unlike a manifest in the state directory, a bag is made to be
handed on, and its payload names are visible in ``data/`` anyway.

Caveat: bagit-python up to 1.9 encodes only CR and LF, not ``%``
(LibraryOfCongress/bagit-python#157), so it misreads our (RFC-conformant) manifest
lines for payload paths containing ``%``; other paths validate with it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat as statmod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date

from datamover._version import __version__
from datamover.errors import UsageError
from datamover.manifest import Manifest, ManifestEntry, read_manifest
from datamover.stores import local_path

BAG_ALGORITHMS = ("sha256", "sha512", "md5")
TAG_FILES = ("bagit.txt", "bag-info.txt")
_COPY_CHUNK = 8 * 1024 * 1024
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: O_NONBLOCK: a FIFO where a payload file should be must not hang the export.
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: Tag files are part of the bag others validate: ordinary files (the umask applies),
#: unlike datamover's own records (``datamover.ownfiles``).
_TAG_MODE = 0o666


class BagError(UsageError):
    """The bag can't be made as asked; the message says why and what to do."""


@dataclass(slots=True)
class BagResult:
    path: str
    files: int
    bytes: int
    linked: int = 0
    copied: int = 0


def check_algorithm(algorithm: str) -> str:
    if algorithm not in BAG_ALGORITHMS:
        raise BagError(
            f"a BagIt bag needs sha256, sha512 or md5 digests, and this is {algorithm}; "
            "copy with --checksum sha256 (or sha512, md5)"
        )
    return algorithm


def encode_path(path: str) -> str:
    """A payload path as a manifest line writes it (RFC 8493 §2.1.3)."""
    return path.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _payload(manifest: Manifest) -> list[ManifestEntry]:
    """The files of the bag; a bag is whole, so a manifest that gives no digest for
    some file it vouches for (unchanged in a sync, not read) makes none."""
    files, undigested = manifest.files_with_digests()
    if undigested:
        raise BagError(
            f"the manifest gives no digest for {len(undigested)} file(s) it lists as "
            f"unchanged ({undigested[0].path!r}{', ...' if len(undigested) > 1 else ''}): "
            "a bag must list every file; make it from a copy's manifest "
            "(datamover copy --bagit), not a sync's"
        )
    return files


def _tag_value(value: str) -> str:
    return " ".join(str(value).split())


class _TagWriter:
    """Tag files in the bag directory ``bag_dir``: each created ``O_EXCL|O_NOFOLLOW``
    through a descriptor of the directory (a name already there, a planted symlink
    included, is refused), hashed as written for the tag manifest."""

    def __init__(self, bag_dir: str, algorithm: str) -> None:
        self.bag_dir = bag_dir
        self.algorithm = algorithm
        self.digests: dict[str, str] = {}
        try:
            self.fd = os.open(bag_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise BagError(f"cannot open the bag {bag_dir}: {e.strerror}") from e

    def write(self, name: str, lines: Iterable[str]) -> None:
        try:
            fd = os.open(name, _CREATE, _TAG_MODE, dir_fd=self.fd)
        except FileExistsError:
            raise BagError(
                f"{self.bag_dir}/{name} already exists (or is a symlink); a bag's tag files are "
                "written fresh: remove it and run again"
            ) from None
        except OSError as e:
            raise BagError(f"cannot write {self.bag_dir}/{name}: {e.strerror}") from e
        h = hashlib.new(self.algorithm)
        with os.fdopen(fd, "wb") as fh:
            for line in lines:
                raw = line.encode("utf-8")
                h.update(raw)
                fh.write(raw)
        self.digests[name] = h.hexdigest()

    def close(self) -> None:
        os.close(self.fd)


def write_tag_files(
    bag_dir: str,
    payload: Iterable[tuple[str, int, str]],
    algorithm: str,
    info: Mapping[str, str] | None = None,
) -> tuple[int, int]:
    """Write the tag files of a bag whose payload (``(path under data/, size,
    digest)``) is already in place. Returns ``(files, bytes)`` (the Payload-Oxum).
    Raises ``BagError`` when a tag file is already there."""
    check_algorithm(algorithm)
    fields: dict[str, str] = {
        "Bag-Software-Agent": f"datamover {__version__}",
        "Bagging-Date": date.today().isoformat(),
    }
    fields.update({k: v for k, v in (info or {}).items() if v})
    for label in fields:
        if ":" in label or not label.strip():
            raise BagError(f"bag-info label {label!r} must be non-empty and have no ':'")
    count = total = 0

    def manifest_lines() -> Iterator[str]:
        nonlocal count, total
        for path, size, digest in payload:
            yield f"{digest}  data/{encode_path(path)}\n"
            count += 1
            total += size

    manifest_name = f"manifest-{algorithm}.txt"
    tags = _TagWriter(bag_dir, algorithm)
    try:
        tags.write(manifest_name, manifest_lines())
        tags.write("bagit.txt", ["BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"])
        fields["Payload-Oxum"] = f"{total}.{count}"
        tags.write(
            "bag-info.txt",
            (f"{label.strip()}: {_tag_value(value)}\n" for label, value in fields.items()),
        )
        tags.write(
            f"tagmanifest-{algorithm}.txt",
            [f"{tags.digests[name]}  {name}\n" for name in (*TAG_FILES, manifest_name)],
        )
    finally:
        tags.close()
    return count, total


def remove_tag_files(bag_dir: str) -> None:
    """Drop tag files of an earlier bag at ``bag_dir`` (before its payload changes)."""
    for name in os.listdir(bag_dir) if os.path.isdir(bag_dir) else ():
        if name in TAG_FILES or (
            name.endswith(".txt") and name.startswith(("manifest-", "tagmanifest-"))
        ):
            os.unlink(os.path.join(bag_dir, name))


def _bag_info(manifest: Manifest, info: Mapping[str, str] | None) -> dict[str, str]:
    h = manifest.header
    out = {
        "External-Identifier": str(h.get("job_id", "")),
        "External-Description": f"datamover {h.get('operation', 'copy')} of {h.get('source', '')}",
    }
    out.update(info or {})
    return out


def _stray_files(data_dir: str, expected: set[str]) -> list[str]:
    stray: list[str] = []
    for root, _dirs, files in os.walk(data_dir):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), data_dir).replace(os.sep, "/")
            if rel not in expected:
                stray.append(rel)
    return sorted(stray)


def finish_bag(
    bag_dir: str, manifest_path: str, *, info: Mapping[str, str] | None = None
) -> BagResult:
    """Write the tag files for a bag whose payload a copy put in ``bag_dir/data`` and
    whose ``manifest_path`` lists it; digests come from the manifest (no re-read).
    Raises ``BagError`` when ``data/`` holds files the manifest does not list."""
    manifest = read_manifest(manifest_path)
    check_algorithm(manifest.algorithm)
    payload = _payload(manifest)
    stray = _stray_files(os.path.join(bag_dir, "data"), {e.path for e in payload})
    if stray:
        more = f" and {len(stray) - 3} more" if len(stray) > 3 else ""
        raise BagError(
            f"{bag_dir}/data holds files this copy did not write ({', '.join(stray[:3])}{more}); "
            "a bag's payload must be exactly what the manifest lists: copy into an empty "
            "directory"
        )
    count, total = write_tag_files(
        bag_dir,
        ((e.path, e.size, e.digest or "") for e in payload),
        manifest.algorithm,
        _bag_info(manifest, info),
    )
    return BagResult(bag_dir, count, total)


class _Tree:
    """Directories beneath ``root``, reached one component at a time with
    ``O_NOFOLLOW`` (a symlinked directory is refused, never followed) and made with
    ``mkdir`` when ``make``. Descriptors of recent directories are kept (bounded).
    ``root`` itself is opened as named (the user named it)."""

    MAX_OPEN = 64

    def __init__(self, root: str, what: str, *, make: bool = False) -> None:
        self.root, self.what, self.make = root, what, make
        try:
            self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise BagError(f"cannot open {what} {root}: {e.strerror}") from e
        self._open: dict[str, int] = {}

    def parent(self, path: str) -> tuple[int, str]:
        """``(descriptor of the directory holding path, last component)``."""
        head, _, name = path.rpartition("/")
        return self.directory(head, path), name

    def directory(self, head: str, path: str) -> int:
        """The descriptor of the directory ``head`` ("" for the root)."""
        if not head:
            return self.root_fd
        fd = self._open.get(head)
        if fd is None:
            if len(self._open) >= self.MAX_OPEN:
                self._close_cached()
            fd = self.root_fd
            opened: list[int] = []
            try:
                for part in head.split("/"):
                    fd = self._step(fd, part, path)
                    opened.append(fd)
            except BaseException:
                for o in opened:
                    os.close(o)
                raise
            for o in opened[:-1]:
                os.close(o)
            self._open[head] = fd
        return fd

    def _step(self, fd: int, part: str, path: str) -> int:
        if self.make:
            try:
                os.mkdir(part, 0o777, dir_fd=fd)
            except FileExistsError:
                pass
            except OSError as e:
                raise BagError(f"cannot make a directory for {path!r}: {e.strerror}") from e
        try:
            return os.open(part, _DIR, dir_fd=fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise BagError(
                    f"{self.what} {self.root}: a directory on the way to {path!r} is a symlink "
                    "or not a directory; not following it out of the tree"
                ) from None
            raise BagError(
                f"{self.root}: cannot open the directory of {path!r}: {e.strerror}"
            ) from e

    def _close_cached(self) -> None:
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()

    def close(self) -> None:
        self._close_cached()
        os.close(self.root_fd)


def _open_payload(tree: _Tree, entry: ManifestEntry) -> tuple[int, int, str, os.stat_result]:
    """The copied file of ``entry``, opened without following links: ``(fd, its
    directory's fd, its name, fstat)``. Raises ``BagError`` unless it is a regular file
    of the manifest's size."""
    where = f"{tree.root.rstrip('/')}/{entry.path}"
    dir_fd, name = tree.parent(entry.path)
    try:
        fd = os.open(name, _READ, dir_fd=dir_fd)
    except FileNotFoundError:
        raise BagError(
            f"{where} is listed in the manifest but missing; run datamover verify"
        ) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise BagError(f"{where} is a symlink; a bag's payload is regular files") from None
        raise BagError(f"cannot read {where}: {e.strerror}") from e
    st = os.fstat(fd)
    why = None
    if not statmod.S_ISREG(st.st_mode):
        why = f"{where} is not a regular file; a bag's payload is regular files"
    elif st.st_size != entry.size:
        why = (
            f"{where} has {st.st_size} bytes, the manifest says {entry.size}; it changed "
            "after the copy (run datamover verify)"
        )
    if why is not None:
        os.close(fd)
        raise BagError(why)
    return fd, dir_fd, name, st


def _link(src: tuple[int, str, os.stat_result], dst_dir: int, name: str, where: str) -> bool:
    """Hard-link the payload file into the bag; False where links can't be made. The
    name is linked without following it, then checked to be the very inode opened."""
    src_dir, src_name, st = src
    try:
        os.link(src_name, name, src_dir_fd=src_dir, dst_dir_fd=dst_dir, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            return False
        raise BagError(f"cannot link {where} into the bag: {e.strerror}") from None
    linked = os.stat(name, dir_fd=dst_dir, follow_symlinks=False)
    if (linked.st_dev, linked.st_ino) != (st.st_dev, st.st_ino):
        os.unlink(name, dir_fd=dst_dir)
        raise BagError(f"{where} was replaced while it was linked into the bag; run again")
    return True


def _copy_hashing(fd: int, st: os.stat_result, dst_dir: int, name: str, algorithm: str) -> str:
    """Copy the open payload file into a new file (``O_EXCL|O_NOFOLLOW``: nothing
    there is truncated or followed) with its mode and times; its digest."""
    try:
        out = os.open(name, _CREATE, 0o600, dir_fd=dst_dir)
    except FileExistsError:
        raise BagError(f"{name!r} is already in the bag; refusing to overwrite it") from None
    h = hashlib.new(algorithm)
    try:
        offset = 0
        while chunk := os.pread(fd, _COPY_CHUNK, offset):
            h.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view) :]
            offset += len(chunk)
        os.fchmod(out, statmod.S_IMODE(st.st_mode))
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        os.close(out)
    return h.hexdigest()


def export_bag(
    manifest_path: str,
    output: str,
    *,
    link: bool = True,
    info: Mapping[str, str] | None = None,
) -> BagResult:
    """Build a bag at ``output`` from the files a finished copy to a POSIX destination
    wrote (see the module docstring). ``output`` must not exist or be empty.

    Every manifest path is resolved beneath the copy's root and beneath
    ``output/data`` one component at a time without following symlinks; payload
    files are created ``O_EXCL|O_NOFOLLOW`` (an existing file is never truncated)."""
    manifest = read_manifest(manifest_path)
    check_algorithm(manifest.algorithm)
    if manifest.summary is None:
        raise BagError(f"{manifest_path} is from a run that did not finish; resume it first")
    destination = str(manifest.header.get("destination", ""))
    root = local_path(destination) if destination else None
    if root is None:
        raise BagError(
            f"{manifest_path}: the copy went to {destination or 'an unknown place'}; a bag can "
            "be exported only from a copy on a POSIX filesystem (copy it down first)"
        )
    try:
        os.mkdir(output)
    except FileExistsError:
        if not os.path.isdir(output) or os.listdir(output):
            raise BagError(
                f"{output} exists and is not an empty directory; choose a new one"
            ) from None
    except OSError as e:
        raise BagError(f"cannot make the bag directory {output}: {e.strerror}") from e
    source = _Tree(root, "the copy")
    bag = _Tree(output, "the bag", make=True)
    bag.directory("data", "data")
    result = BagResult(output, 0, 0)
    payload = _payload(manifest)
    try:
        for entry in payload:
            fd, src_dir, src_name, st = _open_payload(source, entry)
            try:
                dst_dir, name = bag.parent("data/" + entry.path)
                where = f"{root.rstrip('/')}/{entry.path}"
                if link and _link((src_dir, src_name, st), dst_dir, name, where):
                    result.linked += 1
                    continue
                digest = _copy_hashing(fd, st, dst_dir, name, manifest.algorithm)
                if digest != entry.digest:
                    os.unlink(name, dir_fd=dst_dir)
                    raise BagError(
                        f"{where}: {manifest.algorithm} {digest} differs from the manifest's "
                        f"{entry.digest}; it changed after the copy (run datamover verify)"
                    )
                result.copied += 1
            finally:
                os.close(fd)
    finally:
        source.close()
        bag.close()
    result.files, result.bytes = write_tag_files(
        output,
        ((e.path, e.size, e.digest or "") for e in payload),
        manifest.algorithm,
        _bag_info(manifest, info),
    )
    return result
