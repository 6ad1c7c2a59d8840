"""Dagster resources: the dataset contract and the warehouse. Local versus cloud is decided
once, in definitions.py, by choosing which warehouse resource to bind."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from dagster import ConfigurableResource

from bm_assets.config import DatasetConfig, load_dataset_config
from bm_assets.core.warehouse import DuckDBWarehouse, Warehouse


@cache
def _load(path: str) -> DatasetConfig:
    return load_dataset_config(path)


class DatasetResource(ConfigurableResource):
    """The dataset YAML every asset reads its roles and date range from."""

    config_path: str

    def load(self) -> DatasetConfig:
        return _load(self.config_path)


class WarehouseResource(ConfigurableResource):
    """Where SQL stages run. Subclasses open a concrete Warehouse."""

    @contextmanager
    def open(self) -> Iterator[Warehouse]:
        raise NotImplementedError


class DuckDBWarehouseResource(WarehouseResource):
    """Embedded DuckDB file (default under $BM_HOME)."""

    database: str
    threads: int | None = None

    @contextmanager
    def open(self) -> Iterator[Warehouse]:
        wh = DuckDBWarehouse(self.database, threads=self.threads)
        try:
            yield wh
        finally:
            wh.close()
