"""Bring your own data by YAML alone: derived values, optional baskets and items, attributes taken
from event lines, defaults from the data (not from Complete Journey), user SQL under an
allow-list, and config errors that name file and key at load."""

import datetime as dt
import time

import pytest
import yaml

from bm_assets.cli import main
from bm_assets.config import DatasetConfigError, GraphConfig, load_dataset_config
from bm_assets.core.attributes import build_client_properties, build_product_catalog
from bm_assets.core.denormalize import denormalize_window
from bm_assets.core.features import aggregate_features_sql
from bm_assets.core.graph import build_temporal_graph
from bm_assets.core.ingest import ingest_window
from bm_assets.core.quality import ingest_quality
from bm_assets.core.sql import UnsafeExpressionError, parse_expression
from bm_assets.core.tasks import (
    EvaluationConfig,
    TaskConfigError,
    check_modeling_columns,
    feature_columns,
    load_modeling_config,
)
from bm_assets.core.warehouse import SourceReadError
from bm_assets_tests.factories import (
    write_json_lines_dataset,
    write_order_lines_dataset,
    write_partial_basket_dataset,
)

INVOICES = """InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
536365,85123A,WHITE HANGING HEART,6,12/1/2010 8:26,2.55,17850,United Kingdom
536365,71053,WHITE METAL LANTERN,6,12/1/2010 8:26,3.39,17850,United Kingdom
536366,22633,HAND WARMER UNION JACK,6,12/1/2010 8:28,1.85,17850,France
C536379,D,Discount,-1,12/1/2010 9:41,27.50,14527,United Kingdom
536381,22139,RETROSPOT TEA SET,4,12/2/2010 9:41,4.95,,Germany
536382,22139,RETROSPOT TEA SET,x,12/2/2010 9:45,4.95,13047,United Kingdom
536383,22633,HAND WARMER UNION JACK,2,12/3/2010 10:00,1.85,13047,United Kingdom
""" + "".join(f"5370{i:02d},22633,HAND WARMER UNION JACK,1,12/28/2010 10:00,1.85,1{i:04d},Spain\n" for i in range(100))


def _invoice_source(**over) -> dict:
    src = {
        "name": "invoice_lines",
        "path": "invoices.csv",
        "client_id": "CustomerID",
        "item_id": "StockCode",
        "timestamp": {"column": "InvoiceDate", "format": "%m/%d/%Y %H:%M"},
        "quantity": {"expr": "abs(Quantity)"},
        "value": {"expr": "abs(Quantity) * UnitPrice"},
        "event_type": {"expr": "CASE WHEN InvoiceNo LIKE 'C%' THEN 'cancellation' ELSE 'purchase' END"},
        "basket_id": "InvoiceNo",
    }
    src.update(over)
    return src


def _write(folder, source: dict, **top) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "invoices.csv").write_text(INVOICES)
    cfg = {
        "name": "invoices",
        "data_start": "2010-12-01",
        "data_end": "2010-12-31",
        "temporal": {"training_cutoff": "2010-12-10", "test_start": "2010-12-20", "test_end": "2011-01-01"},
        "events": [source],
        **top,
    }
    path = folder / "dataset.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def _ingest(warehouse, cfg):
    report = ingest_window(warehouse, cfg, cfg.data_start, cfg.end_exclusive)
    build_client_properties(warehouse, cfg)
    build_product_catalog(warehouse, cfg)
    denormalize_window(warehouse, cfg.data_start, cfg.end_exclusive, covers_all_days=True)
    return report


def test_derived_value_type_and_basket_from_expressions(tmp_path, warehouse):
    cfg = load_dataset_config(_write(tmp_path, _invoice_source()))
    report = _ingest(warehouse, cfg)
    assert report.rows_in == 107 and report.rows_loaded == 105 and report.rows_quarantined == 2
    ev = warehouse.fetch_df("SELECT * FROM raw_events WHERE event_date < DATE '2010-12-28' ORDER BY source_row")
    assert ev["value"].round(2).tolist() == [15.3, 20.34, 11.1, 27.5, 3.7]
    assert ev["quantity"].tolist() == [6, 6, 6, 1, 2]
    assert ev["event_type"].tolist() == ["purchase"] * 3 + ["cancellation", "purchase"]
    assert ev["basket_id"].tolist()[:2] == ["536365", "536365"]
    q = warehouse.fetch_df("SELECT column_name, reason FROM raw_events_quarantine ORDER BY source_row")
    assert q["reason"].tolist() == [
        "missing client id in column CustomerID",
        "non-numeric quantity in expression abs(Quantity); non-numeric value in expression abs(Quantity) * UnitPrice",
    ]
    assert q["column_name"].tolist() == ["CustomerID", "Quantity"]


