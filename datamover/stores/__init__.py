"""Store registry: URL scheme -> backend module, imported only when first used.

Each backend lives in its own module and depends on its SDK; importing datamover does
not import boto3, azure or google. A missing SDK gives one line naming the package to
install, as fsspec's ``known_implementations`` does.
"""

from __future__ import annotations

import difflib
import importlib
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from datamover.config import load_config
from datamover.errors import ConfigError, UsageError
from datamover.options import path_text
from datamover.stores.base import ChunkWriter, ObjectInfo, PartLimits, PartReceipt, Store
from datamover.stores.rclonelinks import RcloneLinks
from datamover.stores.urls import (
    SCHEME_ALIASES,
    Location,
    absolute_url,
    is_relative_path,
    parse_url,
)

__all__ = [
    "ChunkWriter",
    "ObjectInfo",
    "PartLimits",
    "PartReceipt",
    "Store",
    "StoreSettings",
    "absolute_url",
    "is_relative_path",
    "local_path",
    "open_location",
    "open_store",
    "referenced_secret",
    "remote_defined",
    "remote_name",
    "resolve_remote",
]


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Per-backend settings from a named remote or the command line. Secrets are never
    held here: only names of env vars or profiles that the SDK chains resolve.

    ``connections`` sizes the HTTP connection pool; the engine sets it to at least its
    number of worker threads.
    """

    endpoint: str | None = None
    region: str | None = None
    profile: str | None = None
    account: str | None = None
    connections: int = 16
    extra: Mapping[str, Any] = field(default_factory=dict)


#: ``StoreSettings.extra`` keys where a value given for the run beats the remote's.
_RUN_WINS = ("s3_checksum",)

# scheme -> (module, class, package to install)
_BACKENDS: dict[str, tuple[str, str, str]] = {
    "file": ("datamover.stores.posix", "PosixStore", ""),
    "s3": ("datamover.stores.s3", "S3Store", "boto3"),
    "az": ("datamover.stores.azure", "AzureStore", "azure-storage-blob"),
    "gs": ("datamover.stores.gcs", "GCSStore", "google-cloud-storage"),
}


def _backend_class(scheme: str) -> Any:
    entry = _BACKENDS.get(scheme)
    if entry is None:
        module_name, cls_name, package = "datamover.stores.fsspec", "FsspecStore", "fsspec"
    else:
        module_name, cls_name, package = entry
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"{scheme}:// needs the {package!r} package ({e.name} is missing): "
            f"pip install {package}"
        ) from e
    return getattr(module, cls_name)


def _check_scheme(scheme: str) -> None:
    """A scheme no backend and no fsspec implementation knows: say so, with a guess."""
    if scheme in _BACKENDS:
        return
    try:
        from fsspec.registry import known_implementations, registry
    except ImportError:
        return
    if scheme in known_implementations or scheme in registry:
        return
    guess = difflib.get_close_matches(scheme, [*SCHEME_ALIASES, *_BACKENDS], n=1, cutoff=0.5)
    hint = f" (did you mean {guess[0]}://?)" if guess else ""
    raise UsageError(
        f"unknown URL scheme {scheme}://{hint}; use a local path, s3://, az://, gs://, a "
        "remote from the config (name:bucket/path) or a protocol fsspec knows"
    )


def resolve_remote(
    loc: Location, settings: StoreSettings | None = None
) -> tuple[Location, StoreSettings]:
    """The concrete location and settings of a ``name:path`` location, from the named
    remote in the config (``datamover.config``). The remote's settings win over
    ``settings`` except for ``connections`` and an ``s3_checksum`` given for the run
    (``--s3-checksum`` on the command line beats the remote's). Raises
    ``ConfigError`` for an unknown remote or a secret reference whose env var is not
    set."""
    assert loc.remote is not None
    base = settings or StoreSettings()
    config = load_config()
    if loc.remote not in config.remotes:
        guess = difflib.get_close_matches(loc.remote, list(config.remotes), n=1)
        if loc.remote.lower() in SCHEME_ALIASES and not guess:
            raise UsageError(
                f"{loc.remote}:{loc.bucket}/{loc.key} is not a URL (no //) and no remote is "
                f"named {loc.remote!r}; did you mean {loc.remote}://{loc.bucket}/{loc.key}?"
            )
        if guess:
            raise ConfigError(
                f"unknown remote {loc.remote!r} (did you mean {guess[0]!r}?); "
                "`datamover remotes list` shows the remotes defined"
            )
    remote = config.remote(loc.remote)
    for ref, var in remote.secret_refs.items():
        if not os.environ.get(var):
            raise ConfigError(
                f"remote {remote.name!r}: {ref} names ${var}, which is not set; export it "
                "(or remove the reference to use the SDK's credential chain)"
            )
    rest = loc.remote_path
    if rest is None:
        rest = loc.bucket + ("/" + loc.key if loc.key else "")
    root = remote.root.strip("/")
    full = f"{root}/{rest}" if root and rest else root or rest
    if remote.type == "file":
        path = posixpath.normpath("/" + full)
        key = path.lstrip("/") + ("/" if full.endswith("/") and path != "/" else "")
        concrete = Location("file", "", key)
    else:
        bucket, _, key = full.partition("/")
        if not bucket:
            raise UsageError(
                f"{loc.remote}: names no bucket; write {loc.remote}:BUCKET/path (or set root "
                f"in [remotes.{loc.remote}])"
            )
        concrete = Location(remote.type, bucket, key)
    merged = StoreSettings(
        endpoint=remote.endpoint or base.endpoint,
        region=remote.region or base.region,
        profile=remote.profile or base.profile,
        account=remote.account or base.account,
        connections=base.connections,
        extra={
            **base.extra,
            **remote.settings_extra(),
            **{k: base.extra[k] for k in _RUN_WINS if k in base.extra},
        },
    )
    return concrete, merged


def referenced_secret(settings: StoreSettings, ref: str) -> str | None:
    """The secret a remote refers to by env var name (``settings.extra[ref]``, e.g.
    ``secret_key_env``), read at the moment a store needs it; None when the remote
    names none. Raises ``ConfigError`` when the named variable is not set."""
    var = settings.extra.get(ref)
    if not var:
        return None
    value = os.environ.get(str(var))
    if not value:
        raise ConfigError(f"{ref} names ${var}, which is not set; export it")
    return value


def open_location(loc: Location, settings: StoreSettings | None = None) -> Store:
    """The store for ``loc``'s namespace (its bucket, or ``/`` for POSIX). A
    ``name:path`` location is resolved through the named remote (``resolve_remote``)."""
    if loc.remote is not None:
        loc, settings = resolve_remote(loc, settings)
    _check_scheme(loc.scheme)
    cls = _backend_class(loc.scheme)
    store: Store = cls.from_location(loc, settings or StoreSettings())
    if (settings or StoreSettings()).extra.get("links") and not store.features.local:
        # rclone's --links: NAME.rclonelink objects are symlinks (stores/rclonelinks.py).
        store = RcloneLinks(store)
    return store


def local_path(url: str) -> str | None:
    """The filesystem path ``url`` names when its backend is local (``features.local``),
    else None. Nothing is opened for a remote store."""
    loc = parse_url(url)
    if loc.remote is not None:
        loc, _ = resolve_remote(loc)
    _check_scheme(loc.scheme)
    cls = _backend_class(loc.scheme)
    if not cls.features.local:
        return None
    store: Store = cls.from_location(loc, StoreSettings())
    return store.local_path(loc.key)


def remote_name(url: str) -> str | None:
    """The configured remote ``url`` names (``name:path``), or None (a URL, a path,
    or text that does not parse); nothing is looked up."""
    try:
        return parse_url(url).remote
    except UsageError:
        return None


def remote_defined(name: str) -> bool:
    """Whether the config (``datamover.config``) defines a remote ``name``."""
    return name in load_config().remotes


def open_store(
    url: str, settings: StoreSettings | None = None, *, remote: str | None = None
) -> tuple[Store, str]:
    """Parse ``url`` and open its store; returns ``(store, key)`` (for ``name:path``,
    the key within the remote's bucket). With ``remote``, the name of a configured
    remote of ``url``'s type, a plain ``url`` is opened with that remote's settings
    (endpoint, credentials), as a copy through the remote reached it. ``url`` may be
    a ``pathlib.Path``."""
    loc = parse_url(path_text(url, "url"))
    if loc.remote is None and remote is not None:
        kind = load_config().remote(remote).type  # ConfigError when not defined
        if kind != loc.scheme:
            raise ConfigError(
                f"remote {remote!r} is of type {kind}, not {loc.scheme}, so it can't open "
                f"{url}; give the target to use"
            )
        # Its settings only: the place is ``url``'s, whatever the remote's root.
        path = f"{loc.bucket}/{loc.key}" if loc.bucket else loc.key
        _, settings = resolve_remote(Location(loc.scheme, "", "", remote, path), settings)
    if loc.remote is not None:
        loc, settings = resolve_remote(loc, settings)
    return open_location(loc, settings), loc.key
