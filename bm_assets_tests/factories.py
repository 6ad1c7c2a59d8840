"""Builders of small, hand-written datasets for tests: CSV event files plus their YAML."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml

from bm_assets.config import DatasetConfig, load_dataset_config
from bm_assets.core.attributes import build_client_properties, build_product_catalog
from bm_assets.core.denormalize import denormalize_window
from bm_assets.core.graph import GraphBuild, build_temporal_graph
from bm_assets.core.ingest import IngestReport, ingest_window
from bm_assets.core.warehouse import Warehouse

HEADER = "event_id,client,item,ts,qty,amount,shop\n"


def write_dataset(
    folder: Path,
    events_csv: bytes | str,
    *,
    event_id: bool = True,
    items_csv: str = "sku,brand\nA,b1\nB,b2\nC,b1\n",
    clients_csv: str = "cid,segment\n1,x\n2,y\n",
    data_start: str = "2024-01-01",
    data_end: str = "2024-01-31",
    timestamp_format: str | None = "%Y-%m-%d %H:%M:%S",
    timestamp_unit: str | None = None,
) -> Path:
    """Write events.csv, items.csv, clients.csv and dataset.yaml into `folder`; return the YAML."""
    folder.mkdir(parents=True, exist_ok=True)
    data = events_csv.encode() if isinstance(events_csv, str) else events_csv
    (folder / "events.csv").write_bytes(data)
    (folder / "items.csv").write_text(items_csv)
    (folder / "clients.csv").write_text(clients_csv)
    source = {
        "name": "purchase",
        "path": "events.csv",
        "client_id": "client",
        "item_id": "item",
        "timestamp": {"column": "ts", "unit": timestamp_unit}
        if timestamp_unit
        else {"column": "ts", **({"format": timestamp_format} if timestamp_format else {})},
        "quantity": "qty",
        "value": "amount",
        "context": {"shop": "categorical"},
    }
    if event_id:
        source["event_id"] = "event_id"
    cfg = {
        "name": "test",
        "data_start": data_start,
        "data_end": data_end,
        "temporal": {"training_cutoff": "2024-01-20", "test_start": "2024-01-25", "test_end": "2024-02-01"},
        "events": [source],
        "clients": [{"name": "clients", "path": "clients.csv", "key": "cid", "columns": {"segment": "categorical"}}],
        "items": [{"name": "items", "path": "items.csv", "key": "sku", "columns": {"brand": "categorical"}}],
    }
    path = folder / "dataset.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


#: Events whose basket column (shop) is filled on one order only (client 1's t9, lines 3-4), as
#: a transaction id on purchases and none on views; client 2's line shares client 1's last time.
PARTIAL_BASKETS_CSV = HEADER + (
    "e1,1,A,2024-01-02 10:00:00,1,1,\n"
    "e2,1,B,2024-01-02 10:05:00,1,1,\n"
    "e3,1,A,2024-01-02 10:06:00,1,1,t9\n"
    "e4,1,B,2024-01-02 10:06:00,1,1,t9\n"
    "e5,1,C,2024-01-03 11:00:00,1,1,\n"
    "e6,2,C,2024-01-03 11:00:00,1,1,\n"
)


def write_partial_basket_dataset(folder: Path, rule: str) -> Path:
    """PARTIAL_BASKETS_CSV with `basket_id: shop` and the dataset's `baskets` rule."""
    path = write_dataset(folder, PARTIAL_BASKETS_CSV)
    raw = yaml.safe_load(path.read_text())
    raw["events"][0]["basket_id"] = "shop"
    raw["baskets"] = rule
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def unix_time_csv(unit: str) -> str:
    """Events whose ts is Unix time in `unit`: two valid (one with a fraction of the unit), then
    text, a number past year 9999 and one before the configured range."""
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000}[unit]
    at = int(dt.datetime(2024, 1, 2, 10, 0, 0, tzinfo=dt.UTC).timestamp()) * per_second
    late = int(dt.datetime(2024, 1, 30, 23, 59, 59, tzinfo=dt.UTC).timestamp()) * per_second
    early = int(dt.datetime(2023, 12, 31, 23, 0, 0, tzinfo=dt.UTC).timestamp()) * per_second
    return HEADER + (
        f"e1,1,A,{at},1,1,s\ne2,2,B,{late}.5,1,1,s\ne3,1,A,tomorrow,1,1,s\ne4,1,A,1e30,1,1,s\ne5,1,A,{early},1,1,s\n"
    )


HOSTILE = "a VARCHAR); DROP TABLE client_properties; --"


def hostile_names_dataset(folder: Path, context_name: str = HOSTILE) -> DatasetConfig:
    """A dataset whose context columns are `context_name`, `order` and `store id`, with a client
    attribute `from` and an item attribute `select` (also used by the BigQuery variant)."""
    quoted = '"' + context_name.replace('"', '""') + '"'
    csv = (
        f"client,item,ts,{quoted},order,store id\n1,A,2024-01-02 10:00:00,x1,o1,s1\n2,B,2024-01-03 10:00:00,x2,o2,s2\n"
    )
    path = write_dataset(
        folder, csv, event_id=False, items_csv='sku,"select"\nA,b1\nB,b2\n', clients_csv='cid,"from"\n1,x\n2,y\n'
    )
    cfg = yaml.safe_load(path.read_text())
    source = cfg["events"][0]
    del source["quantity"], source["value"]
    source["context"] = {context_name: "categorical", "order": "categorical", "store id": "categorical"}
    cfg["clients"][0]["columns"] = {"from": "categorical"}
    cfg["items"][0]["columns"] = {"select": "categorical"}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return load_dataset_config(path)


