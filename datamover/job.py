"""The front door: one typed description of a job, and the one function that runs it.

Every face builds a job here and calls ``run``: the CLI (``datamover copy|sync|verify|
hash``), the library (``datamover.copy(...)`` and friends), the Dask path
(``copy(..., client=)`` or ``--dask``) and ``datamover jobs resume``, which rebuilds
the ``TransferJob`` the journal recorded when the job first ran, so a resumed
``sync --delete --checksum`` is still one. Nothing else turns arguments into a running
transfer, so there is one place where stores are opened and closed, the preflight is
made, reports are collected and Dask is attached.

A job is frozen and holds plain values only (options, filters, URLs): what to move and
how. What a run talks to while it goes (a listener, a ``distributed.Client``, a
cluster object) is given to ``run`` beside it.

Arrows: faces -> ``job`` -> ``datamover.engine`` -> ``datamover.stores``. This module
imports the engine and the stores; it never imports a face.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from datamover import engine
from datamover.engine import (
    Fanout,
    FileJob,
    FileResult,
    Listener,
    Observer,
    RunInfo,
    Runner,
    TransferReport,
    VerifyReport,
)
from datamover.engine.cleanup import CleanupReport, cleanup_store
from datamover.engine.observer import check_listener
from datamover.engine.procs import process_factory
from datamover.errors import (
    ConfigError,
    DatamoverError,
    PermissionDenied,
    StateError,
    TransientError,
    UsageError,
)
from datamover.filters import FileFilter, patterns
from datamover.journal import JobRecord, Journal, journal_path
from datamover.journal.admin import (
    clean_jobs,
    has_journal,
    list_jobs,
    no_jobs_note,
    no_journal,
    show_job,
)
from datamover.manifest import bagit, check_complete, read_manifest
from datamover.options import (
    DaskOptions,
    RetryPolicy,
    TransferOptions,
    check_flags,
    parse_cluster,
    parse_size,
    path_text,
)
from datamover.redact import redact
from datamover.reporting.report import ReportCollector
from datamover.retry import call_with_retries
from datamover.stores import (
    StoreSettings,
    absolute_url,
    is_relative_path,
    local_path,
    open_store,
    remote_defined,
    remote_name,
)
from datamover.stores.base import Store
from datamover.stores.conventions import forget_reported, parse_styles

__all__ = [
    # what a face hears while a run goes, and what it gets back
    "CleanupReport",
    "Fanout",
    "FileJob",
    "FileResult",
    # jobs and running them
    "HashJob",
    "Job",
    "Listener",
    "Observer",
    "RunInfo",
    "ScaleOut",
    "SyncRules",
    "TransferJob",
    "TransferReport",
    "VerifyJob",
    "VerifyReport",
    "clean_jobs",
    "cleanup",
    "list_jobs",
    "make_filter",
    "make_options",
    "no_jobs_note",
    "recorded_job",
    "resume",
    "run",
    "show_job",
]

#: The preflight's own patience: one retry on top of the SDK's, so a blip at start
#: does not abort a run, but a wrong endpoint is reported within seconds.
_PREFLIGHT_RETRY = RetryPolicy(attempts=2, base=0.5, cap=2.0)
_SIZE_OPTIONS = {"part_size", "multipart_threshold", "memory_budget", "bwlimit"}
_OPTION_NAMES = {f.name for f in dataclasses.fields(TransferOptions)}
#: Version of the job record kept in the journal (``TransferJob.to_record``).
RECORD_VERSION = 1


@dataclass(frozen=True, slots=True)
class SyncRules:
    """What makes ``sync`` more than a copy. ``checksum``: compare whole-file digests
    instead of size + mtime. ``delete``: remove destination files the source lacks,
    after every copy succeeded, at most ``max_delete`` of them (else none)."""

    checksum: bool = False
    delete: bool = False
    max_delete: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.checksum, str):
            raise UsageError(
                f"checksum={self.checksum!r}: sync's checksum is True or False (compare "
                "digests, not size and mtime); the manifest's algorithm is "
                "options=TransferOptions(checksum=...)"
            )
        check_flags(self, "checksum", "delete")
        if self.max_delete is not None and (
            isinstance(self.max_delete, bool) or not isinstance(self.max_delete, int)
        ):
            raise UsageError(f"max_delete={self.max_delete!r}: give a whole number of files")
        if self.max_delete is not None and not self.delete:
            raise UsageError("--max-delete goes with --delete (it caps the deletions)")
        if self.max_delete is not None and self.max_delete < 0:
            raise UsageError("--max-delete must not be negative")


@dataclass(frozen=True, slots=True)
class ScaleOut:
    """Run on a Dask cluster: ``cluster`` is ``"local:N"`` or a scheduler address
    (None when a client or cluster object is handed to ``run``)."""

    cluster: str | None = None
    options: DaskOptions = field(default_factory=DaskOptions)

    def __post_init__(self) -> None:
        if self.cluster is not None:
            parse_cluster(self.cluster)  # a bad address is a usage error before any work


@dataclass(frozen=True, slots=True)
class TransferJob:
    """A copy or a sync from ``src`` to ``dst`` (URLs or paths as a user types them).

    ``bagit`` (copy only, POSIX destination): the payload goes to ``dst/data/`` and
    BagIt tag files (``bag_info`` adds bag-info.txt fields) are written after a
    successful copy. ``report``: a path for the end-of-run JSON report.
    """

    operation: Literal["copy", "sync"]
    src: str
    dst: str
    options: TransferOptions = field(default_factory=TransferOptions)
    filters: FileFilter | None = None
    sync: SyncRules = field(default_factory=SyncRules)
    dry_run: bool = False
    bagit: bool = False
    bag_info: tuple[tuple[str, str], ...] = ()
    report: str | None = None
    scale_out: ScaleOut | None = None

    def __post_init__(self) -> None:
        # Paths may come as pathlib.Path (the library): the job holds them as text.
        object.__setattr__(self, "src", path_text(self.src, "src"))
        object.__setattr__(self, "dst", path_text(self.dst, "dst"))
        if self.report is not None:
            object.__setattr__(self, "report", path_text(self.report, "report"))
        _check_type(self.options, TransferOptions, "options")
        if self.filters is not None:
            _check_type(self.filters, FileFilter, "filters")
        check_flags(self, "dry_run", "bagit")
        if self.operation not in ("copy", "sync"):
            raise UsageError(f"unknown operation {self.operation!r}; copy or sync")
        if self.operation == "copy" and self.sync != SyncRules():
            raise UsageError("delete, max_delete and checksum comparison are sync options")
        if self.bagit and self.operation != "copy":
            raise UsageError("--bagit lays out a copy; use copy, not sync")
        if self.bag_info and not self.bagit:
            raise UsageError("--bag-info goes with --bagit (it is a field of the bag)")

    def to_record(self) -> dict[str, Any]:
        """JSON-able, kept in the journal so ``resume`` runs this very job again. Local
        paths (source, destination, manifest, report, state directory) are recorded
        absolute, resolved against the current directory now, so a resume from another
        directory reads and writes the same places. (Filters are recorded by content:
        ``--files-from`` and ``--exclude-from`` files are not read again.)"""
        options = self.options.to_record()
        for name in ("manifest", "state_dir"):
            if options.get(name):
                options[name] = os.path.abspath(options[name])
        return {
            "version": RECORD_VERSION,
            "operation": self.operation,
            "src": absolute_url(self.src),
            "dst": absolute_url(self.dst),
            "options": options,
            "filters": self.filters.to_record() if self.filters is not None else None,
            "sync": dataclasses.asdict(self.sync),
            "bagit": self.bagit,
            "bag_info": [list(kv) for kv in self.bag_info],
            "report": os.path.abspath(self.report) if self.report is not None else None,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TransferJob:
        """The job ``to_record`` described. Raises ``UsageError`` for a record this
        version can't read."""
        if record.get("version") != RECORD_VERSION:
            raise UsageError(
                f"the journal's job record has version {record.get('version')!r}, which this "
                "datamover can't resume; run the command again instead"
            )
        # The record comes back from a file on disk: decode it as untrusted input.
        try:
            flt = record.get("filters")
            src, dst, report = record["src"], record["dst"], record.get("report")
            if not (isinstance(src, str) and isinstance(dst, str)):
                raise TypeError("src and dst must be strings")
            if report is not None and not isinstance(report, str):
                raise TypeError("report must be a path")
            return cls(
                operation=record["operation"],
                src=src,
                dst=dst,
                options=TransferOptions.from_record(record.get("options") or {}),
                filters=FileFilter.from_record(flt) if flt else None,
                sync=SyncRules(**(record.get("sync") or {})),
                bagit=bool(record.get("bagit")),
                bag_info=tuple((str(k), str(v)) for k, v in record.get("bag_info") or ()),
                report=report,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise StateError(
                f"the journal's record of this job is corrupt ({type(e).__name__}: {e}); "
                "forget it with `datamover jobs clean JOB_ID` and run the command again"
            ) from e


@dataclass(frozen=True, slots=True)
class VerifyJob:
    """Re-read ``target`` (default: the manifest's destination) and compare every file
    ``manifest`` lists as copied with its size and digest."""

    manifest: str
    target: str | None = None
    options: TransferOptions = field(default_factory=TransferOptions)
    #: Read no data: prove each file by the checksums the store computed over the
    #: bytes it holds, compared with those the manifest recorded; files that can't be
    #: proven so fail the verify, unless ``allow_download`` reads them instead.
    no_download: bool = False
    allow_download: bool = False
    #: Accept a manifest with no summary (a killed or running run's ``.partial``, or
    #: a cut-off file) and check the files it lists; otherwise it is refused.
    partial: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "manifest", path_text(self.manifest, "manifest"))
        if self.target is not None:
            object.__setattr__(self, "target", path_text(self.target, "target"))
        _check_type(self.options, TransferOptions, "options")
        check_flags(self, "no_download", "allow_download", "partial")


