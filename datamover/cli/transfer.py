"""``datamover copy`` and ``datamover sync``: parse, build one ``TransferJob``, run it
through the front door, render what happened. No transfer logic lives here."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import IO

from datamover.checksums import ALGORITHMS
from datamover.cli.common import EXIT_FAILED, EXIT_OK, Parser, bag_info, rate, shown, size_arg
from datamover.cli.signals import JobTracker
from datamover.errors import DatamoverError, UsageError
from datamover.filters import EXCLUDE, INCLUDE, FileFilter
from datamover.job import (
    Fanout,
    FileJob,
    FileResult,
    Listener,
    Observer,
    RunInfo,
    ScaleOut,
    SyncRules,
    TransferJob,
    TransferReport,
    run,
)
from datamover.options import S3_CHECKSUMS, UNVERIFIED, DaskOptions, TransferOptions, format_size
from datamover.redact import redact
from datamover.reporting.events import JsonLines

log = logging.getLogger("datamover")


def add_parsers(sub: argparse._SubParsersAction[Parser]) -> None:
    """``copy`` and ``sync``."""
    p = sub.add_parser("copy", help="copy a file, directory or prefix, writing a manifest")
    p.add_argument("src", help="local path, s3://bucket/key, az://..., gs://...")
    p.add_argument("dst", help="destination path or URL")
    _transfer_args(p)
    _run_args(p)
    _dask_args(p)
    _process_args(p)
    p.add_argument(
        "--bagit",
        action="store_true",
        help="lay the copy out as a BagIt bag: payload in DST/data/, tag files written from "
        "the manifest after a successful copy (POSIX destination; follows symlinks)",
    )
    p.add_argument(
        "--bag-info",
        action="append",
        default=[],
        metavar="LABEL=VALUE",
        help="with --bagit: a bag-info.txt field, e.g. Source-Organization=Lab (repeatable)",
    )
    p.set_defaults(handler=cmd_copy, json_output=True)

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
    _run_args(p)
    _dask_args(p)
    _process_args(p)
    p.set_defaults(handler=cmd_sync, json_output=True)


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
        type=size_arg,
        default=None,
        metavar="SIZE",
        help="multipart part size, e.g. 8MiB, 64M (default: 8MiB, raised to fit the "
        "destination's part-count limit)",
    )
    p.add_argument(
        "--multipart-threshold",
        type=size_arg,
        default=8 * 1024 * 1024,
        metavar="SIZE",
        help="files up to this size go as one request, larger ones by parts (default "
        "8MiB; 0: every non-empty file by parts; a symlink always goes as one)",
    )
    p.add_argument(
        "--s3-checksum",
        choices=S3_CHECKSUMS,
        default=None,
        help="check S3 uploads carry: auto (learn what the store checks: CRC64NVME, "
        "CRC32C, a signed payload or Content-MD5), crc64nvme, crc32c, md5, or off for "
        "stores that refuse checksum headers (default: the remote's s3_checksum, else auto)",
    )
    p.add_argument(
        "--unverified",
        choices=UNVERIFIED,
        default="readback",
        help="a file whose write no check of the store covered: readback (default: read "
        "it back and compare its sha256, streamed within --memory-budget), fail (the file "
        "fails and its object is removed), or accept (recorded ok with verified: none)",
    )
    p.add_argument(
        "--memory-budget",
        type=size_arg,
        default=256 * 1024 * 1024,
        metavar="SIZE",
        help="cap on part buffers in flight; peak ~= min(budget, transfers x part size) "
        "(default 256MiB)",
    )
    p.add_argument(
        "--bwlimit",
        type=size_arg,
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
        help="follow symlinks in the source and copy what they point to (default: copy "
        "them as links); links in the destination are never followed",
    )
    p.add_argument(
        "--links",
        "-l",
        action="store_true",
        help="object stores: rclone's --links: write symlinks as NAME.rclonelink objects "
        "holding the target, and read such objects back as symlinks",
    )
    p.add_argument(
        "--preserve-setid",
        action="store_true",
        help="POSIX destinations: keep set-user-ID and set-group-ID bits from the "
        "source's mode (default: drop them, as metadata from a bucket is untrusted)",
    )
    p.add_argument(
        "--xattrs", action="store_true", help="carry user.* extended attributes as metadata"
    )
    p.add_argument(
        "--metadata-style",
        metavar="STYLE[,STYLE]",
        help="object-store destinations: the POSIX-metadata keys written, one or more of "
        "s3fs, rclone, gcloud, gcsfuse, azcopy, amlfs, fsx-lustre (default: the store's: "
        "s3fs on S3; azcopy,rclone on Azure; gcloud,gcsfuse,rclone on GCS); every "
        "convention is read regardless (docs/METADATA.md)",
    )
    p.add_argument(
        "--durability",
        default="job",
        metavar="job|file|none",
        help="POSIX destinations: 'job' makes files durable in groups (syncfs) before "
        "the journal or the finished manifest claims them (default); 'file' fsyncs each "
        "file; 'none' leaves write-back to the kernel like cp/rsync/rclone",
    )
    p.add_argument(
        "--no-server-side-copy",
        action="store_true",
        help="stream bytes through this machine even within one cloud",
    )


class _Rule(argparse.Action):
    """--include/--exclude into one ordered list: the first matching rule wins."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        rules = list(getattr(namespace, "filter_rules", None) or [])
        rules.append((INCLUDE if option_string == "--include" else EXCLUDE, str(values)))
        namespace.filter_rules = rules