def ingest_join_and_graph(wh: Warehouse, cfg: DatasetConfig) -> tuple[IngestReport, GraphBuild]:
    """ingest -> attributes -> events_denormalized -> temporal_graph over the whole range."""
    report = ingest_window(wh, cfg, cfg.data_start, cfg.end_exclusive)
    build_client_properties(wh, cfg)
    build_product_catalog(wh, cfg)
    denormalize_window(wh, cfg.data_start, cfg.end_exclusive, covers_all_days=True)
    return report, build_temporal_graph(
        wh, cfg.representation.graph, cfg.data_start, cfg.temporal.training_cutoff, cfg.list_columns()
    )


#: Review events as JSON lines: a nested value, an invalid line, a blank line, an array line,
#: a null client. Lines 1, 2 and 6 load; 3, 5 and 7 are quarantined; 4 is no record.
REVIEWS_JSONL = (
    '{"reviewerID": "A1", "asin": "B0", "overall": 5.0, "unixReviewTime": 1400000000, '
    '"style": {"Format:": " Kindle"}, "summary": "great, \\"really\\""}\n'
    '{"reviewerID": "A2", "asin": "B1", "overall": 4.0, "unixReviewTime": 1400086400}\n'
    "not json\n"
    "\n"
    "[1, 2]\n"
    '{"reviewerID": "A3", "asin": "B1", "overall": 3, "unixReviewTime": 1400172800, "vote": "2"}\n'
    '{"reviewerID": null, "asin": "B2", "overall": 1, "unixReviewTime": 1400172800}\n'
)
META_JSONL = (
    '{"asin": "B0", "brand": "Acme", "category": ["Books", "Kindle"]}\n'
    '{"asin": "B1", "brand": "Zed", "category": ["Books"]}\n'
    '{"asin": "B2", "brand": "Acme"}\n'
)


def write_json_lines_dataset(folder: Path) -> Path:
    """reviews.jsonl (REVIEWS_JSONL), meta.jsonl and a dataset.yaml with no `format:` key."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reviews.jsonl").write_text(REVIEWS_JSONL)
    (folder / "meta.jsonl").write_text(META_JSONL)
    cfg = {
        "name": "reviews",
        "data_start": "2014-05-01",
        "data_end": "2014-06-30",
        "temporal": {"training_cutoff": "2014-06-01", "test_start": "2014-06-10", "test_end": "2014-07-01"},
        "events": [
            {
                "name": "reviews",
                "path": "reviews.jsonl",
                "client_id": "reviewerID",
                "item_id": "asin",
                "timestamp": {"column": "unixReviewTime", "unit": "s"},
                "context": {"overall": "numeric", "style": "categorical"},
            }
        ],
        "items": [{"name": "meta", "path": "meta.jsonl", "key": "asin", "columns": {"brand": "categorical"}}],
    }
    path = folder / "dataset.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


#: Order lines whose client and time are on the order, and whose person is on the customer
#: (an Olist-like layout): line 4's order o9 is in no order row, order o3's customer c9 is in no
#: customer row; orders o1 and o4 belong to one person (p1) under two customer ids.
ORDER_LINES_CSV = "order_id,line,product,price\no1,1,A,10.5\no1,2,B,3\no2,1,C,7\no9,1,A,1\no3,1,B,2\no4,1,C,4\n"
ORDERS_CSV = (
    "order_id,customer_id,purchased_at\n"
    "o1,c1,2024-01-02 10:00:00\no2,c2,2024-01-05 09:30:00\no3,c9,2024-01-06 12:00:00\no4,c4,2024-01-21 08:00:00\n"
)
CUSTOMERS_CSV = "customer_id,person,state\nc1,p1,SP\nc2,p2,RJ\nc4,p1,SP\n"


def write_order_lines_dataset(folder: Path) -> Path:
    """order_lines.csv joined to orders.csv (by order_id), then to customers.csv (by customer_id)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "order_lines.csv").write_text(ORDER_LINES_CSV)
    (folder / "orders.csv").write_text(ORDERS_CSV)
    (folder / "customers.csv").write_text(CUSTOMERS_CSV)
    cfg = {
        "name": "orders",
        "data_start": "2024-01-01",
        "data_end": "2024-01-31",
        "temporal": {"training_cutoff": "2024-01-20", "test_start": "2024-01-25", "test_end": "2024-02-01"},
        "events": [
            {
                "name": "order_lines",
                "path": "order_lines.csv",
                "join": [
                    {"path": "orders.csv", "key": "order_id"},
                    {"path": "customers.csv", "key": "customer_id"},
                ],
                "client_id": "person",
                "item_id": "product",
                "timestamp": {"column": "purchased_at"},
                "basket_id": "order_id",
                "value": "price",
                "context": {"state": "categorical"},
            }
        ],
    }
    path = folder / "dataset.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
