"""What one S3 endpoint checks of the bytes it is sent, learnt once per process, and
how every PutObject and UploadPart is sent so that a check the store really makes
covers it (``--s3-checksum``, remote option ``s3_checksum``).

Modes:

==============  =====================================================================
``auto``        probe (below), then send the best check the store enforces:
                ``crc64nvme`` (and multipart uploads with a ``FULL_OBJECT``
                CRC64NVME), else ``crc32c`` (``FULL_OBJECT`` where the store takes
                it), else, over plain http, nothing more (the SigV4 signature already
                covers the body's SHA-256, which the store checks: ``sha256-payload``),
                else ``Content-MD5``, else nothing: writes are then unverified
                (``verified = None``) and a warning says so once
``crc64nvme``,  send that check on every write; probed too, so a store that ignores
``crc32c``,     it is not claimed to have checked it (``verified = None``, warned
``md5``         once); a store that refuses the header fails with a one-line error
                naming the option
``off``         send no checksum header (a store that chokes on them); no probe,
                nothing claimed
==============  =====================================================================

The probe, per endpoint and credentials, once per process, on the first write (reads
never probe): for each candidate it starts a multipart upload under
``.datamover-probe/<random>`` with that checksum algorithm, uploads one tiny part
with a correct checksum (the store takes the header) and one with a deliberately
wrong one (refused: the store checks it; accepted: it doesn't), and aborts the
upload (credentials that may only write under some prefix: the same next to the
key about to be written). Why a multipart upload rather than a PUT of a probe
object: an upload never becomes an object, so the probe leaves no version on a
versioned bucket, nothing under Object Lock (where a probe object could never be
deleted), and needs no delete permission: write-only credentials can start and
upload parts, and if they may not abort, the invisible upload expires under the
bucket's AbortIncompleteMultipartUpload rule (``datamover cleanup`` lists it). A probe
killed before its abort leaves its upload too: each probe's key names its owner, and
the next probe first aborts the uploads whose owner is provably dead or that are over
an hour old, never a live concurrent probe's (``probes.py``). The answer for
parts is taken for PutObject too (no store is known to check one and not the other).
Over plain http the signed payload is probed the same way: a part whose signed
``x-amz-content-sha256`` belongs to other bytes (refused with SignatureDoesNotMatch
or XAmzContentSHA256Mismatch: checked). Cost: 5-14 small requests per process (one
lists the probe prefix's uploads).

Measured (docs/SEMANTICS.md): SeaweedFS checks CRC64NVME, CRC32C and Content-MD5
(``crc64nvme``) but not a signed payload's SHA-256; moto checks nothing (it echoes
what it was sent: an echo is never taken for a check); Ceph RGW 16 checks only
``Content-MD5`` and the signed payload (``sha256-payload`` over http, ``md5`` over
https).

CPU: CRC32C and CRC64NVME run at several GB/s on one core (hardware CRC and
carry-less multiply); MD5 at a few hundred MB/s: stores that check a CRC keep the
fast path.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from datamover.checksums import PartDigests, b64
from datamover.errors import (
    DatamoverError,
    IntegrityError,
    StoreError,
    Unsupported,
    UsageError,
)
from datamover.options import S3_CHECKSUMS
from datamover.stores.s3.client import BucketClient
from datamover.stores.s3.probes import Learnt, near, probe_key, sweep

log = logging.getLogger(__name__)

MODES = S3_CHECKSUMS
#: Where probe uploads are started (never completed).
PROBE_PREFIX = ".datamover-probe/"
_PROBE_BODY = b"datamover checks what this store checks\n"
_WRONG_BODY = b"other bytes"
#: boto3 parameter and algorithm name per checksum.
_BOTO = {"crc64nvme": "CRC64NVME", "crc32c": "CRC32C"}


@dataclass(frozen=True, slots=True)
class Checks:
    """How to send writes to one endpoint, and what they are then verified by.

    ``send``: the checksum sent with every PutObject and UploadPart (``crc64nvme``,
    ``crc32c``, ``md5`` as Content-MD5, or None). ``verified``: what a write sent
    that way is verified by (``VERIFIED_BY``), None when the store checks nothing
    that covers it. ``full_object``: multipart uploads carry a ``FULL_OBJECT``
    checksum of ``send``, which the store compares at completion.
    ``signed_payload``: the store refuses a body whose signed SHA-256 doesn't match
    (then a SignatureDoesNotMatch answer to an upload means changed bytes, not
    wrong credentials).
    """

    send: str | None
    verified: str | None
    full_object: bool = False
    signed_payload: bool = False

    def digest(self, digests: PartDigests) -> bytes | None:
        return digests.get(self.send) if self.send else None

    def headers(self, digests: PartDigests) -> dict[str, str]:
        """The lean path's request headers carrying the check."""
        if self.send == "md5":
            return {"content-md5": b64(digests.get("md5"))}
        if self.send:
            return {f"x-amz-checksum-{self.send}": b64(digests.get(self.send))}
        return {}

    def boto_args(self, digests: PartDigests) -> dict[str, str]:
        """boto3 PutObject/UploadPart arguments carrying the check."""
        if self.send == "md5":
            return {"ContentMD5": b64(digests.get("md5"))}
        if self.send:
            return {f"Checksum{_BOTO[self.send]}": b64(digests.get(self.send))}
        return {}

    def create_args(self) -> dict[str, str]:
        """CreateMultipartUpload arguments for an upload sent this way."""
        if self.send not in _BOTO:
            return {}
        args = {"ChecksumAlgorithm": _BOTO[self.send]}
        if self.full_object:
            args["ChecksumType"] = "FULL_OBJECT"
        return args

    def to_state(self) -> dict[str, Any]:
        return {"send": self.send, "full_object": self.full_object}


