"""The Azure store imports azure-storage-blob / azure-core (and requests) only when a
call needs them (``stores/azure/sdk.py``, issue #18): a ``datamover copy`` up and
down whose connection string or account key comes from the environment, small files
and a multipart one (Put Block, Put Block List, ranged Get Blob), a listing and a
``verify`` of the manifest load none of them, in the coordinator nor in a
``--processes`` worker. Each command runs in a child process with
``PYTHONPROFILEIMPORTTIME`` set (inherited by its workers), whose report names every
module any of them imported. What truly needs the SDK still gets it: a server-side
copy, the pending-upload listing. Errors (missing container, missing blob, rejected
key) come out mapped as before without it."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
from importprobe import run_probed

from datamover.checksums import PartDigests
from datamover.errors import BucketNotFound, NotFound
from datamover.stores import open_store
from datamover.stores.azure import AzureStore
from datamover.stores.base import PartReceipt, digest_metadata_key

from serverenv import ServerEnv, new_bucket_name, use_server
from servers import AzuriteServer

#: Modules only the SDK path loads.
SDK = ("azure.storage", "azure.core", "azure.identity", "requests")


@pytest.fixture
def azurite_env(azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch) -> ServerEnv:
    return use_server(azurite, monkeypatch)


def _run(*argv: str, env: dict[str, str] | None = None, code: int = 0) -> tuple[str, list[str]]:
    """``datamover argv`` in a child, which must exit with ``code``; its output
    (stdout, and the error lines when ``code`` is not 0) and the SDK modules it (or a
    worker it started) imported."""
    run = run_probed(*argv, env=env)
    r = run.result
    assert r.returncode == code, r.stdout + "\n".join(run.other)
    assert "datamover.stores.azure.store" in run.modules  # the report is real
    out = r.stdout if code == 0 else "\n".join(run.other)
    return out, run.loaded(SDK)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.cloud
def test_copy_up_down_list_verify_without_the_sdk(azurite_env: ServerEnv, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(30):
        (src / "d" / f"small{i:02d}").write_bytes(os.urandom(4096))
    (src / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    multipart = ("--multipart-threshold", "1MiB", "--part-size", "1MiB")

    out, loaded = _run("copy", *multipart, str(src), azurite_env.url("up/"))
    assert loaded == [], loaded
    manifest = re.search(r"manifest: (\S+)", out)
    assert manifest is not None, out
    _out, loaded = _run("verify", manifest.group(1))
    assert loaded == [], loaded

    out, loaded = _run("ls", azurite_env.url("up/d/"))
    assert loaded == [], loaded
    assert out.count("small") == 30

    down = tmp_path / "down"
    _out, loaded = _run("copy", *multipart, azurite_env.url("up/"), str(down))
    assert loaded == [], loaded
    assert _tree(down) == _tree(src)

    # Many small files with worker processes: the workers import no SDK either.
    down2 = tmp_path / "down2"
    _out, loaded = _run("copy", "--processes", "2", azurite_env.url("up/d/"), str(down2))
    assert loaded == [], loaded
    assert _tree(down2) == _tree(src / "d")


@pytest.mark.cloud
def test_errors_are_mapped_without_the_sdk(
    azurite: AzuriteServer, azurite_env: ServerEnv, tmp_path: Path
) -> None:
    """A missing container, a missing blob and a rejected key: the same one-line
    errors as on the SDK, with no SDK loaded."""
    out, loaded = _run("ls", f"az://{new_bucket_name()}/", code=2)
    assert loaded == [] and "container does not exist" in out, out
    out, loaded = _run("stat", azurite_env.url("nothing"), code=2)
    assert loaded == [] and "no such object" in out, out
    bad = re.sub(r"AccountKey=[^;]*", "AccountKey=d3Jvbmc=", azurite.connection_string)
    env = {"AZURE_STORAGE_CONNECTION_STRING": bad}
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    for argv in (("stat", azurite_env.url("f")), ("copy", str(src), azurite_env.url("bad/"))):
        out, loaded = _run(*argv, env=env, code=2)
        assert loaded == [] and "credentials rejected" in out, out
        assert "d3Jvbmc" not in out


@pytest.mark.cloud
def test_account_key_from_the_environment(
    azurite: AzuriteServer, azurite_env: ServerEnv, tmp_path: Path
) -> None:
    """AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY with an endpoint: lean, no SDK."""
    fields = dict(p.split("=", 1) for p in azurite.connection_string.rstrip(";").split(";"))
    env = {
        "AZURE_STORAGE_CONNECTION_STRING": "",
        "AZURE_STORAGE_ACCOUNT": fields["AccountName"],
        "AZURE_STORAGE_KEY": fields["AccountKey"],
    }
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(5000))
    config = tmp_path / "config.toml"
    config.write_text(f'[remotes.az1]\ntype = "az"\nendpoint = "{azurite.endpoint}"\n')
    _out, loaded = _run(
        "--config", str(config), "copy", str(src), f"az1:{azurite_env.bucket}/k/", env=env
    )
    assert loaded == [], loaded
    _out, loaded = _run(
        "--config",
        str(config),
        "copy",
        f"az1:{azurite_env.bucket}/k/",
        str(tmp_path / "b"),
        env=env,
    )
    assert loaded == [], loaded
    assert (tmp_path / "b" / "f").read_bytes() == (src / "f").read_bytes()


@pytest.mark.cloud
def test_lean_off_still_uses_the_sdk(azurite_env: ServerEnv, tmp_path: Path) -> None:
    """``DATAMOVER_AZURE_LEAN=0``: everything on the SDK, which is then imported."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 100)
    _out, loaded = _run(
        "copy", str(src), azurite_env.url("off/"), env={"DATAMOVER_AZURE_LEAN": "0"}
    )
    assert "azure.storage.blob" in loaded


