"""The mount that legacy codes do not notice (issue #17), on real mounts.

``cp -a``, ``cp -r --preserve=all``, ``rsync -aH`` and ``tar -xpf`` of a tree with
directory modes and times, symlinks, empty directories, hard links, a FIFO and a
device node, into a mount on SeaweedFS (whose markers drop metadata), moto, Azurite,
fake-gcs-server and Ceph RGW over http and https (issue #21): exit 0, read back
identical, and identical again through a fresh mount (a remount). Special files and
hard links one by one; sqlite3 and git working in the mount; permissions for a caller
who is not the owner; errors a program can act on (these on SeaweedFS, Azurite,
fake-gcs-server and Ceph RGW over http and https). The store is checked through the
SDK (``target.store``).
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from datamover.errors import NotFound
from datamover.posixmeta import PosixAttrs
from datamover.stores.base import DIR_META_NAME, HARDLINK_KEY, MiB

from mounting import BACKENDS, CEPH_BACKENDS, Mount, MountPool, Target, make_target, run

pytestmark = [pytest.mark.fuse, pytest.mark.cloud, pytest.mark.timeout(300)]

OLD_NS = 1_500_000_000_123_456_789
NOBODY = 65534


@pytest.fixture(params=[*BACKENDS, *CEPH_BACKENDS])
def target(request: pytest.FixtureRequest, mount_pool: MountPool) -> Target:
    """This module's one-by-one tests also run on Ceph RGW, over http and https."""
    return make_target(mount_pool, request.param)


