"""Reading a manifest back (verify, resume, exports)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from datamover.errors import UsageError
from datamover.manifest.format import FORMAT, FORMAT_VERSION, Manifest, ManifestEntry


def read_entries(path: str) -> Iterator[ManifestEntry]:
    for obj in iter_manifest(path, tolerate_torn=True):
        if obj["type"] == "file":
            yield ManifestEntry.from_json(obj)


def dedupe(entries: Iterator[ManifestEntry]) -> dict[str, ManifestEntry]:
    """A resumed job may list a path twice (failed, then ok): the last entry wins."""
    out: dict[str, ManifestEntry] = {}
    for e in entries:
        out.pop(e.path, None)
        out[e.path] = e
    return out


def iter_manifest(path: str, *, tolerate_torn: bool = False) -> Iterator[dict[str, Any]]:
    """Lines of a manifest. ``tolerate_torn`` skips a line cut short by a killed writer
    (only ever the last line before a resume appended more)."""
    try:
        fh = open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as e:
        raise UsageError(f"cannot read manifest {path}: {e.strerror}") from e
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                if tolerate_torn:
                    continue
                raise UsageError(f"{path}:{lineno}: not a datamover manifest line ({e.msg})") from e
            if not isinstance(obj, dict) or "type" not in obj:
                raise UsageError(f"{path}:{lineno}: not a datamover manifest line")
            yield obj


def read_manifest(path: str) -> Manifest:
    header: dict[str, Any] | None = None
    entries: list[ManifestEntry] = []
    summary = None
    for obj in iter_manifest(path, tolerate_torn=True):
        kind = obj["type"]
        if kind == "header":
            if obj.get("format") != FORMAT:
                raise UsageError(f"{path}: not a datamover manifest (format {obj.get('format')!r})")
            if int(obj.get("format_version", 0)) > FORMAT_VERSION:
                raise UsageError(
                    f"{path}: manifest format version {obj['format_version']} is newer than "
                    "this datamover understands; upgrade datamover"
                )
            header = obj
        elif kind == "file":
            entries.append(ManifestEntry.from_json(obj))
        elif kind == "summary":
            summary = obj
    if header is None:
        raise UsageError(f"{path}: no manifest header; is this a datamover manifest?")
    return Manifest(header, list(dedupe(iter(entries)).values()), summary)
