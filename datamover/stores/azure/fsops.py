"""The mount's Azure-specific filesystem operations: ``AzureFsOps``.

Wired as ``AzureStore.fs_ops_class`` in the package ``__init__``: this module needs
``AzureStore`` and the store module does not need this one.
"""

from __future__ import annotations

from collections.abc import Mapping

from datamover.stores.azure.metadata import to_azure_metadata
from datamover.stores.azure.store import AzureStore
from datamover.stores.base import ObjectInfo, Store
from datamover.stores.fsops import FsOps


class AzureFsOps(FsOps):
    """Azure: a directory marker carries ``hdi_isfolder=true``, as the portal and HNS
    accounts write it, so other Azure tools see a folder."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        assert isinstance(store, AzureStore)
        self._az = store

    def make_dir(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        if not key:  # the container's root has no marker
            return super().make_dir(key, metadata)
        meta = {**metadata, "hdi_isfolder": "true"}
        written = {**self._az.styles.render(metadata), "hdi_isfolder": "true"}
        try:
            self._az._blob(key).upload_blob(
                b"", length=0, overwrite=True, metadata=to_azure_metadata(written)
            )
        except Exception as e:
            raise self._az._error(e, key) from e
        return ObjectInfo(key=key, size=0, metadata=meta, is_dir=True)
