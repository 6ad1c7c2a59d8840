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
