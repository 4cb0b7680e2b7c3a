"""The user's TOML configuration: named remotes.

Where it is read from, first match wins:

1. the path given to ``use_config`` (the CLI's global ``--config PATH``);
2. ``$DATAMOVER_CONFIG``;
3. ``$XDG_CONFIG_HOME/datamover/config.toml`` (default ``~/.config/datamover/config.toml``).

A missing default file is an empty configuration: the standard env vars and SDK
chains work with no config at all. An explicit path that does not exist is an error.

Format::

    [remotes.lab]                 # used as lab:bucket/path
    type = "s3"                   # s3 | az | gs | file
    endpoint = "https://s3.lab.example.org"
    region = "eu-west-1"
    profile = "lab"               # an AWS profile (~/.aws/config), or:
    access_key_env = "LAB_KEY_ID"         # names of env vars holding the secrets
    secret_key_env = "LAB_SECRET"
    s3_checksum = "md5"           # auto | crc64nvme | crc32c | md5 | off (--s3-checksum)

    [remotes.archive]
    type = "az"
    account = "myaccount"
    sas_token_env = "ARCHIVE_SAS"  # or connection_string_env / account_key_env,
                                   # or nothing: DefaultAzureCredential

    [remotes.scratch]
    type = "file"
    root = "/scratch/me"          # scratch:run1 -> /scratch/me/run1

Every type also takes ``root``, a path prepended to what follows ``name:`` (for
object stores it may name the bucket: ``root = "bucket/prefix"`` makes ``lab:x`` mean
``bucket/prefix/x``).

**Secrets only by reference.** A remote may name the environment variable that holds
a secret (``*_env`` keys) or rely on the SDK chains and profiles; a literal secret
(``secret_key = "..."``, ``sas_token = "..."``, ...) is refused with a one-line error
that never echoes the value. datamover never writes this file.
"""

from __future__ import annotations

import os
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from datamover.errors import ConfigError
from datamover.options import S3_CHECKSUMS

REMOTE_TYPES = ("s3", "az", "gs", "file")

#: Keys every remote may have.
_COMMON = {"type", "root", "description"}
#: Per type: plain settings, and env-var references to secrets.
_SETTINGS: dict[str, set[str]] = {
    "s3": {"endpoint", "region", "profile", "s3_checksum"},
    "az": {"endpoint", "account"},
    "gs": {"endpoint", "project", "anonymous", "retry_deadline", "page_size", "temp_prefix"},
    "file": set(),
}
SECRET_REFS: dict[str, tuple[str, ...]] = {
    "s3": ("access_key_env", "secret_key_env", "session_token_env"),
    "az": ("connection_string_env", "account_key_env", "sas_token_env"),
    "gs": ("credentials_file_env",),
    "file": (),
}
#: Keys that would hold a secret literally: always refused.
_LITERAL_SECRETS = {
    "access_key",
    "access_key_id",
    "secret_key",
    "secret_access_key",
    "session_token",
    "token",
    "secret",
    "password",
    "key",
    "account_key",
    "connection_string",
    "sas",
    "sas_token",
    "credentials",
    "private_key",
}
_REF_FOR = {
    "access_key": "access_key_env",
    "access_key_id": "access_key_env",
    "secret_access_key": "secret_key_env",
    "secret": "secret_key_env",
    "token": "session_token_env",
    "key": "account_key_env",
    "account_key": "account_key_env",
    "sas": "sas_token_env",
    "credentials": "credentials_file_env",
    "private_key": "credentials_file_env",
}


@dataclass(frozen=True, slots=True)
class Remote:
    """One ``[remotes.NAME]`` table, validated. ``secret_refs`` maps a reference key
    (``secret_key_env``) to the *name* of the environment variable; values are never
    read here."""

    name: str
    type: str
    root: str = ""
    endpoint: str | None = None
    region: str | None = None
    profile: str | None = None
    account: str | None = None
    description: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    secret_refs: Mapping[str, str] = field(default_factory=dict)

    def settings_extra(self) -> dict[str, Any]:
        """What goes in ``StoreSettings.extra``: type-specific options and the names of
        env vars holding secrets (the store reads the variables itself)."""
        return {**self.options, **self.secret_refs}

    def secret_status(self, environ: Mapping[str, str] | None = None) -> dict[str, bool]:
        """Reference key -> whether its env var is set (never the value)."""
        env = os.environ if environ is None else environ
        return {ref: bool(env.get(var)) for ref, var in self.secret_refs.items()}


