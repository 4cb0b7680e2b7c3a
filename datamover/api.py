"""The library face: ``copy``, ``sync``, ``verify`` and ``hash`` with keyword options.

These are what ``import datamover`` exposes. Each builds one job for the front door
(``datamover.job``) and runs it there; nothing here moves a byte. What they add is the
keyword style a workflow wants:

* options as keywords (``transfers=16, checksum="sha512", part_size="64M"``) mapped
  into one validated ``TransferOptions`` (or pass ``options=`` ready made; keywords
  then override its fields);
* filters as keywords (``include=["*.h5"], max_age="7d"``) or a ``FileFilter``;
* ``progress=callable`` (event dicts, see ``datamover.reporting.events``) and
  ``listener=`` (an engine ``Listener``/``Observer``);
* ``client=``/``cluster=`` to spread the run over Dask workers.

Errors are the ``datamover.errors`` tree; fatal ones raise, per-file failures are in
the returned report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from datamover.errors import UsageError
from datamover.filters import FileFilter
from datamover.job import (
    Fanout,
    HashJob,
    Listener,
    ScaleOut,
    SyncRules,
    TransferJob,
    TransferReport,
    VerifyJob,
    VerifyReport,
    make_filter,
    make_options,
    run,
)
from datamover.options import DaskOptions, TransferOptions, path_text
from datamover.reporting.events import callback_listener

ProgressCallback = Callable[[Mapping[str, Any]], object]
#: A URL, a remote's ``name:path`` or a local path (``pathlib.Path`` too).
Where = str | os.PathLike[str]

__all__ = ["copy", "hash_url", "make_options", "sync", "verify"]


def _listener(listener: Listener | None, progress: ProgressCallback | None) -> Listener | None:
    if progress is None:
        return listener
    events = callback_listener(progress)
    return events if listener is None else Fanout([listener, events])


def _pairs(
    bag_info: Mapping[str, str] | Iterable[tuple[str, str]] | None,
) -> tuple[tuple[str, str], ...]:
    """``bag_info`` as (label, value) pairs: a mapping, or pairs already."""
    if bag_info is None:
        return ()
    try:
        pairs = tuple(dict(bag_info).items())
    except (TypeError, ValueError):
        raise UsageError(
            "bag_info must be a mapping of bag-info.txt labels to values, e.g. "
            "{'Source-Organization': 'Lab'}"
        ) from None
    return tuple((str(k), str(v)) for k, v in pairs)


def _scale_out(cluster: Any, dask_options: DaskOptions | None) -> ScaleOut | None:
    """Plain values go into the job; a cluster object is handed to ``run``."""
    if dask_options is None and not isinstance(cluster, str):
        return None
    return ScaleOut(cluster if isinstance(cluster, str) else None, dask_options or DaskOptions())


def copy(
    src: Where,
    dst: Where,
    options: TransferOptions | None = None,
    *,
    progress: ProgressCallback | None = None,
    listener: Listener | None = None,
    filters: FileFilter | None = None,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    files_from: Where | Iterable[str] | None = None,
    min_size: int | str | None = None,
    max_size: int | str | None = None,
    min_age: str | float | None = None,
    max_age: str | float | None = None,
    dry_run: bool = False,
    report: Where | None = None,
    bagit: bool = False,
    bag_info: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    client: Any = None,
    cluster: Any = None,
    dask_options: DaskOptions | None = None,
    **option_kwargs: Any,
) -> TransferReport:
    """Copy ``src`` (a file, directory or prefix) to ``dst``, writing a checksum
    manifest; returns a ``TransferReport`` (``.ok``, ``.failures``, ``.manifest``).

    Keyword options become ``TransferOptions`` fields (``transfers=16,
    checksum="sha512", manifest="run1.jsonl"``). With ``bagit=True`` the POSIX
    destination ``dst`` becomes a BagIt bag: the payload goes to ``dst/data/`` and the
    tag files (``bag_info`` adds bag-info.txt fields) are written after a successful
    copy from the manifest's digests. ``report=PATH`` writes the end-of-run JSON report.

    ``client=`` (a ``distributed.Client``) or ``cluster=`` (``"local:N"``, a scheduler
    address or a cluster object) spreads the run over Dask workers, with one manifest
    and one journal as usual (``dask_options`` a ``DaskOptions``).
    """
    job = TransferJob(
        "copy",
        path_text(src, "src"),
        path_text(dst, "dst"),
        make_options(options, **option_kwargs),
        make_filter(
            filters,
            include=include,
            exclude=exclude,
            files_from=files_from,
            min_size=min_size,
            max_size=max_size,
            min_age=min_age,
            max_age=max_age,
        ),
        dry_run=dry_run,
        bagit=bagit,
        bag_info=_pairs(bag_info),
        report=None if report is None else path_text(report, "report"),
        scale_out=_scale_out(cluster, dask_options),
    )
    return run(
        job,
        listener=_listener(listener, progress),
        client=client,
        cluster=None if isinstance(cluster, str) else cluster,
    )


def sync(
    src: Where,
    dst: Where,
    options: TransferOptions | None = None,
    *,
    checksum: bool = False,
    delete: bool = False,
    max_delete: int | None = None,
    progress: ProgressCallback | None = None,
    listener: Listener | None = None,
    filters: FileFilter | None = None,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    files_from: Where | Iterable[str] | None = None,
    min_size: int | str | None = None,
    max_size: int | str | None = None,
    min_age: str | float | None = None,
    max_age: str | float | None = None,
    dry_run: bool = False,
    report: Where | None = None,
    client: Any = None,
    cluster: Any = None,
    dask_options: DaskOptions | None = None,
    **option_kwargs: Any,
) -> TransferReport:
    """Make ``dst`` hold what ``src`` holds, copying only what differs (size + mtime,
    or digests with ``checksum=True``); with ``delete``, remove destination files the
    source lacks (at most ``max_delete``, else nothing is deleted). Filters narrow both
    what is copied and what may be deleted. Other keywords as for ``copy``."""
    job = TransferJob(
        "sync",
        path_text(src, "src"),
        path_text(dst, "dst"),
        make_options(options, **option_kwargs),
        make_filter(
            filters,
            include=include,
            exclude=exclude,
            files_from=files_from,
            min_size=min_size,
            max_size=max_size,
            min_age=min_age,
            max_age=max_age,
        ),
        SyncRules(checksum=checksum, delete=delete, max_delete=max_delete),
        dry_run=dry_run,
        report=None if report is None else path_text(report, "report"),
        scale_out=_scale_out(cluster, dask_options),
    )
    return run(
        job,
        listener=_listener(listener, progress),
        client=client,
        cluster=None if isinstance(cluster, str) else cluster,
    )


def verify(
    manifest: Where,
    target: Where | None = None,
    options: TransferOptions | None = None,
    *,
    listener: Listener | None = None,
    progress: ProgressCallback | None = None,
    no_download: bool = False,
    allow_download: bool = False,
    partial: bool = False,
    **option_kwargs: Any,
) -> VerifyReport:
    """Re-read ``target`` (default: the manifest's destination) and compare each file
    the manifest lists as copied with its size and digest. ``.passed`` says whether
    everything matched. ``no_download``: read nothing, prove files by the checksums
    the store computed (``.unproven`` lists those it can't; ``allow_download`` reads
    those instead). A manifest with no summary (cut off, or a killed or running run's
    ``.partial``) raises ``ManifestError`` unless ``partial=True``, which checks the
    files it lists."""
    job = VerifyJob(
        path_text(manifest, "manifest"),
        None if target is None else path_text(target, "target"),
        make_options(options, **option_kwargs),
        no_download=no_download,
        allow_download=allow_download,
        partial=partial,
    )
    return run(job, listener=_listener(listener, progress))


def hash_url(
    url: Where, options: TransferOptions | None = None, **option_kwargs: Any
) -> dict[str, str]:
    """Digest of one object or file (``checksum=`` picks the algorithm), read with the
    engine's parallel ranged reads: ``{algorithm: hex}``."""
    return run(HashJob(path_text(url, "url"), make_options(options, **option_kwargs)))
