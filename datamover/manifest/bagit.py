"""BagIt (RFC 8493) bags from datamover manifests.

Two ways to get a bag, both for POSIX destinations:

* ``export_bag(MANIFEST, DIR)`` (``datamover manifest export MANIFEST --format bagit
  --output DIR``): builds a new bag at ``DIR`` from a finished copy. Each copied file
  is **hard-linked** into ``DIR/data/`` (no extra space, instant; the bag and the copy
  then share the same inodes, so editing one edits the other). Where a link is
  impossible (another filesystem, a filesystem without hard links) the file is
  **copied** and hashed on the way, and a digest that differs from the manifest's
  fails the export. ``link=False`` always copies.
* ``copy --bagit`` (``datamover.copy(..., bagit=True)``): the transfer itself writes
  the payload under ``DST/data/``, then ``finish_bag`` writes the tag files from the
  manifest's digests, without re-reading the payload. Tag files are written only
  after every file was copied; a run with failures leaves no tag files (a re-run
  resumes and finishes the bag).

Tag files: ``bagit.txt`` (version 1.0, UTF-8), ``manifest-<alg>.txt`` for the
manifest's algorithm (sha256, sha512 or md5; BagIt has no crc32c or blake3),
``bag-info.txt`` (``Bagging-Date``, ``Payload-Oxum``, ``Bag-Software-Agent``,
``External-Identifier`` = the job id, ``Source-Organization`` and other fields when
given) and ``tagmanifest-<alg>.txt`` over the other tag files. Payload paths are
``data/`` + the manifest path, with ``%``, CR and LF percent-encoded (RFC 8493 §2.1.3).
Only regular files are payload: directory and symlink entries are left out (copy
``--bagit`` follows symlinks, so the bag holds their targets' bytes).

Caveat: bagit-python up to 1.9 encodes only CR and LF, not ``%``
(LibraryOfCongress/bagit-python#157), so it misreads our (RFC-conformant) manifest
lines for payload paths containing ``%``; other paths validate with it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

from datamover._version import __version__
from datamover.errors import UsageError
from datamover.manifest import STATUS_OK, Manifest, ManifestEntry, read_manifest
from datamover.stores import local_path

BAG_ALGORITHMS = ("sha256", "sha512", "md5")
TAG_FILES = ("bagit.txt", "bag-info.txt")
_COPY_CHUNK = 8 * 1024 * 1024


class BagError(UsageError):
    """The bag can't be made as asked; the message says why and what to do."""


@dataclass(slots=True)
class BagResult:
    path: str
    files: int
    bytes: int
    linked: int = 0
    copied: int = 0


def check_algorithm(algorithm: str) -> str:
    if algorithm not in BAG_ALGORITHMS:
        raise BagError(
            f"a BagIt bag needs sha256, sha512 or md5 digests, and this is {algorithm}; "
            "copy with --checksum sha256 (or sha512, md5)"
        )
    return algorithm


def encode_path(path: str) -> str:
    """A payload path as a manifest line writes it (RFC 8493 §2.1.3)."""
    return path.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _payload(manifest: Manifest) -> list[ManifestEntry]:
    return [
        e
        for e in manifest.entries
        if e.status == STATUS_OK and e.digest and e.kind in (None, "file", "hardlink")
    ]


def _tag_value(value: str) -> str:
    return " ".join(str(value).split())


def write_tag_files(
    bag_dir: str,
    payload: Iterable[tuple[str, int, str]],
    algorithm: str,
    info: Mapping[str, str] | None = None,
) -> tuple[int, int]:
    """Write the tag files of a bag whose payload (``(path under data/, size,
    digest)``) is already in place. Returns ``(files, bytes)`` (the Payload-Oxum)."""
    check_algorithm(algorithm)
    count = total = 0
    manifest_name = f"manifest-{algorithm}.txt"
    with open(os.path.join(bag_dir, manifest_name), "w", encoding="utf-8", newline="\n") as fh:
        for path, size, digest in payload:
            fh.write(f"{digest}  data/{encode_path(path)}\n")
            count += 1
            total += size
    with open(os.path.join(bag_dir, "bagit.txt"), "w", encoding="utf-8", newline="\n") as fh:
        fh.write("BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n")
    fields: dict[str, str] = {
        "Bag-Software-Agent": f"datamover {__version__}",
        "Bagging-Date": date.today().isoformat(),
        "Payload-Oxum": f"{total}.{count}",
    }
    fields.update({k: v for k, v in (info or {}).items() if v})
    with open(os.path.join(bag_dir, "bag-info.txt"), "w", encoding="utf-8", newline="\n") as fh:
        for label, value in fields.items():
            if ":" in label or not label.strip():
                raise BagError(f"bag-info label {label!r} must be non-empty and have no ':'")
            fh.write(f"{label.strip()}: {_tag_value(value)}\n")
    with open(
        os.path.join(bag_dir, f"tagmanifest-{algorithm}.txt"), "w", encoding="utf-8", newline="\n"
    ) as fh:
        for name in (*TAG_FILES, manifest_name):
            h = hashlib.new(algorithm)
            with open(os.path.join(bag_dir, name), "rb") as tag:
                h.update(tag.read())
            fh.write(f"{h.hexdigest()}  {name}\n")
    return count, total


