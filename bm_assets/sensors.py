"""File-arrival sensors, one per event source: a new or changed file matching the source's path
(a file or a glob) requests the daily partitions of the days it holds, unless the day was already
loaded, or its run already launched, after the file landed (by another source's sensor, the
schedule, a click, or `bm-assets run` before the sensor was turned on)."""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import os

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DagsterRunStatus,
    DailyPartitionsDefinition,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from bm_assets.config import DatasetConfig, EventSource
from bm_assets.core.ingest import classify_sql
from bm_assets.core.warehouse import DuckDBWarehouse


def file_days(cfg: DatasetConfig, src: EventSource, path: str) -> tuple[dt.date, dt.date] | None:
    """First and last day of the valid events in one file of `src`, read by the ingest's own reader
    and timestamp rules in a scratch in-memory DuckDB (seconds for a large file); None when the file
    holds no valid event."""
    wh = DuckDBWarehouse(":memory:")
    try:
        wh.stage_events(src, path, "stage")
        staged = wh.fetch_df("SELECT * FROM stage LIMIT 0")
        strings = {c for c in staged.columns if staged[c].dtype == object}
        span = wh.fetch_df(
            "SELECT min(partition_date) AS first, max(partition_date) AS last "
            f"FROM ({classify_sql(cfg, src, 'stage', strings)}) WHERE reason IS NULL"
        ).iloc[0]
    finally:
        wh.close()
    if span["first"] is None or span["first"] != span["first"]:  # NULL or NaT: no valid event
        return None
    return _as_date(span["first"]), _as_date(span["last"])


def _as_date(value: object) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


#: Runs that will have read a file if they were created after it landed (queued, running or done).
LIVE_OR_DONE = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.SUCCESS,
]


def landed_at(st: os.stat_result) -> float:
    """When a file took its current content and name (seconds): the later of its modification and
    status-change times, so a file written elsewhere and renamed into the folder (how landing
    processes make a file appear whole) counts from the rename."""
    return max(st.st_mtime, st.st_ctime)


def handled_since(instance: DagsterInstance, job_name: str, days: dict[str, float]) -> set[str]:
    """The days of `days` (day -> time its newest file landed) that need no new run: `raw_events` has
    a materialization of the day after that time, or a run of `job_name` for the day was created
    after it and has not failed (queued or running: it stages the source's files when it starts)."""
    if not days:
        return set()
    since = min(days.values())
    done = set()
    records_filter = AssetRecordsFilter(
        asset_key=AssetKey("raw_events"), asset_partitions=sorted(days), after_timestamp=since
    )
    cursor = None
    while True:  # pages of Dagster's maximum, 10,000 records
        page = instance.fetch_materializations(records_filter, limit=10_000, cursor=cursor)
        for record in page.records:
            if record.partition_key in days and record.timestamp > days[record.partition_key]:
                done.add(record.partition_key)
        if not page.has_more:
            break
        cursor = page.cursor
    runs = instance.get_run_records(
        RunsFilter(
            job_name=job_name,
            statuses=LIVE_OR_DONE,
            created_after=dt.datetime.fromtimestamp(since, dt.UTC),
        )
    )
    for run in runs:
        day = run.dagster_run.tags.get("dagster/partition")
        if day in days and run.create_timestamp.timestamp() > days[day]:
            done.add(day)
    return done


def file_arrival_sensor(
    cfg: DatasetConfig, src: EventSource, job: UnresolvedAssetJobDefinition, partitions: DailyPartitionsDefinition
) -> SensorDefinition:
    """`<source>_files`: the cursor maps each file seen to [mtime_ns, size] (JSON); a file that is
    new or whose mtime or size changed requests every partition from its first to its last day,
    except the days loaded or launched since it landed (`handled_since`): so turning the sensor on
    over a folder that `bm-assets run` already loaded runs nothing, and a day whose files land in
    two sources at once runs once. Days that are not partitions yet (today in a live dataset) are
    left to the daily schedule."""
    pattern = cfg.resolve(src.path)

    @sensor(
        name=f"{src.name}_files",
        job=job,
        minimum_interval_seconds=cfg.sensor_interval_seconds,
        description=f"Runs the daily partitions of new or changed files matching {pattern}.",
    )
    def files_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        seen: dict[str, list[int]] = json.loads(context.cursor) if context.cursor else {}
        current, landed = {}, {}
        for path in sorted(glob.glob(pattern)):
            st = os.stat(path)
            current[path], landed[path] = [st.st_mtime_ns, st.st_size], landed_at(st)
        changed = [p for p, signature in current.items() if seen.get(p) != signature]
        if not changed:
            return SkipReason(f"no new or changed file matching {pattern}")
        days: dict[str, float] = {}  # day -> when its newest changed file landed
        for path in changed:
            span = file_days(cfg, src, path)
            if span is None:
                context.log.warning(f"{path}: no valid event; nothing to run")
                continue
            day = span[0]
            while day <= span[1]:
                key = day.isoformat()
                if partitions.has_partition_key(key):
                    days[key] = max(days.get(key, 0.0), landed[path])
                day += dt.timedelta(days=1)
        handled = handled_since(context.instance, job.name, days)
        # One key per day and arrival, so a changed file runs its days again and a repeated tick does not.
        arrival = hashlib.sha1(json.dumps({p: current[p] for p in changed}).encode()).hexdigest()[:12]
        requests = [
            RunRequest(run_key=f"{day}:{arrival}", partition_key=day) for day in sorted(days) if day not in handled
        ]
        skip = None
        if not requests and days:
            skip = f"{len(changed)} new or changed file(s): their {len(days)} day(s) already loaded or launched"
        elif not requests:
            skip = f"{len(changed)} new or changed file(s): none of their days is a partition (yet)"
        return SensorResult(run_requests=requests, cursor=json.dumps(current), skip_reason=skip)

    return files_sensor
