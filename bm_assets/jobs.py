"""Jobs and schedules: a daily refresh of the attribute snapshots and of yesterday's partitions."""

from __future__ import annotations

from dagster import (
    AssetsDefinition,
    AssetSelection,
    DailyPartitionsDefinition,
    ScheduleDefinition,
    build_schedule_from_partitioned_job,
    define_asset_job,
)


def build_jobs_and_schedules(partitions: DailyPartitionsDefinition, assets: list[AssetsDefinition]):
    """`assets`: every asset definition; the daily job takes those partitioned by `partitions`."""
    attributes_job = define_asset_job(
        "attributes_refresh",
        selection=AssetSelection.assets("client_properties", "product_catalog"),
        description="Re-read the client and item attribute tables.",
    )
    daily_keys = [key for a in assets if a.partitions_def == partitions for key in a.keys]
    daily_job = define_asset_job(
        "daily_refresh",
        selection=AssetSelection.assets(*daily_keys),
        partitions_def=partitions,
        description="Ingest, validate and process one day of events.",
    )
    schedules = [
        # Named like their jobs, so the UI, the README and the code use one name each.
        ScheduleDefinition(name="attributes_refresh", job=attributes_job, cron_schedule="0 1 * * *"),
        build_schedule_from_partitioned_job(daily_job, hour_of_day=2, name="daily_refresh"),
    ]
    return [attributes_job, daily_job], schedules
