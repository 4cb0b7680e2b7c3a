"""How S3 errors are worded where the answer alone can mislead: a missing bucket whose
name no bucket can have, and a HEAD's bare 403 that may be rejected credentials."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from datamover.errors import AuthError, BucketNotFound
from datamover.stores.s3.client import BucketClient
from datamover.stores.s3.errors import classify_error, valid_bucket_name


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("abc", True),
        ("my.bucket-1", True),
        ("a" * 63, True),
        ("ab", False),
        ("a" * 64, False),
        ("Bad_Bucket", False),
        ("UPPER", False),
        ("a..b", False),
        ("-ab", False),
        ("ab-", False),
    ],
)
def test_bucket_name_rules(name: str, valid: bool) -> None:
    assert valid_bucket_name(name) is valid


def test_no_such_bucket_explains_an_invalid_name() -> None:
    bad = classify_error("NoSuchBucket", 404, "", None, "Bad_Bucket", "k")
    assert isinstance(bad, BucketNotFound)
    assert "not a valid S3 bucket name" in str(bad) and "create it" not in str(bad)
    good = classify_error("NoSuchBucket", 404, "", None, "good-bucket", None)
    assert isinstance(good, BucketNotFound)
    assert (
        str(good)
        == "s3://good-bucket: bucket 'good-bucket' does not exist; create it or check the name"
    )
    refused = classify_error("InvalidBucketName", 400, "", None, "ab", None)
    assert isinstance(refused, BucketNotFound)  # fatal: one line, not one per file
    assert "InvalidBucketName" in str(refused) and "not a valid S3 bucket name" in str(refused)


class _Lister:
    def __init__(self, code: str | None) -> None:
        self.code = code
        self.calls = 0

    def list_objects_v2(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        if self.code is None:
            return {}
        raise ClientError(
            {
                "Error": {"Code": self.code, "Message": "m"},
                "ResponseMetadata": {"HTTPStatusCode": 403},
            },
            "ListObjectsV2",
        )


def _explain(lister: _Lister, *, authenticated: bool = False) -> None:
    fake: Any = SimpleNamespace(bucket="b", authenticated=authenticated, client=lister)
    BucketClient.explain_denied(fake, "k")


def test_a_bare_403_is_explained_by_a_listing() -> None:
    """SignatureDoesNotMatch/InvalidAccessKeyId become AuthError; AccessDenied, or a
    listing that works, leave the caller's PermissionDenied standing."""
    for code in ("SignatureDoesNotMatch", "InvalidAccessKeyId"):
        with pytest.raises(AuthError, match=f"credentials rejected \\({code}\\)"):
            _explain(_Lister(code))
    for code in ("AccessDenied", None):
        _explain(_Lister(code))  # raises nothing
    accepted = _Lister("SignatureDoesNotMatch")
    _explain(accepted, authenticated=True)  # credentials already worked: a real denial
    assert accepted.calls == 0
