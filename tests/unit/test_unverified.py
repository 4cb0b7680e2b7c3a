"""The engine's side of "no file called ok unless the store proved its bytes"
(``datamover.engine.proof``), on an in-memory store that checks nothing and, when
told, stores other bytes than it was sent (a flipped bit it accepted)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from datamover.checksums import PartDigests
from datamover.engine import copy_between
from datamover.engine.proof import MAX_READBACK_CHUNK, readback_chunk
from datamover.engine.runner import Runner
from datamover.manifest import read_manifest
from datamover.options import KiB, MiB, TransferOptions
from datamover.stores.base import Buffer, ObjectInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuse"))
from memstore import MemoryStore


class FlippingStore(MemoryStore):
    """Stores the first ``flips`` bodies it is sent with one bit changed, and says the
    check ``verified_by`` covered every write (None: nothing did)."""

    def __init__(self, flips: int = 0, verified_by: str | None = None) -> None:
        super().__init__()
        self.flips = flips
        self.verified_by = verified_by

    def put(
        self,
        key: str,
        data: Buffer,
        *,
        metadata: Mapping[str, str] | None = None,
        digests: PartDigests | None = None,
    ) -> ObjectInfo:
        body = bytearray(data)
        with self._lock:
            flip = self.flips > 0 and len(body) > 0
            self.flips -= flip
        if flip:
            body[len(body) // 2] ^= 0x10
        info = super().put(key, bytes(body), metadata=metadata)
        return ObjectInfo(info.key, info.size, etag=info.etag, verified=self.verified_by)


def _copy(dst: MemoryStore, tmp_path: Path, **options: object) -> tuple[object, dict[str, bytes]]:
    src = MemoryStore()
    files = {f"f{i}.bin": bytes([i]) * (1000 + i) for i in range(5)}
    for name, data in files.items():
        src.put(f"src/{name}", data)
    opts = TransferOptions(
        state_dir=str(tmp_path / "state"), manifest=str(tmp_path / "m.jsonl"), **options
    )  # type: ignore[arg-type]
    report = copy_between(src, "src/", dst, "dst/", opts)
    return report, files


def test_a_flipped_body_the_store_accepted_is_read_back_removed_and_sent_again(
    tmp_path: Path,
) -> None:
    dst = FlippingStore(flips=2)
    report, files = _copy(dst, tmp_path)
    assert report.ok, report.failures  # type: ignore[attr-defined]
    for name, data in files.items():
        assert dst.data(f"dst/{name}") == data
    entries = read_manifest(str(tmp_path / "m.jsonl")).entries
    assert {e.verified for e in entries} == {"readback"}
    assert dst.calls["readinto"] >= len(files)
    assert dst.calls["delete"] == 2  # each wrong object removed before it was sent again


def test_a_store_that_always_flips_fails_the_file_named_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    dst = FlippingStore(flips=10_000)
    report, files = _copy(dst, tmp_path)
    failed = dict(report.failures)  # type: ignore[attr-defined]
    assert set(failed) == set(files)
    assert all("read back after writing" in why for why in failed.values())
    assert not [k for k in dst.objects if k.startswith("dst/")]


def test_a_write_the_store_checked_is_not_read_back(tmp_path: Path) -> None:
    dst = FlippingStore(verified_by="md5")
    report, _ = _copy(dst, tmp_path)
    assert report.ok  # type: ignore[attr-defined]
    assert dst.calls["readinto"] == 0
    assert {e.verified for e in read_manifest(str(tmp_path / "m.jsonl")).entries} == {"md5"}


def test_fail_and_accept(tmp_path: Path) -> None:
    dst = FlippingStore()
    report, files = _copy(dst, tmp_path / "fail", unverified="fail")
    assert {p for p, _ in report.failures} == set(files)  # type: ignore[attr-defined]
    assert all("--unverified fail" in why for _, why in report.failures)  # type: ignore[attr-defined]
    assert not [k for k in dst.objects if k.startswith("dst/")]
    dst = FlippingStore()
    report, files = _copy(dst, tmp_path / "accept", unverified="accept")
    assert report.ok and report.files_unverified == len(files)  # type: ignore[attr-defined]
    manifest = read_manifest(str(tmp_path / "accept" / "m.jsonl"))
    assert {e.verified for e in manifest.entries} == {"none"}
    assert manifest.summary is not None and manifest.summary["files_unverified"] == len(files)
    assert dst.calls["readinto"] == 0


@pytest.mark.parametrize(
    ("budget", "transfers", "chunk"),
    [
        (256 * MiB, 8, MAX_READBACK_CHUNK),
        (16 * MiB, 8, 512 * KiB),
        (1 * MiB, 256, 1 * KiB),
    ],
)
def test_the_read_back_buffers_come_out_of_the_memory_budget(
    budget: int, transfers: int, chunk: int
) -> None:
    opts = TransferOptions(memory_budget=budget, transfers=transfers)
    assert readback_chunk(opts) == chunk
    assert chunk * transfers <= budget // 4 or chunk == 1 * KiB
    runner = Runner(MemoryStore(), MemoryStore(), opts, lambda r: None)
    assert runner.budget.limit == budget - chunk * transfers
    assert readback_chunk(opts.with_(unverified="accept")) == 0
    assert Runner(MemoryStore(), None, opts, lambda r: None).budget.limit == budget


def test_unknown_policy_is_a_usage_error() -> None:
    from datamover.errors import UsageError

    with pytest.raises(UsageError, match="--unverified"):
        TransferOptions(unverified="maybe")


def test_manifest_show_says_what_covered_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datamover import cli

    _copy(FlippingStore(), tmp_path)
    assert cli.main(["manifest", "show", str(tmp_path / "m.jsonl")]) == 0
    assert "verified by: 5 readback" in capsys.readouterr().out
