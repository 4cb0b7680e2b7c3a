"""The check a copy makes before it starts (``job.preflight``: can the store be
reached, does the bucket exist) asks for one entry, not a page. It used to list the
source's directory one level down with the store's page size: 5,000 blobs, metadata
included, from Azure for a directory of small files, all parsed to take the first.

Driven as a user would: the CLI in a subprocess against SeaweedFS, Azurite and
fake-gcs-server, every request seen on the wire by the proxy in front."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from faultproxy import FaultProxy
from serverenv import use_server

pytestmark = [pytest.mark.cloud, pytest.mark.timeout(240)]

DM = [sys.executable, "-m", "datamover"]
FLAVOR = {"s3": "s3", "az": "azure", "gs": "gcs"}
SERVER_FIXTURE = {"s3": "seaweed", "az": "azurite", "gs": "gcs"}
#: The page-size parameter of each listing API.
PAGE_PARAM = {"s3": "max-keys", "az": "maxresults", "gs": "maxResults"}
FILES = 12


def _dm(args: list[str], env: dict[str, str]) -> None:
    run = subprocess.run([*DM, *args], env=env, capture_output=True, text=True, timeout=200)
    assert run.returncode == 0, f"{args}: exit {run.returncode}\n{run.stdout}{run.stderr}"


def _listings(seen: list[tuple[str, str]]) -> list[dict[str, list[str]]]:
    """The query of every listing request seen (S3 ``list-type``, Azure ``comp=list``,
    GCS ``/o`` with no object name)."""
    out = []
    for method, target in seen:
        if method != "GET":
            continue
        parts = urlsplit(target)
        query = parse_qs(parts.query, keep_blank_values=True)
        if "list-type" in query or query.get("comp") == ["list"] or parts.path.endswith("/o"):
            out.append(query)
    return out


@pytest.mark.parametrize("scheme", ["s3", "az", "gs"])
def test_preflight_asks_for_one_entry(
    scheme: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = request.getfixturevalue(SERVER_FIXTURE[scheme])
    env = use_server(server, monkeypatch)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(FILES):
        (src / f"f{i:02d}.dat").write_bytes(b"x" * (100 + i))
    _dm(["copy", str(src), env.url("dir")], server.client_env())
    flavor = FLAVOR[scheme]
    with FaultProxy(server.endpoint, flavor=flavor, enabled=False, record=True) as proxy:  # type: ignore[arg-type]
        out = tmp_path / "out"
        _dm(["copy", env.url("dir/"), str(out), "--processes", "1"], proxy.client_env(server))
        listings = _listings(proxy.seen)
    assert sorted(p.name for p in out.iterdir()) == [f"f{i:02d}.dat" for i in range(FILES)]
    one_level = [q for q in listings if "delimiter" in q]
    assert one_level, listings  # the preflight's
    for query in one_level:
        assert query.get(PAGE_PARAM[scheme]) == ["1"], query
    # The plan's own listing is recursive and asks for full pages.
    whole = [q for q in listings if "delimiter" not in q]
    assert whole and all(q.get(PAGE_PARAM[scheme]) != ["1"] for q in whole), whole
