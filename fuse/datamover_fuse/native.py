"""Reads served from the block cache in C, on their own threads (``_native.c``).

pyfuse3 answers every FUSE request on one Python thread; a random reader hitting the
block cache asks for 64 KiB at a time, so that thread was the mount's limit (issue
#23). ``_native`` takes the requests from ``/dev/fuse`` on ``read_threads`` threads,
answers a READ whose blocks are cached and check out (CRC32C, as ``BlockStore.read``
checks them), and hands every other request to pyfuse3 unchanged.

It works by standing in front of four libfuse functions for pyfuse3's session, so it
must be loaded, RTLD_GLOBAL, before pyfuse3 is: :func:`preload` (called before every
``import pyfuse3`` of this package). If it cannot be (not built, pyfuse3 imported
first), ``state()`` stays ``"off"`` and the mount answers everything in Python as
before.

The rest of the mount talks to it through this module's functions, which do nothing
when it is off:

- ``BlockStore`` mirrors its index (``set_block``, ``clear_block``, ``drop``) and asks
  whether a block was served here before evicting it (``referenced``: a second chance,
  so blocks read in C stay recently used).
- ``FsCore`` binds a handle to the object version it reads (``bind``) after its own
  checks said so (a remote file, no local copy, no pinned file), unbinds it at release,
  and calls :func:`invalidate` whenever what a handle reads may change (a new ETag or
  size learned, a local copy made or dropped, a write, a rename, a setattr): every
  binding goes, and each handle's next READ goes through Python, which binds again.
"""

from __future__ import annotations

import logging
import os
import sys
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

#: Reader threads by default: two cores' worth on the machines this was measured on;
#: each holds a 1 MiB request buffer and a 1.1 MiB read buffer.
DEFAULT_THREADS = 2
MAX_THREADS = 8

_loaded: ModuleType | None = None  # ``_native``, loaded ahead of pyfuse3
ext: Any = None  # ``_native`` while it serves this process's mount; else None


def preload() -> None:
    """Load ``_native`` RTLD_GLOBAL, if pyfuse3 is not loaded yet (else too late)."""
    global _loaded
    if _loaded is not None or "pyfuse3" in sys.modules:
        return
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_GLOBAL)
    try:
        # deferred: loaded here, between the dlopen flags set and restored
        from datamover_fuse import _native  # type: ignore[attr-defined]
    except ImportError as e:  # not built: the mount answers in Python
        log.info("reads from the cache answered in Python (%s)", e)
        return
    finally:
        sys.setdlopenflags(flags)
    _loaded = _native


def configure(threads: int) -> bool:
    """Before ``pyfuse3.init``: serve cached reads with ``threads`` threads (0: in the
    READ callback on pyfuse3's thread). False when ``_native`` is not loaded."""
    global ext
    if _loaded is None:
        return False
    try:
        _loaded.configure(threads)
    except OSError as e:
        log.info("reads from the cache answered in Python (%s)", e)
        return False
    ext = _loaded  # the mirror starts now: blocks kept from a last mount load first
    return True


def started() -> str:
    """After ``pyfuse3.init`` and the first ``fuse_session_fd``: ``"threads"``,
    ``"inline"`` or ``"off"`` (then the mirror is emptied and the hooks stop)."""
    global ext
    state = _loaded.state() if _loaded is not None and ext is not None else "off"
    if state == "off" and ext is not None:
        ext.clear()
        ext = None
    return str(state)


def stats() -> dict[str, int]:
    return dict(_loaded.stats()) if _loaded is not None else {}


def invalidate() -> None:
    """What some handle reads may have changed: unbind every handle."""
    if ext is not None:
        ext.unbind_all()
