"""Files datamover keeps for itself: the state directory, the journal, manifests, the
report. They are made so that nobody else can read them or redirect them.

Why: a manifest lists every path of a tree and the journal every job's URLs, which
can be sensitive; and these files live at names anyone can predict
(``MANIFEST.partial``, ``journal.db``). A file opened by a predictable name in a
directory another user can write can be a symlink planted there to make us truncate,
append to or publish a file of the attacker's choosing. So:

* the state directory is made ``0700`` (an existing one owned by the user is
  tightened to ``0700``; one owned by somebody else is refused);
* new files are created ``O_CREAT|O_EXCL|O_NOFOLLOW`` with mode ``0600``
  (``create_private``): a name that is already taken, a symlink included, fails;
* an existing file is opened ``O_NOFOLLOW`` and kept only if ``fstat`` says it is a
  regular file owned by the user (``open_own``); it is tightened to ``0600``;
* a name about to be replaced by ``rename`` or opened by a library we don't control
  (SQLite's ``-wal``/``-shm``) is checked first the same way (``check_own``).

Everything refused raises ``StateError`` (one line, exit 2), never follows the link.
Owner checks compare with the effective uid; root is treated like any other user (a
root-run job refuses another user's files at these names too).
"""

from __future__ import annotations

import errno
import os
import stat as statmod

from datamover.errors import StateError

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def _refuse_link(path: str) -> StateError:
    return StateError(
        f"{path} is a symbolic link; datamover never follows a link at the name of one of "
        "its own files (it may have been planted there): remove it or choose another path"
    )


def _check_stat(path: str, st: os.stat_result, *, directory: bool = False) -> None:
    if statmod.S_ISLNK(st.st_mode):
        raise _refuse_link(path)
    if not (statmod.S_ISDIR if directory else statmod.S_ISREG)(st.st_mode):
        what = "a directory" if directory else "a regular file"
        raise StateError(f"{path} is not {what}; refusing to use it for datamover's state")
    if st.st_uid != os.geteuid():
        raise StateError(
            f"{path} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()}); "
            "refusing to use it: choose a path of your own"
        )


def private_dir(path: str) -> str:
    """Make the directory ``path`` (and missing parents) ``0700``, or check an existing
    one: a directory (a symlink to one is followed: people move state elsewhere), owned
    by this user, tightened to ``0700`` when it was wider. Returns ``path``."""
    try:
        os.makedirs(path, mode=PRIVATE_DIR, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileExistsError, NotADirectoryError):
        raise StateError(f"{path} exists and is not a directory") from None
    except OSError as e:
        raise StateError(f"cannot make the directory {path}: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        _check_stat(path, st, directory=True)
        if statmod.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, PRIVATE_DIR)
    except OSError as e:
        raise StateError(f"cannot make {path} private (0700): {e.strerror}") from e
    finally:
        os.close(fd)
    return path


def dir_problem(path: str, error: OSError) -> str:
    """Why the directory of ``path`` could not be made (``error``, from ``makedirs``),
    in words: for a parent that is a file, that it is no directory (``makedirs``
    says "File exists", or "Not a directory"), naming it as the user wrote it."""
    if error.errno in (errno.EEXIST, errno.ENOTDIR):
        parent = os.path.dirname(path)
        while parent and parent != os.path.dirname(parent):
            if os.path.lexists(parent):
                if not os.path.isdir(parent):
                    return f"{parent} is not a directory"
                break
            parent = os.path.dirname(parent)
    return error.strerror or str(error)


def create_private(path: str, flags: int = os.O_RDWR) -> int:
    """A new file at ``path``, mode ``0600``, created exclusively without following a
    link: returns its descriptor. A name already taken raises ``StateError``."""
    try:
        return os.open(path, flags | os.O_CREAT | os.O_EXCL | _NOFOLLOW, PRIVATE_FILE)
    except FileExistsError:
        if os.path.islink(path):
            raise _refuse_link(path) from None
        raise StateError(f"{path} appeared while datamover was creating it; run again") from None
    except OSError as e:
        raise StateError(f"cannot create {path}: {e.strerror}") from e


def open_own(path: str, flags: int = os.O_RDWR) -> int:
    """Open an existing file of ours without following a link, and keep it only if it
    is a regular file owned by this user (tightened to ``0600``). Raises
    ``FileNotFoundError`` when there is none, ``StateError`` for anything else."""
    try:
        # O_NONBLOCK: a FIFO planted at the name must not hang the open (it has no
        # effect on the regular file we want).
        fd = os.open(path, flags | _NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _refuse_link(path) from None
        raise StateError(f"cannot open {path}: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        _check_stat(path, st)
        if statmod.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, PRIVATE_FILE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_own(path: str) -> bool:
    """Whether a file of ours is at ``path`` (False: nothing there). Anything else at
    that name (a symlink, a directory, another user's file) raises ``StateError``;
    a file of ours wider than ``0600`` is tightened."""
    try:
        fd = open_own(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    os.close(fd)
    return True
