"""Direct download of one object through datamover's own store (the lean GET path),
the baseline for reads through a mount on Azure and GCS.

``python bench/store_download.py URL`` stats the object and reads it in 16 MiB ranges
(``Store.readinto``) on 8 threads into reused buffers whose bytes are thrown away, so
the number is the store's own speed, not the disk's. Credentials and endpoint come
from the environment, as for ``datamover`` itself.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from datamover.stores import StoreSettings, open_store

PART = 16 * 1024 * 1024
THREADS = 8


def main() -> int:
    store, key = open_store(sys.argv[1], StoreSettings(connections=THREADS))
    size = store.stat(key).size
    local = threading.local()

    def fetch(offset: int) -> int:
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = memoryview(bytearray(PART))
        return store.readinto(key, offset, buf[: min(PART, size - offset)])

    with ThreadPoolExecutor(THREADS) as pool:
        total = sum(pool.map(fetch, range(0, size, PART)))
    store.close()
    if total != size:
        print(f"got {total} bytes, expected {size}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
