"""The probes' uploads (the checksum probe, ``checks.py``; the backslash probe,
``backslash.py``, whose keys end in ``\\x``, or ``/x`` as the server stored them):
whose each one is, and sweeping up those a killed process left; and what each probe
learnt, kept per server for the process (``Learnt``).

A probe starts a multipart upload and aborts it a few requests later. A process
killed in between (kill -9, a crash, the machine going down) leaves that upload
behind: invisible, but stored until a lifecycle rule or ``datamover cleanup`` removes
it. So a probe's key names its owner and its time,
``<prefix><owner>-<pid>-<start>-<time>-<random>`` (``owner``: a hash of this boot's
id and this pid namespace, nothing more about the machine; ``start``: the process's
start time in clock ticks since boot, which tells a reused pid apart; ``time``: Unix
seconds), and before probing, a process lists the uploads under the probe prefix (one
page, ``MAX_LISTED``) and aborts (at most ``MAX_ABORTS``) those provably abandoned:

- the owner is this boot and pid namespace, and that pid no longer exists, or is now
  a process that started at another time;
- or it is over ``STALE_AFTER`` (1 hour) old both by the time in its key and by the
  store's ``Initiated`` (a probe lasts seconds): this covers other machines' and
  other containers' probes. Both must say so: a clock an hour wrong, or a store that
  lists a made-up date (moto lists every upload as started in 2010), is not enough.
  Older versions' keys, ``<prefix><random>``, carry no time: their ``Initiated``
  alone decides.

Never a live concurrent probe: one from another machine or pid namespace is only
ever aborted by age, and a pid that still exists counts as alive unless its start
time can be read and differs (a process this user may not inspect, as under
``hidepid``, stays alive). Where /proc can't say who we are (not Linux, a /proc of
another pid namespace), the key's owner is ``0`` * 16 with pid 0 and only the age
rule applies. Bucket contents are untrusted: a key that claims to be ours can only
get an upload under the probe prefix aborted, which is what the prefix is for. The
sweep never fails the caller: no permission to list or to abort (write-only
credentials) and store errors are logged at debug level and the probe goes on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar
from urllib.parse import unquote_plus

from datamover.errors import DatamoverError, PermissionDenied, StoreError, TransientError
from datamover.stores.base import MiB
from datamover.stores.s3.client import BucketClient

log = logging.getLogger(__name__)

#: A probe started longer ago than this is abandoned, whoever started it.
STALE_AFTER = 3600.0
#: Uploads listed per sweep (one ListMultipartUploads page) and aborted at most.
MAX_LISTED = 1000
MAX_ABORTS = 32
#: A page of 1,000 uploads with 1 KiB keys is well under this.
_MAX_BODY = 8 * MiB
#: What follows a probe key when the key itself is probed (``backslash.py``): ``\\x``
#: as sent, ``/x`` where the server turned the backslash into a slash.
PROBE_SUFFIX = "x"
_OWNED = re.compile(
    r"([0-9a-f]{16})-([0-9]{1,10})-([0-9]{1,20})-([0-9]{1,12})-[0-9a-f]{16}(?:[\\/]x)?"
)
_NOBODY = "0" * 16
_UNOWNED = re.compile(r"[0-9a-f]{16}")


T = TypeVar("T")


class Learnt(Generic[T]):
    """What a probe found, per server (endpoint, credentials, ...), for this process.

    ``get`` answers from what was learnt, else runs ``learn`` once: concurrent first
    callers for one server wait for that one probe, others are not held up. When
    ``learn`` raises, nothing is kept and the next caller probes again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[Hashable, T] = {}
        self._gates: dict[Hashable, threading.Lock] = {}

    def get(self, ident: Hashable, learn: Callable[[], T]) -> T:
        with self._lock:
            if ident in self._known:
                return self._known[ident]
            gate = self._gates.setdefault(ident, threading.Lock())
        with gate:
            with self._lock:
                if ident in self._known:
                    return self._known[ident]
            value = learn()
            with self._lock:
                self._known[ident] = value
            return value

    def remember(self, ident: Hashable, value: T) -> None:
        """Take ``value`` as learnt unless something already was."""
        with self._lock:
            self._known.setdefault(ident, value)

    def forget(self) -> None:
        """Drop what was learnt (tests that change a server under a running process)."""
        with self._lock:
            self._known.clear()


def near(key: str, probe: Callable[[str], T], prefix: str) -> T:
    """``probe(prefix)``; where that is denied, the probe next to ``key`` (credentials
    that may only write under some prefix)."""
    try:
        return probe(prefix)
    except PermissionDenied:
        if "/" not in key:
            raise
        return probe(key.rsplit("/", 1)[0] + "/.datamover-probe-")


@dataclass(frozen=True, slots=True)
class Me:
    owner: str
    pid: int
    start: str


def _start_ticks(pid: int | str) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time, clock ticks since boot), None when
    it can't be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read(4096)
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()  # the name may hold spaces and ")"
    return fields[19].decode() if len(fields) > 19 and fields[19].isdigit() else None


