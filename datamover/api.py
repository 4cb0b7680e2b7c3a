"""The library's front door: ``copy``, ``sync``, ``verify`` with keyword options.

These are what ``import datamover`` exposes and what the CLI calls. They add to the
engine's operations only what belongs at the edge:

* options as keywords (``transfers=16, checksum="sha512", part_size="64M"``) mapped
  into one validated ``TransferOptions`` (or pass ``options=`` ready made; keywords
  then override its fields);
* filters as keywords (``include=["*.h5"], max_age="7d"``) or a ``FileFilter``;
* ``progress=callable`` (event dicts, see ``datamover.events``), ``listener=`` (an
  engine ``Listener``/``Observer``) and ``report=PATH`` (``datamover.report``);
* a preflight: each object store is asked one cheap question (a one-item listing)
  before anything moves, so a wrong endpoint or a missing bucket is one clear error
  instead of every file failing after its retries;
* ``bagit=True`` (copy): the destination becomes a BagIt bag (``bagit_export``).

Errors are the ``datamover.errors`` tree; fatal ones raise, per-file failures are in
the returned report.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from datamover import engine
from datamover.engine import TransferReport, VerifyReport
from datamover.engine.budget import call_with_retries
from datamover.engine.observer import Fanout, Observer
from datamover.engine.runner import Listener
from datamover.errors import (
    ConfigError,
    DatamoverError,
    PermissionDenied,
    TransientError,
    UsageError,
)
from datamover.filters import FileFilter
from datamover.options import RetryPolicy, TransferOptions, parse_size
from datamover.redact import redact
from datamover.stores import StoreSettings, local_path, open_store
from datamover.stores.base import Store

if TYPE_CHECKING:
    from datamover.dask import DaskOptions

#: The preflight's own patience: one retry on top of the SDK's, so a blip at start
#: does not abort a run, but a wrong endpoint is reported within seconds.
_PREFLIGHT_RETRY = RetryPolicy(attempts=2, base=0.5, cap=2.0)
_SIZE_OPTIONS = {"part_size", "multipart_threshold", "memory_budget", "bwlimit"}
_OPTION_NAMES = {f.name for f in dataclasses.fields(TransferOptions)}

ProgressCallback = Callable[[Mapping[str, Any]], object]


def make_options(options: TransferOptions | None = None, **kwargs: Any) -> TransferOptions:
    """``options`` (default ``TransferOptions()``) with ``kwargs`` applied. Sizes may be
    strings with units. Unknown names raise ``UsageError`` listing the valid ones."""
    unknown = set(kwargs) - _OPTION_NAMES
    if unknown:
        raise UsageError(
            f"unknown option {sorted(unknown)[0]!r}; TransferOptions takes "
            + ", ".join(sorted(_OPTION_NAMES))
        )
    for name in _SIZE_OPTIONS & set(kwargs):
        if isinstance(kwargs[name], str):
            kwargs[name] = parse_size(kwargs[name])
    if "command_line" in kwargs:
        kwargs["command_line"] = tuple(kwargs["command_line"])
    base = options or TransferOptions()
    return base.with_(**kwargs) if kwargs else base


def make_filter(
    filters: FileFilter | None = None,
    *,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    files_from: str | Iterable[str] | None = None,
    min_size: int | str | None = None,
    max_size: int | str | None = None,
    min_age: str | float | None = None,
    max_age: str | float | None = None,
) -> FileFilter | None:
    shortcuts = (
        tuple(include),
        tuple(exclude),
        files_from,
        min_size,
        max_size,
        min_age,
        max_age,
    )
    if not any(x for x in shortcuts if x not in ((), None)):
        return filters
    if filters is not None:
        raise UsageError("give either filters= or the filter keywords, not both")
    return FileFilter.build(
        include=tuple(include),
        exclude=tuple(exclude),
        files_from=files_from,
        min_size=min_size,
        max_size=max_size,
        min_age=min_age,
        max_age=max_age,
    )


def _settings(options: TransferOptions) -> StoreSettings:
    return engine.store_settings(options)


def _endpoint(store: Store) -> str | None:
    client = getattr(store, "client", None)
    meta = getattr(client, "meta", None)
    url = getattr(meta, "endpoint_url", None)
    return redact(url) if isinstance(url, str) else None


def preflight(store: Store, key: str, role: str) -> None:
    """One cheap request to an object store before a run: turns a wrong endpoint into
    a ``ConfigError`` saying what to check. A missing bucket and rejected credentials
    raise their own (fatal) errors; a listing we may not make (write-only
    credentials) is no reason to stop, so ``PermissionDenied`` passes."""
    if store.features.local:
        return
    prefix = key.rpartition("/")[0]

    def probe() -> None:
        next(iter(store.list(prefix + "/" if prefix else "", recursive=False)), None)

    try:
        call_with_retries(probe, _PREFLIGHT_RETRY)
    except PermissionDenied:
        return
    except TransientError as e:
        where = _endpoint(store)
        at = f" at {where}" if where else ""
        raise ConfigError(
            f"cannot reach the {role} {store.url('')}{at} ({e}); check the endpoint "
            "(AWS_ENDPOINT_URL / AZURE_STORAGE_CONNECTION_STRING / STORAGE_EMULATOR_HOST or "
            "the remote's endpoint in the config) and that the service is up"
        ) from e


def _listener(
    listener: Listener | None,
    progress: ProgressCallback | None,
    collector: Observer | None,
) -> Listener | None:
    from datamover.events import callback_listener

    parts: list[Listener | None] = [listener, collector]
    if progress is not None:
        parts.append(callback_listener(progress))
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else Fanout(parts)


def _collector(
    report: str | None, options: TransferOptions, filters: FileFilter | None
) -> Observer | None:
    if report is None:
        return None
    from datamover.report import ReportCollector

    return ReportCollector(
        report,
        command_line=options.command_line,
        filters=filters.describe() if filters is not None else None,
    )


def _bag_destination(dst: str) -> tuple[str, str]:
    """``(bag directory, payload URL)`` for ``copy --bagit`` to a POSIX ``dst``."""
    bag_dir = local_path(dst)
    if bag_dir is None:
        raise UsageError(
            f"--bagit lays a copy out as a BagIt bag on a POSIX filesystem, and {dst} is "
            "not on one; copy to a local or shared filesystem path"
        )
    return bag_dir, os.path.join(bag_dir, "data") + "/"


def _cluster_durability(opts: TransferOptions, client: Any, cluster: Any) -> TransferOptions:
    """On a Dask cluster, files are written on other nodes' page caches, which this
    process can't ``syncfs``: "job" durability becomes each file's own fsync there."""
    if (client is not None or cluster is not None) and opts.durability == "job":
        return opts.with_(durability="file")
    return opts


def copy(
    src: str,
    dst: str,
    options: TransferOptions | None = None,
    *,
    progress: ProgressCallback | None = None,
    listener: Listener | None = None,
    filters: FileFilter | None = None,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    files_from: str | Iterable[str] | None = None,
    min_size: int | str | None = None,
    max_size: int | str | None = None,
    min_age: str | float | None = None,
    max_age: str | float | None = None,
    dry_run: bool = False,
    report: str | None = None,
    bagit: bool = False,
    bag_info: Mapping[str, str] | None = None,
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
    copy from the manifest's digests.

    ``client=`` (a ``distributed.Client``) or ``cluster=`` (``"local:N"``, a scheduler
    address or a cluster object) spreads the run over Dask workers, with one manifest
    and one journal as usual (``datamover.dask``; ``dask_options`` a ``DaskOptions``).
    """
    opts = make_options(options, **option_kwargs)
    flt = make_filter(
        filters,
        include=include,
        exclude=exclude,
        files_from=files_from,
        min_size=min_size,
        max_size=max_size,
        min_age=min_age,
        max_age=max_age,
    )
    bag_dir = None
    if bagit:
        from datamover import bagit_export

        bagit_export.check_algorithm(opts.checksum)
        bag_dir, dst = _bag_destination(dst)
        if hasattr(opts, "copy_links"):
            opts = opts.with_(copy_links=True)
        if not dry_run:
            os.makedirs(bag_dir, exist_ok=True)
            bagit_export.remove_tag_files(bag_dir)
    collector = _collector(report, opts, flt)
    opts = _cluster_durability(opts, client, cluster)
    settings = _settings(opts)
    src_store, src_key = open_store(src, settings)
    try:
        dst_store, dst_key = open_store(dst, settings)
    except BaseException:
        src_store.close()
        raise
    try:
        preflight(src_store, src_key, "source")
        preflight(dst_store, dst_key, "destination")
        with engine.scaled_out(
            src, dst, settings, opts, client, cluster, dask_options, dry_run
        ) as factory:
            result = engine.copy_between(
                src_store,
                src_key,
                dst_store,
                dst_key,
                opts,
                listener=_listener(listener, progress, collector),
                filters=flt,
                dry_run=dry_run,
                runner_factory=factory,
            )
    except DatamoverError as e:
        _report_early_failure(collector, "copy", src, dst, e)
        raise
    finally:
        src_store.close()
        dst_store.close()
    if bag_dir is not None and not dry_run and result.ok and result.manifest:
        from datamover import bagit_export

        bagit_export.finish_bag(bag_dir, result.manifest, info=bag_info)
    return result


