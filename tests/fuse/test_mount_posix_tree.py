"""A real mount over a POSIX directory, run as root with ``--allow-other``, attacked
by another local user (issue #20.4): that user owns a directory of the backing tree
and swaps, through the backing tree itself, its files and directories for symlinks
into a root-only directory between ``open`` and ``read``, ``open`` and ``write``, and
``write`` and ``close``. Nothing it gets through the mount is anything it could not
read directly, and nothing it does through the mount writes, creates or changes
anything it could not write directly. Also: the mount is ``nosuid,nodev`` unless
asked (``--suid``/``--dev``).

Root mounts with ``--allow-other`` without ``user_allow_other`` in /etc/fuse.conf
(that line governs only unprivileged mounts through ``fusermount3``): this machine's
fuse.conf has none, and the mount is live.

The attacker's steps run in a child as ``nobody`` (``subprocess`` with ``user=``,
``group=``, ``extra_groups=[]``), one script per scenario, so each swap happens
exactly between the two calls named."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mounting import Mount

pytestmark = pytest.mark.timeout(120)

NOBODY = 65534
SECRET = b"root-only secret\n"


@dataclass
class Tree:
    back: Path  # the backing directory
    mnt: Path  # the mountpoint
    secret_dir: Path  # root-only 0700 directory in the backing tree
    secret: Path  # root-only 0600 file in it
    rootfile: Path  # root-only 0600 file beside the attacker's directory
    home: Path  # the attacker's directory (backing side)
    home_mnt: Path  # ... and through the mount


def _public_dir() -> Path:
    # Other users can't reach pytest's private tmp_path: work where they can.
    public = Path(tempfile.mkdtemp(prefix="datamover-posix-mount-"))
    public.chmod(0o755)
    return public


def _build(public: Path) -> Tree:
    back = public / "back"
    back.mkdir(mode=0o755)
    back.chmod(0o755)
    secret_dir = back / "secret"
    secret_dir.mkdir()
    secret_dir.chmod(0o700)
    secret = secret_dir / "shadow"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    rootfile = back / "rootfile"
    rootfile.write_bytes(SECRET)
    rootfile.chmod(0o600)
    home = back / "home"
    home.mkdir()
    home.chmod(0o755)
    os.chown(home, NOBODY, NOBODY)
    return Tree(back, public / "mnt", secret_dir, secret, rootfile, home, public / "mnt" / "home")


@pytest.fixture
def tree() -> Iterator[Tree]:
    public = _public_dir()
    t = _build(public)
    mount = Mount(str(t.back), t.mnt, dict(os.environ), "--allow-other", log=public / "mnt.log")
    try:
        with mount:
            yield t
    finally:
        shutil.rmtree(public, ignore_errors=True)


def as_nobody(code: str) -> str:
    """Run ``code`` (Python) as ``nobody`` with no groups; its stdout."""
    result = subprocess.run(
        ["python3", "-c", textwrap.dedent(code)],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _secret_intact(t: Tree) -> None:
    """The root-only things are as they were: bytes, mode, owner, no new entries."""
    assert sorted(os.listdir(t.secret_dir)) == ["shadow"]
    for f in (t.secret, t.rootfile):
        st = f.lstat()
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert (st.st_uid, st.st_gid) == (0, 0)
        assert f.read_bytes() == SECRET
    st = t.secret_dir.lstat()
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == 0


def _own_file(t: Tree, name: str, data: bytes) -> None:
    as_nobody(f"open({str(t.home_mnt / name)!r}, 'wb').write({data!r})")
    assert (t.home / name).read_bytes() == data
    assert (t.home / name).stat().st_uid == NOBODY


def _user_allow_other() -> bool:
    try:
        text = Path("/etc/fuse.conf").read_text()
    except OSError:
        return False
    return any(line.strip() == "user_allow_other" for line in text.splitlines())


def test_root_mounts_allow_other_without_user_allow_other(tree: Tree) -> None:
    """The mount is live and other users get in, with no ``user_allow_other`` in
    /etc/fuse.conf (it governs unprivileged mounts only)."""
    if _user_allow_other():
        pytest.skip("/etc/fuse.conf has user_allow_other: this machine can't show it")
    assert os.geteuid() == 0
    assert as_nobody(f"import os; print(sorted(os.listdir({str(tree.mnt)!r})))").strip() == (
        "['home', 'rootfile', 'secret']"
    )


def test_nobody_cannot_read_the_secrets_directly(tree: Tree) -> None:
    """The baseline the other tests hold the mount to."""
    out = as_nobody(
        f"""
        import errno
        for p in ({str(tree.secret)!r}, {str(tree.rootfile)!r}):
            try:
                open(p, 'rb').read()
                print('read')
            except OSError as e:
                print(errno.errorcode[e.errno])
        """
    )
    assert out.split() == ["EACCES", "EACCES"]


def test_a_file_swapped_for_a_symlink_after_open_reads_the_file_opened(tree: Tree) -> None:
    """open through the mount; the backing file is replaced by a symlink to a root-only
    file (renamed away, or unlinked); pread on the open descriptor gives the file
    that was opened, never the secret."""
    _own_file(tree, "a", b"mine A\n")
    _own_file(tree, "b", b"mine B\n")
    out = as_nobody(
        f"""
        import os
        home, mnt = {str(tree.home)!r}, {str(tree.home_mnt)!r}
        fa = os.open(mnt + '/a', os.O_RDONLY)
        fb = os.open(mnt + '/b', os.O_RDONLY)
        os.rename(home + '/a', home + '/a.old')
        os.symlink({str(tree.secret)!r}, home + '/a')
        os.unlink(home + '/b')
        os.symlink({str(tree.rootfile)!r}, home + '/b')
        print(os.pread(fa, 100, 0))
        print(os.pread(fb, 100, 0))
        """
    )
    assert out.split("\n")[:2] == [repr(b"mine A\n"), repr(b"mine B\n")]
    _secret_intact(tree)


def test_a_file_swapped_between_open_and_write_keeps_its_own_bytes(tree: Tree) -> None:
    """open for read-write; the file is swapped for a symlink to a root-only file; the
    first write builds on the file that was opened (its bytes are read from the open
    descriptor), and the upload at close replaces the symlink's name, never its
    target."""
    _own_file(tree, "c", b"0123456789\n")
    out = as_nobody(
        f"""
        import os
        home, mnt = {str(tree.home)!r}, {str(tree.home_mnt)!r}
        fd = os.open(mnt + '/c', os.O_RDWR)
        os.rename(home + '/c', home + '/c.old')
        os.symlink({str(tree.rootfile)!r}, home + '/c')
        os.pwrite(fd, b'AB', 2)
        print(os.pread(fd, 100, 0))
        try:
            os.close(fd)
            print('closed')
        except OSError as e:
            print('close failed', e.errno)
        """
    )
    assert out.split("\n")[0] == repr(b"01AB456789\n")
    _secret_intact(tree)
    c = tree.home / "c"
    if not c.is_symlink():  # the upload replaced the name: with the attacker's bytes
        assert c.read_bytes() == b"01AB456789\n"


@pytest.mark.parametrize("change", ["hard-link", "chown-chmod"])
def test_an_open_checks_the_file_opened_against_the_attributes_the_kernel_checked(
    tree: Tree, change: str
) -> None:
    """The mount (and the kernel) still hold the attributes of ``a``, the attacker's
    own 0644 file, when its name is made a hard link to a root-only 0600 file (which
    takes ``protected_hardlinks=0`` for the attacker; root does it here) or the file
    itself is made root's 0600: the open does not go by the cached attributes, the
    file opened is checked against them, and the kernel, told ``ESTALE``, looks again
    and refuses the caller (``EACCES``)."""
    _own_file(tree, "a", b"mine\n")
    as_nobody(f"import os; os.stat({str(tree.home_mnt / 'a')!r})")  # cached: nobody 0644
    if change == "hard-link":
        (tree.home / "a").unlink()
        os.link(tree.rootfile, tree.home / "a")
    else:
        os.chown(tree.home / "a", 0, 0)
        os.chmod(tree.home / "a", 0o600)
        (tree.home / "a").write_bytes(SECRET)
    out = as_nobody(
        f"""
        import errno
        try:
            print(open({str(tree.home_mnt / "a")!r}, 'rb').read())
        except OSError as e:
            print(errno.errorcode[e.errno])
        """
    )
    assert out.strip() == "EACCES", out
    _secret_intact(tree)


def test_ftruncate_after_the_file_was_swapped_builds_on_the_file_opened(tree: Tree) -> None:
    """``ftruncate`` of a handle whose file was swapped for a symlink to a root-only
    file keeps the bytes of the file opened (read from its descriptor)."""
    _own_file(tree, "t", b"0123456789\n")
    out = as_nobody(
        f"""
        import os
        home, mnt = {str(tree.home)!r}, {str(tree.home_mnt)!r}
        fd = os.open(mnt + '/t', os.O_RDWR)
        os.unlink(home + '/t')
        os.symlink({str(tree.rootfile)!r}, home + '/t')
        os.ftruncate(fd, 4)
        print(os.pread(fd, 100, 0))
        os.close(fd)
        """
    )
    assert out.split("\n")[0] == repr(b"0123")
    _secret_intact(tree)


@pytest.mark.parametrize("when", ["before-write", "after-write"])
def test_a_parent_swapped_for_a_symlink_before_close_creates_nothing_there(
    tree: Tree, when: str
) -> None:
    """create through the mount in the attacker's directory ``d``; ``d`` is replaced by
    a symlink to a root-only 0700 directory before the write, or between the write
    and close; the file is uploaded into the directory held since create (``d`` as
    renamed) or not at all: never into the root-only directory."""
    as_nobody(f"import os; os.mkdir({str(tree.home_mnt / 'd')!r})")
    assert (tree.home / "d").stat().st_uid == NOBODY
    swap = textwrap.indent(
        f"""os.rename(home + '/d', home + '/d.old')