def test_baskets_default_to_one_timestamp_or_one_day(tmp_path, warehouse):
    source = _invoice_source(basket_id=None)
    del source["basket_id"]
    cfg = load_dataset_config(_write(tmp_path / "ts", source))
    _ingest(warehouse, cfg)
    baskets = warehouse.fetch_df("SELECT DISTINCT basket_id FROM raw_events WHERE client_id = '17850' ORDER BY 1")
    assert baskets["basket_id"].tolist() == ["17850@2010-12-01 08:26:00", "17850@2010-12-01 08:28:00"]
    cfg_day = load_dataset_config(_write(tmp_path / "day", source, baskets="day"))
    _ingest(warehouse, cfg_day)
    baskets = warehouse.fetch_df("SELECT DISTINCT basket_id FROM raw_events WHERE client_id = '17850'")
    assert baskets["basket_id"].tolist() == ["17850@2010-12-01"]
    # the GBDT aggregates read the canonical basket column, whatever the source had
    sql = aggregate_features_sql(warehouse, [dt.date(2010, 12, 5)], EvaluationConfig(feature_windows_days=[7]), {})
    feats = warehouse.fetch_df(sql + " ORDER BY client_id")
    assert feats.set_index("client_id").loc["17850", "baskets_7d"] == 1


@pytest.mark.parametrize(
    ("rule", "baskets_of_1"),
    [
        ("timestamp", ["1@2024-01-02 10:00:00", "1@2024-01-02 10:05:00", "1@2024-01-03 11:00:00", "t9"]),
        ("day", ["1@2024-01-02", "1@2024-01-03", "t9"]),
    ],
)
def test_a_basket_column_filled_on_some_rows_falls_back_to_the_rule_row_by_row(tmp_path, warehouse, rule, baskets_of_1):
    """A transaction id on purchases only (views have none): the rows without one take the
    dataset's `baskets` rule, so every reader (graph, aggregates, visit block) counts one basket
    per event, never a NULL basket read three ways."""
    cfg = load_dataset_config(write_partial_basket_dataset(tmp_path, rule))
    report = _ingest(warehouse, cfg)
    assert report.rows_in == report.rows_loaded == 6
    ev = warehouse.fetch_df("SELECT client_id, basket_id FROM raw_events")
    assert ev["basket_id"].notna().all()
    assert sorted(set(ev.loc[ev.client_id == "1", "basket_id"])) == baskets_of_1
    assert ev.loc[ev.client_id == "2", "basket_id"].tolist() == [
        "2@2024-01-03" if rule == "day" else "2@2024-01-03 11:00:00"
    ]
    sql = aggregate_features_sql(warehouse, [dt.date(2024, 1, 5)], EvaluationConfig(feature_windows_days=[7]), {})
    feats = warehouse.fetch_df(sql).set_index("client_id")
    assert feats.loc["1", "baskets_7d"] == len(baskets_of_1)
    # the graph's basket hyperedges: the given one and one per rule basket
    graph = build_temporal_graph(warehouse, GraphConfig(columns=["item_id"]), cfg.data_start, dt.date(2024, 1, 5))
    assert graph.edges["basket"] == len(baskets_of_1) + 1


