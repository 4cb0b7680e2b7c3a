"""``datamover.crcfast``: the crc32c package's function without its ``__init__``,
whose ``importlib.metadata.version()`` call cost ~20 ms at every process start."""

from __future__ import annotations

import subprocess
import sys

from datamover.crcfast import crc32c


def test_values_match_the_package() -> None:
    import crc32c as package

    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(b"") == 0
    data = bytes(range(256)) * 1000
    assert crc32c(data) == package.crc32c(data)
    assert crc32c(data[1000:], crc32c(data[:1000])) == crc32c(data)  # continues
    assert crc32c(memoryview(data)[5:77]) == package.crc32c(data[5:77])
    # One extension module, whichever way it was reached first.
    assert package.crc32c is crc32c


def test_start_up_does_not_load_importlib_metadata() -> None:
    code = (
        "import sys, datamover.cli.main, datamover.checksums, datamover.engine.largefile, "
        "datamover.stores.posix.sparse, datamover_fuse.blocks; "
        "print('importlib.metadata' in sys.modules, 'crc32c' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["False", "False"]