def _run_args(p: argparse.ArgumentParser) -> None:
    """Filters, dry run and machine-readable output (copy and sync)."""
    p.set_defaults(filter_rules=[])
    p.add_argument(
        "--include",
        action=_Rule,
        metavar="GLOB",
        help="take files matching GLOB (relative path; * within a segment, ** across); "
        "with any --include, unmatched files are left out; first matching rule wins",
    )
    p.add_argument("--exclude", action=_Rule, metavar="GLOB", help="leave out files matching GLOB")
    p.add_argument("--files-from", metavar="FILE", help="only these relative paths (one per line)")
    p.add_argument("--min-size", type=size_arg, metavar="SIZE", help="skip files smaller than SIZE")
    p.add_argument("--max-size", type=size_arg, metavar="SIZE", help="skip files larger than SIZE")
    p.add_argument(
        "--max-age",
        metavar="AGE",
        help="only files modified within AGE (30s, 10m, 2h, 7d) or since a date (2024-05-01)",
    )
    p.add_argument(
        "--min-age", metavar="AGE", help="only files modified at least AGE ago, or before a date"
    )
    p.add_argument(
        "--dry-run",
        "-n",
        action="store_true",
        help="plan and print what would be copied/deleted; transfer, delete and record nothing",
    )
    p.add_argument(
        "--report",
        metavar="PATH",
        help="write an end-of-run JSON report (manifests/report.schema.json)",
    )


def _process_args(p: argparse.ArgumentParser) -> None:
    """Small files over worker processes (``datamover.engine.procs``)."""
    p.add_argument(
        "--processes",
        type=int,
        default=None,
        metavar="N",
        help="worker processes for files up to --multipart-threshold, sharing --transfers, "
        "each with its own --memory-budget; batches of <= 256 files, <= 2 per worker "
        "queued (default: min(idle cores - 1, 4) once 1000 small files are planned, else 1; "
        "1: one process)",
    )


def _dask_args(p: argparse.ArgumentParser) -> None:
    """Scale-out on Dask (copy and sync); needs the ``dask`` extra."""
    p.add_argument(
        "--dask",
        metavar="ADDRESS|local:N",
        help="spread the run over a Dask cluster: a scheduler address (tcp://host:8786) or "
        "local:N worker processes; one manifest and journal as usual (pip install "
        "'datamover[dask]')",
    )
    p.add_argument(
        "--shard-files",
        type=int,
        metavar="N",
        help="with --dask: a task takes at most N files (default 500)",
    )
    p.add_argument(
        "--shard-size",
        type=size_arg,
        metavar="SIZE",
        help="with --dask: a task takes at most SIZE bytes of files (default 512MiB); "
        "each task holds at most --memory-budget",
    )


def _filters(args: argparse.Namespace) -> FileFilter | None:
    flt = FileFilter.build(
        rules=args.filter_rules,
        files_from=args.files_from,
        min_size=args.min_size,
        max_size=args.max_size,
        max_age=args.max_age,
        min_age=args.min_age,
    )
    return flt if flt.active else None


class _DryRunPrinter(Observer):
    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def would_copy(self, job: FileJob) -> None:
        print(
            f"would copy {shown(job.rel, self.out)} ({format_size(job.info.size)})", file=self.out
        )

    def would_delete(self, path: str) -> None:
        print(f"would delete {shown(path, self.out)}", file=self.out)


class _LogLines(Observer):
    """With -v: the run in log lines (info), each file too with -vv (debug)."""

    def run_started(self, run: RunInfo) -> None:
        log.info(
            "%s%s %s -> %s (job %s, manifest %s)",
            "dry run: " if run.dry_run else "",
            run.operation,
            run.source,
            run.destination,
            run.job_id,
            run.manifest,
        )

    def planning_finished(self) -> None:
        log.info("planning done: every file to copy has been found")

    def file_finished(self, result: FileResult) -> None:
        if result.error is not None:
            log.warning("failed %s: %s", result.job.rel, result.error)
        else:
            log.debug("done %s (%d bytes, %.2fs)", result.job.rel, result.size, result.seconds)

    def part_retried(self, job: FileJob, error: DatamoverError, attempt: int, delay: float) -> None:
        log.info("retrying %s (attempt %d, in %.1fs): %s", job.rel, attempt + 1, delay, error)


