"""The TOML config and named remotes: parsing, secrets by reference only, resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamover import config
from datamover.errors import ConfigError, UsageError
from datamover.stores import StoreSettings, open_store, referenced_secret, resolve_remote
from datamover.stores.urls import parse_url

CONFIG = """
[remotes.lab]
type = "s3"
endpoint = "https://s3.lab.example.org"
region = "eu-west-1"
access_key_env = "LAB_KEY_ID"
secret_key_env = "LAB_SECRET"

[remotes.archive]
type = "az"
account = "acct"
sas_token_env = "ARCHIVE_SAS"

[remotes.pinned]
type = "gs"
root = "bucket/prefix"
project = "p1"

[remotes.scratch]
type = "file"
root = "/scratch/me"
"""


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    monkeypatch.setenv("DATAMOVER_CONFIG", str(path))
    config.use_config(None)
    return path


def test_parse_remotes(cfg: Path) -> None:
    conf = config.load_config()
    assert sorted(conf.remotes) == ["archive", "lab", "pinned", "scratch"]
    lab = conf.remote("lab")
    assert (lab.type, lab.endpoint, lab.region) == ("s3", "https://s3.lab.example.org", "eu-west-1")
    assert lab.secret_refs == {"access_key_env": "LAB_KEY_ID", "secret_key_env": "LAB_SECRET"}
    assert conf.remote("pinned").settings_extra() == {"project": "p1"}


def test_default_path_is_xdg_aware(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATAMOVER_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    config.use_config(None)
    assert config.config_path() == (str(tmp_path / "xdg" / "datamover" / "config.toml"), False)
    assert config.load_config().remotes == {}  # a missing default file is no config
    config.use_config(str(tmp_path / "nope.toml"))
    try:
        with pytest.raises(ConfigError, match="does not exist"):
            config.load_config()
    finally:
        config.use_config(None)


@pytest.mark.parametrize(
    ("key", "ref"),
    [
        ("secret_key", "secret_key_env"),
        ("secret_access_key", "secret_key_env"),
        ("access_key_id", "access_key_env"),
        ("sas_token", "sas_token_env"),
        ("connection_string", "connection_string_env"),
        ("account_key", "account_key_env"),
    ],
)
def test_literal_secrets_are_refused_without_echo(key: str, ref: str) -> None:
    secret = "SuperSecretValue123"
    with pytest.raises(ConfigError) as info:
        config.parse_config({"remotes": {"x": {"type": "s3", key: secret}}}, "c.toml")
    message = str(info.value)
    assert "\n" not in message and secret not in message
    assert f'{ref} = "VAR_NAME"' in message


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"type": "ftp"}, "type"),
        ({"type": "s3", "endpiont": "x"}, "unknown key 'endpiont'"),
        ({"type": "s3", "region": 3}, "must be a string"),
        ({"type": "s3", "secret_key_env": "not a name"}, "environment variable"),
        ({"type": "file", "root": "relative"}, "absolute"),
    ],
)
def test_invalid_remotes(table: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config.parse_config({"remotes": {"r": table}})


def test_bad_toml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[remotes.x\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load_config(str(path))


def test_resolve_remotes(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_KEY_ID", "id")
    monkeypatch.setenv("LAB_SECRET", "sekrit")
    loc, settings = resolve_remote(parse_url("lab:bucket/a/b/"), StoreSettings(connections=7))
    assert (loc.scheme, loc.bucket, loc.key, loc.remote) == ("s3", "bucket", "a/b/", None)
    assert settings.endpoint == "https://s3.lab.example.org" and settings.connections == 7
    assert referenced_secret(settings, "secret_key_env") == "sekrit"
    assert referenced_secret(settings, "session_token_env") is None
    assert "sekrit" not in repr(settings)  # settings hold env var names, never values

    loc, settings = resolve_remote(parse_url("pinned:x/y"))
    assert (loc.scheme, loc.bucket, loc.key) == ("gs", "bucket", "prefix/x/y")
    assert settings.extra["project"] == "p1"

    loc, _ = resolve_remote(parse_url("scratch:run1/../run2/f.txt"))
    assert (loc.scheme, loc.key) == ("file", "scratch/me/run2/f.txt")
    store, key = open_store("scratch:run1/")
    assert store.scheme == "file" and key == "scratch/me/run1/"  # "a directory" kept
    loc, _ = resolve_remote(parse_url("pinned:in/"))
    assert (loc.bucket, loc.key) == ("bucket", "prefix/in/")


def test_unset_secret_reference_and_unknown_remotes(cfg: Path) -> None:
    with pytest.raises(ConfigError, match=r"\$LAB_KEY_ID, which is not set"):
        resolve_remote(parse_url("lab:bucket/x"))
    with pytest.raises(ConfigError, match="did you mean 'lab'"):
        resolve_remote(parse_url("lba:bucket/x"))
    with pytest.raises(ConfigError, match="unknown remote 'zzz'"):
        resolve_remote(parse_url("zzz:bucket/x"))
    with pytest.raises(UsageError, match=r"did you mean s3://bucket/x"):
        resolve_remote(parse_url("s3:bucket/x"))


def test_secret_status_never_reads_values(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_SECRET", "x" * 20)
    monkeypatch.delenv("LAB_KEY_ID", raising=False)
    status = config.load_config().remote("lab").secret_status()
    assert status == {"access_key_env": False, "secret_key_env": True}
