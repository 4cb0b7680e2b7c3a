"""When the S3 store may skip botocore (``stores/s3/client.py``: ``plain_keys``,
``plain_region``): only when the keys and region botocore's chain would settle on are
certain without it; any other case (a profile, expiring env keys, a config file that
may set the region) goes through botocore's chain as before (issue #18)."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamover.stores import StoreSettings
from datamover.stores.s3.client import BucketClient, plain_keys, plain_region

_AWS_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CREDENTIAL_EXPIRATION",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in _AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))


def test_env_keys_are_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SECRET")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "TOKEN")
    keys = plain_keys(StoreSettings(), None, None, None)
    assert keys is not None
    assert (keys.access_key, keys.secret_key, keys.token) == ("AKID", "SECRET", "TOKEN")
    # A remote's referenced keys win over the environment's, as boto3's explicit keys do.
    keys = plain_keys(StoreSettings(), "RID", "RSECRET", None)
    assert keys is not None and (keys.access_key, keys.token) == ("RID", None)


@pytest.mark.parametrize(
    "extra",
    [
        {"AWS_PROFILE": "p"},
        {"AWS_DEFAULT_PROFILE": "p"},
        {"AWS_CREDENTIAL_EXPIRATION": "2030-01-01T00:00:00Z"},
        {"AWS_SECURITY_TOKEN": "t"},
        {"AWS_SECRET_ACCESS_KEY": ""},
    ],
)
def test_anything_else_asks_botocore(
    monkeypatch: pytest.MonkeyPatch, extra: dict[str, str]
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SECRET")
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    assert plain_keys(StoreSettings(), None, None, None) is None


def test_a_profile_setting_asks_botocore() -> None:
    assert plain_keys(StoreSettings(profile="p"), "RID", "RSECRET", None) is None
    assert plain_keys(StoreSettings(), None, None, None) is None  # no keys at all


def test_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert plain_region(StoreSettings()) == "us-east-1"  # no config file: botocore's None
    assert plain_region(StoreSettings(region="eu-west-3")) == "eu-west-3"
    config = tmp_path / "config"
    config.write_text("[default]\nregion = ap-south-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    assert plain_region(StoreSettings()) is None  # the file may set it: botocore reads it
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    assert plain_region(StoreSettings()) == "us-west-2"


def test_the_chain_still_works_without_env_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No env keys: botocore's chain finds the shared credentials file and its
    config's region, as before."""
    creds = tmp_path / "credentials"
    creds.write_text("[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = S\n")
    config = tmp_path / "config"
    config.write_text("[default]\nregion = ap-south-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    client = BucketClient("b", StoreSettings(endpoint="http://127.0.0.1:9"))
    try:
        assert client.identity == (None, "FILEKEY")
        assert client.lean is not None and client.lean.signer.region == "ap-south-1"
    finally:
        client.close()


def test_env_keys_build_the_lean_path_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SECRET")
    client = BucketClient("b", StoreSettings(endpoint="http://127.0.0.1:9"))
    try:
        assert client.identity == (None, "AKID")
        assert client._session is None  # no boto3 session made
        assert client.lean is not None and client.lean.signer.region == "us-east-1"
    finally:
        client.close()
