"""Process-level settings read from the environment (BM_HOME, BM_DATASET, BM_STORAGE)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_DATASET = REPO_ROOT / "data" / "completejourney_sample" / "dataset.yaml"


def bm_home() -> Path:
    """Folder holding the DuckDB file, the MLflow store, reports and the Dagster instance."""
    home = Path(os.environ.get("BM_HOME", REPO_ROOT / "bm_home")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def dataset_path() -> Path:
    return Path(os.environ.get("BM_DATASET", BUNDLED_DATASET)).resolve()


def storage_kind() -> str:
    kind = os.environ.get("BM_STORAGE", "duckdb").strip().lower()
    if kind not in {"duckdb", "bigquery"}:
        raise ValueError(f"BM_STORAGE must be 'duckdb' or 'bigquery', found {kind!r}")
    return kind
