"""The ``datamover`` command: the parser, logging, and one place that turns errors into
exit codes. Each command group lives in its own module (``transfer``, ``checks``,
``jobs``, ``browse``, ``mount``) and registers its parsers with a handler; the handlers
parse, build a job for the front door (``datamover.job``) and render.

Exit codes: 0 all good; 1 some files failed or did not verify (the rest completed and
are recorded); 2 usage, configuration or a fatal store error (missing bucket, bad
credentials), printed as one line; 130 interrupted (SIGINT), 143 terminated (SIGTERM),
after saying how to resume (``cli/signals.py``). Tracebacks appear only with ``-vv``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from datamover import gcpolicy
from datamover._version import __version__
from datamover.cli import browse, checks, jobs, mount, signals, transfer
from datamover.cli.common import EXIT_OK, EXIT_USAGE, Parser, log, shown
from datamover.config import load_config, use_config
from datamover.errors import DatamoverError, TransientError, UsageError
from datamover.redact import install as install_redaction
from datamover.redact import redact
from datamover.reporting.events import discard_output


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="datamover",
        description="Move bulk research data between filesystems and object stores, "
        "with checksum manifests.",
        top=True,
    )
    parser.add_argument("--version", action="version", version=f"datamover {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    parser.add_argument(
        "--json",
        action="store_true",
        help="machine-readable output: JSON-lines events (copy, sync, jobs resume) or "
        "JSON objects (ls, stat, du, remotes)",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file with named remotes (default $DATAMOVER_CONFIG, else "
        "$XDG_CONFIG_HOME/datamover/config.toml)",
    )
    parser.epilog = "-v, -q, --json and --config may also follow the command."
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    transfer.add_parsers(sub)
    jobs.add_parsers(sub)
    checks.add_parsers(sub)
    browse.add_parsers(sub)
    mount.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the process's own command line: datamover's GC settings
        gcpolicy.tune()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbose += getattr(args, "verbose_after", 0)
    args.argv = argv
    _setup_logging(args.verbose, args.quiet)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    out = sys.stdout
    # Transfers stop the orderly way on SIGINT/SIGTERM (the mount has its own ways).
    transfer = signals.runs_a_transfer(args.command, getattr(args, "jobs_command", None))
    restore = signals.install(pipe=transfer) if args.command in signals.COMMANDS else None
    try:
        if args.json and not getattr(args, "json_output", False):
            raise UsageError(f"datamover {args.command} has no JSON output; drop --json")
        if args.config:
            use_config(args.config)
            load_config()
        handler = getattr(args, "handler", None)
        if handler is None:  # a command group given no action (jobs, manifest, remotes)
            raise UsageError(f"datamover {args.command} needs an action; see --help")
        code: int = handler(args, out)
        return code
    except KeyboardInterrupt as e:
        print(signals.resume_hint(getattr(args, "state_dir", None)), file=sys.stderr)
        return signals.exit_code(e)
    except BrokenPipeError:
        discard_output(sys.stdout)
        if not transfer:  # a listing read as far as its reader wanted (ls | head)
            return EXIT_OK
        print("datamover: stopped: its standard output was closed (broken pipe)", file=sys.stderr)
        return 128 + signal.SIGPIPE
    except DatamoverError as e:
        if args.verbose >= 2:
            log.exception("failed")
        print(f"datamover: error: {shown(redact(_explain(e)), sys.stderr)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # a bug or an unmapped SDK error: one line (-vv: a traceback too)
        with_traceback = args.verbose >= 2
        if with_traceback:
            log.exception("internal error")
        print(
            f"datamover: internal error: {redact(f'{type(e).__name__}: {e}')} "
            f"({'' if with_traceback else 'run with -vv for the traceback, and '}please report it)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    finally:
        if restore is not None:
            restore()


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
    too. Every record is redacted (``redact.install``) before any handler sees it."""
    install_redaction()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose >= 3 else logging.ERROR if quiet else logging.WARNING)
    levels = {0: logging.WARNING, 1: logging.INFO}
    log.setLevel(logging.ERROR if quiet else levels.get(verbose, logging.DEBUG))
    # the mount's own package logs under its name
    logging.getLogger("datamover_fuse").setLevel(log.level)


if __name__ == "__main__":
    sys.exit(main())