def test_no_item_ids_and_attributes_from_event_lines(tmp_path, warehouse):
    source = _invoice_source(context={"Country": "categorical"})
    del source["item_id"]
    path = _write(
        tmp_path,
        source,
        clients=[
            {"name": "country", "from_events": "invoice_lines", "columns": {"Country": "categorical"}},
        ],
    )
    with pytest.raises(DatasetConfigError, match=r"clients\[0\].columns.Country collides"):
        load_dataset_config(path)  # the same name as an event column must be told apart
    source["context"] = {}
    cfg = load_dataset_config(
        _write(
            tmp_path,
            source,
            clients=[
                {"name": "country", "from_events": "invoice_lines", "columns": {"Country": "categorical"}},
            ],
        )
    )
    assert not cfg.has_items
    # defaults from the data: no item column, no attributes of items -> the categorical client
    # attributes are not graph nodes; event_type is the column every dataset has
    assert cfg.representation.graph.columns == ["event_type"]
    assert cfg.representation.inductive is None
    report = _ingest(warehouse, cfg)
    assert "Country" not in report.sources[0].ignored_columns  # read by the client attributes
    assert "StockCode" in report.sources[0].ignored_columns
    q = ingest_quality(warehouse, cfg.data_start, cfg.end_exclusive, [])
    assert q.null_keys == 0 and q.rows_loaded == 105
    props = warehouse.fetch_df("SELECT * FROM client_properties WHERE client_id NOT LIKE '100__' ORDER BY client_id")
    # 17850 bought twice in the United Kingdom and once in France: the most frequent wins;
    # the line without a customer id is skipped (and counted), not fatal
    assert props.set_index("client_id")["Country"].to_dict() == {
        "13047": "United Kingdom",
        "14527": "United Kingdom",
        "17850": "United Kingdom",
    }
    assert build_client_properties(warehouse, cfg).skipped_rows == {"country": 1}
    ev = warehouse.fetch_df("SELECT item_id, Country FROM events_denormalized")
    assert ev["item_id"].isna().all() and set(ev["Country"]) == {"United Kingdom", "Spain"}


def test_graph_defaults_come_from_the_declared_columns(tmp_path):
    (tmp_path / "items.csv").write_text("StockCode,family,label\n85123A,deco,x\n")
    path = _write(
        tmp_path,
        _invoice_source(context={"Country": "categorical"}),
        items=[
            {
                "name": "families",
                "path": "items.csv",
                "key": "StockCode",
                "columns": {"family": "categorical", "label": "text"},
            },
        ],
    )
    cfg = load_dataset_config(path)
    assert cfg.representation.graph.columns == ["item_id", "family", "Country"]
    assert cfg.representation.inductive.attributes == ["family"]


@pytest.mark.parametrize(
    ("role", "text", "match"),
    [
        ("value", "1; DROP TABLE client_properties", "statements"),
        ("value", "(SELECT max(x) FROM client_properties)", "not allowed"),
        ("client_id", "read_csv('/etc/passwd')", "function read_csv"),
        ("value", "sum(Quantity)", "aggregate"),
        ("value", "Quantity * Price", "names column 'Price'"),
    ],
)
def test_hostile_or_wrong_expressions_are_refused_at_load(tmp_path, role, text, match):
    path = _write(tmp_path, _invoice_source(**{role: {"expr": text}}))
    with pytest.raises(DatasetConfigError, match=match) as info:
        load_dataset_config(path)
    message = str(info.value)
    assert str(path) in message and (f"events.0.{role}" in message or f"events[0] (invoice_lines).{role}" in message)


TASKS = """
tasks:
  - name: churn
    type: binary
    horizon_days: 7
    target: {value: "count(*) = 0", default: 1}
"""


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ("target: {value: \"1 FROM events_denormalized; COPY (SELECT 1) TO 'pwn.csv'\", default: 1}", "statements"),
        (
            "target: {value: \"count(*) FILTER (WHERE read_csv('/etc/passwd') IS NULL)\", default: 1}",
            "function read_csv",
        ),
        ("target: {value: \"count(*) FILTER (WHERE Country = 'France')\", default: 1}", "reads column 'Country'"),
    ],
)
def test_task_sql_is_checked_at_load_with_file_and_key(tmp_path, patch, match):
    cfg = load_dataset_config(_write(tmp_path, _invoice_source()))
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(TASKS.replace('target: {value: "count(*) = 0", default: 1}', patch))
    with pytest.raises(TaskConfigError, match=match) as info:
        check_modeling_columns(load_modeling_config(tasks), cfg)
    assert str(tasks) in str(info.value) and "tasks[0] (churn).target.value" in str(info.value)


