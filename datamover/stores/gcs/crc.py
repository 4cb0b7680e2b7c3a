"""CRC32C as GCS uses it: the combination of part CRCs into a composite object's CRC
(``datamover.checksums.crc32c_combine``, shared with the engine), and the base64
big-endian form the JSON API carries them in.
"""

from __future__ import annotations

import base64
import binascii

from datamover.checksums import crc32c_combine

__all__ = ["crc32c_combine", "crc_b64", "crc_from_b64"]


def crc_b64(crc: int) -> str:
    return base64.b64encode(crc.to_bytes(4, "big")).decode("ascii")


def crc_from_b64(value: str | None) -> int | None:
    if not value:
        return None
    try:
        raw = base64.b64decode(value)
    except (binascii.Error, ValueError):
        return None
    return int.from_bytes(raw, "big") if len(raw) == 4 else None
