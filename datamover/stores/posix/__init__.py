"""POSIX filesystem store (local disks, NFS, GPFS, Lustre).

Keys are paths relative to ``/``. Reads use ``preadv`` straight into the caller's
buffer; multipart writes ``pwrite`` each part at its offset into one temp file in the
destination directory (so the final ``rename`` never crosses a filesystem), and commit
is a ``rename``, made durable as ``Durability`` says (per file: ``fsync`` + ``rename`` +
``fsync`` of the directory; per job: one ``syncfs`` per filesystem before the journal
records files done). Readers of the final path see
the old file or the complete new one, never a partial one. Temp files are named
``.<name>.dmtmp-<suffix>`` (a random per-process prefix and a counter, created
``O_EXCL``) and ``abort`` removes them.

**Confinement** (issue: hostile buckets, things changing under a run). A caller names
the trees it works in with ``confine(root)`` (the engine: a copy's source and
destination roots; ``rm -r``: the parent of what it removes; ``child_key`` confines its
root too). Each is a ``beneath.Beneath``: its root is opened once, by its path as
given, and every key below it is reached from that descriptor without following a
symlink or a ``..`` (``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)``, or a walk with
``O_NOFOLLOW | O_DIRECTORY`` per component), and every change is the ``*at`` call on the
parent's descriptor: files, directories, symlinks, hard links (whose targets must be
regular files of the same tree), ``fchmod``/``fchown``/``futimens``/``fsetxattr`` on
the open entry, ``unlinkat``/``renameat``. So nothing a bucket holds (keys, link
targets, metadata) and nothing that changes on disk during the run (a directory swapped
for a symlink) makes the store write, link, chmod or delete outside the root. Reads
below a confined root of a store that does not follow links (no ``--copy-links``)
never follow one either: a file replaced by a symlink after it was listed fails as
changed. Keys under no confined root (direct library use) are resolved by their parent
directory's path as given, and their last component is still never followed.

Many small files (issue #9): each directory is opened once per run and its descriptor
cached (``beneath.DIR_CACHE`` per tree, least recently used closed first), a whole small
file is one ``pwrite`` with no ``ftruncate`` unless it ends in a hole, ``fchown`` is
skipped when the ``fstat`` of the new file shows it already has the wanted owner (and
that ``fstat`` of the open file, not a ``stat`` of the path after the rename, is what
the commit returns). Reading a file takes no ``lstat`` before the ``open``
(``O_NOFOLLOW`` tells a symlink) and no empty read after the last byte. Keys are
checked by their text only (``child_key``): a plan costs no system call per file. The
directory ``fsync`` stays one per file: sharing one among concurrent renames (group
commit) cut those syscalls by a third at 8 transfers but saved no CPU or time on ext4
(the block layer already merges concurrent flushes) and cost CPU on tmpfs (thread
wake-ups).

Fidelity (issue #6), all in this store so the engine stays store-agnostic:

* **Symlinks** are listed and read as links (``lstat``; the "content" is the link
  text, mode carries ``S_IFLNK``, as s3fs stores them) unless the store follows them
  (``--copy-links``, a source only); written back as symlinks (temp name + rename). A
  link is never followed when writing.
* **Empty directories** are listed as ``is_dir`` entries (``dir/``); putting ``dir/``
  makes the directory. **Hard links** carry ``link_id`` (``dev:ino``) when
  ``st_nlink > 1``; a put with ``datamover-hardlink`` metadata makes a hard link to
  that key, which must be a regular file below the same confined root.
* **Sparse files**: reads use ``SEEK_DATA`` to zero-fill holes without reading them;
  writes pre-size the temp file with ``ftruncate`` and skip parts that are all zeros,
  so holes stay holes.
* **Modes**: from metadata, checked (``InvalidMetadata`` fails the file); set-user-ID
  and set-group-ID bits are dropped unless ``preserve_setid``; without mode metadata a
  file is ``0666`` and a directory ``0777``, less the umask (as ``cp`` makes them).
* **Owners**: uid/gid from metadata are applied when running as root (as ``rsync -a``
  and ``tar`` do) or when they are the caller's own; otherwise they stay recorded
  (manifest, metadata) and are reported.
* **xattrs** (``user.*``, with ``xattrs=True``) travel as ``xattr-<name>`` metadata,
  base64-encoded.
* **Lustre**: on a Lustre mount (statfs magic ``0x0BD00BD0``) with ``lfs`` on PATH, a
  large file's stripe layout is read with ``lfs getstripe`` into ``lustre-stripe-*``
  metadata, parts align to the stripe size, and a file written into Lustre with that
  metadata is created with ``lfs setstripe`` first (under an unguessable temp name in
  the held directory: ``lfs`` can't create exclusively). The filesystem probe is
  injectable.

Errors: a missing file is ``NotFound``; a name that would need a symlink followed or a
file used as a directory is ``UnsafePath``; bad metadata is ``InvalidMetadata``; a
permission problem on one file is a plain ``StoreError`` (that file fails, the run goes
on); a full or read-only filesystem is fatal. A listing reports what it can't serve (a
link loop with ``--copy-links``, a path over PATH_MAX, an unreadable subdirectory) as
entries with ``problem`` set rather than stopping.

Modules, in import order (each imports only those above it):

* ``beneath``: ``Beneath``, a root opened once and names below it, not followed;
* ``errors``: an ``OSError`` as this store's error;
* ``durability``: ``Durability``, ``fsync``/``syncfs``;
* ``lustre``: the filesystem probe, ``lfs getstripe``/``setstripe``;
* ``attrs``: ``ObjectInfo`` from a ``stat``, metadata checked, xattrs, mode/mtime/owner
  applied;
* ``sparse``: hole-aware reads and writes;
* ``paths``: key checks (``child_key``), temp names, temp files left behind;
* ``writer``: ``PosixWriter`` and the directories and links ``put`` makes;
* ``fsops``: ``PosixFsOps``, the mount's operations on real directories;
* ``store``: ``PosixStore``.
"""

from datamover.stores.posix.attrs import XATTR_PREFIX, read_xattrs
from datamover.stores.posix.beneath import DIR_CACHE, Beneath, NotBeneath
from datamover.stores.posix.durability import Durability
from datamover.stores.posix.errors import map_oserror
from datamover.stores.posix.fsops import PosixFsOps
from datamover.stores.posix.lustre import LUSTRE_MAGIC, STRIPE_COUNT, STRIPE_SIZE, lfs_getstripe
from datamover.stores.posix.paths import NAME_MAX, PATH_MAX, TEMP_MARK
from datamover.stores.posix.sparse import SPARSE_BLOCK
from datamover.stores.posix.store import PosixStore
from datamover.stores.posix.writer import PosixWriter

__all__ = [
    "DIR_CACHE",
    "LUSTRE_MAGIC",
    "NAME_MAX",
    "PATH_MAX",
    "SPARSE_BLOCK",
    "STRIPE_COUNT",
    "STRIPE_SIZE",
    "TEMP_MARK",
    "XATTR_PREFIX",
    "Beneath",
    "Durability",
    "NotBeneath",
    "PosixFsOps",
    "PosixStore",
    "PosixWriter",
    "lfs_getstripe",
    "map_oserror",
    "read_xattrs",
]
