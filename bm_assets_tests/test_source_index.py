"""A daily run stages only the files that can hold its day (core/source_index.py), and loads
exactly the rows and quarantine that staging every file gives."""

import datetime as dt
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dagster import DagsterInstance, materialize

from bm_assets.config import load_dataset_config
from bm_assets.core.ingest import ingest_window
from bm_assets.core.quality import ingest_quality
from bm_assets.core.sql import FILE_INDEX
from bm_assets.core.warehouse import DuckDBWarehouse
from bm_assets.definitions import build_definitions
from bm_assets.resources import DuckDBWarehouseResource
from bm_assets_tests.factories import HEADER, write_dataset

D = dt.date

#: One file per day, with what makes file selection hard: a duplicate event id across files
#: (d03's e1 repeats d02's), rows landing on the first day (bad timestamp in d02, out-of-range
#: timestamp in d03, a line the reader rejects in d05), and a file without valid rows (d07).
FILES = {
    "d02.csv": HEADER + "e1,1,A,2024-01-02 10:00:00,1,1,s\ne2,2,B,2024-01-02 11:00:00,1,2,s\ne0,2,B,bad,1,1,s\n",
    "d03.csv": HEADER + "e3,1,C,2024-01-03 09:00:00,2,1,s\ne1,1,A,2024-01-03 10:00:00,1,1,s\n"
    "e4,1,A,2023-12-01 10:00:00,1,1,s\n",
    "d04.csv": HEADER + "e5,2,A,2024-01-04 10:00:00,1,1,s\ne6,1,B,2024-01-04 12:00:00,1,-1,s\n",
    "d05.csv": (HEADER + "e7,1,C,2024-01-05 10:00:00,1,1,s\n").encode() + b"e8,1,\xff\xfeB,2024-01-05 10:00:00,1,1,s\n",
    "d06.csv": HEADER + "e8,2,A,2024-01-06 10:00:00,1,1,s\ne9,1,B,2024-01-06 23:59:59,1,1,s\n",
    "d07.csv": HEADER,
}
TABLES = {
    "raw_events": "SELECT * FROM raw_events ORDER BY source_file, source_row",
    "raw_events_quarantine": "SELECT * FROM raw_events_quarantine ORDER BY source_file, source_row",
    "raw_events_ingest_log": "SELECT * FROM raw_events_ingest_log ORDER BY source, partition_date",
}


def _multi_file_dataset(folder: Path, files: dict = FILES, fmt: str = "csv", event_id: bool = True) -> Path:
    cfg_path = write_dataset(folder, HEADER, event_id=event_id)
    (folder / "events.csv").unlink()
    (folder / "events").mkdir()
    for name, body in files.items():
        path = folder / "events" / name
        if fmt == "csv":
            path.write_bytes(body.encode() if isinstance(body, str) else body)
        else:
            body.to_parquet(path.with_suffix(".parquet"), index=False)
    doc = yaml.safe_load(cfg_path.read_text())
    doc["events"][0]["path"] = f"events/*.{fmt}"
    if fmt == "parquet":
        doc["events"][0]["timestamp"] = {"column": "ts"}
    cfg_path.write_text(yaml.safe_dump(doc))
    return cfg_path


def _days(cfg):
    day = cfg.data_start
    while day < cfg.end_exclusive:
        yield day
        day += dt.timedelta(days=1)


def _tables(wh) -> dict[str, pd.DataFrame]:
    return {name: wh.fetch_df(sql) for name, sql in TABLES.items()}


def _files_read(report) -> list[str]:
    return [Path(f).name for f in report.sources[0].files_read]


def _assert_same_tables(left: dict, right: dict) -> None:
    for name in TABLES:
        pd.testing.assert_frame_equal(left[name], right[name], obj=name)


def test_day_by_day_loads_what_the_whole_range_loads(tmp_path):
    cfg = load_dataset_config(_multi_file_dataset(tmp_path / "ds"))
    whole = DuckDBWarehouse(str(tmp_path / "whole.duckdb"))
    report = ingest_window(whole, cfg, cfg.data_start, cfg.end_exclusive)  # stages every file
    assert len(report.sources[0].files_read) == len(FILES)
    daily = DuckDBWarehouse(str(tmp_path / "daily.duckdb"))
    for day in _days(cfg):
        ingest_window(daily, cfg, day, day + dt.timedelta(days=1))
    expected, got = _tables(whole), _tables(daily)
    assert len(expected["raw_events"]) == 7 and len(expected["raw_events_quarantine"]) == 5
    _assert_same_tables(expected, got)
    q = ingest_quality(daily, cfg.data_start, cfg.end_exclusive)
    assert q.balanced and q.rows_in == 12
    dup = got["raw_events_quarantine"].query("reason.str.startswith('duplicate')", engine="python")
    assert dup["reason"].tolist() == ["duplicate event_id e1 (first seen at d02.csv:2)"]
    # The spans learned from the whole-range stage equal those of the one-file scans.
    cols = "path, first_time, last_time, untimed_rows, min_event_id, max_event_id"
    index = f"SELECT {cols} FROM {FILE_INDEX} ORDER BY path"
    pd.testing.assert_frame_equal(whole.fetch_df(index), daily.fetch_df(index))


