"""Partition definitions, in one place. Event assets are daily over the dataset's range."""

from __future__ import annotations

import datetime as dt

from dagster import DailyPartitionsDefinition

from bm_assets.config import DatasetConfig


def daily_partitions(cfg: DatasetConfig) -> DailyPartitionsDefinition:
    return DailyPartitionsDefinition(
        start_date=cfg.data_start.isoformat(),
        end_date=(cfg.end_exclusive).isoformat(),
    )


def window_of(context) -> tuple[dt.date, dt.date]:
    """[start, end) dates a (possibly multi-partition, single-run backfill) run covers."""
    tw = context.partition_time_window
    return tw.start.date(), tw.end.date()
