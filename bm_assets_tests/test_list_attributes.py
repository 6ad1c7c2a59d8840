"""List attributes: several categories in one cell ("Action|Comedy", a movie's genres) are
stored in one form, are one graph node per category, and are sketched from the mean of their
categories' embeddings, so a client who watches comedies is near another who does even when
their movies' genre lists differ."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import yaml

from bm_assets.config import DatasetConfigError, load_dataset_config
from bm_assets.core.attributes import AttributeDataError, build_product_catalog
from bm_assets.core.embeddings import add_list_values, build_entity_embeddings
from bm_assets.core.features import aggregate_features, feature_tops
from bm_assets.core.graph import build_temporal_graph, graph_rows
from bm_assets.core.sketches import fit_coders
from bm_assets.core.tasks import (
    EvaluationConfig,
    TaskConfigError,
    build_labels,
    check_modeling_columns,
    load_modeling_config,
    task_labels,
    with_task_columns,
)
from bm_assets_tests.test_byod import _ingest, _invoice_source, _write

# every item of the invoices; 22633 has no genre, D a cell of separators only
GENRES = """StockCode,genres,shelf
85123A,Comedy;Action,a
71053, Action ; Action;,b
22139,Drama,a
22633,,b
D,;,a
"""


def _dataset(tmp_path, **table) -> str:
    (tmp_path / "items.csv").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "items.csv").write_text(GENRES)
    items = {
        "name": "movies",
        "path": "items.csv",
        "key": "StockCode",
        "columns": {"genres": "list", "shelf": "categorical"},
        "list_separator": ";",
        **table,
    }
    return _write(tmp_path, _invoice_source(), items=[items])


def test_a_list_cell_is_stored_as_its_sorted_distinct_values(tmp_path, warehouse):
    cfg = load_dataset_config(_dataset(tmp_path))
    assert cfg.event_columns()["genres"] == "list" and cfg.list_columns() == ["genres"]
    # a list attribute is a graph (and so a sketch) column by default, and an inductive attribute
    assert cfg.representation.graph.columns == ["item_id", "genres", "shelf"]
    assert cfg.representation.inductive.attributes == ["genres", "shelf"]
    _ingest(warehouse, cfg)
    catalog = warehouse.fetch_df("SELECT item_id, genres FROM product_catalog ORDER BY item_id")
    assert dict(zip(catalog["item_id"], catalog["genres"], strict=True)) == {
        "22139": "Drama",
        "22633": None,
        "71053": "Action",
        "85123A": "Action|Comedy",
        "D": None,
    }


def test_a_list_is_one_graph_node_per_value(tmp_path, warehouse):
    cfg = load_dataset_config(_dataset(tmp_path))
    _ingest(warehouse, cfg)
    graph = build_temporal_graph(
        warehouse, cfg.representation.graph, cfg.data_start, cfg.temporal.training_cutoff, cfg.list_columns()
    )
    # Action and Comedy (Drama's two lines are quarantined): no "Action|Comedy" node
    assert graph.nodes["genres"] == 2 and "Action|Comedy" not in set(graph_rows(warehouse)["entity"])
    rows = graph_rows(warehouse)
    genres = rows[(rows["column_name"] == "genres") & (rows["edge_kind"] == "basket")]
    # basket 536365 of client 17850: one line of 85123A (Action|Comedy), one of 71053 (Action)
    basket = genres[genres["edge_id"] == "b:536365"].set_index("entity")["events"].to_dict()
    assert basket == {"Action": 2, "Comedy": 1}
    # without the list columns the same data gives one node per whole cell
    as_cells = build_temporal_graph(warehouse, cfg.representation.graph, cfg.data_start, cfg.temporal.training_cutoff)
    assert as_cells.nodes["genres"] == 2 and "Action|Comedy" in set(graph_rows(warehouse)["entity"])


def test_a_list_value_is_embedded_and_coded_from_its_values(tmp_path, warehouse):
    cfg = load_dataset_config(_dataset(tmp_path))
    _ingest(warehouse, cfg)
    rep = cfg.representation
    build_temporal_graph(warehouse, rep.graph, cfg.data_start, cfg.temporal.training_cutoff, cfg.list_columns())
    emb = build_entity_embeddings(warehouse, rep, cfg.list_columns())["genres"]
    ids = emb.ids.tolist()
    # Drama's lines are quarantined: no node, so nothing to embed it from
    assert ids == ["Action", "Action|Comedy", "Comedy"]
    assert emb.inductive.tolist() == [False, True, False]
    mean = emb.vectors[0].astype(np.float64) + emb.vectors[2]
    np.testing.assert_allclose(emb.vectors[1], mean / np.linalg.norm(mean), rtol=1e-5)
    coders = fit_coders({"genres": emb}, ["genres"], depth=4, bits=1, seed=0)
    coder = coders["genres"]
    # the hyperplanes are fitted on the categories; the list is coded from its mean
    codes = coder.encode(np.array(["Action|Comedy", "Action", "Drama"]))
    assert (codes[:2] >= 0).all() and (codes[2] == -1).all()
    np.testing.assert_array_equal(codes[0], coder.code_embeddings(emb.vectors[1:2])[0])


def test_add_list_values_skips_lists_of_unknown_values():
    from bm_assets.core.embeddings import ColumnEmbeddings

    emb = ColumnEmbeddings("g", np.array(["a", "b"]), np.eye(2, dtype=np.float32), np.zeros(2, bool))
    out = add_list_values(emb, np.array(["a|b", "a|x", "x|y", "a", "b|a|b"]))
    assert out.ids.tolist() == ["a", "a|b", "a|x", "b", "b|a|b"]
    np.testing.assert_allclose(out.vectors[1], [2**-0.5, 2**-0.5], rtol=1e-6)
    np.testing.assert_allclose(out.vectors[2], [1, 0])  # x is unknown: the mean of what is known
    assert out.inductive.tolist() == [False, True, True, False, True]


def _tasks(tmp_path, task_type: str) -> str:
    tasks = tmp_path / "tasks.yaml"
    target = {"column": "genres", "top_n": 2} if task_type != "recommendation" else {"column": "genres"}
    task = {"name": "genre_task", "type": task_type, "horizon_days": 7, "target": target}
    tasks.write_text(yaml.safe_dump({"tasks": [task]}))
    return str(tasks)


def test_each_value_of_a_list_is_a_label_and_an_aggregate(tmp_path, warehouse):
    cfg = load_dataset_config(_dataset(tmp_path))
    mcfg = load_modeling_config(_tasks(tmp_path, "multilabel"))
    check_modeling_columns(mcfg, cfg)  # a propensity to each genre: allowed
    # the targeted list column is sketched and a graph column (it is already, by default)
    assert "genres" in with_task_columns(cfg, mcfg).representation.sketch_columns
    _ingest(warehouse, cfg)
    task, lists = mcfg.tasks[0], cfg.list_columns()
    # before the cutoff: 85123A (Action|Comedy) and 71053 (Action) once each
    assert task_labels(warehouse, task, cfg.temporal.training_cutoff, 100, lists) == ["Action", "Comedy"]
    assert task_labels(warehouse, task, cfg.temporal.training_cutoff, 100) == ["Action", "Action|Comedy"]
    examples = pd.DataFrame({"client_id": ["17850", "13047"], "t": [dt.date(2010, 12, 1)] * 2})
    y = build_labels(warehouse, task, examples, ["Action", "Comedy"], lists)
    np.testing.assert_array_equal(y, [[1, 1], [0, 0]])
    ev = EvaluationConfig(feature_windows_days=[7])
    tops = feature_tops(warehouse, ["genres"], ev, cfg.temporal.training_cutoff, lists)
    assert tops == {"genres": ["Action", "Comedy"]}
    later = pd.DataFrame({"client_id": ["17850"], "t": [dt.date(2010, 12, 2)]})
    f, names = aggregate_features(warehouse, later, ev, tops, lists)
    counts = dict(zip(names, f[0], strict=True))
    assert counts["genres_0_n_7d"] == 2 and counts["genres_1_n_7d"] == 1  # Action twice, Comedy once


def test_list_columns_are_refused_where_one_value_is_needed(tmp_path):
    with pytest.raises(DatasetConfigError, match=r"multi_valued table are aggregated to lists already"):
        load_dataset_config(_dataset(tmp_path, multi_valued=True))
    path = _write(
        tmp_path,
        _invoice_source(),
        clients=[{"name": "country", "from_events": "invoice_lines", "columns": {"UnitPrice": "list"}}],
    )
    with pytest.raises(DatasetConfigError, match=r"cannot be lists"):
        load_dataset_config(path)
    cfg = load_dataset_config(_dataset(tmp_path))
    with pytest.raises(TaskConfigError, match=r"'genres' holds lists of values .* a recommendation task cannot"):
        check_modeling_columns(load_modeling_config(_tasks(tmp_path, "recommendation")), cfg)


@pytest.mark.bigquery
def test_lists_on_bigquery_equal_duckdb(tmp_path, warehouse, bq_warehouse):
    """The stored list form, the graph's nodes per value, the labels and the aggregates: the
    same on BigQuery (an emulator) as on DuckDB."""
    cfg = load_dataset_config(_dataset(tmp_path))
    task, lists = load_modeling_config(_tasks(tmp_path, "multilabel")).tasks[0], cfg.list_columns()
    ev = EvaluationConfig(feature_windows_days=[7])
    examples = pd.DataFrame({"client_id": ["17850", "13047"], "t": [dt.date(2010, 12, 2)] * 2})
    results = []
    for wh in (warehouse, bq_warehouse):
        _ingest(wh, cfg)
        rep = cfg.representation
        build_temporal_graph(wh, rep.graph, cfg.data_start, cfg.temporal.training_cutoff, lists)
        catalog = wh.fetch_df(f"SELECT item_id, genres FROM {wh.table('product_catalog')} ORDER BY item_id")
        nodes = wh.fetch_df(f"SELECT column_name, entity FROM {wh.table('temporal_graph_nodes')} ORDER BY node")
        labels = task_labels(wh, task, cfg.temporal.training_cutoff, 100, lists)
        tops = feature_tops(wh, ["genres"], ev, cfg.temporal.training_cutoff, lists)
        results.append(
            (
                catalog["genres"].tolist(),
                nodes.values.tolist(),
                labels,
                build_labels(wh, task, examples, labels, lists).tolist(),
                aggregate_features(wh, examples, ev, tops, lists)[0].tolist(),
            )
        )
    assert results[0] == results[1]
    assert results[0][0] == ["Drama", None, "Action", "Action|Comedy", None] and results[0][2] == ["Action", "Comedy"]


def test_list_embeddings_and_codes_ignore_events_at_or_after_the_cutoff(tmp_path, warehouse):
    """Poisoning every event from the cutoff on (new genre lists on them, new clients) leaves the
    graph, the embeddings of the values and of the lists, and the codes as they were; the same
    poison a day before the cutoff changes them (so the comparison can fail)."""
    cfg = load_dataset_config(_dataset(tmp_path))
    _ingest(warehouse, cfg)
    rep, cutoff, lists = cfg.representation, cfg.temporal.training_cutoff, cfg.list_columns()

    def build():
        build_temporal_graph(warehouse, rep.graph, cfg.data_start, cutoff, lists)
        emb = build_entity_embeddings(warehouse, rep, lists)
        coders = fit_coders(emb, rep.sketch_columns, 4, 2, rep.seed)
        return graph_rows(warehouse), emb["genres"], coders["genres"]

    def poison(condition: str) -> None:
        warehouse.execute(
            [
                f"""INSERT INTO events_denormalized BY NAME SELECT * REPLACE ('intruder_' || client_id AS client_id)
                FROM events_denormalized WHERE {condition}""",
                f"UPDATE events_denormalized SET genres = 'Comedy|Poison' WHERE {condition}",
            ]
        )

    graph, emb, coder = build()
    poison(f"event_date >= DATE '{cutoff}'")
    graph_after, emb_after, coder_after = build()
    pd.testing.assert_frame_equal(graph, graph_after)
    np.testing.assert_array_equal(emb.ids, emb_after.ids)
    np.testing.assert_array_equal(emb.vectors, emb_after.vectors)
    np.testing.assert_array_equal(coder.codes, coder_after.codes)
    poison(f"event_date >= DATE '{cutoff - dt.timedelta(days=9)}'")  # the control: before the cutoff
    graph_control, emb_control, _ = build()
    assert len(graph_control) != len(graph) and "Poison" in set(emb_control.ids)


@pytest.mark.parametrize("fmt", ["parquet", "json"])
def test_a_native_or_json_array_is_a_list_too(tmp_path, warehouse, fmt):
    """A Parquet array column and a JSON-lines array are read element by element (an element
    may hold the separator: "Clothing, Shoes" stays one value)."""
    items = pd.DataFrame(
        {
            "StockCode": ["85123A", "71053", "22633"],
            "genres": [["Comedy", "Clothing, Shoes", "Comedy"], [" Action ", "Movies | TV"], []],
        }
    )
    if fmt == "parquet":
        items.to_parquet(tmp_path / "items.parquet")
        path = "items.parquet"
    else:
        items.to_json(tmp_path / "items.jsonl", orient="records", lines=True)
        path = "items.jsonl"
    table = {"name": "movies", "path": path, "key": "StockCode", "columns": {"genres": "list"}, "list_separator": ","}
    cfg = load_dataset_config(_write(tmp_path, _invoice_source(), items=[table]))
    _ingest(warehouse, cfg)
    catalog = warehouse.fetch_df("SELECT item_id, genres FROM product_catalog ORDER BY item_id")
    # a '|' inside a value would split it once stored: it becomes '/'
    assert catalog["genres"].tolist() == [None, "Action|Movies / TV", "Clothing, Shoes|Comedy"]


def test_a_list_column_gone_from_its_file_is_named(tmp_path, warehouse):
    """The file changed after the config was loaded: the missing list column is named, with the
    file, where the table is read."""
    cfg = load_dataset_config(_dataset(tmp_path))
    (tmp_path / "items.csv").write_text("StockCode,shelf\n85123A,a\n")
    with pytest.raises(AttributeDataError, match=r"items.csv: attribute column 'genres' is missing"):
        build_product_catalog(warehouse, cfg)
