"""The POSIX-metadata convention mapper (datamover/stores/conventions): every
convention's keys read into datamover's, the s3fs/rclone ``mode`` rule on ambiguous
values, precedence and reported disagreements, hostile values, and every style
rendered and read back."""

from __future__ import annotations

import stat

import pytest

from datamover.errors import UsageError
from datamover.posixmeta import parse_mtime_ns
from datamover.stores.conventions import (
    STYLES,
    Styles,
    normalise,
    parse_styles,
    precedence,
    read_mode,
    render,
)

REG640 = stat.S_IFREG | 0o640
NS = 1_700_000_000_123_456_789
SNS = "1700000000.123456789"

#: (convention, metadata exactly as the tool's documentation shows it, expected keys)
PLANTED = [
    ("s3fs", {"mode": "33184", "uid": "1000", "gid": "100", "mtime": "1700000000"}, "1700000000"),
    ("rclone S3", {"mode": "100640", "uid": "1000", "gid": "100", "mtime": SNS}, SNS),
    (
        "rclone -M Azure/GCS",
        {"mode": "100640", "uid": "1000", "gid": "100", "mtime": "2023-11-14T22:13:20.123456789Z"},
        SNS,
    ),
    (
        "gcloud",
        {
            "goog-reserved-posix-mode": "640",
            "goog-reserved-posix-uid": "1000",
            "goog-reserved-posix-gid": "100",
            "goog-reserved-file-mtime": "1700000000",
        },
        "1700000000",
    ),
    (
        "azcopy (names as Azure gives them)",
        {
            "permissions": "33184",
            "posix_owner": "1000",
            "posix_group": "100",
            "modtime": str(NS),
        },
        SNS,
    ),
    (
        "azcopy AMLFS",
        {
            "owner": "1000",
            "group": "100",
            "permissions": "0640",
            "modtime": "2023-11-14 22:13:20 +0000",
        },
        "1700000000",
    ),
    (
        "fsx-lustre / DataSync",
        {
            "file-permissions": "0100640",
            "file-owner": "1000",
            "file-group": "100",
            "file-mtime": f"{NS}ns",
        },
        SNS,
    ),
]


@pytest.mark.parametrize(("name", "meta", "mtime"), PLANTED, ids=[p[0] for p in PLANTED])
def test_each_convention_reads_as_mode_640_owner_and_mtime(
    name: str, meta: dict[str, str], mtime: str
) -> None:
    got = normalise(meta, key="f", size=3).metadata
    assert got["mode"] == str(REG640), name
    assert (got["uid"], got["gid"]) == ("1000", "100")
    assert parse_mtime_ns(got["mtime"]) == parse_mtime_ns(mtime)
    assert not {k for k in got if k.startswith(("goog", "file-", "posix", "perm"))}


def test_amlfs_time_zone_offset_counts() -> None:
    got = normalise({"permissions": "0640", "modtime": "2003-04-05 06:07:08 +0200"}, key="f")
    assert got.metadata["mtime"] == "1049515628"  # 04:07:08 UTC


@pytest.mark.parametrize(
    ("raw", "key", "size", "octal_first", "expected"),
    [
        ("33184", "f", 3, False, (REG640, False)),  # an 8: decimal (s3fs)
        ("100640", "f", 3, False, (REG640, True)),  # over 0o177777 in decimal: octal
        ("40755", "d/", 0, False, (stat.S_IFDIR | 0o755, True)),  # decimal type invalid
        ("33261", "f", 3, False, (stat.S_IFREG | 0o755, False)),  # octal type invalid
        ("0644", "f", 3, False, (0o644, True)),  # a leading 0: octal
        ("644", "f", 3, False, (0o644, True)),  # chmod-style permission bits
        # ambiguous: 41471 is a decimal symlink 0777 and an octal directory 1471
        ("41471", "a/", 0, False, (0o41471, True)),  # a dir/ key: the directory
        ("41471", "link", 9, False, (stat.S_IFLNK | 0o777, False)),  # bytes: the link
        ("41471", "x", 0, False, (stat.S_IFLNK | 0o777, False)),  # S3: s3fs's decimal
        ("41471", "x", 0, True, (0o41471, True)),  # Azure/GCS: rclone's octal
        # 10644: a decimal character device, an octal FIFO
        ("10644", "p", 0, False, (10644, False)),
        ("10644", "p", 0, True, (stat.S_IFIFO | 0o644, True)),
        ("rw-r--r--", "f", 3, False, None),
        ("99999999", "f", 3, False, None),
        ("", "f", 3, False, None),
    ],
)
def test_mode_rule_on_ambiguous_values(
    raw: str, key: str, size: int, octal_first: bool, expected: tuple[int, bool] | None
) -> None:
    assert read_mode(raw, key=key, size=size, octal_first=octal_first) == expected


