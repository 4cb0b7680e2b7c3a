"""``MountOptions``: built once at the edge (CLI or library call), validated, frozen.

Memory the mount may use, whatever the number of open files::

    prefetch_budget                 read-ahead buffers of every open file together
                                    (each at most read_window, in read_part_size pieces)
  + write_buffer                    part buffers in flight (uploads, base downloads)
  + listing cache                   <= max_cached_entries names with their attributes
  + a few KiB per open file / known inode

and on disk at most ``cache_size`` bytes under ``cache_dir``: staging files, and
blocks of object data read (``read_cache``; evicted first when a write needs room; kept
at unmount with ``cache_keep``, see ``datamover_fuse.blocks``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from datamover.errors import UsageError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True, slots=True)
class MountOptions:
    """What ``datamover mount`` may do. Sizes are bytes, times seconds.

    ``uid``/``gid`` own objects that carry no ``uid``/``gid`` metadata (default: the
    user who mounts); ``umask`` masks the default mode of objects without ``mode``
    metadata (0666 files, 0777 directories).

    ``stream_size_hint`` sizes the parts of a file written sequentially, whose final
    size is unknown while it streams: parts are the store's
    ``choose_part_size(stream_size_hint)`` (S3: 27 MiB for 256 GiB), so a streamed
    file can reach ``stream_size_hint`` (more where the part count allows) before
    ``EFBIG``. Files staged on disk are sized exactly at upload and have no such cap.

    ``attrs_from_list`` trusts what a LIST says (size, LastModified) on stores whose
    listings carry no user metadata (S3): entries get ``--uid``/``--gid`` and the
    default mode at once, with no HEAD per entry, as goofys and mountpoint-s3 show
    objects. Without it, ``readdir`` HEADs every S3 entry of a listing batch (at most
    ``stat_concurrency`` at once, within ``fs_threads``) so that listings show the
    stored POSIX metadata. See docs/SEMANTICS.md, "Listing attributes".

    ``read_window`` is the most a sequential reader fetches ahead (its window starts
    at 1 MiB and doubles per range); ``read_part_size`` is the most one ranged GET
    of that window asks for (several in flight at once). Both draw on
    ``prefetch_budget``, which bounds all open files together.

    ``read_cache`` keeps blocks of what is read (random reads fetch blocks around and
    ahead, and the whole object in the background when it is at most a quarter of
    ``cache_size``), checked by CRC32C and keyed by the object's ETag; ``cache_keep``
    keeps them for the next mount of the same ``cache_dir``. See docs/SEMANTICS.md.
    ``read_threads`` threads (C, ``native.py``) take the kernel's requests and answer
    the reads of cached blocks themselves (checked the same way); 0 answers them in C
    on the Python loop's thread. Each holds ~2.2 MiB of buffers; requests they hand
    to the Python loop wait in a queue of at most 1,024.

    ``read_ahead`` (the kernel's read-ahead for the mount) and ``max_background``
    (the kernel's asynchronous FUSE requests in flight, read-ahead mostly) are set
    only when the mounting process may (root); see ``mount``.

    ``direct_io``: files opened read-only bypass the kernel's page cache (FUSE
    ``direct_io``, as rclone's and s3fs's option of that name): a streaming reader's
    bytes are copied once fewer, but the kernel no longer reads ahead or caches them, so
    each read call reaches the daemon and a shared ``mmap`` of such a file fails
    (``ENODEV``). Off by default; files opened for writing keep the page cache.

    The mount is ``nosuid,nodev`` unless ``suid``/``dev`` ask otherwise (as
    ``mount -o suid,dev``): a set-user-ID file or a device node in the bucket or
    tree grants nothing through the mount.
    """

    read_only: bool = False
    cache_dir: str | None = None
    cache_size: int = 16 * GiB
    allow_other: bool = False
    uid: int | None = None
    gid: int | None = None
    umask: int = 0o022
    attr_ttl: float = 5.0
    dir_ttl: float = 5.0
    negative_ttl: float = 2.0
    prefetch_budget: int = 256 * MiB
    read_window: int = 64 * MiB
    read_part_size: int = 16 * MiB
    write_buffer: int = 256 * MiB
    fs_threads: int = 16
    stream_size_hint: int = 256 * GiB
    read_ahead: int = 16 * MiB
    max_background: int = 64
    max_cached_entries: int = 200_000
    log_file: str | None = None
    attrs_from_list: bool = False
    stat_concurrency: int = 16
    suid: bool = False
    dev: bool = False
    cache_keep: bool = False
    read_cache: bool = True
    read_threads: int = 2
    direct_io: bool = False

    def __post_init__(self) -> None:
        if self.cache_size < 64 * MiB:
            raise UsageError("--cache-size must be at least 64MiB")
        if not 0 <= self.umask <= 0o777:
            raise UsageError("--umask must be an octal number between 000 and 777")
        for name in ("attr_ttl", "dir_ttl", "negative_ttl"):
            value = getattr(self, name)
            if not 0 <= value <= 86400:
                raise UsageError(f"--{name.replace('_', '-')} must be between 0 and 86400 seconds")
        if self.prefetch_budget < 0:
            raise UsageError("--prefetch-budget must not be negative")
        if not MiB <= self.read_part_size <= 256 * MiB:
            raise UsageError("read part size must be between 1MiB and 256MiB")
        if not self.read_part_size <= self.read_window <= 4 * GiB:
            raise UsageError("read window must be between the read part size and 4GiB")
        if not 1 <= self.max_background <= 1024:
            raise UsageError("max_background must be between 1 and 1024")
        if self.write_buffer < 16 * MiB:
            raise UsageError("write buffer must be at least 16MiB")
        if not 1 <= self.fs_threads <= 256:
            raise UsageError("--fs-threads must be between 1 and 256")
        if self.stream_size_hint < 64 * MiB:
            raise UsageError("stream size hint must be at least 64MiB")
        if (self.uid is not None and self.uid < 0) or (self.gid is not None and self.gid < 0):
            raise UsageError("--uid and --gid must not be negative")
        if not 1 <= self.stat_concurrency <= 256:
            raise UsageError("--stat-concurrency must be between 1 and 256")
        if self.cache_keep and self.cache_dir is None:
            raise UsageError("--cache-keep needs --cache-dir DIR: where the kept cache lives")
        if not 0 <= self.read_threads <= 8:
            raise UsageError("--read-threads must be between 0 and 8")
        if self.max_cached_entries < 1000:
            raise UsageError("max_cached_entries must be at least 1000")

    @property
    def owner_uid(self) -> int:
        return os.getuid() if self.uid is None else self.uid

    @property
    def owner_gid(self) -> int:
        return os.getgid() if self.gid is None else self.gid

    def with_(self, **changes: Any) -> MountOptions:
        return replace(self, **changes)
