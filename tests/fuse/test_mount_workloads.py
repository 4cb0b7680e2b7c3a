"""Real random-access codes through a real mount (issue #23, point 4): what
``bench/mount_workloads.py`` times beside s3fs, here small and checked for the bytes
and for what the mount asks of the store (GETs counted on the wire by
``CountingProxy`` in front of SeaweedFS).
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from counting_proxy import CountingProxy
from mounting import Target, mount_through

pytestmark = [pytest.mark.fuse, pytest.mark.cloud, pytest.mark.timeout(300)]

#: ~17 MiB: large enough that integrity_check's hops are shorter than a quarter of the
#: file, what the mount counts as a far (random) read; at 40,000 rows they were not.
ROWS = 150_000


@pytest.fixture
def proxy(s3_target: Target) -> Iterator[CountingProxy]:
    with CountingProxy(s3_target.backend.server.endpoint) as p:
        yield p


def make_db(path: Path) -> list[str]:
    """A table of ``ROWS`` rows with an index on ``name``; the names."""
    rng = random.Random(23)
    names = [f"{rng.getrandbits(64):016x}" for _ in range(ROWS)]
    db = sqlite3.connect(path)
    db.executescript(
        "PRAGMA journal_mode=OFF; CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v TEXT);"
    )
    db.executemany(
        "INSERT INTO t VALUES (?, ?, ?)",
        ((i, n, f"{rng.getrandbits(256):064x}") for i, n in enumerate(names)),
    )
    db.execute("CREATE INDEX t_name ON t(name)")
    db.commit()
    db.close()
    return names


def open_ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro&immutable=1", uri=True)


def query(path: Path, sql: str) -> list[object]:
    """``sql``'s rows, with the database closed again: a connection left for the
    garbage collector keeps the file open, and the mount busy at unmount."""
    db = open_ro(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def lookups(path: Path, names: list[str]) -> list[object]:
    db = open_ro(path)
    try:
        return [db.execute("SELECT * FROM t WHERE name = ?", (n,)).fetchall() for n in names]
    finally:
        db.close()


def test_sqlite_read_only_queries_match_the_local_copy(
    s3_target: Target, proxy: CountingProxy, tmp_path: Path
) -> None:
    """Indexed point lookups, a full scan and ``sqlite3 -readonly`` through the mount
    answer exactly what the local database does."""
    local = tmp_path / "local.sqlite"
    names = make_db(local)
    key = f"sqlite-{uuid.uuid4().hex[:8]}/db.sqlite"
    s3_target.store.put(key, local.read_bytes())
    picks = random.Random(1).sample(names, 300)
    with mount_through(proxy, s3_target, tmp_path) as m:
        remote = m.path / key
        assert lookups(remote, picks) == lookups(local, picks)
        scan = "SELECT count(*), sum(length(v)), max(name) FROM t"
        assert query(remote, scan) == query(local, scan)
        cli = subprocess.run(
            ["sqlite3", "-readonly", str(remote), "SELECT name, v FROM t WHERE id % 997 = 0;"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        want = query(local, "SELECT name, v FROM t WHERE id % 997 = 0")
        assert cli.stdout.splitlines() == [f"{n}|{v}" for n, v in want]


def test_sqlite_integrity_check_reads_the_database_a_bounded_number_of_times(
    s3_target: Target, proxy: CountingProxy, tmp_path: Path
) -> None:
    """``PRAGMA integrity_check`` walks every B-tree page, hopping back and forth a few
    pages at a time. The mount must not turn that into a GET per page plus read-ahead
    windows dropped at the next hop: the store is asked for at most a few times the
    database's bytes, in far fewer GETs than pages. (Before ``NEAR_AFTER`` in
    ``datamover_fuse.randomread``: 4,202 GETs for 4,327 pages, 5x slower, and 160 s
    against s3fs's 1 s on a busy machine; before ``NEAR_SPAN``, 70 GETs, 62 of them a
    64 KiB block each, as integrity_check walked the file backwards.)"""
    local = tmp_path / "local.sqlite"
    make_db(local)
    size = local.stat().st_size
    key = f"sqlite-{uuid.uuid4().hex[:8]}/db.sqlite"
    s3_target.store.put(key, local.read_bytes())
    path = f"/{s3_target.backend.bucket}/{key}"
    with mount_through(proxy, s3_target, tmp_path) as m:
        db = open_ro(m.path / key)
        try:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            db.close()
        with proxy.lock:
            ranges = [(a, b) for p, a, b in proxy.ranges if p == path]
            gets = sum(1 for meth, p in proxy.requests if meth == "GET" and p == path)
    fetched = sum(b - a + 1 for a, b in ranges)
    pages = size // 4096
    assert fetched <= 2 * size, (fetched, size, gets)
    assert gets <= pages // 4, (gets, pages)
    # A near hop no larger than a block fetches the 1 MiB around it (``NEAR_SPAN``):
    # 22 GETs for this 17 MiB database, where each near miss read alone took 70.
    assert gets <= size // (512 * 1024), (gets, size)
