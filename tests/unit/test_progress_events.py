"""Progress rendering, JSON events, reports, dry runs and filters through the engine,
on POSIX only (no servers): fast and deterministic."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import jsonschema
from rich.console import Console

import datamover
from datamover.cli.progress import RichProgress, make_progress, render
from datamover.engine.observer import RunInfo
from datamover.engine.plan import FileJob
from datamover.engine.results import FileResult
from datamover.reporting.events import JsonLines, Tally
from datamover.stores.base import ObjectInfo

ROOT = Path(__file__).resolve().parents[2]
REPORT_SCHEMA = json.loads((ROOT / "manifests" / "report.schema.json").read_text())


def _tree(root: Path) -> None:
    for rel, size in {
        "a/x.h5": 10,
        "a/b/y.h5": 20,
        "a/b/z.txt": 30,
        "tmp/t.h5": 40,
        "big.bin": 300_000,
    }.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))


def _job(rel: str, size: int) -> FileJob:
    return FileJob(rel, rel, rel, ObjectInfo(rel, size))


def test_non_tty_gets_no_animation() -> None:
    assert make_progress(Console(file=io.StringIO())) is None
    assert make_progress(Console(file=io.StringIO(), force_terminal=True), quiet=True) is None
    assert make_progress(Console(file=io.StringIO(), force_terminal=True)) is not None


def test_render_planning_then_totals_and_largest_files() -> None:
    now = [100.0]
    tally = Tally(clock=lambda: now[0])
    for i in range(6):
        tally.file_planned(_job(f"f{i}.bin", (i + 1) * 1000))
    for i in range(6):
        tally.file_started(_job(f"f{i}.bin", (i + 1) * 1000))
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    with console.capture() as cap:
        console.print(render(tally.snapshot(largest=4), width=120))
    text = cap.get()
    assert "planning: 6 files, 20.5 KiB found" in text
    # Only the four largest files in flight are shown, biggest first.
    assert text.index("f5.bin") < text.index("f4.bin") < text.index("f2.bin")
    assert "f1.bin" not in text and "f0.bin" not in text

    tally.planning_finished()
    now[0] += 2.0
    tally.bytes_done(21_000 // 2, _job("f5.bin", 6000))
    tally.file_finished(FileResult(_job("f0.bin", 1000), 1000))
    snap = tally.snapshot()
    assert snap.files_done == 1 and snap.bytes_done == 10_500 and snap.rate > 0
    assert snap.eta is not None
    with console.capture() as cap:
        console.print(render(snap, title="copy", width=120))
    text = cap.get()
    assert "files 1/6" in text and "ETA" in text and "planning" not in text


def test_rich_progress_draws_on_a_terminal_only_while_running() -> None:
    buf = io.StringIO()
    progress = RichProgress(Console(file=buf, force_terminal=True, width=100))
    progress.run_started(RunInfo("copy", "j", "/a/", "/b/", None, "sha256"))
    progress.file_planned(_job("x.bin", 10))
    progress.stop()
    assert buf.getvalue()  # something was drawn, then cleared (transient)


def test_json_events_are_whole_lines_under_concurrency() -> None:
    out = io.StringIO()
    events = JsonLines(out, progress_interval=None)

    def worker(n: int) -> None:
        for i in range(200):
            job = _job(f"w{n}/f{i}", i)
            events.file_started(job)
            events.bytes_done(i, job)
            events.file_finished(FileResult(job, i, digests={"sha256": "ab"}))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = out.getvalue().splitlines()
    assert len(lines) == 8 * 200 * 2
    kinds = [json.loads(line)["event"] for line in lines]
    assert kinds.count("file_done") == 1600 and kinds.count("file_started") == 1600


def test_copy_with_filters_events_and_report(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    events: list[dict[str, Any]] = []
    report_path = tmp_path / "report.json"
    result = datamover.copy(
        str(src),
        str(dst),
        manifest=str(tmp_path / "m.jsonl"),
        include=["*.h5", "big.bin"],
        exclude=["tmp/**"],
        progress=events.append,
        report=str(report_path),
        multipart_threshold="64K",
        part_size="64K",
    )
    assert result.ok and result.files_ok == 3
    copied = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert copied == ["a/b/y.h5", "a/x.h5", "big.bin"]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "summary"
    assert kinds.count("file_done") == 3 and kinds.count("file_started") == 3
    assert events[-1]["ok"] and events[-1]["files_ok"] == 3

    doc = json.loads(report_path.read_text())
    jsonschema.validate(doc, REPORT_SCHEMA)
    assert doc["status"] == "ok" and doc["totals"]["files_ok"] == 3
    assert [f["path"] for f in doc["files"]] == ["a/b/y.h5", "a/x.h5", "big.bin"]
    assert all(len(f["digests"]["sha256"]) == 64 for f in doc["files"])
    assert doc["filters"]["rules"] == ["- tmp/**", "+ *.h5", "+ big.bin"]
    prov = doc["provenance"]
    assert prov["tool"] == "datamover" and prov["started"] <= prov["ended"]


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    _tree(src)
    report_path = tmp_path / "dry.json"
    events: list[dict[str, Any]] = []
    result = datamover.copy(
        str(src),
        str(dst),
        dry_run=True,
        state_dir=str(state),
        manifest=str(tmp_path / "m.jsonl"),
        progress=events.append,
        report=str(report_path),
        max_size=100,
    )
    assert result.dry_run and result.manifest is None
    assert result.files_ok == 4 and result.bytes == 100
    # (PosixStore may create the empty destination root while probing case folding.)
    assert not [p for p in dst.rglob("*")] if dst.exists() else True
    assert not state.exists() and not (tmp_path / "m.jsonl").exists()
    assert sorted(e["path"] for e in events if e["event"] == "would_copy") == [
        "a/b/y.h5",
        "a/b/z.txt",
        "a/x.h5",
        "tmp/t.h5",
    ]
    doc = json.loads(report_path.read_text())
    jsonschema.validate(doc, REPORT_SCHEMA)
    assert doc["status"] == "dry_run" and {f["status"] for f in doc["files"]} == {"planned"}


def test_sync_delete_respects_filters_and_dry_run(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    assert datamover.sync(str(src), str(dst)).ok
    (dst / "extra.h5").write_bytes(b"x")
    (dst / "keep.log").write_bytes(b"y")
    (src / "a" / "x.h5").write_bytes(b"changed!")
    dry = datamover.sync(str(src), str(dst), delete=True, exclude=["*.log"], dry_run=True)
    assert dry.dry_run and dry.deleted == ["extra.h5"] and dry.files_ok == 1
    assert (dst / "extra.h5").exists() and (dst / "a" / "x.h5").read_bytes() != b"changed!"
    real = datamover.sync(str(src), str(dst), delete=True, exclude=["*.log"])
    assert real.deleted == ["extra.h5"] and real.files_ok == 1
    assert (dst / "keep.log").exists() and not (dst / "extra.h5").exists()
    assert (dst / "a" / "x.h5").read_bytes() == b"changed!"


def test_report_on_fatal_error_before_the_run(tmp_path: Path) -> None:
    report_path = tmp_path / "r.json"
    try:
        datamover.copy(str(tmp_path / "missing"), str(tmp_path / "d"), report=str(report_path))
    except datamover.errors.UsageError:
        pass
    doc = json.loads(report_path.read_text())
    jsonschema.validate(doc, REPORT_SCHEMA)
    assert doc["status"] == "aborted" and "no such file" in doc["error"]


def test_keyword_options_map_to_transfer_options() -> None:
    opts = datamover.make_options(transfers=3, part_size="1M", checksum="sha512")
    assert (opts.transfers, opts.part_size, opts.checksum) == (3, 1024 * 1024, "sha512")
    try:
        datamover.make_options(tranfers=3)
    except datamover.errors.UsageError as e:
        assert "unknown option 'tranfers'" in str(e)
    else:
        raise AssertionError("a misspelt option must be refused")
