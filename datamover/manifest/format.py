"""Checksum manifests: the format's vocabulary (statuses, entries, the header).

The format is specified in ``manifests/SPEC.md`` and ``manifests/manifest.schema.json``:
JSON lines, one header, one entry per file, one summary. ``writer`` appends them as
files finish, ``reader`` reads them back, ``sums`` and ``bagit`` export them.
"""

from __future__ import annotations

import getpass
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from datamover._version import __version__

FORMAT = "datamover-manifest"
FORMAT_VERSION = 1

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_SKIPPED = "skipped"
STATUS_DELETED = "deleted"

#: What an entry's ``verified`` can say covered the bytes at the destination: a
#: check the store enforced on the write (``crc64nvme``, ``crc32c``, ``md5``: a
#: checksum of the request body the store compared; ``sha256-payload``: a signed
#: payload SHA-256 the store checked), ``readback`` (the engine read the stored
#: object back and its digest equals the one computed while sending), or ``none``
#: (nothing did, and the run was told to accept that: ``--unverified accept``).
#: Absent in manifests written before it was recorded, and for entries with no bytes
#: of their own (directories, hard links).
VERIFIED_VALUES = ("crc64nvme", "crc32c", "md5", "sha256-payload", "readback", "none")
VERIFIED_NONE = "none"
#: Hex digits of each whole-object checksum a provider may report
#: (``provider_checksums``): the algorithms datamover knows, CRC64NVME among them.
PROVIDER_HEX_DIGITS = {"sha256": 64, "sha512": 128, "md5": 32, "crc32c": 8, "crc64nvme": 16}


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class ManifestEntry:
    path: str
    size: int
    status: str
    digest: str | None = None
    mtime: str | None = None
    mode: str | None = None
    part_size: int | None = None
    parts: list[str] = field(default_factory=list)
    etag: str | None = None
    version: str | None = None
    error: str | None = None
    source_path: str | None = None
    seconds: float | None = None
    attempts: int | None = None
    kind: str | None = None  # None: a regular file; "dir", "symlink", "hardlink"
    link_to: str | None = None
    uid: int | None = None
    gid: int | None = None
    #: The check that covered the stored bytes (``VERIFIED_VALUES``), None when not
    #: recorded (older manifests; entries with no bytes of their own).
    verified: str | None = None
    #: Whole-object checksums the destination's provider computed over the stored
    #: bytes and reported for this write (``{"crc64nvme": hex, "md5": hex}``): what
    #: ``verify --no-download`` compares with what the store reports now.
    provider_checksums: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        # Field by field rather than a getattr loop: this runs for every file written.
        out: dict[str, Any] = {"type": "file", "path": self.path, "size": self.size}
        if self.status is not None:
            out["status"] = self.status
        if self.digest is not None:
            out["digest"] = self.digest
        if self.mtime is not None:
            out["mtime"] = self.mtime
        if self.mode is not None:
            out["mode"] = self.mode
        if self.part_size is not None:
            out["part_size"] = self.part_size
        if self.etag is not None:
            out["etag"] = self.etag
        if self.version is not None:
            out["version"] = self.version
        if self.error is not None:
            out["error"] = self.error
        if self.source_path is not None:
            out["source_path"] = self.source_path
        if self.seconds is not None:
            out["seconds"] = self.seconds
        if self.attempts is not None:
            out["attempts"] = self.attempts
        if self.kind is not None:
            out["kind"] = self.kind
        if self.link_to is not None:
            out["link_to"] = self.link_to
        if self.uid is not None:
            out["uid"] = self.uid
        if self.gid is not None:
            out["gid"] = self.gid
        if self.verified is not None:
            out["verified"] = self.verified
        if self.provider_checksums:
            out["provider_checksums"] = dict(sorted(self.provider_checksums.items()))
        if self.parts:
            out["parts"] = self.parts
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ManifestEntry:
        return cls(
            path=obj["path"],
            size=obj["size"],
            status=obj["status"],
            digest=obj.get("digest"),
            mtime=obj.get("mtime"),
            mode=obj.get("mode"),
            part_size=obj.get("part_size"),
            parts=list(obj.get("parts", [])),
            etag=obj.get("etag"),
            version=obj.get("version"),
            error=obj.get("error"),
            source_path=obj.get("source_path"),
            seconds=obj.get("seconds"),
            attempts=obj.get("attempts"),
            kind=obj.get("kind"),
            link_to=obj.get("link_to"),
            uid=obj.get("uid"),
            gid=obj.get("gid"),
            verified=obj.get("verified"),
            provider_checksums=dict(obj.get("provider_checksums") or {}),
        )


