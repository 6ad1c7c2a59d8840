"""Dagster resources: the dataset contract and the warehouse. Local versus cloud is decided
once, in definitions.py, by choosing which warehouse resource to bind."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from dagster import ConfigurableResource
from dagster_gcp import BigQueryResource
from pydantic import Field

from bm_assets.config import DatasetConfig, load_dataset_config
from bm_assets.core.bigquery import BigQueryWarehouse
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


class BigQueryWarehouseResource(WarehouseResource):
    """A BigQuery dataset. The client comes from dagster-gcp's BigQueryResource: project and
    location from config, credentials from Application Default Credentials (or its
    gcp_credentials field). It has no endpoint field and needs none: the BigQuery client
    library itself honours BIGQUERY_EMULATOR_HOST, which is how an emulator is selected."""

    bigquery: BigQueryResource
    dataset: str = Field(description="BigQuery dataset holding the managed tables (BM_BQ_DATASET)")

    @contextmanager
    def open(self) -> Iterator[Warehouse]:
        with self.bigquery.get_client() as client:
            wh = BigQueryWarehouse(client, self.dataset, location=self.bigquery.location)
            wh.ensure_dataset()
            try:
                yield wh
            finally:
                wh.close()
