"""Summarise a py-spy ``--format raw`` (collapsed stacks) profile.

``python bench/pyspy_top.py PROFILE.txt [--top N] [--match TEXT]`` prints the
functions with the most samples on top of the stack (self) and anywhere in it
(inclusive), as a share of all samples. ``--match`` keeps only stacks containing
TEXT (e.g. a thread name, ``upload_part``).
"""

from __future__ import annotations

import argparse
import collections
import re

_LOC = re.compile(r" \((?P<file>[^()]*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    """``fn (path/to/mod.py:12)`` -> ``fn (mod.py)``."""
    m = _LOC.search(frame)
    if not m:
        return frame
    short = "/".join(m.group("file").split("/")[-2:])
    return f"{frame[: m.start()]} ({short})"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("profile")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--match", default=None)
    args = p.parse_args()
    self_n: collections.Counter[str] = collections.Counter()
    incl_n: collections.Counter[str] = collections.Counter()
    total = 0
    with open(args.profile) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or (args.match and args.match not in stack):
                continue
            n = int(count)
            total += n
            frames = [frame_name(x) for x in stack.split(";")]
            self_n[frames[-1]] += n
            for name in set(frames):
                incl_n[name] += n
    print(f"{total} samples")
    for title, counter in (("self", self_n), ("inclusive", incl_n)):
        print(f"\n-- {title}")
        for name, n in counter.most_common(args.top):
            print(f"{100 * n / total:6.1f}%  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
