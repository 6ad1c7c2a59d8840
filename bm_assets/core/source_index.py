"""Which files of an event source can hold a window's events, so that a daily run stages only those.

Every file of a source has a span: the earliest and latest usable timestamp of its rows, whether
it has rows without one (missing or unparsable, or a record the reader rejects), and, for a
source with an `event_id`, the least and greatest event id it holds. With the dataset's range
that gives the partition days its rows can land on (`core/ingest.py`): a row with a timestamp in
`data_start..data_end` lands on its day; every other row on `data_start`. A window stages the
files that can land rows on it, plus the files that sort before one of them and whose event ids
overlap it (the first occurrence of an event id, by file and row, wins across the whole source, so
an earlier file can turn a window's row into a duplicate). A file whose span is unknown is read
to learn it. A span is an interval: a file holding the 4th and the 9th is read for the 6th too
(never wrong, only slower).

Spans come from the Parquet footer's column statistics when the timestamp is a plain column with
a timestamp or date type and the source has no event id (no data is read), else from one scan of
the file by the ingest's own reader and rules. They are kept in the warehouse table
`raw_events_file_index`, keyed by source, path, size, modification time (ns) and a fingerprint of
the source's config (not of the dataset's range, which moves every day for a live dataset): a
file that changes, or a config that changes what its rows mean, is indexed again. The index is a
cache: deleting the table costs one scan per file, never a wrong answer (short of a file
rewritten with the same size inside one mtime tick)."""

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
from bm_assets.core.warehouse import Warehouse, expand_paths

FILE_INDEX_COLUMNS = {
    "source": "VARCHAR",
    "path": "VARCHAR",
    "size": "BIGINT",
    "mtime_ns": "BIGINT",
    "fingerprint": "VARCHAR",
    "first_time": "TIMESTAMP",
    "last_time": "TIMESTAMP",
    "untimed_rows": "BOOLEAN",
    "min_event_id": "VARCHAR",
    "max_event_id": "VARCHAR",
    "method": "VARCHAR",
}
#: DuckDB types of a Parquet column whose footer min/max bound the ingest's event_time: the
#: statistics are cast to the column's type, then to TIMESTAMP as the ingest casts the values
#: (TIMESTAMP_NS rounds to µs). Time-zoned timestamps depend on the session's zone: scanned.
_STAT_TYPES = {"TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE"}
_US = dt.timedelta(microseconds=1)


class FileSpan(NamedTuple):
    """[first_time, last_time]: the usable timestamps of a file's rows (None: none);
    `untimed_rows`: it has rows without one; the bounds of its event ids (None: none, or the
    source has no event_id)."""

    first_time: dt.datetime | None
    last_time: dt.datetime | None
    untimed_rows: bool = False
    min_event_id: str | None = None
    max_event_id: str | None = None
    method: str = "scan"

    def meets(self, start: dt.date, end: dt.date, cfg: DatasetConfig) -> bool:
        """Whether rows of the file can land on days [start, end) of the dataset `cfg`."""
        lo = dt.datetime.combine(cfg.data_start, dt.time())
        hi = dt.datetime.combine(cfg.end_exclusive, dt.time())
        timed = self.first_time is not None
        outside = timed and (self.first_time < lo or self.last_time >= hi)
        if (self.untimed_rows or outside) and start <= cfg.data_start < end:
            return True  # rows that land on the first day
        if not timed or self.first_time >= hi or self.last_time < lo:
            return False
        first, last = max(self.first_time, lo).date(), min(self.last_time, hi - _US).date()
        return first < end and last >= start

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


def fingerprint(src: EventSource) -> str:
    """What a span depends on besides the file: the source's mapping (reader, timestamp, ids).
    Defaults are left out, so a new option at its default keeps the spans already indexed."""
    mapping = src.model_dump(mode="json", exclude_defaults=True)
    if src.join:  # a line's time or client may come from a joined table: their versions too
        mapping["join_files"] = [list(FileKey.of(f)) for j in src.join for f in expand_paths(j.path)]
    return hashlib.sha1(json.dumps(mapping, sort_keys=True).encode()).hexdigest()[:16]


def spans_sql(classified: str, rejects: str, event_ids: bool) -> str:
    """Per file (`file`): the span of the rows of a classified stage and of its reader rejects."""
    ids = "event_id" if event_ids else "CAST(NULL AS VARCHAR)"
    return f"""SELECT file, min(t) AS first_time, max(t) AS last_time, max(untimed) AS untimed_rows,
            min(eid) AS min_event_id, max(eid) AS max_event_id
        FROM (SELECT source_file AS file, event_time AS t, CASE WHEN event_time IS NULL THEN 1 ELSE 0 END AS untimed,
                     {ids} AS eid FROM {classified}
              UNION ALL SELECT __file, NULL, 1, NULL FROM {rejects})
        GROUP BY file"""


