"""Reading through a real mount (docs/SEMANTICS.md, "Reading"), counted on the wire:
the mount talks to SeaweedFS through ``CountingProxy``, which forwards every byte and
records each GET and its ``Range``.

* a sequential reader is served by few, big, parallel ranged GETs: the window ramps
  1, 2, 4, 8 MiB, then ranges of ``read_part_size``, never more than ``read_window``
  ahead;
* as root, the mount raises the kernel's read-ahead and its background-request limit
  (without the latter the kernel drops and re-reads part of every read-ahead window);
* readers beyond ``prefetch_budget`` still read the right bytes, in bounded memory;
* with ``--direct-io``, files opened read-only bypass the page cache: streamed and small
  reads give the right bytes, a shared mapping is refused, writes keep working.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from datamover.stores.base import MiB
from datamover_fuse import MountOptions
from datamover_fuse.mount import fusectl_dir, mount_entry

from counting_proxy import CountingProxy
from mounting import Mount, Target, mount_through, run

pytestmark = [pytest.mark.fuse, pytest.mark.cloud, pytest.mark.timeout(180)]


@pytest.fixture
def proxy(s3_target: Target) -> Iterator[CountingProxy]:
    with CountingProxy(s3_target.backend.server.endpoint) as p:
        yield p


def put_random(s3_target: Target, name: str, size: int) -> tuple[str, str]:
    """A new object of ``size`` random bytes: (key, sha256 hex)."""
    data = os.urandom(size)
    key = s3_target.fresh_key(name)
    s3_target.store.put(key, data)
    return key, hashlib.sha256(data).hexdigest()


def sha256_of(path: Path) -> str:
    return run(["sha256sum", str(path)]).stdout.split()[0]


def vm_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.parametrize("part_mib", [8, 16])
def test_sequential_read_is_few_big_parallel_ranged_gets(
    s3_target: Target, proxy: CountingProxy, tmp_path: Path, part_mib: int
) -> None:
    part = part_mib * MiB
    size = 96 * MiB + 12345
    key, digest = put_random(s3_target, "seq.bin", size)
    with mount_through(
        proxy, s3_target, tmp_path, read_part_size=part, read_window=4 * part
    ) as mount:
        proxy.reset()
        assert sha256_of(mount.path / key) == digest
        path = f"/{s3_target.backend.bucket}/{key}"
        gets = proxy.paths("GET").count(path)
        ranges = sorted((first, last) for p, first, last in proxy.ranges if p == path)
    # The window: 1 + 2 + 4 + 8 MiB, then whole parts, then the tail.
    ramp = [MiB, 2 * MiB, 4 * MiB, 8 * MiB][: {8: 3, 16: 4}[part_mib]]
    expected = len(ramp) + -(-(size - sum(ramp)) // part)
    # A straggler may be read directly (at most 1 MiB, the kernel's request): on a
    # quiet machine one or two, on a loaded CI runner more (seen: 29 GETs for 15).
    # Either way a handful of big ranges, far from the kernel's 97 requests.
    assert expected <= gets <= 2 * expected, (gets, expected)
    assert len(ranges) == gets
    lengths = [last - first + 1 for first, last in ranges]
    assert max(lengths) == part
    assert sum(1 for n in lengths if n > MiB) >= expected - 1, lengths  # the first is 1 MiB
    # Every byte fetched, hardly any twice: a straggler's MiB at most.
    end = 0
    for first, last in ranges:
        assert first <= end
        end = max(end, last + 1)
    stragglers = gets - expected
    assert end == size and sum(lengths) <= size + max(2, stragglers) * MiB
    # In parallel, within the window. The window is counted from the newest request
    # the kernel sent, and the kernel's own read-ahead (``read_ahead``, 16 MiB by
    # default) sends a burst of requests before the first ranges answer: each request
    # of the burst schedules one range and doubles the window, so the ramp's small
    # ranges can all be in flight still when the full parts are (seen: 1-3, 3-7, 7-15
    # MiB and four 16 MiB parts at once, 7 GETs). The bound that holds: nothing in
    # flight reaches past read_ahead + read_window, and the ranges in flight are those
    # that start below it, plus one direct read (at most 1 MiB) of a straggler.
    reach = MountOptions().read_ahead + 4 * part
    in_flight = proxy.max_in_flight["GET"]
    assert 2 <= in_flight <= sum(1 for first, _ in ranges if first < reach) + 1 + stragglers, (
        proxy.peak_gets
    )
    peak = [r for r in proxy.peak_gets if r is not None]
    assert sum(last - first + 1 for first, last in peak) <= reach + max(1, stragglers) * MiB, peak
    # A sequential reader never takes the block cache's random-read path (its GETs
    # around random reads, or the background fetch of the whole object).
    assert "read cache: 0 reads from it, 0 GETs around random reads, 0 objects" in (
        mount.log.read_text()
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may tune the kernel's limits")
def test_root_mount_raises_read_ahead_and_background_requests(
    s3_target: Target, tmp_path: Path
) -> None:
    options = {"read_ahead": 8 * MiB, "max_background": 32}
    with Mount(
        s3_target.backend.url(), tmp_path / "m", s3_target.backend.env, options=options
    ) as mount:
        found = mount_entry(str(mount.path))
        conn = fusectl_dir(str(mount.path))
        assert found is not None and conn is not None
        bdi = f"/sys/class/bdi/{found[0]}/read_ahead_kb"
        want = {bdi: "8192", f"{conn}/max_background": "32", f"{conn}/congestion_threshold": "24"}
        deadline = time.monotonic() + 10  # tuned just after the kernel's INIT
        while True:
            got: dict[str, str | None] = {}
            for path in want:
                try:
                    got[path] = Path(path).read_text().strip()
                except OSError:
                    got[path] = None
            if got == want or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert got == want, mount.log_tail()


def test_direct_io_reads_bypass_the_page_cache(s3_target: Target, tmp_path: Path) -> None:
    data = os.urandom(40 * MiB + 777)
    key = s3_target.fresh_key("dio.bin")
    s3_target.store.put(key, data)
    with s3_target.remount(tmp_path, "--direct-io") as mount:
        path = mount.path / key
        assert sha256_of(path) == hashlib.sha256(data).hexdigest(), mount.log_tail()
        with open(path, "rb", buffering=0) as fh:
            for offset, length in ((12345, 100), (len(data) - 50, 4096), (7 * MiB - 3, 3 * MiB)):
                fh.seek(offset)
                assert fh.read(length) == data[offset : offset + length]
            # The kernel keeps no pages of a direct_io file: a shared mapping is refused
            # (MountOptions.direct_io), which also shows the option reached the kernel.
            with pytest.raises(OSError) as refused:
                mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            assert refused.value.errno == errno.ENODEV
        # Files opened for writing keep the page cache: written, then read back.
        written = mount.path / s3_target.fresh_key("dio-written.bin")
        written.parent.mkdir(parents=True, exist_ok=True)
        written.write_bytes(data[: 3 * MiB])
        assert written.read_bytes() == data[: 3 * MiB]
    assert s3_target.store.read_object(str(written.relative_to(mount.path)))[0] == data[: 3 * MiB]


def test_o_direct_open_bypasses_the_page_cache_without_the_option(
    s3_target: Target, tmp_path: Path
) -> None:
    """On the default mount one program can ask for what ``--direct-io`` gives every
    read-only open (docs/SEMANTICS.md): ``dd iflag=direct`` reads the right bytes and
    leaves no pages of the file in the page cache; a plain read then fills it."""
    data = os.urandom(24 * MiB + 4321)
    key = s3_target.fresh_key("odirect.bin")
    s3_target.store.put(key, data)
    with s3_target.remount(tmp_path) as mount:
        path = mount.path / key
        out = subprocess.run(
            ["dd", f"if={path}", "bs=1M", "iflag=direct", "status=none"],
            capture_output=True,
            timeout=120,
            check=True,
        ).stdout
        assert hashlib.sha256(out).hexdigest() == hashlib.sha256(data).hexdigest()

        def resident() -> int:
            return int(run(["fincore", "-n", "-b", "-o", "RES", str(path)]).stdout.split()[0])

        assert resident() == 0
        assert sha256_of(path) == hashlib.sha256(data).hexdigest()
        assert resident() > 0


def test_readers_beyond_the_prefetch_budget_read_right_in_bounded_memory(
    s3_target: Target, tmp_path: Path
) -> None:
    budget = 32 * MiB
    objects = [put_random(s3_target, f"r{i}.bin", 40 * MiB + i) for i in range(4)]
    options = {"prefetch_budget": budget, "read_part_size": 8 * MiB, "read_window": 32 * MiB}
    with Mount(
        s3_target.backend.url(), tmp_path / "m", s3_target.backend.env, options=options
    ) as mount:
        assert mount.proc is not None
        pid = mount.proc.pid
        before = vm_kib(pid, "VmRSS")
        procs = [
            subprocess.Popen(
                ["sha256sum", str(mount.path / key)], stdout=subprocess.PIPE, text=True
            )
            for key, _ in objects
        ]
        outs = [p.communicate(timeout=120)[0].split()[0] for p in procs]
        grown = vm_kib(pid, "VmHWM") - before
    assert outs == [digest for _, digest in objects]
    # Four readers wanting 32 MiB windows each share 32 MiB of read-ahead; the rest
    # of what they read goes straight through (requests of 1 MiB at most).
    assert grown * 1024 < budget + 64 * MiB, f"the mount grew by {grown} KiB"