def listeners(
    args: argparse.Namespace, out: IO[str]
) -> tuple[Listener | None, Observer, JsonLines | None]:
    """The CLI's listeners for a copy/sync, the progress display (to stop) and the
    --json stream (to end with a summary even when the run never started)."""
    parts: list[Listener] = [JobTracker()]
    progress = None
    stream = JsonLines(out) if args.json else None
    if stream is not None:
        parts.append(stream)
    elif args.dry_run and not args.quiet:
        parts.append(_DryRunPrinter(out))
    if args.verbose:
        parts.append(_LogLines())
    elif not args.json and not args.quiet and sys.stderr.isatty():
        # deferred: rich costs 20-40 ms of start-up, and only a live display needs it
        from datamover.cli.progress import make_progress

        progress = make_progress()
        if progress is not None:
            parts.append(progress)
    listener = parts[0] if len(parts) == 1 else Fanout(parts)
    return listener, progress or Observer(), stream


def _options(args: argparse.Namespace) -> TransferOptions:
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
        links=args.links,
        preserve_setid=args.preserve_setid,
        xattrs=args.xattrs,
        durability=args.durability,
        s3_checksum=args.s3_checksum,
        metadata_style=args.metadata_style,
        unverified=args.unverified,
        command_line=("datamover", *args.argv),
        processes=args.processes,
    )


def _job(args: argparse.Namespace, operation: str) -> TransferJob:
    sync = operation == "sync"
    if args.dask is None:
        for flag, value in (("--shard-files", args.shard_files), ("--shard-size", args.shard_size)):
            if value is not None:
                raise UsageError(f"{flag} goes with --dask (it cuts a Dask run into tasks)")
    return TransferJob(
        "sync" if sync else "copy",
        args.src,
        args.dst,
        _options(args),
        _filters(args),
        SyncRules(args.compare_checksum, args.delete, args.max_delete) if sync else SyncRules(),
        dry_run=args.dry_run,
        bagit=not sync and args.bagit,
        bag_info=() if sync else bag_info(args.bag_info),
        report=args.report,
        scale_out=(
            ScaleOut(args.dask, DaskOptions.from_cli(args.shard_files, args.shard_size))
            if args.dask is not None
            else None
        ),
    )


def _run(args: argparse.Namespace, out: IO[str], operation: str) -> TransferReport:
    listener, progress, stream = listeners(args, out)
    try:
        return run(_job(args, operation), listener=listener)
    except DatamoverError as e:
        if stream is not None:
            stream.failed_to_start(e)
        raise
    finally:
        stop(progress)


def cmd_copy(args: argparse.Namespace, out: IO[str]) -> int:
    report = _run(args, out, "copy")
    code = render(report, args, out)
    if args.bagit and report.ok and not args.dry_run and not (args.quiet or args.json):
        print(f"bag: {args.dst} (BagIt 1.0; payload in data/)", file=out)
    return code


def cmd_sync(args: argparse.Namespace, out: IO[str]) -> int:
    return render(_run(args, out, "sync"), args, out)


def stop(progress: Observer) -> None:
    stop = getattr(progress, "stop", None)
    if stop is not None:
        stop()


def render(report: TransferReport, args: argparse.Namespace, out: IO[str]) -> int:
    for path, error in report.failures[:50]:
        print(
            f"FAILED {shown(path, sys.stderr)}: {shown(redact(error), sys.stderr)}", file=sys.stderr
        )
    if len(report.failures) > 50:
        print(f"... and {len(report.failures) - 50} more failures", file=sys.stderr)
    if getattr(args, "json", False):
        pass  # the summary event said it all; stdout stays JSON lines only
    elif report.dry_run:
        if not args.quiet:
            print(
                f"dry run: would copy {_files(report.files_ok)} ({format_size(report.bytes)})"
                + (f", {report.files_skipped} unchanged" if report.files_skipped else "")
                + (f", would delete {len(report.deleted)}" if report.deleted else "")
                + "; nothing was transferred",
                file=out,
            )
    elif not args.quiet:
        if report.resumed:
            print(
                f"resumed job {report.job_id}: {_files(report.files_resumed)} / "
                f"{format_size(report.bytes_resumed)} already done",
                file=out,
            )
        print(
            f"copied {_files(report.files_ok)}, {format_size(report.bytes)} in "
            f"{report.seconds:.1f}s ({rate(report.bytes, report.seconds)}); "
            f"moved {format_size(report.bytes_moved)}"
            + (f", {report.files_skipped} unchanged" if report.files_skipped else "")
            + (f", {len(report.deleted)} deleted" if report.deleted else "")
            + (f", {report.files_failed} FAILED" if report.files_failed else "")
            + (f", {report.retries} retries" if report.retries else ""),
            file=out,
        )
        if report.files_unverified:
            print(
                f"{report.files_unverified} files no check covered (the store enforced "
                "none, and --unverified accept was given); they say verified: none",
                file=out,
            )
        print(f"manifest: {report.manifest}", file=out)
    return EXIT_OK if report.ok else EXIT_FAILED


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"