@dataclass(frozen=True, slots=True)
class HashJob:
    """The digest (``options.checksum``) of one object or file."""

    url: str
    options: TransferOptions = field(default_factory=TransferOptions)

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", path_text(self.url, "url"))
        _check_type(self.options, TransferOptions, "options")


Job = TransferJob | VerifyJob | HashJob


def _check_type(value: object, kind: type, what: str) -> None:
    if not isinstance(value, kind):
        build = "FileFilter.build(...)" if kind is FileFilter else f"{kind.__name__}(...)"
        raise UsageError(
            f"{what} must be a datamover.{kind.__name__}, not {type(value).__name__}; "
            f"make one with datamover.{build}, or give its settings as keywords"
        )


# -- building a job at the edge ----------------------------------------------------------


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
    if options is not None:
        _check_type(options, TransferOptions, "options")
    base = options or TransferOptions()
    return base.with_(**kwargs) if kwargs else base


def make_filter(
    filters: FileFilter | None = None,
    *,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    files_from: str | os.PathLike[str] | Iterable[str] | None = None,
    min_size: int | str | None = None,
    max_size: int | str | None = None,
    min_age: str | float | None = None,
    max_age: str | float | None = None,
) -> FileFilter | None:
    """``filters``, or one built from the keyword shortcuts (not both). ``files_from``:
    a file of names (a path), or the names themselves."""
    inc, exc = patterns(include, "include"), patterns(exclude, "exclude")
    if isinstance(files_from, os.PathLike):
        files_from = path_text(files_from, "files_from")
    shortcuts = (inc, exc, files_from, min_size, max_size, min_age, max_age)
    if not any(x for x in shortcuts if x not in ((), None)):
        return filters
    if filters is not None:
        raise UsageError("give either filters= or the filter keywords, not both")
    return FileFilter.build(
        include=inc,
        exclude=exc,
        files_from=files_from,
        min_size=min_size,
        max_size=max_size,
        min_age=min_age,
        max_age=max_age,
    )


