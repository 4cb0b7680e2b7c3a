"""POSIX metadata in the conventions of the tools that share buckets with datamover:
s3fs, rclone, gcloud/gsutil, gcsfuse, AzCopy (standard and AMLFS styles) and the FSx
for Lustre / DataSync data repositories. docs/METADATA.md has the table of keys and
formats, the precedence and what each target keeps.

One mapper for every backend:

* ``read.normalise``: an object's metadata -> datamover's own keys (``mode``
  decimal ``st_mode``, ``uid``, ``gid``, ``mtime``/``atime`` ``s.ns``, ``rdev``), from
  whichever conventions are on it; disagreements decided by a precedence and reported;
  values from other tools bounded and checked (bad ones ignored and reported).
* ``write.render``: datamover's keys -> the keys of the styles a store writes
  (``--metadata-style``; each store declares its default in ``Features``).

Stores call ``posix_metadata`` on every answer that carries metadata and ``render``
before every write, so the engine and the mount only ever see datamover's keys.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from datamover.stores.conventions.read import (
    ORDER,
    Normalised,
    as_written,
    normalise,
    precedence,
    read_mode,
)
from datamover.stores.conventions.write import OWN_KEYS, STYLES, parse_styles, render

log = logging.getLogger("datamover")

#: How many reported (object, finding) pairs are remembered, so that one object's
#: metadata, parsed again by each listing, HEAD and read of a run (or of a mount's
#: life), is reported once; the oldest are forgotten past this bound.
REPORTED_BOUND = 4096
_reported: OrderedDict[tuple[str, str], None] = OrderedDict()
_reported_lock = threading.Lock()


def forget_reported() -> None:
    """Start a new run's memory of reported findings (the front door, at each run)."""
    with _reported_lock:
        _reported.clear()


def _first_time(key: str, line: str) -> bool:
    with _reported_lock:
        if (key, line) in _reported:
            _reported.move_to_end((key, line))
            return False
        _reported[(key, line)] = None
        if len(_reported) > REPORTED_BOUND:
            _reported.popitem(last=False)
        return True


def posix_metadata(
    metadata: Mapping[str, str],
    *,
    key: str,
    size: int | None = None,
    order: tuple[str, ...] = ORDER,
    written: Styles | None = None,
) -> dict[str, str]:
    """``normalise``, with conflicts and ignored values logged as warnings naming the
    object, each once per run (``forget_reported``). ``written``: the styles the store
    writes by default; metadata that is exactly their rendering of a regular file is
    read in one step (``as_written``)."""
    if not metadata:
        return {}
    if written is not None:
        fast = as_written(metadata, written.styles, rfc3339_mtime=written.rfc3339_mtime, key=key)
        if fast is not None:
            return fast
    result = normalise(metadata, key=key, size=size, order=order)
    for line in result.conflicts:
        if _first_time(key, line):
            log.warning("/%s: POSIX metadata conventions disagree: %s", key, line)
    for line in result.ignored:
        if _first_time(key, line):
            log.warning("/%s: %s", key, line)
    return result.metadata


@dataclass(frozen=True, slots=True)
class Styles:
    """The styles one store writes: ``--metadata-style``, else the store's default
    (``Features.metadata_styles``). ``rfc3339_mtime``: rclone keeps ``mtime`` in RFC
    3339 on this store (Azure, GCS), in decimal seconds on S3."""

    styles: tuple[str, ...]
    rfc3339_mtime: bool = False

    @classmethod
    def chosen(
        cls, option: object, default: tuple[str, ...], *, rfc3339_mtime: bool = False
    ) -> Styles:
        """``option``: ``StoreSettings.extra["metadata_style"]`` (None: ``default``).
        ``UsageError`` for an unknown style or two whose keys collide."""
        if option is None or option == "" or option == ():
            return cls(default, rfc3339_mtime)
        if not isinstance(option, str | tuple | list):
            option = str(option)
        return cls(parse_styles(option, rfc3339_mtime=rfc3339_mtime), rfc3339_mtime)

    def render(self, metadata: Mapping[str, str] | None) -> dict[str, str]:
        return render(metadata, self.styles, rfc3339_mtime=self.rfc3339_mtime)


__all__ = [
    "ORDER",
    "OWN_KEYS",
    "STYLES",
    "Normalised",
    "Styles",
    "forget_reported",
    "normalise",
    "parse_styles",
    "posix_metadata",
    "precedence",
    "read_mode",
    "render",
]
