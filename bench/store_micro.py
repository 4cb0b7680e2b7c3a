"""Client CPU of a store's per-request path: N small PUTs then N whole GETs through a
datamover store, on 16 threads, with the lean path on and off.

``python bench/store_micro.py URL [N]`` (URL a prefix such as ``az://c/micro/``;
credentials and endpoint from the environment) runs the store in a child process per
mode (``DATAMOVER_{AZURE,GCS,S3}_LEAN`` = 1 / 0) and prints the user+sys CPU seconds
of each phase: the cost the lean paths remove, without the engine around it.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from datamover.stores import StoreSettings, open_store
from datamover.stores.base import ObjectInfo

SIZE = 4096
THREADS = 16


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child(url: str, n: int) -> None:
    store, prefix = open_store(url, StoreSettings(connections=THREADS))
    data = os.urandom(SIZE)
    keys = [f"{prefix}f{i:06d}" for i in range(n)]
    with ThreadPoolExecutor(THREADS) as pool:
        began = _cpu()
        list(pool.map(lambda k: store.put(k, data), keys))
        put = _cpu() - began
        began = _cpu()
        list(pool.map(lambda k: store.read_object(k, ObjectInfo(k, SIZE)), keys))
        get = _cpu() - began
        list(pool.map(store.delete, keys))
    store.close()
    print(f"{put:.2f} {get:.2f}")


def main() -> int:
    if sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
        return 0
    url, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    print(f"{n} x {SIZE} B, {THREADS} threads, client CPU s   PUT    GET")
    for mode in ("1", "0"):
        env = dict(os.environ)
        for name in ("AZURE", "GCS", "S3"):
            env[f"DATAMOVER_{name}_LEAN"] = mode
        out = subprocess.run(
            [sys.executable, __file__, "--child", url, str(n)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        label = "lean" if mode == "1" else "SDK "
        print(f"{label}{'':38}{out[0]:>6} {out[1]:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
