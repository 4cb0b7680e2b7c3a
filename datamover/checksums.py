"""Streaming hashers and the in-order digest that runs beside parallel parts.

Every algorithm offers the hashlib shape (``update``, ``digest``, ``hexdigest``).
sha256/sha512/md5 are hashlib (OpenSSL; the GIL is released for buffers over 2 KiB,
so hashing overlaps network I/O on other threads); crc32c is the ``crc32c`` package's
hardware implementation; crc64nvme (the CRC-64/NVME that S3 uses for full-object
checksums) is the AWS common runtime's (``awscrt``: carry-less multiply, GIL released);
blake3 is the Rust binding. awscrt and blake3 are imported only when asked for.

``crc_combine`` joins the CRCs of two adjacent pieces into the CRC of both without
reading the bytes again: that is how a multipart upload's full-object CRC is known
from its parts' CRCs, in any order of completion.

``OrderedDigest`` lets parts of one file be read and sent in parallel, in any order,
while the whole-file digest is still computed over the source bytes in stream order:
a part that arrives early waits (holding its buffer, which the engine's memory budget
already counts) until every earlier part has been hashed.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import threading
from collections.abc import Callable
from typing import Any, Protocol

from datamover.crcfast import crc32c as _crc32c_extend
from datamover.errors import UsageError

ALGORITHMS = ("sha256", "sha512", "md5", "crc32c", "crc64nvme", "blake3")
#: The CRCs among ``ALGORITHMS``: digests that ``crc_combine`` can join.
CRCS = ("crc32c", "crc64nvme")
DEFAULT_ALGORITHM = "sha256"
#: Hex digits in each algorithm's digest.
HEX_DIGITS = {"sha256": 64, "sha512": 128, "md5": 32, "crc32c": 8, "blake3": 64}
_LOWER_HEX = re.compile(r"[0-9a-f]+")


def is_hex_digest(value: object, algorithm: str) -> bool:
    """Whether ``value`` is a lower-case hex digest of ``algorithm``'s length: what a
    digest read from metadata or a manifest (untrusted) must be before it is used."""
    return (
        isinstance(value, str)
        and len(value) == HEX_DIGITS.get(algorithm, -1)
        and _LOWER_HEX.fullmatch(value) is not None
    )


class Hasher(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> object: ...
    def digest(self) -> bytes: ...
    def hexdigest(self) -> str: ...


class _Crc32c:
    """CRC32C (Castagnoli) with the hashlib shape; big-endian 4-byte digest, as GCS and
    S3 encode it. Uses the ``crc32c`` package (SSE4.2/ARMv8 CRC instructions, any
    buffer, GIL released): google-crc32c's extension only takes ``bytes``, which would
    cost a copy of every part, and is ~10x slower on these machines."""

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        self._value = _crc32c_extend(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")

    def hexdigest(self) -> str:
        return self.digest().hex()


# -- CRC32C of a concatenation from its pieces' CRC32Cs ---------------------------------
# crc(A + B) = x^(8*len(B)) * crc(A) + crc(B) over GF(2) modulo the polynomial (the pre-
# and post-inversion cancel out, as in zlib's crc32_combine), with zlib's current method
# (x2nmodp over a table of x^(2^k)). Used by GCS composites and by downloads whose
# whole-file CRC32C is folded from their parts' (``engine.proof``).

#: CRC-32C's polynomial, bit-reflected (as the CRC instructions and ``crc32c`` use it).
_CRC32C_POLY = 0x82F63B78


def _multmodp(a: int, b: int) -> int:
    """``a * b`` modulo the polynomial, in the reflected bit order (x^0 is bit 31)."""
    if a == 0:
        return 0
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ _CRC32C_POLY if b & 1 else b >> 1


#: ``x^(2^k)`` modulo the polynomial, k = 0..31.
_X2N = [1 << 30]
for _ in range(31):
    _X2N.append(_multmodp(_X2N[-1], _X2N[-1]))


@functools.lru_cache(maxsize=64)
def _shift_operator(nbytes: int) -> int:
    """x^(8 * nbytes) modulo the polynomial (cached: all parts but the last share one
    length, so folding 10,000 part CRCs costs 10,000 multiplications)."""
    p, k = 1 << 31, 3  # x^0; 8 * n = n << 3
    while nbytes:
        if nbytes & 1:
            p = _multmodp(_X2N[k & 31], p)
        nbytes >>= 1
        k += 1
    return p


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC32C of ``A + B`` from ``crc1`` (of A), ``crc2`` (of B) and ``len(B)``,
    without reading the bytes."""
    if len2 < 0:
        raise ValueError("len2 must be >= 0")
    return _multmodp(_shift_operator(len2), crc1) ^ crc2


