"""``as_written``: the one-step reading of metadata a store wrote in its own styles
gives exactly what ``normalise`` gives, or declines (then ``normalise`` reads it).

Azure and GCS list every blob with its metadata, and reading five conventions on each
cost 35-50 us a blob, ~8 % of a small-file download's client CPU on Azure. The fast
path is only worth having if it can never answer differently: every case here holds it
to ``normalise``'s answer, on renderings, on renderings tampered with, and on the
shapes a hostile bucket can hold.
"""

from __future__ import annotations

import random
import stat
import zlib

import pytest

from datamover.stores.azure.metadata import READ_ORDER as AZ_ORDER
from datamover.stores.azure.metadata import from_azure_metadata, listed_info, to_azure_metadata
from datamover.stores.conventions import Styles, posix_metadata, precedence, render
from datamover.stores.conventions.read import as_written, normalise
from datamover.stores.gcs.metadata import READ_ORDER as GCS_ORDER

STYLE_SETS = [
    (("azcopy", "rclone"), AZ_ORDER),
    (("gcloud", "gcsfuse", "rclone"), GCS_ORDER),
    (("rclone",), precedence(("rclone",))),
    (("s3fs", "rclone"), precedence(("s3fs", "rclone"))),
    (("azcopy",), precedence(("azcopy",))),
    (("gcloud", "rclone"), precedence(("gcloud", "rclone"))),
    (("azcopy", "fsx-lustre", "rclone"), precedence(("azcopy", "fsx-lustre", "rclone"))),
]


def _record(rng: random.Random) -> dict[str, str]:
    kind = stat.S_IFREG if rng.random() < 0.9 else rng.choice([stat.S_IFDIR, stat.S_IFLNK])
    own = {"mode": str(kind | rng.randrange(0o10000))}
    if rng.random() < 0.9:
        own["uid"] = str(rng.choice([0, 1000, rng.randrange(2**32 - 1)]))
        own["gid"] = str(rng.choice([0, 100, rng.randrange(2**32 - 1)]))
    for name in ("mtime", "atime"):
        if rng.random() < 0.85:
            whole = rng.choice([0, 1, 1_765_000_000, rng.randrange(2**34)])
            frac = rng.choice([0, 500_000_000, 1, rng.randrange(10**9)])
            own[name] = f"{whole}.{frac:09d}".rstrip("0").rstrip(".") if frac else str(whole)
    if rng.random() < 0.3:
        own["datamover-sha256"] = "ab" * 32
    if rng.random() < 0.1:
        own["project"] = "climate_run-7"
    return own


def _mutate(rng: random.Random, metadata: dict[str, str]) -> dict[str, str]:
    out = dict(metadata)
    keys = sorted(out)
    what = rng.randrange(6)
    if what == 0 and keys:
        out.pop(rng.choice(keys))
    elif what == 1 and keys:
        k = rng.choice(keys)
        out[k] = out[k] + rng.choice(["0", "1", " ", "Z", ".5"])
    elif what == 2 and keys:
        k = rng.choice(keys)
        out[k] = rng.choice(["", "0", "-1", "0755", "100644", "4294967295", "x", "٣"])
    elif what == 3:
        out[rng.choice(["owner", "group", "is_symlink", "hdi_isfolder", "file-owner"])] = "7"
    elif what == 4 and keys:
        k = rng.choice(keys)
        out[k.upper()] = out[k]
    else:
        out[rng.choice(["posix_owner", "uid", "mode", "permissions", "modtime"])] = "12"
    return out


def _same_answer(metadata: dict[str, str], styles: tuple[str, ...], order, key: str) -> bool:
    """Whether the fast path answered; fails when it answered differently."""
    fast = as_written(metadata, styles, rfc3339_mtime=True, key=key)
    slow = normalise(metadata, key=key, size=4096, order=order)
    if fast is None:
        return False
    assert fast == slow.metadata, (metadata, fast, slow)
    assert slow.conflicts == () and slow.ignored == (), (metadata, slow)
    return True


@pytest.mark.parametrize(("styles", "order"), STYLE_SETS, ids=lambda s: ",".join(s))
def test_renderings_read_in_one_step_as_normalise_reads_them(styles, order) -> None:
    rng = random.Random(zlib.crc32(",".join(styles).encode()))
    hits = 0
    regular = 0
    for i in range(600):
        own = _record(rng)
        written = render(own, styles, rfc3339_mtime=True)
        if "azcopy" in styles:  # as Azure stores the names and lists them back
            written = from_azure_metadata(to_azure_metadata(written))
        key = f"dir/f{i}" if rng.random() < 0.95 else f"dir/d{i}/"
        hits += _same_answer(written, styles, order, key)
        usual = all(int(float(own.get(t, "0"))) < 2**32 for t in ("mtime", "atime"))
        regular += stat.S_ISREG(int(own["mode"])) and not key.endswith("/") and usual
    # every regular file with times before 2106 is read in one step (render leaves
    # later times as they are, in the s3fs keys only: normalise reads those)
    assert hits >= regular, (hits, regular)


@pytest.mark.parametrize(("styles", "order"), STYLE_SETS, ids=lambda s: ",".join(s))
def test_tampered_metadata_gets_normalise_answer(styles, order) -> None:
    rng = random.Random(7 + zlib.crc32(",".join(styles).encode()))
    for i in range(1500):
        own = _record(rng)
        written = render(own, styles, rfc3339_mtime=True)
        if "azcopy" in styles:
            written = from_azure_metadata(to_azure_metadata(written))
        for _ in range(rng.randrange(1, 3)):
            written = _mutate(rng, written)
        _same_answer(written, styles, order, f"f{i}")


def test_other_tools_and_hostile_shapes_are_left_to_normalise() -> None:
    styles = ("azcopy", "rclone")
    cases = [
        {},
        {"mode": "100644"},  # rclone alone: no AzCopy keys to render back
        {"permissions": "33188", "modtime": "1"},  # AzCopy without rclone's keys
        {"permissions": "33188", "mode": "100644", "posix-owner": "0", "uid": "0"},
        {"permissions": "16877", "mode": "40755"},  # a directory
        {"permissions": "33188", "mode": "100644", "is-symlink": "true"},
        {"permissions": "33188", "mode": "100644", "hdi-isfolder": "true"},
        {"permissions": "99999999999999999999999", "mode": "100644"},
        {"permissions": "0644", "mode": "644"},  # AMLFS style
    ]
    for metadata in cases:
        _same_answer(metadata, styles, AZ_ORDER, "f")
    assert as_written(cases[4], styles, rfc3339_mtime=True, key="f") is None
    assert as_written(cases[5], styles, rfc3339_mtime=True, key="f") is None


def test_store_listing_uses_it_and_agrees() -> None:
    """The Azure listing's info from a blob datamover wrote: the same with and without
    the one-step reading."""
    own = {"mode": "33261", "uid": "1000", "gid": "1000", "mtime": "1765000000.25"}
    azure = to_azure_metadata(render(own, ("azcopy", "rclone"), rfc3339_mtime=True))
    info = listed_info("d/f", 10, azure, None, "e", None, None)
    assert info.metadata == own
    assert info.mode == 0o100755
    assert posix_metadata(from_azure_metadata(azure), key="d/f", size=10) == own
    assert (
        posix_metadata(
            from_azure_metadata(azure),
            key="d/f",
            size=10,
            written=Styles(("azcopy", "rclone"), rfc3339_mtime=True),
        )
        == own
    )