def store_settings(options: TransferOptions, role: str = "source") -> StoreSettings:
    """Store settings for a run with ``options``: one pooled connection per worker
    thread plus a few for stats and commits, and what the POSIX store needs to know.
    ``role="destination"``: links are followed in a source only (``--copy-links``), so
    a destination's listing (sync) shows a symlink as itself and ``--delete`` removes
    the link, never what it points to."""
    extra: dict[str, object] = {
        "copy_links": options.copy_links and role == "source",
        "xattrs": options.xattrs,
        "durability": options.durability,
        "preserve_setid": options.preserve_setid,
    }
    if options.links:
        extra["links"] = True
    if options.s3_checksum is not None:
        extra["s3_checksum"] = options.s3_checksum
    if options.metadata_style:
        # Checked here for every destination (a POSIX one ignores it): UsageError.
        parse_styles(options.metadata_style, rfc3339_mtime=False)
        extra["metadata_style"] = options.metadata_style
    return StoreSettings(connections=options.transfers + 4, extra=extra)


# -- running it ------------------------------------------------------------------------------


@overload
def run(
    job: TransferJob,
    *,
    listener: Listener | None = None,
    client: Any = None,
    cluster: Any = None,
) -> TransferReport: ...


@overload
def run(
    job: VerifyJob, *, listener: Listener | None = None, client: Any = None, cluster: Any = None
) -> VerifyReport: ...