def _time(value: object) -> dt.datetime | None:
    if value is None or value != value:  # NULL or NaT
        return None
    return value.to_pydatetime() if isinstance(value, pd.Timestamp) else value


def _text(value: object) -> str | None:
    return None if value is None or value != value else str(value)


def spans_from_frame(df: pd.DataFrame, method: str = "scan") -> dict[str, FileSpan]:
    """`spans_sql` rows -> path -> span."""
    return {
        row.file: FileSpan(
            _time(row.first_time),
            _time(row.last_time),
            not (row.untimed_rows is None or row.untimed_rows != row.untimed_rows) and bool(row.untimed_rows),
            _text(row.min_event_id),
            _text(row.max_event_id),
            method,
        )
        for row in df.itertuples(index=False)
    }


def parquet_span(src: EventSource, path: str) -> FileSpan | None:
    """A Parquet file's span from its footer statistics, or None when they cannot tell exactly
    (a derived, formatted or Unix-time timestamp, a time-zoned or text column, missing statistics, or a
    source with event ids, whose bounds the footer does not give as the ingest compares them)."""
    ts = src.timestamp
    if src.join:  # the time may be a joined table's
        return None
    if src.format != "parquet" or ts.format or ts.unit or isinstance(ts.ref, Derived) or src.event_id is not None:
        return None
    con = duckdb.connect()
    try:
        typed = con.execute(
            f"SELECT column_type FROM (DESCRIBE SELECT {ident(ts.ref)} FROM read_parquet({literal(path)}))"
        ).fetchall()
        if not typed or typed[0][0] not in _STAT_TYPES:
            return None
        lo, hi = (f"TRY_CAST(TRY_CAST(stats_{m}_value AS {typed[0][0]}) AS TIMESTAMP)" for m in ("min", "max"))
        stats = con.execute(
            f"""SELECT count(*) AS groups, sum(row_group_num_rows) AS rows,
                bool_and(row_group_num_rows = 0 OR stats_null_count = row_group_num_rows
                         OR ({lo} IS NOT NULL AND {hi} IS NOT NULL)) AS usable,
                min({lo}) AS lo, max({hi}) AS hi, bool_or(stats_null_count IS NULL OR stats_null_count > 0) AS nulls
            FROM parquet_metadata({literal(path)}) WHERE path_in_schema = ?""",
            [ts.ref],
        ).fetchone()
    except duckdb.Error:
        return None  # the scan reports what is wrong with the file
    finally:
        con.close()
    groups, rows, usable, first, last, nulls = stats
    if not groups or not usable:
        return None
    return FileSpan(first, last, bool(rows and nulls), method="parquet statistics")


def read_index(wh: Warehouse, source: str, fp: str) -> dict[FileKey, FileSpan]:
    """The stored spans of a source's files under fingerprint `fp` (read as Arrow: one row per
    file of the history, so no pandas row objects)."""
    if not wh.table_exists(FILE_INDEX):
        return {}
    cols = wh.fetch_arrow(
        f"SELECT path, size, mtime_ns, first_time, last_time, coalesce(untimed_rows, FALSE) AS untimed_rows, "
        f"min_event_id, max_event_id, method "
        f"FROM {wh.table(FILE_INDEX)} WHERE source = {literal(source)} AND fingerprint = {literal(fp)}"
    ).to_pydict()
    keys = map(FileKey, cols["path"], cols["size"], cols["mtime_ns"])
    spans = map(
        FileSpan,
        cols["first_time"],
        cols["last_time"],
        cols["untimed_rows"],
        cols["min_event_id"],
        cols["max_event_id"],
        cols["method"],
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
                "first_time": s.first_time,
                "last_time": s.last_time,
                "untimed_rows": s.untimed_rows,
                "min_event_id": s.min_event_id,
                "max_event_id": s.max_event_id,
                "method": s.method,
            }
            for k, s in spans.items()
        ],
        columns=list(FILE_INDEX_COLUMNS),
    )
    for col in ("first_time", "last_time"):  # typed even when every value is NULL
        df[col] = pd.to_datetime(df[col]).astype("datetime64[us]")
    paths = ", ".join(literal(k.path) for k in spans)
    stale = f"DELETE FROM {wh.table(FILE_INDEX)} WHERE source = {literal(source)} AND path IN ({paths})"
    wh.insert_df(FILE_INDEX, df, before=[stale])


def select_files(
    cfg: DatasetConfig,
    files: Sequence[str],
    spans: dict[str, FileSpan],
    start: dt.date,
    end: dt.date,
    event_ids: bool,
) -> list[str]:
    """The files (in `files` order) that can hold rows of days [start, end), plus, for a source
    with event ids, the earlier files whose ids overlap one of them."""
    holding = [f for f in files if spans[f].meets(start, end, cfg)]
    chosen = set(holding)
    if event_ids and holding:
        for f in files:
            if f not in chosen and any(f < h and spans[f].ids_overlap(spans[h]) for h in holding):
                chosen.add(f)
    return [f for f in files if f in chosen]
