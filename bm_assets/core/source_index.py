"""Which files of an event source can hold a window's events, so that a daily run stages only those.

Every file of a source has a span: the first and last day of its rows with a usable timestamp in
the configured range (each lands on its day), whether it has rows that land on `data_start`
instead (no usable or an out-of-range timestamp, or a record the reader rejects; see
`core/ingest.py`), and for a source with an `event_id`, the least and greatest event id it holds.
A window stages the files whose span meets it, plus the files that sort before one of them and
whose event ids overlap it (the first occurrence of an event id, by file and row, wins across the
whole source, so an earlier file can turn a window's row into a duplicate). A file whose span is
unknown is read to learn it. A span is an interval: a file holding the 4th and the 9th is read for
the 6th too (never wrong, only slower).

Spans come from the Parquet footer's column statistics when the timestamp is a plain column with
a timestamp or date type and the source has no event id (no data is read), else from one scan of
the file by the ingest's own reader and rules. They are kept in the warehouse table
`raw_events_file_index`, keyed by source, path, size, modification time (ns) and a fingerprint of
the source's config and the dataset's date range: a file that changes, or a config that changes
what its rows mean, is indexed again. The index is a cache: deleting the table costs one scan per
file, never a wrong answer (short of a file rewritten with the same size inside one mtime tick)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Sequence
from typing import NamedTuple

import duckdb
import pandas as pd

from bm_assets.config import DatasetConfig, Derived, EventSource
from bm_assets.core.sql import FILE_INDEX, ident, literal
from bm_assets.core.warehouse import Warehouse

FILE_INDEX_COLUMNS = {
    "source": "VARCHAR",
    "path": "VARCHAR",
    "size": "BIGINT",
    "mtime_ns": "BIGINT",
    "fingerprint": "VARCHAR",
    "first_day": "DATE",
    "last_day": "DATE",
    "unplaced_rows": "BOOLEAN",
    "min_event_id": "VARCHAR",
    "max_event_id": "VARCHAR",
    "method": "VARCHAR",
}
#: DuckDB types of a Parquet column whose footer min/max bound the ingest's event_time exactly
#: (TRY_CAST to TIMESTAMP keeps the day). Time-zoned timestamps depend on the session's zone: scanned.
_STAT_TYPES = {"TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE"}


class FileSpan(NamedTuple):
    """Days [first_day, last_day] of a file's rows with an in-range timestamp (None: no such
    row); `unplaced_rows`: it has rows that land on data_start whatever their day; the bounds
    of its event ids (None: none, or the source has no event_id)."""

    first_day: dt.date | None
    last_day: dt.date | None
    unplaced_rows: bool = False
    min_event_id: str | None = None
    max_event_id: str | None = None
    method: str = "scan"

    def meets(self, start: dt.date, end: dt.date, data_start: dt.date) -> bool:
        """Whether rows of the file can land in days [start, end)."""
        if self.unplaced_rows and start <= data_start < end:
            return True
        return self.first_day is not None and self.first_day < end and self.last_day >= start

    def ids_overlap(self, other: FileSpan) -> bool:
        if None in (self.min_event_id, self.max_event_id, other.min_event_id, other.max_event_id):
            return False  # a row without an event id is quarantined, never a duplicate
        return self.min_event_id <= other.max_event_id and other.min_event_id <= self.max_event_id


class FileKey(NamedTuple):
    """What identifies a version of a file (NamedTuples: one per file of the history each run)."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str) -> FileKey:
        st = os.stat(path)
        return cls(path, st.st_size, st.st_mtime_ns)


def fingerprint(cfg: DatasetConfig, src: EventSource) -> str:
    """What a span depends on besides the file: the source's mapping and the dataset's range."""
    body = {"source": src.model_dump(mode="json"), "range": [str(cfg.data_start), str(cfg.end_exclusive)]}
    return hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def spans_sql(cfg: DatasetConfig, classified: str, rejects: str, event_ids: bool) -> str:
    """Per file (`file`): the span of the rows of a classified stage and of its reader rejects."""
    ids = "event_id" if event_ids else "CAST(NULL AS VARCHAR)"
    placed = (
        f"event_time >= TIMESTAMP '{cfg.data_start}' AND event_time < TIMESTAMP '{cfg.end_exclusive}'"
    )
    return f"""SELECT file, min(day) AS first_day, max(day) AS last_day, max(unplaced) AS unplaced_rows,
            min(eid) AS min_event_id, max(eid) AS max_event_id
        FROM (SELECT source_file AS file, CASE WHEN {placed} THEN partition_date END AS day,
                     CASE WHEN {placed} THEN 0 ELSE 1 END AS unplaced, {ids} AS eid FROM {classified}
              UNION ALL SELECT __file, NULL, 1, NULL FROM {rejects})
        GROUP BY file"""


def _day(value: object) -> dt.date | None:
    if value is None or value != value:  # NULL or NaT
        return None
    if isinstance(value, pd.Timestamp | dt.datetime):
        return value.date()
    return value


def _flag(value: object) -> bool:
    return not (value is None or value != value) and bool(value)


def _text(value: object) -> str | None:
    return None if value is None or value != value else str(value)


def spans_from_frame(df: pd.DataFrame, method: str = "scan") -> dict[str, FileSpan]:
    """`spans_sql` rows -> path -> span."""
    return {
        row.file: FileSpan(
            _day(row.first_day),
            _day(row.last_day),
            _flag(row.unplaced_rows),
            _text(row.min_event_id),
            _text(row.max_event_id),
            method,
        )
        for row in df.itertuples(index=False)
    }