@pytest.mark.cloud
def test_sdk_calls_on_a_lean_store(azurite_env: ServerEnv) -> None:
    """A store opened from the environment (lean, no SDK client yet) makes the SDK's
    client when a call needs it: server-side copy, the pending-upload listing and
    Get Block List (resume) work, and their errors are mapped as before."""
    store, _key = open_store(azurite_env.url(""))
    assert isinstance(store, AzureStore)
    with store:
        assert store._lean is not None and not store._services.made
        store.put("a", b"abc")
        writer = store.open_writer("staged", size=10, part_size=5)
        writer.write_part(0, b"01234", PartDigests(b"01234"))
        assert not store._services.made  # Put Blob and Put Block went lean
        info = store.copy_object("a", "b")
        assert store._services.made and info.size == 3
        assert [u.key for u in store.list_pending_uploads("")] == ["staged"]
        resumed = store.resume_writer("staged", size=10, part_size=5, state=writer.state())
        assert resumed.verify_parts({0: PartReceipt(0, 5, checksum=_md5(b"01234"))}) == {0}
        with pytest.raises(NotFound):
            store.copy_object("missing", "c")
    missing, _key = open_store(f"az://{new_bucket_name()}/")
    with missing, pytest.raises(BucketNotFound):
        list(missing.list_pending_uploads(""))


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.mark.cloud
def test_lean_block_list_commit_leaves_what_the_sdks_does(
    azurite: AzuriteServer, azurite_env: ServerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Put Block List on the lean path (``LeanAzure.put_block_list``) leaves the blob
    the SDK's commit leaves (bytes, metadata, Content-MD5 property, content type) and
    returns the same info."""
    data = os.urandom(10)
    md5 = hashlib.md5(data).hexdigest()
    seen = {}
    for lean in ("1", "0"):
        monkeypatch.setenv("DATAMOVER_AZURE_LEAN", lean)
        store, _key = open_store(azurite_env.url(""))
        with store:
            assert (store._lean is not None) == (lean == "1")
            writer = store.open_writer(f"k{lean}", size=10, part_size=4)
            for index in range(3):
                chunk = data[index * 4 : index * 4 + 4]
                writer.write_part(index, chunk, PartDigests(chunk))
            info = writer.commit({digest_metadata_key("md5"): md5, "x-note": "v"})
            assert store.read(f"k{lean}") == data
        with azurite.client() as service:
            blob = service.get_blob_client(azurite_env.bucket, f"k{lean}")
            props = blob.get_blob_properties()
            committed, _uncommitted = blob.get_block_list("all")
        settings = props.content_settings
        seen[lean] = (
            (info.size, info.checksums, info.provider_checksums, info.metadata, info.verified),
            (bytes(settings.content_md5 or b"").hex(), settings.content_type, props.metadata),
            [b.size for b in committed],
        )
        assert info.etag == props.etag.strip('"')
    assert seen["1"] == seen["0"]
    assert seen["1"][1][0] == md5
