"""What every CLI module shares: the parser class (with the flags every command takes),
exit codes and argument types."""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Sequence
from typing import IO, Any

from datamover.errors import DatamoverError, UsageError
from datamover.options import format_size, parse_size

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143

log = logging.getLogger("datamover")


class Parser(argparse.ArgumentParser):
    """Usage errors exit 2 with one line. Every (sub)command also takes the global
    flags, so ``datamover copy SRC DST -q`` works as ``datamover -q copy SRC DST``
    does (rclone, s5cmd and azcopy accept them anywhere too). A subcommand's own
    value only lands when given (``SUPPRESS``), so it never hides a global one;
    ``-v`` counted after the subcommand adds to the count before it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        top = kwargs.pop("top", False)
        super().__init__(*args, **kwargs)
        # "-5M", "-7d" are values (then refused as negative by their option), not
        # unknown options: argparse took only plain numbers ("-5") for values, and
        # "--part-size -5M" failed with "expected one argument".
        self._negative_number_matcher = re.compile(r"^-\d[\w.]*$")
        if top:
            return
        self.add_argument(
            "-v",
            "--verbose",
            dest="verbose_after",
            action="count",
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
        )
        for flags, dest in ((("-q", "--quiet"), "quiet"), (("--json",), "json")):
            self.add_argument(
                *flags,
                dest=dest,
                action="store_true",
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
            )
        self.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, as every other usage error: argparse's usage block before it was
        # 17 lines for ``copy``, the error itself at the bottom.
        self.exit(EXIT_USAGE, f"datamover: error: {message} (see '{self.prog} --help')\n")


def size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except DatamoverError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def bag_info(pairs: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``LABEL=VALUE`` pairs (``--bag-info``)."""
    out: list[tuple[str, str]] = []
    for pair in pairs:
        label, eq, value = pair.partition("=")
        if not eq or not label.strip():
            raise UsageError(f"--bag-info {pair!r}: write it as LABEL=VALUE")
        out.append((label.strip(), value.strip()))
    return tuple(out)


#: Characters a terminal would act on rather than show: C0 controls, DEL, C1 controls
#: (0x9b is a one-byte CSI), and the surrogates that stand for bytes that were not UTF-8.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape_char(m: re.Match[str]) -> str:
    c = m.group()
    named = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
    if c in named:
        return named[c]
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\{code - 0xDC00:03o}"
    return f"\\{code:03o}" if code < 0x100 else f"\\u{code:04x}"


def escaped(text: str) -> str:
    """``text`` with every character a terminal would act on written as a C-style
    escape (``\\033``, ``\\n``), as GNU ``ls -b`` shows names: a key holding
    escape sequences can't recolour, retitle or rewrite the user's terminal."""
    return _UNSAFE.sub(_escape_char, text) if _UNSAFE.search(text) else text


def shown(text: str, stream: IO[str]) -> str:
    """``text`` as it may be written to ``stream``: escaped on a terminal, as GNU ls
    does; as it is for a pipe or a file, which scripts read byte for byte."""
    isatty = getattr(stream, "isatty", None)
    return escaped(text) if isatty is not None and isatty() else text


def rate(nbytes: int, seconds: float) -> str:
    return f"{format_size(nbytes / seconds)}/s" if seconds > 0 else "-"
