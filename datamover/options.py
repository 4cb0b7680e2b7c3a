"""Option objects, built once at the edge (CLI or library call), validated, frozen.

Workers receive plain values taken from these, never the objects themselves.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from datamover.checksums import ALGORITHMS, DEFAULT_ALGORITHM
from datamover.errors import UsageError
from datamover.redact import scrub_argv

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)(b?)\s*$", re.I)
_UNIT_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(text: str | int) -> int:
    """``8MiB``, ``64M``, ``1G``, ``512k``, ``1048576`` -> bytes.

    Units are binary (``M`` = ``MiB`` = 2**20), as in rclone and GNU coreutils' ``-B``
    suffixes: storage people mean parts and buffers, which are powers of two.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    if not isinstance(text, str):
        raise UsageError(
            f"a size is a whole number of bytes or a str like '64MiB', not {type(text).__name__}"
        )
    m = _SIZE_RE.match(text)
    if not m and _SIZE_RE.match(text.strip().removeprefix("-")):
        raise UsageError(f"size {text!r} is negative; sizes are 0 or more, like 8MiB or 1G")
    if not m:
        raise UsageError(f"cannot read size {text!r}; write it like 8MiB, 64M, 1G or 4096")
    number, unit = float(m.group(1)), m.group(2).lower()
    value = int(number * (1024 ** _UNIT_POWER[unit]))
    return value


def path_text(value: object, what: str) -> str:
    """A path or URL argument as text: a ``str`` as given, an ``os.PathLike`` (a
    ``pathlib.Path``) as ``os.fspath`` spells it. Anything else (None, a number, a
    list, bytes) is a ``UsageError`` naming ``what`` and the type, instead of a
    ``TypeError`` from deep inside a run."""
    text = os.fspath(value) if isinstance(value, os.PathLike) else value
    if isinstance(text, str):
        return text
    raise UsageError(
        f"{what} must be a path or URL, as a str or a pathlib.Path, not {type(value).__name__}"
    )


def check_flags(obj: object, *names: str) -> None:
    """Each of ``names`` on ``obj`` is a bool: ``delete="no"`` or ``resume="false"``
    (a value read from a workflow's config file) is truthy, and would do the opposite
    of what was meant."""
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, bool):
            raise UsageError(f"{name}={value!r}: give True or False")


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