os.symlink({str(tree.secret_dir)!r}, home + '/d')""",
        "        ",
    ).strip()
    out = as_nobody(
        f"""
        import os
        home, mnt = {str(tree.home)!r}, {str(tree.home_mnt)!r}
        fd = os.open(mnt + '/d/new', os.O_WRONLY | os.O_CREAT, 0o644)
        {swap if when == "before-write" else ""}
        os.write(fd, b'planted\\n')
        {swap if when == "after-write" else ""}
        try:
            os.close(fd)
            print('closed')
        except OSError as e:
            print('close failed', e.errno)
        """
    )
    assert out.strip() == "closed"
    _secret_intact(tree)
    assert (tree.home / "d.old" / "new").read_bytes() == b"planted\n"
    assert (tree.home / "d.old" / "new").stat().st_uid == NOBODY


@pytest.mark.parametrize("made", ["through-mount", "in-backing-tree"])
def test_a_parent_swapped_before_create_through_the_mounts_cached_view(
    tree: Tree, made: str
) -> None:
    """The mount still believes ``e`` is a directory (its attributes are cached) when
    ``e`` has become a symlink to a root-only directory: a create there lands in the
    directory ``e`` was (the mount's tree still has its descriptor, from the mkdir or
    the lookup) or fails (``EINVAL``, when ``e`` must be found again: the symlink is
    not followed); metadata changes of a name swapped for a symlink to a root-only
    file change the link, never its target."""
    where = tree.home_mnt if made == "through-mount" else tree.home
    as_nobody(f"import os; os.mkdir({str(where / 'e')!r})")
    _own_file(tree, "f", b"f\n")
    out = as_nobody(
        f"""
        import errno, os
        home, mnt = {str(tree.home)!r}, {str(tree.home_mnt)!r}
        os.stat(mnt + '/e'); os.stat(mnt + '/f')  # cached by the mount and the kernel
        os.rename(home + '/e', home + '/e.old')
        os.symlink({str(tree.secret_dir)!r}, home + '/e')
        os.unlink(home + '/f')
        os.symlink({str(tree.rootfile)!r}, home + '/f')
        for what, call in (
            ('create', lambda: os.close(os.open(mnt + '/e/x', os.O_WRONLY | os.O_CREAT, 0o644))),
            ('mkdir', lambda: os.mkdir(mnt + '/e/sub')),
            ('symlink', lambda: os.symlink('/etc', mnt + '/e/ln')),
            ('mknod', lambda: os.mkfifo(mnt + '/e/fifo')),
            ('chmod', lambda: os.chmod(mnt + '/f', 0o666)),
            ('utime', lambda: os.utime(mnt + '/f', (1, 1))),
            ('truncate', lambda: os.truncate(mnt + '/f', 0)),
            ('rename', lambda: os.rename(mnt + '/e.old', mnt + '/e/moved')),
        ):
            try:
                call()
                print(what, 'ok')
            except OSError as e:
                print(what, errno.errorcode[e.errno])
        """
    )
    results = dict(line.split() for line in out.splitlines())
    assert len(results) == 8, out
    _secret_intact(tree)
    made_in_old = sorted(os.listdir(tree.home / "e.old"))
    expect = {"create": "x", "mkdir": "sub", "symlink": "ln", "mknod": "fifo"}
    assert made_in_old == sorted(name for what, name in expect.items() if results[what] == "ok")
    for what in expect:
        assert results[what] in ("ok", "EINVAL"), out


def _mount_options(mnt: Path) -> set[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            if fields[4] == str(mnt):
                return set(fields[5].split(","))
    raise AssertionError(f"{mnt} is not mounted")


@pytest.mark.parametrize("opt_in", [False, True], ids=["default", "suid-dev"])
def test_set_user_id_files_and_device_nodes_grant_nothing_by_default(opt_in: bool) -> None:
    """A set-user-ID root binary and a device node in the backing tree: through the
    default mount (``nosuid,nodev``, shown in mountinfo) the binary runs as its
    caller and the node can't be opened; ``--suid --dev`` restores both (which is
    what shows the test can see the difference)."""
    public = _public_dir()
    try:
        t = _build(public)
        shutil.copy("/usr/bin/id", t.back / "id")
        os.chmod(t.back / "id", 0o4755)
        os.mknod(t.back / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.chmod(t.back / "null", 0o666)
        extra = ("--suid", "--dev") if opt_in else ()
        with Mount(str(t.back), t.mnt, dict(os.environ), "--allow-other", *extra):
            options = _mount_options(t.mnt)
            assert ("nosuid" in options) is not opt_in
            assert ("nodev" in options) is not opt_in
            st = (t.mnt / "id").stat()
            assert st.st_mode & stat.S_ISUID and st.st_uid == 0
            assert stat.S_ISCHR((t.mnt / "null").stat().st_mode)
            out = as_nobody(
                f"""
                import errno, os, subprocess
                print(subprocess.run([{str(t.mnt / "id")!r}, '-u'], capture_output=True,
                                     text=True, check=True).stdout.strip())
                try:
                    os.close(os.open({str(t.mnt / "null")!r}, os.O_WRONLY))
                    print('opened')
                except OSError as e:
                    print(errno.errorcode[e.errno])
                """
            )
            euid, device = out.split()
            assert euid == ("0" if opt_in else str(NOBODY))
            # With --dev the open reaches the device layer: ENXIO while the mount shows
            # a POSIX tree's device nodes with st_rdev 0 (the POSIX store's listing
            # does not carry rdev yet); nodev refuses before that, with EACCES.
            assert device in (("opened", "ENXIO") if opt_in else ("EACCES",))
    finally:
        shutil.rmtree(public, ignore_errors=True)