@overload
def run(
    job: HashJob, *, listener: Listener | None = None, client: Any = None, cluster: Any = None
) -> dict[str, str]: ...


def run(
    job: Job,
    *,
    listener: Listener | None = None,
    client: Any = None,
    cluster: Any = None,
) -> TransferReport | VerifyReport | dict[str, str]:
    """Run ``job``. ``listener`` (an engine ``Listener`` or ``Observer``) hears the
    run as it goes; ``client`` (a ``distributed.Client``) or ``cluster`` (a cluster
    object, or ``"local:N"``/an address) spreads a transfer over Dask workers, as
    ``job.scale_out`` does. Fatal errors raise (``datamover.errors``); per-file
    failures are in the report."""
    if listener is not None:
        check_listener(listener)
    if isinstance(client, str):
        raise UsageError(
            f"client= takes a distributed.Client; give the address {client!r} as cluster="
        )
    # Every Dask cluster object has a scheduler_address.
    if not (cluster is None or isinstance(cluster, str) or hasattr(cluster, "scheduler_address")):
        raise UsageError(
            "cluster= takes 'local:N', a scheduler address or a Dask cluster object "
            f"(LocalCluster, SLURMCluster, ...), not {type(cluster).__name__}"
        )
    forget_reported()  # each run reports what it finds in objects' metadata once
    if isinstance(job, TransferJob):
        return _transfer(job, listener, client, cluster)
    if isinstance(job, VerifyJob):
        return _verify(job, listener)
    return _hash(job)


def _transfer(
    job: TransferJob, listener: Listener | None, client: Any, cluster: Any
) -> TransferReport:
    opts, dst = job.options, job.dst
    scale = job.scale_out
    if scale is not None and cluster is None and client is None:
        if scale.cluster is None:
            raise UsageError(
                "Dask options were given without a cluster: pass client= or cluster= "
                "(e.g. cluster='local:2'), or leave dask_options out"
            )
        cluster = scale.cluster
    distributed = (client is not None or cluster is not None) and not job.dry_run
    opts = cluster_durability(opts, distributed)
    bag_dir = None
    if job.bagit:
        bagit.check_algorithm(opts.checksum)
        bag_dir, dst = _bag_destination(dst)
        opts = opts.with_(copy_links=True)
        if not job.dry_run:
            os.makedirs(bag_dir, exist_ok=True)
            bagit.remove_tag_files(bag_dir)
    collector = (
        ReportCollector(
            job.report,
            command_line=opts.command_line,
            filters=job.filters.describe() if job.filters is not None else None,
        )
        if job.report is not None
        else None
    )
    settings = store_settings(opts)
    dst_settings = store_settings(opts, "destination")
    try:
        with _open_pair(job.src, dst, settings, dst_settings) as (
            src_store,
            src_key,
            dst_store,
            dst_key,
        ):
            preflight(src_store, src_key, "source")
            preflight(dst_store, dst_key, "destination")
            with _scaled_out(
                job, settings, dst_settings, opts, client, cluster, distributed
            ) as factory:
                if factory is None and opts.processes != 1 and not job.dry_run:
                    # Small files over worker processes (engine.procs); Dask wins.
                    factory = process_factory(job.src, dst, settings, dst_settings)
                common: dict[str, Any] = {
                    "listener": _fanout(listener, collector),
                    "filters": job.filters,
                    "dry_run": job.dry_run,
                    "runner_factory": factory,
                    "request": job.to_record(),
                    # verify opens a remote's destination the way the copy did
                    "destination_remote": remote_name(dst),
                }
                if job.operation == "sync":
                    result = engine.sync_between(
                        src_store,
                        src_key,
                        dst_store,
                        dst_key,
                        opts,
                        checksum=job.sync.checksum,
                        delete=job.sync.delete,
                        max_delete=job.sync.max_delete,
                        **common,
                    )
                else:
                    result = engine.copy_between(
                        src_store, src_key, dst_store, dst_key, opts, **common
                    )
    except DatamoverError as e:
        if collector is not None and not collector.written:
            # A run that failed before it started still gets its report.
            collector.write(TransferReport("not-started", job.operation, job.src, dst, None), e)
        raise
    if bag_dir is not None and not job.dry_run and result.ok and result.manifest:
        bagit.finish_bag(bag_dir, result.manifest, info=dict(job.bag_info))
    return result


