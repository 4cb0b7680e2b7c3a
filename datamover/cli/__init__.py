"""The ``datamover`` command line: a thin face over the front door (``datamover.job``).

``main`` parses and dispatches (``main.py``); each command group is one module:
``transfer`` (copy, sync), ``checks`` (verify, hash, manifest), ``jobs`` (jobs,
cleanup), ``browse`` (ls, stat, cat, du, rm, remotes), ``mount`` (mount, umount);
``progress`` draws the live display.
"""

from datamover.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
