"""Running a transfer: planned files -> the runner -> one manifest and one journal.

``copy_between`` and ``sync_between`` take stores already open (the front door,
``datamover.job``, opens and closes them) and plan; ``run_job`` runs a plan as one
journaled job with one manifest, resuming the newest unfinished run of the same job.
They return a ``TransferReport``; they raise only for usage errors and fatal store
errors (after in-flight work has stopped and the manifest is closed).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat as statmod
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from datamover.engine.leftovers import abort_unjournaled
from datamover.engine.observer import Listener, Observer, RunInfo, as_observer, planned
from datamover.engine.plan import FileJob, plan_copy
from datamover.engine.results import FileResult, TransferReport, new_job_id
from datamover.engine.run_state import JobContext
from datamover.engine.runner import Runner
from datamover.engine.sync import SyncPlanner
from datamover.errors import DatamoverError, NotFound, UnsafePath, UsageError
from datamover.filters import FileFilter
from datamover.journal import JobRecord, Journal, default_state_dir, job_key, journal_path
from datamover.journal.lock import JobLock
from datamover.manifest import (
    STATUS_DELETED,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    VERIFIED_NONE,
    ManifestEntry,
    ManifestWriter,
    as_recorded,
    make_header,
    path_problem,
)
from datamover.options import TransferOptions
from datamover.posixmeta import MODE, PosixAttrs, format_mtime_ns
from datamover.stores.base import ObjectInfo, Store
from datamover.stores.browse import stat_url

log = logging.getLogger("datamover")


def _entry(result: FileResult, algorithm: str) -> ManifestEntry:
    job = result.job
    info = result.src_info or job.info
    attrs = PosixAttrs.from_metadata(info.metadata)
    mtime_ns = attrs.mtime_ns
    if mtime_ns is None and info.mtime is not None:
        mtime_ns = round(info.mtime * 1e9)
    mode = attrs.mode if MODE in info.metadata else info.mode
    entry = ManifestEntry(
        path=job.rel,
        size=result.size,
        status=STATUS_OK if result.error is None else STATUS_FAILED,
        digest=result.digests.get(algorithm) or None,  # a failed link has ""
        mtime=format_mtime_ns(mtime_ns) if mtime_ns is not None else None,
        mode=f"{statmod.S_IMODE(mode):04o}" if mode is not None else None,
        part_size=result.part_size,
        parts=result.parts,
        etag=result.dst_info.etag if result.dst_info else None,
        version=result.dst_info.version if result.dst_info else None,
        error=str(result.error) if result.error is not None else None,
        seconds=round(result.seconds, 6),
        attempts=result.retries + 1 if result.retries else None,
        # from metadata anybody may have written: a manifest holds ids >= 0 only
        uid=attrs.uid if attrs.uid is not None and attrs.uid >= 0 else None,
        gid=attrs.gid if attrs.gid is not None and attrs.gid >= 0 else None,
    )
    if result.error is None:
        entry.verified = result.verified
        # Of bytes a check covered only: they are then checksums of what was sent.
        if result.dst_info is not None and result.verified not in (None, VERIFIED_NONE):
            entry.provider_checksums = dict(result.dst_info.provider_checksums)
    if job.kind == "dir":
        entry.kind = "dir"
    elif job.kind == "hardlink":
        entry.kind, entry.link_to = "hardlink", job.link_to
    elif mode is not None and statmod.S_ISLNK(mode):
        entry.kind = "symlink"
    src_rel = job.src_key.rsplit("/", 1)[-1]
    if job.rel.rsplit("/", 1)[-1] != src_rel:
        entry.source_path = src_rel
    return entry


def copy_between(
    src_store: Store,
    src_key: str,
    dst_store: Store,
    dst_key: str,
    options: TransferOptions,
    *,
    listener: Listener | None = None,
    sleep: Callable[[float], None] = time.sleep,
    filters: FileFilter | None = None,
    dry_run: bool = False,
    runner_factory: Callable[..., Runner] | None = None,
    request: Mapping[str, Any] | None = None,
    destination_remote: str | None = None,
) -> TransferReport:
    """Copy ``src_key`` (file, directory or prefix) to ``dst_key`` between stores already
    open (the caller closes them), with a checksum manifest. ``filters`` narrows what is
    taken; ``dry_run`` plans and reports what would be copied, transferring nothing and
    writing no manifest or journal entry; ``request`` is what the journal keeps to
    resume the job (``run_job``); ``destination_remote`` is the destination as named
    through a configured remote (``name:bucket/path``), kept in the manifest header
    beside its URL so ``verify`` opens it the same way."""
    plan = plan_copy(src_store, src_key, dst_store, dst_key)
    return run_job(
        "copy",
        src_store,
        dst_store,
        plan.src_root,
        plan.dst_root,
        _filtered(plan.jobs, filters),
        options,
        listener=listener,
        sleep=sleep,
        dry_run=dry_run,
        runner_factory=runner_factory,
        request=request,
        destination_remote=destination_remote,
    )


def _filtered(jobs: Iterable[FileJob], filters: FileFilter | None) -> Iterable[FileJob]:
    """The jobs ``filters`` takes: files by path, size and age; directories by path.
    An entry the source could not serve (``problem``) is taken, to fail by name, unless
    the rules leave it out whatever it holds: a directory that can't be listed unless
    every path below it is excluded (``FileFilter.dir_excluded``: it may hold files
    the filter takes, and a sync must not delete their copies as if the source lacked
    them), a file by its path alone (its size and age are not known)."""
    if filters is None or not filters.active:
        return jobs

    def taken(job: FileJob) -> bool:
        if job.problem is not None and job.info.problem is not None:
            if job.kind == "dir":
                return not filters.dir_excluded(job.rel)
            return filters.path_allowed(job.rel)
        if job.kind == "dir":
            return filters.path_allowed(job.rel)
        return filters.allows(job.rel, job.info)

    def relinked(jobs: Iterable[FileJob]) -> Iterator[FileJob]:
        """A hard link's first name left out (``--include '*.h5'`` taking only the
        other name): the first name taken becomes the file, the others link to it,
        as ``rsync -H`` with the same filter copies the name it takes."""
        left_out: set[str] = set()  # first names not taken (bounded by the links)
        first: dict[str, str] = {}  # link_id -> the name written as the file instead
        for job in jobs:
            ok = taken(job)
            if job.kind == "file" and job.info.link_id is not None and not ok:
                left_out.add(job.rel)
            if not ok:
                continue
            if job.kind == "hardlink" and job.link_to in left_out:
                link_id = job.info.link_id
                if link_id is None or link_id not in first:
                    if link_id is not None:
                        first[link_id] = job.rel
                    job = dataclasses.replace(job, kind="file", link_to=None)
                else:
                    job = dataclasses.replace(job, link_to=first[link_id])
            yield job
        missing = filters.not_found()
        if missing:
            log.warning(
                "%d path%s given by --files-from %s not in the source, so not copied (first: %r)",
                len(missing),
                "" if len(missing) == 1 else "s",
                "is" if len(missing) == 1 else "are",
                missing[0],
            )

    return relinked(jobs)


def _recordable(jobs: Iterable[FileJob]) -> Iterator[FileJob]:
    """Jobs whose path can't be a manifest path (``manifest.path_problem``: absolute,
    empty, ``.`` or ``..`` components, NUL) fail per file whatever the destination, so
    no manifest ever lists as copied a path that would leave the tree when it is
    verified or exported (SEMANTICS.md, "Safe paths")."""
    for job in jobs:
        if job.problem is None:
            why = path_problem(job.rel)
            if why is None and job.link_to is not None:
                why = path_problem(job.link_to)
            if why is not None:
                problem = UnsafePath(f"refusing key {job.rel!r}: {why}", key=job.rel)
                job = dataclasses.replace(job, problem=problem)
        yield job


def run_job(
    operation: str,
    src_store: Store,
    dst_store: Store,
    src_root: str,
    dst_root: str,
    jobs: Iterable[FileJob],
    options: TransferOptions,
    *,
    listener: Listener | None = None,
    sleep: Callable[[float], None] = time.sleep,
    skip_sink: Callable[[Callable[[ManifestEntry], None]], None] | None = None,
    after: Callable[[TransferReport], None] | None = None,
    request: Mapping[str, Any] | None = None,
    dry_run: bool = False,
    runner_factory: Callable[..., Runner] | None = None,
    destination_remote: str | None = None,
) -> TransferReport:
    """Run planned ``jobs`` as one journaled job with one manifest.

    The same operation between the same roots with the same identity options resumes
    the newest unfinished job (``options.resume``): its manifest is appended to, files
    it finished are skipped, and partly written files continue from their parts.
    ``skip_sink`` receives the function that records a file as skipped (sync);
    ``after`` runs once every file is done, before the manifest is closed (sync's
    deletions). ``dry_run`` only walks the plan (see ``_dry_run``). ``runner_factory``
    builds the runner instead of ``Runner`` (same arguments): ``datamover.dask`` runs
    the files on a Dask cluster and reports them back here. ``destination_remote``: as
    for ``copy_between``.
    """
    obs = as_observer(listener)
    if dry_run:
        return _dry_run(
            operation,
            src_store,
            dst_store,
            src_root,
            dst_root,
            jobs,
            options,
            obs,
            skip_sink,
            after,
        )
    started = time.monotonic()
    source, destination = src_store.url(src_root), dst_store.url(dst_root)
    journal = Journal(journal_path(options.state_dir))
    lock: JobLock | None = None
    try:
        key = job_key(operation, source, destination, options.identity())
        # One run of a job at a time (journal/lock.py): taken before looking for a job
        # to resume, so two runs started together can't both start one.
        lock = JobLock(os.path.dirname(journal.path), key)
        lock.acquire()
        if options.resume_job is not None:
            previous: JobRecord | None = _named_job(
                journal, options.resume_job, key, source, destination
            )
        else:
            previous = journal.resumable(key) if options.resume else None
            if (
                previous is not None
                and previous.manifest
                and not os.path.exists(previous.manifest + ".partial")
            ):
                previous = None  # its manifest was finished: that run ended after all
        if previous is not None:
            job_id = previous.job_id
            manifest_path = options.manifest or previous.manifest or ""
        else:
            job_id = new_job_id()
            manifest_path = options.manifest or os.path.join(
                default_state_dir(), "manifests", f"{job_id}.jsonl"
            )
            journal.create_job(
                job_id,
                key,
                operation,
                source,
                destination,
                options.public(),
                # absolute: `jobs resume` may run from another directory
                os.path.abspath(manifest_path),
                request,
            )
        lock.holds(job_id)
        if dst_store is not None:
            dst_store.use_job(job_id)  # temp names a later run of this job finds again
        ctx = JobContext(journal, job_id, resumed=previous is not None)
        report = TransferReport(job_id, operation, source, destination, manifest_path)
        report.resumed = ctx.resumed
        header = make_header(
            operation=operation,
            source=source,
            destination=destination,
            algorithm=options.checksum,
            part_algorithm=options.part_checksum,
            options=options.public(),
            job_id=job_id,
            command_line=options.command_line,
            destination_remote=destination_remote,
        )
        try:
            writer = ManifestWriter(manifest_path, header, resume=ctx.resumed)
        except DatamoverError:
            if previous is None:
                # Nothing ran: the job just made is forgotten, not left "running".
                journal.delete_job(job_id)
            raise
        started_info = RunInfo(
            operation,
            job_id,
            source,
            destination,
            manifest_path,
            options.checksum,
            resumed=ctx.resumed,
            options=options.public(),
        )

        def record_skip(entry: ManifestEntry) -> None:
            why = path_problem(entry.path)
            if why is not None:  # unchanged, but not a path a manifest may vouch for
                error = f"refusing key {entry.path!r}: {why}"
                writer.add(ManifestEntry(entry.path, entry.size, STATUS_FAILED, error=error))
                report.files_failed += 1
                report.failures.append((entry.path, error))
                return
            writer.add(entry)
            report.files_skipped += 1
            obs.file_skipped(entry)

        if skip_sink is not None:
            skip_sink(record_skip)

        def on_result(result: FileResult) -> None:
            writer.add(_entry(result, options.checksum))
            report.retries += result.retries
            if result.error is None:
                report.files_ok += 1
                report.bytes += result.size
                if result.verified == VERIFIED_NONE:
                    report.files_unverified += 1
            else:
                report.files_failed += 1
                report.failures.append((result.job.rel, str(result.error)))

        runner = (runner_factory or Runner)(
            src_store,
            dst_store,
            options,
            on_result,
            listener=obs,
            sleep=sleep,
            job=ctx,
            roots=(src_root, dst_root),
        )
        aborted: DatamoverError | None = None
        interrupted: BaseException | None = None
        if dst_store is not None:
            journal.set_barrier(dst_store.sync)
        try:
            # In the try: a stop while it is heard (a signal, a closed stdout under
            # --json) leaves the job aborted and resumable, as any other stop.
            obs.run_started(started_info)
            runner.run(planned(ctx.pending(_recordable(jobs)), obs))
            if after is not None:
                after(report)
                for path in report.deleted:
                    writer.add(ManifestEntry(path=path, size=0, status=STATUS_DELETED))
                    obs.file_deleted(path)
            if previous is not None and report.files_failed == 0 and dst_store is not None:
                journal.flush()
                abort_unjournaled(  # uploads killed runs opened but never journaled
                    dst_store,
                    dst_root,
                    previous.created,
                    lambda rel: journal.lookup(job_id, rel) is not None,
                )
            if dst_store is not None:
                dst_store.sync()  # before the manifest is closed and the job is done
        except DatamoverError as e:
            aborted = e
            raise
        except BaseException as e:
            interrupted = e
            raise
        finally:
            report.seconds = time.monotonic() - started
            report.bytes_moved = runner.bytes_moved
            report.files_resumed = ctx.skipped_done
            report.bytes_resumed = ctx.skipped_bytes + ctx.part_bytes
            if ctx.resumed:
                # Counts over the whole job, earlier attempts included (last entry wins).
                entries = writer.entries_so_far()
                ok = [e for e in entries if e.status == STATUS_OK]
                counts = (
                    len(ok),
                    sum(1 for e in entries if e.status == STATUS_FAILED),
                    sum(1 for e in entries if e.status == STATUS_SKIPPED),
                    sum(e.size for e in ok),
                )
                unverified = sum(1 for e in ok if e.verified == VERIFIED_NONE)
            else:  # a fresh job: this run's counters are the job's
                counts = (report.files_ok, report.files_failed, report.files_skipped, report.bytes)
                unverified = report.files_unverified
            summary: dict[str, object] = {
                "files_ok": counts[0],
                "files_failed": counts[1],
                "files_skipped": counts[2],
                "bytes": counts[3],
                "bytes_moved": runner.bytes_moved,
                "seconds": round(report.seconds, 3),
                "peak_buffer_bytes": runner.budget.peak,
            }
            if unverified:
                summary["files_unverified"] = unverified
            if aborted is not None or interrupted is not None:
                # Interrupted (a signal): suspended like an abort, so the job resumes.
                summary["aborted"] = str(aborted) if aborted is not None else "interrupted"
                writer.suspend(summary)
                journal.finish_job(job_id, "aborted", counts[0], counts[1], counts[3])
            else:
                writer.close(summary)
                journal.finish_job(
                    job_id,
                    "done" if report.files_failed == 0 else "incomplete",
                    counts[0],
                    report.files_failed,
                    counts[3],
                )
            obs.run_finished(report, aborted or interrupted)
        return report
    finally:
        journal.close()
        if lock is not None:
            lock.release()


def _named_job(journal: Journal, job_id: str, key: str, source: str, destination: str) -> JobRecord:
    """The unfinished job ``job_id`` (``jobs resume``), checked to be the job this run
    is (same identity) and to have its unfinished manifest still in place; otherwise
    ``UsageError`` saying why: the named job is continued or nothing runs."""
    record = journal.job(job_id)
    if record is None:
        raise UsageError(f"no job {job_id!r} in {journal.path}; see `datamover jobs list`")
    if record.state not in ("running", "aborted", "incomplete"):
        raise UsageError(f"job {record.job_id} already finished; nothing to resume")
    if record.job_key != key:
        now = (
            f"{source} -> {destination}"
            if (source, destination) != (record.source, record.destination)
            else "the same with other options"
        )
        raise UsageError(
            f"job {record.job_id} is {record.source} -> {record.destination}, but resumed "
            f"now it would be {now}; run the command you mean again instead"
        )
    if record.manifest:
        partial = record.manifest + ".partial"
        if not os.path.exists(partial):
            if os.path.lexists(record.manifest):
                raise UsageError(
                    f"job {record.job_id}'s manifest {record.manifest} is already finished "
                    f"(there is no {partial}), so there is nothing to resume; `datamover "
                    "verify` it, or run the command again with --new-job and another "
                    "--manifest to copy afresh"
                )
            raise UsageError(
                f"job {record.job_id}'s unfinished manifest {partial} is missing; put it "
                "back to resume the job, or run the command again with --new-job to start "
                "afresh"
            )
    return record


def _dry_run(
    operation: str,
    src_store: Store,
    dst_store: Store,
    src_root: str,
    dst_root: str,
    jobs: Iterable[FileJob],
    options: TransferOptions,
    obs: Observer,
    skip_sink: Callable[[Callable[[ManifestEntry], None]], None] | None,
    after: Callable[[TransferReport], None] | None,
) -> TransferReport:
    """Walk the plan as a real run would (sync still compares), telling ``obs`` what
    would be copied and deleted. Nothing is read beyond what planning reads, nothing is
    written: no transfer, no manifest, no journal entry."""
    started = time.monotonic()
    source, destination = src_store.url(src_root), dst_store.url(dst_root)
    report = TransferReport("dry-run", operation, source, destination, None, dry_run=True)
    obs.run_started(
        RunInfo(
            operation,
            report.job_id,
            source,
            destination,
            None,
            options.checksum,
            dry_run=True,
            options=options.public(),
        )
    )

    def record_skip(entry: ManifestEntry) -> None:
        report.files_skipped += 1
        obs.file_skipped(entry)

    if skip_sink is not None:
        skip_sink(record_skip)
    error: BaseException | None = None
    try:
        for job in planned(jobs, obs):
            if job.problem is not None:
                # It fails without a read in a real run (a directory that can't be
                # listed, a key that can't be written), and so stops sync's deletions.
                report.files_failed += 1
                report.failures.append((job.rel, str(job.problem)))
                continue
            report.files_ok += 1
            report.bytes += job.info.size
            obs.would_copy(job)
        if after is not None:
            after(report)
            for path in report.deleted:
                obs.would_delete(path)
    except BaseException as e:
        error = e
        raise
    finally:
        report.seconds = time.monotonic() - started
        obs.run_finished(report, error)
    return report


def sync_between(
    src_store: Store,
    src_key: str,
    dst_store: Store,
    dst_key: str,
    options: TransferOptions,
    *,
    checksum: bool = False,
    delete: bool = False,
    max_delete: int | None = None,
    listener: Listener | None = None,
    sleep: Callable[[float], None] = time.sleep,
    filters: FileFilter | None = None,
    dry_run: bool = False,
    runner_factory: Callable[..., Runner] | None = None,
    request: Mapping[str, Any] | None = None,
    destination_remote: str | None = None,
) -> TransferReport:
    """Make ``dst_key`` hold what ``src_key`` holds, copying only files that differ
    (``engine.sync``). With ``delete``, destination files absent from the source are
    removed after every copy succeeded; more than ``max_delete`` of them aborts before
    anything is deleted. ``filters`` narrows both what is copied and what may be
    deleted; the rest as for ``copy_between``."""
    plan = plan_copy(src_store, src_key, dst_store, dst_key, deleting=delete)
    src_root, dst_root = plan.src_root, plan.dst_root
    planner = SyncPlanner(
        src_store,
        src_root,
        dst_store,
        dst_root,
        algorithm=options.checksum,
        checksum=checksum,
        delete=delete and not plan.single_file,
        threads=min(options.transfers, 16),
    )

    def set_sink(sink: Callable[[ManifestEntry], None]) -> None:
        if filters is None or not filters.active:
            planner.record_skip = sink
            return

        def filtered_sink(entry: ManifestEntry) -> None:
            mtime = float(entry.mtime) if entry.mtime else None
            if filters.allows(entry.path, ObjectInfo(entry.path, entry.size, mtime=mtime)):
                sink(entry)

        planner.record_skip = filtered_sink

    def deletable(key: str) -> bool:
        """A destination-only file the filter excludes is left alone."""
        if filters is None or not filters.active:
            return True
        rel = key[len(dst_root) :]
        if not filters.path_allowed(rel):
            return False
        if filters.by_path_only:
            return True
        try:
            return filters.allows(rel, dst_store.stat(key))
        except NotFound:
            return False

    def deletions(report: TransferReport) -> None:
        doomed = [key for key in planner.plan.to_delete if deletable(key)]
        if not doomed:
            return
        if planner.plan.out_of_order:
            raise UsageError(
                "a listing came back out of key order, so files to delete can't be "
                "trusted; nothing was deleted (run without --delete, and report this)"
            )
        if report.files_failed:
            log.warning(
                "not deleting %d files: %d copies %s",
                len(doomed),
                report.files_failed,
                "would fail" if dry_run else "failed",
            )
            return
        if max_delete is not None and len(doomed) > max_delete:
            # Deletions come after the copies (as in rclone), so those are made (and
            # in the manifest, left unfinished so a rerun resumes the job): say so.
            copied = report.files_ok
            if copied:
                files = "file" if copied == 1 else "files"
                were = "would be" if dry_run else "was" if copied == 1 else "were"
                made = f"the {copied} new and changed {files} {were} copied; "
            else:
                made = ""
            raise UsageError(
                f"sync would delete {len(doomed)} files, more than --max-delete "
                f"{max_delete}; nothing was deleted ({made}raise --max-delete to allow "
                "the deletions)"
            )
        # Deleted names are reported and recorded as UTF-8 (``as_recorded``): a
        # destination file whose name is not is deleted too, but can't be recorded
        # under the name it had.
        if dry_run:
            report.deleted.extend(as_recorded(key[len(dst_root) :]) for key in doomed)
            return
        for key in doomed:
            dst_store.delete(key)
            report.deleted.append(as_recorded(key[len(dst_root) :]))
        if dst_store.features.real_dirs:
            report.deleted.extend(as_recorded(k[len(dst_root) :]) for k in emptied_dirs(doomed))

    def emptied_dirs(doomed: list[str]) -> Iterator[str]:
        """The destination directories the deletions left empty that the source does
        not have, removed deepest first (as ``rsync --delete`` removes a whole extra
        tree in one run; a directory listing shows only the leaves of one)."""
        parents = set()
        for key in doomed:
            parent = key.rstrip("/").rpartition("/")[0]
            while parent and len(parent) >= len(dst_root) and parent + "/" not in parents:
                parents.add(parent + "/")
                parent = parent.rpartition("/")[0]
        for directory in sorted(parents, key=lambda k: (-k.count("/"), k)):
            try:
                stat_url(src_store, src_root + directory[len(dst_root) :])
                continue  # the source has it
            except NotFound:
                pass
            try:
                dst_store.delete(directory)  # only when empty: rmdir
            except DatamoverError:
                continue  # not empty (an excluded file, a failed delete), or unreadable
            yield directory

    jobs = plan.jobs if plan.single_file else planner.jobs()
    return run_job(
        "sync",
        src_store,
        dst_store,
        src_root,
        dst_root,
        _filtered(jobs, filters),
        options,
        listener=listener,
        sleep=sleep,
        skip_sink=set_sink,
        after=deletions,
        dry_run=dry_run,
        runner_factory=runner_factory,
        request=request,
        destination_remote=destination_remote,
    )
