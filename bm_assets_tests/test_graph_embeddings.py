"""temporal_graph from config, Cleora embeddings per column, inductive items."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from bm_assets.config import GraphConfig
from bm_assets.core.embeddings import add_inductive, build_entity_embeddings, embed_graph
from bm_assets.core.graph import build_temporal_graph, cleora_input, graph_rows
from bm_assets.core.warehouse import DuckDBWarehouse


def test_graph_columns_and_windows_come_from_config(sample_warehouse, sample_config):
    wh, cfg = sample_warehouse, sample_config
    cutoff = cfg.temporal.training_cutoff
    build = build_temporal_graph(wh, cfg.representation.graph, cfg.data_start, cutoff)
    assert set(build.nodes) == set(cfg.representation.graph.columns)
    assert build.basket_column == "basket_id" and set(build.edges) == {"client_window", "basket"}
    expected_items = wh.fetch_df(
        f"SELECT count(DISTINCT item_id) AS n FROM events_denormalized WHERE event_date < DATE '{cutoff}'"
    )["n"].iloc[0]
    assert build.nodes["item_id"] == expected_items
    n_windows = wh.fetch_df(
        f"""SELECT count(DISTINCT client_id || ':'
            || (date_diff('day', DATE '{cfg.data_start}', event_date) // 7)) AS n
        FROM events_denormalized WHERE event_date < DATE '{cutoff}'"""
    )["n"].iloc[0]
    assert build.edges["client_window"] == n_windows

    small = GraphConfig(columns=["department", "brand"], window_days=30, basket_column=None)
    build = build_temporal_graph(wh, small, cfg.data_start, cutoff)
    assert set(build.nodes) == {"department", "brand"} and set(build.edges) == {"client_window"}
    rows = graph_rows(wh)
    assert set(rows["column_name"]) == {"department", "brand"} and len(rows) == build.rows
    with pytest.raises(KeyError, match="not_a_column"):
        build_temporal_graph(wh, GraphConfig(columns=["not_a_column"]), cfg.data_start, cutoff)


def test_a_basket_id_counted_per_client_is_one_basket_per_client(tmp_path):
    """Order or session numbers counted per client (1, 2, 3 for each): clients sharing a
    basket number are different baskets, not one hyperedge joining their items."""
    wh = DuckDBWarehouse(str(tmp_path / "g.duckdb"))
    wh.execute(
        [
            """CREATE TABLE events_denormalized AS SELECT * FROM (VALUES
            ('c1', DATE '2020-01-01', 'milk', '1'), ('c1', DATE '2020-01-01', 'bread', '1'),
            ('c2', DATE '2020-01-02', 'beer', '1'), ('c2', DATE '2020-01-03', 'wine', '2'),
            ('c3', DATE '2020-01-05', 'tea', NULL)
        ) t(client_id, event_date, item_id, basket_id)"""
        ]
    )
    cfg = GraphConfig(columns=["item_id"], window_days=7, basket_column="basket_id")
    build = build_temporal_graph(wh, cfg, dt.date(2020, 1, 1), dt.date(2020, 2, 1))
    assert build.edges == {"client_window": 3, "basket": 3}
    rows = graph_rows(wh)
    baskets = rows[rows["edge_kind"] == "basket"].groupby(["edge_id", "client_id"])["entity"].agg(sorted)
    assert baskets.to_dict() == {
        ("b:1", "c1"): ["bread", "milk"],
        ("b:1", "c2"): ["beer"],
        ("b:2", "c2"): ["wine"],
    }
    assert build.rows == len(rows) == 5 + 4  # client windows: 2 + 2 + 1 items; baskets: 2 + 1 + 1


def test_embeddings_are_deterministic_and_inductive_items_use_their_attributes(sample_warehouse, sample_config):
    wh, cfg = sample_warehouse, sample_config
    rep = cfg.representation
    build_temporal_graph(wh, rep.graph, cfg.data_start, cfg.temporal.training_cutoff)
    first = build_entity_embeddings(wh, rep)
    again = embed_graph(cleora_input(wh, rep.graph.expansion), rep.cleora, rep.seed)
    for column in rep.graph.columns:
        emb = first[column]
        assert emb.vectors.dtype == np.float32 and emb.vectors.shape[1] == rep.cleora.dim
        assert list(emb.ids) == sorted(emb.ids)
        observed = emb.observed
        assert np.array_equal(observed.vectors, again[column].vectors)
        assert np.array_equal(observed.ids, again[column].ids)

    items = first["item_id"]
    assert items.inductive.sum() > 0
    catalog = wh.fetch_df("SELECT item_id, manufacturer_id, product_category, department FROM product_catalog")
    catalog = catalog.set_index("item_id")
    new_item = items.ids[np.flatnonzero(items.inductive)[0]]
    parts = []
    for attr in rep.inductive.attributes:
        value = catalog.loc[new_item, attr]
        if value is not None and value in set(first[attr].ids):
            parts.append(first[attr].vectors[np.searchsorted(first[attr].ids, value)])
    expected = np.mean(parts, axis=0)
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(items.vectors[np.searchsorted(items.ids, new_item)], expected, atol=1e-6)
    # items seen before the cutoff keep their graph embedding
    assert not items.inductive[pd.Index(items.ids).isin(again["item_id"].ids)].any()


def test_add_inductive_skips_entities_without_known_attributes(sample_warehouse, sample_config):
    wh, cfg = sample_warehouse, sample_config
    rep = cfg.representation
    build_temporal_graph(wh, rep.graph, cfg.data_start, cfg.temporal.training_cutoff)
    emb = embed_graph(cleora_input(wh, rep.graph.expansion), rep.cleora, rep.seed)
    attrs = pd.DataFrame({"item_id": ["new1", "new2"], "department": [emb["department"].ids[0], "unknown"]})
    out = add_inductive(emb, "item_id", attrs)
    assert "new1" in set(out.ids) and "new2" not in set(out.ids)
    np.testing.assert_allclose(
        out.vectors[np.searchsorted(out.ids, "new1")],
        emb["department"].vectors[0] / np.linalg.norm(emb["department"].vectors[0]),
        atol=1e-6,
    )