class _Crc64Nvme:
    """CRC-64/NVME with the hashlib shape; big-endian 8-byte digest, as S3 encodes it.
    awscrt takes any buffer and releases the GIL."""

    _fn: Callable[[Any, int], int] | None = None

    def __init__(self) -> None:
        if _Crc64Nvme._fn is None:
            from awscrt.checksums import crc64nvme

            _Crc64Nvme._fn = crc64nvme
        self._value = 0

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        assert _Crc64Nvme._fn is not None
        self._value = _Crc64Nvme._fn(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(8, "big")

    def hexdigest(self) -> str:
        return self.digest().hex()


def crc_combine(algorithm: str, first: bytes, second: bytes, second_length: int) -> bytes:
    """The ``algorithm`` CRC (a digest as ``PartDigests`` gives it) of ``A + B`` from
    ``first = crc(A)``, ``second = crc(B)`` and ``len(B)``."""
    from awscrt import checksums

    combine = {"crc32c": checksums.combine_crc32c, "crc64nvme": checksums.combine_crc64nvme}
    if algorithm not in combine:
        raise ValueError(f"{algorithm} is not a CRC that can be combined")
    value = combine[algorithm](
        int.from_bytes(first, "big"), int.from_bytes(second, "big"), second_length
    )
    return int(value).to_bytes(len(first), "big")


def new_hasher(algorithm: str) -> Hasher:
    """A fresh hasher for ``algorithm`` (one of ``ALGORITHMS``)."""
    if algorithm in ("sha256", "sha512", "md5"):
        h: Hasher = hashlib.new(algorithm)
        return h
    if algorithm == "crc32c":
        return _Crc32c()
    if algorithm == "crc64nvme":
        return _Crc64Nvme()
    if algorithm == "blake3":
        try:
            from blake3 import blake3
        except ImportError as e:  # pragma: no cover - blake3 is a core dependency
            raise UsageError(
                "checksum blake3 needs the 'blake3' package: pip install blake3"
            ) from e
        b: Hasher = blake3(max_threads=1)
        return b
    raise UsageError(
        f"unknown checksum algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}"
    )


def check_algorithm(algorithm: str) -> str:
    """Validate an algorithm name given by a user; returns it lower-cased."""
    alg = algorithm.lower()
    if alg not in ALGORITHMS:
        raise UsageError(
            f"unknown checksum algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}"
        )
    return alg


def digest_bytes(algorithm: str, data: bytes | bytearray | memoryview) -> bytes:
    h = new_hasher(algorithm)
    h.update(data)
    return h.digest()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


class PartDigests:
    """Digests of one part's bytes, computed on demand and cached.

    The engine computes the manifest algorithm for every part; a store that wants a
    different one for its provider-side check (S3 CRC32C, Azure MD5, GCS CRC32C) asks
    for it here, so no algorithm is computed twice over the same bytes.
    """

    __slots__ = ("_data", "_raw")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = data
        self._raw: dict[str, bytes] = {}

    def get(self, algorithm: str) -> bytes:
        raw = self._raw.get(algorithm)
        if raw is None:
            raw = digest_bytes(algorithm, self._data)
            self._raw[algorithm] = raw
        return raw

    def known(self) -> dict[str, bytes]:
        return dict(self._raw)


class OrderedDigest:
    """Whole-stream digest fed by parts that complete in any order.

    ``add(index, data, done)`` hands over part ``index``; the bytes are hashed as soon
    as every earlier part has been, by whichever thread makes the run contiguous, and
    then ``done()`` is called so the caller can release the buffer. Hashing runs
    outside the lock; one thread hashes at a time so stream order holds.
    """

    def __init__(self, algorithms: tuple[str, ...]) -> None:
        self._hashers = [new_hasher(a) for a in algorithms]
        self.algorithms = algorithms
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[bytes | bytearray | memoryview, Callable[[], None]]] = {}
        self._next = 0
        self._draining = False
        self._cancelled = False
        self.bytes_hashed = 0

    def add(
        self, index: int, data: bytes | bytearray | memoryview, done: Callable[[], None]
    ) -> None:
        with self._lock:
            if self._cancelled:
                cancelled = True
            else:
                cancelled = False
                self._pending[index] = (data, done)
                if self._draining:
                    return
                self._draining = True
        if cancelled:
            done()
            return
        while True:
            with self._lock:
                item = self._pending.pop(self._next, None)
                if item is None:
                    self._draining = False
                    return
                self._next += 1
            chunk, callback = item
            for h in self._hashers:
                h.update(chunk)
            self.bytes_hashed += len(chunk)
            callback()

    def cancel(self) -> None:
        """Give up: release every waiting part now; later ``add`` calls release at once."""
        with self._lock:
            self._cancelled = True
            waiting = list(self._pending.values())
            self._pending.clear()
        for _, callback in waiting:
            callback()

    @property
    def parts_hashed(self) -> int:
        return self._next

    def hexdigests(self) -> dict[str, str]:
        """Final digests; call only after every part has been added."""
        with self._lock:
            if self._pending:
                raise RuntimeError("OrderedDigest finished with parts still pending")
        return {a: h.hexdigest() for a, h in zip(self.algorithms, self._hashers, strict=True)}