def this_process() -> Me | None:
    """Who this process is, as probe keys name it; None when /proc can't say."""
    pid = os.getpid()
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            boot = f.read(64).strip()
        namespace = os.readlink("/proc/self/ns/pid")
        with open("/proc/self/stat", "rb") as f:
            listed_pid = f.read(32).split(b" ", 1)[0]
    except OSError:
        return None
    start = _start_ticks("self")
    if not boot or start is None or listed_pid != str(pid).encode():
        return None  # a /proc of another pid namespace: its pids are not ours
    owner = hashlib.sha256(b"datamover probe\0" + boot + b"\0" + namespace.encode()).hexdigest()
    return Me(owner[:16], pid, start)


def probe_key(prefix: str) -> str:
    """A new probe upload's key under ``prefix``, naming this process."""
    me = this_process() or Me(_NOBODY, 0, "0")
    return f"{prefix}{me.owner}-{me.pid}-{me.start}-{int(time.time())}-{secrets.token_hex(8)}"


def _alive(pid: int, start: str) -> bool:
    """False only when process ``pid`` (of this pid namespace) provably is not the one
    that started at ``start``."""
    if pid <= 0:
        return True  # no pid named (and kill(0) would mean our process group)
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the pid exists
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # EPERM: it exists, another user's
        pass
    now = _start_ticks(pid)
    return now is None or now == start


def abandoned(name: str, initiated: float | None, now: float, me: Me | None) -> bool:
    """Whether the probe upload named ``name`` (its key after the prefix), started at
    ``initiated`` (the store's time, seconds), is a killed probe's. ``me``:
    ``this_process()``."""
    owned = _OWNED.fullmatch(name)
    if owned is None:
        # An older version's probe (or not a probe's key at all: left alone).
        old = initiated is not None and now - initiated > STALE_AFTER
        return old and _UNOWNED.fullmatch(name) is not None
    if initiated is not None and min(now - initiated, now - int(owned[4])) > STALE_AFTER:
        return True
    if me is None or owned[1] != me.owner or owned[1] == _NOBODY:
        return False
    return not _alive(int(owned[2]), owned[3])


def list_probe_uploads(s3: BucketClient, prefix: str) -> list[tuple[str, str, float | None]]:
    """One ListMultipartUploads page under ``prefix``: (key, upload id, initiated)."""
    query = {"uploads": "", "prefix": prefix, "max-uploads": str(MAX_LISTED)}
    r = s3.lean_request("GET", "", query=query, max_body=_MAX_BODY)
    if r is None:
        page = s3.call(
            prefix, s3.client.list_multipart_uploads, Prefix=prefix, MaxUploads=MAX_LISTED
        )
        found = []
        for u in page.get("Uploads") or ():
            key, upload_id, at = u.get("Key"), u.get("UploadId"), u.get("Initiated")
            if isinstance(key, str) and isinstance(upload_id, str) and upload_id:
                found.append((key, upload_id, at.timestamp() if isinstance(at, datetime) else None))
        return found
    if r.status != 200:
        raise s3.lean_error(r, prefix)
    return parse_uploads(bytes(r.body))


def _seconds(upload: ET.Element, ns: str) -> float | None:
    """An upload's ``Initiated`` (ISO 8601) as seconds; None when absent or unreadable
    (then only its owner can make it abandoned)."""
    text = upload.findtext(f"{ns}Initiated") or ""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at.timestamp() if at.tzinfo is not None else None


def parse_uploads(body: bytes) -> list[tuple[str, str, float | None]]:
    """A ListMultipartUploads result's uploads: (key, upload id, initiated seconds)."""
    if b"<!DOCTYPE" in body:
        raise StoreError("upload listing: the response declares a DTD (S3 never sends one)")
    try:
        root = ET.fromstring(body)
    except (ET.ParseError, LookupError) as e:
        raise TransientError(f"upload listing: malformed response ({e})") from e
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    url_encoded = (root.findtext(f"{ns}EncodingType") or "") == "url"
    found = []
    for u in root.iterfind(f"{ns}Upload"):
        key, upload_id = u.findtext(f"{ns}Key"), u.findtext(f"{ns}UploadId")
        if not key or not upload_id:
            continue
        found.append((unquote_plus(key) if url_encoded else key, upload_id, _seconds(u, ns)))
    return found


def sweep(s3: BucketClient, prefix: str) -> int:
    """Abort the abandoned probe uploads under ``prefix`` (see the module docstring);
    how many were aborted. Never raises a store error: a sweep that can't list or
    abort leaves the rest to the next one."""
    try:
        listed = list_probe_uploads(s3, prefix)
    except DatamoverError as e:
        log.debug("%s: probe uploads not listed: %s", s3.url(prefix), e)
        return 0
    me, now, aborted = this_process(), time.time(), 0
    for key, upload_id, initiated in listed:
        if aborted >= MAX_ABORTS:
            break
        if not key.startswith(prefix) or not abandoned(key[len(prefix) :], initiated, now, me):
            continue
        try:
            s3.abort_upload(key, upload_id)
        except DatamoverError as e:
            log.debug("%s: abandoned probe upload not aborted: %s", s3.url(key), e)
            continue
        aborted += 1
    if aborted:
        log.info("%s: aborted %d probe upload(s) a killed process left", s3.url(prefix), aborted)
    return aborted