def test_a_day_reads_only_the_files_that_can_hold_it(tmp_path, warehouse):
    cfg = load_dataset_config(_multi_file_dataset(tmp_path / "ds"))
    read = {day: _files_read(ingest_window(warehouse, cfg, day, day + dt.timedelta(days=1))) for day in _days(cfg)}
    assert read[D(2024, 1, 4)] == ["d04.csv"]
    assert read[D(2024, 1, 6)] == ["d06.csv"]
    # d02 holds no row of the 3rd, but its e1 makes d03's e1 a duplicate: it is read.
    assert read[D(2024, 1, 3)] == ["d02.csv", "d03.csv"]
    # The first day gets the rows without a usable in-range timestamp and the rejected lines.
    assert read[D(2024, 1, 1)] == ["d02.csv", "d03.csv", "d05.csv"]
    assert read[D(2024, 1, 20)] == []
    assert "d07.csv" not in {f for files in read.values() for f in files}
    methods = warehouse.fetch_df(f"SELECT DISTINCT method FROM {FILE_INDEX}")["method"].tolist()
    assert methods == ["scan"]


def test_rerunning_a_day_and_adding_files_never_duplicates(tmp_path, warehouse):
    folder = tmp_path / "ds"
    cfg = load_dataset_config(_multi_file_dataset(folder))
    for _ in range(2):
        ingest_window(warehouse, cfg, D(2024, 1, 3), D(2024, 1, 4))
    before = _tables(warehouse)
    assert len(before["raw_events"]) == 1 and len(before["raw_events_quarantine"]) == 1
    # A new day's file, and a changed old file, are indexed again; the 3rd is unchanged.
    (folder / "events" / "d08.csv").write_text(HEADER + "f1,1,A,2024-01-08 10:00:00,1,1,s\n")
    changed = folder / "events" / "d04.csv"
    changed.write_text(changed.read_text() + "e6b,2,C,2024-01-09 10:00:00,1,1,s\n")
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    assert _files_read(ingest_window(warehouse, cfg, D(2024, 1, 3), D(2024, 1, 4))) == ["d02.csv", "d03.csv"]
    _assert_same_tables(before, _tables(warehouse))
    assert _files_read(ingest_window(warehouse, cfg, D(2024, 1, 9), D(2024, 1, 10))) == ["d04.csv"]
    # A span is an interval: d04 now holds the 4th and the 9th, so it is read for the 8th too.
    assert _files_read(ingest_window(warehouse, cfg, D(2024, 1, 8), D(2024, 1, 9))) == ["d04.csv", "d08.csv"]
    ingest_window(warehouse, cfg, D(2024, 1, 8), D(2024, 1, 9))
    ev = warehouse.fetch_df("SELECT event_id FROM raw_events ORDER BY event_id")["event_id"].tolist()
    assert ev == ["e3", "e6b", "f1"]
    paths = warehouse.fetch_df(f"SELECT path FROM {FILE_INDEX}")["path"]
    assert paths.is_unique and len(paths) == len(FILES) + 1


def test_a_growing_range_reuses_the_stored_spans(tmp_path, warehouse):
    """A live dataset's range ends today, so it moves every day: spans do not depend on it. A
    stored file is not read again (here it could not be: it is garbage of the same size and
    time), and a row that was outside the old range lands in the new one."""
    folder = tmp_path / "ds"
    cfg_path = _multi_file_dataset(folder, {**FILES, "d40.csv": HEADER + "g1,1,A,2024-02-09 10:00:00,1,1,s\n"})
    cfg = load_dataset_config(cfg_path)
    assert _files_read(ingest_window(warehouse, cfg, D(2024, 1, 4), D(2024, 1, 5))) == ["d04.csv"]
    assert _files_read(ingest_window(warehouse, cfg, D(2024, 1, 1), D(2024, 1, 2)))[-1] == "d40.csv"  # out of range
    old = folder / "events" / "d02.csv"
    st = old.stat()
    old.write_text("x" * st.st_size)
    os.utime(old, ns=(st.st_atime_ns, st.st_mtime_ns))
    doc = yaml.safe_load(cfg_path.read_text())
    doc["data_end"] = "2024-02-29"
    cfg_path.write_text(yaml.safe_dump(doc))
    later = load_dataset_config(cfg_path, check_files=False)
    assert _files_read(ingest_window(warehouse, later, D(2024, 2, 9), D(2024, 2, 10))) == ["d40.csv"]
    assert _files_read(ingest_window(warehouse, later, D(2024, 1, 4), D(2024, 1, 5))) == ["d04.csv"]
    ev = warehouse.fetch_df("SELECT event_id FROM raw_events ORDER BY event_id")["event_id"].tolist()
    assert ev == ["e5", "g1"]


