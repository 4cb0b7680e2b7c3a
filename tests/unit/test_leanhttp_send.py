"""``leanhttp``'s gathering write: a request body given as several buffers (the GCS
multipart upload's framing around the caller's bytes) goes out whole and in order
however few bytes the kernel takes per call, without being joined first."""

from __future__ import annotations

from typing import Any

import pytest

from datamover.stores.leanhttp import _send, body_parts, body_size


class _Trickle:
    """A socket that takes at most ``step`` bytes per ``sendmsg``/``send``."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.got = bytearray()
        self.calls = 0

    def sendmsg(self, buffers: list[Any]) -> int:
        self.calls += 1
        joined = b"".join(bytes(b) for b in buffers)[: self.step]
        self.got += joined
        return len(joined)

    def sendall(self, data: Any) -> None:
        self.calls += 1
        self.got += bytes(data)


@pytest.mark.parametrize("step", [1, 3, 10, 11, 12, 1000])
@pytest.mark.parametrize("gather", [True, False])
def test_every_byte_goes_out_in_order(step: int, gather: bool) -> None:
    head, body = b"HEAD\r\n\r\n", (b"--b\r\n", memoryview(bytearray(b"payload")), b"", b"--b--")
    sock = _Trickle(step)
    _send(sock, [head, *body_parts(body)], gather=gather)  # type: ignore[arg-type]
    assert bytes(sock.got) == head + b"--b\r\npayload--b--"


def test_body_parts_and_size() -> None:
    assert body_parts(None) == [] and body_size(None) == 0
    assert body_size(b"abc") == 3
    assert body_size((b"ab", memoryview(b"cde"), b"")) == 5
    assert len(body_parts((b"ab", b""))) == 1
