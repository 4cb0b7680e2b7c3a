"""Whose a checksum probe's upload is, and when it is abandoned
(``datamover/stores/s3/probes.py``): the rules without a server (the integration test
``test_s3_probe_sweep.py`` drives them against real ones)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from datamover.errors import StoreError, TransientError
from datamover.stores.s3 import probes
from datamover.stores.s3.probes import STALE_AFTER, Me, abandoned, parse_uploads, probe_key

NOW = 2_000_000_000.0
TOKEN = "0123456789abcdef"


def _me() -> Me:
    me = probes.this_process()
    assert me is not None  # Linux, own /proc
    return me


def _dead_pid() -> int:
    run = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(run.stdout)


def _name(owner: str, pid: int, start: str, at: float = NOW) -> str:
    return f"{owner}-{pid}-{start}-{int(at)}-{TOKEN}"


def test_a_probe_key_names_this_process() -> None:
    me = _me()
    key = probe_key(".datamover-probe/")
    owner, pid, start, _at, token = key.removeprefix(".datamover-probe/").split("-")
    assert (owner, int(pid), start) == (me.owner, os.getpid(), me.start)
    assert len(token) == 16
    assert not abandoned(key.removeprefix(".datamover-probe/"), NOW, NOW, me)


def test_a_dead_or_reused_pid_of_this_machine_is_abandoned() -> None:
    me = _me()
    assert abandoned(_name(me.owner, _dead_pid(), "5"), NOW, NOW, me)
    assert abandoned(_name(me.owner, os.getpid(), str(int(me.start) + 1)), NOW, NOW, me)
    assert not abandoned(_name(me.owner, os.getpid(), me.start), NOW, NOW, me)
    assert not abandoned(_name(me.owner, 0, "0"), NOW, NOW, me)  # no pid: never
    # Another machine (or pid namespace), or no owner: only age tells.
    assert not abandoned(_name("f" * 16, _dead_pid(), "5"), NOW, NOW, me)
    assert not abandoned(_name("0" * 16, 0, "0"), NOW, NOW, Me("0" * 16, 0, "0"))
    assert not abandoned(_name(me.owner, _dead_pid(), "5"), NOW, NOW, None)


def test_a_backslash_probe_is_swept_as_sent_or_as_rewritten() -> None:
    """The backslash probe's key ends in ``\\x``, or ``/x`` where the server rewrote
    it (``backslash.py``): the same rules apply to it, and to nothing else after it."""
    me = _me()
    dead = _name(me.owner, _dead_pid(), "5")
    assert abandoned(dead + "\\x", NOW, NOW, me)
    assert abandoned(dead + "/x", NOW, NOW, me)
    assert not abandoned(_name(me.owner, os.getpid(), me.start) + "/x", NOW, NOW, me)
    assert not abandoned(dead + "/y", NOW, NOW, me)  # not a probe's key: left alone


def test_age_needs_both_the_key_and_the_store_to_say_old() -> None:
    old = NOW - STALE_AFTER - 1
    other = "f" * 16
    assert abandoned(_name(other, 123, "5", at=old), old, NOW, None)
    assert not abandoned(_name(other, 123, "5", at=old), NOW, NOW, None)  # clock off
    assert not abandoned(_name(other, 123, "5"), old, NOW, None)  # a made-up Initiated
    assert not abandoned(_name(other, 123, "5", at=old), None, NOW, None)
    # An older version's key (no owner, no time): Initiated alone.
    assert abandoned(TOKEN, old, NOW, None)
    assert not abandoned(TOKEN, NOW, NOW, None)
    assert not abandoned(TOKEN, None, NOW, None)
    # Not a probe's key: never, however old.
    for name in ("notes.txt", f"{TOKEN}/x", _name(other, 1, "1") + "x", ""):
        assert not abandoned(name, old, NOW, None)


def test_an_upload_listing_is_read_and_checked() -> None:
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<Bucket>b</Bucket><Upload><Key>.datamover-probe/a%2Bb</Key><UploadId>u1</UploadId>"
        b"<Initiated>2026-01-02T03:04:05.000Z</Initiated></Upload>"
        b"<Upload><Key>k2</Key><UploadId>u2</UploadId><Initiated>soon</Initiated></Upload>"
        b"<Upload><Key>k3</Key></Upload><EncodingType>url</EncodingType>"
        b"</ListMultipartUploadsResult>"
    )
    (first, second) = parse_uploads(body)
    assert first == (".datamover-probe/a+b", "u1", 1767323045.0)
    assert second == ("k2", "u2", None)
    with pytest.raises(StoreError, match="DTD"):
        parse_uploads(b'<!DOCTYPE x [<!ENTITY a "b">]><x/>')
    with pytest.raises(TransientError):
        parse_uploads(b"<ListMultipartUploadsResult>")
