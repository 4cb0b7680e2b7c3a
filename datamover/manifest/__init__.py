"""Checksum manifests: what a run proves, file by file, and its exports.

``format`` (entries, header, statuses), ``writer`` (appended while a run goes),
``reader`` (read back, for verify, resume and exports, checking every line by
``rules``: manifests are untrusted input), ``sums`` (``sha256sum -c`` lines) and
``bagit`` (an RFC 8493 bag).
"""

from datamover.manifest.format import (
    FORMAT,
    FORMAT_VERSION,
    STATUS_DELETED,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    VERIFIED_NONE,
    VERIFIED_VALUES,
    Manifest,
    ManifestEntry,
    Tally,
    as_recorded,
    is_utf8,
    make_header,
    utc_now,
)
from datamover.manifest.reader import check_complete, iter_manifest, read_manifest
from datamover.manifest.rules import path_problem
from datamover.manifest.sums import export_sums
from datamover.manifest.writer import ManifestWriter

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "STATUS_DELETED",
    "STATUS_FAILED",
    "STATUS_OK",
    "STATUS_SKIPPED",
    "VERIFIED_NONE",
    "VERIFIED_VALUES",
    "Manifest",
    "ManifestEntry",
    "ManifestWriter",
    "Tally",
    "as_recorded",
    "check_complete",
    "export_sums",
    "is_utf8",
    "iter_manifest",
    "make_header",
    "path_problem",
    "read_manifest",
    "utc_now",
]
