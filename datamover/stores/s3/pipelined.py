"""``S3Store.pipelined_reads``: plain GETs of whole small objects, several in flight
from one thread over the lean path (``stores/leanpipe.py``). Only a 200 answer is used;
anything else (an error status, a redirect, a broken or malformed answer, a body over
what the listing said) is left to ``S3Store.read_object``, which retries and maps it."""

from __future__ import annotations

from datamover.stores.base import ObjectInfo, whole_read_limit
from datamover.stores.leanhttp import LeanUnavailable
from datamover.stores.leanpipe import LeanPipeline, Sent
from datamover.stores.s3.client import BucketClient
from datamover.stores.s3.lean import LeanS3
from datamover.stores.s3.objectinfo import lean_info


class _Started:
    __slots__ = ("info", "key", "sent")

    def __init__(self, key: str, info: ObjectInfo, sent: Sent) -> None:
        self.key, self.info, self.sent = key, info, sent


class S3PipelinedReads:
    """Whole-object GETs, up to ``width`` in flight (``stores.base.PipelinedReads``)."""

    def __init__(self, s3: BucketClient, lean: LeanS3, width: int, max_single_put: int) -> None:
        self.s3, self.lean = s3, lean
        self.max_single_put = max_single_put
        self.pipe: LeanPipeline = lean.pipeline(width)

    def start(self, key: str, info: ObjectInfo) -> object | None:
        try:
            head = self.lean.get_head(key)
        except LeanUnavailable:
            return None
        sent = self.pipe.send(head)
        return None if sent is None else _Started(key, info, sent)

    def finish(self, started: object) -> tuple[bytes | bytearray, ObjectInfo] | None:
        assert isinstance(started, _Started)
        key = started.key
        limit = whole_read_limit(started.info, self.max_single_put)
        r = self.pipe.receive(started.sent, limit=limit)
        if r is None or r.status != 200:
            return None
        self.s3.authenticated = True
        return r.body, lean_info(key, r, len(r.body))

    def abandon(self, started: object) -> None:
        assert isinstance(started, _Started)
        self.pipe.abandon(started.sent)

    def close(self) -> None:
        self.pipe.close()


__all__ = ["S3PipelinedReads"]
