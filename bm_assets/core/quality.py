"""Data-quality measurements over a date window, computed in the warehouse. Assets turn them
into asset-check results; tests call them directly."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from bm_assets.core.ingest import OUT_OF_RANGE
from bm_assets.core.sql import EVENTS_DENORMALIZED, INGEST_LOG, QUARANTINE, RAW_EVENTS
from bm_assets.core.sql import literal as _lit
from bm_assets.core.warehouse import Warehouse


@dataclass
class IngestQuality:
    rows_in: int
    rows_loaded: int
    rows_quarantined: int
    null_keys: int
    outside_partition: int
    rows_out_of_range: int = 0  # quarantined because the timestamp is outside the configured range

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.rows_loaded + self.rows_quarantined

    @property
    def quarantine_rate(self) -> float:
        """Share of the window's source rows quarantined for a fault in the data (0 for an empty
        window). Rows outside the configured date range are left out of both counts: the config
        excludes them on purpose (they are still quarantined and listed)."""
        rows = self.rows_in - self.rows_out_of_range
        return (self.rows_quarantined - self.rows_out_of_range) / rows if rows else 0.0


def _scalar(wh: Warehouse, sql: str) -> int:
    value = wh.fetch_df(sql).iloc[0, 0]
    return 0 if value is None or value != value else int(value)


def ingest_quality(wh: Warehouse, start: dt.date, end: dt.date, item_sources: list[str] | None = None) -> IngestQuality:
    """Rows the sources held for the window versus rows the tables now hold for it. A key is
    missing when client or time is NULL, or the item of a source that maps items."""
    d = f"DATE '{start}'", f"DATE '{end}'"
    sources = ", ".join(_lit(s) for s in item_sources or []) or "NULL"
    ev = f"event_date >= {d[0]} AND event_date < {d[1]}"
    part = f"partition_date >= {d[0]} AND partition_date < {d[1]}"
    return IngestQuality(
        rows_in=_scalar(wh, f"SELECT sum(rows_in) FROM {wh.table(INGEST_LOG)} WHERE {part}"),
        rows_loaded=_scalar(wh, f"SELECT count(*) FROM {wh.table(RAW_EVENTS)} WHERE {ev}"),
        rows_quarantined=_scalar(wh, f"SELECT count(*) FROM {wh.table(QUARANTINE)} WHERE {part}"),
        null_keys=_scalar(
            wh,
            f"SELECT count(*) FROM {wh.table(RAW_EVENTS)} WHERE {ev} AND "
            f"(client_id IS NULL OR event_time IS NULL OR (item_id IS NULL AND source IN ({sources})))",
        ),
        outside_partition=_scalar(
            wh,
            f"SELECT count(*) FROM {wh.table(RAW_EVENTS)} WHERE {ev} AND CAST(event_time AS DATE) <> event_date",
        ),
        rows_out_of_range=_scalar(
            wh,
            f"SELECT count(*) FROM {wh.table(QUARANTINE)} WHERE {part} AND reason LIKE {_lit(OUT_OF_RANGE + '%')}",
        ),
    )


def catalog_coverage(wh: Warehouse, start: dt.date, end: dt.date) -> tuple[float, int]:
    """Share of the window's events with an item whose item is in product_catalog, and their count."""
    df = wh.fetch_df(
        f"SELECT avg(CASE WHEN item_in_catalog THEN 1.0 ELSE 0.0 END) AS share, count(*) AS n "
        f"FROM {wh.table(EVENTS_DENORMALIZED)} "
        f"WHERE event_date >= DATE '{start}' AND event_date < DATE '{end}' AND item_id IS NOT NULL"
    )
    n = int(df["n"].iloc[0])
    return (float(df["share"].iloc[0]) if n else 1.0), n


def quarantine_reasons(wh: Warehouse, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Quarantined rows of days [start, end) per source, column and reason, most frequent first,
    with the first source row of each."""
    return wh.fetch_df(
        f"SELECT source, column_name, reason, count(*) AS rows, min(source_row) AS first_row "
        f"FROM {wh.table(QUARANTINE)} WHERE partition_date >= DATE '{start}' "
        f"AND partition_date < DATE '{end}' GROUP BY ALL ORDER BY rows DESC"
    )
