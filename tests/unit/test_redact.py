"""Secrets are scrubbed from command lines, messages and log records."""

from __future__ import annotations

import io
import logging

import pytest

from datamover.options import TransferOptions
from datamover.redact import MASK, RedactingFilter, redact, scrub_argv


def test_scrub_argv_masks_secret_options_and_urls() -> None:
    argv = [
        "datamover",
        "copy",
        "--s3-secret-key",
        "hunter2hunter2",
        "--sas-token=sv=2024&sig=abc",
        "--api-key=zzz",
        "https://user:pa55word@host/x?sv=1&sig=SIGNATURE123",
        "/data/run1",
        "--transfers",
        "8",
    ]
    out = scrub_argv(argv)
    text = " ".join(out)
    for secret in ("hunter2hunter2", "abc", "zzz", "pa55word", "SIGNATURE123"):
        assert secret not in text
    assert out[3] == MASK and out[4] == f"--sas-token={MASK}" and out[5] == f"--api-key={MASK}"
    assert out[-3:] == ["/data/run1", "--transfers", "8"]


@pytest.mark.parametrize(
    "text",
    [
        "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=S3CR3T/KEY==;EndpointSuffix=x",
        "https://a.blob.core.windows.net/c?sv=2024-01-01&sp=r&sig=S3CR3T%2Fsig",
        "https://b.s3.amazonaws.com/k?X-Amz-Credential=S3CR3T&X-Amz-Signature=S3CR3T",
        "s3://admin:S3CR3T@minio.local/bucket",
        "AWS_SECRET_ACCESS_KEY=S3CR3T",
        "SharedAccessSignature=S3CR3T;BlobEndpoint=x",
    ],
)
def test_redact_patterns(text: str) -> None:
    assert "S3CR3T" not in redact(text)


def test_redact_env_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_LAB_SECRET", "totally-unique-value-42")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountName=a;AccountKey=KeyPart9876543")
    line = "oops totally-unique-value-42 and KeyPart9876543 leaked"
    assert redact(line) == f"oops {MASK} and {MASK} leaked"
    assert redact("a digest 0123456789abcdef stays") == "a digest 0123456789abcdef stays"


def test_paths_of_credential_files_are_not_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a secret is kept is no secret: masking ``/dev/null`` made an error about
    that very file read ``***: no manifest header`` (found by a new-user sweep)."""
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/tmp/aws-config")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/home/me/key.json")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-123")
    text = "/dev/null: no manifest header; /home/me/key.json; s3cr3t-value-123"
    assert redact(text) == "/dev/null: no manifest header; /home/me/key.json; ***"


def test_options_record_a_scrubbed_command_line() -> None:
    opts = TransferOptions(command_line=("datamover", "copy", "--secret-key", "zzzzzzzz", "a"))
    assert "zzzzzzzz" not in opts.command_line


def test_logging_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_TOKEN", "tok-tok-tok-tok")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("GET %s token=%s", "/c?sig=abcdef", "tok-tok-tok-tok")
        try:
            raise RuntimeError("failed with AccountKey=zzzzzzzz")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "abcdef" not in text and "tok-tok-tok-tok" not in text and "zzzzzzzz" not in text
    assert "Traceback" in text
