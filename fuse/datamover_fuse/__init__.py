"""datamover-fuse: mount any bucket, container or prefix as a POSIX tree.

Public API::

    from datamover_fuse import MountOptions, mount, umount
    mount("s3://bucket/prefix", "/mnt/data", MountOptions(read_only=True), foreground=False)
    umount("/mnt/data")

What the mount promises (consistency, caching, what it refuses) is in
docs/SEMANTICS.md, "The mount". The design: ``ops`` translates kernel requests,
``core.FsCore`` is the filesystem (drivable without a kernel), ``prefetch`` reads,
``writes`` stages and uploads; ``datamover.stores.fsops``, with the stores, fills
the gaps of the ``Store`` interface. pyfuse3 and trio are imported only when
mounting, so ``MountOptions`` and the core's pure parts import without libfuse.
"""

from __future__ import annotations

from datamover_fuse.mount import INSTALL_HINT, is_mounted, mount, umount
from datamover_fuse.options import MountOptions

__all__ = ["INSTALL_HINT", "MountOptions", "is_mounted", "mount", "umount"]
