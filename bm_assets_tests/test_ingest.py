"""raw_events / raw_events_quarantine: every bad input lands in quarantine with its reason, or
stops the run with an error naming file and column; nothing is silently dropped."""

import datetime as dt

import pandas as pd
import pytest
import yaml

from bm_assets.config import load_dataset_config
from bm_assets.core.attributes import build_product_catalog
from bm_assets.core.ingest import ingest_window
from bm_assets.core.quality import ingest_quality
from bm_assets.core.warehouse import SourceReadError
from bm_assets_tests.factories import (
    HEADER,
    HOSTILE,
    hostile_names_dataset,
    ingest_join_and_graph,
    unix_time_csv,
    write_dataset,
)

D = dt.date


def _ingest(tmp_path, warehouse, csv, **kw):
    cfg = load_dataset_config(write_dataset(tmp_path / "ds", csv, **kw))
    report = ingest_window(warehouse, cfg, cfg.data_start, cfg.end_exclusive)
    return cfg, report


def _quarantine(warehouse) -> pd.DataFrame:
    return warehouse.fetch_df("SELECT * FROM raw_events_quarantine ORDER BY source_row")


def _assert_balanced(warehouse, cfg, report, rows_in):
    q = ingest_quality(warehouse, cfg.data_start, cfg.end_exclusive)
    assert report.rows_in == rows_in == q.rows_in == q.rows_loaded + q.rows_quarantined


def test_valid_rows_are_typed(tmp_path, warehouse):
    csv = HEADER + "e1,1,A,2024-01-02 10:00:00,2,2.5,s1\ne2,2,B,2024-01-03 23:59:59,,,\n"
    cfg, report = _ingest(tmp_path, warehouse, csv)
    ev = warehouse.fetch_df("SELECT * FROM raw_events ORDER BY event_id")
    assert ev["client_id"].tolist() == ["1", "2"]
    assert ev["event_date"].dt.date.tolist() == [D(2024, 1, 2), D(2024, 1, 3)]
    assert ev["quantity"].iloc[0] == 2.0 and pd.isna(ev["quantity"].iloc[1])
    assert ev["event_type"].tolist() == ["purchase", "purchase"]
    assert ev["shop"].tolist() == ["s1", None]
    _assert_balanced(warehouse, cfg, report, 2)


@pytest.mark.parametrize(
    ("row", "column", "reason"),
    [
        ("e1,1,A,2024-13-45 10:00,1,1,s", "ts", "unparsable timestamp in column ts"),
        ("e1,,A,2024-01-02 10:00:00,1,1,s", "client", "missing client id in column client"),
        ("e1,1,,2024-01-02 10:00:00,1,1,s", "item", "missing item id in column item"),
        ("e1,1,A,2024-01-02 10:00:00,-3,1,s", "qty", "negative quantity in column qty"),
        ("e1,1,A,2024-01-02 10:00:00,1,-0.5,s", "amount", "negative value in column amount"),
        ("e1,1,A,2024-01-02 10:00:00,lots,1,s", "qty", "non-numeric quantity in column qty"),
        ("e1,1,A,2024-01-02 10:00:00,1,1.2.3,s", "amount", "non-numeric value in column amount"),
        ("e1,1,A,2023-12-31 23:59:59,1,1,s", "ts", "timestamp outside the configured range"),
        ("e1,1,A,2024-02-01 00:00:00,1,1,s", "ts", "timestamp outside the configured range"),
        ("e1,1,A,,1,1,s", "ts", "missing timestamp in column ts"),
    ],
)
def test_bad_row_is_quarantined_with_reason(tmp_path, warehouse, row, column, reason):
    csv = HEADER + "ok,1,A,2024-01-05 10:00:00,1,1,s\n" + row + "\n"
    cfg, report = _ingest(tmp_path, warehouse, csv)
    q = _quarantine(warehouse)
    assert len(q) == 1
    assert q["column_name"].iloc[0] == column
    assert reason in q["reason"].iloc[0]
    assert q["source_row"].iloc[0] == 3  # file line, header = 1
    assert q["source_file"].iloc[0].endswith("events.csv")
    assert '"e1"' in q["raw_record"].iloc[0]
    assert warehouse.fetch_df("SELECT event_id FROM raw_events")["event_id"].tolist() == ["ok"]
    _assert_balanced(warehouse, cfg, report, 2)


