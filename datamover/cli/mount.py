"""``datamover mount`` and ``datamover umount``: options in, ``datamover_fuse`` does
the rest (it is an optional package; without it these commands say how to get it)."""

from __future__ import annotations

import argparse
from typing import IO

from datamover.cli.common import EXIT_OK, Parser, size_arg
from datamover.errors import UsageError


def octal_arg(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal number such as 022") from e


def add_parsers(sub: argparse._SubParsersAction[Parser]) -> None:
    p = sub.add_parser("mount", help="mount a bucket or prefix as a POSIX tree (FUSE)")
    p.add_argument("url", help="s3://bucket/prefix, az://container/prefix, gs://..., or a path")
    p.add_argument("mountpoint", help="an existing empty directory")
    p.add_argument("--read-only", action="store_true", help="refuse every write with EROFS")
    p.add_argument(
        "--cache-dir", metavar="DIR", help="where staging files and read blocks go ($TMPDIR)"
    )
    p.add_argument(
        "--cache-size",
        type=size_arg,
        default=16 * 1024**3,
        metavar="SIZE",
        help="disk bound for staging files and cached read blocks (least recently used "
        "evicted first); writes past it fail with ENOSPC (default 16GiB)",
    )
    p.add_argument(
        "--cache-keep",
        action="store_true",
        help="keep cached read blocks at unmount, in --cache-dir, for the next mount",
    )
    p.add_argument(
        "--no-read-cache",
        dest="read_cache",
        action="store_false",
        help="keep no blocks of what is read (random reads go to the store each time)",
    )
    p.add_argument(
        "--read-threads",
        type=int,
        default=2,
        metavar="N",
        help="threads that answer reads of cached blocks in C, beside the Python loop; "
        "0: answer them on the loop's thread (default 2, at most 8)",
    )
    p.add_argument("--allow-other", action="store_true", help="let other users see the mount")
    p.add_argument(
        "--suid",
        action="store_true",
        help="honour set-user-ID and set-group-ID bits of files in the mount (default: nosuid)",
    )
    p.add_argument(
        "--dev",
        action="store_true",
        help="let device nodes in the mount be opened as devices (default: nodev)",
    )
    p.add_argument("--uid", type=int, metavar="N", help="owner of objects without uid metadata")
    p.add_argument("--gid", type=int, metavar="N", help="group of objects without gid metadata")
    p.add_argument(
        "--umask", type=octal_arg, default=0o022, metavar="OCTAL", help="for objects without mode"
    )
    p.add_argument("--foreground", action="store_true", help="serve until unmounted")
    for name, default, what in (
        ("attr-ttl", 5.0, "file attributes"),
        ("dir-ttl", 5.0, "directory listings"),
        ("negative-ttl", 2.0, "lookups that found nothing"),
    ):
        p.add_argument(
            f"--{name}", type=float, default=default, metavar="S", help=f"cache {what} (s)"
        )
    p.add_argument(
        "--prefetch-budget",
        type=size_arg,
        default=256 * 1024**2,
        metavar="SIZE",
        help="read-ahead memory shared by all open files (default 256MiB)",
    )
    p.add_argument(
        "--fs-threads", type=int, default=16, metavar="N", help="store requests at once (16)"
    )
    p.add_argument(
        "--read-part-size",
        type=size_arg,
        default=16 * 1024**2,
        metavar="SIZE",
        help="the largest ranged GET of a sequential read (16MiB)",
    )
    p.add_argument(
        "--read-window",
        type=size_arg,
        default=64 * 1024**2,
        metavar="SIZE",
        help="how far ahead one sequential reader fetches (64MiB)",
    )
    p.add_argument(
        "--max-background",
        type=int,
        default=64,
        metavar="N",
        help="FUSE requests the kernel keeps in flight, set when mounting as root (64)",
    )
    p.add_argument(
        "--attrs-from-list",
        action="store_true",
        help="S3: show sizes and mtimes from the LIST with the default mode and owner, no "
        "HEAD per object (stored modes/owners/mtimes are not shown in listings)",
    )
    p.add_argument(
        "--stat-concurrency",
        type=int,
        default=16,
        metavar="N",
        help="HEADs in flight to complete S3 listings, all directories together (16)",
    )
    p.add_argument(
        "--direct-io",
        action="store_true",
        help="files opened read-only bypass the page cache: less CPU for streaming big "
        "files; no kernel read-ahead or caching, and shared mmap of them fails (ENODEV)",
    )
    p.add_argument("--log-file", metavar="PATH", help="where a background mount logs")
    p.set_defaults(handler=cmd_mount)
    p = sub.add_parser("umount", help="unmount a datamover mount")
    p.add_argument("mountpoint")
    p.set_defaults(handler=cmd_umount)


def cmd_mount(args: argparse.Namespace, out: IO[str]) -> int:
    try:
        # optional: the mount is its own package, with pyfuse3 and libfuse3 underneath
        import datamover_fuse
    except ImportError as e:
        raise UsageError(
            "datamover mount needs the datamover-fuse package: pip install datamover-fuse"
        ) from e
    options = datamover_fuse.MountOptions(
        read_only=args.read_only,
        cache_dir=args.cache_dir,
        cache_size=args.cache_size,
        cache_keep=args.cache_keep,
        read_cache=args.read_cache,
        read_threads=args.read_threads,
        allow_other=args.allow_other,
        suid=args.suid,
        dev=args.dev,
        uid=args.uid,
        gid=args.gid,
        umask=args.umask,
        attr_ttl=args.attr_ttl,
        dir_ttl=args.dir_ttl,
        negative_ttl=args.negative_ttl,
        prefetch_budget=args.prefetch_budget,
        fs_threads=args.fs_threads,
        log_file=args.log_file,
        attrs_from_list=args.attrs_from_list,
        stat_concurrency=args.stat_concurrency,
        read_part_size=args.read_part_size,
        read_window=args.read_window,
        max_background=args.max_background,
        direct_io=args.direct_io,
    )
    datamover_fuse.mount(args.url, args.mountpoint, options, foreground=args.foreground)
    return EXIT_OK


def cmd_umount(args: argparse.Namespace, out: IO[str]) -> int:
    try:
        # optional: the mount is its own package, with pyfuse3 and libfuse3 underneath
        import datamover_fuse
    except ImportError as e:
        raise UsageError(
            "datamover umount needs the datamover-fuse package: pip install datamover-fuse"
        ) from e
    datamover_fuse.umount(args.mountpoint)
    return EXIT_OK