def _parquet_day(day: int, n: int, null_ts: bool = False) -> pd.DataFrame:
    ts = pd.to_datetime([f"2024-01-{day:02d} {h:02d}:00:00" for h in range(n)])
    df = pd.DataFrame(
        {
            "event_id": [f"p{day}_{i}" for i in range(n)],
            "client": ["1", "2"] * (n // 2) + ["1"] * (n % 2),
            "item": "A",
            "ts": ts,
            "qty": 1.0,
            "amount": 2.0,
            "shop": "s",
        }
    )
    if null_ts:
        df.loc[0, "ts"] = pd.NaT
    return df


def test_parquet_days_are_chosen_from_footer_statistics(tmp_path, warehouse):
    files = {f"d{d:02d}.csv": _parquet_day(d, 3, null_ts=d == 5) for d in (2, 3, 4, 5)}
    cfg = load_dataset_config(_multi_file_dataset(tmp_path / "ds", files, fmt="parquet", event_id=False))
    whole = DuckDBWarehouse(str(tmp_path / "whole.duckdb"))
    ingest_window(whole, cfg, cfg.data_start, cfg.end_exclusive)
    read = {day: _files_read(ingest_window(warehouse, cfg, day, day + dt.timedelta(days=1))) for day in _days(cfg)}
    assert read[D(2024, 1, 3)] == ["d03.parquet"]
    assert read[D(2024, 1, 1)] == ["d05.parquet"]  # its row without a timestamp lands on the first day
    assert read[D(2024, 1, 5)] == ["d05.parquet"]
    _assert_same_tables(_tables(whole), _tables(warehouse))
    methods = warehouse.fetch_df(f"SELECT DISTINCT method FROM {FILE_INDEX}")["method"].tolist()
    assert methods == ["parquet statistics"]


def test_raw_events_metadata_names_the_files_read(tmp_path):
    defs = build_definitions(
        str(_multi_file_dataset(tmp_path / "ds")),
        warehouse=DuckDBWarehouseResource(database=str(tmp_path / "wh.duckdb")),
    )
    assets = [a for a in defs.assets if any(k.to_user_string() == "raw_events" for k in a.keys)]
    instance = DagsterInstance.ephemeral()
    result = materialize(assets, resources=defs.resources, instance=instance, partition_key="2024-01-06")
    assert result.success
    meta = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.to_user_string() == "raw_events"
    )
    assert [Path(f).name for f in meta["files_read"].value["purchase"]] == ["d06.csv"]


@pytest.mark.bigquery
def test_files_are_chosen_the_same_on_bigquery(tmp_path, warehouse, bq_warehouse):
    """On BigQuery the spans learned from a whole-range stage run as BigQuery SQL; the tables and
    the index come out as on DuckDB, and a day then reads only its files there too."""
    cfg = load_dataset_config(_multi_file_dataset(tmp_path / "ds"))
    for wh in (warehouse, bq_warehouse):
        ingest_window(wh, cfg, cfg.data_start, cfg.end_exclusive)
    cols = "path, first_time, last_time, untimed_rows, min_event_id, max_event_id"
    index = f"SELECT {cols} FROM {FILE_INDEX} ORDER BY path"
    duck, bq = warehouse.fetch_df(index), bq_warehouse.fetch_df(index)
    pd.testing.assert_frame_equal(duck.astype(object), bq.astype(object), check_dtype=False)
    assert bool(duck.loc[duck["path"].str.endswith("d05.csv"), "untimed_rows"].iloc[0])  # its rejected line
    report = ingest_window(bq_warehouse, cfg, D(2024, 1, 3), D(2024, 1, 4))
    assert _files_read(report) == ["d02.csv", "d03.csv"]
    events = "SELECT event_id, event_date FROM raw_events ORDER BY event_id"
    pd.testing.assert_frame_equal(
        warehouse.fetch_df(events).astype(object), bq_warehouse.fetch_df(events).astype(object), check_dtype=False
    )