def returned_checksum(headers: Mapping[str, Any], algorithm: str) -> str | None:
    """The ``x-amz-checksum-<algorithm>`` value in a response (lean headers or a
    boto3 answer), None when absent."""
    value = headers.get(f"x-amz-checksum-{algorithm}")
    if value is None and algorithm in _BOTO:
        value = headers.get(f"Checksum{_BOTO[algorithm]}")
    return str(value) if value else None


_learnt: Learnt[Checks] = Learnt()


def checks_for(s3: BucketClient, key: str = "") -> Checks:
    """The ``Checks`` for ``s3``'s endpoint, credentials and mode: probed on first
    use in this process (concurrent first callers wait for one probe), then cached.
    ``key`` is what the caller is about to write: credentials that may only write
    under some prefix are probed next to it when ``.datamover-probe/`` is denied. A
    probe that fails (no permission to write, a transient error) raises what the
    write would have raised, and is tried again next time."""
    mode = s3.checksum_mode
    return _learnt.get(
        (s3.endpoint_url, s3.identity, mode),
        lambda: near(key, lambda prefix: _probe(s3, mode, prefix), PROBE_PREFIX),
    )


def remember(s3: BucketClient, checks: Checks) -> None:
    """Take ``checks`` as learnt for ``s3`` (what another process's probe found:
    ``S3Store.prepare_writes`` hands it on)."""
    _learnt.remember((s3.endpoint_url, s3.identity, s3.checksum_mode), checks)


def forget() -> None:
    """Drop what was learnt (tests that change a server under a running process)."""
    _learnt.forget()


def _probe(s3: BucketClient, mode: str, prefix: str) -> Checks:
    signed = s3.signs_payload
    if mode == "off":
        return Checks(None, None, signed_payload=signed)
    sweep(s3, prefix)  # what killed probes left (``probes.py``)
    candidates = ["crc64nvme", "crc32c", "md5"] if mode == "auto" else [mode]
    payload_checked = False
    enforced: str | None = None
    full_object = False
    for alg in candidates:
        outcome, full_object = _probe_one(s3, alg, prefix, explicit=mode != "auto")
        if outcome == "checked":
            enforced = alg
            break
        if alg == "crc32c" and signed:
            # No CRC is checked: over http the signed payload may already cover the
            # bytes at no extra cost (both request paths sign it there).
            payload_checked = _probe_payload(s3, prefix)
            if payload_checked:
                break
    if enforced is None and signed and mode != "auto":
        payload_checked = _probe_payload(s3, prefix)
    where = s3.endpoint_url
    if enforced is not None:
        checks = Checks(enforced, enforced, full_object, signed)
    elif payload_checked:
        checks = Checks(mode if mode != "auto" else None, "sha256-payload", False, signed)
    else:
        checks = Checks(mode if mode != "auto" else None, None, False, signed)
        what = "any checksum" if mode == "auto" else f"the {mode} checksum (--s3-checksum)"
        log.warning(
            "%s: the S3 store does not check %s of what it is sent; its writes are not "
            "verified by the store",
            where,
            what,
        )
    log.info(
        "%s: S3 writes send %s, verified by %s%s",
        where,
        checks.send or "no checksum",
        checks.verified or "nothing",
        " (full-object checksum)" if checks.full_object else "",
    )
    return checks


