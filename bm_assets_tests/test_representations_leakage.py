"""temporal_graph, entity_embeddings and sketch_coders (their exact first levels included) built
for cutoff C depend on events before C only: poisoning every event at or after C leaves them
bit-identical, while poisoning the day before C changes them (so the comparison can fail)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from bm_assets.core.embeddings import build_entity_embeddings
from bm_assets.core.graph import build_temporal_graph, graph_rows
from bm_assets.core.sketches import fit_coders
from bm_assets.core.tasks import exact_head_values


def _graph(wh, cfg) -> pd.DataFrame:
    build_temporal_graph(wh, cfg.representation.graph, cfg.data_start, cfg.temporal.training_cutoff)
    return graph_rows(wh)  # with the names: node and hyperedge numbers alone could hide a change


def _poison(wh, condition: str) -> int:
    """Rewrite the matching events (new items, attributes, stores, baskets, clients, values)
    and add a copy of each under a new client."""
    n = int(wh.fetch_df(f"SELECT count(*) AS n FROM events_denormalized WHERE {condition}")["n"].iloc[0])
    wh.execute(
        [
            f"""INSERT INTO events_denormalized BY NAME
            SELECT * REPLACE ('intruder_' || client_id AS client_id) FROM events_denormalized
            WHERE {condition}""",
            f"""UPDATE events_denormalized SET item_id = 'poison:' || item_id, manufacturer_id = 'm_poison',
            product_category = 'POISON', department = 'POISON', store_id = 's_poison',
            basket_id = 'b_poison', value = value * 100 WHERE {condition}""",
        ]
    )
    return n


def test_graph_embeddings_and_coders_ignore_events_at_or_after_the_cutoff(sample_warehouse, sample_config):
    cfg = sample_config
    rep = cfg.representation
    cutoff = cfg.temporal.training_cutoff
    wh = sample_warehouse

    def heads() -> dict[str, list[str]]:  # what the sketch_coders asset draws, for every sketch column
        return exact_head_values(wh, rep.sketch_columns, cutoff, rep.sketch.width)

    graph = _graph(wh, cfg)
    embeddings = build_entity_embeddings(wh, rep)
    heads_before = heads()
    coders = fit_coders(embeddings, rep.sketch_columns, rep.sketch.depth, rep.sketch.bits, rep.seed, heads_before)
    assert len(graph) > 0

    poisoned = _poison(wh, f"event_date >= DATE '{cutoff}'")
    assert poisoned > 10_000
    graph_after = _graph(wh, cfg)
    pd.testing.assert_frame_equal(graph, graph_after)
    embeddings_after = build_entity_embeddings(wh, rep)
    heads_after = heads()
    assert heads_after == heads_before
    coders_after = fit_coders(
        embeddings_after, rep.sketch_columns, rep.sketch.depth, rep.sketch.bits, rep.seed, heads_after
    )
    assert list(embeddings) == list(embeddings_after)
    for column, emb in embeddings.items():
        assert np.array_equal(emb.ids, embeddings_after[column].ids)
        assert np.array_equal(emb.vectors, embeddings_after[column].vectors)
    for column, coder in coders.items():
        assert np.array_equal(coder.entity_ids, coders_after[column].entity_ids)
        assert np.array_equal(coder.codes, coders_after[column].codes)

    # control: the same poison one day earlier reaches the graph
    _poison(wh, f"event_date = DATE '{cutoff - dt.timedelta(days=1)}'")
    graph_leaky = _graph(wh, cfg)
    assert "POISON" in set(graph_leaky["entity"]) and len(graph_leaky) != len(graph)
    # and a head drawn one day later would contain the poisoned department
    later = exact_head_values(wh, ["department"], cutoff + dt.timedelta(days=1), rep.sketch.width)
    assert "POISON" in later["department"]
