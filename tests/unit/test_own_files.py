"""Files datamover keeps for itself (state directory, journal, manifest, report) are
private, created exclusively, and never reached through a planted symlink; a resumed
run appends only to a checked ``MANIFEST.partial`` of its own job; a corrupt journal
record is a one-line error (docs/SECURITY.md)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import datamover
from datamover import engine
from datamover.errors import AuthError, ManifestError, StateError
from datamover.journal import Journal, journal_path
from datamover.manifest import read_manifest
from datamover.options import TransferOptions
from datamover.stores import open_store

from faults import FaultyStore

DM = [sys.executable, "-m", "datamover"]
OTHER_UID = 65534  # nobody


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DM, *args], capture_output=True, text=True, timeout=120, env=env)


def _one_line_error(run: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("datamover: error: "), run.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _give_away(path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a file another user's")
    os.lchown(path, OTHER_UID, OTHER_UID)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    for i in range(3):
        (root / f"f{i}.txt").write_text(f"file {i}\n")
    return root


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_bytes(b"precious\n")
    return path


def test_own_files_are_private(tmp_path: Path, src: Path) -> None:
    state, m, report = tmp_path / "state", tmp_path / "out" / "m.jsonl", tmp_path / "r.json"
    (tmp_path / "out").mkdir()
    run = _cli(
        "copy",
        str(src),
        str(tmp_path / "dst"),
        "--state-dir",
        str(state),
        "--manifest",
        str(m),
        "--report",
        str(report),
        "-q",
    )
    assert run.returncode == 0, run.stderr
    assert _mode(state) == 0o700
    for name in ("journal.db", "journal.db-wal", "journal.db-shm"):
        if (state / name).exists():
            assert _mode(state / name) == 0o600, name
    assert _mode(m) == 0o600 and _mode(report) == 0o600
    # With no --manifest, manifests go to the state directory's manifests/, private too.
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg")}
    run = _cli("copy", str(src), str(tmp_path / "dst2"), "-q", env=env)
    assert run.returncode == 0, run.stderr
    manifests = tmp_path / "xdg" / "datamover" / "manifests"
    assert _mode(tmp_path / "xdg" / "datamover") == 0o700 and _mode(manifests) == 0o700
    (made,) = manifests.iterdir()
    assert _mode(made) == 0o600


def test_an_existing_state_dir_and_journal_are_tightened(tmp_path: Path, src: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    Journal(journal_path(str(state))).close()
    (state / "journal.db").chmod(0o644)
    datamover.copy(str(src), str(tmp_path / "dst"), state_dir=str(state))
    assert _mode(state) == 0o700 and _mode(state / "journal.db") == 0o600


def test_a_state_dir_of_another_user_is_refused(tmp_path: Path, src: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    _give_away(state)
    run = _cli("copy", str(src), str(tmp_path / "dst"), "--state-dir", str(state))
    _one_line_error(run, str(state), f"belongs to uid {OTHER_UID}")
    assert not (tmp_path / "dst").exists()


@pytest.mark.parametrize("name", ["journal.db", "journal.db-wal", "journal.db-shm"])
def test_a_planted_symlink_at_the_journal_is_refused(
    tmp_path: Path, src: Path, victim: Path, name: str
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / name).symlink_to(victim)
    run = _cli("copy", str(src), str(tmp_path / "dst"), "--state-dir", str(state))
    _one_line_error(run, str(state / name), "symbolic link")
    assert victim.read_bytes() == b"precious\n"
    assert (state / name).is_symlink()


def test_a_journal_of_another_user_is_refused(tmp_path: Path, src: Path) -> None:
    state = tmp_path / "state"
    Journal(journal_path(str(state))).close()
    _give_away(state / "journal.db")
    with pytest.raises(StateError, match=f"belongs to uid {OTHER_UID}"):
        Journal(journal_path(str(state)))


@pytest.mark.parametrize("which", ["m.jsonl.partial", "m.jsonl"])
def test_a_planted_symlink_at_the_manifest_is_refused(
    tmp_path: Path, src: Path, victim: Path, which: str
) -> None:
    """The reproduction: MANIFEST.partial was opened by its predictable name,
    following a symlink planted there."""
    (tmp_path / which).symlink_to(victim)
    run = _cli(
        "copy",
        str(src),
        str(tmp_path / "dst"),
        "--manifest",
        str(tmp_path / "m.jsonl"),
        "--state-dir",
        str(tmp_path / "state"),
    )
    _one_line_error(run, str(tmp_path / which), "symbolic link")
    assert victim.read_bytes() == b"precious\n"
    assert (tmp_path / which).is_symlink()


def test_a_planted_symlink_at_the_report_is_refused(
    tmp_path: Path, src: Path, victim: Path
) -> None:
    (tmp_path / "r.json").symlink_to(victim)
    run = _cli("copy", str(src), str(tmp_path / "dst"), "--report", str(tmp_path / "r.json"))
    _one_line_error(run, "symbolic link")
    assert victim.read_bytes() == b"precious\n"


def test_a_stale_partial_of_ours_is_replaced_by_a_new_job(tmp_path: Path, src: Path) -> None:
    m = tmp_path / "m.jsonl"
    (tmp_path / "m.jsonl.partial").write_text("left over by a run nobody resumes\n")
    report = datamover.copy(str(src), str(tmp_path / "dst"), manifest=str(m), resume=False)
    assert report.ok and read_manifest(str(m)).summary is not None


# -- resuming appends only to a checked partial of the same job -----------------------------


def _aborted(tmp_path: Path, src: Path) -> tuple[TransferOptions, Path]:
    """A copy stopped by a fatal error: its manifest stays ``m.jsonl.partial``."""
    options = TransferOptions(
        transfers=1, state_dir=str(tmp_path / "state"), manifest=str(tmp_path / "m.jsonl")
    )
    src_store, src_key = open_store(str(src))
    dst_store, dst_key = open_store(str(tmp_path / "dst"))
    faulty = FaultyStore(dst_store)
    faulty.fail("put", 0, times=1, error=lambda: AuthError("token expired"))
    with src_store, dst_store, pytest.raises(AuthError):
        engine.copy_between(src_store, src_key, faulty, dst_key, options)
    partial = tmp_path / "m.jsonl.partial"
    assert partial.exists() and _mode(partial) == 0o600
    return options, partial


def _resume(tmp_path: Path, src: Path, options: TransferOptions) -> datamover.TransferReport:
    return datamover.copy(str(src), str(tmp_path / "dst"), options)


def test_resume_cuts_off_a_torn_last_line(tmp_path: Path, src: Path) -> None:
    options, partial = _aborted(tmp_path, src)
    with partial.open("ab") as fh:
        fh.write(b'{"type":"file","path":"f9.txt","si')  # killed mid-line
    report = _resume(tmp_path, src, options)
    assert report.ok and report.resumed
    text = (tmp_path / "m.jsonl").read_text()
    assert "f9.txt" not in text
    manifest = read_manifest(str(tmp_path / "m.jsonl"))
    assert manifest.torn_at is None and manifest.summary is not None
    assert sorted(e.path for e in manifest.entries) == ["f0.txt", "f1.txt", "f2.txt"]
    assert manifest.summary["files_ok"] == 3


def test_resume_refuses_a_symlinked_partial(tmp_path: Path, src: Path, victim: Path) -> None:
    options, partial = _aborted(tmp_path, src)
    partial.unlink()
    partial.symlink_to(victim)
    with pytest.raises(StateError, match="symbolic link"):
        _resume(tmp_path, src, options)
    assert victim.read_bytes() == b"precious\n"


def test_resume_refuses_a_partial_of_another_user(tmp_path: Path, src: Path) -> None:
    options, partial = _aborted(tmp_path, src)
    _give_away(partial)
    with pytest.raises(StateError, match=f"belongs to uid {OTHER_UID}"):
        _resume(tmp_path, src, options)


def test_resume_refuses_a_partial_that_is_not_a_file(tmp_path: Path, src: Path) -> None:
    options, partial = _aborted(tmp_path, src)
    partial.unlink()
    os.mkfifo(partial)  # would block an open for reading
    with pytest.raises(StateError, match="not a regular file"):
        _resume(tmp_path, src, options)


def test_resume_refuses_a_corrupt_partial(tmp_path: Path, src: Path) -> None:
    options, partial = _aborted(tmp_path, src)
    lines = partial.read_bytes().splitlines(keepends=True)
    lines.insert(
        1,
        b'{"type":"file","path":"../../etc/passwd","size":1,"status":"ok",'
        b'"digest":"' + b"0" * 64 + b'"}\n',
    )
    partial.write_bytes(b"".join(lines))
    with pytest.raises(ManifestError, match=r"m\.jsonl\.partial:2: path '\.\./\.\./etc/passwd'"):
        _resume(tmp_path, src, options)


def test_resume_refuses_a_partial_of_another_job(tmp_path: Path, src: Path) -> None:
    options, partial = _aborted(tmp_path, src)
    lines = partial.read_text().splitlines(keepends=True)
    header = json.loads(lines[0])
    header["job_id"] = "19700101T000000Z-deadbeef"
    partial.write_text(json.dumps(header) + "\n" + "".join(lines[1:]))
    with pytest.raises(ManifestError, match="belongs to job '19700101T000000Z-deadbeef'"):
        _resume(tmp_path, src, options)


# -- the journal's records are read as untrusted ---------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [("request", "{not json"), ("request", "[1, 2]"), ("options", "null"), ("source", None)],
)
def test_a_corrupt_journal_record_is_a_one_line_error(
    tmp_path: Path, src: Path, column: str, value: str | None
) -> None:
    _aborted(tmp_path, src)
    state = tmp_path / "state"
    db = sqlite3.connect(state / "journal.db")
    (job_id,) = db.execute("SELECT job_id FROM jobs").fetchone()
    if column == "source":  # TEXT affinity would turn a number into text: a blob
        db.execute("UPDATE jobs SET source=X'ff00'")
    else:
        db.execute(f"UPDATE jobs SET {column}=?", (value,))
    db.commit()
    db.close()
    for args in (("jobs", "resume", job_id), ("jobs", "list")):
        run = _cli(*args, "--state-dir", str(state))
        _one_line_error(run, "journal", "corrupt")
    run = _cli("jobs", "clean", job_id, "--state-dir", str(state))  # what the error says
    assert run.returncode == 0, run.stderr
    assert _cli("jobs", "list", "--state-dir", str(state)).returncode == 0


def test_a_journal_that_is_not_a_database_is_a_one_line_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "journal.db").write_bytes(b"this is not SQLite" * 100)
    (state / "journal.db").chmod(0o600)
    run = _cli("jobs", "list", "--state-dir", str(state))
    _one_line_error(run, "journal")