def remove_tag_files(bag_dir: str) -> None:
    """Drop tag files of an earlier bag at ``bag_dir`` (before its payload changes)."""
    for name in os.listdir(bag_dir) if os.path.isdir(bag_dir) else ():
        if name in TAG_FILES or (
            name.endswith(".txt") and name.startswith(("manifest-", "tagmanifest-"))
        ):
            os.unlink(os.path.join(bag_dir, name))


def _bag_info(manifest: Manifest, info: Mapping[str, str] | None) -> dict[str, str]:
    h = manifest.header
    out = {
        "External-Identifier": str(h.get("job_id", "")),
        "External-Description": f"datamover {h.get('operation', 'copy')} of {h.get('source', '')}",
    }
    out.update(info or {})
    return out


def _stray_files(data_dir: str, expected: set[str]) -> list[str]:
    stray: list[str] = []
    for root, _dirs, files in os.walk(data_dir):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), data_dir).replace(os.sep, "/")
            if rel not in expected:
                stray.append(rel)
    return sorted(stray)


def finish_bag(
    bag_dir: str, manifest_path: str, *, info: Mapping[str, str] | None = None
) -> BagResult:
    """Write the tag files for a bag whose payload a copy put in ``bag_dir/data`` and
    whose ``manifest_path`` lists it; digests come from the manifest (no re-read).
    Raises ``BagError`` when ``data/`` holds files the manifest does not list."""
    manifest = read_manifest(manifest_path)
    check_algorithm(manifest.algorithm)
    payload = _payload(manifest)
    stray = _stray_files(os.path.join(bag_dir, "data"), {e.path for e in payload})
    if stray:
        more = f" and {len(stray) - 3} more" if len(stray) > 3 else ""
        raise BagError(
            f"{bag_dir}/data holds files this copy did not write ({', '.join(stray[:3])}{more}); "
            "a bag's payload must be exactly what the manifest lists: copy into an empty "
            "directory"
        )
    count, total = write_tag_files(
        bag_dir,
        ((e.path, e.size, e.digest or "") for e in payload),
        manifest.algorithm,
        _bag_info(manifest, info),
    )
    return BagResult(bag_dir, count, total)


def _copy_hashing(src: str, dst: str, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(_COPY_CHUNK):
            h.update(chunk)
            fout.write(chunk)
    shutil.copystat(src, dst)
    return h.hexdigest()


def export_bag(
    manifest_path: str,
    output: str,
    *,
    link: bool = True,
    info: Mapping[str, str] | None = None,
) -> BagResult:
    """Build a bag at ``output`` from the files a finished copy to a POSIX destination
    wrote (see the module docstring). ``output`` must not exist or be empty."""
    manifest = read_manifest(manifest_path)
    check_algorithm(manifest.algorithm)
    if manifest.summary is None:
        raise BagError(f"{manifest_path} is from a run that did not finish; resume it first")
    destination = str(manifest.header.get("destination", ""))
    root = local_path(destination) if destination else None
    if root is None:
        raise BagError(
            f"{manifest_path}: the copy went to {destination or 'an unknown place'}; a bag can "
            "be exported only from a copy on a POSIX filesystem (copy it down first)"
        )
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        raise BagError(f"{output} exists and is not an empty directory; choose a new one")
    data_dir = os.path.join(output, "data")
    os.makedirs(data_dir, exist_ok=True)
    result = BagResult(output, 0, 0)
    payload = _payload(manifest)
    for entry in payload:
        src = os.path.join(root, entry.path)
        dst = os.path.join(data_dir, entry.path)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        try:
            st = os.stat(src)
        except FileNotFoundError:
            raise BagError(
                f"{src} is listed in the manifest but missing; run datamover verify"
            ) from None
        if st.st_size != entry.size:
            raise BagError(
                f"{src} has {st.st_size} bytes, the manifest says {entry.size}; it changed "
                "after the copy (run datamover verify)"
            )
        linked = False
        if link:
            try:
                os.link(src, dst)
                linked = True
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise BagError(f"cannot link {src} into the bag: {e.strerror}") from None
        if linked:
            result.linked += 1
        else:
            digest = _copy_hashing(src, dst, manifest.algorithm)
            if digest != entry.digest:
                raise BagError(
                    f"{src}: {manifest.algorithm} {digest} differs from the manifest's "
                    f"{entry.digest}; it changed after the copy (run datamover verify)"
                )
            result.copied += 1
    result.files, result.bytes = write_tag_files(
        output,
        ((e.path, e.size, e.digest or "") for e in payload),
        manifest.algorithm,
        _bag_info(manifest, info),
    )
    return result
