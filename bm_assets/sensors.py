"""File-arrival sensors, one per event source: a new or changed file matching the source's path
(a file or a glob) requests the daily partitions of the days it holds."""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import os

from dagster import (
    DailyPartitionsDefinition,
    RunRequest,
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


def file_arrival_sensor(
    cfg: DatasetConfig, src: EventSource, job: UnresolvedAssetJobDefinition, partitions: DailyPartitionsDefinition
) -> SensorDefinition:
    """`<source>_files`: the cursor maps each file seen to [mtime_ns, size] (JSON); a file that is
    new or whose mtime or size changed requests every partition from its first to its last day.
    Days that are not partitions yet (today in a live dataset) are left to the daily schedule."""
    pattern = cfg.resolve(src.path)

    @sensor(
        name=f"{src.name}_files",
        job=job,
        minimum_interval_seconds=60,
        description=f"Runs the daily partitions of new or changed files matching {pattern}.",
    )
    def files_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        seen: dict[str, list[int]] = json.loads(context.cursor) if context.cursor else {}
        current = {}
        for path in sorted(glob.glob(pattern)):
            st = os.stat(path)
            current[path] = [st.st_mtime_ns, st.st_size]
        changed = [p for p, signature in current.items() if seen.get(p) != signature]
        if not changed:
            return SkipReason(f"no new or changed file matching {pattern}")
        days: set[str] = set()
        for path in changed:
            span = file_days(cfg, src, path)
            if span is None:
                context.log.warning(f"{path}: no valid event; nothing to run")
                continue
            day = span[0]
            while day <= span[1]:
                if partitions.has_partition_key(day.isoformat()):
                    days.add(day.isoformat())
                day += dt.timedelta(days=1)
        # One key per day and arrival, so a changed file runs its days again and a repeated tick does not.
        arrival = hashlib.sha1(json.dumps({p: current[p] for p in changed}).encode()).hexdigest()[:12]
        requests = [RunRequest(run_key=f"{day}:{arrival}", partition_key=day) for day in sorted(days)]
        return SensorResult(run_requests=requests, cursor=json.dumps(current))

    return files_sensor
