"""The representation stages on BigQuery (an emulator): temporal_graph, entity_embeddings,
sketch_coders and behavioral_profiles materialized through Dagster give the same tables,
artifacts and profiles as on DuckDB, and every statement sent is BigQuery SQL (the emulator
has DuckDB inside and would accept DuckDB-only functions)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlglot
import yaml
from dagster import AssetCheckEvaluation, materialize
from sqlglot import exp

from bm_assets.assets.denormalize import build_denormalize_assets
from bm_assets.assets.ingest import build_ingest_assets
from bm_assets.assets.representations import build_representation_assets
from bm_assets.config import load_dataset_config
from bm_assets.core.embeddings import EMBEDDINGS_DIR, load_embeddings
from bm_assets.core.graph import cleora_input, graph_rows
from bm_assets.core.profiles import export_profiles, load_profiles
from bm_assets.core.sketches import coders_fingerprint, load_sketch_coders
from bm_assets.core.warehouse import Warehouse
from bm_assets.partitions import daily_partitions
from bm_assets.resources import ArtifactStore, DatasetResource, DuckDBWarehouseResource
from bm_assets.settings import BUNDLED_DATASET

D = dt.date
DAYS = [D(2017, 1, 1) + dt.timedelta(days=i) for i in range(6)]


def _dataset(folder: Path) -> Path:
    """The bundled sample cut to 2017-01-01..06, training cutoff on the 4th (the graph sees three
    days), with small embeddings and sketches so both engines finish in seconds, and a profile
    memory budget so small that the profiles are built in several client shards; the products
    gain a list attribute."""
    src = BUNDLED_DATASET.parent
    folder.mkdir()
    con = duckdb.connect()
    for name, ts in (("transactions", "transaction_timestamp"), ("coupon_redemptions", "redemption_date")):
        con.execute(
            f"COPY (SELECT * FROM '{src}/{name}.parquet' WHERE {ts} < TIMESTAMP '2017-01-07') "
            f"TO '{folder}/{name}.parquet'"
        )
    con.execute(  # shelves: a list attribute, "department; brand", one graph node per value
        f"COPY (SELECT *, department || ' ; ' || brand AS shelves FROM '{src}/products.parquet' "
        f"WHERE product_id IN (SELECT product_id FROM "
        f"'{src}/transactions.parquet' WHERE transaction_timestamp < TIMESTAMP '2017-01-21')) "
        f"TO '{folder}/products.parquet'"
    )  # includes items first sold later: inductive
    for name in ("demographics", "campaigns", "coupons"):
        con.execute(f"COPY (SELECT * FROM '{src}/{name}.parquet') TO '{folder}/{name}.parquet'")
    con.close()
    cfg = yaml.safe_load(BUNDLED_DATASET.read_text())
    cfg.update(
        data_start="2017-01-01",
        data_end="2017-01-06",
        catalog_coverage_min=0.0,
        temporal={"training_cutoff": "2017-01-04", "test_start": "2017-01-05", "test_end": "2017-01-07"},
    )
    products = next(t for t in cfg["items"] if t["name"] == "products")
    products["columns"]["shelves"] = "list"
    products["list_separator"] = ";"
    rep = cfg["representation"]
    rep["graph"]["columns"].append("shelves")
    rep["sketch"]["columns"].append("shelves")
    rep["cleora"].update(dim=8)
    rep["sketch"].update(depth=2, bits=3)
    rep.setdefault("profile", {})["memory_mb"] = 0.005
    path = folder / "dataset.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _range(start: str, end: str) -> dict:
    return {"tags": {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}}


def _materialize_all(dataset_yaml: Path, warehouse, home: Path) -> list[AssetCheckEvaluation]:
    """Ingest and denormalize the six days, build graph, embeddings and coders, then profiles
    for days 1-3 (one single-run backfill), days 4, 5 and 6, and day 5 again (replacing its
    rows); artifacts under `home`. Returns the asset check evaluations of the profile runs."""
    daily = daily_partitions(load_dataset_config(dataset_yaml))
    assets = [*build_ingest_assets(daily), *build_denormalize_assets(daily), *build_representation_assets(daily)]
    resources = {
        "dataset": DatasetResource(config_path=str(dataset_yaml)),
        "warehouse": warehouse,
        "artifacts": ArtifactStore(home=str(home)),
    }

    def run(selection: list[str], **kwargs) -> list[AssetCheckEvaluation]:
        result = materialize(assets, resources=resources, selection=selection, **kwargs)
        assert result.success
        for event in result.get_asset_materialization_events():
            if "client_shards" in event.materialization.metadata:
                assert event.materialization.metadata["client_shards"].value > 1
        return result.get_asset_check_evaluations()

    run(["client_properties", "product_catalog"])
    run(["raw_events", "raw_events_quarantine", "events_denormalized"], **_range("2017-01-01", "2017-01-06"))
    run(["temporal_graph", "entity_embeddings", "sketch_coders"])
    checks = run(["behavioral_profiles"], **_range("2017-01-01", "2017-01-03"))
    for day in ("2017-01-04", "2017-01-05", "2017-01-06", "2017-01-05"):
        checks += run(["behavioral_profiles"], partition_key=day)
    return checks


def _rows(wh: Warehouse, table: str, order: str) -> pd.DataFrame:
    """A table as comparable values; profile state values (float32 on DuckDB, FLOAT64 on
    BigQuery) are compared through load_profiles, so left out; their sparse dims stay."""
    df = wh.fetch_df(f"SELECT * FROM {wh.table(table)} ORDER BY {order}").drop(columns="vals", errors="ignore")
    if "dims" in df:
        df["dims"] = df["dims"].map(lambda v: tuple(int(x) for x in v))
    return df.astype(object).where(df.notna(), None)


def _unknown_functions(sql: str) -> set[str]:
    """Functions sqlglot's BigQuery dialect does not know (DuckDB-only ones such as hash or
    list_value, which the emulator would run), in a script sent to BigQuery."""
    return {
        f.name.upper()
        for tree in sqlglot.parse(sql, read="bigquery")
        if tree is not None
        for f in tree.find_all(exp.Anonymous)
    }


@pytest.mark.bigquery
def test_representations_on_bigquery_equal_duckdb(tmp_path, bq_resource):
    dataset_yaml = _dataset(tmp_path / "sample")
    duck = DuckDBWarehouseResource(database=str(tmp_path / "duck_home" / "duck.duckdb"))
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    duck_checks = _materialize_all(dataset_yaml, duck, tmp_path / "duck_home")
    bq_checks = _materialize_all(dataset_yaml, bq_resource, tmp_path / "bq_home")

    with duck.open() as d, bq_resource.open() as b:
        graph = graph_rows(d)
        assert len(graph) > 1000 and set(graph["edge_kind"]) == {"client_window", "basket"}
        assert graph["edge_id"].str.startswith("cw:").any()
        assert cleora_input(d, "star").lines == cleora_input(b, "star").lines
        for table, order in [
            ("temporal_graph", "edge_index, node"),
            ("temporal_graph_nodes", "node"),
            ("temporal_graph_edges", "edge_index"),
            ("behavioral_profiles_days", "profile_date"),
            ("behavioral_profiles", "client_id, profile_date"),
            ("behavioral_profiles_layout", "start_dim"),
        ]:
            pd.testing.assert_frame_equal(_rows(d, table, order), _rows(b, table, order), check_dtype=False)
        n_clients = []
        coders = load_sketch_coders(tmp_path / "bq_home")
        for day in [*DAYS, D(2017, 1, 20)]:
            duck_ids, duck_profiles = load_profiles(d, day, coders)
            bq_ids, bq_profiles = load_profiles(b, day, coders)
            np.testing.assert_array_equal(duck_ids, bq_ids)
            np.testing.assert_allclose(bq_profiles, duck_profiles, rtol=1e-6, atol=1e-6)
            n_clients.append(len(duck_ids))
        since_last_event = duck_profiles[:, -2]  # the profile ends with recency, then the mean gap
        assert n_clients[0] > 10 and n_clients[-1] > n_clients[0] and since_last_event.min() >= 14
        # the export streams the stored rows in batches (BigQuery: page by page): the same profiles
        exported = []
        for wh, name in ((d, "duck"), (b, "bq")):
            ids_path, emb_path = export_profiles(wh, DAYS[-1], tmp_path / f"export_{name}", coders=coders)
            ids, emb = np.load(ids_path), np.load(emb_path)
            exported.append((ids[np.argsort(ids)], emb[np.argsort(ids)]))
        np.testing.assert_array_equal(exported[0][0], exported[1][0])
        np.testing.assert_allclose(exported[1][1], exported[0][1], rtol=1e-6, atol=1e-6)
        leftovers = [
            t.table_id
            for t in b.client.list_tables(b.dataset)
            if t.table_id.startswith("_bm_scratch") or t.table_id.endswith("_staging")
        ]
        assert leftovers == []
        # Every statement the stages sent is BigQuery SQL, not just SQL the emulator accepts.
        queries = [
            j.query
            for j in b.client.list_jobs(min_creation_time=started)
            if getattr(j, "query", None) and b.dataset in j.query
        ]

    duck_emb = load_embeddings(tmp_path / "duck_home" / "artifacts" / EMBEDDINGS_DIR)
    bq_emb = load_embeddings(tmp_path / "bq_home" / "artifacts" / EMBEDDINGS_DIR)
    assert list(duck_emb) == list(bq_emb) and duck_emb["item_id"].inductive.any()
    shelves = duck_emb["shelves"]  # departments and brands, and the lists embedded from them
    assert "|" in shelves.ids[shelves.inductive][0] and not any("|" in i for i in shelves.ids[~shelves.inductive])
    for column, emb in duck_emb.items():
        np.testing.assert_array_equal(emb.ids, bq_emb[column].ids)
        np.testing.assert_allclose(emb.vectors, bq_emb[column].vectors, rtol=1e-6, atol=1e-6)
    duck_coders = load_sketch_coders(tmp_path / "duck_home")
    assert coders_fingerprint(duck_coders) == coders_fingerprint(load_sketch_coders(tmp_path / "bq_home"))

    # The asset check ran on both engines, on the same sample of clients, and passed.
    assert len(bq_checks) == len(duck_checks) == 5
    for duck_check, bq_check in zip(duck_checks, bq_checks, strict=True):
        assert bq_check.passed and duck_check.passed
        assert bq_check.metadata["clients"].value == duck_check.metadata["clients"].value > 0

    assert len(queries) > 20
    unknown = {name: q for q in queries for name in _unknown_functions(q)}
    assert not unknown, f"functions BigQuery does not have: {unknown}"


@pytest.mark.bigquery
def test_insert_df_creates_appends_and_is_all_or_nothing(warehouse, bq_warehouse):
    frame = pd.DataFrame(
        {
            "client_id": ["a", "b"],
            "day": [D(2017, 1, 1), D(2017, 1, 2)],
            "n": np.array([1, 2], dtype=np.int32),
            "x": np.array([0.5, np.nan], dtype=np.float32),
            "ok": [True, False],
            "v": pd.arrays.ArrowExtensionArray(
                pa.FixedSizeListArray.from_arrays(pa.array(np.arange(6, dtype=np.float32) / 3), 3)
            ),
        }
    )
    results = []
    for wh in (warehouse, bq_warehouse):
        wh.execute([f"CREATE TABLE IF NOT EXISTS {wh.table('log')} (k VARCHAR)"])
        wh.insert_df("t", frame, before=[f"INSERT INTO {wh.table('log')} VALUES ('first')"])
        wh.insert_df("t", frame.iloc[:1], before=[f"DELETE FROM {wh.table('t')} WHERE client_id = 'b'"])
        # a day without events: no rows, but its `before` statements still apply
        wh.insert_df("t", frame.iloc[:0], before=[f"INSERT INTO {wh.table('log')} VALUES ('empty')"])
        with pytest.raises(Exception, match="no_such_table"):
            wh.insert_df(
                "t",
                frame,
                before=[f"DELETE FROM {wh.table('t')}", f"INSERT INTO {wh.table('no_such_table')} VALUES (1)"],
            )
        df = wh.fetch_df(f"SELECT * FROM {wh.table('t')} ORDER BY client_id")
        df["v"] = [[float(e) for e in v] for v in df["v"]]
        results.append(df.astype(object).where(df.notna(), None))
        assert wh.fetch_df(f"SELECT k FROM {wh.table('log')} ORDER BY k")["k"].tolist() == ["empty", "first"]
    pd.testing.assert_frame_equal(results[0], results[1], check_dtype=False)
    assert results[1]["client_id"].tolist() == ["a", "a"]
    assert results[1]["v"].iloc[0] == pytest.approx([0.0, 1 / 3, 2 / 3], abs=1e-7)
    names = [t.table_id for t in bq_warehouse.client.list_tables(bq_warehouse.dataset)]
    assert sorted(names) == ["log", "t"], "the scratch uploads are dropped, also after a failure"


def test_unknown_function_check_can_fail():
    assert _unknown_functions("SELECT hash(client_id), list_value(1, 2) FROM t") == {"HASH", "LIST_VALUE"}
    assert _unknown_functions("SELECT TO_HEX(MD5(c)), IS_INF(x), CHR(9) FROM t") == set()
