"""The golden manifests in manifests/examples validate, parse, and (for the POSIX one)
are reproduced digest for digest by a fresh copy of the same bytes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

import datamover
from datamover.manifest import read_manifest
from datamover.options import MiB, TransferOptions

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.jsonl"))
SCHEMA = json.loads((ROOT / "manifests" / "manifest.schema.json").read_text())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_golden_manifest_validates_and_parses(path: Path) -> None:
    for line in path.read_text().splitlines():
        jsonschema.validate(json.loads(line), SCHEMA)
    manifest = read_manifest(str(path))
    assert manifest.entries
    assert (manifest.summary is None) == (path.name == "killed-run.jsonl")


def test_schema_rejects_an_ok_entry_without_digest() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"type": "file", "path": "x", "size": 1, "status": "ok"}, SCHEMA)


def test_fresh_copy_reproduces_posix_golden(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "raw").mkdir(parents=True)
    (src / "README.txt").write_bytes(b"hello\n")
    (src / "raw" / "empty.dat").write_bytes(b"")
    (src / "raw" / "frame.bin").write_bytes(bytes(9_000_000))
    mtime = 1767323045_123456789
    for p in src.rglob("*"):
        if p.is_file():
            os.utime(p, ns=(mtime, mtime))
            p.chmod(0o644)
    opts = TransferOptions(
        part_size=4 * MiB, multipart_threshold=4 * MiB, manifest=str(tmp_path / "m.jsonl")
    )
    report = datamover.copy(str(src), str(tmp_path / "dst"), opts)
    fresh = {e.path: e for e in read_manifest(report.manifest or "").entries}
    golden = {
        e.path: e for e in read_manifest(str(ROOT / "manifests/examples/posix-copy.jsonl")).entries
    }
    assert fresh.keys() == golden.keys()
    for path, g in golden.items():
        f = fresh[path]
        assert (f.size, f.digest, f.parts, f.part_size, f.mtime, f.mode) == (
            g.size,
            g.digest,
            g.parts,
            g.part_size,
            g.mtime,
            g.mode,
        ), path
