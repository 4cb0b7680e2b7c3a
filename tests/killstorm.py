"""A kill storm: ``datamover copy`` killed with SIGKILL again and again at seeded random
moments, then run to completion. Shared by the integration test
(tests/integration/test_killstorm.py) and the benchmark script (bench/killstorm.py).

Every loop is bounded: at most ``max_kills`` runs, each killed after a random delay
(or finished by itself), each run given at most ``run_timeout`` seconds.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DM = [sys.executable, "-m", "datamover"]


def make_tree(root: Path, *, big: list[int], small: int, seed: int = 16) -> dict[str, bytes]:
    """A few large files (several parts each) and many small ones; returns rel -> bytes."""
    rnd = random.Random(seed)
    out: dict[str, bytes] = {}
    for i, size in enumerate(big):
        out[f"big{i}.bin"] = rnd.randbytes(size)
    for i in range(small):
        out[f"d{i % 7}/f{i:04d}.txt"] = rnd.randbytes(rnd.randrange(1, 20_000))
    for rel, data in out.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return out


def read_tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def journal_progress(db: Path) -> int:
    """Bytes the journal records as durable: parts written plus files done (0 before the
    journal exists, or while it is locked)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2) as conn:
            (parts,) = conn.execute("SELECT COALESCE(SUM(size), 0) FROM parts").fetchone()
            (done,) = conn.execute(
                "SELECT COALESCE(SUM(size), 0) FROM files WHERE state='done'"
            ).fetchone()
    except sqlite3.Error:
        return 0
    return int(parts) + int(done)


@dataclass
class Storm:
    kills: int = 0
    finished_early: int = 0
    seconds: float = 0.0
    delays: list[float] = field(default_factory=list)
    #: Bytes the journal recorded durable after each run.
    progress: list[int] = field(default_factory=list)


def storm(
    cmd: list[str],
    env: dict[str, str],
    db: Path,
    *,
    seed: int,
    kills: int = 10,
    max_kills: int = 30,
    want_progress: int = 0,
    delay: tuple[float, float] = (0.1, 1.0),
    run_timeout: float = 60.0,
    wait_progress: float = 10.0,
    cold_every: int = 0,
) -> Storm:
    """Start ``cmd`` and SIGKILL it at a random moment, at least ``kills`` times, and on
    (up to ``max_kills``) until the journal records ``want_progress`` bytes durable.
    Each delay counts from the run's first journal write past where the previous run
    left off, or from its start when the journal did not move within
    ``wait_progress`` seconds, so kills
    land in the middle of work even on a slow machine. With ``cold_every`` N, every
    Nth run is killed at a random moment from its start instead (start-up, planning,
    the first parts in flight)."""
    rnd = random.Random(seed)
    out = Storm()
    started = time.monotonic()
    while out.kills < max_kills and (out.kills < kills or journal_progress(db) < want_progress):
        before = journal_progress(db)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        cold = cold_every > 0 and out.kills % cold_every == cold_every - 1
        while not cold and proc.poll() is None and time.monotonic() - t0 < wait_progress:
            if journal_progress(db) > before:
                break
            time.sleep(0.02)
        wait = rnd.uniform(0.2, 2.5) if cold else rnd.uniform(*delay)
        out.delays.append(wait)
        try:
            proc.wait(timeout=wait)
            out.finished_early += 1
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=run_timeout)
        out.kills += 1
        out.progress.append(journal_progress(db))
    out.seconds = time.monotonic() - started
    return out


def temp_files(root: Path) -> list[str]:
    """Every name under ``root`` that looks like a datamover temp file."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".dmtmp" in p.name)
