"""Property-based fuzzing of the manifest reader: valid manifests mutated by byte
flips, truncation, line shuffles, type swaps and path injections either parse into a
manifest whose every path passed the rules, or raise ``ManifestError`` (the project's
own input error), and never anything else.

Deterministic (``derandomize``) and bounded so it runs in a few seconds in CI.
"""

from __future__ import annotations

import io
import json
import posixpath
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datamover.errors import ManifestError
from datamover.manifest import Manifest
from datamover.manifest.reader import parse
from datamover.manifest.rules import ACTED_ON, HEX_LENGTH, KINDS, STATUSES

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = [p.read_bytes() for p in sorted((ROOT / "manifests" / "examples").glob("*.jsonl"))]


def _resumed() -> bytes:
    """A manifest with every kind of entry, an attempt's summary, and a resumed tail."""
    h = json.loads(GOLDEN[0].splitlines()[0])
    d = "ab" * 32

    def f(path: str, **kw: Any) -> dict[str, Any]:
        return {"type": "file", "path": path, "size": 1, "status": "ok", "digest": d, **kw}

    lines: list[dict[str, Any]] = [
        h,
        f("a", parts=["0a0b0c0d"], mtime="1.000000000", mode="0644", seconds=0.5),
        {"type": "file", "path": "dir/", "size": 0, "status": "ok", "kind": "dir"},
        f("dir/l", kind="symlink", uid=0, gid=0),
        f("dir/h", kind="hardlink", link_to="a"),
        {"type": "file", "path": "b", "size": 2, "status": "failed", "error": "x"},
        {
            "type": "summary",
            "ended": "t",
            "files_ok": 4,
            "files_failed": 1,
            "bytes": 3,
            "aborted": "stopped",
        },
        f(
            "b",
            size=2,
            attempts=2,
            etag="e",
            version="v",
            verified="readback",
            provider_checksums={"md5": "cd" * 16, "crc64nvme": "ef" * 8},
        ),
        {"type": "file", "path": "../gone", "size": 0, "status": "deleted"},
        {"type": "file", "path": "s", "size": 5, "status": "skipped", "digest": d},
        {
            "type": "summary",
            "ended": "t",
            "files_ok": 5,
            "files_failed": 0,
            "files_skipped": 1,
            "bytes": 5,
        },
    ]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


VALID = [*GOLDEN, _resumed()]

HOSTILE_PATHS = [
    "../x",
    "a/../../x",
    "/etc/shadow",
    "a//b",
    "./a",
    "a/.",
    "",
    "a\x00b",
    "\udc80",
    "a/" * 3000,
    "..",
    "/",
    "data/../../../../tmp/x",
    "ok/name",
]
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**70,
    1.5,
    float("nan"),
    float("inf"),
    "",
    "x",
    "0" * 64,
    [],
    ["a"],
    {},
    {"k": [{"k": {}}]},
    {"md5": "0" * 32},
    {"crc64nvme": 5},
    "readback",
]
FIELDS = [
    "type",
    "path",
    "size",
    "status",
    "digest",
    "mtime",
    "mode",
    "part_size",
    "parts",
    "kind",
    "link_to",
    "source_path",
    "error",
    "seconds",
    "attempts",
    "uid",
    "gid",
    "verified",
    "provider_checksums",
    "files_unverified",
    "format",
    "format_version",
    "algorithm",
    "part_algorithm",
    "files_ok",
    "files_failed",
    "bytes",
    "files_skipped",
    "options",
    "command_line",
    "job_id",
    "destination",
]


def _flip(data: st.DataObject, raw: bytes) -> bytes:
    if not raw:
        return raw
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] ^= data.draw(st.integers(1, 255))
    return bytes(buf)


def _truncate(data: st.DataObject, raw: bytes) -> bytes:
    return raw[: data.draw(st.integers(0, len(raw)))]


def _shuffle(data: st.DataObject, raw: bytes) -> bytes:
    lines = raw.splitlines(keepends=True)
    return b"".join(data.draw(st.permutations(lines)))


def _drop_or_repeat(data: st.DataObject, raw: bytes) -> bytes:
    lines = raw.splitlines(keepends=True)
    if not lines:
        return raw
    i = data.draw(st.integers(0, len(lines) - 1))
    if data.draw(st.booleans()):
        del lines[i]
    else:
        lines.insert(data.draw(st.integers(0, len(lines))), lines[i])
    return b"".join(lines)


def _edit_line(data: st.DataObject, raw: bytes, value: st.SearchStrategy[Any]) -> bytes:
    lines = raw.splitlines(keepends=True)
    if not lines:
        return raw
    i = data.draw(st.integers(0, len(lines) - 1))
    try:
        obj = json.loads(lines[i])
    except ValueError:
        return raw
    if not isinstance(obj, dict):
        return raw
    obj[data.draw(st.sampled_from(FIELDS))] = data.draw(value)
    lines[i] = json.dumps(obj).encode("utf-8", "surrogatepass") + b"\n"
    return b"".join(lines)


