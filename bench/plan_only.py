"""Plan a copy and throw the plan away: the memory and time of planning alone.

``python bench/plan_only.py SRC DST`` resolves the copy rules and drains the planned
jobs the way ``datamover copy`` hands them to the runner (``plan_copy`` streams the
source listing), then prints how many files it planned. No byte is copied, so a
1,000,000-file tree can be planned in seconds and its peak RSS measured alone.
"""

from __future__ import annotations

import sys

from datamover.engine.plan import plan_copy
from datamover.stores import open_store


def main() -> int:
    src, src_key = open_store(sys.argv[1])
    dst, dst_key = open_store(sys.argv[2])
    try:
        plan = plan_copy(src, src_key, dst, dst_key)
        count = total = 0
        for job in plan.jobs:
            count += 1
            total += job.info.size
    finally:
        src.close()
        dst.close()
    print(f"planned {count} files, {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