def cluster_durability(options: TransferOptions, distributed: bool) -> TransferOptions:
    """On a Dask cluster files are written on other nodes' page caches, which this
    process can't ``syncfs``: "job" durability becomes each file's own fsync there."""
    if distributed and options.durability == "job":
        return options.with_(durability="file")
    return options


@contextlib.contextmanager
def _open_pair(
    src: str, dst: str, settings: StoreSettings, dst_settings: StoreSettings
) -> Iterator[tuple[Store, str, Store, str]]:
    src_store, src_key = open_store(src, settings)
    with src_store:
        dst_store, dst_key = open_store(dst, dst_settings)
        with dst_store:
            yield src_store, src_key, dst_store, dst_key


def _fanout(*listeners: Listener | None) -> Listener | None:
    parts = [p for p in listeners if p is not None]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else Fanout(parts)


def _bag_destination(dst: str) -> tuple[str, str]:
    """``(bag directory, payload URL)`` for ``copy --bagit`` to a POSIX ``dst``."""
    bag_dir = local_path(dst)
    if bag_dir is None:
        raise UsageError(
            f"--bagit lays a copy out as a BagIt bag on a POSIX filesystem, and {dst} is "
            "not on one; copy to a local or shared filesystem path"
        )
    return bag_dir, os.path.join(bag_dir, "data") + "/"


def _scaled_out(
    job: TransferJob,
    settings: StoreSettings,
    dst_settings: StoreSettings,
    options: TransferOptions,
    client: Any,
    cluster: Any,
    distributed: bool,
) -> contextlib.AbstractContextManager[Callable[..., Runner] | None]:
    """The runner factory for a run on Dask, else None (the local runner). A dry run
    moves nothing, so it stays local."""
    if not distributed:
        return contextlib.nullcontext()
    try:
        # optional: ``distributed`` (the dask extra) is imported only for a run that asks
        from datamover.engine.dask import scale_out
    except ImportError as e:
        raise ConfigError(
            f"running on Dask needs the 'distributed' package ({e.name} is missing): "
            "pip install 'datamover[dask]'"
        ) from e
    return scale_out(
        job.src,
        job.dst,
        settings,
        options,
        dst_settings=dst_settings,
        client=client,
        cluster=cluster,
        dask_options=job.scale_out.options if job.scale_out is not None else None,
    )


def preflight(store: Store, key: str, role: str) -> None:
    """One cheap request to a remote store before a run: turns a wrong endpoint into
    a ``ConfigError`` saying what to check. A missing bucket and rejected credentials
    raise their own (fatal) errors; a listing we may not make (write-only
    credentials) is no reason to stop, so ``PermissionDenied`` passes."""
    if store.features.local:
        return
    prefix = key.rpartition("/")[0]

    def probe() -> None:
        store.probe(prefix + "/" if prefix else "")

    try:
        call_with_retries(probe, _PREFLIGHT_RETRY)
    except PermissionDenied:
        return
    except TransientError as e:
        where = store.endpoint()
        at = f" at {redact(where)}" if where else ""
        raise ConfigError(
            f"cannot reach the {role} {store.url('')}{at} ({e}); check the endpoint "
            "(AWS_ENDPOINT_URL / AZURE_STORAGE_CONNECTION_STRING / STORAGE_EMULATOR_HOST or "
            "the remote's endpoint in the config) and that the service is up"
        ) from e


def _verify(job: VerifyJob, listener: Listener | None) -> VerifyReport:
    manifest = read_manifest(job.manifest)
    if not job.partial:
        check_complete(manifest, job.manifest, doing="verify")
    root_url = job.target or str(manifest.header.get("destination", ""))
    if not root_url:
        raise UsageError(f"{job.manifest} names no destination; give the TARGET to verify")
    # The copy went through a configured remote: its URL is opened with that remote's
    # settings (endpoint, credentials), as the copy opened it.
    remote = manifest.header.get("destination_remote")
    via = remote if isinstance(remote, str) and remote and not job.target else None
    hint = ""
    if via is not None and not remote_defined(via):
        hint = (
            f" (the copy went through remote {via!r}, which the config does not define; "
            "define it, or pass --config FILE, to verify through it, or give a TARGET "
            "this verify can reach)"
        )
        via = None
    if job.allow_download and not job.no_download:
        raise UsageError("--allow-download goes with --no-download (a verify reads anyway)")
    options = job.options
    recorded = manifest.header.get("options")
    if isinstance(recorded, dict) and recorded.get("links") is True and not options.links:
        # The copy wrote symlinks as rclone's NAME.rclonelink objects (--links): they are
        # read back the way they were written.
        options = options.with_(links=True)
    try:
        store, key = open_store(root_url, store_settings(options, "destination"), remote=via)
        with store:
            # A dead endpoint or rejected credentials: one line (exit 2), not one per file.
            preflight(store, key, "verify target")
            return engine.verify_store(
                manifest,
                job.manifest,
                store,
                key,
                options,
                listener=listener,
                no_download=job.no_download,
                allow_download=job.allow_download,
            )
    except DatamoverError as e:
        if not hint or not e.fatal:
            raise
        raise ConfigError(f"{e}{hint}") from e