def test_an_ambiguous_mode_follows_another_convention_on_the_object() -> None:
    meta = {"mode": "41471", "file-permissions": "041471"}
    got = normalise(meta, key="x", size=0)
    assert got.metadata["mode"] == str(0o41471) and not got.conflicts


def test_rclone_octal_setuid_misread_is_gone() -> None:
    # rclone's 100640 once read as decimal: 0o303540, i.e. set-uid r--r-----.
    assert normalise({"mode": "100640"}, key="f").metadata["mode"] == str(REG640)


def test_disagreement_reported_and_not_mixed() -> None:
    meta = {
        "mode": "33184",
        "uid": "1",
        "goog-reserved-posix-mode": "600",
        "goog-reserved-posix-uid": "2",
        "goog-reserved-posix-gid": "7",
        "goog-reserved-file-mtime": "1700000000",
    }
    got = normalise(meta, key="f")
    assert got.convention == "s3fs"
    assert got.metadata == {"mode": "33184", "uid": "1"}  # nothing taken from gcloud
    assert len(got.conflicts) == 2 and "gcloud says 600" in got.conflicts[0]
    gcs_first = normalise(meta, key="f", order=precedence(("gcloud",)))
    assert gcs_first.convention == "gcloud"
    assert gcs_first.metadata["mode"] == str(stat.S_IFREG | 0o600)
    assert gcs_first.metadata["gid"] == "7"
    # The winner's record only: the loser's owner is not kept where the winner has none.
    lone = {"mode": "33184", "uid": "1", "goog-reserved-posix-mode": "600"}
    got = normalise(lone, key="f", order=precedence(("gcloud",)))
    assert got.metadata == {"mode": str(stat.S_IFREG | 0o600)} and got.conflicts


def test_agreeing_conventions_merge_at_the_finest_time() -> None:
    meta = {"goog-reserved-file-mtime": "1700000000", "modtime": str(NS), "permissions": "33184"}
    got = normalise(meta, key="f")
    assert not got.conflicts
    assert got.metadata == {"mode": "33184", "mtime": SNS}


@pytest.mark.parametrize(
    "meta",
    [
        {"goog-reserved-posix-mode": "rwx", "goog-reserved-posix-uid": "-1"},
        {"file-permissions": "0100640", "file-mtime": "12345"},  # no ns suffix
        {"permissions": "33184", "modtime": "9" * 40},
        {"file-owner": "1" * 100, "permissions": "0640"},
        {"gcsfuse_mtime": "2023-13-45T99:00:00Z"},
    ],
)
def test_bad_foreign_values_are_ignored_and_reported(meta: dict[str, str]) -> None:
    got = normalise(meta, key="f")
    assert got.ignored, got
    for line in got.ignored:
        assert "ignored" in line and len(line) < 200


def test_own_keys_unreadable_stay_so_the_posix_writer_fails_the_file() -> None:
    for meta in ({"mode": "rw-r--r--"}, {"mtime": "yesterday"}, {"uid": "root"}):
        assert normalise(meta, key="f").metadata == meta


def test_type_flags_and_directories() -> None:
    link = normalise({"goog-reserved-file-is-symlink": "true"}, key="l").metadata
    assert stat.S_ISLNK(int(link["mode"]))
    fifo = normalise({"is-fifo": "true", "permissions": "4516"}, key="p").metadata
    assert int(fifo["mode"]) == stat.S_IFIFO | 0o644
    folder = normalise({"goog-reserved-posix-mode": "750"}, key="d/").metadata
    assert int(folder["mode"]) == stat.S_IFDIR | 0o750


