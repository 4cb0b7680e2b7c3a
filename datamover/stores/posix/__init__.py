"""POSIX filesystem store (local disks, NFS, GPFS, Lustre); see ``store``."""

from datamover.stores.posix.store import (
    LUSTRE_MAGIC,
    TEMP_MARK,
    Durability,
    PosixFsOps,
    PosixStore,
    PosixWriter,
)

__all__ = ["LUSTRE_MAGIC", "TEMP_MARK", "Durability", "PosixFsOps", "PosixStore", "PosixWriter"]
