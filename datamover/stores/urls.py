"""Turn what a user types into a ``Location``.

Accepted forms, following fsspec's schemes:

* ``/abs/path``, ``rel/path``, ``file:///abs/path``      -> POSIX
* ``s3://bucket/key``                                      -> S3 (and S3-compatible)
* ``az://container/path``, ``abfs://container/path``       -> Azure Blob
* ``gs://bucket/path``, ``gcs://bucket/path``              -> Google Cloud Storage
* ``remote:bucket/path``                                   -> a named remote from the config
* ``other://...``                                          -> any installed fsspec protocol

A trailing ``/`` is kept in ``key`` because it means "a directory" to the copy rules.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass

from datamover.errors import ConfigError, UsageError

SCHEME_ALIASES = {
    "file": "file",
    "s3": "s3",
    "s3a": "s3",
    "az": "az",
    "abfs": "az",
    "abfss": "az",
    "gs": "gs",
    "gcs": "gs",
}

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.S)
_REMOTE_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*):(?!//)(.*)$", re.S)
#: The query of a pasted signed URL: an Azure SAS (``sig=``), an S3 or GCS presigned
#: URL's signature or credential (SigV4, V4 and V2 forms).
_SIGNED_QUERY_RE = re.compile(
    r"\?(?:.*&)?(?:sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token"
    r"|x-goog-signature|x-goog-credential|awsaccesskeyid|googleaccessid)=",
    re.I | re.S,
)


def _refuse_signed_query(shown: str, path: str) -> None:
    """A key holding a signed URL's query: its token would become part of an object's
    name and be recorded in manifests, the journal and errors. Refused before any of
    that, without echoing it."""
    if "?" in path and _SIGNED_QUERY_RE.search(path):
        raise UsageError(
            f"{shown}?***: URLs take no SAS tokens or signatures (they would be recorded "
            "in manifests and the journal, and become part of the key); give credentials "
            "through the environment or a remote of the config (an Azure SAS: "
            "AZURE_STORAGE_SAS_TOKEN, or sas_token_env)"
        )


@dataclass(frozen=True, slots=True)
class Location:
    """``scheme`` is canonical (``file``, ``s3``, ``az``, ``gs`` or an fsspec protocol);
    ``bucket`` is empty for POSIX; ``key`` has no leading ``/`` (POSIX keys are
    relative to ``/``); ``remote`` names the config remote it came from, if any, and
    ``remote_path`` is everything after ``name:`` as typed (a trailing ``/`` kept),
    which the registry resolves against the remote's settings."""

    scheme: str
    bucket: str
    key: str
    remote: str | None = None
    remote_path: str | None = None

    @property
    def is_dir_hint(self) -> bool:
        return self.key == "" or self.key.endswith("/")

    def child(self, rel: str) -> Location:
        base = self.key if (self.key == "" or self.key.endswith("/")) else self.key + "/"
        return Location(self.scheme, self.bucket, base + rel, self.remote)

    def __str__(self) -> str:
        if self.scheme == "file":
            return "/" + self.key
        prefix = f"{self.remote}:" if self.remote else f"{self.scheme}://"
        return f"{prefix}{self.bucket}/{self.key}"


def parse_url(text: str) -> Location:
    """Parse a user-supplied URL or path. Raises ``UsageError`` with a hint."""
    if not text:
        raise UsageError("empty path or URL; give a local path or s3://bucket/key")
    m = _SCHEME_RE.match(text)
    if m:
        scheme, rest = m.group(1).lower(), m.group(2)
        canonical = SCHEME_ALIASES.get(scheme, scheme)
        if canonical == "file":
            return _posix(rest if rest.startswith("/") else "/" + rest, text)
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise UsageError(f"{text!r} names no bucket; write {scheme}://BUCKET/path")
        _refuse_signed_query(f"{scheme}://{rest.partition('?')[0]}", rest)
        userinfo, at, _ = bucket.rpartition("@")
        if at and (canonical in ("s3", "gs") or (canonical == "az" and ":" in userinfo)):
            # No bucket name holds an "@": user:secret@ pasted into the URL. Refused
            # before any request, whose error would echo it (not even redacted).
            # (Azure's container@account.host form names no secret: left alone.)
            raise UsageError(
                f"{scheme}://***@{bucket.rpartition('@')[2]}/: {scheme}:// URLs take no "
                "credentials; set them in the environment (AWS_ACCESS_KEY_ID, "
                "AZURE_STORAGE_CONNECTION_STRING, ...) or in a remote of the config"
            )
        if at and ":" in userinfo:
            # ftp://user:password@host (any fsspec protocol): the URL is recorded in
            # manifests, the journal and reports, and echoed by fsspec's errors. The
            # user name may stay; the password goes where fsspec reads it.
            user = userinfo.partition(":")[0]
            host = bucket.rpartition("@")[2]
            raise UsageError(
                f"{scheme}://{user}:***@{host}/: URLs take no passwords (they would be "
                f"recorded in manifests and the journal); write {scheme}://{user}@{host}/... "
                f"and set FSSPEC_{scheme.upper()}_PASSWORD (or use an SSH key for sftp)"
            )
        return Location(canonical, bucket, key.lstrip("/") if canonical != "s3" else key)
    m = _REMOTE_RE.match(text)
    if m and not os.path.exists(text):
        name, rest = m.group(1), m.group(2)
        _refuse_signed_query(f"{name}:{rest.partition('?')[0]}", rest)
        bucket, _, key = rest.lstrip("/").partition("/")
        return Location("", bucket, key, remote=name, remote_path=rest.lstrip("/"))
    return _posix(text, text)


def _plain_path(text: str) -> bool:
    """Whether ``parse_url`` reads ``text`` as a POSIX path typed as such (no scheme, no
    remote): the form whose meaning depends on the current directory when relative."""
    if not text or _SCHEME_RE.match(text):
        return False
    return not (_REMOTE_RE.match(text) and not os.path.exists(text))


def absolute_url(text: str) -> str:
    """``text`` with a local path made absolute (against the current directory now, ``~``
    expanded, a trailing ``/`` kept), so it names the same place from anywhere: what a
    job records to be resumed. URLs and remotes are returned unchanged."""
    if not _plain_path(text):
        return text
    return str(_posix(text, text))


def is_relative_path(text: str) -> bool:
    """Whether ``text`` is a local path that depends on the current directory."""
    return _plain_path(text) and not text.startswith(("/", "~"))


def _posix(path: str, original: str) -> Location:
    trailing = path.endswith("/") and len(path) > 1
    absolute = os.path.abspath(os.path.expanduser(path))
    key = absolute.lstrip("/")
    if trailing and key:
        key += "/"
    return Location("file", "", key)


def check_endpoint(url: str, where: str) -> str:
    """``url`` when it is an endpoint URL an SDK can use (``http(s)://HOST[:PORT]``,
    with a path if any); else a ``ConfigError`` naming ``where`` it came from (an env
    var, a remote's ``endpoint``)."""
    try:
        parts = urllib.parse.urlsplit(url)
        ok = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
        ok = ok and parts.port != 0  # .port raises ValueError for one that is no number
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(
            f"{where} is {url!r}, not an endpoint URL; write http(s)://HOST[:PORT] "
            "(e.g. http://localhost:8333)"
        )
    return url
