"""client_properties / product_catalog and the denormalized join."""

import datetime as dt

import pytest

from bm_assets.config import load_dataset_config
from bm_assets.core.attributes import AttributeDataError, build_client_properties, build_product_catalog
from bm_assets.core.denormalize import SchemaDriftError, denormalize_window
from bm_assets.core.ingest import ingest_window
from bm_assets_tests.factories import HEADER, write_dataset

EVENTS = HEADER + "e1,1,A,2024-01-02 10:00:00,1,1,s\ne2,3,ZZ,2024-01-02 11:00:00,1,1,s\n"


def _cfg(tmp_path, **kw):
    return load_dataset_config(write_dataset(tmp_path / "ds", EVENTS, **kw))


@pytest.mark.parametrize(
    ("items_csv", "message"),
    [
        ("sku,brand\nA,b1\nB,b2\nA,b3\n", r"items\.csv: rows \[2, 4\]: key 'A' in column 'sku' appears more than once"),
        ("sku,brand\nA,b1\n,b2\n", r"items\.csv: row 3: missing key in column 'sku'"),
    ],
)
def test_bad_item_table_fails_naming_file_row_and_column(tmp_path, warehouse, items_csv, message):
    cfg = _cfg(tmp_path, items_csv=items_csv)
    with pytest.raises(AttributeDataError, match=message):
        build_product_catalog(warehouse, cfg)
    assert not warehouse.table_exists("product_catalog")


def test_item_table_without_header(tmp_path, warehouse):
    """A catalogue exported without a header line: columns named in csv.columns; an error names
    the file line (no header: the first row is line 1)."""
    import yaml

    path = write_dataset(tmp_path / "ds", HEADER, items_csv="A;b1\nB;b2\nC;b1\n")
    raw = yaml.safe_load(path.read_text())
    raw["items"][0]["csv"] = {"header": False, "columns": ["sku", "brand"], "delimiter": ";"}
    path.write_text(yaml.safe_dump(raw))
    build_product_catalog(warehouse, load_dataset_config(path))
    catalog = warehouse.fetch_df("SELECT item_id, brand FROM product_catalog ORDER BY item_id")
    assert catalog.values.tolist() == [["A", "b1"], ["B", "b2"], ["C", "b1"]]
    (tmp_path / "ds" / "items.csv").write_text("A;b1\nB;b2\nA;b3\n")
    with pytest.raises(AttributeDataError, match=r"items\.csv: rows \[1, 3\]: key 'A' in column 'sku'"):
        build_product_catalog(warehouse, load_dataset_config(path))


def test_non_numeric_value_in_numeric_column(tmp_path, warehouse):
    cfg = _cfg(tmp_path, clients_csv="cid,segment\n1,x\n2,y\n")
    import yaml

    path = cfg.config_file
    raw = yaml.safe_load(path.read_text())
    raw["clients"][0]["columns"] = {"segment": "numeric"}
    path.write_text(yaml.safe_dump(raw))
    cfg = load_dataset_config(path)
    with pytest.raises(AttributeDataError, match=r"clients\.csv: row 2: column 'segment' is numeric but holds 'x'"):
        build_client_properties(warehouse, cfg)


def test_denormalized_join_on_sample(sample_config, warehouse):
    start, end = dt.date(2017, 2, 1), dt.date(2017, 2, 15)
    ingest_window(warehouse, sample_config, start, end)
    build_client_properties(warehouse, sample_config)
    build_product_catalog(warehouse, sample_config)
    n = denormalize_window(warehouse, start, end)
    raw = warehouse.fetch_df("SELECT count(*) AS n FROM raw_events")["n"].iloc[0]
    assert n == raw > 5000  # a left join: every event once
    df = warehouse.fetch_df("SELECT * FROM events_denormalized")
    purchases = df[df["source"] == "purchase"]
    assert purchases["item_in_catalog"].mean() > 0.99  # a few real product ids have no catalog row
    product = warehouse.fetch_df(
        f"SELECT item_id, brand, department FROM product_catalog WHERE item_id = '{purchases['item_id'].iloc[0]}'"
    )
    assert purchases["brand"].iloc[0] == product["brand"].iloc[0]
    coupons = df[df["source"] == "coupon_redemption"]
    assert len(coupons) and coupons["item_id"].str.startswith("coupon:").all()
    assert coupons["item_in_catalog"].all() and coupons["coupons_campaign_id"].notna().all()
    with_demo = df[df["age"].notna()]
    assert 0 < len(with_demo) < len(df) and df["client_in_properties"].mean() > 0.5


def test_denormalized_refuses_partial_rebuild_when_attributes_change(tmp_path, warehouse):
    cfg = _cfg(tmp_path)
    ingest_window(warehouse, cfg, cfg.data_start, cfg.end_exclusive)
    build_client_properties(warehouse, cfg)
    build_product_catalog(warehouse, cfg)
    day = dt.date(2024, 1, 2)
    assert denormalize_window(warehouse, day, day + dt.timedelta(days=1)) == 2
    warehouse.execute(["ALTER TABLE product_catalog ADD COLUMN colour VARCHAR"])
    with pytest.raises(SchemaDriftError, match="backfill the whole partition range"):
        denormalize_window(warehouse, day, day + dt.timedelta(days=1))
    assert denormalize_window(warehouse, cfg.data_start, cfg.end_exclusive, covers_all_days=True) == 2
    assert "colour" in warehouse.fetch_df("SELECT * FROM events_denormalized LIMIT 0").columns


def test_failed_transaction_leaves_table_intact(warehouse):
    warehouse.execute(["CREATE TABLE t AS SELECT 1 AS x"])
    with pytest.raises(Exception, match="no_such_table"):
        warehouse.execute(["DELETE FROM t", "INSERT INTO t SELECT * FROM no_such_table"])
    assert warehouse.fetch_df("SELECT x FROM t")["x"].tolist() == [1]