@pytest.mark.parametrize("unit", ["s", "ms", "us"])
def test_unix_time_is_read_in_its_unit(tmp_path, warehouse, unit):
    cfg, report = _ingest(tmp_path, warehouse, unix_time_csv(unit), timestamp_unit=unit)
    ev = warehouse.fetch_df("SELECT event_id, event_time, event_date FROM raw_events ORDER BY event_id")
    # .5 of the unit; half a microsecond rounds away from zero, as SQL's round does on both engines
    half = {"s": 500_000, "ms": 500, "us": 1}[unit]
    assert [t.to_pydatetime() for t in ev["event_time"]] == [  # UTC, as written
        dt.datetime(2024, 1, 2, 10, 0, 0),
        dt.datetime(2024, 1, 30, 23, 59, 59, half),
    ]
    assert ev["event_date"].dt.date.tolist() == [D(2024, 1, 2), D(2024, 1, 30)]
    q = _quarantine(warehouse)
    assert q["column_name"].tolist() == ["ts"] * 3
    assert q["reason"].tolist()[:2] == [f"unparsable timestamp in column ts (Unix time in {unit})"] * 2
    assert "timestamp outside the configured range" in q["reason"].iloc[2]
    _assert_balanced(warehouse, cfg, report, 5)


def test_csv_without_header_reads_named_columns(tmp_path, warehouse):
    """A log exported without a header line (and a non-default delimiter): rows keep their file
    line numbers, a short line is quarantined with its line, nothing is dropped."""
    csv = "e1|1|A|2024-01-02 10:00:00|2|2.5|s1\ne2|2|B\ne3|2|C|2024-01-03 11:00:00|1|1|s2\n"
    path = write_dataset(tmp_path / "ds", csv)
    columns = HEADER.strip().split(",")
    cfg = yaml.safe_load(path.read_text())
    cfg["events"][0]["csv"] = {"header": False, "columns": columns, "delimiter": "|"}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cfg = load_dataset_config(path)
    report = ingest_window(warehouse, cfg, cfg.data_start, cfg.end_exclusive)
    ev = warehouse.fetch_df("SELECT event_id, client_id, shop, source_row FROM raw_events ORDER BY event_id")
    assert ev.values.tolist() == [["e1", "1", "s1", 1], ["e3", "2", "s2", 3]]
    q = _quarantine(warehouse)
    assert q["source_row"].tolist() == [2] and "unreadable record" in q["reason"].iloc[0]
    _assert_balanced(warehouse, cfg, report, 3)


def test_headerless_csv_that_gains_a_column_fails_at_ingest(tmp_path, warehouse):
    """The names are checked against each file when it is staged, not only at load: a file
    rewritten with an extra column stops the ingest, naming the file and both counts."""
    path = write_dataset(tmp_path / "ds", "e1,1,A,2024-01-02 10:00:00,2,2.5,s1\n")
    raw = yaml.safe_load(path.read_text())
    raw["events"][0]["csv"] = {"header": False, "columns": HEADER.strip().split(",")}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_dataset_config(path)
    (path.parent / "events.csv").write_text("e1,1,A,2024-01-02 10:00:00,2,2.5,s1,extra\n")
    with pytest.raises(
        SourceReadError, match=r"events\.csv: csv\.columns names 7 column\(s\) but the file's lines have 8"
    ):
        ingest_window(warehouse, cfg, cfg.data_start, cfg.end_exclusive)
    assert not warehouse.table_exists("raw_events")  # nothing written


def test_tab_separated_and_compressed_files_need_no_format_key(tmp_path, warehouse):
    """.tsv events and a gzipped .csv.gz catalogue: the format follows from the ending."""
    import gzip

    path = write_dataset(tmp_path / "ds", "")
    folder = path.parent
    (folder / "events.tsv").write_text(HEADER.replace(",", "\t") + "e1\t1\tA\t2024-01-02 10:00:00\t2\t2.5\ts1\n")
    (folder / "items.csv.gz").write_bytes(gzip.compress((folder / "items.csv").read_bytes()))
    raw = yaml.safe_load(path.read_text())
    raw["events"][0]["path"], raw["items"][0]["path"] = "events.tsv", "items.csv.gz"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_dataset_config(path)
    assert (cfg.events[0].format, cfg.items[0].format) == ("csv", "csv")
    report = ingest_window(warehouse, cfg, cfg.data_start, cfg.end_exclusive)
    assert report.rows_loaded == 1
    build_product_catalog(warehouse, cfg)
    assert warehouse.fetch_df("SELECT count(*) AS n FROM product_catalog")["n"].iloc[0] == 3


