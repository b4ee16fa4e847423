"""``System``: the one object users hold; it wires the config to each layer's service."""

from __future__ import annotations

import os
from functools import cached_property

from raysys.config import SystemConfig, load_config
from raysys.data.service import DataService
from raysys.storage import Storage


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
