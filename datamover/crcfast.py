"""The ``crc32c`` package's C function, loaded without running the package's
``__init__``.

``crc32c/__init__.py`` sets ``__version__`` with ``importlib.metadata.version()``:
that imports ``importlib.metadata`` (and ``email``, ``zipfile``, ...) and scans
``sys.path`` for distributions, about 20 ms at every process start, most of what
importing ``crc32c`` costs and nothing datamover needs (no other module it imports at
start-up loads ``importlib.metadata``). A small copy or a ``--processes`` worker pays
it per process. So the extension module (``crc32c._crc32c``, the function itself) is
loaded from the package's directory directly and registered under its own name, where
a later ``import crc32c`` finds it. Any other layout, or a failure, falls back to the
plain import.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

_NAME = "crc32c._crc32c"


def _load() -> Callable[..., int]:
    mod = sys.modules.get(_NAME)
    if mod is None:
        try:
            spec = importlib.util.find_spec("crc32c")  # finds, does not run, the package
            roots = list(spec.submodule_search_locations or []) if spec else []
            found = [
                p
                for root in roots
                for p in sorted(Path(root).glob("_crc32c.*"))
                if p.suffix in importlib.machinery.EXTENSION_SUFFIXES
                or "".join(p.suffixes) in importlib.machinery.EXTENSION_SUFFIXES
            ]
            if not found:
                raise ImportError("crc32c._crc32c not found")
            loader = importlib.machinery.ExtensionFileLoader(_NAME, str(found[0]))
            ext_spec = importlib.util.spec_from_loader(_NAME, loader)
            assert ext_spec is not None
            mod = importlib.util.module_from_spec(ext_spec)
            loader.exec_module(mod)
            sys.modules[_NAME] = mod
        except (ImportError, OSError, AssertionError):
            from crc32c import crc32c as plain  # the package's own way

            return plain
    fn: Any = mod.crc32c
    return fn  # type: ignore[no-any-return]


#: ``crc32c(data, value=0) -> int``: the CRC-32C of ``data`` continuing from ``value``
#: (hardware-accelerated; the GIL is released for large buffers).
crc32c: Callable[..., int] = _load()
