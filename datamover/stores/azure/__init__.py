"""Azure Blob Storage store (``az://container/blob``); the backend is in ``store``.

This commit only moves the module into a package; the next splits it along its seams.
"""

from datamover.stores.azure.store import (
    DEFAULT_COPY_TIMEOUT,
    ENV_ACCOUNT,
    ENV_CONNECTION_STRING,
    ENV_KEY,
    ENV_SAS,
    MAX_PAGE_SIZE,
    AzureBlockWriter,
    AzureFsOps,
    AzureStore,
    from_azure_metadata,
    make_service_client,
    map_error,
    to_azure_metadata,
)

__all__ = [
    "DEFAULT_COPY_TIMEOUT",
    "ENV_ACCOUNT",
    "ENV_CONNECTION_STRING",
    "ENV_KEY",
    "ENV_SAS",
    "MAX_PAGE_SIZE",
    "AzureBlockWriter",
    "AzureFsOps",
    "AzureStore",
    "from_azure_metadata",
    "make_service_client",
    "map_error",
    "to_azure_metadata",
]
