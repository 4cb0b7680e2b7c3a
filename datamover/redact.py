"""Keep secrets out of everything datamover prints, logs or records.

datamover never *holds* a secret in its own objects (credentials come from env vars,
profiles and the SDK chains), but secrets still reach us by accident: a user pastes a
SAS URL, passes ``--aws-secret-key`` to a wrapper, or a third-party debug log line
echoes a query string. Two defences, applied wherever text leaves the process:

* ``scrub_argv``: a command line with the values of secret-looking options
  (``--*key*``, ``--*secret*``, ``--*token*``, ``--*password*``, ``--*sas*``,
  ``--*connection*``, ``--*credential*``) replaced, and every argument passed through
  ``redact``. Manifests and reports record only this form.
* ``redact``: text with URL userinfo, SAS signatures, ``AccountKey=`` and other
  key/value secrets replaced, and with the *values* of secret-looking environment
  variables (``AWS_SECRET_ACCESS_KEY``, ``AZURE_STORAGE_CONNECTION_STRING``, ... and
  anything named ``*SECRET*``, ``*TOKEN*``, ``*PASSWORD*``, ``*_KEY``, ``*SAS*``)
  replaced wherever they appear. ``install`` applies it to every log record the
  process creates (a record factory, so every handler is covered: the CLI's, the
  mount daemon's ``--log-file``, a library user's own, and third-party debug lines
  such as botocore's, which print request headers).

Caveat: a secret that is in none of those places and has no recognisable shape can't
be told from data; that is why secrets belong in the environment.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MASK = "***"

#: Option names whose value is a secret (``--s3-secret-key X``, ``--sas-token=X``).
_SECRET_OPTION = re.compile(
    r"^--?[\w-]*(key|secret|token|password|passwd|sas|connection|credential)", re.I
)
#: Environment variables whose values are secrets.
_SECRET_ENV = re.compile(
    r"(SECRET|TOKEN|PASSWORD|PASSWD|CONNECTION_STRING|_SAS|SAS_|ACCOUNT_KEY|STORAGE_KEY"
    r"|_KEY$|^KEY$|CREDENTIAL)",
    re.I,
)
#: Env vars that match the pattern above but hold no secret.
_NOT_SECRET_ENV = {
    "AWS_ACCESS_KEY_ID",
    "GPG_KEY",
    "SSH_AUTH_SOCK",
    "PYTEST_CURRENT_TEST",
    "GOOGLE_APPLICATION_CREDENTIALS",  # the path of a key file, not the key
}
#: Names of variables that hold where a secret is (``AWS_SHARED_CREDENTIALS_FILE``):
#: masking a path only hides which file an error is about.
_WHERE_ENV = re.compile(r"_(FILE|PATH|DIR)$", re.I)
#: Values shorter than this are not masked by value (too likely to hit ordinary text).
_MIN_SECRET_LEN = 8

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host -> scheme://***@host
    (re.compile(r"(?P<s>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@:]*:[^/\s@]*@"), r"\g<s>" + MASK + "@"),
    # Azure connection strings and similar key=value;key=value secrets
    (
        re.compile(
            r"(?P<k>(AccountKey|SharedAccessSignature|SharedAccessKey|Password|Pwd)=)[^;\s\"']+",
            re.I,
        ),
        r"\g<k>" + MASK,
    ),
    # SAS / presigned query parameters
    (
        re.compile(
            r"(?P<k>[?&;](sig|signature|X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token"
            r"|X-Goog-Signature|X-Goog-Credential|token|access_token|code)=)[^&\s\"'#]+",
            re.I,
        ),
        r"\g<k>" + MASK,
    ),
    # NAME=value assignments of secret-looking names (env dumps, shell lines)
    (
        re.compile(
            r"(?P<k>\b[A-Z0-9_]*(SECRET|TOKEN|PASSWORD|CONNECTION_STRING|ACCOUNT_KEY|STORAGE_KEY"
            r"|SAS_TOKEN)[A-Z0-9_]*=)[^\s\"']+"
        ),
        r"\g<k>" + MASK,
    ),
)


def secret_env_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of the environment's secret-looking variables, longest first."""
    env = os.environ if environ is None else environ
    values = {
        value
        for name, value in env.items()
        if name not in _NOT_SECRET_ENV
        and _SECRET_ENV.search(name)
        and not _WHERE_ENV.search(name)
        and len(value) >= _MIN_SECRET_LEN
    }
    # Also each ;-separated part of a connection string: a part may be quoted alone.
    for value in list(values):
        for part in value.split(";"):
            _, _, v = part.partition("=")
            if len(v) >= _MIN_SECRET_LEN and part.split("=", 1)[0].lower() in (
                "accountkey",
                "sharedaccesssignature",
                "sharedaccesskey",
            ):
                values.add(v)
    return sorted(values, key=len, reverse=True)


def redact(text: str, extra_secrets: Iterable[str] = ()) -> str:
    """``text`` with every recognisable secret replaced by ``***``."""
    for secret in (*secret_env_values(), *extra_secrets):
        if secret and secret in text:
            text = text.replace(secret, MASK)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def scrub_argv(argv: Sequence[str]) -> list[str]:
    """A command line safe to record: secret option values masked, all args redacted."""
    out: list[str] = []
    mask_next = False
    for arg in argv:
        if mask_next:
            out.append(MASK)
            mask_next = False
            continue
        if arg.startswith("-") and _SECRET_OPTION.match(arg):
            name, eq, _ = arg.partition("=")
            if eq:
                out.append(f"{name}={MASK}")
            else:
                out.append(arg)
                mask_next = True
            continue
        out.append(redact(arg))
    return out


def scrub_record(record: logging.LogRecord) -> None:
    """Rewrite ``record``'s message (and traceback text) through ``redact``."""
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: leave it to the handler to report
        return
    clean = redact(message)
    if clean != message or record.args:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)


class RedactingFilter(logging.Filter):
    """``scrub_record`` as a handler filter, for handlers of another process's making
    (``install`` covers this process)."""

    def filter(self, record: logging.LogRecord) -> bool:
        scrub_record(record)
        return True


def install() -> None:
    """Redact every log record this process creates from now on, whichever logger
    and handler it goes to. Idempotent."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "datamover_redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        scrub_record(record)
        return record

    factory.datamover_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
