"""``datamover verify``, ``datamover hash`` and ``datamover manifest show|export``:
what proves a copy, and what a manifest holds."""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections import Counter
from typing import IO

from datamover.checksums import ALGORITHMS
from datamover.cli.common import EXIT_FAILED, EXIT_OK, Parser, bag_info, escaped
from datamover.errors import UsageError
from datamover.job import HashJob, VerifyJob, run
from datamover.manifest import check_complete, export_sums, read_manifest
from datamover.manifest.bagit import export_bag
from datamover.options import TransferOptions, format_size


def add_parsers(sub: argparse._SubParsersAction[Parser]) -> None:
    p = sub.add_parser("verify", help="re-read a copy and compare it with its manifest")
    p.add_argument("manifest", help="manifest written by copy")
    p.add_argument("target", nargs="?", help="root to check (default: the manifest's destination)")
    p.add_argument("--transfers", type=int, default=8, metavar="N", help="parallel reads")
    p.add_argument(
        "--no-download",
        action="store_true",
        help="read no data: prove each file by the checksums the store computed over the "
        "bytes it holds (as recorded in the manifest); files it can't prove so fail",
    )
    p.add_argument(
        "--allow-download",
        action="store_true",
        help="with --no-download: read the files the store's checksums can't prove",
    )
    p.add_argument(
        "--partial",
        action="store_true",
        help="accept a manifest with no summary (a killed or running run's "
        "MANIFEST.partial) and check the files it lists; without it one is refused",
    )

    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser("manifest", help="show or export a manifest")
    msub = p.add_subparsers(dest="manifest_command", metavar="ACTION", parser_class=Parser)
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
        "--partial",
        action="store_true",
        help="sha256sum: accept a manifest with no summary (a killed or running run's "
        "MANIFEST.partial), or one without digests for some unchanged files (a sync's), "
        "and export the files it has digests for; without it either is refused",
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

    p.set_defaults(handler=cmd_manifest)

    p = sub.add_parser("hash", help="digest of one file or object")
    p.add_argument("url")
    p.add_argument("--checksum", default="sha256", choices=ALGORITHMS, metavar="ALG")
    p.set_defaults(handler=cmd_hash)


def shown(text: object) -> str:
    """``text`` for a report line: control characters escaped always (even into a pipe),
    so a name in a manifest can neither forge a line nor send escape sequences."""
    return escaped(str(text))


def cmd_verify(args: argparse.Namespace, out: IO[str]) -> int:
    job = VerifyJob(
        args.manifest,
        args.target,
        TransferOptions(transfers=args.transfers),
        no_download=args.no_download,
        allow_download=args.allow_download,
        partial=args.partial,
    )
    report = run(job)
    for path in report.missing:
        print(f"MISSING {shown(path)}", file=out)
    for path, why in report.mismatched:
        print(f"MISMATCH {shown(path)}: {shown(why)}", file=out)
    for path, why in report.errors:
        print(f"ERROR {shown(path)}: {shown(why)}", file=out)
    for path, why in report.unproven:
        print(f"UNPROVEN {shown(path)}: {shown(why)}", file=out)
    if not args.quiet or not report.passed:
        verdict = "OK" if report.passed else "FAILED"
        unproven = f", {len(report.unproven)} unproven" if args.no_download else ""
        by_checksum = f"{report.by_checksum} by the store's checksums, " if args.no_download else ""
        print(
            f"{verdict}: {report.ok} of {report.checked} files match {shown(report.target)} "
            f"({len(report.missing)} missing, {len(report.mismatched)} mismatched, "
            f"{len(report.errors)} unreadable{unproven}; {by_checksum}"
            f"{format_size(report.bytes)} read in {report.seconds:.1f}s)",
            file=out,
        )
    if report.size_only and not args.quiet:
        print(
            f"note: {len(report.size_only)} file(s) the sync found unchanged were checked by "
            "size only: this manifest has no digest for them (verify the manifest of the run "
            "that copied them)",
            file=out,
        )
    return EXIT_OK if report.passed else EXIT_FAILED


def cmd_manifest(args: argparse.Namespace, out: IO[str]) -> int:
    if args.manifest_command is None:
        raise UsageError("manifest needs an action: export or show")
    manifest = read_manifest(args.manifest)
    if args.manifest_command == "show":
        t = manifest.tally()
        h = manifest.header
        print(
            f"job {shown(h.get('job_id'))}  {shown(h.get('operation'))}  "
            f"started {shown(h.get('started'))}",
            file=out,
        )
        print(f"  {shown(h.get('source'))} -> {shown(h.get('destination'))}", file=out)
        extra = [
            f"{n} {what}"
            for n, what in (
                (t.skipped, "unchanged"),
                (t.deleted, "deleted"),
                (t.dirs, "directories"),
            )
            if n
        ]
        print(
            f"  {t.ok} files ok, {t.failed} failed, {format_size(t.bytes)}, "
            + "".join(f"{x}, " for x in extra)
            + manifest.algorithm
            + ("" if manifest.summary else "  (incomplete: no summary)"),
            file=out,
        )
        checks = Counter(e.verified for e in manifest.entries if e.status == "ok" and e.verified)
        if checks:
            covered = ", ".join(f"{n} {how}" for how, n in sorted(checks.items()))
            print(f"  verified by: {covered}", file=out)
        return EXIT_OK
    if args.format == "bagit":
        if args.partial:
            raise UsageError(
                "--partial goes with --format sha256sum; a bag is made from a finished copy only"
            )
        if not args.output:
            raise UsageError("--format bagit needs --output DIR (the bag to create)")
        bag = export_bag(
            args.manifest, args.output, link=not args.copy, info=dict(bag_info(args.bag_info))
        )
        if not args.quiet:
            how = f"{bag.linked} hard-linked, {bag.copied} copied"
            print(
                f"wrote bag {bag.path}: {bag.files} files, {format_size(bag.bytes)} ({how})",
                file=sys.stderr,
            )
        return EXIT_OK
    lines = io.StringIO()  # (the manifest's entries are in memory already)
    count = export_sums(manifest, lines)  # refuses an algorithm no coreutils tool checks
    if not args.partial:  # (then, as the bag export does) a run seen only in part
        check_complete(manifest, args.manifest, doing="export")
        _, undigested = manifest.files_with_digests()
        if undigested:
            raise UsageError(
                f"{args.manifest}: no digest for {len(undigested)} file(s) it lists as "
                f"unchanged (first: {shown(undigested[0].path)}), which a sync did not "
                f"read; add --partial to export the {count} it has digests for"
            )
    if args.output:
        # Whole or not at all: a temp file beside it, renamed over it when written.
        temp = f"{args.output}.dmtmp-{os.getpid()}"
        try:
            with open(temp, "x", encoding="utf-8") as fh:  # never one that was there
                try:
                    fh.write(lines.getvalue())
                    fh.flush()
                    os.replace(temp, args.output)
                except BaseException:
                    os.unlink(temp)
                    raise
        except OSError as e:  # no such directory, not writable, a directory at OUTPUT
            raise UsageError(f"cannot write {args.output}: {e.strerror or e}") from e
        if not args.quiet:
            print(f"wrote {count} lines to {args.output}", file=sys.stderr)
    else:
        out.write(lines.getvalue())
    return EXIT_OK


def cmd_hash(args: argparse.Namespace, out: IO[str]) -> int:
    digests = run(HashJob(args.url, TransferOptions(checksum=args.checksum)))
    print(f"{digests[args.checksum]}  {args.url}", file=out)
    return EXIT_OK
