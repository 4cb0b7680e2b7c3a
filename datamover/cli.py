"""The ``datamover`` command: parse, build options, call the library, render.

No transfer logic lives here. Exit codes: 0 all good; 1 some files failed or did not
verify (the rest completed and are recorded); 2 usage, configuration or a fatal store
error (missing bucket, bad credentials), printed as one line; 130 interrupted.
Tracebacks appear only with ``-vv``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import IO

from datamover import engine
from datamover.checksums import ALGORITHMS
from datamover.errors import DatamoverError, UsageError
from datamover.manifest import export_sums, read_manifest
from datamover.options import TransferOptions, format_size, parse_size
from datamover.stores import open_store
from datamover.stores.base import ObjectInfo

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

log = logging.getLogger("datamover")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"datamover: error: {message}\n")


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except DatamoverError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _transfer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checksum",
        default="sha256",
        choices=ALGORITHMS,
        metavar="ALG",
        help=f"whole-file digest for the manifest: {', '.join(ALGORITHMS)} (default sha256)",
    )
    p.add_argument(
        "--transfers",
        type=int,
        default=8,
        metavar="N",
        help="worker threads moving parts and small files at once (default 8)",
    )
    p.add_argument(
        "--part-size",
        type=_size,
        default=None,
        metavar="SIZE",
        help="multipart part size, e.g. 8MiB, 64M (default: 8MiB, raised to fit the "
        "destination's part-count limit)",
    )
    p.add_argument(
        "--multipart-threshold",
        type=_size,
        default=8 * 1024 * 1024,
        metavar="SIZE",
        help="files up to this size go as one request (default 8MiB)",
    )
    p.add_argument(
        "--memory-budget",
        type=_size,
        default=256 * 1024 * 1024,
        metavar="SIZE",
        help="cap on part buffers in flight; peak ~= min(budget, transfers x part size) "
        "(default 256MiB)",
    )
    p.add_argument(
        "--bwlimit",
        type=_size,
        default=None,
        metavar="RATE",
        help="bandwidth cap for the whole run in bytes/s, shared by all threads (e.g. 50M)",
    )
    p.add_argument(
        "--manifest",
        metavar="PATH",
        help="where to write the manifest (default: $XDG_STATE_HOME/datamover/manifests/)",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the job journal lives (default $XDG_STATE_HOME/datamover)",
    )
    p.add_argument(
        "--new-job",
        action="store_true",
        help="don't resume an unfinished run of the same command; start afresh",
    )
    p.add_argument(
        "--no-preserve",
        action="store_true",
        help="don't carry POSIX mode, owner and mtime as metadata or restore them",
    )
    p.add_argument(
        "--copy-links",
        "-L",
        action="store_true",
        help="follow symlinks and copy what they point to (default: copy them as links)",
    )
    p.add_argument(
        "--xattrs", action="store_true", help="carry user.* extended attributes as metadata"
    )
    p.add_argument(
        "--no-server-side-copy",
        action="store_true",
        help="stream bytes through this machine even within one cloud",
    )


def build_parser() -> argparse.ArgumentParser:
    from datamover import __version__

    parser = _Parser(
        prog="datamover",
        description="Move bulk research data between filesystems and object stores, "
        "with checksum manifests.",
    )
    parser.add_argument("--version", action="version", version=f"datamover {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("copy", help="copy a file, directory or prefix, writing a manifest")
    p.add_argument("src", help="local path, s3://bucket/key, az://..., gs://...")
    p.add_argument("dst", help="destination path or URL")
    _transfer_args(p)

    p = sub.add_parser("sync", help="copy only what differs; optionally delete extras")
    p.add_argument("src", help="source directory, prefix or file")
    p.add_argument("dst", help="destination directory or prefix")
    p.add_argument(
        "--checksum-compare",
        "-c",
        dest="compare_checksum",
        action="store_true",
        help="compare whole-file digests instead of size + mtime",
    )
    p.add_argument(
        "--delete", action="store_true", help="delete destination files absent at the source"
    )
    p.add_argument(
        "--max-delete",
        type=int,
        default=None,
        metavar="N",
        help="with --delete: abort, deleting nothing, if more than N files would go",
    )
    _transfer_args(p)

    p = sub.add_parser("jobs", help="list, show, resume or clean journaled jobs")
    jsub = p.add_subparsers(dest="jobs_command", metavar="ACTION", parser_class=_Parser)
    j = jsub.add_parser("list", help="every job in the journal")
    j.add_argument("--state-dir", metavar="DIR")
    j = jsub.add_parser("show", help="one job's state")
    j.add_argument("job_id")
    j.add_argument("--state-dir", metavar="DIR")
    j = jsub.add_parser("resume", help="resume an unfinished job")
    j.add_argument("job_id")
    j.add_argument("--state-dir", metavar="DIR")
    j = jsub.add_parser("clean", help="forget finished jobs; abort and forget others with --all")
    j.add_argument("job_id", nargs="?")
    j.add_argument("--all", action="store_true", help="also abort unfinished jobs' uploads")
    j.add_argument("--state-dir", metavar="DIR")

    p = sub.add_parser("verify", help="re-read a copy and compare it with its manifest")
    p.add_argument("manifest", help="manifest written by copy")
    p.add_argument("target", nargs="?", help="root to check (default: the manifest's destination)")
    p.add_argument("--transfers", type=int, default=8, metavar="N", help="parallel reads")

    p = sub.add_parser("manifest", help="show or export a manifest")
    msub = p.add_subparsers(dest="manifest_command", metavar="ACTION", parser_class=_Parser)
    e = msub.add_parser("export", help="write sha256sum -c compatible lines")
    e.add_argument("manifest")
    e.add_argument("--format", default="sha256sum", choices=["sha256sum"])
    e.add_argument("--output", "-o", metavar="PATH", help="file to write (default stdout)")
    s = msub.add_parser("show", help="summarise a manifest")
    s.add_argument("manifest")

    p = sub.add_parser("ls", help="list objects or files")
    p.add_argument("url")
    p.add_argument("-R", "--recursive", action="store_true", help="list the whole tree")

    p = sub.add_parser("hash", help="digest of one file or object")
    p.add_argument("url")
    p.add_argument("--checksum", default="sha256", choices=ALGORITHMS, metavar="ALG")
    _mount_parsers(sub)
    return parser


def _options(args: argparse.Namespace, argv: Sequence[str]) -> TransferOptions:
    return TransferOptions(
        checksum=args.checksum,
        transfers=args.transfers,
        part_size=args.part_size,
        multipart_threshold=args.multipart_threshold,
        memory_budget=args.memory_budget,
        bwlimit=args.bwlimit,
        manifest=args.manifest,
        state_dir=args.state_dir,
        resume=not args.new_job,
        server_side_copy=not args.no_server_side_copy,
        preserve=not args.no_preserve,
        copy_links=args.copy_links,
        xattrs=args.xattrs,
        command_line=("datamover", *argv),
    )


def _rate(nbytes: int, seconds: float) -> str:
    return f"{format_size(nbytes / seconds)}/s" if seconds > 0 else "-"


def cmd_copy(args: argparse.Namespace, argv: Sequence[str], out: IO[str]) -> int:
    report = engine.copy(args.src, args.dst, _options(args, argv))
    return _render(report, args, out)


def cmd_sync(args: argparse.Namespace, argv: Sequence[str], out: IO[str]) -> int:
    report = engine.sync(
        args.src,
        args.dst,
        _options(args, argv),
        checksum=args.compare_checksum,
        delete=args.delete,
        max_delete=args.max_delete,
    )
    return _render(report, args, out)


def _render(report: engine.TransferReport, args: argparse.Namespace, out: IO[str]) -> int:
    for path, error in report.failures[:50]:
        print(f"FAILED {path}: {error}", file=sys.stderr)
    if len(report.failures) > 50:
        print(f"... and {len(report.failures) - 50} more failures", file=sys.stderr)
    if not args.quiet:
        if report.resumed:
            print(
                f"resumed job {report.job_id}: {report.files_resumed} files already done",
                file=out,
            )
        print(
            f"copied {report.files_ok} files, {format_size(report.bytes)} in "
            f"{report.seconds:.1f}s ({_rate(report.bytes, report.seconds)}); "
            f"moved {format_size(report.bytes_moved)}"
            + (f", {report.files_skipped} unchanged" if report.files_skipped else "")
            + (f", {len(report.deleted)} deleted" if report.deleted else "")
            + (f", {report.files_failed} FAILED" if report.files_failed else "")
            + (f", {report.retries} retries" if report.retries else ""),
            file=out,
        )
        print(f"manifest: {report.manifest}", file=out)
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_jobs(args: argparse.Namespace, out: IO[str]) -> int:
    from datamover.engine import jobs_admin

    if args.jobs_command is None:
        raise UsageError("jobs needs an action: list, show, resume or clean")
    state = args.state_dir
    if args.jobs_command == "list":
        for job in jobs_admin.list_jobs(state):
            print(
                f"{job.job_id}  {job.state:10}  {job.operation:4}  {job.source} -> "
                f"{job.destination}  ({job.files_done} done, {job.files_failed} failed)",
                file=out,
            )
        return EXIT_OK
    if args.jobs_command == "show":
        job, counts = jobs_admin.show_job(args.job_id, state)
        print(f"job {job.job_id}: {job.state}", file=out)
        print(f"  {job.operation} {job.source} -> {job.destination}", file=out)
        print(f"  manifest: {job.manifest}", file=out)
        print("  files: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), file=out)
        return EXIT_OK
    if args.jobs_command == "resume":
        return _render(jobs_admin.resume_job(args.job_id, state), args, out)
    removed = jobs_admin.clean_jobs(args.job_id, state, include_unfinished=args.all)
    print(f"removed {removed} jobs from the journal", file=out)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, out: IO[str]) -> int:
    options = TransferOptions(transfers=args.transfers)
    report = engine.verify(args.manifest, args.target, options)
    for path in report.missing:
        print(f"MISSING {path}", file=out)
    for path, why in report.mismatched:
        print(f"MISMATCH {path}: {why}", file=out)
    for path, why in report.errors:
        print(f"ERROR {path}: {why}", file=out)
    if not args.quiet or not report.passed:
        verdict = "OK" if report.passed else "FAILED"
        print(
            f"{verdict}: {report.ok} of {report.checked} files match {report.target} "
            f"({len(report.missing)} missing, {len(report.mismatched)} mismatched, "
            f"{len(report.errors)} unreadable; {format_size(report.bytes)} read in "
            f"{report.seconds:.1f}s)",
            file=out,
        )
    return EXIT_OK if report.passed else EXIT_FAILED


def cmd_manifest(args: argparse.Namespace, out: IO[str]) -> int:
    if args.manifest_command is None:
        raise UsageError("manifest needs an action: export or show")
    manifest = read_manifest(args.manifest)
    if args.manifest_command == "show":
        ok = sum(1 for e in manifest.entries if e.status == "ok")
        failed = len(manifest.entries) - ok
        h = manifest.header
        print(f"job {h.get('job_id')}  {h.get('operation')}  started {h.get('started')}", file=out)
        print(f"  {h.get('source')} -> {h.get('destination')}", file=out)
        print(
            f"  {ok} files ok, {failed} failed, "
            f"{format_size(sum(e.size for e in manifest.entries if e.status == 'ok'))}, "
            f"{manifest.algorithm}" + ("" if manifest.summary else "  (incomplete: no summary)"),
            file=out,
        )
        return EXIT_OK
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            count = export_sums(manifest, fh)
        if not args.quiet:
            print(f"wrote {count} lines to {args.output}", file=sys.stderr)
    else:
        export_sums(manifest, out)
    return EXIT_OK


def cmd_ls(args: argparse.Namespace, out: IO[str]) -> int:
    store, key = open_store(args.url)
    with store:
        prefix = key
        if key and not key.endswith("/"):
            try:
                info = store.stat(key)
                if not info.is_dir:
                    _print_entry(info, out, "")
                    return EXIT_OK
            except DatamoverError as e:
                if e.fatal:
                    raise
            prefix = key + "/"
        for info in store.list(prefix, recursive=args.recursive):
            _print_entry(info, out, prefix)
    return EXIT_OK


def _print_entry(info: ObjectInfo, out: IO[str], prefix: str) -> None:
    name = info.key[len(prefix) :] if info.key.startswith(prefix) else info.key
    if info.is_dir:
        print(f"{'DIR':>12}  {'':19}  {name}", file=out)
        return
    when = (
        datetime.fromtimestamp(info.mtime, UTC).strftime("%Y-%m-%d %H:%M:%S")
        if info.mtime is not None
        else "-"
    )
    print(f"{info.size:>12}  {when}  {name}", file=out)


def cmd_hash(args: argparse.Namespace, out: IO[str]) -> int:
    digests = engine.hash_url(args.url, TransferOptions(checksum=args.checksum))
    print(f"{digests[args.checksum]}  {args.url}", file=out)
    return EXIT_OK


def _octal(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal number such as 022") from e


def _mount_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser("mount", help="mount a bucket or prefix as a POSIX tree (FUSE)")
    p.add_argument("url", help="s3://bucket/prefix, az://container/prefix, gs://..., or a path")
    p.add_argument("mountpoint", help="an existing empty directory")
    p.add_argument("--read-only", action="store_true", help="refuse every write with EROFS")
    p.add_argument("--cache-dir", metavar="DIR", help="where staging files go (default: $TMPDIR)")
    p.add_argument(
        "--cache-size",
        type=_size,
        default=16 * 1024**3,
        metavar="SIZE",
        help="disk bound for staging files; writes past it fail with ENOSPC (default 16GiB)",
    )
    p.add_argument("--allow-other", action="store_true", help="let other users see the mount")
    p.add_argument("--uid", type=int, metavar="N", help="owner of objects without uid metadata")
    p.add_argument("--gid", type=int, metavar="N", help="group of objects without gid metadata")
    p.add_argument(
        "--umask", type=_octal, default=0o022, metavar="OCTAL", help="for objects without mode"
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
        type=_size,
        default=256 * 1024**2,
        metavar="SIZE",
        help="read-ahead memory shared by all open files (default 256MiB)",
    )
    p.add_argument(
        "--fs-threads", type=int, default=16, metavar="N", help="store requests at once (16)"
    )
    p.add_argument("--log-file", metavar="PATH", help="where a background mount logs")
    p = sub.add_parser("umount", help="unmount a datamover mount")
    p.add_argument("mountpoint")


def cmd_mount(args: argparse.Namespace) -> int:
    try:
        import datamover_fuse
    except ImportError as e:
        raise UsageError(
            "datamover mount needs the datamover-fuse package: pip install datamover-fuse"
        ) from e
    options = datamover_fuse.MountOptions(
        read_only=args.read_only,
        cache_dir=args.cache_dir,
        cache_size=args.cache_size,
        allow_other=args.allow_other,
        uid=args.uid,
        gid=args.gid,
        umask=args.umask,
        attr_ttl=args.attr_ttl,
        dir_ttl=args.dir_ttl,
        negative_ttl=args.negative_ttl,
        prefetch_budget=args.prefetch_budget,
        fs_threads=args.fs_threads,
        log_file=args.log_file,
    )
    datamover_fuse.mount(args.url, args.mountpoint, options, foreground=args.foreground)
    return EXIT_OK


def cmd_umount(args: argparse.Namespace) -> int:
    try:
        import datamover_fuse
    except ImportError as e:
        raise UsageError(
            "datamover umount needs the datamover-fuse package: pip install datamover-fuse"
        ) from e
    datamover_fuse.umount(args.mountpoint)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2) if not args.quiet else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    out = sys.stdout
    try:
        if args.command == "copy":
            return cmd_copy(args, argv, out)
        if args.command == "sync":
            return cmd_sync(args, argv, out)
        if args.command == "jobs":
            return cmd_jobs(args, out)
        if args.command == "verify":
            return cmd_verify(args, out)
        if args.command == "manifest":
            return cmd_manifest(args, out)
        if args.command == "ls":
            return cmd_ls(args, out)
        if args.command == "hash":
            return cmd_hash(args, out)
        if args.command == "mount":
            return cmd_mount(args)
        if args.command == "umount":
            return cmd_umount(args)
        parser.error(f"unknown command {args.command}")
    except KeyboardInterrupt:
        print("datamover: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except DatamoverError as e:
        if args.verbose >= 2:
            log.exception("failed")
        print(f"datamover: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
