"""The whole system in one place: assets, checks, jobs, schedules, sensors and resources.

Storage is chosen here once, from BM_STORAGE; asset code never branches on it."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import Definitions, EnvVar, in_process_executor
from dagster_gcp import BigQueryResource

from bm_assets.assets.denormalize import build_denormalize_assets
from bm_assets.assets.foundation import foundation_model
from bm_assets.assets.ingest import build_ingest_assets
from bm_assets.assets.representations import build_representation_assets
from bm_assets.assets.tasks import build_task_assets
from bm_assets.config import load_dataset_config
from bm_assets.core.tasks import check_modeling_columns, load_modeling_config, tasks_path_for, with_task_columns
from bm_assets.freshness import freshness_checks
from bm_assets.jobs import build_jobs_and_schedules, retrain_job_and_schedule
from bm_assets.partitions import daily_partitions
from bm_assets.resources import (
    ArtifactStore,
    BigQueryWarehouseResource,
    DatasetResource,
    DuckDBWarehouseResource,
    MLflowResource,
    WarehouseResource,
)
from bm_assets.sensors import file_arrival_sensor
from bm_assets.settings import bm_home, dataset_path, storage_kind


def warehouse_from_env() -> WarehouseResource:
    kind = storage_kind()
    if kind == "duckdb":
        return DuckDBWarehouseResource(database=str(bm_home() / "bm_assets.duckdb"))
    missing = [v for v in ("BM_GCP_PROJECT", "BM_BQ_DATASET") if not os.environ.get(v)]
    if missing:
        raise ValueError(f"BM_STORAGE=bigquery needs {' and '.join(missing)} (the GCP project and dataset)")
    # EnvVar: the UI shows which variable configures each field, never a value read from it.
    return BigQueryWarehouseResource(
        bigquery=BigQueryResource(
            project=EnvVar("BM_GCP_PROJECT"),
            location=EnvVar("BM_BQ_LOCATION") if os.environ.get("BM_BQ_LOCATION") else None,
        ),
        dataset=EnvVar("BM_BQ_DATASET"),
    )


def build_definitions(
    dataset_file: str | Path | None = None, warehouse: WarehouseResource | None = None
) -> Definitions:
    dataset_file = str(dataset_file or dataset_path())
    cfg = load_dataset_config(dataset_file)
    daily = daily_partitions(cfg)
    assets = [
        *build_ingest_assets(daily),
        *build_denormalize_assets(daily),
        *build_representation_assets(daily),
    ]
    # The modeling stage (foundation model, task models) is configured by tasks.yaml beside the
    # dataset YAML; a dataset without one stops at the representations.
    tasks_file = tasks_path_for(dataset_file)
    mcfg = load_modeling_config(tasks_file) if tasks_file.exists() else None
    if mcfg is not None:
        check_modeling_columns(mcfg, cfg)  # every column tasks.yaml names, before anything runs
        cfg = with_task_columns(cfg, mcfg)  # the profiles carry the columns the tasks target
        assets += [foundation_model, *build_task_assets(mcfg, daily)]
    jobs, schedules = build_jobs_and_schedules(daily, assets)
    if mcfg is not None:
        retrain_job, retrain_schedule = retrain_job_and_schedule(
            mcfg.retrain, [t.name for t in mcfg.tasks], daily.timezone
        )
        jobs.append(retrain_job)
        schedules.append(retrain_schedule)
    daily_job = next(j for j in jobs if j.name == "daily_refresh")
    checks, freshness_sensor = freshness_checks(cfg, daily, assets)
    sensors = [*(file_arrival_sensor(cfg, src, daily_job, daily) for src in cfg.events), freshness_sensor]
    return Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources={
            "dataset": DatasetResource(config_path=dataset_file),
            "warehouse": warehouse or warehouse_from_env(),
            "mlflow_tracking": MLflowResource(),
            "artifacts": ArtifactStore(),
        },
        # One process runs all steps: the embedded DuckDB file accepts a single writer.
        executor=in_process_executor,
    )


defs = build_definitions()