@dataclass(frozen=True, slots=True)
class Config:
    path: str | None
    remotes: Mapping[str, Remote] = field(default_factory=dict)

    def remote(self, name: str) -> Remote:
        try:
            return self.remotes[name]
        except KeyError:
            where = self.path or default_config_path()
            known = ", ".join(sorted(self.remotes)) or "none defined"
            raise ConfigError(
                f"unknown remote {name!r} ({known}): add a [remotes.{name}] table to {where} "
                "or use a URL such as s3://bucket/path"
            ) from None


def default_config_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "datamover", "config.toml")


_lock = threading.Lock()
_explicit: str | None = None
_cache: dict[tuple[str, float, int], Config] = {}


def use_config(path: str | None) -> None:
    """Make ``path`` the configuration file for this process (None: back to the
    default search)."""
    global _explicit
    with _lock:
        _explicit = path


def config_path() -> tuple[str, bool]:
    """``(path, explicit)``: the file that would be read, and whether it was asked for
    by name (then it must exist)."""
    with _lock:
        explicit = _explicit
    if explicit:
        return explicit, True
    env = os.environ.get("DATAMOVER_CONFIG")
    if env:
        return env, True
    return default_config_path(), False


def load_config(path: str | None = None) -> Config:
    """Read and validate the configuration (cached per file and mtime). Raises
    ``ConfigError`` with a one-line reason."""
    explicit = path is not None
    if path is None:
        path, explicit = config_path()
    path = os.path.expanduser(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {path} does not exist") from None
        return Config(None)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    key = (path, st.st_mtime, st.st_size)
    with _lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    config = parse_config(data, path)
    with _lock:
        _cache[key] = config
    return config


def parse_config(data: Mapping[str, Any], path: str = "config.toml") -> Config:
    unknown = set(data) - {"remotes"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown top-level key {sorted(unknown)[0]!r} (expected [remotes.NAME])"
        )
    tables = data.get("remotes", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: 'remotes' must be a table of [remotes.NAME] tables")
    remotes = {name: _parse_remote(name, table, path) for name, table in tables.items()}
    return Config(path, remotes)


def _parse_remote(name: str, table: Any, path: str) -> Remote:
    where = f"{path}: [remotes.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    if (
        not name.replace("_", "a").replace("-", "a").replace(".", "a").isalnum()
        or not name[0].isalpha()
    ):
        raise ConfigError(
            f"{where}: a remote name starts with a letter and has letters, digits, _ . -"
        )
    for key in table:
        if key.lower() in _LITERAL_SECRETS:
            ref = _REF_FOR.get(key.lower(), key.lower() + "_env")
            raise ConfigError(
                f"{where}: a literal secret ({key!r}) is not allowed in the config file; put it "
                f'in an environment variable and write {ref} = "VAR_NAME" instead (or use a '
                "profile / the SDK credential chain)"
            )
    kind = table.get("type")
    if kind not in REMOTE_TYPES:
        raise ConfigError(f"{where}: 'type' must be one of {', '.join(REMOTE_TYPES)}")
    allowed = _COMMON | _SETTINGS[kind] | set(SECRET_REFS[kind])
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key {key!r} for a {kind} remote "
                f"(allowed: {', '.join(sorted(allowed - {'type'}))})"
            )
    for key, value in table.items():
        if key in ("anonymous",):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: {key!r} must be true or false")
        elif key in ("retry_deadline", "page_size"):
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ConfigError(f"{where}: {key!r} must be a number")
        elif not isinstance(value, str):
            raise ConfigError(f"{where}: {key!r} must be a string")
    refs = {k: table[k] for k in SECRET_REFS[kind] if k in table}
    for ref, var in refs.items():
        if not var or not var.replace("_", "A").isalnum():
            raise ConfigError(f'{where}: {ref} names an environment variable, e.g. "MY_SECRET"')
    if "s3_checksum" in table and table["s3_checksum"] not in S3_CHECKSUMS:
        raise ConfigError(
            f"{where}: s3_checksum must be one of {', '.join(S3_CHECKSUMS)} (as --s3-checksum)"
        )
    options = {k: table[k] for k in _SETTINGS[kind] if k in table} if kind in ("gs", "s3") else {}
    for plain in ("endpoint", "region", "profile"):
        options.pop(plain, None)
    root = str(table.get("root", "/" if kind == "file" else ""))
    if kind == "file" and not root.startswith("/"):
        raise ConfigError(f"{where}: root of a file remote must be an absolute path")
    return Remote(
        name=name,
        type=kind,
        root=root,
        endpoint=table.get("endpoint"),
        region=table.get("region"),
        profile=table.get("profile"),
        account=table.get("account"),
        description=table.get("description"),
        options=options,
        secret_refs=refs,
    )
