"""``make demo``: start local object stores, move a small research dataset through them
with manifests, verify every hop, and print what happened.

Every step is the real ``datamover`` CLI talking HTTP to real local servers.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from servers import AzuriteServer, FakeGcsServer, SeaweedServer  # noqa: E402

DM = [sys.executable, "-m", "datamover"]


def make_dataset(root: Path) -> int:
    """A run directory shaped like a small instrument dataset."""
    rng = __import__("random").Random(42)
    total = 0
    files = {
        "raw/detector_0001.h5": 48 * 1024 * 1024 + 12345,
        "raw/detector_0002.h5": 20 * 1024 * 1024,
        "calib/dark frame.npy": 2 * 1024 * 1024,
        "calib/flat_field.npy": 2 * 1024 * 1024,
        "logs/acquisition.log": 0,
        "metadata/sample-Ø12.json": 0,
        "README.txt": 0,
    }
    for rel, size in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if size:
            path.write_bytes(rng.randbytes(size))
        total += size
    (root / "logs/acquisition.log").write_text(
        "".join(f"2026-11-24T10:{i // 60:02d}:{i % 60:02d} frame {i} ok\n" for i in range(2000))
    )
    (root / "metadata/sample-Ø12.json").write_text('{"sample": "Ø12", "beamline": "demo"}\n')
    (root / "README.txt").write_text("Demo dataset written by datamover's make demo.\n")
    for i in range(40):
        p = root / "spectra" / f"scan_{i:03d}.csv"
        p.parent.mkdir(exist_ok=True)
        p.write_text("".join(f"{j},{rng.random():.6f}\n" for j in range(200)))
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def run(
    cmd: list[str], env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    words = ["datamover", *cmd[len(DM) :]] if cmd[: len(DM)] == DM else cmd
    shown = " ".join(shlex.quote(w) for w in words)
    print(f"\n$ {shown}", flush=True)
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    out = (proc.stdout + proc.stderr).rstrip()
    if out:
        print("  " + out.replace("\n", "\n  "))
    if proc.returncode != 0:
        print(f"  (exit {proc.returncode})")
        raise SystemExit(f"demo step failed: {shown}")
    return proc


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="datamover-demo-"))
    started = time.monotonic()
    try:
        src = work / "run-2026-11-24"
        size = make_dataset(src)
        print(
            f"dataset: {src} ({size / 2**20:.1f} MiB in {sum(1 for p in src.rglob('*') if p.is_file())} files)"
        )
        print(
            "starting SeaweedFS (S3), Azurite (Azure Blob), fake-gcs-server (GCS) ...", flush=True
        )
        with SeaweedServer() as s3, AzuriteServer(in_memory=True) as az, FakeGcsServer() as gcs:
            s3.make_bucket("research")
            az.make_bucket("archive")
            gcs.make_bucket("mirror")
            env = gcs.client_env(az.client_env(s3.client_env()))
            up, down = work / "upload.manifest.jsonl", work / "download.manifest.jsonl"
            back = work / "restored"
            run(
                [*DM, "copy", str(src), "s3://research/runs/2026-11-24", "--manifest", str(up)], env
            )
            run([*DM, "ls", "-R", "s3://research/runs/2026-11-24/raw"], env)
            run([*DM, "verify", str(up)], env)
            run(
                [*DM, "copy", "s3://research/runs/2026-11-24", str(back), "--manifest", str(down)],
                env,
            )
            run([*DM, "verify", str(down)], env)
            hop1, hop2 = work / "s3-to-azure.jsonl", work / "azure-to-gcs.jsonl"
            print("\n  cross-cloud: S3 -> Azure -> GCS, streamed through memory, digests checked")
            run(
                [
                    *DM,
                    "copy",
                    "s3://research/runs/2026-11-24",
                    "az://archive/2026-11-24",
                    "--manifest",
                    str(hop1),
                ],
                env,
            )
            run(
                [
                    *DM,
                    "copy",
                    "az://archive/2026-11-24",
                    "gs://mirror/2026-11-24",
                    "--manifest",
                    str(hop2),
                ],
                env,
            )
            run([*DM, "verify", str(hop2)], env)
            digests = {
                json.loads(line).get("digest")
                for m in (up, hop1, hop2)
                for line in m.read_text().splitlines()
                if '"raw/detector_0001.h5"' in line
            }
            print(f"  raw/detector_0001.h5 has one sha256 on every hop: {digests.pop()[:16]}...")
            sums = work / "SHA256SUMS"
            run([*DM, "manifest", "export", str(up), "--format", "sha256sum", "-o", str(sums)], env)
            run(["sha256sum", "--quiet", "-c", str(sums)], env, cwd=back)
            print(
                "\n  sha256sum -c: every file restored from the bucket matches the upload manifest"
            )
            diff = subprocess.run(
                ["diff", "-r", str(src), str(back)], capture_output=True, text=True
            )
            print(
                f"  diff -r source restored: {'identical' if diff.returncode == 0 else diff.stdout}"
            )
        print(f"\ndemo finished in {time.monotonic() - started:.1f}s; manifests kept in {work}")
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(back, ignore_errors=True)
        return 0
    except BaseException:
        print(f"work dir kept for inspection: {work}", file=sys.stderr)
        raise


if __name__ == "__main__":
    os.environ.pop("AWS_CA_BUNDLE", None)
    sys.exit(main())
