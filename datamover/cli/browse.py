"""The everyday commands of the CLI: ``ls``, ``stat``, ``cat``, ``du``, ``rm`` and
``remotes``. Parse and render only; the work is in ``datamover.stores.browse`` and
``datamover.config``. ``datamover.cli.main`` registers these parsers.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from datamover.cli.common import shown
from datamover.config import load_config
from datamover.errors import UsageError
from datamover.options import format_size
from datamover.stores import browse as ops
from datamover.stores import open_store
from datamover.stores.base import ObjectInfo


def add_parsers(sub: Any) -> None:
    """Add this module's subcommands to the ``datamover`` subparsers ``sub``."""
    p = sub.add_parser("ls", help="list objects or files", add_help=False)
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("url")
    p.add_argument("-l", "--long", action="store_true", help="size, modification time, name")
    p.add_argument("-R", "--recursive", action="store_true", help="list the whole tree")
    p.add_argument("-h", "--human-readable", action="store_true", help="sizes like 1.5 GiB")
    p.set_defaults(json_output=True)  # --json: one JSON object per entry

    p = sub.add_parser("stat", help="size, times, digests and metadata of one object")
    p.add_argument("url")
    p.set_defaults(json_output=True)  # --json: one JSON object

    p = sub.add_parser("cat", help="write an object's bytes to stdout")
    p.add_argument("url")

    p = sub.add_parser("du", help="total size and count of objects under a URL", add_help=False)
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("url")
    p.add_argument("-h", "--human-readable", action="store_true", help="sizes like 1.5 GiB")
    p.set_defaults(json_output=True)  # --json: one JSON object

    p = sub.add_parser("rm", help="delete an object, or a prefix with -r")
    p.add_argument("urls", nargs="+", metavar="URL")
    p.add_argument(
        "-r", "--recursive", action="store_true", help="delete everything under a directory/prefix"
    )
    p.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help=f"don't ask before deleting more than {ops.CONFIRM_ABOVE} objects",
    )

    p = sub.add_parser("remotes", help="list or show the remotes of the config file")
    rsub = p.add_subparsers(dest="remotes_command", metavar="ACTION")
    r = rsub.add_parser("list", help="every remote, one per line")
    r.set_defaults(json_output=True)
    r = rsub.add_parser("show", help="one remote's settings (secrets: only env var names)")
    r.add_argument("name")
    r.set_defaults(json_output=True)
    handlers: dict[str, Callable[[argparse.Namespace, IO[str]], int]] = {
        "ls": cmd_ls,
        "stat": cmd_stat,
        "cat": cmd_cat,
        "du": cmd_du,
        "rm": cmd_rm,
        "remotes": cmd_remotes,
    }
    for name, handler in handlers.items():
        sub.choices[name].set_defaults(handler=handler)


