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
from typing import IO, TYPE_CHECKING

from datamover import api, cli_browse, engine
from datamover.checksums import ALGORITHMS
from datamover.engine.observer import Fanout, Observer, RunInfo
from datamover.engine.plan import FileJob
from datamover.engine.runner import FileResult, Listener
from datamover.errors import DatamoverError, TransientError, UsageError
from datamover.events import JsonLines
from datamover.filters import EXCLUDE, INCLUDE, FileFilter
from datamover.manifest import export_sums, read_manifest
from datamover.options import TransferOptions, format_size, parse_size
from datamover.redact import RedactingFilter, redact

if TYPE_CHECKING:
    from datamover.dask import DaskOptions

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
    p.add_argument("--min-size", type=_size, metavar="SIZE", help="skip files smaller than SIZE")
    p.add_argument("--max-size", type=_size, metavar="SIZE", help="skip files larger than SIZE")
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
        "--json",
        action="store_true",
        help="JSON-lines events on stdout (file_started, file_done, file_failed, "
        "file_skipped, part_retried, summary, ...)",
    )
    p.add_argument(
        "--report",
        metavar="PATH",
        help="write an end-of-run JSON report (manifests/report.schema.json)",
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
        type=_size,
        metavar="SIZE",
        help="with --dask: a task takes at most SIZE bytes of files (default 512MiB); "
        "each task holds at most --memory-budget",
    )


def _dask_options(args: argparse.Namespace) -> DaskOptions | None:
    if args.dask is None:
        return None
    try:
        from datamover.dask import options_from_cli
    except ImportError as e:
        raise UsageError(
            f"--dask needs the 'distributed' package ({e.name} is missing): "
            "pip install 'datamover[dask]'"
        ) from e
    return options_from_cli(args.shard_files, args.shard_size)


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


