"""Partition definitions, in one place. Event assets are daily over the dataset's range."""

from __future__ import annotations

import datetime as dt
import warnings

from dagster import BetaWarning, DailyPartitionsDefinition

from bm_assets.config import DatasetConfig

# The partitioned assets use BackfillPolicy.single_run() on purpose (a range is one run); Dagster
# warns once per asset that the parameter is in beta. Only that warning is silenced.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy` of function `asset`", category=BetaWarning)


def daily_partitions(cfg: DatasetConfig) -> DailyPartitionsDefinition:
    """Days from data_start through data_end; without data_end, through yesterday in the dataset's
    time zone (Dagster adds a day as each one ends)."""
    return DailyPartitionsDefinition(
        start_date=cfg.data_start.isoformat(),
        end_date=cfg.end_exclusive.isoformat() if cfg.data_end is not None else None,
        timezone=cfg.timezone,
    )


def window_of(context) -> tuple[dt.date, dt.date]:
    """[start, end) dates a (possibly multi-partition, single-run backfill) run covers."""
    tw = context.partition_time_window
    return tw.start.date(), tw.end.date()