def _swap_type(data: st.DataObject, raw: bytes) -> bytes:
    return _edit_line(data, raw, st.sampled_from(ODD_VALUES) | st.text(max_size=20))


def _inject_path(data: st.DataObject, raw: bytes) -> bytes:
    lines = raw.splitlines(keepends=True)
    files = [i for i, line in enumerate(lines) if b'"type": "file"' in line or b'"file"' in line]
    if not files:
        return raw
    i = data.draw(st.sampled_from(files))
    try:
        obj = json.loads(lines[i])
    except ValueError:
        return raw
    field = data.draw(st.sampled_from(["path", "link_to", "source_path"]))
    obj[field] = data.draw(st.sampled_from(HOSTILE_PATHS) | st.text(max_size=12))
    lines[i] = json.dumps(obj).encode("utf-8", "surrogatepass") + b"\n"
    return b"".join(lines)


def _insert_junk(data: st.DataObject, raw: bytes) -> bytes:
    lines = raw.splitlines(keepends=True)
    junk = data.draw(
        st.sampled_from([b"[" * 5000, b"{" * 50 + b"}" * 50, b'{"type":"file"', b"\xff\xfe"])
        | st.binary(max_size=40)
    )
    lines.insert(data.draw(st.integers(0, len(lines))), junk + b"\n")
    return b"".join(lines)


MUTATIONS = [_flip, _truncate, _shuffle, _drop_or_repeat, _swap_type, _inject_path, _insert_junk]


def _text(path: str) -> bool:
    """The oracle, written apart from the rules it checks: recordable text."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return path != "" and "\x00" not in path


def _beneath(path: str) -> bool:
    """The oracle for paths acted on: canonical, relative, never above the root."""
    body = path[:-1] if path.endswith("/") else path
    return (
        _text(path)
        and body not in ("", ".", "..")
        and not body.startswith(("/", "../"))
        and posixpath.normpath(body) == body
    )


def _check_parsed(manifest: Manifest) -> None:
    """Everything a parsed manifest holds passed the rules."""
    assert manifest.header["algorithm"] in HEX_LENGTH
    for e in manifest.entries:
        assert e.status in STATUSES
        assert e.kind is None or e.kind in KINDS
        assert type(e.size) is int and e.size >= 0
        assert e.digest is None or len(e.digest) == HEX_LENGTH[manifest.algorithm]
        for name in (e.path, e.link_to, e.source_path):
            if name is None:
                continue
            assert (_beneath if e.status in ACTED_ON else _text)(name), (e.status, name)


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_mutated_manifests_parse_cleanly_or_raise_manifest_error(data: st.DataObject) -> None:
    raw = data.draw(st.sampled_from(VALID))
    for _ in range(data.draw(st.integers(1, 3))):
        raw = data.draw(st.sampled_from(MUTATIONS))(data, raw)
    try:
        manifest = parse(io.BytesIO(raw), "fuzz.jsonl")
    except ManifestError as e:
        assert str(e).startswith("fuzz.jsonl")
        assert "\n" not in str(e)
        return
    _check_parsed(manifest)


COMPONENTS = ["a", "b", "", ".", "..", "...", "x\x00y", "\udc80", "é", "a b", "\n"]
#: Paths built from components that include every one the rules refuse.
PATHS = st.builds(
    lambda lead, parts, trail: lead + "/".join(parts) + trail,
    st.sampled_from(["", "/", "//"]),
    st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=5),
    st.sampled_from(["", "/", "//"]),
)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(st.data())
def test_injected_paths_are_beneath_the_root_or_refused(data: st.DataObject) -> None:
    lines = VALID[-1].splitlines(keepends=True)
    files = [i for i, line in enumerate(lines) if b'"type": "file"' in line]
    i = data.draw(st.sampled_from(files))
    obj = json.loads(lines[i])
    obj[data.draw(st.sampled_from(["path", "path", "link_to", "source_path"]))] = data.draw(PATHS)
    lines[i] = json.dumps(obj).encode() + b"\n"
    try:
        manifest = parse(io.BytesIO(b"".join(lines)), "fuzz.jsonl")
    except ManifestError as e:  # that line, or a summary its new path no longer matches
        assert str(e).startswith(("fuzz.jsonl:", f"fuzz.jsonl:{i + 1}: "))
        return
    _check_parsed(manifest)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=300))
def test_random_bytes_parse_cleanly_or_raise_manifest_error(raw: bytes) -> None:
    for data in (raw, VALID[0] + raw, VALID[0] + raw + b"\n"):
        try:
            _check_parsed(parse(io.BytesIO(data), "fuzz.jsonl"))
        except ManifestError:
            pass


def test_the_seed_manifests_are_valid() -> None:
    for raw in VALID:
        _check_parsed(parse(io.BytesIO(raw), "seed.jsonl"))
