"""Freshness: late data visible in the UI. Every daily asset (events, profiles, scores) has a
freshness check that fails (a warning) when the latest finished day has no materialization by the
dataset's `fresh_by_hour`; a sensor runs the checks when they are due."""

from __future__ import annotations

import warnings

from dagster import (
    AssetChecksDefinition,
    AssetsDefinition,
    DailyPartitionsDefinition,
    SensorDefinition,
    build_sensor_for_freshness_checks,
    build_time_partition_freshness_checks,
)

from bm_assets.config import DatasetConfig

# Dagster 1.13 marks these builders superseded by FreshnessPolicy, which judges an asset by its last
# materialization of any partition: a backfill of an old day would make it look fresh. These checks
# ask whether the latest finished day itself was materialized, which is the question for daily data.
warnings.filterwarnings(
    "ignore", message="Function `build_(time_partition_freshness_checks|sensor_for_freshness_checks)` is superseded"
)


def freshness_checks(
    cfg: DatasetConfig, partitions: DailyPartitionsDefinition, assets: list[AssetsDefinition]
) -> tuple[list[AssetChecksDefinition], SensorDefinition]:
    """One check per daily asset key (`freshness_check` in the UI) and `freshness_checks`, the sensor
    that evaluates them after each deadline."""
    daily = [key for a in assets if a.partitions_def == partitions for key in a.keys]
    checks = list(
        build_time_partition_freshness_checks(
            assets=daily, deadline_cron=f"0 {cfg.fresh_by_hour} * * *", timezone=partitions.timezone
        )
    )
    return checks, build_sensor_for_freshness_checks(freshness_checks=checks, name="freshness_checks")
