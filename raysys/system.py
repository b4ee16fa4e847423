"""``System``: the one object users hold; it wires the config to each layer's service."""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any

from raysys.config import SystemConfig, load_config
from raysys.data.service import DataService
from raysys.maintenance import DEFAULT_OLDER_THAN_S, GcReport, collect_garbage
from raysys.storage import Storage

DASHBOARD = "raysys.app.dashboard.routes:install"  # imported by the serving replicas, not here


class System:
    """The facade over every layer, built from one validated config."""

    def __init__(self, config: SystemConfig):
        self.config = config

    @classmethod
    def from_config(cls, path: str | os.PathLike | None = None) -> System:
        """Load a YAML config (``path``, ``$RAYSYS_CONFIG`` or ``./raysys.yaml``)."""
        return cls(load_config(path))

    @cached_property
    def storage(self) -> Storage:
        """The storage root every layer writes under."""
        return Storage.open(self.config.storage.root)

    @cached_property
    def data(self) -> DataService:
        """The data layer: ingest, validate, versions, splits, features."""
        return DataService(self.config, self.storage)

    @cached_property
    def models(self):
        """The modeling layer: train, tune, evaluate, registry, runs."""
        from raysys.modeling.service import ModelService

        return ModelService(self.config, self.storage, self.data)

    @cached_property
    def serving(self):
        """The serving layer: model server up/status/down, deploy, rollback, batch predictions."""
        from raysys.serving.service import ServingService

        service = ServingService(self.config, self.storage, self.models)
        if self.config.serve.dashboard:  # the replicas install the dashboard's routes (raysys.app)
            service.extensions.append(DASHBOARD)
        if self.config.monitor.enabled:  # serve up starts the monitor, serve down stops it
            service.companions.append(_Lazy(lambda: self.monitor))
        return service

    @cached_property
    def monitor(self):
        """The monitoring layer: the monitor actor (start, status, stop), feedback, alerts, retrain, audit."""
        from raysys.monitoring.service import MonitorService

        return MonitorService(self.config, self.storage, self)

    @cached_property
    def keys(self):
        """API keys of the HTTP API: create (shown once), list, revoke (``raysys keys``)."""
        from raysys.access import KeyStore

        return KeyStore(self.storage)

    def card(self, version: str = "champion"):
        """The model card of a registered version (``raysys models card``): ``.markdown``, ``.data``."""
        from raysys.app.card import model_card

        return model_card(self, version)

    def gc(self, older_than_s: float = DEFAULT_OLDER_THAN_S, dry_run: bool = False) -> GcReport:
        """Remove staging and unpublished files that crashed writers left (``raysys gc``)."""
        return collect_garbage(self.storage, older_than_s, dry_run)

    def run(self, tune: bool = False) -> dict[str, Any]:
        """The offline pipeline: ingest + validate → preprocess → [tune] → train → evaluate → register."""
        ingested = self.data.ingest()
        version = ingested.manifest.version
        if not tune:
            return {"dataset": ingested.to_dict(), **self.models.train(version).to_dict()}
        search = self.models.tune(version)
        summary = {"run_id": search["run_id"], "best_params": search["best_params"],
                   "best_metrics": search["best_metrics"], "trials": len(search["trials"])}
        return {"dataset": ingested.to_dict(), "tune": summary, **search["model"]}


class _Lazy:
    """A service built on first use (serving holds the monitor without importing the layer above it)."""

    def __init__(self, build):
        self.build = build

    def start(self) -> dict[str, Any]:
        """Start the service."""
        return self.build().start()

    def stop(self) -> dict[str, Any]:
        """Stop the service."""
        return self.build().stop()
