"""``datamover`` in a child process with ``PYTHONPROFILEIMPORTTIME`` set, which its
``--processes`` workers inherit: what it printed, and every module any of those
processes imported. For the tests that check a run never loads a cloud SDK
(``test_azure_deferred_sdk.py``, ``test_gcs_deferred_sdk.py``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass

_IMPORT_LINE = re.compile(r"^import time:\s+\d+\s+\|\s+\d+\s+\|\s*(\S+)\s*$")
_REPORT_HEAD = "import time: self [us]"


@dataclass
class ProbedRun:
    result: subprocess.CompletedProcess[str]
    #: Every module any process of the run imported.
    modules: set[str]
    #: How many Python processes reported their imports.
    processes: int
    #: The stderr lines that are not the import report (the run's own messages).
    other: list[str]

    def loaded(self, prefixes: tuple[str, ...]) -> list[str]:
        """The modules imported whose names start with one of ``prefixes``."""
        return sorted(m for m in self.modules if m.startswith(prefixes))


def run_probed(*argv: str, env: dict[str, str] | None = None, timeout: float = 180) -> ProbedRun:
    child_env = {**os.environ, **(env or {}), "PYTHONPROFILEIMPORTTIME": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "datamover", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env,
    )
    modules: set[str] = set()
    other: list[str] = []
    processes = 0
    for line in r.stderr.splitlines():
        if line.startswith(_REPORT_HEAD):
            processes += 1
        elif m := _IMPORT_LINE.match(line):
            modules.add(m.group(1))
        elif not line.startswith("import time:"):
            other.append(line)
    return ProbedRun(r, modules, processes, other)
