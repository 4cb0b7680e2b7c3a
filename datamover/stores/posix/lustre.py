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
from collections.abc import Callable, Mapping

from datamover.errors import InvalidMetadata

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


def lfs_getstripe(path: str, pass_fds: tuple[int, ...] = ()) -> tuple[int, int] | None:
    """(stripe count, stripe size) from ``lfs getstripe -c -S``, or None. ``path`` may
    name a descriptor of ours (``/proc/self/fd/N/...``): ``pass_fds`` hands it to
    ``lfs`` under the same number."""
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
            pass_fds=pass_fds,
        ).stdout.split()
        return int(out[0]), int(out[1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def lfs_setstripe(path: str, layout: tuple[int, int], pass_fds: tuple[int, ...] = ()) -> bool:
    """Create ``path`` empty with this stripe layout (``lfs setstripe -c N -S SIZE``);
    whether it did. ``pass_fds`` as for ``lfs_getstripe``."""
    lfs = shutil.which("lfs")
    if lfs is None:
        return False
    count, size = layout
    try:
        subprocess.run(
            [lfs, "setstripe", "-c", str(count), "-S", str(size), path],
            capture_output=True,
            timeout=30,
            check=True,
            pass_fds=pass_fds,
        )
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("%s: lfs setstripe failed (%s); default layout used", path, e)
        return False
    return True


def parse_layout(metadata: Mapping[str, str], key: str) -> tuple[int, int] | None:
    """``(stripe count, stripe size)`` from ``lustre-stripe-*`` metadata, or None
    unless both are there. Each one present is checked: a count from -1 (all OSTs) to
    65535, a size from 64 KiB to 4 GiB in whole 64 KiB; anything else raises
    ``InvalidMetadata``."""

    def number(name: str, ok: Callable[[int], bool]) -> int | None:
        raw = metadata.get(name)
        if raw is None:
            return None
        text = raw.strip()
        digits = text[1:] if text.startswith("-") else text
        if not (digits.isascii() and digits.isdigit() and ok(int(text))):
            raise InvalidMetadata(
                f"/{key}: metadata {name}={raw[:40]!r} is not a Lustre stripe "
                f"{name.rsplit('-', 1)[1]}; refusing this file",
                key=key,
            )
        return int(text)

    count = number(STRIPE_COUNT, lambda n: -1 <= n <= 65535)
    size = number(STRIPE_SIZE, lambda n: 64 * 1024 <= n <= 4 << 30 and n % (64 * 1024) == 0)
    return None if count is None or size is None else (count, size)
