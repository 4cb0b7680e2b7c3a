"""The cyclic garbage collector's settings for a datamover process (the CLI, a
``--processes`` worker): what a run of many small files spends in it, made small.

A run of thousands of small files allocates a few hundred container objects per file
(listing entries, requests, results) and keeps thousands alive (the planned jobs, a
listing page's entries): CPython's default thresholds (700, 10, 10) then run a young
collection every few files and a full one, over every live object, each time the
long-lived objects grow by a quarter. Measured on 5,000 × 4 KiB Azure downloads
(``gc.callbacks``, bench/RESULTS.md): 0.19 CPU-s in the collector, 0.12 of it in five
full collections; with ``tune()``, 0.03.

``tune()``:

* moves everything alive after start-up (imported modules, the SDKs' tables) out of
  the collector's sight (``gc.freeze``): it lives as long as the process anyway;
* raises the young generation's threshold to ``YOUNG_THRESHOLD`` allocations. Almost
  every object datamover makes is freed by reference counting the moment it is
  dropped; the collector only finds reference cycles, so this bounds how many
  objects (of a few hundred bytes each) in unreachable cycles can wait for a
  collection: ``YOUNG_THRESHOLD``, a few MiB at most.

Library callers keep their own settings: only process entry points call ``tune()``.
"""

from __future__ import annotations

import gc

#: Allocations (minus deallocations) of container objects between young collections.
YOUNG_THRESHOLD = 20_000
#: Young collections per middle one, middle ones per full one (the latter also waits
#: for the long-lived objects to grow by a quarter, as CPython always does).
MIDDLE_THRESHOLD = 20
OLD_THRESHOLD = 20


def tune() -> None:
    """Apply the settings above to this process (idempotent)."""
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)


__all__ = ["MIDDLE_THRESHOLD", "OLD_THRESHOLD", "YOUNG_THRESHOLD", "tune"]