def _when(mtime: float | None) -> str:
    if mtime is None:
        return "-"
    return datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _iso(mtime: float | None) -> str | None:
    if mtime is None:
        return None
    return datetime.fromtimestamp(mtime, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _size_text(n: int, human: bool) -> str:
    return format_size(n) if human else str(n)


def _entry_json(info: ObjectInfo, name: str, url: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "url": url, "is_dir": info.is_dir}
    if not info.is_dir:
        out["size"] = info.size
        out["mtime"] = _iso(info.mtime)
        if info.etag:
            out["etag"] = info.etag
        if info.checksums:
            out["checksums"] = dict(info.checksums)
    return out


def cmd_ls(args: argparse.Namespace, out: IO[str]) -> int:
    store, key = open_store(args.url)
    with store:
        prefix, entries = ops.listing(store, key, recursive=args.recursive)
        for info in entries:
            name = info.key[len(prefix) :] if info.key.startswith(prefix) else info.key
            if not name:  # the marker object of the directory being listed itself
                continue
            if args.json:
                doc = _entry_json(info, name, store.url(info.key))
                print(json.dumps(doc, ensure_ascii=False), file=out)
            elif args.long:
                size = "DIR" if info.is_dir else _size_text(info.size, args.human_readable)
                when = _when(None if info.is_dir else info.mtime)
                print(f"{size:>12}  {when:19}  {shown(name, out)}", file=out)
            else:
                print(shown(name, out), file=out)
    return 0


def cmd_stat(args: argparse.Namespace, out: IO[str]) -> int:
    store, key = open_store(args.url)
    with store:
        info = ops.stat_url(store, key)
        url = store.url(info.key)
    if args.json:
        doc = _entry_json(info, info.name, url)
        if info.version:
            doc["version"] = info.version
        if info.mode is not None:
            doc["mode"] = f"{info.mode & 0o7777:04o}"
        if info.metadata:
            doc["metadata"] = dict(info.metadata)
        print(json.dumps(doc, ensure_ascii=False), file=out)
        return 0
    rows: list[tuple[str, str]] = [("url", url), ("type", "directory" if info.is_dir else "object")]
    if not info.is_dir:
        rows.append(("size", f"{info.size} ({format_size(info.size)})"))
        rows.append(("mtime", _iso(info.mtime) or "-"))
        if info.etag:
            rows.append(("etag", info.etag))
        if info.version:
            rows.append(("version", info.version))
        if info.mode is not None:
            rows.append(("mode", f"{info.mode & 0o7777:04o}"))
        rows.extend((alg, digest) for alg, digest in sorted(info.checksums.items()))
        rows.extend((f"meta.{k}", v) for k, v in sorted(info.metadata.items()))
    width = max(len(k) for k, _ in rows) + 1
    for k, v in rows:
        print(f"{k + ':':<{width}} {v}", file=out)
    return 0


def cmd_cat(args: argparse.Namespace, out: IO[str]) -> int:
    store, key = open_store(args.url)
    with store:
        binary = getattr(out, "buffer", None) or sys.stdout.buffer
        out.flush()
        ops.cat(store, key, binary)
    return 0


def cmd_du(args: argparse.Namespace, out: IO[str]) -> int:
    store, key = open_store(args.url)
    with store:
        usage = ops.disk_usage(store, key)
        url = store.url(key)
    if args.json:
        print(json.dumps({"url": url, "files": usage.files, "bytes": usage.bytes}), file=out)
    else:
        size = _size_text(usage.bytes, args.human_readable)
        print(f"{size}\t{usage.files} files\t{url}", file=out)
    return 0


def _ask(count: int, url: str) -> bool:
    sys.stderr.write(f"delete {count} objects at and under {url}? [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def cmd_rm(args: argparse.Namespace, out: IO[str]) -> int:
    interactive = sys.stdin.isatty() and sys.stderr.isatty() and not args.yes
    status = 0
    for url in args.urls:
        store, key = open_store(url)
        with store:
            result = ops.remove(
                store, key, recursive=args.recursive, confirm=_ask if interactive else None
            )
        if result.cancelled:
            print(f"nothing deleted at {url}", file=sys.stderr)
            status = max(status, 1)
            continue
        for error in result.errors:
            print(f"FAILED {shown(error, sys.stderr)}", file=sys.stderr)
        if result.failed:
            status = 1
        if not args.quiet:
            failed = f", {result.failed} FAILED" if result.failed else ""
            print(f"deleted {result.deleted} objects at {url}{failed}", file=out)
    return status


def cmd_remotes(args: argparse.Namespace, out: IO[str]) -> int:
    config = load_config()
    if args.remotes_command in (None, "list"):
        as_json = getattr(args, "json", False)
        if not config.remotes and not as_json:
            where = config.path or "the config file (none found)"
            print(f"no remotes defined in {where}", file=sys.stderr)
            return 0
        for remote in sorted(config.remotes.values(), key=lambda r: r.name):
            where = remote.endpoint or remote.account or remote.root or "(default endpoint)"
            if as_json:
                doc = {"name": remote.name, "type": remote.type, "where": where}
                print(json.dumps(doc), file=out)
            else:
                print(f"{remote.name:16} {remote.type:5} {where}", file=out)
        return 0
    if args.remotes_command != "show":
        raise UsageError("remotes needs an action: list or show NAME")
    remote = config.remote(args.name)
    status = remote.secret_status()
    fields: dict[str, Any] = {
        "name": remote.name,
        "type": remote.type,
        "root": remote.root or None,
        "endpoint": remote.endpoint,
        "region": remote.region,
        "profile": remote.profile,
        "account": remote.account,
        "description": remote.description,
        **dict(remote.options),
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    secrets = {
        ref: {"env": var, "set": status[ref]} for ref, var in sorted(remote.secret_refs.items())
    }
    if args.json:
        print(json.dumps({**fields, "secrets": secrets, "config": config.path}), file=out)
        return 0
    rows = [(k, str(v)) for k, v in fields.items()]
    rows += [
        (ref, f"${s['env']} ({'set' if s['set'] else 'NOT set'})") for ref, s in secrets.items()
    ]
    if not secrets:
        chain = {
            "s3": "AWS chain: env vars, profile, SSO, instance role",
            "az": "AZURE_STORAGE_* env vars or DefaultAzureCredential",
            "gs": "Application Default Credentials",
            "file": "none needed",
        }[remote.type]
        rows.append(("credentials", chain))
    rows.append(("config", str(config.path)))
    width = max(len(k) for k, _ in rows) + 1
    for k, v in rows:
        print(f"{k + ':':<{width}} {v}", file=out)
    return 0
