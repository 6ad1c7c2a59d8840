"""Jobs and schedules: a daily refresh of the attribute snapshots and of yesterday's partitions, and
the retraining of the models (weekly by default)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from dagster import (
    AssetsDefinition,
    AssetSelection,
    DailyPartitionsDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    partition_loading_context,
    schedule,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from bm_assets.core.tasks import RetrainConfig
from bm_assets.sensors import handled_since


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
        ScheduleDefinition(
            name="attributes_refresh",
            job=attributes_job,
            cron_schedule="0 1 * * *",
            execution_timezone=partitions.timezone,
        ),
        daily_refresh_schedule(daily_job, partitions, hour_of_day=2),
    ]
    return [attributes_job, daily_job], schedules


def retrain_job_and_schedule(
    retrain: RetrainConfig, task_names: list[str], timezone: str
) -> tuple[UnresolvedAssetJobDefinition, ScheduleDefinition]:
    """`retrain`: the foundation model (unless `retrain.foundation` is false), then every task model and
    its evaluation. Each training registers a new MLflow version; the champion alias moves only to a
    version at least as good on validation, and the daily scores follow the champion."""
    keys = (["foundation_model"] if retrain.foundation else []) + [
        f"{t}_{suffix}" for t in task_names for suffix in ("model", "evaluation")
    ]
    job = define_asset_job(
        "retrain",
        selection=AssetSelection.assets(*keys),
        description="Train new model versions; each becomes the champion only if it validates at least as well.",
    )
    return job, ScheduleDefinition(
        name="retrain", job=job, cron_schedule=retrain.cron_schedule, execution_timezone=timezone
    )


def daily_refresh_schedule(
    job: UnresolvedAssetJobDefinition, partitions: DailyPartitionsDefinition, hour_of_day: int
) -> ScheduleDefinition:
    """At `hour_of_day` each day, the previous day's partition. Unlike Dagster's schedule built
    from a partitioned job (which falls back to the last partition), a day outside the dataset's
    range is skipped with the reason: a closed dataset (data_end) does not re-run its last day. A day
    already loaded or launched after it ended (by a file-arrival sensor) is skipped too."""

    @schedule(
        name="daily_refresh",
        job=job,
        cron_schedule=f"0 {hour_of_day} * * *",
        execution_timezone=partitions.timezone,
        description="Yesterday's partition of the daily assets; skipped past the dataset's data_end.",
    )
    def daily_refresh(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        now = context.scheduled_execution_time
        now = now.astimezone(ZoneInfo(partitions.timezone)) if now.tzinfo else now
        day = (now - dt.timedelta(days=1)).date().isoformat()
        with partition_loading_context(now):  # the partitions as of the tick, not of the clock
            exists, last = partitions.has_partition_key(day), partitions.get_last_partition_key()
        if exists:
            # A run of the day created after it ended read every file of the day (a sensor's, after a
            # file landed past midnight, or a click); files landing later start their own runs.
            ended = now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
            if handled_since(context.instance, job.name, {day: ended}):
                return SkipReason(f"{day} was already loaded or launched after it ended (by a file-arrival sensor?)")
            return RunRequest(run_key=day, partition_key=day)
        if last is not None and day > last:
            return SkipReason(
                f"the dataset ends on {last} (data_end): there is no partition {day}. Remove data_end "
                "from the dataset YAML to process data that keeps arriving."
            )
        return SkipReason(f"{day} is before the dataset's first day {partitions.start.date()}")

    return daily_refresh
