from __future__ import annotations

import os
from pathlib import Path

import pytest

from datamover.errors import UsageError
from datamover.options import MiB, TransferOptions, parse_size
from datamover.stores.base import GiB, PartLimits
from datamover.stores.s3 import S3_LIMITS
from datamover.stores.urls import absolute_url, is_relative_path, parse_url


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8MiB", 8 * MiB),
        ("64M", 64 * MiB),
        ("1G", GiB),
        ("1g", GiB),
        ("512k", 512 * 1024),
        ("4096", 4096),
        ("1.5M", int(1.5 * MiB)),
        ("2 GiB", 2 * GiB),
    ],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "abc", "8 furlongs", "-1M", "1MB/s"])
def test_parse_size_rejects_nonsense_with_a_hint(text: str) -> None:
    with pytest.raises(UsageError, match="8MiB"):
        parse_size(text)


def test_options_validate() -> None:
    with pytest.raises(UsageError):
        TransferOptions(transfers=0)
    with pytest.raises(UsageError):
        TransferOptions(part_size=1024)
    with pytest.raises(UsageError):
        TransferOptions(checksum="sha1")


def test_part_size_stays_within_s3_limits() -> None:
    assert S3_LIMITS.choose_part_size(100 * MiB) == 8 * MiB
    assert S3_LIMITS.choose_part_size(100 * MiB, 1 * MiB) == 5 * MiB  # raised to the minimum
    huge = 200 * GiB  # > 10,000 x 8 MiB: parts grow so the count fits
    part = S3_LIMITS.choose_part_size(huge)
    assert -(-huge // part) <= 10_000 and part % MiB == 0
    five_tib = 5 * 1024 * GiB
    part = S3_LIMITS.choose_part_size(five_tib)
    assert -(-five_tib // part) <= 10_000 and part <= 5 * GiB


def test_part_limits_check() -> None:
    limits = PartLimits(5, 10, 3, 10)
    limits.check_part_size(5)
    with pytest.raises(ValueError):
        limits.check_part_size(11)


@pytest.mark.parametrize(
    ("url", "scheme", "bucket", "key"),
    [
        ("s3://b/a/k.txt", "s3", "b", "a/k.txt"),
        ("s3://b", "s3", "b", ""),
        ("s3://b/dir/", "s3", "b", "dir/"),
        ("gs://b/x", "gs", "b", "x"),
        ("gcs://b/x", "gs", "b", "x"),
        ("az://c/x", "az", "c", "x"),
        ("abfs://c/x", "az", "c", "x"),
        ("file:///tmp/x", "file", "", "tmp/x"),
        ("/tmp/x/", "file", "", "tmp/x/"),
    ],
)
def test_parse_url(url: str, scheme: str, bucket: str, key: str) -> None:
    loc = parse_url(url)
    assert (loc.scheme, loc.bucket, loc.key) == (scheme, bucket, key)


def test_parse_url_relative_path_and_remote() -> None:
    assert parse_url("rel/path").key == os.path.abspath("rel/path").lstrip("/")
    loc = parse_url("archive:bucket/some/key")
    assert (loc.remote, loc.bucket, loc.key) == ("archive", "bucket", "some/key")
    with pytest.raises(UsageError, match="names no bucket"):
        parse_url("s3:///key")


def test_a_negative_size_is_called_negative() -> None:
    with pytest.raises(UsageError, match="is negative"):
        parse_size("-5M")


@pytest.mark.parametrize(
    "args, says",
    [
        (["--part-size", "-5M"], "argument --part-size: size '-5M' is negative"),
        (["--min-size", "-1"], "argument --min-size: size '-1' is negative"),
        (["--transfers", "x"], "argument --transfers: invalid int value: 'x'"),
    ],
)
def test_a_bad_option_value_is_one_line(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One line naming the option, no usage block (a new-user sweep found 17 lines of
    usage before the error, and "expected one argument" for a negative size)."""
    from datamover.cli.main import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["copy", "src", "dst", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "datamover copy --help" in err


def test_absolute_url_pins_local_paths_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a job records (``jobs resume`` from anywhere): local paths made absolute, a
    trailing ``/`` kept; URLs and remotes as typed."""
    monkeypatch.chdir(str(tmp_path))
    here = str(tmp_path)
    assert absolute_url("src") == here + "/src"
    assert absolute_url("src/") == here + "/src/"
    assert absolute_url("../x/") == os.path.dirname(here) + "/x/"
    assert absolute_url(".") == here
    for text in ("/abs/p", "/abs/d/", "s3://b/k", "file:///x", "archive:bucket/k"):
        assert absolute_url(text) == text
        assert not is_relative_path(text)
    assert is_relative_path("src") and is_relative_path("./src/")
    assert not is_relative_path("~/src")
    os.mkdir("name:with-colon")  # an existing local path that looks like a remote
    assert absolute_url("name:with-colon") == here + "/name:with-colon"
    assert is_relative_path("name:with-colon")


def test_a_transfers_value_that_is_no_number_is_a_usage_error() -> None:
    """The library call ``copy(..., transfers="x")`` raised a bare TypeError."""
    with pytest.raises(UsageError, match="whole number"):
        TransferOptions(transfers="x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "s3://AKIAEXAMPLE:s3cr3tVALUE@bucket/key",
        "az://account:s3cr3tVALUE@container/path",
        "gs://user:s3cr3tVALUE@bucket/",
    ],
)
def test_credentials_in_an_object_store_url_are_refused_without_echoing_them(url: str) -> None:
    """No bucket name holds an ``@``: ``user:secret@`` pasted into the URL. Sent on,
    the SDK's error echoed the secret in a many-line message (CLI and library alike)."""
    with pytest.raises(UsageError, match="URLs take no credentials") as caught:
        parse_url(url)
    assert "s3cr3tVALUE" not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "az://labazurite/c/?sv=2022-11-02&sp=rl&sig=s3cr3tVALUE%3D",
        "az://container?sv=2022-11-02&sig=s3cr3tVALUE",
        "gs://bucket/obj.nc?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature=s3cr3tVALUE",
        "s3://bucket/k.bin?X-Amz-Credential=AKIA%2F&X-Amz-Signature=s3cr3tVALUE",
        "s3://bucket/k.bin?AWSAccessKeyId=AKIA&Signature=s3cr3tVALUE",
        "myremote:container/dir/?se=2030&sig=s3cr3tVALUE",
    ],
)
def test_a_signed_urls_query_is_refused_without_echoing_it(url: str) -> None:
    """A SAS token or presigned URL's query pasted after the key became part of the
    object's name, and was recorded in the manifest, the journal and library errors."""
    with pytest.raises(UsageError, match="URLs take no SAS tokens or signatures") as caught:
        parse_url(url)
    assert "s3cr3tVALUE" not in str(caught.value) and "\n" not in str(caught.value)
    assert str(caught.value).split("?")[0] == url.split("?")[0]


@pytest.mark.parametrize("url", ["s3://b/what?is=this", "az://c/a?b", "gs://b/q?sign=1"])
def test_a_key_with_a_question_mark_is_still_a_key(url: str) -> None:
    assert parse_url(url).key == url.split("/", 3)[3]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://alice:s3cr3tVALUE@ftp.example.org/data/",
        "sftp://alice:s3cr3tVALUE@hpc.example.org:2222/scratch/x",
        "https://alice:s3cr3tVALUE@files.example.org/a.bin",
    ],
)
def test_a_password_in_any_other_url_is_refused_without_echoing_it(url: str) -> None:
    """fsspec URLs (ftp, sftp, https) are recorded in manifests, the journal and reports
    as typed, and fsspec's errors echo them: a password in one is refused, with where to
    put it instead; the user name alone is fine."""
    with pytest.raises(UsageError, match="URLs take no passwords") as caught:
        parse_url(url)
    message = str(caught.value)
    assert "s3cr3tVALUE" not in message and "\n" not in message
    assert "alice@" in message and "_PASSWORD" in message
    scheme = url.split(":", 1)[0]
    user_only = url.replace(":s3cr3tVALUE", "")
    assert parse_url(user_only).scheme == scheme
