"""boto3/botocore, imported on first need (one place, so the deferral is explicit).

Importing boto3 costs ~0.35 CPU-s at every start; a copy whose endpoint and keys come
from the environment or a remote never needs it (the lean path, ``lean.py``, signs and
sends the requests). boto3 is imported when a call needs it: the credential chain
(profiles, SSO, IMDS, ...), AWS endpoint resolution, multipart create/complete and
the other rare calls (``client.py``)."""

from __future__ import annotations

import sys
from types import ModuleType


def boto3() -> ModuleType:
    """The ``boto3`` module (and the botocore modules ``client.py`` uses)."""
    botocore()
    # deferred: ~0.35 CPU-s of imports that the lean path does not need.
    import boto3

    return boto3


def botocore() -> ModuleType:
    """The ``botocore`` package with the submodules ``client.py`` and
    ``objectinfo.py`` use loaded."""
    # deferred: as ``boto3`` above.
    import botocore.config
    import botocore.httpsession
    import botocore.session
    import botocore.utils

    return botocore


def loaded(name: str) -> ModuleType | None:
    """Module ``name`` if something already imported it, else None: an exception can
    only be one of botocore's (or urllib3's) classes once that module is loaded, so
    error mapping asks this instead of importing the SDK to learn a "no"."""
    return sys.modules.get(name)
