"""The #16 kill storm at full size: a ~320 MiB tree (a few large files, some medium
ones below the multipart threshold, many small ones) copied with twelve ``kill -9`` at
seeded random moments, then run to completion, upload (POSIX -> S3) and download
(S3 -> POSIX), default options, against SeaweedFS on 127.0.0.1.

``uv run python bench/killstorm.py [--scale 1.0] [--kills 12] [--seed 16]``

Prints, per direction: bytes the final run moved (of the total), what it reported as
already done, temp files left in the destination, pending uploads left, wall seconds.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from killstorm import DM, make_tree, read_tree, storm, temp_files

from servers import SeaweedServer

MiB = 1 << 20


def _final(cmd: list[str], env: dict[str, str]) -> tuple[str, float]:
    t0 = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - t0
    if done.returncode != 0:
        raise SystemExit(f"final run failed: {done.stdout}{done.stderr}")
    return done.stdout, seconds


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0, help="1.0: ~320 MiB")
    ap.add_argument("--kills", type=int, default=12)
    ap.add_argument("--seed", type=int, default=16)
    args = ap.parse_args()
    sc = args.scale
    big = [int(60 * MiB * sc)] * 4
    medium = [int((3 + i % 5) * MiB * sc) for i in range(12)]
    with tempfile.TemporaryDirectory(prefix="dm-killstorm-") as tmp, SeaweedServer() as server:
        root = Path(tmp)
        src = root / "src"
        expected = make_tree(src, big=big, small=int(1500 * sc), seed=args.seed)
        for i, size in enumerate(medium):
            data = random.Random(i).randbytes(size)
            (src / f"m{i:02d}.bin").write_bytes(data)
            expected[f"m{i:02d}.bin"] = data
        total = sum(map(len, expected.values()))
        bucket = f"dm-{uuid.uuid4().hex[:12]}"
        server.make_bucket(bucket)
        base_env = {**os.environ, **server.env}
        print(f"tree: {len(expected)} files, {total / MiB:.0f} MiB; {args.kills} kills each way")
        for name, s, d in (
            ("upload POSIX->S3", str(src), f"s3://{bucket}/up/"),
            ("download S3->POSIX", f"s3://{bucket}/up/", str(root / "dst")),
        ):
            env = {**base_env, "XDG_STATE_HOME": str(root / f"state-{name[:2]}")}
            cmd = [*DM, "copy", s, d, "--manifest", str(root / f"{name[:2]}.jsonl")]
            t0 = time.monotonic()
            db = root / f"state-{name[:2]}" / "datamover" / "journal.db"
            s_ = storm(
                cmd,
                env,
                db,
                seed=args.seed,
                kills=args.kills,
                max_kills=args.kills,
                delay=(0.1, 1.5),
            )
            print(f"   storm: {s_.kills} kills, {s_.finished_early} runs ended by themselves")
            print(f"   journal progress MiB: {[round(x / MiB) for x in s_.progress]}")
            out, seconds = _final(cmd, env)
            moved = next((x for x in out.splitlines() if "moved" in x), "")
            done = next((x for x in out.splitlines() if "already done" in x), "(none)")
            temps = temp_files(root / "dst") if name.startswith("down") else []
            pending = subprocess.run(
                [*DM, "cleanup", d, "--dry-run"], env=env, capture_output=True, text=True
            ).stdout.splitlines()[-1:]
            print(f"## {name}: storm+final {time.monotonic() - t0:.1f} s, final {seconds:.1f} s")
            print(f"   final run: {moved}")
            print(f"   resumed:   {done}")
            print(f"   temp files left: {len(temps)}; pending uploads: {pending}")
        got = {k: v for k, v in read_tree(root / "dst").items() if ".dmtmp" not in k}
        if got != expected:
            print("DOWNLOAD DIFFERS FROM SOURCE")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
