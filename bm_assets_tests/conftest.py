"""Shared fixtures: a temporary BM_HOME, the bundled sample config, a scratch DuckDB file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bm_assets.config import load_dataset_config
from bm_assets.core.warehouse import DuckDBWarehouse
from bm_assets.settings import BUNDLED_DATASET

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def bm_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "bm_home"
    monkeypatch.setenv("BM_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    (home / "dagster").mkdir(parents=True)
    return home


@pytest.fixture(scope="session")
def sample_config():
    return load_dataset_config(BUNDLED_DATASET)


@pytest.fixture
def warehouse(tmp_path):
    wh = DuckDBWarehouse(str(tmp_path / "test.duckdb"))
    yield wh
    wh.close()


@pytest.fixture(scope="session")
def sample_events_db(tmp_path_factory, sample_config) -> Path:
    """A DuckDB file holding the bundled sample ingested and denormalized over its whole range
    (built once per session; tests copy it before changing it)."""
    from bm_assets.core.attributes import build_client_properties, build_product_catalog
    from bm_assets.core.denormalize import denormalize_window
    from bm_assets.core.ingest import ingest_window

    path = tmp_path_factory.mktemp("sample_db") / "events.duckdb"
    wh = DuckDBWarehouse(str(path))
    cfg = sample_config
    ingest_window(wh, cfg, cfg.data_start, cfg.end_exclusive)
    build_client_properties(wh, cfg)
    build_product_catalog(wh, cfg)
    denormalize_window(wh, cfg.data_start, cfg.end_exclusive, covers_all_days=True)
    wh.close()
    return path


@pytest.fixture
def sample_warehouse(sample_events_db, tmp_path):
    """A private copy of the sample events warehouse."""
    import shutil

    path = tmp_path / "sample.duckdb"
    shutil.copy(sample_events_db, path)
    wh = DuckDBWarehouse(str(path))
    yield wh
    wh.close()