def test_feature_columns_default_to_what_the_tasks_target(tmp_path):
    cfg = load_dataset_config(_write(tmp_path, _invoice_source(context={"Country": "categorical"})))
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(TASKS)
    assert feature_columns(load_modeling_config(tasks), cfg) == ["Country"]
    tasks.write_text(
        TASKS + "  - {name: where, type: multilabel, horizon_days: 7, target: {column: Country, top_n: 2}}\n"
    )
    assert feature_columns(load_modeling_config(tasks), cfg) == ["Country"]
    tasks.write_text("evaluation: {feature_columns: [manufacturer_id]}\n" + TASKS)
    with pytest.raises(TaskConfigError, match="evaluation.feature_columns: 'manufacturer_id'"):
        check_modeling_columns(load_modeling_config(tasks), cfg)


def test_allow_list_accepts_the_bundled_task_sql():
    for text in (
        "count(*) FILTER (WHERE event_type = 'purchase') = 0",
        "coalesce(sum(value) FILTER (WHERE event_type = 'purchase'), 0)",
        "date_diff('day', event_time, event_time) < 3 AND CAST(value AS DOUBLE) > 0",
    ):
        parse_expression(text, "t", ["event_type", "value", "event_time"])
    with pytest.raises(UnsafeExpressionError):
        parse_expression("value FROM events_denormalized", "t")
    with pytest.raises(UnsafeExpressionError, match="2 statements"):
        parse_expression("1 FROM events_denormalized; COPY (SELECT 1) TO 'x.csv'", "t")


def test_config_error_is_one_line_fast_and_names_the_key(tmp_path, monkeypatch, capsys):
    path = _write(tmp_path, _invoice_source(value={"expr": "Quantity * Price"}))
    monkeypatch.setenv("BM_DATASET", path)
    start = time.perf_counter()
    assert main(["run"]) == 2
    assert time.perf_counter() - start < 10
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert path in err and "events[0] (invoice_lines).value" in err and "'Price'" in err


def test_json_lines_events_and_items_load_with_their_line_numbers(tmp_path, warehouse):
    """JSON lines (review and metadata dumps): every value read as text, a nested value as its
    JSON text, each bad line quarantined with its file line, a blank line no record."""
    cfg = load_dataset_config(write_json_lines_dataset(tmp_path))
    assert (cfg.events[0].format, cfg.items[0].format) == ("json", "json")
    report = _ingest(warehouse, cfg)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined) == (6, 3, 3)
    ev = warehouse.fetch_df("SELECT * FROM raw_events ORDER BY source_row")
    assert ev["source_row"].tolist() == [1, 2, 6]
    assert ev["client_id"].tolist() == ["A1", "A2", "A3"] and ev["overall"].tolist() == [5.0, 4.0, 3.0]
    assert ev["style"].tolist()[0] == '{"Format:":" Kindle"}'
    assert ev["event_time"].tolist()[0] == dt.datetime(2014, 5, 13, 16, 53, 20)
    q = warehouse.fetch_df("SELECT source_row, reason FROM raw_events_quarantine ORDER BY source_row")
    assert q["source_row"].tolist() == [3, 5, 7]
    assert "invalid JSON" in q["reason"][0] and "not a JSON object" in q["reason"][1]
    assert q["reason"][2] == "missing client id in column reviewerID"
    catalog = warehouse.fetch_df("SELECT item_id, brand FROM product_catalog ORDER BY item_id")
    assert catalog.values.tolist() == [["B0", "Acme"], ["B1", "Zed"], ["B2", "Acme"]]