_SURROGATE = re.compile(r"[\ud800-\udfff]")
_ESCAPED = re.compile(r"[\\\ud800-\udfff]")


def is_utf8(name: str) -> bool:
    """Whether ``name`` is UTF-8 text. A POSIX name that is not holds the bytes that
    are not UTF-8 as lone surrogates (Python's ``surrogateescape``), which a
    manifest, the journal and an object key can't hold."""
    return name.isascii() or _SURROGATE.search(name) is None


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group())
    if code == 0x5C:
        return "\\\\"
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\{code - 0xDC00:03o}"
    return f"\\u{code:04x}"


def as_recorded(name: str) -> str:
    """``name`` as UTF-8 text a manifest and the journal can hold: unchanged if it is
    UTF-8; otherwise each byte that is not UTF-8 written as an octal escape and each
    backslash doubled, as GNU ``ls -b`` shows names (``lat\\351.txt``), so no two such
    names are recorded alike. For what is only recorded, never opened: a refused
    name (it fails by this name), a header's command line."""
    return name if is_utf8(name) else _ESCAPED.sub(_escape, name)


def make_header(
    *,
    operation: str,
    source: str,
    destination: str,
    algorithm: str,
    part_algorithm: str,
    options: Mapping[str, Any],
    job_id: str,
    command_line: tuple[str, ...] = (),
    destination_remote: str | None = None,
) -> dict[str, Any]:
    header: dict[str, Any] = {
        "type": "header",
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool": "datamover",
        "tool_version": __version__,
        "job_id": job_id,
        "operation": operation,
        "source": source,
        "destination": destination,
        "algorithm": algorithm,
        "part_algorithm": part_algorithm,
        "options": dict(options),
        "started": utc_now(),
        "host": socket.gethostname(),
    }
    try:
        header["user"] = getpass.getuser()
    except (KeyError, OSError):
        pass
    if command_line:
        header["command_line"] = [as_recorded(a) for a in command_line]
    if destination_remote:  # the destination as named through a configured remote
        header["destination_remote"] = as_recorded(destination_remote)
    return header


#: Entry kinds whose bytes a digest vouches for: regular files (None) and hard links;
#: not directories, not symlinks (a checker would read what the link leads to).
_FILE_KINDS = (None, "file", "hardlink")


@dataclass(frozen=True, slots=True)
class Tally:
    """What a manifest's entries add up to: files (regular files, symlinks, hard
    links) by status, directories apart, and the bytes of the files that are ok."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    deleted: int = 0
    dirs: int = 0
    bytes: int = 0


@dataclass(slots=True)
class Manifest:
    """A manifest as read back (``reader``): its header, the last entry of each path in
    the order they were last written, and the summary when the run finished (None
    for a manifest still being written, or killed). ``torn_at`` is the byte offset of
    a last line a killed writer left half-written (not counted), else None."""

    header: dict[str, Any]
    entries: list[ManifestEntry]
    summary: dict[str, Any] | None
    torn_at: int | None = None

    @property
    def algorithm(self) -> str:
        return str(self.header["algorithm"])

    def files_with_digests(self) -> tuple[list[ManifestEntry], list[ManifestEntry]]:
        """The files at the destination this manifest vouches for (``ok``, and
        ``skipped``: unchanged in a sync), split into those it gives a digest for and
        those it gives none for (a sync that left them unread had none to record)."""
        with_digest: list[ManifestEntry] = []
        without: list[ManifestEntry] = []
        for e in self.entries:
            if e.status not in (STATUS_OK, STATUS_SKIPPED) or e.kind not in _FILE_KINDS:
                continue
            (with_digest if e.digest else without).append(e)
        return with_digest, without

    def tally(self) -> Tally:
        by: dict[str, int] = {}
        dirs = size = 0
        for e in self.entries:
            if e.kind == "dir":
                dirs += 1
                continue
            by[e.status] = by.get(e.status, 0) + 1
            if e.status == STATUS_OK:
                size += e.size
        return Tally(
            ok=by.get(STATUS_OK, 0),
            failed=by.get(STATUS_FAILED, 0),
            skipped=by.get(STATUS_SKIPPED, 0),
            deleted=by.get(STATUS_DELETED, 0),
            dirs=dirs,
            bytes=size,
        )