def _report_early_failure(
    collector: Observer | None, operation: str, src: str, dst: str, error: DatamoverError
) -> None:
    """A run that failed before it started (preflight, planning) still gets its
    report, so a workflow can read why."""
    from datamover.report import ReportCollector

    if isinstance(collector, ReportCollector) and not collector.written:
        collector.write(TransferReport("not-started", operation, src, dst, None), error)


def sync(
    src: str,
    dst: str,
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
    files_from: str | Iterable[str] | None = None,
    min_size: int | str | None = None,
    max_size: int | str | None = None,
    min_age: str | float | None = None,
    max_age: str | float | None = None,
    dry_run: bool = False,
    report: str | None = None,
    client: Any = None,
    cluster: Any = None,
    dask_options: DaskOptions | None = None,
    **option_kwargs: Any,
) -> TransferReport:
    """Make ``dst`` hold what ``src`` holds, copying only what differs (size + mtime,
    or digests with ``checksum=True``); with ``delete``, remove destination files the
    source lacks (at most ``max_delete``, else nothing is deleted). Filters narrow both
    what is copied and what may be deleted. Other keywords (``client``, ``cluster``)
    as for ``copy``."""
    opts = make_options(options, **option_kwargs)
    flt = make_filter(
        filters,
        include=include,
        exclude=exclude,
        files_from=files_from,
        min_size=min_size,
        max_size=max_size,
        min_age=min_age,
        max_age=max_age,
    )
    collector = _collector(report, opts, flt)
    opts = _cluster_durability(opts, client, cluster)
    settings = _settings(opts)
    src_store, src_key = open_store(src, settings)
    try:
        dst_store, dst_key = open_store(dst, settings)
    except BaseException:
        src_store.close()
        raise
    try:
        preflight(src_store, src_key, "source")
        preflight(dst_store, dst_key, "destination")
        with engine.scaled_out(
            src, dst, settings, opts, client, cluster, dask_options, dry_run
        ) as factory:
            return engine.sync_between(
                src_store,
                src_key,
                dst_store,
                dst_key,
                opts,
                checksum=checksum,
                delete=delete,
                max_delete=max_delete,
                listener=_listener(listener, progress, collector),
                filters=flt,
                dry_run=dry_run,
                runner_factory=factory,
            )
    except DatamoverError as e:
        _report_early_failure(collector, "sync", src, dst, e)
        raise
    finally:
        src_store.close()
        dst_store.close()


def verify(
    manifest: str,
    target: str | None = None,
    options: TransferOptions | None = None,
    *,
    listener: Listener | None = None,
    progress: ProgressCallback | None = None,
    **option_kwargs: Any,
) -> VerifyReport:
    """Re-read ``target`` (default: the manifest's destination) and compare each file
    the manifest lists as copied with its size and digest. ``.passed`` says whether
    everything matched."""
    opts = make_options(options, **option_kwargs)
    return engine.verify(manifest, target, opts, listener=_listener(listener, progress, None))
