"""``sha256sum -c`` export: ``HEX  path`` lines, with GNU escaping of ``\\`` and
newlines, accepted by ``sha256sum -c`` / ``sha512sum -c`` / ``md5sum -c`` run from the
copied root."""

from __future__ import annotations

from typing import IO

from datamover.errors import UsageError
from datamover.manifest.format import Manifest

_SUM_TOOLS = {"sha256": "sha256sum", "sha512": "sha512sum", "md5": "md5sum"}


def _sum_line(digest: str, path: str) -> str:
    if "\\" in path or "\n" in path or "\r" in path:
        escaped = path.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        return f"\\{digest}  {escaped}\n"
    return f"{digest}  {path}\n"


def export_sums(manifest: Manifest, out: IO[str]) -> int:
    """Write ``<alg>sum -c`` lines for every file the manifest gives a digest for (copied,
    or unchanged in a sync); returns the count. (``Manifest.files_with_digests``
    tells the files it gives none for: the caller decides what to say of them.)"""
    alg = manifest.algorithm
    if alg not in _SUM_TOOLS:
        raise UsageError(
            f"a {alg} manifest has no coreutils checker; sha256sum export needs a manifest "
            "made with --checksum sha256, sha512 or md5"
        )
    files, _ = manifest.files_with_digests()
    for e in files:
        assert e.digest is not None
        out.write(_sum_line(e.digest, e.path))
    return len(files)
