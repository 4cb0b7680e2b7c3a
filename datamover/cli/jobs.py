"""``datamover jobs list|show|resume|clean`` and ``datamover cleanup``: jobs the journal
knows, and the unfinished uploads runs left behind."""

from __future__ import annotations

import argparse
import sys
from typing import IO

from datamover.cli import transfer
from datamover.cli.common import EXIT_FAILED, EXIT_OK, Parser, shown
from datamover.errors import UsageError
from datamover.filters import parse_duration
from datamover.job import clean_jobs, cleanup, list_jobs, no_jobs_note, resume, show_job
from datamover.options import format_size
from datamover.redact import redact


def add_parsers(sub: argparse._SubParsersAction[Parser]) -> None:
    p = sub.add_parser("jobs", help="list, show, resume or clean journaled jobs")
    jsub = p.add_subparsers(dest="jobs_command", metavar="ACTION", parser_class=Parser)
    j = jsub.add_parser("list", help="every job in the journal")
    j.add_argument("--state-dir", metavar="DIR")
    j = jsub.add_parser("show", help="one job's state")
    j.add_argument("job_id")
    j.add_argument("--state-dir", metavar="DIR")
    j = jsub.add_parser("resume", help="resume an unfinished job")
    j.add_argument("job_id")
    j.add_argument("--state-dir", metavar="DIR")
    j.set_defaults(dry_run=False, json_output=True)
    j = jsub.add_parser("clean", help="forget finished jobs; abort and forget others with --all")
    j.add_argument("job_id", nargs="?")
    j.add_argument("--all", action="store_true", help="also abort unfinished jobs' uploads")
    j.add_argument("--state-dir", metavar="DIR")
    p.set_defaults(handler=cmd_jobs)

    p = sub.add_parser("cleanup", help="abort uploads that runs left unfinished under a URL")
    p.add_argument("url")
    p.add_argument(
        "--older-than",
        metavar="AGE",
        help="only uploads started longer ago than this (30m, 12h, 7d); give one whenever "
        "another datamover may be running against that place",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be aborted")
    p.set_defaults(handler=cmd_cleanup)


def cmd_jobs(args: argparse.Namespace, out: IO[str]) -> int:
    if args.jobs_command is None:
        raise UsageError("jobs needs an action: list, show, resume or clean")
    state = args.state_dir
    if args.jobs_command == "list":
        jobs = list_jobs(state)
        if not jobs and not args.quiet:
            print(no_jobs_note(state), file=sys.stderr)
        for job in jobs:
            print(
                f"{job.job_id}  {job.state:10}  {job.operation:4}  {job.source} -> "
                f"{job.destination}  ({job.files_done} done, {job.files_failed} failed)",
                file=out,
            )
        return EXIT_OK
    if args.jobs_command == "show":
        job, counts = show_job(args.job_id, state)
        print(f"job {job.job_id}: {job.state}", file=out)
        print(f"  {job.operation} {job.source} -> {job.destination}", file=out)
        print(f"  manifest: {job.manifest}", file=out)
        print("  files: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), file=out)
        return EXIT_OK
    if args.jobs_command == "resume":
        listener, progress, _ = transfer.listeners(args, out)
        try:
            report = resume(args.job_id, state, listener=listener)
        finally:
            transfer.stop(progress)
        return transfer.render(report, args, out)
    aborted: list[str] = []
    left: list[str] = []
    removed = clean_jobs(
        args.job_id, state, include_unfinished=args.all, aborted=aborted, left=left
    )
    for url in aborted:
        print(f"aborted unfinished upload {url}", file=out)
    for line in left:
        print(f"datamover: {shown(redact(line), sys.stderr)}", file=sys.stderr)
    print(f"removed {removed} jobs from the journal", file=out)
    return EXIT_FAILED if left else EXIT_OK


def cmd_cleanup(args: argparse.Namespace, out: IO[str]) -> int:
    older = parse_duration(args.older_than) if args.older_than else None
    report = cleanup(args.url, older_than=older, dry_run=args.dry_run)
    for e in report.entries:
        age = f"{e.age:.0f}s" if e.age is not None else "age unknown"
        size = format_size(e.upload.size) if e.upload.size is not None else "-"
        what = {"would-abort": "would abort"}.get(e.action, e.action)
        print(
            f"{what:12} {shown(e.url or e.upload.key, out)}  ({age}, {size})"
            + (f": {shown(e.reason, out)}" if e.reason else ""),
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