OWN = {
    "mode": str(REG640 | stat.S_ISUID),
    "uid": "1000",
    "gid": "100",
    "mtime": SNS,
    "datamover-sha256": "ab" * 32,
}


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("rfc", [False, True])
def test_every_style_reads_back(style: str, rfc: bool) -> None:
    written = render(OWN, (style,), rfc3339_mtime=rfc)
    assert written["datamover-sha256"] == "ab" * 32
    back = normalise({k.replace("_", "-"): v for k, v in written.items()}, key="f").metadata
    keeps_setid = style not in ("gcloud", "gcsfuse")
    if style != "gcsfuse":
        mode = int(back["mode"])
        assert stat.S_IMODE(mode) & 0o777 == 0o640 and stat.S_ISREG(mode)
        assert bool(mode & stat.S_ISUID) == keeps_setid
        assert (back["uid"], back["gid"]) == ("1000", "100")
    exact = style in ("s3fs", "rclone", "gcsfuse", "azcopy", "fsx-lustre")
    assert back["mtime"] == (SNS if exact else "1700000000")


def test_styles_that_collide_are_refused_and_others_combine() -> None:
    assert parse_styles("s3fs,gcloud,fsx-lustre", rfc3339_mtime=False) == (
        "s3fs",
        "gcloud",
        "fsx-lustre",
    )
    for bad in ("s3fs,rclone", "azcopy,amlfs", "nonsense", ""):
        with pytest.raises(UsageError):
            parse_styles(bad, rfc3339_mtime=False)
    assert Styles.chosen(None, ("gcloud",)).styles == ("gcloud",)


def test_unreadable_own_values_are_passed_on_unchanged() -> None:
    meta = {"mode": "rw-r--r--", "mtime": "yesterday"}
    assert render(meta, ("gcloud", "azcopy"), rfc3339_mtime=True) == meta


def test_agreeing_conventions_keep_the_mode_that_says_most() -> None:
    # gcloud keeps three digits, rclone the type and set-id bits: a device node and
    # a set-uid file written in GCS's default styles read back whole.
    for whole in (stat.S_IFCHR | 0o600, stat.S_IFREG | 0o4755):
        written = render({"mode": str(whole)}, ("gcloud", "gcsfuse", "rclone"), rfc3339_mtime=True)
        got = normalise(written, key="n", order=precedence(("gcloud", "gcsfuse", "rclone")))
        assert got.metadata["mode"] == str(whole) and not got.conflicts


def test_time_formats() -> None:
    from datamover.stores.conventions import values as v

    assert v.rfc3339("2023-11-15T00:13:20.5+02:00") == (1_700_000_000_500_000_000, 10**8)
    assert v.rfc3339("2023-11-14T22:13:20Z") == (1_700_000_000 * 10**9, 10**9)
    assert v.rfc3339("2023-02-30T00:00:00Z") is None
    assert v.rfc3339("2024-02-29T00:00:00Z") is not None
    assert v.rfc3339("2100-02-29T00:00:00Z") is None
    # Year 0 (four digits, so the pattern takes it) raised ValueError from the calendar
    # module: a bucket's metadata value crashed the listing instead of being ignored.
    assert v.rfc3339("0000-01-01T00:00:00Z") is None
    assert v.amlfs_time("0000-01-01 00:00:00 +0000") is None
    assert normalise({"gcsfuse_mtime": "0000-01-01T00:00:00Z"}, key="k").ignored
    assert v.amlfs_time("2023-11-14 17:13:20 -0500") == (1_700_000_000 * 10**9, 10**9)
    assert v.fmt_rfc3339(NS) == "2023-11-14T22:13:20.123456789Z"
    assert v.fmt_amlfs(NS) == "2023-11-14 22:13:20 +0000"
    assert v.seconds("1700000000.5") == (1_700_000_000_500_000_000, 10**8)
    assert v.nanoseconds(f"{NS}ns", "ns") == (NS, 1)
