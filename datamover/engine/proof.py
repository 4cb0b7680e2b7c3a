"""What proves a write, and what the engine does when the store proved nothing.

A store's write (``put``, ``commit``, ``copy_from``) says in ``ObjectInfo.verified``
which check it enforced over the bytes it stored (``stores.base``, "Integrity"). When
one did, the file is recorded with that check. When none did (moto checks nothing;
Ceph RGW 16 ignores CRC headers; any store behind a proxy that strips them), the
run's ``--unverified`` policy (``TransferOptions.unverified``) decides:

* ``readback`` (default): the engine reads the committed object back, streamed
  through one ``readback_chunk`` buffer per transfer thread (reserved out of the
  memory budget by the runner), and compares its digest with the one computed while
  the bytes were sent. Equal: recorded ``verified: readback``. Different: the object
  holds other bytes than were sent (a flipped bit the store accepted): it is removed
  and the file fails with ``DigestMismatch``, which the runner redoes like any file
  whose digest disagreed (``RetryPolicy.file_attempts``), so it ends written right or
  failed, named.
* ``fail``: the object is removed and the file fails (``IntegrityError``), named.
* ``accept``: recorded ok with ``verified: none``; the run's summary counts them.

A local filesystem destination is no exception: nothing it enforced covered the
bytes either, so its files are read back too (from the page cache, usually).

A multipart write into a writer that can read its own unfinished file (``read_at``:
a POSIX temp file) is read back *before* its commit, by ``PrefixReadBack``, and
that pass is also where the whole-file digest is computed, once: while the parts
stream in, only their part digests (``part_checksum``, CRC32C by default) are taken
over the bytes received; the read-back computes the manifest's digest over the bytes
on disk together with the same part digests, which must equal the received ones. So
the disk holds what was received, the manifest's digest is of those verified bytes,
and a difference fails the file (``DigestMismatch``, redone) before anything is
visible. One pass of the manifest's algorithm per file instead of two.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from datamover.checksums import crc32c_combine, new_hasher
from datamover.engine.plan import FileJob
from datamover.engine.results import FileResult
from datamover.errors import DatamoverError, DigestMismatch, IntegrityError
from datamover.manifest import VERIFIED_NONE
from datamover.options import KiB, MiB, TransferOptions
from datamover.stores.base import Store

READBACK = "readback"
#: Runs one read with the run's retries (``Runner.retrying`` bound to a file).
Retrying = Callable[[Callable[[], Any]], Any]
#: Largest read-back buffer per transfer thread: one ranged read per 4 MiB (a store
#: that serves a range by reading the whole object, as moto does, pays per request).
MAX_READBACK_CHUNK = 4 * MiB


def readback_chunk(options: TransferOptions) -> int:
    """Bytes of one read-back buffer: 4 MiB, less where a quarter of the memory budget
    can't hold one per transfer thread (never under 1 KiB). 0 unless the policy reads
    back."""
    if options.unverified != READBACK:
        return 0
    share = options.memory_budget // (4 * options.transfers)
    return max(1 * KiB, min(MAX_READBACK_CHUNK, share))


class Prover:
    """Applies the ``--unverified`` policy to writes (see the module docstring)."""

    def __init__(self, dst: Store, options: TransferOptions, chunk: int) -> None:
        self.dst = dst
        self.policy = options.unverified
        self.algorithm = options.checksum
        self.chunk = chunk
        self._local = threading.local()

    def prove(
        self, job: FileJob, result: FileResult, retrying: Retrying, *, link: bool = False
    ) -> None:
        """Set ``result.verified`` for the write that just made ``job.dst_key``, or
        raise: ``IntegrityError`` (policy ``fail``), ``DigestMismatch`` (read back,
        different). ``retrying(fn)`` runs one read with the run's retries; ``link``: the
        file is a symlink, read back as its link text."""
        info = result.dst_info
        if info is None:
            return
        if info.verified:
            result.verified = info.verified
            return
        url = self.dst.url(job.dst_key)
        if self.policy == "accept":
            result.verified = VERIFIED_NONE
            return
        if self.policy == "fail":
            self._remove(job)
            raise IntegrityError(
                f"{url}: no check of the store covered its bytes, and --unverified fail "
                "was given; removed (use --unverified readback to read such files back)",
                key=job.dst_key,
            )
        sent = result.digests.get(self.algorithm)
        if link:
            data, _ = retrying(lambda: self.dst.read_object(job.dst_key))
            hasher = new_hasher(self.algorithm)
            hasher.update(data)
            got, size = hasher.hexdigest(), len(data)
        else:
            got, size = self._read_back(job, result.size, retrying)
        if size != result.size or got != sent:
            self._remove(job)
            raise DigestMismatch(
                f"{url}: read back after writing, it holds {size} bytes with {self.algorithm} "
                f"{got}, not the {result.size} bytes with {sent} sent; the store accepted "
                "bytes changed on the way (removed; the file is sent again)",
                key=job.dst_key,
            )
        result.verified = READBACK

    def buffer(self, size: int) -> memoryview:
        """This thread's read-back buffer, grown (up to ``chunk``) only as far as the
        objects it reads back need: small files never cost a whole chunk."""
        want = min(self.chunk, max(64 * KiB, size + 1))
        buf: memoryview | None = getattr(self._local, "buf", None)
        if buf is None or len(buf) < want:
            buf = memoryview(bytearray(want))
            self._local.buf = buf
        return buf

    def _read_back(self, job: FileJob, size: int, retrying: Retrying) -> tuple[str, int]:
        """(digest, bytes) of the stored object, read in ranges of one buffer. The last
        range asks for one byte past ``size`` where the buffer has room, so an object
        longer than was sent shows without another request."""
        hasher = new_hasher(self.algorithm)
        buf = self.buffer(size)
        offset = 0
        while True:
            want = buf[: min(len(buf), size - offset + 1)]

            def read(at: int = offset, into: memoryview = want) -> int:
                return self.dst.readinto(job.dst_key, at, into)

            n: int = retrying(read)
            hasher.update(want[:n])
            offset += n
            if n < len(want) or offset > size:
                return hasher.hexdigest(), offset

    def _remove(self, job: FileJob) -> None:
        """Remove what the write left: a wrong or unproven object must not stay
        visible. Best effort: a failure to remove is what ``verify`` finds later."""
        with contextlib.suppress(DatamoverError):
            self.dst.delete(job.dst_key)


#: Reads at ``offset`` into ``buf``; returns the bytes read (``read_at`` of a writer).
ReadAt = Callable[[int, memoryview], int]
#: Bytes hashed per call while reading back: a slice that stays in cache between the
#: part digest and the whole-file digests that pass over it.
_HASH_SLICE = 1 * MiB


class PrefixReadBack:
    """The read-back of a file written by parts, done while later parts still arrive.

    ``written(i)`` says part ``i`` is on disk (its ``received`` digest set before);
    ``catch_up()`` then reads back, in file order, every written part after those
    already read back (the contiguous prefix), checking each part's ``part_algorithm``
    digest against ``received`` and feeding the whole-file ``algorithms``; one thread
    at a time does so, the others return at once. ``digests()`` (the commit's caller,
    once every part was written) waits for that thread, reads back what is left and
    returns the whole-file digests; ``close()`` (a failed file) waits for it and ends
    the read-back. The proof is the module docstring's, covering every byte
    on disk before the commit: only this writer writes the temp file, and its parts
    are disjoint, so a part read back stays as read until the rename. A difference
    raises ``DigestMismatch`` (also from ``digests()``, wherever it was found).
    ``buffer()`` gives the calling thread's read buffer."""

    def __init__(
        self,
        read_at: ReadAt,
        *,
        size: int,
        part_size: int,
        received: list[str],
        part_algorithm: str,
        algorithms: tuple[str, ...],
        buffer: Callable[[], memoryview],
        where: str,
        key: str,
    ) -> None:
        self._read_at = read_at
        self.size = size
        self.part_size = part_size
        self.count = max(1, -(-size // part_size))
        self._received = received
        self._part_algorithm = part_algorithm
        self.algorithms = algorithms
        #: A whole-file CRC32C is combined from the parts' CRC32Cs read back (no
        #: second CRC32C pass over the bytes).
        self._combine = part_algorithm == "crc32c" and "crc32c" in algorithms
        self._whole_crc = 0
        self._hashers = [
            (a, new_hasher(a)) for a in algorithms if not (self._combine and a == "crc32c")
        ]
        self._buffer = buffer
        self._where = where
        self._key = key
        self._cond = threading.Condition(threading.Lock())
        self._written = [False] * self.count
        #: Parts read back and checked: ``0 .. done - 1``.
        self.done = 0
        self._busy = False  # a thread is reading back
        self._ended = False  # by digests() or close(): no more catching up
        self._error: BaseException | None = None

    def written(self, index: int) -> None:
        with self._cond:
            self._written[index] = True

    def catch_up(self) -> None:
        """Read back the written parts that follow the ones read back, unless another
        thread does. Raises what the read-back found (also kept for ``digests()``)."""
        with self._cond:
            if self._busy or self._ended or self._error is not None:
                return
            self._busy = True
        try:
            while True:
                with self._cond:
                    start = end = self.done
                    while end < self.count and self._written[end]:
                        end += 1
                    if end == start:
                        self._busy = False
                        self._cond.notify_all()
                        return
                self._read(start, end)
                with self._cond:
                    self.done = end
        except BaseException as e:
            with self._cond:
                self._error = e  # a bug too: the digests are not of the whole file
                self._busy = False  # never leave digests() or close() waiting
                self._cond.notify_all()
            raise

    def digests(self) -> dict[str, str]:
        """The whole-file digests, once every part was written; raises what the
        read-back found. Ends the read-back."""
        with self._cond:
            self._end()
            start = self.done
        self._read(start, self.count)
        got = {a: h.hexdigest() for a, h in self._hashers}
        if self._combine:
            got["crc32c"] = f"{self._whole_crc:08x}"
        return {a: got[a] for a in self.algorithms}

    def close(self) -> None:
        """End the read-back without a result (the file failed): waits for the thread
        reading back, so nothing reads the temp file once it is aborted."""
        with self._cond:
            while self._busy:
                self._cond.wait()
            self._ended = True

    def _end(self) -> None:
        # Under the lock: wait for a reader, keep others out, raise what it found.
        while self._busy:
            self._cond.wait()
        assert not self._ended, "the read-back ended already"
        self._ended = True
        if self._error is not None:
            raise self._error

    def _read(self, start: int, end: int) -> None:
        """Read back parts ``start .. end - 1``, checking each and feeding the digests."""
        size, part_size = self.size, self.part_size
        offset = start * part_size
        stop = min(end * part_size, size)
        if offset >= stop:
            return
        buf = self._buffer()
        hashers = [h for _, h in self._hashers]
        index = start
        part = new_hasher(self._part_algorithm)
        part_end = min(offset + part_size, size)
        while offset < stop:
            want = buf[: min(len(buf), stop - offset)]
            n = self._read_at(offset, want)
            if n <= 0:
                raise DigestMismatch(
                    f"{self._where}: read back before its commit, it ends at {offset} "
                    f"bytes, not the {size} received (removed; the file is sent again)",
                    key=self._key,
                )
            pos = 0
            while pos < n:
                step = min(n - pos, _HASH_SLICE, part_end - offset)
                piece = want[pos : pos + step]
                part.update(piece)
                for h in hashers:
                    h.update(piece)
                pos += step
                offset += step
                if offset == part_end:
                    got = part.hexdigest()
                    if got != self._received[index]:
                        raise DigestMismatch(
                            f"{self._where}: read back before its commit, part {index} "
                            f"holds {self._part_algorithm} {got}, not the "
                            f"{self._received[index]} received; the disk holds other bytes "
                            "than arrived (removed; the file is sent again)",
                            key=self._key,
                        )
                    if self._combine:
                        length = part_end - index * part_size
                        self._whole_crc = crc32c_combine(self._whole_crc, int(got, 16), length)
                    index += 1
                    part = new_hasher(self._part_algorithm)
                    part_end = min(part_end + part_size, size)