def make_tree(root: Path) -> Path:
    """Nested directories with their own modes and old nanosecond mtimes, an empty
    one, a symlink, a hard-linked pair, a FIFO, a character device, files from 0
    bytes to 9 MiB (past the single-put threshold)."""
    files = {
        "empty.txt": b"",
        "small.txt": b"hello world\n",
        "sub/a.txt": os.urandom(4097),
        "sub/deeper/b.bin": os.urandom(1 * MiB + 3),
        "sub/deeper/c.bin": os.urandom(9 * MiB + 1),
        "other dir/spaced name.txt": b"spaces are fine\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "emptydir").mkdir()
    os.symlink("sub/a.txt", root / "link")
    os.link(root / "small.txt", root / "sub" / "hard.txt")
    os.mkfifo(root / "sub" / "fifo", 0o640)
    os.mknod(root / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.chmod(root / "small.txt", 0o600)
    os.chmod(root / "sub/a.txt", 0o755)
    os.chmod(root / "sub/deeper", 0o750)
    os.chmod(root / "emptydir", 0o700)
    os.chmod(root / "other dir", 0o2775)
    for i, path in enumerate(sorted(root.rglob("*"), reverse=True)):
        os.utime(path, ns=(OLD_NS + i, OLD_NS + i * 1001), follow_symlinks=False)
    return root


def assert_same_tree(src: Path, dst: Path) -> None:
    """Every entry under ``src`` is under ``dst`` with its type, mode, mtime (ns),
    device number, symlink target and bytes; hard links are one file there too."""
    groups: dict[int, set[int]] = {}
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        a, b = path.lstat(), (dst / rel).lstat()
        assert stat.S_IFMT(a.st_mode) == stat.S_IFMT(b.st_mode), rel
        if stat.S_ISLNK(a.st_mode):
            assert os.readlink(path) == os.readlink(dst / rel), rel
            continue
        assert oct(stat.S_IMODE(a.st_mode)) == oct(stat.S_IMODE(b.st_mode)), rel
        assert a.st_mtime_ns == b.st_mtime_ns, rel
        assert a.st_rdev == b.st_rdev, rel
        if stat.S_ISREG(a.st_mode):
            assert (dst / rel).read_bytes() == path.read_bytes(), rel
            assert b.st_nlink == a.st_nlink, rel
            groups.setdefault(a.st_ino, set()).add(b.st_ino)
    assert all(len(inos) == 1 for inos in groups.values())  # links stayed one file
    assert sorted(p.name for p in dst.rglob("*")) == sorted(p.name for p in src.rglob("*"))


def _cp_a(src: Path, dst: Path) -> None:
    run(["cp", "-a", str(src), str(dst)])


def _cp_preserve_all(src: Path, dst: Path) -> None:
    run(["cp", "-r", "--preserve=all", str(src), str(dst)])


def _rsync(src: Path, dst: Path) -> None:
    run(["rsync", "-aH", f"{src}/", f"{dst}/"])


def _tar(src: Path, dst: Path) -> None:
    archive = src.parent / "tree.tar"
    run(["tar", "--format=posix", "-cf", str(archive), "-C", str(src), "."])
    dst.mkdir()
    run(["tar", "-xpf", str(archive), "-C", str(dst)])


TOOLS: dict[str, Callable[[Path, Path], None]] = {
    "cp -a": _cp_a,
    "cp -r --preserve=all": _cp_preserve_all,
    "rsync -aH": _rsync,
    "tar -xpf": _tar,
}


@pytest.mark.parametrize("tool", list(TOOLS))
def test_a_tree_copied_in_by_a_legacy_tool_reads_back_identical_after_a_remount(
    any_target: Target, tmp_path: Path, tool: str
) -> None:
    target = any_target
    src = make_tree(tmp_path / "src")
    TOOLS[tool](src, target.path / "tree")
    assert_same_tree(src, target.path / "tree")
    with target.remount(tmp_path) as fresh:
        assert_same_tree(src, fresh.path / target.prefix / "tree")
        if tool.startswith("rsync"):  # a second run finds nothing to do
            here = fresh.path / target.prefix / "tree"
            same = run(["rsync", "-aH", "--dry-run", "--itemize-changes", f"{src}/", f"{here}/"])
            assert [ln for ln in same.stdout.splitlines() if ln[:2] in (">f", "cd", "cD")] == []
    # What other tools see: modes in s3fs's keys; on SeaweedFS a directory's in its
    # metadata object (its markers keep none), elsewhere on the marker.
    meta_key = target.key("tree/sub/deeper/")
    if not target.backend.markers_keep_metadata:
        meta_key += DIR_META_NAME
    _, info = target.store.read_object(meta_key)
    assert PosixAttrs.from_metadata(info.metadata).mode == stat.S_IFDIR | 0o750
    fifo = target.store.stat(target.key("tree/sub/fifo"))
    assert fifo.size == 0 and PosixAttrs.from_metadata(fifo.metadata).mode == stat.S_IFIFO | 0o640


def test_special_files_made_renamed_and_removed_and_listed_after_a_remount(
    target: Target, tmp_path: Path
) -> None:
    base = target.path
    os.mkfifo(base / "fifo", 0o620)
    os.mknod(base / "chr", stat.S_IFCHR | 0o640, os.makedev(1, 7))
    os.mknod(base / "blk", stat.S_IFBLK | 0o600, os.makedev(7, 9))
    sock_path = base / "sock"
    run(
        [
            "python3",
            "-c",
            f"import socket; s = socket.socket(socket.AF_UNIX); s.bind({str(sock_path)!r})",
        ]
    )
    assert stat.S_ISSOCK(sock_path.lstat().st_mode)
    os.rename(base / "fifo", base / "pipe")
    os.rename(base / "blk", base / "block")
    os.unlink(base / "chr")
    for key, kind in (("pipe", stat.S_IFIFO), ("block", stat.S_IFBLK), ("sock", stat.S_IFSOCK)):
        info = target.store.stat(target.key(key))
        assert info.size == 0 and stat.S_IFMT(int(info.metadata["mode"])) == kind
    assert target.store.stat(target.key("block")).metadata["rdev"] == str(os.makedev(7, 9))
    with target.remount(tmp_path) as fresh:
        listing = run(["ls", "-l", str(fresh.path / target.prefix)]).stdout.splitlines()
        kinds = {line.split()[-1]: line[0] for line in listing[1:]}
        assert kinds == {"pipe": "p", "block": "b", "sock": "s"}
        block = (fresh.path / target.prefix / "block").lstat()
        assert block.st_rdev == os.makedev(7, 9) and stat.S_IMODE(block.st_mode) == 0o600
        # a FIFO in the mount works as a FIFO (the kernel's, not the store's)
        pipe = fresh.path / target.prefix / "pipe"
        reader = subprocess.Popen(["cat", str(pipe)], stdout=subprocess.PIPE)
        with open(pipe, "wb") as fh:
            fh.write(b"through the pipe")
        assert reader.communicate(timeout=30)[0] == b"through the pipe"


def test_hard_links_in_the_mount_and_after_a_remount(target: Target, tmp_path: Path) -> None:
    base = target.path
    (base / "a").write_bytes(b"linked")
    os.link(base / "a", base / "b")
    (base / "d").mkdir()
    os.link(base / "b", base / "d" / "c")
    st = [os.stat(base / n) for n in ("a", "b", "d/c")]
    assert {s.st_ino for s in st} == {st[0].st_ino} and {s.st_nlink for s in st} == {3}
    with open(base / "d" / "c", "ab") as fh:
        fh.write(b" and appended")
    assert (base / "a").read_bytes() == b"linked and appended"
    assert target.store.stat(target.key("b")).metadata[HARDLINK_KEY] == target.key("a")
    with target.remount(tmp_path) as fresh:
        here = fresh.path / target.prefix
        assert os.stat(here / "b").st_nlink == 3
        assert os.stat(here / "b").st_ino == os.stat(here / "d" / "c").st_ino
        os.unlink(here / "a")  # the object moves to one of its links
        assert (here / "b").read_bytes() == b"linked and appended"
        assert os.stat(here / "d" / "c").st_nlink == 2
    assert target.store.read(target.key("b")) == b"linked and appended"


def test_sqlite_creates_and_updates_a_database_in_the_mount(target: Target, tmp_path: Path) -> None:
    """Random writes, fsync, the rollback journal made and removed per transaction,
    a VACUUM (a rebuilt file); intact through a remount."""
    db = target.path / "data.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    for _ in range(5):
        with con:
            con.executemany(
                "INSERT INTO t (v) VALUES (?)", [(os.urandom(200).hex(),) for _ in range(400)]
            )
    with con:
        con.execute("UPDATE t SET v = 'changed' WHERE id % 7 = 0")
        con.execute("DELETE FROM t WHERE id % 11 = 0")
    con.execute("VACUUM")
    expected = con.execute("SELECT count(*), sum(length(v)) FROM t").fetchone()
    con.close()
    run(["sqlite3", str(db), "INSERT INTO t (v) VALUES ('from the cli');"])
    with target.remount(tmp_path) as fresh:
        again = sqlite3.connect(fresh.path / target.prefix / "data.db")
        assert again.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        count, total = again.execute("SELECT count(*), sum(length(v)) FROM t").fetchone()
        assert (count, total) == (expected[0] + 1, expected[1] + len("from the cli"))
        again.close()
    assert not [k for k in os.listdir(target.path) if k.endswith("-journal")]


def test_git_init_add_commit_in_the_mount(target: Target, tmp_path: Path) -> None:
    repo = target.path / "repo"
    repo.mkdir()
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "HOME": str(tmp_path),
    }
    run(["git", "init", "-q"], cwd=repo, env=env)
    (repo / "README").write_text("hello\n")
    (repo / "src").mkdir()
    (repo / "src" / "main.py").write_text("print('hi')\n")
    os.chmod(repo / "src" / "main.py", 0o755)
    run(["git", "add", "-A"], cwd=repo, env=env)
    run(["git", "commit", "-q", "-m", "first"], cwd=repo, env=env)
    (repo / "README").write_text("hello again\n")
    run(["git", "commit", "-q", "-am", "second"], cwd=repo, env=env)
    head = run(["git", "rev-parse", "HEAD"], cwd=repo, env=env).stdout.strip()
    with target.remount(tmp_path) as fresh:
        there = fresh.path / target.prefix / "repo"
        run(["git", "fsck", "--strict"], cwd=there, env=env)
        assert run(["git", "rev-parse", "HEAD"], cwd=there, env=env).stdout.strip() == head
        assert run(["git", "status", "--porcelain"], cwd=there, env=env).stdout == ""
        log = run(["git", "log", "--format=%s"], cwd=there, env=env).stdout.split()
        assert log == ["second", "first"]


def test_a_caller_who_is_not_the_owner_gets_eacces_and_eperm(
    s3_target: Target, tmp_path: Path
) -> None:
    """With ``--allow-other`` other users reach the mount; ``default_permissions``
    and the core's ownership rules answer them as a local filesystem would."""
    # Other users can't reach pytest's private tmp_path: mount where they can.
    public = Path(tempfile.mkdtemp(prefix="datamover-allow-other-"))
    public.chmod(0o755)
    mount = Mount(s3_target.backend.url(), public / "m", s3_target.backend.env, "--allow-other")
    with mount as shared:
        base = shared.path / s3_target.prefix
        os.chmod(shared.path, 0o755)
        (base / "private").write_bytes(b"secret")
        os.chmod(base / "private", 0o600)
        (base / "mine").write_bytes(b"x")
        os.chown(base / "mine", NOBODY, NOBODY)
        (base / "closed").mkdir(mode=0o755)
        os.chmod(base, 0o755)

        def as_nobody(code: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["python3", "-c", code],
                user=NOBODY,
                group=NOBODY,
                extra_groups=[],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        def errno_as_nobody(call: str) -> str:
            code = (
                "import errno, os\n"
                f"try:\n    {call}\n    print('ok')\n"
                "except OSError as e:\n    print(errno.errorcode[e.errno])"
            )
            result = as_nobody(code)
            assert result.returncode == 0, result.stderr
            return result.stdout.strip()

        assert errno_as_nobody(f"open({str(base / 'private')!r}).read()") == "EACCES"
        assert errno_as_nobody(f"open({str(base / 'closed' / 'f')!r}, 'w')") == "EACCES"
        assert errno_as_nobody(f"os.chmod({str(base / 'private')!r}, 0o644)") == "EPERM"
        assert errno_as_nobody(f"os.chown({str(base / 'mine')!r}, 0, 0)") == "EPERM"
        assert errno_as_nobody(f"os.chmod({str(base / 'mine')!r}, 0o640)") == "ok"
        assert errno_as_nobody(f"os.unlink({str(base / 'private')!r})") == "EACCES"
        assert errno_as_nobody(f"open({str(base / 'mine')!r}).read()") == "ok"
    shutil.rmtree(public, ignore_errors=True)
    info = s3_target.store.stat(s3_target.key("mine"))
    attrs = PosixAttrs.from_metadata(info.metadata)
    assert (attrs.uid, attrs.gid, attrs.mode) == (NOBODY, NOBODY, stat.S_IFREG | 0o640)


def test_errors_a_program_can_act_on(target: Target, tmp_path: Path) -> None:
    base = target.path
    (base / "d").mkdir()
    (base / "d" / "f").write_bytes(b"x")
    cases: list[tuple[Callable[[], object], int]] = [
        (lambda: (base / "d").mkdir(), errno.EEXIST),
        (lambda: os.rmdir(base / "d"), errno.ENOTEMPTY),
        (lambda: (base / ("n" * 256)).write_bytes(b""), errno.ENAMETOOLONG),
        (lambda: os.rename(base / "d", base / "d" / "inside"), errno.EINVAL),
        (lambda: os.open(base / "d" / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY), errno.EEXIST),
        (lambda: os.link(base / "d", base / "dlink"), errno.EPERM),
    ]
    for call, code in cases:
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == code, (call, e.value)
    deep = base
    for _ in range(5):
        deep = deep / ("k" * 250)
        try:
            deep.mkdir()
        except OSError as e:
            assert e.errno == errno.ENAMETOOLONG  # a key past 1,024 bytes
            break
    else:
        raise AssertionError("a 1,000-byte key should have been refused")


def test_a_full_staging_area_is_enospc_not_eio(s3_target: Target, tmp_path: Path) -> None:
    """A write that finds the staging cache full, and the close of that file, both
    say ENOSPC; the file is not stored."""
    with s3_target.remount(tmp_path, "--cache-size", "64MiB", name="small") as small:
        path = small.path / s3_target.prefix / "big.bin"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            with pytest.raises(OSError) as e:
                os.pwrite(fd, b"x", 1)  # not sequential from 0: staged whole, not streamed
                for i in range(100):
                    os.write(fd, b"x" * MiB)
                    del i
            assert e.value.errno == errno.ENOSPC
        finally:
            with pytest.raises(OSError) as e:
                os.close(fd)
        assert e.value.errno == errno.ENOSPC
    with pytest.raises(NotFound):
        s3_target.store.stat(s3_target.key("big.bin"))


def test_other_tools_see_a_normal_tree(s3_target: Target, tmp_path: Path) -> None:
    """s3fs (when installed) lists what the mount wrote on SeaweedFS with the stored
    modes; the directories' metadata objects show as dotfiles, nothing else."""
    if shutil.which("s3fs") is None:
        pytest.skip("s3fs is not installed")
    base = s3_target.path
    (base / "d").mkdir(mode=0o750)
    (base / "d" / "f").write_bytes(b"data")
    os.chmod(base / "d" / "f", 0o640)
    os.symlink("f", base / "d" / "l")
    server = s3_target.backend.server
    passwd = tmp_path / "passwd"
    passwd.write_text(f"{server.access_key}:{server.secret_key}\n")  # type: ignore[attr-defined]
    passwd.chmod(0o600)
    mnt = tmp_path / "s3fs"
    mnt.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(
        [
            "s3fs",
            s3_target.backend.bucket,
            str(mnt),
            "-f",
            "-o",
            f"url={server.endpoint},use_path_request_style,passwd_file={passwd}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    m = Mount("unused", mnt, {})
    try:
        deadline = time.monotonic() + 60
        while not os.path.ismount(mnt):
            if proc.poll() is not None:
                pytest.skip("s3fs did not mount")
            assert time.monotonic() < deadline, "s3fs did not mount within 60 s"
            time.sleep(0.1)
        d = mnt / s3_target.prefix / "d"
        assert sorted(os.listdir(d)) == sorted(["f", "l", DIR_META_NAME])
        assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o640
        assert os.readlink(d / "l") == "f"
        assert (d / "f").read_bytes() == b"data"
    finally:
        m.stop()
        proc.wait(timeout=30)