DURABILITY = ("job", "file", "none")
#: ``--s3-checksum``: what S3 uploads carry so the store checks the bytes
#: (``datamover.stores.s3.checks`` says what each means).
S3_CHECKSUMS = ("auto", "crc64nvme", "crc32c", "md5", "off")
#: ``--unverified``: what becomes of a write no check of the store covered
#: (``datamover.engine.proof`` says what each does).
UNVERIFIED = ("readback", "fail", "accept")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Engine-level retries of one part or one small-file request (see errors.py).

    ``attempts`` counts the first try. Delay before attempt n+1 is uniform in
    ``[0, min(cap, base * 2**(n-1))]`` (full jitter), raised to the server's
    Retry-After hint when one was given.
    """

    attempts: int = 5
    base: float = 0.25
    cap: float = 20.0
    file_attempts: int = 3

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.file_attempts < 1:
            raise UsageError("retries: attempts must be at least 1")
        if self.base < 0 or self.cap < 0:
            raise UsageError("retries: delays must not be negative")


@dataclass(frozen=True, slots=True)
class TransferOptions:
    """What a copy or verify run may do.

    Memory: part buffers in flight never exceed ``memory_budget`` bytes (each queued
    small file is charged at least 64 KiB, so the queue is bounded too). Typical use is
    ``min(memory_budget, transfers x part_size)``; parts that finished early and wait
    for earlier parts to be hashed in stream order stay within the same budget.
    Default: 256 MiB, i.e. 8 transfers x 8 MiB parts with room for 4x reordering.

    ``part_size=None`` picks per file: 8 MiB, raised until the file fits the
    destination's part-count limit (S3: 10,000 parts), within its min/max part size.
    ``multipart_threshold``: files up to this size go as one request (default 8 MiB),
    larger ones by parts; 0 sends every non-empty file by parts. A symlink always goes
    as one request (its text), whatever its size.

    ``bwlimit``: bytes per second for the whole run, shared by all threads (None:
    unlimited).

    ``state_dir``: where the job journal lives (default ``$XDG_STATE_HOME/datamover``).
    ``resume``: re-running the same copy resumes its unfinished job (finished files are
    skipped, partly uploaded files continue from their parts); False starts afresh.
    ``resume_job`` (``jobs resume``): the id of the journaled job to continue; the run
    continues exactly that job or raises ``UsageError``, it never starts another one.

    ``preserve``: carry POSIX mode, owner and mtime (and back onto POSIX files; owners
    only where ``chown`` can work: as root, or to the caller's own ids);
    ``preserve_setid``: keep set-user-ID and set-group-ID bits when restoring a mode
    onto POSIX files (default: dropped, since a bucket's metadata is whatever its
    writer said); ``copy_links``: follow symlinks in the source instead of copying them
    as links (never in the destination); ``links`` (object stores): rclone's
    ``--links`` convention: a symlink ``NAME`` is written as the object
    ``NAME.rclonelink`` holding its target, and such objects are read back as symlinks
    (off: they are ordinary objects; datamover's own link objects are links either
    way; docs/METADATA.md); ``xattrs``: carry ``user.*`` extended
    attributes as metadata.

    ``durability`` (POSIX destinations): ``"job"`` (default) commits each file by
    rename without an fsync of its own, and makes them durable in groups: the journal
    records a file as done only after a ``syncfs`` that began after its rename, and the
    run syncs once more before its manifest is closed; ``"file"`` fsyncs every file and
    its directory before reporting it (slowest: a disk flush per file); ``"none"``
    leaves write-back to the kernel, as ``cp``, ``rsync`` and ``rclone`` do. Object
    stores are durable when they answer; this changes nothing there.

    ``s3_checksum`` (S3 stores): the check every PutObject and UploadPart carries:
    ``auto`` (learn what the store checks, once per process), ``crc64nvme``,
    ``crc32c``, ``md5`` (Content-MD5) or ``off`` (none, for stores that refuse the
    headers). None: the named remote's ``s3_checksum``, else ``auto``.

    ``metadata_style`` (object-store destinations): the POSIX-metadata conventions
    written, comma-separated: ``s3fs``, ``rclone``, ``gcloud``, ``gcsfuse``, ``azcopy``,
    ``amlfs``, ``fsx-lustre`` (docs/METADATA.md). None: the destination store's default
    (s3fs keys on S3; AzCopy's and rclone's on Azure; gcloud's, gcsfuse's and rclone's
    on GCS). Every convention is read whatever this says.

    ``unverified``: a file whose write no check of the store covered (the store
    enforced no checksum over its bytes: moto, a store that ignores the checksum
    headers) is ``readback`` (default: read back from the store, streamed through one
    buffer per transfer thread taken from ``memory_budget``, and its sha256 compared
    with the one computed while sending; recorded ``verified: readback``), ``fail``
    (the file fails, named, and its object is removed) or ``accept`` (recorded ok
    with ``verified: none``, counted in the run's summary).

    ``server_side_copy``: when source and destination are one service (same S3
    endpoint and credentials, same GCS client, same Azure account), the provider copies
    and no bytes pass through this machine; the manifest digest is then the one stored
    on the source object (read and hashed once when it is absent).
    """

    checksum: str = DEFAULT_ALGORITHM
    part_checksum: str = "crc32c"
    part_size: int | None = None
    multipart_threshold: int = 8 * MiB
    transfers: int = 8
    memory_budget: int = 256 * MiB
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    preserve: bool = True
    preserve_setid: bool = False
    copy_links: bool = False
    links: bool = False
    xattrs: bool = False
    server_side_copy: bool = True
    durability: str = "job"
    manifest: str | None = None
    state_dir: str | None = None
    resume: bool = True
    resume_job: str | None = None
    bwlimit: int | None = None
    s3_checksum: str | None = None
    metadata_style: str | None = None
    unverified: str = "readback"
    command_line: tuple[str, ...] = ()
    #: Worker processes for small files (``engine.procs``): None picks
    #: ``min(idle cores, 4)`` once a job has 1,000 small files; 1 is one process.
    processes: int | None = None

    def __post_init__(self) -> None:
        for name in ("manifest", "state_dir"):
            value = getattr(self, name)
            if value is not None:  # a pathlib.Path is welcome; kept as its str
                object.__setattr__(self, name, path_text(value, name))
        check_flags(
            self,
            "preserve",
            "preserve_setid",
            "copy_links",
            "links",
            "xattrs",
            "server_side_copy",
            "resume",
        )
        if self.command_line:
            # Recorded in manifests and reports: never with a secret in it.
            object.__setattr__(self, "command_line", tuple(scrub_argv(self.command_line)))
        if self.checksum not in ALGORITHMS:
            raise UsageError(
                f"unknown checksum {self.checksum!r}; choose one of {', '.join(ALGORITHMS)}"
            )
        if self.part_checksum not in ALGORITHMS:
            raise UsageError(f"unknown part checksum {self.part_checksum!r}")
        if isinstance(self.transfers, bool) or not isinstance(self.transfers, int):
            raise UsageError(f"transfers={self.transfers!r}: give a whole number, 1 to 256")
        if not 1 <= self.transfers <= 256:
            raise UsageError("--transfers must be between 1 and 256")
        if self.part_size is not None and not 64 * KiB <= self.part_size <= 5 * GiB:
            raise UsageError("--part-size must be between 64KiB and 5GiB")
        if self.memory_budget < 1 * MiB:
            raise UsageError("--memory-budget must be at least 1MiB")
        if self.bwlimit is not None and self.bwlimit < 1024:
            raise UsageError("--bwlimit must be at least 1KiB (per second)")
        if self.durability not in DURABILITY:
            raise UsageError(
                f"unknown durability {self.durability!r}; choose one of {', '.join(DURABILITY)}"
            )
        if self.multipart_threshold < 0:
            raise UsageError("--multipart-threshold must not be negative")
        if self.s3_checksum is not None and self.s3_checksum not in S3_CHECKSUMS:
            raise UsageError(
                f"unknown --s3-checksum {self.s3_checksum!r}; choose one of "
                f"{', '.join(S3_CHECKSUMS)}"
            )

        if self.processes is not None and not 1 <= self.processes <= 64:
            raise UsageError("--processes must be between 1 and 64")
        if self.unverified not in UNVERIFIED:
            raise UsageError(
                f"unknown --unverified {self.unverified!r}; choose one of {', '.join(UNVERIFIED)}"
            )

    def with_(self, **changes: Any) -> TransferOptions:
        return replace(self, **changes)

    def identity(self) -> dict[str, Any]:
        """The options that change what lands at the destination: a re-run with the
        same source, destination and these resumes the unfinished job."""
        return {
            "checksum": self.checksum,
            "part_checksum": self.part_checksum,
            "part_size": self.part_size,
            "preserve": self.preserve,
            "copy_links": self.copy_links,
            "xattrs": self.xattrs,
            # Only when set: jobs journaled before the option existed still resume.
            **({"preserve_setid": True} if self.preserve_setid else {}),
            **({"links": True} if self.links else {}),
            **({"metadata_style": self.metadata_style} if self.metadata_style else {}),
        }

    def to_record(self) -> dict[str, Any]:
        """Every field, JSON-able, for the journal: ``from_record`` rebuilds these
        options exactly (``jobs resume``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["retry"] = asdict(self.retry)
        out["command_line"] = list(self.command_line)
        return out

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TransferOptions:
        """Options from ``to_record`` (fields a newer version added are ignored, ones
        an older version lacked keep their defaults)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in known}
        if isinstance(values.get("retry"), Mapping):
            values["retry"] = RetryPolicy(**values["retry"])
        if "command_line" in values:
            values["command_line"] = tuple(values["command_line"])
        return cls(**values)

    def public(self) -> dict[str, Any]:
        """The options worth recording in a manifest header (no secrets live here)."""
        return {
            "checksum": self.checksum,
            "part_checksum": self.part_checksum,
            "part_size": self.part_size,
            "multipart_threshold": self.multipart_threshold,
            "transfers": self.transfers,
            "memory_budget": self.memory_budget,
            "preserve": self.preserve,
            "preserve_setid": self.preserve_setid,
            "copy_links": self.copy_links,
            **({"links": True} if self.links else {}),
            "xattrs": self.xattrs,
            "server_side_copy": self.server_side_copy,
            "durability": self.durability,
            "s3_checksum": self.s3_checksum or "auto",
            **({"metadata_style": self.metadata_style} if self.metadata_style else {}),
            "unverified": self.unverified,
            **({"processes": self.processes} if self.processes is not None else {}),
        }


@dataclass(frozen=True, slots=True)
class DaskOptions:
    """How a run is cut into Dask tasks.

    ``shard_files`` / ``shard_bytes``: a shard (one task) is closed at this many files
    or bytes, whichever comes first. ``split_threshold``: files larger than this are
    written by parts from several workers (default ``4 x part size x workers``).
    ``in_flight``: tasks submitted and not yet returned (default 2 per worker thread);
    the client holds at most this many shards' jobs and results. ``retries``: extra
    attempts Dask makes for a task that raised (a lost worker's tasks are re-run by the
    scheduler regardless, up to ``distributed.scheduler.allowed-failures``).
    """

    shard_files: int = 500
    shard_bytes: int = 512 * MiB
    split_threshold: int | None = None
    in_flight: int | None = None
    retries: int = 2

    def __post_init__(self) -> None:
        if self.shard_files < 1:
            raise UsageError("--shard-files must be at least 1")
        if self.shard_bytes < 1:
            raise UsageError("--shard-size must be at least 1 byte")
        if self.split_threshold is not None and self.split_threshold < 1:
            raise UsageError("the split threshold must be at least 1 byte")
        if self.in_flight is not None and self.in_flight < 1:
            raise UsageError("in_flight must be at least 1")
        if self.retries < 0:
            raise UsageError("retries must not be negative")

    @classmethod
    def from_cli(
        cls, shard_files: int | None = None, shard_size: int | str | None = None
    ) -> DaskOptions:
        """From the CLI's ``--shard-files`` / ``--shard-size``."""
        base = cls()
        return cls(
            shard_files=shard_files or base.shard_files,
            shard_bytes=parse_size(shard_size) if shard_size is not None else base.shard_bytes,
        )


#: The protocols a Dask scheduler address may name (``distributed.comm``).
_DASK_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")


def parse_cluster(text: str) -> tuple[str, int | None]:
    """``local``, ``local:N`` -> ("local", N or None); anything else is a scheduler
    address (``tcp://host:8786``, ``host:8786``) -> ("address", None)."""
    if text == "local" or text.startswith("local:"):
        _, _, n = text.partition(":")
        if n and (not n.isdigit() or int(n) < 1):
            raise UsageError(f"--dask {text}: write local:N with N worker processes, N >= 1")
        return "local", int(n) if n else None
    if not text:
        raise UsageError("--dask needs a scheduler address (tcp://host:8786) or local:N")
    scheme, sep, rest = text.rpartition("://")
    if sep and scheme not in _DASK_SCHEMES:
        raise UsageError(
            f"--dask {text}: unknown scheduler protocol {scheme}://; use one of "
            + ", ".join(f"{s}://" for s in _DASK_SCHEMES)
            + " (tcp://host:8786), or local:N"
        )
    if scheme != "inproc":
        host, colon, port = rest.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(
                f"--dask {text}: a scheduler address is HOST:PORT, e.g. tcp://host:8786 "
                "(or local:N for worker processes on this machine)"
            )
    return "address", None
