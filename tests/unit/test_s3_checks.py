"""How the S3 store learns what an endpoint checks (``datamover/stores/s3/checks.py``),
against a scripted endpoint: a store that refuses a checksum header, one that
ignores every one, one that checks Content-MD5 only; and how ``--s3-checksum`` and
the remote option ``s3_checksum`` reach it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from datamover.config import parse_config
from datamover.errors import ConfigError, IntegrityError, StoreError, UsageError
from datamover.options import TransferOptions
from datamover.stores import StoreSettings
from datamover.stores.s3 import checks
from datamover.stores.s3.checks import Checks

Behaviour = Callable[[dict[str, Any], bool], None]


class _Client:
    def __init__(self, part: Behaviour) -> None:
        self.part = part
        self.aborted: list[str] = []
        self.created: list[dict[str, Any]] = []

    def create_multipart_upload(self, **kw: Any) -> dict[str, Any]:
        self.created.append(kw)
        return {"UploadId": f"u{len(self.created)}"}

    def upload_part(self, **kw: Any) -> dict[str, Any]:
        self.part(kw, kw["Body"] == checks._PROBE_BODY and kw["PartNumber"] == 1)
        return {"ETag": '"e"'}

    def abort_multipart_upload(self, **kw: Any) -> None:
        self.aborted.append(kw["UploadId"])

    def list_multipart_uploads(self, **kw: Any) -> dict[str, Any]:
        return {"Uploads": []}


class _Endpoint:
    """What ``checks`` uses of a ``BucketClient``."""

    endpoint_url = "https://s3.example.test"
    identity = ("p", "AK")
    signs_payload = False
    lean = None

    def __init__(self, part: Behaviour, mode: str = "auto") -> None:
        self.client = _Client(part)
        self.checksum_mode = mode

    def call(self, key: str, fn: Any, **kw: Any) -> Any:
        return fn(Bucket="b", **kw)

    def abort_upload(self, key: str, upload_id: str) -> None:
        self.client.abort_multipart_upload(Key=key, UploadId=upload_id)

    def lean_request(self, method: str, key: str, **kw: Any) -> None:
        return None  # no lean path: every request goes to ``client``

    def create_upload(self, key: str, headers: dict[str, str], **kw: Any) -> str:
        return str(self.call(key, self.client.create_multipart_upload, Key=key, **kw)["UploadId"])

    def url(self, key: str = "") -> str:
        return f"s3://b/{key}"


def _refuses_crcs(kw: dict[str, Any], right: bool) -> None:
    if any(k.startswith("ChecksumCRC") for k in kw):
        raise StoreError("s3://b/k: InvalidArgument: x-amz-checksum-* not supported")
    if "ContentMD5" in kw and not right:
        raise IntegrityError("s3://b/k: checksum rejected by the server (BadDigest)")


def _ignores_all(kw: dict[str, Any], right: bool) -> None:
    return None


def _checks_all(kw: dict[str, Any], right: bool) -> None:
    if not right:
        raise IntegrityError("s3://b/k: checksum rejected by the server (BadDigest)")


def test_auto_takes_the_best_check_the_store_makes() -> None:
    found = checks._probe(_Endpoint(_checks_all), "auto", "p/")  # type: ignore[arg-type]
    assert found == Checks("crc64nvme", "crc64nvme", True, False)
    md5_only = _Endpoint(_refuses_crcs)
    assert checks._probe(md5_only, "auto", checks.PROBE_PREFIX) == Checks("md5", "md5")  # type: ignore[arg-type]
    # Every probe upload was aborted; none ever became an object.
    assert len(md5_only.client.aborted) == len(md5_only.client.created)
    assert all(c["Key"].startswith(checks.PROBE_PREFIX) for c in md5_only.client.created)


def test_a_store_that_checks_nothing_gets_no_claim(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        found = checks._probe(_Endpoint(_ignores_all), "auto", "p/")  # type: ignore[arg-type]
    assert found.verified is None and found.send is None
    assert "does not check any checksum" in caplog.text


def test_a_refused_header_is_a_one_line_error_naming_the_option() -> None:
    with pytest.raises(UsageError) as info:
        checks._probe(_Endpoint(_refuses_crcs), "crc32c", "p/")  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert "--s3-checksum" in message and "s3_checksum" in message and "crc32c" in message


def test_off_sends_nothing_and_claims_nothing() -> None:
    endpoint = _Endpoint(_checks_all)
    assert checks._probe(endpoint, "off", "p/") == Checks(None, None)  # type: ignore[arg-type]
    assert endpoint.client.created == []


def test_the_option_reaches_the_store_and_is_validated() -> None:
    with pytest.raises(UsageError, match="s3-checksum"):
        TransferOptions(s3_checksum="sha1")
    assert TransferOptions(s3_checksum="md5").public()["s3_checksum"] == "md5"
    from datamover.job import store_settings

    assert store_settings(TransferOptions(s3_checksum="off")).extra["s3_checksum"] == "off"
    assert "s3_checksum" not in store_settings(TransferOptions()).extra
    config = parse_config({"remotes": {"lab": {"type": "s3", "s3_checksum": "md5"}}})
    assert config.remotes["lab"].settings_extra() == {"s3_checksum": "md5"}
    with pytest.raises(ConfigError, match="s3_checksum must be one of"):
        parse_config({"remotes": {"lab": {"type": "s3", "s3_checksum": "sha1"}}})
    from datamover.stores.s3.client import BucketClient

    with pytest.raises(UsageError, match="s3_checksum"):
        BucketClient("b", StoreSettings(endpoint="http://127.0.0.1:9", extra={"s3_checksum": "x"}))


def test_the_command_line_refuses_an_unknown_mode() -> None:
    cli = subprocess.run(
        [sys.executable, "-m", "datamover", "copy", "--s3-checksum", "sha1", "a", "b"],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 2
    assert "--s3-checksum" in cli.stderr and "crc64nvme" in cli.stderr


def test_credentials_limited_to_a_prefix_are_probed_next_to_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datamover.errors import PermissionDenied

    endpoint = _Endpoint(_checks_all)
    create = endpoint.client.create_multipart_upload

    def only_home(**kw: Any) -> dict[str, Any]:
        if not kw["Key"].startswith("home/me/"):
            raise PermissionDenied(f"s3://b/{kw['Key']}: access denied (AccessDenied)")
        return create(**kw)

    monkeypatch.setattr(endpoint.client, "create_multipart_upload", only_home)
    monkeypatch.setattr(endpoint, "identity", ("limited", "AK2"))
    found = checks.checks_for(endpoint, "home/me/run1/file.bin")  # type: ignore[arg-type]
    assert found.verified == "crc64nvme"
    assert all(
        c["Key"].startswith("home/me/run1/.datamover-probe-") for c in endpoint.client.created
    )