def test_unattributable_rows_go_to_first_day(tmp_path, warehouse):
    csv = HEADER + "e1,1,A,garbage,1,1,s\ne2,1,A,2024-01-09 10:00:00,1,1,s\n"
    cfg = load_dataset_config(write_dataset(tmp_path / "ds", csv))
    ingest_window(warehouse, cfg, D(2024, 1, 9), D(2024, 1, 10))
    assert len(_quarantine(warehouse)) == 0
    ingest_window(warehouse, cfg, D(2024, 1, 1), D(2024, 1, 2))
    q = _quarantine(warehouse)
    assert q["partition_date"].dt.date.tolist() == [D(2024, 1, 1)]


def test_duplicate_event_ids_are_kept_once(tmp_path, warehouse):
    csv = HEADER + (
        "e1,1,A,2024-01-02 10:00:00,1,1,s\ne2,1,B,2024-01-02 11:00:00,1,1,s\ne1,1,A,2024-01-07 10:00:00,1,1,s\n"
    )
    cfg, report = _ingest(tmp_path, warehouse, csv)
    ev = warehouse.fetch_df("SELECT event_id, event_date FROM raw_events ORDER BY event_id")
    assert ev["event_id"].tolist() == ["e1", "e2"]
    assert ev["event_date"].dt.date.tolist()[0] == D(2024, 1, 2)  # the first occurrence wins
    q = _quarantine(warehouse)
    assert q["source_row"].tolist() == [4]
    assert "duplicate event_id e1 (first seen at events.csv:2)" in q["reason"].iloc[0]
    _assert_balanced(warehouse, cfg, report, 3)


def test_generated_event_ids_keep_identical_rows(tmp_path, warehouse):
    row = "x,1,A,2024-01-02 10:00:00,1,1,s\n"
    cfg, report = _ingest(tmp_path, warehouse, HEADER + row + row, event_id=False)
    ev = warehouse.fetch_df("SELECT event_id FROM raw_events ORDER BY event_id")
    assert ev["event_id"].tolist() == ["purchase:events.csv:2", "purchase:events.csv:3"]


def test_non_utf8_line_is_quarantined_with_its_line(tmp_path, warehouse):
    csv = (
        (HEADER + "e1,1,A,2024-01-02 10:00:00,1,1,s\n").encode()
        + b"e2,1,\xff\xfeB,2024-01-02 10:00:00,1,1,s\n"
        + (b"e3,2,C,2024-01-03 10:00:00,1,1,s\n")
    )
    cfg, report = _ingest(tmp_path, warehouse, csv)
    q = _quarantine(warehouse)
    assert q["source_row"].tolist() == [3]
    assert "unreadable record" in q["reason"].iloc[0] and "INVALID ENCODING" in q["reason"].iloc[0]
    ev = warehouse.fetch_df("SELECT event_id, source_row FROM raw_events ORDER BY event_id")
    assert ev.values.tolist() == [["e1", 2], ["e3", 4]]  # line numbers survive the rejected line
    _assert_balanced(warehouse, cfg, report, 3)


def test_extra_columns_are_ignored_and_reported(tmp_path, warehouse):
    csv = "event_id,client,item,ts,qty,amount,shop,colour\ne1,1,A,2024-01-02 10:00:00,1,1,s,red\n"
    cfg, report = _ingest(tmp_path, warehouse, csv)
    assert report.sources[0].ignored_columns == ["colour"]
    assert "colour" not in warehouse.fetch_df("SELECT * FROM raw_events").columns