def test_order_lines_take_their_client_and_time_from_joined_tables(tmp_path, warehouse):
    """Order lines joined to their order (client id, time), then to the customer (the person):
    each line gets the person and the order's time; a line whose order or customer has no row is
    quarantined with the file it is missing from; rows in = loaded + quarantined."""
    cfg = load_dataset_config(write_order_lines_dataset(tmp_path))
    report = _ingest(warehouse, cfg)
    assert (report.rows_in, report.rows_loaded, report.rows_quarantined) == (6, 4, 2)
    ev = warehouse.fetch_df("SELECT * FROM raw_events ORDER BY source_row")
    assert ev["source_row"].tolist() == [2, 3, 4, 7]  # file lines
    assert ev["client_id"].tolist() == ["p1", "p1", "p2", "p1"]
    assert ev["item_id"].tolist() == ["A", "B", "C", "C"] and ev["value"].tolist() == [10.5, 3.0, 7.0, 4.0]
    assert ev["basket_id"].tolist() == ["o1", "o1", "o2", "o4"] and ev["state"].tolist() == ["SP", "SP", "RJ", "SP"]
    assert ev["event_time"].tolist()[2] == dt.datetime(2024, 1, 5, 9, 30)
    q = warehouse.fetch_df("SELECT source_row, column_name, reason FROM raw_events_quarantine ORDER BY source_row")
    assert q.values.tolist() == [
        [5, "order_id", f"no readable row with its order_id in {tmp_path / 'orders.csv'} (join)"],
        [6, "customer_id", f"no readable row with its customer_id in {tmp_path / 'customers.csv'} (join)"],
    ]
    # day by day (each file's span learned through the joins) equals the whole range
    by_day = type(warehouse)(str(tmp_path / "by_day.duckdb"))
    day = cfg.data_start
    while day < cfg.end_exclusive:
        ingest_window(by_day, cfg, day, day + dt.timedelta(days=1))
        day += dt.timedelta(days=1)
    columns = "source_row, client_id, item_id, event_time, basket_id, value"
    assert by_day.fetch_df(f"SELECT {columns} FROM raw_events ORDER BY 1").equals(
        warehouse.fetch_df(f"SELECT {columns} FROM raw_events ORDER BY 1")
    )
    assert by_day.fetch_df("SELECT count(*) AS n FROM raw_events_quarantine")["n"].iloc[0] == 2
    by_day.close()


def test_a_joined_table_needs_one_row_per_key_and_the_mapped_columns(tmp_path, warehouse, monkeypatch, capsys):
    path = write_order_lines_dataset(tmp_path)
    with open(tmp_path / "orders.csv", "a") as fh:
        fh.write("o2,c4,2024-01-07 09:00:00\n")
    cfg = load_dataset_config(path)
    with pytest.raises(SourceReadError, match=r"orders.csv: rows \[3, 6\]: key 'o2' in column 'order_id' appears more"):
        ingest_window(warehouse, cfg, cfg.data_start, cfg.end_exclusive)
    monkeypatch.setenv("BM_DATASET", str(path))
    assert main(["validate"]) == 1  # an error line naming the file and rows, not a traceback
    assert "ERROR: " + str(tmp_path / "orders.csv") + ": rows [3, 6]: key 'o2'" in capsys.readouterr().out
    raw = yaml.safe_load(path.read_text())
    raw["events"][0]["client_id"] = "buyer"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(
        DatasetConfigError, match=r"client_id names column 'buyer', which is not in .*order_lines.csv or"
    ):
        load_dataset_config(path)
    raw["events"][0]["client_id"] = "person"
    raw["events"][0]["join"][1].update({"key": "cust", "line_key": "customer_id"})
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(DatasetConfigError, match=r"join\[1\]: key column 'cust' is not in \S*customers.csv \(columns"):
        load_dataset_config(path)
    raw["events"][0]["join"][1].update({"key": "customer_id", "line_key": "client"})
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(DatasetConfigError, match=r"join\[1\]: key column 'client' is not in \S*order_lines.csv or"):
        load_dataset_config(path)


def test_a_json_array_file_is_refused_at_load(tmp_path):
    path = write_json_lines_dataset(tmp_path)
    (tmp_path / "reviews.jsonl").write_text('[{"reviewerID": "A1", "asin": "B0", "unixReviewTime": 1400000000}]\n')
    with pytest.raises(
        DatasetConfigError, match=r"events\[0\]\.path: .*reviews.jsonl: a JSON array; .*one JSON object per line"
    ):
        load_dataset_config(path)
    raw = yaml.safe_load(path.read_text())
    raw["events"][0]["csv"] = {"delimiter": ";"}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(DatasetConfigError, match="csv options apply to CSV files only \\(this one is json\\)"):
        load_dataset_config(path)