def _bag_info(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        label, eq, value = pair.partition("=")
        if not eq or not label.strip():
            raise UsageError(f"--bag-info {pair!r}: write it as LABEL=VALUE")
        out[label.strip()] = value.strip()
    return out


class _DryRunPrinter(Observer):
    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def would_copy(self, job: FileJob) -> None:
        print(f"would copy {job.rel} ({format_size(job.info.size)})", file=self.out)

    def would_delete(self, path: str) -> None:
        print(f"would delete {path}", file=self.out)


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


def _run_listener(
    args: argparse.Namespace, out: IO[str]
) -> tuple[Listener | None, Observer, JsonLines | None]:
    """The CLI's listeners for a copy/sync, the progress display (to stop) and the
    --json stream (to end with a summary even when the run never started)."""
    from rich.console import Console

    from datamover.progress import make_progress

    parts: list[Listener] = []
    progress = None
    stream = JsonLines(out) if args.json else None
    if stream is not None:
        parts.append(stream)
    elif args.dry_run and not args.quiet:
        parts.append(_DryRunPrinter(out))
    if args.verbose:
        parts.append(_LogLines())
    elif not args.json:
        progress = make_progress(Console(stderr=True), quiet=args.quiet)
        if progress is not None:
            parts.append(progress)
    listener = None if not parts else parts[0] if len(parts) == 1 else Fanout(parts)
    return listener, progress or Observer(), stream


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
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file with named remotes (default $DATAMOVER_CONFIG, else "
        "$XDG_CONFIG_HOME/datamover/config.toml)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("copy", help="copy a file, directory or prefix, writing a manifest")
    p.add_argument("src", help="local path, s3://bucket/key, az://..., gs://...")
    p.add_argument("dst", help="destination path or URL")
    _transfer_args(p)
    _run_args(p)
    _dask_args(p)
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
    e = msub.add_parser("export", help="write sha256sum -c lines, or a BagIt bag")
    e.add_argument("manifest")
    e.add_argument(
        "--format",
        default="sha256sum",
        choices=["sha256sum", "bagit"],
        help="sha256sum: `<alg>sum -c` lines; bagit: a BagIt bag at --output DIR of the "
        "copied files (hard-linked, or copied across filesystems)",
    )
    e.add_argument(
        "--output",
        "-o",
        metavar="PATH",
        help="file to write (default stdout); for bagit the bag directory (required)",
    )
    e.add_argument(
        "--copy", action="store_true", help="bagit: copy payload files instead of hard-linking"
    )
    e.add_argument(
        "--bag-info",
        action="append",
        default=[],
        metavar="LABEL=VALUE",
        help="bagit: a bag-info.txt field, e.g. Source-Organization=Lab (repeatable)",
    )
    s = msub.add_parser("show", help="summarise a manifest")
    s.add_argument("manifest")

    p = sub.add_parser("cleanup", help="abort uploads that runs left unfinished under a URL")
    p.add_argument("url")
    p.add_argument(
        "--older-than",
        metavar="AGE",
        help="only uploads started longer ago than this (30m, 12h, 7d); give one whenever "
        "another datamover may be running against that place",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be aborted")

    p = sub.add_parser("hash", help="digest of one file or object")
    p.add_argument("url")
    p.add_argument("--checksum", default="sha256", choices=ALGORITHMS, metavar="ALG")
    cli_browse.add_parsers(sub)
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
        durability=args.durability,
        command_line=("datamover", *argv),
    )


def _rate(nbytes: int, seconds: float) -> str:
    return f"{format_size(nbytes / seconds)}/s" if seconds > 0 else "-"


def cmd_copy(args: argparse.Namespace, argv: Sequence[str], out: IO[str]) -> int:
    listener, progress, stream = _run_listener(args, out)
    try:
        report = api.copy(
            args.src,
            args.dst,
            _options(args, argv),
            listener=listener,
            filters=_filters(args),
            dry_run=args.dry_run,
            report=args.report,
            bagit=args.bagit,
            bag_info=_bag_info(args.bag_info),
            cluster=args.dask,
            dask_options=_dask_options(args),
        )
    except DatamoverError as e:
        if stream is not None:
            stream.failed_to_start(e)
        raise
    finally:
        _stop(progress)
    code = _render(report, args, out)
    if args.bagit and report.ok and not args.dry_run and not (args.quiet or args.json):
        print(f"bag: {args.dst} (BagIt 1.0; payload in data/)", file=out)
    return code


def cmd_sync(args: argparse.Namespace, argv: Sequence[str], out: IO[str]) -> int:
    listener, progress, stream = _run_listener(args, out)
    try:
        report = api.sync(
            args.src,
            args.dst,
            _options(args, argv),
            checksum=args.compare_checksum,
            delete=args.delete,
            max_delete=args.max_delete,
            listener=listener,
            filters=_filters(args),
            dry_run=args.dry_run,
            report=args.report,
            cluster=args.dask,
            dask_options=_dask_options(args),
        )
    except DatamoverError as e:
        if stream is not None:
            stream.failed_to_start(e)
        raise
    finally:
        _stop(progress)
    return _render(report, args, out)


def _stop(progress: Observer) -> None:
    stop = getattr(progress, "stop", None)
    if stop is not None:
        stop()


def _render(report: engine.TransferReport, args: argparse.Namespace, out: IO[str]) -> int:
    for path, error in report.failures[:50]:
        print(f"FAILED {path}: {redact(error)}", file=sys.stderr)
    if len(report.failures) > 50:
        print(f"... and {len(report.failures) - 50} more failures", file=sys.stderr)
    if getattr(args, "json", False):
        pass  # the summary event said it all; stdout stays JSON lines only
    elif report.dry_run:
        if not args.quiet:
            print(
                f"dry run: would copy {report.files_ok} files ({format_size(report.bytes)})"
                + (f", {report.files_skipped} unchanged" if report.files_skipped else "")
                + (f", would delete {len(report.deleted)}" if report.deleted else "")
                + "; nothing was transferred",
                file=out,
            )
    elif not args.quiet:
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
    if args.format == "bagit":
        from datamover.bagit_export import export_bag

        if not args.output:
            raise UsageError("--format bagit needs --output DIR (the bag to create)")
        bag = export_bag(
            args.manifest, args.output, link=not args.copy, info=_bag_info(args.bag_info)
        )
        if not args.quiet:
            how = f"{bag.linked} hard-linked, {bag.copied} copied"
            print(
                f"wrote bag {bag.path}: {bag.files} files, {format_size(bag.bytes)} ({how})",
                file=sys.stderr,
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


def cmd_cleanup(args: argparse.Namespace, out: IO[str]) -> int:
    from datamover.engine.cleanup import cleanup
    from datamover.filters import parse_duration

    older = parse_duration(args.older_than) if args.older_than else None
    report = cleanup(args.url, older_than=older, dry_run=args.dry_run)
    for e in report.entries:
        age = f"{e.age:.0f}s" if e.age is not None else "age unknown"
        size = format_size(e.upload.size) if e.upload.size is not None else "-"
        what = {"would-abort": "would abort"}.get(e.action, e.action)
        print(
            f"{what:12} {e.upload.key}  ({age}, {size})" + (f": {e.reason}" if e.reason else ""),
            file=out,
        )
    if not args.quiet:
        verb = "would abort" if args.dry_run else "aborted"
        print(
            f"{len(report.found)} pending uploads under {args.url}: {len(report.aborted)} "
            f"{verb}, {len(report.skipped)} skipped, {len(report.failed)} failed",
            file=out,
        )
    return EXIT_FAILED if report.failed else EXIT_OK


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
    p.add_argument(
        "--read-part-size",
        type=_size,
        default=16 * 1024**2,
        metavar="SIZE",
        help="the largest ranged GET of a sequential read (16MiB)",
    )
    p.add_argument(
        "--read-window",
        type=_size,
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
        attrs_from_list=args.attrs_from_list,
        stat_concurrency=args.stat_concurrency,
        read_part_size=args.read_part_size,
        read_window=args.read_window,
        max_background=args.max_background,
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
    _setup_logging(args.verbose, args.quiet)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    out = sys.stdout
    try:
        if args.config:
            from datamover.config import load_config, use_config

            use_config(args.config)
            load_config()
        if args.command in cli_browse.COMMANDS:
            return cli_browse.run(args, out)
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
        if args.command == "hash":
            return cmd_hash(args, out)
        if args.command == "cleanup":
            return cmd_cleanup(args, out)
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
        print(f"datamover: error: {redact(_explain(e))}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # a bug or an unmapped SDK error: one line unless -vv
        if args.verbose >= 2:
            raise
        print(
            f"datamover: internal error: {redact(f'{type(e).__name__}: {e}')} "
            "(run with -vv for the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return EXIT_USAGE


def _explain(e: DatamoverError) -> str:
    """The error's one line, with what to do when the store's message lacks it."""
    text = str(e)
    if isinstance(e, TransientError) and "check the endpoint" not in text:
        text += (
            "; check the endpoint (AWS_ENDPOINT_URL, AZURE_STORAGE_CONNECTION_STRING, "
            "STORAGE_EMULATOR_HOST or the remote's endpoint) and that the service is up, "
            "then retry"
        )
    return text


def _setup_logging(verbose: int, quiet: bool) -> None:
    """-v: datamover's info; -vv: its debug and tracebacks; -vvv: every library's debug
    too. Every line passes through ``RedactingFilter``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose >= 3 else logging.ERROR if quiet else logging.WARNING)
    levels = {0: logging.WARNING, 1: logging.INFO}
    log.setLevel(logging.ERROR if quiet else levels.get(verbose, logging.DEBUG))


if __name__ == "__main__":
    sys.exit(main())