def test_empty_day_writes_nothing_and_balances(tmp_path, warehouse):
    csv = HEADER + "e1,1,A,2024-01-02 10:00:00,1,1,s\n"
    cfg = load_dataset_config(write_dataset(tmp_path / "ds", csv))
    report = ingest_window(warehouse, cfg, D(2024, 1, 15), D(2024, 1, 16))
    assert report.rows_in == report.rows_loaded == report.rows_quarantined == 0
    q = ingest_quality(warehouse, D(2024, 1, 15), D(2024, 1, 16))
    assert q.balanced and q.rows_loaded == 0


def test_missing_required_column_fails_and_writes_nothing(tmp_path, warehouse):
    good = HEADER + "e1,1,A,2024-01-02 10:00:00,1,1,s\n"
    cfg_path = write_dataset(tmp_path / "ds", good)
    cfg = load_dataset_config(cfg_path)
    ingest_window(warehouse, cfg, cfg.data_start, cfg.end_exclusive)
    before = warehouse.fetch_df("SELECT * FROM raw_events")
    # The file changes after the config was validated: the item column disappears.
    (tmp_path / "ds" / "events.csv").write_text("event_id,client,ts,qty,amount,shop\ne9,1,2024-01-02 10:00:00,1,1,s\n")
    with pytest.raises(SourceReadError) as err:
        ingest_window(warehouse, cfg, cfg.data_start, cfg.end_exclusive)
    assert "events.csv" in str(err.value) and "'item'" in str(err.value)
    pd.testing.assert_frame_equal(warehouse.fetch_df("SELECT * FROM raw_events"), before)


def test_rematerializing_a_day_replaces_it(tmp_path, warehouse):
    csv = HEADER + "e1,1,A,2024-01-02 10:00:00,1,1,s\ne2,2,B,2024-01-03 10:00:00,1,1,s\ne3,2,Q,bad,1,1,s\n"
    cfg = load_dataset_config(write_dataset(tmp_path / "ds", csv))
    for _ in range(2):
        ingest_window(warehouse, cfg, D(2024, 1, 1), D(2024, 1, 4))
        ingest_window(warehouse, cfg, D(2024, 1, 2), D(2024, 1, 3))
    ev = warehouse.fetch_df("SELECT event_id FROM raw_events ORDER BY 1")
    assert ev["event_id"].tolist() == ["e1", "e2"]
    assert len(_quarantine(warehouse)) == 1
    log = warehouse.fetch_df("SELECT sum(rows_in) AS n FROM raw_events_ingest_log")
    assert log["n"].iloc[0] == 3


def test_sample_backfill_equals_day_by_day(tmp_path, sample_config):
    from bm_assets.core.warehouse import DuckDBWarehouse

    a, b = DuckDBWarehouse(str(tmp_path / "a.duckdb")), DuckDBWarehouse(str(tmp_path / "b.duckdb"))
    start = D(2017, 3, 1)
    ingest_window(a, sample_config, start, D(2017, 4, 1))
    for i in range(31):
        day = start + dt.timedelta(days=i)
        ingest_window(b, sample_config, day, day + dt.timedelta(days=1))
    q = "SELECT * FROM raw_events ORDER BY event_id"
    left, right = a.fetch_df(q), b.fetch_df(q)
    assert len(left) > 10_000
    pd.testing.assert_frame_equal(left, right)


def test_hostile_and_reserved_column_names_are_just_names(tmp_path, warehouse):
    """A header that would end the CREATE TABLE and drop a table, SQL keywords and a space go
    through ingest, attributes, the join and the graph as ordinary column names."""
    cfg = hostile_names_dataset(tmp_path / "ds")
    assert HOSTILE in cfg.representation.graph.columns  # a categorical context column: a graph column
    report, graph = ingest_join_and_graph(warehouse, cfg)

    assert report.rows_loaded == 2 and report.rows_quarantined == 0
    tables = set(warehouse.fetch_df("SELECT table_name FROM information_schema.tables")["table_name"])
    assert {"raw_events", "client_properties", "product_catalog", "events_denormalized"} <= tables
    ev = warehouse.fetch_df("SELECT * FROM events_denormalized ORDER BY client_id")
    assert ev[HOSTILE].tolist() == ["x1", "x2"]
    assert ev["order"].tolist() == ["o1", "o2"] and ev["store id"].tolist() == ["s1", "s2"]
    assert ev["from"].tolist() == ["x", "y"] and ev["select"].tolist() == ["b1", "b2"]
    assert graph.nodes[HOSTILE] == 2