def _hash(job: HashJob) -> dict[str, str]:
    store, key = open_store(job.url, store_settings(job.options))
    with store:
        return engine.hash_object(store, key, job.options)


# -- jobs the journal knows --------------------------------------------------------------


def _record(job_id: str, state_dir: str | None) -> JobRecord:
    if not isinstance(job_id, str):
        raise UsageError(
            f"a job id is a str like '20261124T101500Z-1a2b3c4d', not {type(job_id).__name__}; "
            "see `datamover jobs list`"
        )
    if not has_journal(state_dir):
        raise no_journal(job_id, state_dir)
    journal = Journal(journal_path(state_dir))
    try:
        record = journal.job(job_id)
    finally:
        journal.close()
    if record is None:
        raise UsageError(
            f"no job {job_id!r} in {journal_path(state_dir)}; see `datamover jobs list`"
        )
    return record


def recorded_job(job_id: str, state_dir: str | None = None) -> TransferJob:
    """The ``TransferJob`` an unfinished job ran, as the journal recorded it, set to
    resume it (same manifest, same journal)."""
    record = _record(job_id, state_dir)
    if record.state == "done":
        raise UsageError(f"job {record.job_id} already finished; nothing to resume")
    if "version" in record.request:
        job = TransferJob.from_record(record.request)
    else:  # a journal written before jobs were recorded whole
        request = record.request
        src, dst = request.get("src", record.source), request.get("dst", record.destination)
        corrupt = (
            f"the journal's record of job {record.job_id} is corrupt; forget it with "
            f"`datamover jobs clean {record.job_id}` and run the command again"
        )
        if not (isinstance(src, str) and isinstance(dst, str)):
            raise StateError(corrupt)
        try:
            options = TransferOptions.from_record(record.options)
        except (TypeError, ValueError, AttributeError) as e:
            raise StateError(corrupt) from e
        job = TransferJob("sync" if record.operation == "sync" else "copy", src, dst, options)
    relative = _relative_path(job, record.manifest)
    if relative is not None:
        # An older datamover recorded paths as typed: from another directory they name
        # other places, so the job is refused rather than guessed at.
        raise UsageError(
            f"job {record.job_id} recorded its {relative[0]} as the relative path "
            f"{relative[1]!r}, which can't be resumed safely; run the original command "
            "again from the directory it was started in (that resumes the job)"
        )
    options = job.options.with_(
        manifest=record.manifest, state_dir=state_dir, resume=True, resume_job=record.job_id
    )
    return dataclasses.replace(job, options=options, dry_run=False)


def _relative_path(job: TransferJob, manifest: str | None) -> tuple[str, str] | None:
    """``(what, path)`` for the first local path of a recorded job that depends on the
    current directory, or None."""
    for what, url in (("source", job.src), ("destination", job.dst)):
        if is_relative_path(url):
            return what, url
    for what, path in (("manifest", manifest), ("report", job.report)):
        if path and not os.path.isabs(path):
            return what, path
    return None


def resume(
    job_id: str, state_dir: str | None = None, *, listener: Listener | None = None
) -> TransferReport:
    """Run an unfinished job again, exactly as it was first asked for."""
    return run(recorded_job(job_id, state_dir), listener=listener)


def cleanup(url: str, *, older_than: float | None = None, dry_run: bool = False) -> CleanupReport:
    """Abort the unfinished uploads under ``url`` (see ``datamover.engine.cleanup``)."""
    store, key = open_store(url)
    with store:
        return cleanup_store(store, key, older_than=older_than, dry_run=dry_run)
