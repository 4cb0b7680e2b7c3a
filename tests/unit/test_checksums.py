from __future__ import annotations

import hashlib
import os
import random
import threading

import pytest

from datamover.checksums import ALGORITHMS, OrderedDigest, PartDigests, new_hasher
from datamover.errors import UsageError


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_known_vectors(alg: str) -> None:
    expected = {
        "sha256": hashlib.sha256(b"123456789").hexdigest(),
        "sha512": hashlib.sha512(b"123456789").hexdigest(),
        "md5": hashlib.md5(b"123456789").hexdigest(),
        "crc32c": "e3069283",  # the CRC-32C check value
        "crc64nvme": "ae8b14860a799888",  # the CRC-64/NVME check value
        "blake3": None,
    }[alg]
    h = new_hasher(alg)
    h.update(b"1234")
    h.update(memoryview(bytearray(b"56789")))
    if expected:
        assert h.hexdigest() == expected
    else:
        import blake3

        assert h.hexdigest() == blake3.blake3(b"123456789").hexdigest()


def test_unknown_algorithm_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="choose one of"):
        new_hasher("sha1")


def test_ordered_digest_any_arrival_order_from_threads() -> None:
    data = os.urandom(64 * 1000 + 17)
    parts = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    order = list(range(len(parts)))
    random.Random(7).shuffle(order)
    digest = OrderedDigest(("sha256", "md5"))
    released: list[int] = []
    lock = threading.Lock()

    def add(i: int) -> None:
        def done() -> None:
            with lock:
                released.append(i)

        digest.add(i, parts[i], done)

    threads = [threading.Thread(target=add, args=(i,)) for i in order]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(released) == list(range(len(parts)))
    assert released == sorted(released)  # hashed (and released) in stream order
    assert digest.hexdigests() == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "md5": hashlib.md5(data).hexdigest(),
    }


def test_ordered_digest_cancel_releases_waiting_parts() -> None:
    digest = OrderedDigest(("sha256",))
    released: list[int] = []
    digest.add(2, b"c", lambda: released.append(2))
    digest.add(1, b"b", lambda: released.append(1))
    assert released == []
    digest.cancel()
    assert sorted(released) == [1, 2]
    digest.add(0, b"a", lambda: released.append(0))
    assert sorted(released) == [0, 1, 2]


def test_part_digests_compute_once_and_cache() -> None:
    d = PartDigests(bytearray(b"abc"))
    first = d.get("sha256")
    assert first == hashlib.sha256(b"abc").digest()
    assert d.get("sha256") is first
    assert set(d.known()) == {"sha256"}


@pytest.mark.parametrize("alg", ["crc32c", "crc64nvme"])
def test_crc_combine_joins_adjacent_pieces(alg: str) -> None:
    from datamover.checksums import crc_combine, digest_bytes

    a, b = bytes(range(256)) * 41, b"tail bytes" * 3
    joined = crc_combine(alg, digest_bytes(alg, a), digest_bytes(alg, b), len(b))
    assert joined == digest_bytes(alg, a + b)
    assert crc_combine(alg, digest_bytes(alg, a), digest_bytes(alg, b""), 0) == digest_bytes(alg, a)
