"""Driving ``FsCore`` without a kernel: the calls the kernel would send for ordinary
system calls, a clock moved by hand, and ``run`` (a core over a store inside
``trio.run``). Shared by the core tests."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from datamover.stores.base import MiB
from datamover_fuse.core import FsCore
from datamover_fuse.fserrors import FsError
from datamover_fuse.inodes import ROOT_INO, Attr
from datamover_fuse.options import MountOptions

UID, GID = 1234, 5678


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def core_options(tmp_path: Path) -> MountOptions:
    # 64 MiB hint: streams use 8 MiB parts, so small tests exercise several parts.
    return MountOptions(
        cache_dir=str(tmp_path / "cache"), cache_size=256 * MiB, stream_size_hint=64 * MiB
    )


Body = Callable[[FsCore], Awaitable[None]]


def run(
    store: object,
    options: MountOptions,
    body: Body,
    *,
    clock: FakeClock | None = None,
    root: str = "",
) -> FsCore:
    core = FsCore(store, root, options, clock=clock or FakeClock())  # type: ignore[arg-type]

    async def main() -> None:
        async with core.running():
            await body(core)

    trio.run(main)
    return core


# -- helpers: what the kernel would send for ordinary system calls ---------------------


async def walk(core: FsCore, path: str) -> int:
    ino = ROOT_INO
    for part in [p for p in path.split("/") if p]:
        attr = await core.lookup(ino, part)
        if attr is None:
            raise FsError(errno.ENOENT, path)
        ino = attr.ino
    return ino


async def parent_of(core: FsCore, path: str) -> tuple[int, str]:
    head, _, name = path.rpartition("/")
    return await walk(core, head), name


async def write_file(core: FsCore, path: str, data: bytes, chunk: int = 1 * MiB) -> None:
    parent, name = await parent_of(core, path)
    fh, _ = await core.create(parent, name, 0o100640, os.O_WRONLY | os.O_CREAT, UID, GID)
    try:
        for off in range(0, len(data), chunk):
            await core.write(fh, off, data[off : off + chunk])
        await core.flush(fh)
    finally:
        await core.release(fh)


async def read_file(core: FsCore, path: str, chunk: int = 128 * 1024) -> bytes:
    ino = await walk(core, path)
    size = (await core.getattr(ino)).size
    fh, _ = await core.open(ino, os.O_RDONLY)
    try:
        out = []
        for off in range(0, size, chunk):
            out.append(await core.read(fh, off, chunk))
        return b"".join(out)
    finally:
        await core.release(fh)


async def listdir(core: FsCore, path: str) -> dict[str, Attr]:
    fh = await core.opendir(await walk(core, path))
    out: dict[str, Attr] = {}

    def reply(name: str, attr: Attr, next_id: int) -> bool:
        out[name] = attr
        return True

    try:
        await core.readdir(fh, 0, reply)
    finally:
        await core.releasedir(fh)
    return out


def errno_of(excinfo: pytest.ExceptionInfo[FsError]) -> int:
    return excinfo.value.errno


def payload(n: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048
    return (block * (n // len(block) + 1))[:n]
