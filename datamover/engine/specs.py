"""How another process opens the run's stores: ``StoreSpec``, shared by the Dask
workers (``engine.dask``) and the ``--processes`` workers (``engine.procs``)."""

from __future__ import annotations

from dataclasses import dataclass

from datamover.stores import StoreSettings, open_location, resolve_remote
from datamover.stores.base import Store
from datamover.stores.urls import Location, parse_url


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """How a worker opens a store: a concrete location (a named remote already
    resolved by the client) and its settings. Secrets are not in it: the store's SDK
    chain finds them in the worker's environment (or the remote names an env var to
    read there)."""

    location: Location
    settings: StoreSettings

    @classmethod
    def from_url(cls, url: str, settings: StoreSettings) -> StoreSpec:
        loc = parse_url(url)
        if loc.remote is not None:
            loc, settings = resolve_remote(loc, settings)
        return cls(Location(loc.scheme, loc.bucket, ""), settings)

    def open(self, job_id: str | None = None) -> Store:
        """The store, its writes' temp pieces named from ``job_id`` when given
        (``Store.use_job``), as the client's own store names them."""
        store = open_location(self.location, self.settings)
        if job_id is not None:
            store.use_job(job_id)
        return store


__all__ = ["StoreSpec"]
