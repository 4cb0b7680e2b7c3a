"""The Store interface: the one small surface every backend implements.

A ``Store`` is bound to one namespace: a bucket (S3, GCS), a container (Azure), or the
root of a POSIX filesystem. Keys are ``/``-separated strings relative to it, never
starting with ``/``. The engine and the mount only ever talk to this interface; which
cloud is behind it is not their business.

Required: ``stat``, ``list``, ``read``, ``put``, ``open_writer``, ``delete``.
Optional, each with a fallback the caller uses when ``Unsupported`` is raised:
``copy_object`` (server-side copy; fallback: stream through memory) and
``readinto`` (fallback: ``read`` then copy). Optional without a fallback:
``resume_writer`` (the upload starts over) and ``list_pending_uploads`` /
``abort_pending_upload`` (``datamover cleanup`` says the store can't).

What differs between backends beyond that is declared, never asked by type: each
store fills ``Store.features`` (a ``Features``, as rclone's ``Features`` struct), and
the filesystem-shaped operations the mount needs (directory markers, metadata updates
in place, streamed writes) come from ``datamover.stores.fsops.for_store``, which uses
the store's ``fs_ops_class``. Callers branch on those, with defaults right for a plain
object store.

Contracts common to every method:

* Errors are the ``datamover.errors`` tree, mapped from SDK exceptions at this
  boundary: a missing key raises ``NotFound``; a missing bucket ``BucketNotFound``;
  bad credentials ``AuthError``; network trouble that survived the SDK's own retries
  ``TransientError``; a checksum the server or the store rejected ``IntegrityError``.
* Every method is safe to call from several threads at once.
* Metadata keys are lower-case ASCII; stores translate them to what the provider
  allows (Azure forbids ``-``) and back, so callers see the same keys everywhere.

Integrity: what proves a write, and what can prove it again later.

* **One write per object.** Every object a store writes is created by exactly one
  request of the provider's: a PutObject / Put Blob / upload, a
  CompleteMultipartUpload / Put Block List / compose, or one server-side copy. No
  store copies an object onto itself to add metadata afterwards (that left a second
  version on versioned buckets, failed under Object Lock, and rewrote every byte).
  So the metadata an object is created with is all it gets: ``put``, ``copy_object``
  and ``copy_from`` take it with the bytes; a multipart write takes it at
  ``open_writer``, and at ``commit`` only where ``Features.metadata_at_commit``
  (Azure's block list and GCS's compose carry metadata; S3's
  CompleteMultipartUpload does not). See ``ChunkWriter.commit``.
* **``verified``: which check covered the bytes of one write.** ``PartReceipt.verified``
  (from ``write_part``) and ``ObjectInfo.verified`` (from ``put``, ``commit``,
  ``copy_object``, ``copy_from``) name the check, one of ``VERIFIED_BY``, that the
  store made over the bytes it stored: it refused bytes that didn't match (S3's
  ``x-amz-checksum-*`` or ``Content-MD5`` or a signed payload SHA-256 on a store that
  checks it, Azure's transactional MD5, GCS's CRC32C), or it reported a value it
  computed from what it stored and the store compared that with the digest of the
  bytes sent (GCS, whose emulator does not refuse). A value a store merely echoes
  back never counts: stores that don't check (moto, Ceph RGW 16 for CRCs) are found
  out by probing, not trusted. ``None`` means the store accepted the bytes and
  nothing it enforced covered them: the caller must read them back, or not call the
  write proven. A commit is verified only when every part was, by the same check,
  and the completion can only assemble those parts (S3 part ETags, Azure block ids
  carrying each block's MD5, GCS generations pinned and the composite CRC32C
  compared with the parts' folded CRC32C); with an S3 full-object checksum the
  commit's check is the store's own comparison of the whole object's CRC.
  ``stat``/``list`` results have ``verified = None``: it describes a write.
* **``provider_checksums``: what the provider holds and will report again.** A subset
  of ``ObjectInfo.checksums``: whole-object digests the provider computed (or
  checked on arrival) over the bytes it stores, so comparing one with a digest of
  the source proves the stored bytes without reading them. Names are algorithm
  names (``crc64nvme``, ``crc32c``, ``md5``); values lower-case hex of the whole
  object's digest. Never a composite: an S3 multipart ETag ``…-N`` or a
  ``COMPOSITE`` checksum ``…-N`` is a digest of part digests, not of the object, and
  is left out; a client-settable value (Azure's Content-MD5 read back from a blob's
  properties) is left out too. ``checksums`` is the union of these and the
  ``datamover-<alg>`` labels in metadata; where both name one algorithm, the
  provider's value is the one given (a label can be wrong, the provider's
  computation of what it holds cannot).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from datamover.checksums import ALGORITHMS, HEX_DIGITS, PartDigests, is_hex_digest
from datamover.errors import SourceChanged, StoreError, UnsafePath, Unsupported

if TYPE_CHECKING:
    from datamover.stores.fsops import FsOps

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

Buffer = bytes | bytearray | memoryview
#: ``ObjectInfo.verified`` of a write the store read back before it became visible
#: (``Store.put_read_back``): the manifest's ``verified: readback``.
VERIFIED_READBACK = "readback"

#: The most a ``read`` without a length, or a ``read_object`` without the listed
#: ``info``, returns in one piece; a larger object raises ``StoreError`` (read it in
#: ranges: ``readinto``). It bounds what a server's word can make a store allocate
#: when the caller set no bound of its own (the run's default memory budget).
MAX_WHOLE_READ = 256 * MiB


def replaced(url: str, key: str) -> SourceChanged:
    """The error of a pinned read (``Store.readinto``'s ``expect``) of an object
    replaced since that version was seen."""
    return SourceChanged(
        f"{url}: replaced since it was looked at; read it again for the new version",
        key=key,
    )


def version_of(info: ObjectInfo) -> ObjectInfo:
    """What names ``info``'s version, without its metadata (a light ``expect`` to
    send along with work)."""
    return ObjectInfo(key=info.key, size=info.size, etag=info.etag, version=info.version)


def versions_differ(expected: str | None, answered: str | None) -> bool:
    """Whether an answer names another version than the one asked for (ETags are
    compared without their quotes); False when either is unknown."""
    if not expected or not answered:
        return False
    answered = answered.strip().removeprefix("W/")  # weakened by a compressing proxy
    return answered.strip('"') != expected.strip('"')


def whole_read_limit(listed: ObjectInfo | None, single_put: int) -> int:
    """The most a whole-object read may take: the size a listing gave (``listed``:
    what the caller budgeted for), else ``MAX_WHOLE_READ``, and never more than one
    put can write again (``single_put``, the store's ``limits.max_single_put``)."""
    return min(single_put, MAX_WHOLE_READ if listed is None else listed.size)


def check_whole_read(
    url: str, key: str, size: int, listed: ObjectInfo | None, single_put: int
) -> None:
    """Refuse to read ``size`` bytes of ``key`` (at ``url``) whole when that is over
    ``whole_read_limit``: more than ``listed`` said is ``SourceChanged`` (the object
    grew since it was listed), more than the other bounds ``StoreError``."""
    if listed is not None and size > listed.size:
        raise SourceChanged(
            f"{url}: {size} bytes now, {listed.size} when listed; it changed before it was read",
            key=key,
        )
    most = whole_read_limit(listed, single_put)
    if size > most:
        raise StoreError(
            f"{url}: {size} bytes is over the {most}-byte limit of a whole-object read; "
            "read it in ranges",
            key=key,
        )


#: What ``PartReceipt.verified`` and ``ObjectInfo.verified`` can name: ``crc64nvme``,
#: ``crc32c``, ``md5`` (a checksum of the request body the store compared),
#: ``sha256-payload`` (S3 SigV4 with the body's SHA-256 signed, on a store that
#: checks it).
VERIFIED_BY = ("crc64nvme", "crc32c", "md5", "sha256-payload")

#: User-metadata key holding a whole-object digest written by datamover, per algorithm.
DIGEST_KEY_PREFIX = "datamover-"
_DIGEST_CUT = len(DIGEST_KEY_PREFIX)


def digest_metadata_key(algorithm: str) -> str:
    return f"{DIGEST_KEY_PREFIX}{algorithm}"


#: Metadata naming the key of the object this one is a hard link to (POSIX trees, and
#: hard links made through the mount).
HARDLINK_KEY = "datamover-hardlink"

#: The object inside a directory that holds the directory's POSIX metadata (mode,
#: owner, times) where a ``dir/`` marker can't: on stores that drop the metadata of
#: markers (``Features.marker_metadata``; SeaweedFS), and at the root of a bucket,
#: which has no marker. Zero bytes; the metadata is its user metadata. Written and
#: read by the mount (``datamover.stores.fsops``); every datamover listing hides it
#: (``is_dir_meta``), and a copy does not carry it (docs/SEMANTICS.md, "Metadata").
DIR_META_NAME = ".datamover-dirmeta"


def is_dir_meta(key: str) -> bool:
    """Whether ``key`` is a directory's ``DIR_META_NAME`` object (bookkeeping, not data)."""
    return key == DIR_META_NAME or key.endswith("/" + DIR_META_NAME)


def dirs_of_meta(entries: Iterable[ObjectInfo], root: str) -> Iterator[ObjectInfo]:
    """A listing under ``root`` without its ``DIR_META_NAME`` objects, each standing
    instead for its directory (an ``is_dir`` entry ``dir/`` with the object's mtime
    and metadata, the directory's) when the listing showed no marker for it: where
    markers drop metadata the mount makes a directory as that object alone
    (``FsOps.make_dir``), and an empty one would otherwise be lost by a copy. ``root``
    itself is never one. The markers shown are those of the current key's ancestors
    (a stack as deep as the path), which a key-ordered listing shows first."""
    shown: list[str] = []
    for info in entries:
        key = info.key
        while shown and not key.startswith(shown[-1]):
            shown.pop()
        if is_dir_meta(key):
            d = key[: len(key) - len(DIR_META_NAME)]
            if d and d != root and d.startswith(root) and d not in shown:
                shown.append(d)
                yield ObjectInfo(
                    key=d, size=0, mtime=info.mtime, metadata=dict(info.metadata), is_dir=True
                )
            continue
        if info.is_dir and key.endswith("/"):
            shown.append(key)
        yield info


def digests_from_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """``{algorithm: hex}`` from ``datamover-<alg>`` metadata; other ``datamover-*``
    keys (``datamover-hardlink``) are not digests."""
    out = {}
    for key, value in metadata.items():
        if key[:_DIGEST_CUT] == DIGEST_KEY_PREFIX and value:
            alg = key[_DIGEST_CUT:]
            if alg in ALGORITHMS:
                out[alg] = value.lower()
    return out


_LOWER_HEX_RE = re.compile(r"[0-9a-f]+")


def _kept_checksums(checksums: Mapping[str, str]) -> dict[str, str] | None:
    """``checksums`` without the values of known algorithms that are not hex of their
    length, lower-cased (``ObjectInfo``); None when that changes nothing, which a
    first pass of comparisons finds for the usual, well-formed checksums without
    building a dict (this runs for every object listed or fetched)."""
    for alg, value in checksums.items():
        want = HEX_DIGITS.get(alg)
        if type(value) is not str or (
            value.lower() != value
            if want is None
            else len(value) != want or _LOWER_HEX_RE.fullmatch(value) is None
        ):
            break
    else:
        return None
    kept = {
        alg: value.lower()
        for alg, value in checksums.items()
        if alg not in HEX_DIGITS or is_hex_digest(str(value).lower(), alg)
    }
    return kept if kept != checksums else None


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store knows about one object (or, with ``is_dir``, one prefix).

    ``checksums`` maps an algorithm name to a hex digest of the *whole* object, from
    datamover's own metadata or from the provider; ``provider_checksums`` is the part
    of it the provider computed over the bytes it holds (S3 full-object CRCs and a
    single-part ETag md5, GCS md5/crc32c): the module docstring gives the rules.
    ``verified`` is set on what a write returns: the check (``VERIFIED_BY``) that
    covered the bytes written, None when none did. ``mtime`` is seconds since the
    epoch: the POSIX mtime carried in metadata when present, else the provider's
    last-modified time. A checksum of a known algorithm that is not hex of its length
    is dropped (lower-cased otherwise): metadata and provider headers are anybody's to
    write, and a digest kept here may end up in a manifest.
    """

    key: str
    size: int
    mtime: float | None = None
    etag: str | None = None
    version: str | None = None
    checksums: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)
    is_dir: bool = False
    mode: int | None = None
    #: ``dev:inode`` of a POSIX file with more than one hard link, else None.
    link_id: str | None = None
    #: Why this entry, found by a listing, can't be served (a symlink loop, a path
    #: longer than PATH_MAX, a directory that can't be read): callers report it by
    #: name and go on. None for every entry that can be read.
    problem: str | None = None
    provider_checksums: Mapping[str, str] = field(default_factory=dict)
    verified: str | None = None

    def __post_init__(self) -> None:
        checksums, provider = self.checksums, self.provider_checksums
        kept = None
        if checksums:
            kept = _kept_checksums(checksums)
            if kept is not None:
                object.__setattr__(self, "checksums", kept)
        if provider:
            if provider is not checksums:  # one mapping for both (a listing's): once
                kept = _kept_checksums(provider)
            if kept is not None:
                object.__setattr__(self, "provider_checksums", kept)

    @property
    def name(self) -> str:
        return self.key.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class PartLimits:
    """A store's multipart limits. Parts are numbered from 0 by the engine."""

    min_part_size: int
    max_part_size: int
    max_parts: int
    max_single_put: int

    def choose_part_size(self, size: int, requested: int | None = None) -> int:
        """The part size for a ``size``-byte object: ``requested`` (or 8 MiB) raised
        until the object fits in ``max_parts`` parts, rounded up to a whole MiB, and
        kept within ``[min_part_size, max_part_size]``."""
        part = requested or 8 * MiB
        if size > part * self.max_parts:
            part = math.ceil(size / self.max_parts / MiB) * MiB
        return max(self.min_part_size, min(part, self.max_part_size))

    def check_part_size(self, part_size: int) -> None:
        if not self.min_part_size <= part_size <= self.max_part_size:
            raise ValueError(
                f"part size {part_size} outside [{self.min_part_size}, {self.max_part_size}]"
            )


@dataclass(frozen=True, slots=True)
class PartReceipt:
    """What a store returns for one written part; enough to commit it later.
    ``checksum`` is the provider-side check of the part as the store sent it (hex or
    base64, the store's own business; the engine only journals it). ``verified`` is
    the check the store enforced over the part's bytes (``VERIFIED_BY``), None when
    none did; ``verify_parts`` sets it again for parts it confirms, so it need not
    be journaled."""

    index: int
    size: int
    etag: str | None = None
    checksum: str | None = None
    verified: str | None = None


def parts_verified(receipts: Iterable[PartReceipt]) -> str | None:
    """The check that covered every one of ``receipts`` (all by the same one), else
    None: what a commit assembling exactly these parts can claim."""
    checks = {r.verified for r in receipts}
    if len(checks) != 1:
        return None
    return checks.pop()


class PipelinedReads(Protocol):
    """Whole-object reads with several in flight from one thread
    (``Store.pipelined_reads``): ``start`` asks for an object, ``finish`` reads that
    answer, in the order started. Both answer None when the object should be read
    through ``read_object`` instead (any failure, any answer but the plain success):
    nothing here retries, maps or names an error; that stays ``read_object``'s."""

    def start(self, key: str, info: ObjectInfo) -> object | None:
        """Ask for the whole of ``key`` (``info``: what the listing said); a token for
        ``finish``, or None."""
        ...

    def finish(self, started: object) -> tuple[bytes | bytearray, ObjectInfo] | None:
        """The body and info ``read_object`` would have returned, or None."""
        ...

    def abandon(self, started: object) -> None:
        """Forget a request whose answer will not be read."""
        ...

    def close(self) -> None: ...


class ChunkWriter(Protocol):
    """A multipart upload in progress: parts of fixed ``part_size`` (the last may be
    shorter), written in any order from several threads, then ``commit`` or ``abort``.

    Nothing is visible at the key until ``commit`` returns. ``abort`` is idempotent and
    removes every trace of the upload (uploaded parts, staged blocks, temporary part
    objects, temp files); it never raises for an upload already gone.
    """

    key: str
    part_size: int
    size: int

    def write_part(self, index: int, data: Buffer, digests: PartDigests) -> PartReceipt:
        """Write part ``index`` (0-based). ``digests`` carries digests of ``data``
        already computed by the engine; the store asks it for the algorithm its
        provider verifies in flight. Re-writing a part replaces it. Raises
        ``IntegrityError`` when the provider rejected the part's bytes (a checksum or
        a signed payload hash that didn't match: the bytes changed on the way; a
        retry sends them again). The receipt's ``verified`` names the check."""
        ...

    def commit(self, metadata: Mapping[str, str]) -> ObjectInfo:
        """Make the object visible, by one request (the module docstring's "one write
        per object"). Every part must have been written. Raises on failure, leaving
        the upload to ``abort``; not idempotent (a second call raises).

        Metadata: where ``features.metadata_at_commit``, ``metadata`` is merged over
        ``open_writer``'s (``commit``'s value wins on a clash). Elsewhere (S3) the
        object carries exactly ``open_writer``'s metadata: keys of ``metadata`` that
        would add or change a value are *not stored*, never written by a second
        request, and logged at debug level; the returned ``ObjectInfo.metadata`` is
        what the object carries, so a caller can see what was dropped. A caller that
        needs a value on the object (the whole-file digest) there gives it to
        ``open_writer``. Dropping rather than raising: the upload is complete and
        correct, and refusing it for a label would throw the bytes away.

        The result's ``verified`` is the check that covered every byte of the object
        (None unless every part was verified by one check and the completion could
        assemble only those parts); ``provider_checksums`` holds the whole-object
        checksums the provider reported (an S3 ``FULL_OBJECT`` CRC, GCS's composite
        CRC32C)."""
        ...

    def abort(self) -> None:
        """Drop the upload. Afterwards nothing of it is visible, and nothing of it is
        billed for long: where a provider can't delete pieces directly (Azure's
        uncommitted blocks expire after 7 days), they are at least invisible. Never
        deletes an object already committed at the key. A part still in flight when
        ``abort`` runs may land afterwards; the cleanup command finds such leftovers."""
        ...


@runtime_checkable
class ResumableWriter(ChunkWriter, Protocol):
    """A writer whose upload survives the process: the engine journals ``state()`` and
    a later run reopens it with ``Store.resume_writer``."""

    def state(self) -> dict[str, Any]:
        """JSON-able token naming the upload (S3 upload id, POSIX temp path, ...)."""
        ...

    def verify_parts(self, claimed: Mapping[int, PartReceipt]) -> set[int]:
        """Of the parts a journal claims were written, those the store really holds
        with the same receipt (S3 ListParts ETag, POSIX bytes re-read and CRC32C
        checked). Only these are skipped on resume; the rest are written again."""
        ...


@dataclass(frozen=True, slots=True)
class PendingUpload:
    """An unfinished multipart upload the store still holds pieces of: an S3 multipart
    upload, a blob's uncommitted Azure blocks, a group of GCS temporary part objects, a
    POSIX ``.NAME.dmtmp-*`` temp file. Found by ``Store.list_pending_uploads``.

    ``key`` is the key the upload was writing (``""`` when the store can't tell, which
    only ever shows in a listing of the whole namespace). ``initiated`` is when the
    upload started, in seconds since the epoch, as near as the store knows (the oldest
    piece's time; a POSIX temp file's mtime); None when unknown. ``size`` is the bytes
    its pieces hold, None when that would take more requests to learn. ``token`` is the
    store's own JSON-able handle for ``abort_pending_upload``. ``cannot_abort`` is set
    when the store can see the pieces but has no way to remove them (its value says
    why); ``abort_pending_upload`` then raises ``Unsupported``.
    """

    key: str
    initiated: float | None
    size: int | None
    token: dict[str, Any]
    cannot_abort: str | None = None


@dataclass(frozen=True, slots=True)
class Features:
    """What one store can do beyond the required surface. Every field has the default
    that is right for a plain object store, so a new backend declares only what it
    does differently; callers ask a feature, never which backend they hold."""

    #: Keys are paths of this machine's filesystems (``Store.local_path`` answers):
    #: no network to probe before a run, a BagIt bag can be laid out there.
    local: bool = False
    #: Directories exist on their own, empty or not: ``stat`` answers ``is_dir`` for
    #: them, recursive listings yield every directory, removing a tree removes them.
    real_dirs: bool = False
    #: A put with ``HARDLINK_KEY`` metadata makes a real hard link; elsewhere it
    #: stores a marker object naming the link's target.
    hardlinks: bool = False
    #: User metadata is stored with each object; False (plain fsspec filesystems)
    #: means digests and POSIX attributes live only in the manifest.
    metadata: bool = True
    #: Total bytes of user metadata (keys + values) accepted per object.
    max_metadata_bytes: int = 2048
    #: ``list`` entries carry each object's user metadata (mode, owner, mtime,
    #: digests), so nobody needs a ``stat`` per entry to learn them.
    listing_metadata: bool = False
    #: ``ObjectInfo.mtime`` is the object's own modification time even without
    #: metadata (a POSIX file), not merely when it was uploaded.
    native_mtime: bool = False
    #: ``open_writer``'s ``size`` may be a hint: parts can be written before the final
    #: size is known, and ``writer.size`` set to it before ``commit`` (S3 multipart).
    streaming_writes: bool = False
    #: ``dir/`` marker objects keep the user metadata they are written with (a
    #: directory's mode, owner, times). None: it depends on the server (S3-compatible
    #: stores: AWS and Ceph keep it, SeaweedFS turns such keys into directories of its
    #: filer and drops it); ``FsOps`` learns it from the first marker it writes or reads,
    #: and keeps directory metadata in a ``DIR_META_NAME`` object where markers can't.
    marker_metadata: bool | None = True
    #: ``ChunkWriter.commit`` stores the metadata it is given (Azure's block list and
    #: GCS's compose take metadata). False (S3: CompleteMultipartUpload takes none):
    #: an object written by parts carries ``open_writer``'s metadata only.
    metadata_at_commit: bool = True
    #: The POSIX-metadata styles written unless ``--metadata-style`` says otherwise
    #: (the keys the common tools of this store read; ``stores.conventions``), and
    #: read first when conventions on one object disagree.
    metadata_styles: tuple[str, ...] = ("s3fs",)
    #: ``Store.resume_writer`` reopens an upload another process started (its
    #: ``ResumableWriter.state()``): parts of one file can be written by other
    #: processes (Dask workers) and a killed run's parts reused.
    resumable_writes: bool = False
    #: ``Store.put_read_back`` reads what it wrote back, and compares it with what
    #: it was given, before the object becomes visible (a local file: from its temp
    #: file, before the rename); the result's ``verified`` is then ``"readback"``.
    reads_back_puts: bool = False


#: Entries per listing page asked for by ``Store.probe``.
PROBE_PAGE = 1


class Store(ABC):
    """One namespace of one backend. See the module docstring for the contracts."""

    #: URL scheme this store answers to (``s3``, ``az``, ``gs``, ``file``, ...), for
    #: URLs and messages only: behaviour is asked of ``features``.
    scheme: str = ""
    limits: PartLimits
    features: Features = Features()
    #: The ``FsOps`` subclass the mount uses on this store (None: the generic one).
    fs_ops_class: ClassVar[type[FsOps] | None] = None

    def local_path(self, key: str) -> str | None:
        """The filesystem path of ``key`` where ``features.local``, else None."""
        return None

    def prepare_writes(self, key: str = "") -> Mapping[str, Any]:
        """Learn now what this store would learn on its first write under ``key`` (an
        S3 store's probe of which checksums its server checks), and return it as
        ``StoreSettings.extra`` entries with which a store of this namespace opened
        elsewhere (a Dask worker) starts knowing it instead of learning it again, so
        a worker killed in the middle leaves no probe behind. Default: nothing to
        learn (``{}``). Raises what the first write would."""
        return {}

    def use_job(self, job_id: str) -> None:
        """Writes from now on belong to the journaled job ``job_id``. A store whose
        unfinished writes leave pieces under names it picks (POSIX temp files) names
        them from the job and the key, so a later run of the job finds and reuses or
        removes every piece an earlier, killed run left. Default: nothing to do."""
        return None

    def discard_job_pieces(self, job_id: str, keys: Iterable[str]) -> None:
        """Remove what writes of ``keys`` by the job ``job_id`` may have left under
        names ``use_job`` gave them (a dead job's POSIX temp files, including those
        of whole-file writes no journal row names). Nothing else is touched; a name
        that holds something else (a directory) is left alone. Default: nothing."""
        return None

    def endpoint(self) -> str | None:
        """The service address this store talks to, for messages (never with
        credentials in it); None where there is nothing to say (a local path)."""
        return None

    @abstractmethod
    def url(self, key: str = "") -> str:
        """The URL a user would type for ``key`` (no credentials in it)."""

    def ignores_case(self, root: str) -> bool:
        """Whether names under the directory ``root`` are looked up without regard to
        case (a POSIX tree on vfat, SMB or casefold ext4), so two keys that differ only
        by case are one file there. Default: False (object stores keep case)."""
        return False

    def place(self, key: str, *, resolve: bool = False) -> str | None:
        """Where ``key`` is, spelt so that two stores' places are equal only when they
        provably name the same thing: the same service (endpoint, account), the same
        bucket and the same key; for a POSIX path its real path. A directory or prefix
        (``key`` empty or ending in ``/``) ends in ``/``, so one place starts with
        another exactly when it is inside it. ``resolve``: a symlink at ``key`` itself
        counts as what it points to (else as the name it is). None when the store can't
        tell (then nothing is refused as an overlap). Default: None."""
        return None

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Info for the object at ``key``. Raises ``NotFound`` if there is none
        (a prefix with objects under it is not an object). Stores with real
        directories (POSIX) return an ``is_dir`` entry for a directory."""

    @abstractmethod
    def list(self, prefix: str, *, recursive: bool = True) -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, streamed page by page in key
        order. With ``recursive=False``, ``prefix`` is treated as a directory and
        sub-directories come back once each as ``is_dir`` entries (key ending in
        ``/``). Recursive listings include directory markers (``dir/`` objects) and,
        on POSIX, empty directories as ``is_dir`` entries, so empty directories can be
        recreated. An empty or missing prefix yields nothing; it does not raise. An
        entry found but not servable (POSIX: a link loop under ``copy_links``, a path
        past PATH_MAX, a subdirectory that can't be read) comes with
        ``ObjectInfo.problem`` set instead of ending the listing."""

    def probe(self, prefix: str) -> None:
        """One cheap request that reaches the store before a run (``job.preflight``):
        the first entry of a one-level listing of ``prefix``. Raises what ``list``
        raises (a missing bucket, rejected credentials, an endpoint that does not
        answer). Stores that list in pages ask for a page of ``PROBE_PAGE`` entries: a
        full page of a large directory (5,000 blobs on Azure, metadata included) is
        the server's work and the client's parse for nothing."""
        next(iter(self.list(prefix, recursive=False)), None)

    @abstractmethod
    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes ``[offset, offset+length)`` of the object; fewer when the object ends
        first, ``b""`` at or past the end. Raises ``NotFound``. Never returns (or
        allocates) more than ``length``, whatever the server says; without a length,
        more than ``MAX_WHOLE_READ`` raises ``StoreError``."""

    def readinto(
        self, key: str, offset: int, buf: memoryview, *, expect: ObjectInfo | None = None
    ) -> int:
        """Fill ``buf`` from ``offset``; returns the count read (short at the end).
        Stores override this to avoid the extra copy ``read`` implies. A server that
        answers with more bytes than ``buf`` holds is a ``StoreError`` (not retried),
        found before the excess is read.

        ``expect`` (what a stat or listing said of the object) pins the read to that
        version: a store that names versions (an ETag, a GCS generation) asks for
        that one only (``If-Match``, ``ifGenerationMatch``) and checks the version
        its answer names, and raises ``SourceChanged`` (``replaced``) when the object
        is now another; ``buf`` may then hold some of the other version's bytes, to
        be thrown away. Without a version in ``expect`` (a POSIX file, a plain
        fsspec filesystem) the read is not pinned."""
        data = self.read(key, offset, len(buf))
        buf[: len(data)] = data
        return len(data)

    def read_object(
        self, key: str, info: ObjectInfo | None = None
    ) -> tuple[bytes | bytearray, ObjectInfo]:
        """The whole object and its info, ideally from one request (S3 GET returns the
        metadata with the body), as one consistent snapshot: a store whose objects can
        change under a reader (POSIX) raises ``SourceChanged`` if that happened.
        ``info`` is what a listing said, used by stores that have nothing better.
        Raises ``NotFound``. Bounded (``whole_read_limit``): an object now larger
        than ``info.size`` raises ``SourceChanged`` before it is read, and one over
        ``MAX_WHOLE_READ`` (without ``info``) or the single-put limit ``StoreError``."""
        listed = info
        info = self.stat(key) if info is None or not info.metadata else info
        check_whole_read(self.url(key), key, info.size, listed, self.limits.max_single_put)
        data = self.read(key, 0, info.size + 1)
        if len(data) != info.size:
            info = self.stat(key)
        return data, info

    def pipelined_reads(self, width: int) -> PipelinedReads | None:
        """A reader keeping up to ``width`` whole-object reads in flight from the
        calling thread (the engine's many-small-files path), or None: this store reads
        with ``read_object`` on each of several threads."""
        return None

    @abstractmethod
    def put(
        self,
        key: str,
        data: Buffer,
        *,
        metadata: Mapping[str, str] | None = None,
        digests: PartDigests | None = None,
    ) -> ObjectInfo:
        """Write a whole (small) object in one request, replacing any existing one.
        Atomic: readers see the old object or the new one, never a mix. ``digests``
        (of ``data``, when the caller has them) saves the store hashing again. Raises
        ``IntegrityError`` when the provider refused the bytes. The result's
        ``verified`` names the check that covered them (None: none did)."""

    def put_read_back(
        self,
        key: str,
        data: Buffer,
        *,
        metadata: Mapping[str, str] | None = None,
        digests: PartDigests | None = None,
    ) -> ObjectInfo:
        """``put``, with the bytes stored read back and compared with ``data`` before
        they become visible, where ``features.reads_back_puts``: then the result's
        ``verified`` is ``"readback"``, and bytes that differ raise ``DigestMismatch``
        with nothing left visible. Default: ``put`` (the caller reads back after)."""
        return self.put(key, data, metadata=metadata, digests=digests)

    @abstractmethod
    def open_writer(
        self,
        key: str,
        *,
        size: int,
        part_size: int,
        metadata: Mapping[str, str] | None = None,
    ) -> ChunkWriter:
        """Start a multipart write of a ``size``-byte object in ``part_size`` parts."""

    def resume_writer(
        self,
        key: str,
        *,
        size: int,
        part_size: int,
        state: Mapping[str, Any],
        metadata: Mapping[str, str] | None = None,
    ) -> ResumableWriter:
        """Reopen an upload a previous process started (``state`` from its
        ``ResumableWriter.state()``). Raises ``NotFound`` when the upload is gone
        (completed, aborted, expired) where an upload exists before its first part (an
        S3 UploadId, a POSIX temp file); where it does not (Azure's uncommitted blocks,
        GCS's part objects: a fresh upload handed to Dask workers has none yet), the
        writer's ``verify_parts`` of the parts a resume claims raises it. Raises
        ``Unsupported`` when this store can't resume at all."""
        raise Unsupported(f"{self.scheme} store can't resume uploads", key=key)

    def list_pending_uploads(self, prefix: str) -> Iterator[PendingUpload]:
        """Unfinished uploads (including ones a live process is still writing) whose
        key starts with ``prefix``, streamed, in no promised order. Raises
        ``Unsupported`` when the store keeps no such pieces or can't list them."""
        raise Unsupported(f"{self.scheme} store can't list unfinished uploads", key=prefix)

    def abort_pending_upload(self, upload: PendingUpload) -> None:
        """Remove every piece of ``upload`` (from ``list_pending_uploads``). Idempotent:
        an upload already gone (aborted, committed, expired) is not an error. Never
        touches a committed object. A live writer of that upload fails at its next part
        or at commit. Raises ``Unsupported`` when the store can't remove it
        (``upload.cannot_abort`` says why)."""
        raise Unsupported(f"{self.scheme} store can't abort unfinished uploads", key=upload.key)

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object. Succeeds if it is already absent (idempotent)."""

    def copy_object(
        self, src_key: str, dst_key: str, *, metadata: Mapping[str, str] | None = None
    ) -> ObjectInfo:
        """Server-side copy within this store: one write of ``dst_key`` (one copy
        request, or part copies and one completion), with ``metadata`` (None: the
        source's). Raises ``Unsupported`` when the store (or this server) can't; the
        caller then streams the bytes. No precondition on the source is relied on
        (Ceph RGW 16 ignores CopySourceIfMatch): a source replaced during the copy may
        be what is copied, and the caller compares what it needs (size, ``etag``,
        ``provider_checksums``). ``verified`` names a provider checksum of the copy
        that equals the source's, else None."""
        raise Unsupported(f"{self.scheme} store has no server-side copy", key=src_key)

    def child_key(self, root: str, rel: str) -> str:
        """The key for ``rel`` (a path relative to a copy's root, taken from a source
        listing) under ``root`` here. Stores whose keys become paths refuse what can't
        be one safely (``..``, empty components, NUL, ...) with ``UnsafePath``, and
        ``confine`` ``root``; object stores take any key they keep under that very name
        (``refused_key``)."""
        key = root + rel
        why = self.refused_key(key)
        if why is not None:
            raise UnsafePath(f"{self.url(key)}: {why}", key=key)
        return key

    def refused_key(self, key: str) -> str | None:
        """Why this store would not keep ``key`` under that very name; None when it
        would. A store that stores some keys under another name says so here (Azure
        Blob and some S3 servers turn a backslash into a slash, over the key that has
        one there): ``child_key`` refuses those keys, the mount such names (EINVAL).
        May ask the server, once per process (S3)."""
        return None

    def confine(self, root: str) -> None:  # noqa: B027 - optional hook, object stores need none
        """Declare ``root`` (a key prefix: ``""`` or ending in ``/``) a tree this store's
        caller works in: a copy's destination root and source root, the mount's prefix,
        the directory ``rm -r`` empties. Stores whose keys are paths (POSIX) open it
        once and from then on reach every key below it without following a symlink (or
        taking a ``..``) below ``root``: writes, links, attribute changes and deletes
        never leave it, whatever the keys and their metadata say and whatever changes
        on disk meanwhile; reads leave it only where the store follows links on purpose
        (``copy_links``, in a source). Keys under no confined root are resolved by their
        path as given. Idempotent; several roots may be confined. A no-op where keys are
        names, not paths (object stores). Raises nothing: the root is opened (and made,
        by the first write) when first used."""

    def can_copy_from(self, source: Store) -> bool:
        """Whether ``copy_from(source, ...)`` can work server-side (no request made).
        Default: within this very namespace, for stores that implement ``copy_object``."""
        return (
            type(source) is type(self)
            and source.url("") == self.url("")
            and type(self).copy_object is not Store.copy_object
        )

    def copy_from(
        self,
        source: Store,
        src_key: str,
        dst_key: str,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Server-side copy of ``source``'s ``src_key`` to ``dst_key`` here. Stores that
        can copy across buckets of one service override this; the default handles the
        same namespace through ``copy_object``. Raises ``Unsupported`` otherwise."""
        if not self.can_copy_from(source):
            raise Unsupported(f"no server-side copy from {source.url('')} to {self.url('')}")
        return self.copy_object(src_key, dst_key, metadata=metadata)

    def sync(self) -> None:  # noqa: B027 - optional hook: object stores are durable on OK
        """Make every object committed so far durable (``durability="job"``: POSIX
        files renamed into place without an fsync of their own). Raises ``StoreError``
        when that fails. A no-op where a commit is durable when it returns."""

    def drop_connections(self) -> None:  # noqa: B027 - optional hook: no pooled connections
        """Close the kept-alive connections this thread's next request would reuse, so
        it goes on a fresh one. The engine calls it before retrying a failed request
        (a connection that saw a reset, a stall or corrupted bytes is not trusted
        again). Must not break requests other threads have in flight."""

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release clients and pools. Safe to call twice."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
