"""The library as a workflow calls it (Snakemake, a notebook, Dask): ``pathlib.Path``
arguments, wrong types, picklable errors, and a run interrupted by Ctrl-C in a
process that goes on."""

from __future__ import annotations

import inspect
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import datamover
from datamover import errors
from datamover.checksums import PartDigests
from datamover.engine.observer import Listener
from datamover.engine.plan import FileJob
from datamover.errors import UsageError
from datamover.journal import Journal, journal_path
from datamover.options import DaskOptions
from datamover.stores import open_store
from datamover.stores.base import PartReceipt


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    for name in ("a.h5", "b.h5", "notes.txt", "sub/c.h5"):
        (root / name).write_bytes(name.encode() * 100)
    return root


def test_paths_may_be_pathlib_paths(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    report = datamover.copy(
        src,  # what a notebook passes
        tmp_path / "dst",
        manifest=tmp_path / "run.jsonl",
        report=tmp_path / "run.json",
        state_dir=tmp_path / "state",
    )
    assert report.ok and report.files_ok == 4
    assert report.manifest == str(tmp_path / "run.jsonl")
    assert (tmp_path / "dst" / "sub" / "c.h5").read_bytes() == b"sub/c.h5" * 100
    assert (tmp_path / "run.json").exists()
    check = datamover.verify(Path(report.manifest))
    assert check.passed and check.manifest == report.manifest
    synced = datamover.sync(src, tmp_path / "dst")
    assert synced.ok and synced.files_skipped == 4
    digest = datamover.hash_url(src / "a.h5")
    assert set(digest) == {"sha256"}
    with datamover.open(src / "a.h5", "rb") as fh:
        assert fh.read(4) == b"a.h5"
    store, key = datamover.open_store(src / "a.h5")
    with store:
        assert key.endswith("a.h5")


def test_bag_info_may_be_label_value_pairs(tmp_path: Path) -> None:
    """``bag_info`` as a list of (label, value) pairs, as a workflow's config often
    holds it, is taken like a mapping."""
    src = _tree(tmp_path / "src")
    report = datamover.copy(
        src,
        tmp_path / "bag",
        bagit=True,
        bag_info=[("Source-Organization", "Lab"), ("Contact-Name", "Ada")],
        manifest=tmp_path / "m.jsonl",
    )
    assert report.ok
    info = (tmp_path / "bag" / "bag-info.txt").read_text()
    assert "Source-Organization: Lab" in info and "Contact-Name: Ada" in info


def test_one_include_pattern_as_a_string_is_one_pattern(tmp_path: Path) -> None:
    """``include="*.h5"`` is the pattern ``*.h5``, not the patterns ``*``, ``.``,
    ``h``, ``5`` (of which ``*`` takes every file)."""
    src = _tree(tmp_path / "src")
    report = datamover.copy(src.as_posix(), str(tmp_path / "dst"), include="*.h5")
    assert report.files_ok == 3
    assert not (tmp_path / "dst" / "notes.txt").exists()
    report = datamover.copy(src.as_posix(), str(tmp_path / "dst2"), exclude="*.h5")
    assert report.files_ok == 1


def test_files_from_may_be_a_pathlib_path(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    listing = tmp_path / "list.txt"
    listing.write_text("a.h5\nsub/c.h5\n")
    report = datamover.copy(str(src), str(tmp_path / "dst"), files_from=listing)
    assert report.files_ok == 2


_WRONG: list[tuple[str, Callable[[Path], object], str]] = [
    ("src int", lambda t: datamover.copy(1, str(t)), "src must be a path or URL"),
    ("src None", lambda t: datamover.copy(None, str(t)), "not NoneType"),
    ("src list", lambda t: datamover.copy([str(t)], str(t)), "not list"),
    ("src bytes", lambda t: datamover.copy(b"/x", str(t)), "not bytes"),
    ("dst None", lambda t: datamover.sync(str(t), None), "dst must be"),
    ("manifest int", lambda t: datamover.verify(3), "manifest must be"),
    ("hash None", lambda t: datamover.hash_url(None), "url must be"),
    ("open int", lambda t: datamover.open(5), "url must be"),
    ("manifest option", lambda t: datamover.copy(str(t), str(t), manifest=1), "manifest must"),
    ("options dict", lambda t: datamover.copy(str(t), str(t), {"transfers": 2}), "TransferOptions"),
    ("filters dict", lambda t: datamover.copy(str(t), str(t), filters={}), "FileFilter.build"),
    ("include int", lambda t: datamover.copy(str(t), str(t), include=3), "include takes"),
    ("exclude ints", lambda t: datamover.copy(str(t), str(t), exclude=[1]), "exclude takes"),
    ("max_age list", lambda t: datamover.copy(str(t), str(t), max_age=[1]), "an age is"),
    ("min_size list", lambda t: datamover.copy(str(t), str(t), min_size=[1]), "a size is"),
    (
        "max_delete str",
        lambda t: datamover.sync(str(t), str(t), delete=True, max_delete="5"),
        "max_delete",
    ),
    ("progress int", lambda t: datamover.copy(str(t), str(t), progress=5), "progress must"),
    ("job id None", lambda t: datamover.resume(None), "a job id is a str"),
    # A flag read from a workflow's config file as text is truthy: "no" meant False.
    ("delete 'no'", lambda t: datamover.sync(str(t), str(t), delete="no"), "delete='no'"),
    ("resume 'false'", lambda t: datamover.copy(str(t), str(t), resume="false"), "give True"),
    ("dry_run 'no'", lambda t: datamover.copy(str(t), str(t), dry_run="no"), "give True"),
    ("partial 1", lambda t: datamover.verify(str(t), partial=1), "partial=1"),
    # sync's checksum= is the comparison, not the manifest's algorithm.
    ("sync sha512", lambda t: datamover.sync(str(t), str(t), checksum="sha512"), "True or"),
    ("client str", lambda t: datamover.copy(str(t), str(t), client="tcp://h:8786"), "cluster="),
    ("cluster int", lambda t: datamover.copy(str(t), str(t), cluster=4), "cluster= takes"),
    ("listener obj", lambda t: datamover.copy(str(t), str(t), listener=object()), "Listener"),
    (
        "dask_options alone",
        lambda t: datamover.copy(str(t), str(t), dask_options=DaskOptions()),
        "without a cluster",
    ),
    ("bag_info int", lambda t: datamover.copy(str(t), str(t), bagit=True, bag_info=5), "mapping"),
    (
        "listener obj, progress",
        lambda t: datamover.copy(str(t), str(t), listener=object(), progress=print),
        "Listener",
    ),
]


@pytest.mark.parametrize(
    ("call", "message"), [(c, m) for _, c, m in _WRONG], ids=[n for n, _, _ in _WRONG]
)
def test_a_wrong_type_is_a_usage_error_saying_so(
    tmp_path: Path, call: Callable[[Path], object], message: str
) -> None:
    """Not a TypeError or AttributeError from deep inside the run: the documented
    ``UsageError``, one line, naming the argument."""
    with pytest.raises(UsageError, match=message) as caught:
        call(tmp_path)
    assert "\n" not in str(caught.value)


def _instances() -> list[BaseException]:
    out: list[BaseException] = []
    for cls in vars(errors).values():
        if not (inspect.isclass(cls) and issubclass(cls, BaseException)):
            continue
        if cls is errors.TransferError:
            out.append(cls("raw/a.h5", errors.TransientError("timed out", key="raw/a.h5")))
        elif cls is errors.ManifestError:
            out.append(cls("line is not JSON", path="m.jsonl", line=3))
        elif cls is errors.Throttled:
            out.append(cls("slow down", key="k", retry_after=2.0))
        elif issubclass(cls, errors.StoreError):
            out.append(cls("failed", key="k"))
        else:
            out.append(cls("failed"))
    return out


@pytest.mark.parametrize("error", _instances(), ids=lambda e: type(e).__name__)
def test_every_error_survives_pickling(error: BaseException) -> None:
    """Dask ships a task's exception from the worker to the client by pickle."""
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert {k: repr(v) for k, v in vars(back).items()} == {
        k: repr(v) for k, v in vars(error).items()
    }


def _open_under(root: Path) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target == str(root) or target.startswith(f"{root}/"):
            out.append(target)
    return out


class _CtrlC(Listener):
    """Ctrl-C (a real SIGINT, as a terminal or a notebook's interrupt sends) once
    bytes are moving. ``_thread.interrupt_main`` only marks the signal: a main thread
    blocked in a wait would not see it before the run ended, on a busy machine."""

    def __init__(self) -> None:
        self.sent = False

    def bytes_done(self, n: int, job: FileJob | None = None) -> None:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, as in a notebook kernel or a script: a
    pytest-xdist worker ignores it, and ``interrupt_main`` then does nothing."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.usefixtures("ctrl_c_raises")
def test_ctrl_c_during_a_copy_leaves_no_descriptor_open(tmp_path: Path) -> None:
    """A library run stopped by KeyboardInterrupt keeps its unfinished temp files for a
    resume, but the process (a notebook kernel) goes on: their descriptors and their
    directories' must not stay open."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.bin", "b.bin"):
        (src / name).write_bytes(os.urandom(4 << 20))
    dst = tmp_path / "dst"
    opts: dict[str, Any] = {
        "multipart_threshold": "256KiB",
        "part_size": "256KiB",
        "transfers": 2,
        "state_dir": str(tmp_path / "state"),
    }
    with pytest.raises(KeyboardInterrupt):
        datamover.copy(str(src), str(dst), listener=_CtrlC(), bwlimit="1M", **opts)
    assert _open_under(dst) == []
    assert any(".dmtmp-" in name for name in os.listdir(dst))  # kept for the resume
    report = datamover.copy(str(src), str(dst), **opts)
    assert report.ok and report.resumed
    assert sorted(os.listdir(dst)) == ["a.bin", "b.bin"]
    assert (dst / "a.bin").read_bytes() == (src / "a.bin").read_bytes()


def test_closing_a_posix_store_lets_go_of_unfinished_writers(tmp_path: Path) -> None:
    store, key = open_store(str(tmp_path / "out.bin"))
    writer = store.open_writer(key, size=8, part_size=4)
    receipt = writer.write_part(0, b"abcd", PartDigests(b"abcd"))
    state = writer.state()
    assert _open_under(tmp_path) != []
    store.close()
    assert _open_under(tmp_path) == []
    temp = Path(state["temp_path"])
    assert temp.exists() and not (tmp_path / "out.bin").exists()
    store, key = open_store(str(tmp_path / "out.bin"))
    with store:
        again = store.resume_writer(key, size=8, part_size=4, state=state)
        assert again.verify_parts({0: receipt}) == {0}
        again.write_part(1, b"efgh", PartDigests(b"efgh"))
        again.commit({})
    assert (tmp_path / "out.bin").read_bytes() == b"abcdefgh"
    assert not temp.exists()


def test_the_library_prints_no_log_line_unless_the_caller_configures_logging() -> None:
    """A warning of the library (the S3 store checks no checksum, xattrs dropped, ...)
    reaches the caller's handlers, but is not written to the stderr of a program that
    configured none (Python's last-resort handler)."""
    warn = "import logging; logging.getLogger('datamover.engine.runner').warning('beware')"
    quiet = subprocess.run(
        [sys.executable, "-c", f"import datamover; {warn}"], capture_output=True, text=True
    )
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""
    configured = subprocess.run(
        [sys.executable, "-c", f"import datamover, logging; logging.basicConfig(); {warn}"],
        capture_output=True,
        text=True,
    )
    assert "beware" in configured.stderr


class _InterruptedOnce:
    """The journal's write connection, with Ctrl-C landing (once) just before the
    statement that starts with ``before``: as a KeyboardInterrupt lands between two
    statements in the thread that opens uploads."""

    def __init__(self, conn: sqlite3.Connection, before: str) -> None:
        self.conn, self.before, self.fired = conn, before, False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if not self.fired and sql.startswith(self.before):
            self.fired = True
            raise KeyboardInterrupt
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def test_ctrl_c_while_an_upload_is_journaled_leaves_the_journal_working(
    tmp_path: Path,
) -> None:
    """Before: the transaction of ``writing`` stayed open, the writer thread's next
    BEGIN failed (it died with a traceback on stderr, every later row lost) and
    ``close`` rolled back the job's final state."""
    journal = Journal(journal_path(str(tmp_path)))
    journal.create_job("job-1", "key-1", "copy", "/src", "/dst", {}, None)
    conn = journal._w
    journal._w = _InterruptedOnce(conn, "DELETE FROM parts")  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        journal.writing("job-1", "a.bin", 8, None, None, 4, {"temp_path": "/dst/.a"})
    journal._w = conn
    assert not conn.in_transaction
    assert journal.lookup("job-1", "a.bin") is None  # all of it or nothing
    journal.writing("job-1", "b.bin", 8, None, None, 4, {"temp_path": "/dst/.b"})
    journal.part("job-1", "b.bin", PartReceipt(0, 4, checksum="00"), "d0")
    journal.flush()
    assert journal._thread.is_alive()
    journal.finish_job("job-1", "aborted", 0, 0, 0)
    journal.close()
    again = Journal(journal_path(str(tmp_path)))
    try:
        record = again.job("job-1")
        assert record is not None and record.state == "aborted"
        found = again.lookup("job-1", "b.bin")
        assert found is not None and found.parts
    finally:
        again.close()