def parquet_span(cfg: DatasetConfig, src: EventSource, path: str) -> FileSpan | None:
    """A Parquet file's span from its footer statistics, or None when they cannot tell exactly
    (a derived or formatted timestamp, a time-zoned or text column, missing statistics, or a
    source with event ids, whose bounds the footer does not give as the ingest compares them)."""
    ts = src.timestamp
    if src.format != "parquet" or ts.format or isinstance(ts.ref, Derived) or src.event_id is not None:
        return None
    con = duckdb.connect()
    try:
        typed = con.execute(
            f"SELECT column_type FROM (DESCRIBE SELECT {ident(ts.ref)} FROM read_parquet({literal(path)}))"
        ).fetchall()
        if not typed or typed[0][0] not in _STAT_TYPES:
            return None
        stats = con.execute(
            f"""SELECT count(*) AS groups, sum(row_group_num_rows) AS rows,
                bool_and(row_group_num_rows = 0 OR stats_null_count = row_group_num_rows OR
                         (TRY_CAST(stats_min_value AS TIMESTAMP) IS NOT NULL
                          AND TRY_CAST(stats_max_value AS TIMESTAMP) IS NOT NULL)) AS usable,
                min(TRY_CAST(stats_min_value AS TIMESTAMP)) AS lo, max(TRY_CAST(stats_max_value AS TIMESTAMP)) AS hi,
                bool_or(stats_null_count IS NULL OR stats_null_count > 0) AS nulls
            FROM parquet_metadata({literal(path)}) WHERE path_in_schema = ?""",
            [ts.ref],
        ).fetchone()
    except duckdb.Error:
        return None  # the scan reports what is wrong with the file
    finally:
        con.close()
    groups, rows, usable, lo, hi, nulls = stats
    if not groups or not usable:
        return None
    if not rows:
        return FileSpan(None, None, method="parquet statistics")
    start, end = dt.datetime.combine(cfg.data_start, dt.time()), dt.datetime.combine(cfg.end_exclusive, dt.time())
    unplaced = bool(nulls or lo is None or lo < start or hi >= end)
    if lo is None or lo >= end or hi < start:
        return FileSpan(None, None, unplaced, method="parquet statistics")
    last = min(hi, end - dt.timedelta(microseconds=1))
    return FileSpan(max(lo, start).date(), last.date(), unplaced, method="parquet statistics")


def read_index(wh: Warehouse, source: str, fp: str) -> dict[FileKey, FileSpan]:
    """The stored spans of a source's files under fingerprint `fp` (read as Arrow: one row per
    file of the history, so no pandas row objects)."""
    if not wh.table_exists(FILE_INDEX):
        return {}
    cols = wh.fetch_arrow(
        f"SELECT path, size, mtime_ns, CAST(first_day AS DATE) AS first_day, CAST(last_day AS DATE) AS last_day, "
        f"coalesce(unplaced_rows, FALSE) AS unplaced_rows, min_event_id, max_event_id, method "
        f"FROM {wh.table(FILE_INDEX)} WHERE source = {literal(source)} AND fingerprint = {literal(fp)}"
    ).to_pydict()
    keys = map(FileKey, cols["path"], cols["size"], cols["mtime_ns"])
    spans = map(
        FileSpan, cols["first_day"], cols["last_day"], cols["unplaced_rows"], cols["min_event_id"],
        cols["max_event_id"], cols["method"],
    )
    return dict(zip(keys, spans, strict=True))


def write_index(wh: Warehouse, source: str, fp: str, spans: dict[FileKey, FileSpan]) -> None:
    """Store new spans, replacing the rows of the same paths (older sizes, times or configs)."""
    if not spans:
        return
    body = ", ".join(f"{ident(c)} {t}" for c, t in FILE_INDEX_COLUMNS.items())
    wh.execute([f"CREATE TABLE IF NOT EXISTS {wh.table(FILE_INDEX)} ({body})"])
    df = pd.DataFrame(
        [
            {
                "source": source,
                "path": k.path,
                "size": k.size,
                "mtime_ns": k.mtime_ns,
                "fingerprint": fp,
                "first_day": s.first_day,
                "last_day": s.last_day,
                "unplaced_rows": s.unplaced_rows,
                "min_event_id": s.min_event_id,
                "max_event_id": s.max_event_id,
                "method": s.method,
            }
            for k, s in spans.items()
        ],
        columns=list(FILE_INDEX_COLUMNS),
    )
    paths = ", ".join(literal(k.path) for k in spans)
    stale = f"DELETE FROM {wh.table(FILE_INDEX)} WHERE source = {literal(source)} AND path IN ({paths})"
    wh.insert_df(FILE_INDEX, df, before=[stale])


def select_files(
    cfg: DatasetConfig, files: Sequence[str], spans: dict[str, FileSpan], start: dt.date, end: dt.date,
    event_ids: bool,
) -> list[str]:
    """The files (in `files` order) that can hold rows of days [start, end), plus, for a source
    with event ids, the earlier files whose ids overlap one of them."""
    holding = [f for f in files if spans[f].meets(start, end, cfg.data_start)]
    chosen = set(holding)
    if event_ids and holding:
        for f in files:
            if f not in chosen and any(f < h and spans[f].ids_overlap(spans[h]) for h in holding):
                chosen.add(f)
    return [f for f in files if f in chosen]
