"""How the FUSE adapter turns errors into errnos and log lines (``ops._translated``):
a store's failure after its retries is one warning line, its traceback only at debug
(a store outage wrote a multi-level traceback per failed call); anything else is a
bug, logged with its traceback."""

from __future__ import annotations

import errno
import logging

import pyfuse3
import pytest
import trio

from datamover.errors import TransientError
from datamover_fuse.ops import _translated


def _call(exc: Exception) -> pyfuse3.FUSEError:
    @_translated
    async def getattr(inode: int) -> None:
        raise exc

    async def main() -> pyfuse3.FUSEError:
        with pytest.raises(pyfuse3.FUSEError) as raised:
            await getattr(1)
        return raised.value

    return trio.run(main)


def test_a_store_failure_is_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="datamover_fuse"):
        err = _call(TransientError("s3://b/k: connection refused (after 4 attempts)"))
    assert err.errno == errno.EIO
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "getattr failed: s3://b/k: connection refused (after 4 attempts)"
    ]
    assert all(r.exc_info is None for r in warnings)


def test_a_bug_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="datamover_fuse"):
        err = _call(RuntimeError("a bug"))
    assert err.errno == errno.EIO
    assert [r.exc_info is not None for r in caplog.records] == [True]
