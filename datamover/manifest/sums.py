"""``sha256sum -c`` export: ``HEX  path`` lines, with GNU escaping of ``\\`` and
newlines, accepted by ``sha256sum -c`` / ``sha512sum -c`` / ``md5sum -c`` run from the
copied root."""

from __future__ import annotations

from typing import IO

from datamover.errors import UsageError
from datamover.manifest.format import STATUS_OK, Manifest

_SUM_TOOLS = {"sha256": "sha256sum", "sha512": "sha512sum", "md5": "md5sum"}


def _sum_line(digest: str, path: str) -> str:
    if "\\" in path or "\n" in path or "\r" in path:
        escaped = path.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        return f"\\{digest}  {escaped}\n"
    return f"{digest}  {path}\n"


def export_sums(manifest: Manifest, out: IO[str]) -> int:
    """Write ``<alg>sum -c`` lines for every successfully copied file; returns the count."""
    alg = manifest.algorithm
    if alg not in _SUM_TOOLS:
        raise UsageError(
            f"a {alg} manifest has no coreutils checker; sha256sum export needs a manifest "
            "made with --checksum sha256, sha512 or md5"
        )
    count = 0
    for e in manifest.entries:
        if e.status == STATUS_OK and e.digest and e.kind in (None, "hardlink"):
            out.write(_sum_line(e.digest, e.path))
            count += 1
    return count
