"""Lustre: the filesystem probe (statfs magic ``0x0BD00BD0``) and the stripe layout,
read with ``lfs getstripe`` into ``lustre-stripe-*`` metadata and applied with ``lfs
setstripe`` to a file created on Lustre with that metadata. Without ``lfs`` on PATH
there is no layout to read and none is set."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import subprocess

STRIPE_COUNT = "lustre-stripe-count"
STRIPE_SIZE = "lustre-stripe-size"
LUSTRE_MAGIC = 0x0BD00BD0

log = logging.getLogger("datamover")


def statfs_type(path: str) -> int | None:
    """f_type of the filesystem holding ``path`` (Linux statfs), or None."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on x86_64
    if libc.statfs(os.fsencode(path), buf) != 0:
        return None
    return int(ctypes.c_long.from_buffer(buf).value) & 0xFFFFFFFF


def lfs_getstripe(path: str) -> tuple[int, int] | None:
    """(stripe count, stripe size) from ``lfs getstripe -c -S``, or None."""
    lfs = shutil.which("lfs")
    if lfs is None:
        return None
    try:
        out = subprocess.run(
            [lfs, "getstripe", "-c", "-S", path],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
        return int(out[0]), int(out[1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def lfs_setstripe(path: str, layout: tuple[int, int]) -> None:
    """Create ``path`` empty with this stripe layout (``lfs setstripe -c N -S SIZE``)."""
    lfs = shutil.which("lfs")
    if lfs is None:
        return
    count, size = layout
    try:
        subprocess.run(
            [lfs, "setstripe", "-c", str(count), "-S", str(size), path],
            capture_output=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("%s: lfs setstripe failed (%s); default layout used", path, e)