def _probe_one(s3: BucketClient, alg: str, prefix: str, *, explicit: bool) -> tuple[str, bool]:
    """("checked" | "ignored" | "refused", full_object) for checksum ``alg``."""
    key = probe_key(prefix)
    full_object = alg in _BOTO
    create: dict[str, str] = {}
    if alg in _BOTO:
        create = {"ChecksumAlgorithm": _BOTO[alg], "ChecksumType": "FULL_OBJECT"}
    upload_id: str | None = None
    try:
        try:
            upload_id = s3.create_upload(key, _create_headers(create), **create)
        except DatamoverError as e:
            if not create or not _refused(e):
                raise
            if alg == "crc64nvme":  # S3 has no COMPOSITE CRC64NVME
                return _refused_by_store(s3, alg, e, explicit), False
            full_object = False
            create.pop("ChecksumType")
            upload_id = s3.create_upload(key, _create_headers(create), **create)

        def part(number: int, body: bytes, digest_of: bytes) -> None:
            checks = Checks(alg, alg)
            query = {"partNumber": str(number), "uploadId": str(upload_id)}
            headers = checks.headers(PartDigests(digest_of))
            r = s3.lean_request("PUT", key, body=memoryview(body), query=query, headers=headers)
            if r is not None:
                if not 200 <= r.status < 300:
                    raise s3.lean_error(r, key)
                return
            client = s3.client
            s3.call(
                key,
                client.upload_part,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                **checks.boto_args(PartDigests(digest_of)),
            )

        try:
            part(1, _PROBE_BODY, _PROBE_BODY)
        except DatamoverError as e:
            if isinstance(e, IntegrityError) or not _refused(e):
                raise
            return _refused_by_store(s3, alg, e, explicit), full_object
        try:
            part(2, _PROBE_BODY, _WRONG_BODY)
        except IntegrityError:
            return "checked", full_object
        return "ignored", full_object
    finally:
        if upload_id is not None:
            _abort(s3, key, upload_id)


def _create_headers(create: Mapping[str, str]) -> dict[str, str]:
    """CreateMultipartUpload's boto3 arguments (``create_args``) as request headers."""
    names = {"ChecksumAlgorithm": "x-amz-checksum-algorithm", "ChecksumType": "x-amz-checksum-type"}
    return {names[k]: v for k, v in create.items()}


def _refused(e: DatamoverError) -> bool:
    """An error that means "this request, as built, is not accepted" (InvalidRequest,
    InvalidArgument, NotImplemented), not a failure of the store or the credentials."""
    return type(e) in (StoreError, Unsupported)


def _refused_by_store(s3: BucketClient, alg: str, e: DatamoverError, explicit: bool) -> str:
    if explicit:
        raise UsageError(
            f"{s3.endpoint_url}: the S3 store refuses the {alg} checksum ({e}); use "
            "--s3-checksum auto, md5 or off (or s3_checksum in the remote's config)"
        ) from e
    log.debug("%s: %s checksum refused: %s", s3.endpoint_url, alg, e)
    return "refused"


def _probe_payload(s3: BucketClient, prefix: str) -> bool:
    """Whether the store refuses a body whose signed SHA-256 belongs to other bytes
    (plain http, lean path: it signs the payload there)."""
    lean = s3.lean
    if lean is None:
        return False
    key = probe_key(prefix)
    upload_id = s3.create_upload(key, {})
    try:
        query = {"partNumber": "1", "uploadId": upload_id}
        wrong = hashlib.sha256(_WRONG_BODY).hexdigest()
        r = s3.lean_request(
            "PUT", key, body=memoryview(_PROBE_BODY), query=query, payload_hash=wrong
        )
        if r is None:
            return False
        if 200 <= r.status < 300:
            return False
        code, _ = r.error()
        if code in ("SignatureDoesNotMatch", "XAmzContentSHA256Mismatch", "BadDigest"):
            right = s3.lean_request("PUT", key, body=memoryview(_PROBE_BODY), query=query)
            return right is not None and 200 <= right.status < 300
        raise s3.lean_error(r, key)
    finally:
        _abort(s3, key, upload_id)


def _abort(s3: BucketClient, key: str, upload_id: str) -> None:
    try:
        s3.abort_upload(key, upload_id)
    except DatamoverError as e:
        # Write-only credentials: the upload stays invisible until a lifecycle rule
        # or `datamover cleanup` removes it.
        log.debug("%s: probe upload not aborted: %s", s3.url(key), e)
