"""One error tree for the whole of datamover.

::

    DatamoverError
    ├── UsageError                 bad input from the user; CLI exit 2
    │   ├── ConfigError            bad or missing configuration / credentials setup
    │   ├── ManifestError          a manifest is malformed or hostile (names file and line)
    │   └── StateError             a file of the run's own (journal, manifest, state
    │                              directory) is not safe to use: a planted symlink,
    │                              another owner, a corrupt journal record
    ├── StoreError                 raised by a Store; SDK exceptions are mapped here
    │   ├── NotFound               (also FileNotFoundError) the key does not exist
    │   ├── PreconditionFailed     a conditional write lost (the target changed)
    │   ├── Unsupported            an optional capability is missing: fall back
    │   ├── SourceChanged          the source changed while it was read (not retried)
    │   ├── UnsafePath             a key that can't be written safely as a path here
    │   ├── InvalidMetadata        metadata that can't be applied (not a number, ...)
    │   ├── IntegrityError         bytes failed a checksum (retryable, part level)
    │   │   └── DigestMismatch     whole-file digest differs (the file is redone)
    │   ├── TransientError         network / 5xx / throttling (retryable)
    │   │   └── Throttled          the server asked us to slow down (retry_after)
    │   └── FatalStoreError        stops the whole run at once (fatal)
    │       ├── AuthError          credentials missing or rejected
    │       ├── PermissionDenied   (also PermissionError) access denied
    │       └── BucketNotFound     the bucket / container does not exist
    └── TransferError              one file failed after every retry; the run goes on

Who retries what (one layer per kind of failure, so retries never multiply):

1. **The SDK** retries transient HTTP failures of a single request (connection
   resets, 500/503, throttling) with its own standard policy: botocore ``standard``
   mode, the Azure and GCS SDK retry policies. Stores configure these with a small
   attempt count.
2. **The engine** retries a failed *part* (or a small file's single request) when the
   error is ``retryable``: ``TransientError`` that survived the SDK's retries, and
   ``IntegrityError`` (a part whose bytes changed on the way is read and sent again).
   Backoff is exponential with full jitter, and a ``Throttled.retry_after`` hint (HTTP
   Retry-After, S3 SlowDown) is honoured as a lower bound.
3. The engine redoes a *whole file* (up to ``RetryPolicy.file_attempts``) only for what
   no part-level check can catch: ``DigestMismatch`` (the whole-file digest of what was
   read differs from the digest the source carries, e.g. a corrupted download) and
   ``SourceChanged``. Nothing half-done is committed in between.
4. A file whose part still fails after the engine's attempts becomes a
   ``TransferError``: the upload is aborted, the manifest records the file as failed,
   and the run continues with other files (exit 1 at the end).
5. ``fatal`` errors (bad credentials, missing bucket, access denied) are never
   retried: the run stops at once and the CLI prints one line (exit 2).

Messages never contain credentials: stores build them from bucket, key and the
provider's error code only.
"""

from __future__ import annotations

from typing import Any


class DatamoverError(Exception):
    """Base of every error datamover raises on purpose."""

    retryable: bool = False
    fatal: bool = False


class RunStopped(DatamoverError):
    """The run was asked to stop (a signal, a fatal error elsewhere) before this file
    was done: it is neither done nor failed, and what it wrote so far is kept for a
    resume (its journaled upload or temp file is not aborted)."""


class UsageError(DatamoverError):
    """The user asked for something that can't work; the message says what to do."""

    fatal = True


class ConfigError(UsageError):
    """Configuration, endpoint or credential set-up is wrong or missing."""


class ManifestError(UsageError):
    """A manifest can't be trusted as it is: a line that is not JSON, a field of the
    wrong type, a path that would leave the tree, a summary that does not add up.
    Manifests are input from anywhere, so this is a usage error (exit 2, one line),
    never a crash. ``path`` is the manifest, ``line`` the 1-based line (or None)."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line


class StateError(UsageError):
    """A file datamover keeps for itself (journal, manifest, report, the state
    directory) can't be used safely: a symlink or another file type at its name, a
    file or directory of another user, a journal record that does not decode. Nothing
    is followed or overwritten; the message says which name to look at."""


class StoreError(DatamoverError):
    """A store operation failed. ``key`` names the object when there is one."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class NotFound(StoreError, FileNotFoundError):
    """The object (or file) does not exist."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        StoreError.__init__(self, message, key=key)


class PreconditionFailed(StoreError):
    """A conditional operation found the target changed or already present."""


class Unsupported(StoreError):
    """The store can't do this optional thing; the caller falls back."""


class SourceChanged(StoreError):
    """The source changed (size, mtime or version) while it was being read, so what was
    read is not a consistent copy of anything. The file fails; a later run copies it."""


class UnsafePath(StoreError):
    """A source key can't become a path under the destination root without escaping it
    or clobbering something (``..``, absolute, NUL, a symlinked directory, a name that
    is both a file and a directory). That file is refused; the run goes on."""


class InvalidMetadata(StoreError):
    """Metadata carried with an object can't be applied as it says (a ``mode``,
    ``uid`` or ``mtime`` that is not a number in range, a Lustre stripe size that is no
    size). Metadata comes from whoever wrote the bucket, so that file is refused; the
    run goes on."""


class IntegrityError(StoreError):
    """Bytes did not match their checksum. Retrying re-reads and re-sends them."""

    retryable = True


class DigestMismatch(IntegrityError):
    """The whole-file digest of the bytes read differs from the one the source carries."""


class TransientError(StoreError):
    """A failure that may go away: network trouble, 5xx, throttling."""

    retryable = True


class Throttled(TransientError):
    """The server asked us to slow down; ``retry_after`` is its hint in seconds."""

    def __init__(
        self, message: str, *, key: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, key=key)
        self.retry_after = retry_after


class FatalStoreError(StoreError):
    """Retrying can't help and no other file will fare better: stop the run."""

    fatal = True


class AuthError(FatalStoreError):
    """Credentials are missing, malformed or rejected."""


class PermissionDenied(FatalStoreError, PermissionError):
    """The credentials are valid but not allowed to do this."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        FatalStoreError.__init__(self, message, key=key)


class BucketNotFound(FatalStoreError):
    """The bucket or container named in the URL does not exist."""


class TransferError(DatamoverError):
    """One file could not be transferred; the run goes on without it."""

    def __init__(self, path: str, cause: BaseException) -> None:
        super().__init__(f"{path}: {cause}")
        self.path = path
        self.cause = cause

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable (Dask ships errors between processes): rebuilt from its own
        # arguments, not from ``args`` (the message), which ``__init__`` does not take.
        return (type(self), (self.path, self.cause), self.__dict__)
