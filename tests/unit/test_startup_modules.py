"""What every process start imports. ``datamover.crcfast``: the crc32c package's
function without its ``__init__``, whose ``importlib.metadata.version()`` call cost
~20 ms; ``ssl`` only for an https endpoint, ``urllib.request`` (and ``http.client``)
only when a ``*_proxy`` variable is set: ~15 ms more."""

from __future__ import annotations

import os
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


def test_start_up_loads_none_of_the_costly_modules() -> None:
    code = (
        "import sys, datamover.cli.main, datamover.checksums, datamover.engine.largefile, "
        "datamover.stores.posix.sparse, datamover_fuse.blocks, datamover.stores.s3.store, "
        "datamover.stores.s3.lean, datamover.engine.runner\n"
        "from datamover.stores.leanhttp import _proxied\n"
        "print(_proxied('http', '127.0.0.1'))\n"
        "costly = ('importlib.metadata', 'crc32c', 'ssl', 'http.client', 'urllib.request')\n"
        "print(*[m for m in costly if m in sys.modules])"
    )
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    ).stdout.splitlines()
    assert out == ["False", ""]


def test_a_copy_without_a_terminal_loads_no_progress_display(tmp_path) -> None:
    """rich (20-40 ms of start-up) only for a live display on a terminal: not for a
    copy whose standard error is a file or a pipe, nor for ``-q``."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_bytes(b"x")
    code = (
        "import sys\n"
        "from datamover.cli.main import main\n"
        "rc = main(sys.argv[1:])\n"
        "print(rc, 'rich' in sys.modules)"
    )
    for quiet in ([], ["-q"]):
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                *quiet,
                "copy",
                str(tmp_path / "src"),
                str(tmp_path / f"out{len(quiet)}"),
                "--state-dir",
                str(tmp_path / "state"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.stdout.splitlines()[-1] == "0 False", (out.stdout, out.stderr[-2000:])
        assert (tmp_path / f"out{len(quiet)}" / "a").read_bytes() == b"x"
