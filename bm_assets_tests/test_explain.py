"""Explanations on a hand-made log where the label depends on one brand only: the attributions
must be complete, fold back to the client's own entities exactly, name that brand as the top
reason of the positive clients, and never read events after the explained date."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import torch

from bm_assets.core.evaluation import metrics
from bm_assets.core.explain import (
    _entity_titles,
    _integrated_gradients,
    aggregate_title,
    as_of_examples,
    entity_history,
    fold,
    gbdt_contributions,
    global_drivers,
    integrated_gradients,
    reference_baseline,
    top_reasons,
)
from bm_assets.core.foundation import TrainConfig, fit, predict, task_network
from bm_assets.core.kinds import KINDS
from bm_assets.core.profiles import ProfileLayout, batch_profiles, day_number, encode_events
from bm_assets.core.sketches import fit_sketch_coder

AS_OF = dt.date(2024, 3, 31)
BRAND = "B07"
N_CLIENTS, N_BRANDS, ITEMS_PER_BRAND = 400, 20, 3


def _log(seed: int = 0) -> pd.DataFrame:
    """60 days of purchases: every client buys random items; in the positive half, one to three
    of them are items of brand B07 (and only they buy it). Counts and spend do not tell them
    apart."""
    rng = np.random.default_rng(seed)
    rows = []
    items = [(f"i{b:02d}{k}", f"B{b:02d}") for b in range(N_BRANDS) for k in range(ITEMS_PER_BRAND)]
    others = [it for it in items if it[1] != BRAND]
    mine = [it for it in items if it[1] == BRAND]
    for c in range(N_CLIENTS):
        positive = c % 2 == 0
        n = int(rng.integers(5, 15))
        n_brand = int(rng.integers(1, 4)) if positive else 0
        for k in range(n):
            pool = mine if k < n_brand else others
            item, brand = pool[rng.integers(len(pool))]
            rows.append((f"c{c:03d}", AS_OF - dt.timedelta(days=int(rng.integers(0, 60))), item, brand))
    df = pd.DataFrame(rows, columns=["client_id", "event_date", "item_id", "brand"])
    df["event_type"] = "purchase"
    df["value"] = 2.0
    return df


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Events in a DuckDB warehouse, coders, profiles as of AS_OF and a binary network trained
    on label = "has bought brand B07"."""
    from bm_assets.core.warehouse import DuckDBWarehouse

    events = _log()
    wh = DuckDBWarehouse(str(tmp_path_factory.mktemp("explain") / "wh.duckdb"))
    wh.con.register("__df", events)
    wh.execute(["CREATE TABLE events_denormalized AS SELECT * FROM __df"])
    wh.con.unregister("__df")
    rng = np.random.default_rng(1)
    coders = {}
    for column in ("item_id", "brand"):
        ids = np.sort(events[column].unique())
        coders[column] = fit_sketch_coder(column, ids, rng.standard_normal((len(ids), 8)), depth=4, bits=4, seed=0)
    layout = ProfileLayout.from_coders(coders, [7.0, 30.0])
    clients = np.sort(events["client_id"].unique())
    rows = pd.Index(clients).get_indexer(events["client_id"])
    days = np.array([day_number(d) for d in events["event_date"]])
    _, x = batch_profiles(
        encode_events(coders, events), rows, days, events["value"].to_numpy(), len(clients), day_number(AS_OF), layout
    )
    y = np.array([int(c[1:]) % 2 == 0 for c in clients], dtype=np.float32)
    layout_net = [(c, k.depth, k.width) for c, k in coders.items()]
    net = task_network(None, x.shape[1], 32, 1, 0.0, layout_net, 1, seed=0)
    # plain per-entry standardisation: the rule is then learned from the brand sketch alone, the
    # attribution this test folds back (balanced blocks learn sketches slower and lean on counts)
    net.set_input_stats(x, balance_sketch_blocks=False)
    out = KINDS["binary"].output()

    def validate(n):
        return metrics("binary", y, predict(n, x, out))["auroc"]

    res = fit(net, KINDS["binary"].loss(None), x, y, validate, TrainConfig(lr=3e-3, max_epochs=40, patience=5))
    yield wh, coders, layout, clients, x, y, res
    wh.close()


def test_the_network_learned_the_brand_rule(fitted):
    *_, res = fitted
    assert res.best_score > 0.95


def test_attributions_are_complete_and_fold_exactly(fitted):
    wh, coders, layout, clients, x, y, res = fitted
    attr = integrated_gradients(res.net, x, "binary", baseline=reference_baseline(x, layout))
    change = attr.output - attr.baseline_output
    assert np.abs(attr.attr.sum(1) - change).max() < 1e-3 * max(1.0, np.abs(change).max())
    assert np.allclose(attr.delta, attr.attr.sum(1) - change, atol=1e-6)
    history = entity_history(wh, list(coders), {"item_id": ["brand"]}, as_of_examples(clients, AS_OF), (7.0, 30.0))
    reasons, collision = fold(attr, x, layout, coders, history)
    per_row = reasons.groupby("row")["attribution"].sum().reindex(range(len(x)), fill_value=0).to_numpy()
    np.testing.assert_allclose(per_row, attr.attr.sum(1), rtol=1e-6, atol=1e-9)
    assert ((collision >= 0) & (collision <= 1)).all()
    items = reasons[reasons["column"] == "item_id"]
    brand_of = dict(zip(history["item_id"]["entity"], history["item_id"]["brand"], strict=True))
    assert len(items) and (items["title"] == [f"item_id = {v} (brand = {brand_of[v]})" for v in items["value"]]).all()
    brands = reasons[reasons["column"] == "brand"]
    assert len(brands) and (brands["title"] == "brand = " + brands["value"]).all()
    # the decayed weights of the history are the profile's own inputs
    block = next(s for n, s, _ in layout.blocks() if n == "sketch/h7/brand")
    level0 = x[:, block : block + layout.width].sum(1)
    w = history["brand"].groupby("row")["w0"].sum().reindex(range(len(x)), fill_value=0).to_numpy()
    np.testing.assert_allclose(w, level0, rtol=1e-4)


def test_the_brand_is_the_top_reason_of_the_positive_clients(fitted):
    wh, coders, layout, clients, x, y, res = fitted
    pos = np.flatnonzero(y == 1)
    attr = integrated_gradients(res.net, x[pos], "binary", baseline=reference_baseline(x, layout))
    history = entity_history(wh, list(coders), {"item_id": ["brand"]}, as_of_examples(clients[pos], AS_OF), (7.0, 30.0))
    reasons, _ = fold(attr, x[pos], layout, coders, history)
    top = [top_reasons(reasons, i, 1).iloc[0] for i in range(len(pos))]
    about_brand = [
        r["direction"] == "raises" and (r["value"] == BRAND or f"brand = {BRAND}" in r["title"]) for r in top
    ]
    assert np.mean(about_brand) >= 0.9
    drivers = global_drivers(reasons, len(pos))
    assert drivers.iloc[0]["title"] == f"brand = {BRAND}"
    by_brand = global_drivers(reasons, len(pos), by="brand")
    assert by_brand.iloc[0]["title"] == f"brand = {BRAND}" and by_brand.iloc[0]["mean"] > 0
    # a negative client has no brand B07 reason at all: it never bought it
    neg = np.flatnonzero(y == 0)[:20]
    attr_neg = integrated_gradients(res.net, x[neg], "binary", baseline=reference_baseline(x, layout))
    h_neg = entity_history(wh, list(coders), {}, as_of_examples(clients[neg], AS_OF), (7.0, 30.0))
    r_neg, _ = fold(attr_neg, x[neg], layout, coders, h_neg)
    assert not (r_neg["value"] == BRAND).any()


def test_history_never_reads_events_after_the_explained_date(fitted):
    wh, coders, layout, clients, *_ = fitted
    day = AS_OF - dt.timedelta(days=10)
    ex = as_of_examples(clients[:50], day)
    before = entity_history(wh, list(coders), {"item_id": ["brand"]}, ex, (7.0, 30.0))
    wh.execute(
        [
            "CREATE TABLE __backup AS SELECT * FROM events_denormalized",
            f"""INSERT INTO events_denormalized SELECT client_id, event_date + INTERVAL 11 DAY, 'poison', 'BXX',
                event_type, value FROM events_denormalized WHERE event_date >= DATE '{day - dt.timedelta(days=2)}'""",
            # and rewrite what already happened after the date
            f"UPDATE events_denormalized SET brand = 'BYY' WHERE event_date > DATE '{day}'",
        ]
    )
    try:
        after = entity_history(wh, list(coders), {"item_id": ["brand"]}, ex, (7.0, 30.0))
    finally:
        wh.execute(["DROP TABLE events_denormalized", "ALTER TABLE __backup RENAME TO events_denormalized"])
    for column in coders:
        pd.testing.assert_frame_equal(before[column], after[column])


def test_multilabel_target_per_row():
    torch.manual_seed(0)
    layout = [("item_id", 2, 4)]
    net = task_network(None, 12, 8, 1, 0.0, layout, 3, seed=0)
    x = np.abs(np.random.default_rng(0).standard_normal((5, 12))).astype(np.float32)
    net.set_input_stats(x)
    attr = integrated_gradients(net, x, "multilabel", target=np.array([0, 1, 2, 1, 0]))
    full = predict(net, x, KINDS["multilabel"].output())
    np.testing.assert_allclose(attr.output, full[np.arange(5), [0, 1, 2, 1, 0]], rtol=1e-5)
    assert np.abs(attr.delta).max() < 1e-4


def test_lightgbm_contributions_sum_to_the_raw_score_and_have_names():
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    f = rng.standard_normal((300, 4)).astype(np.float32)
    y = (f[:, 2] > 0).astype(int)
    model = lgb.LGBMClassifier(n_estimators=30, verbose=-1).fit(f, y)
    contrib = gbdt_contributions(model, f)
    raw = model.predict(f, raw_score=True)
    bias = model.predict(f, pred_contrib=True)[:, -1]
    np.testing.assert_allclose(contrib.sum(1) + bias, raw, rtol=1e-5, atol=1e-6)
    assert np.abs(contrib).mean(0).argmax() == 2
    tops = {"manufacturer_id": ["69", "2"]}
    assert aggregate_title("manufacturer_id_1_n_30d", tops) == "manufacturer_id = 2: events in 30 days"
    assert aggregate_title("value_90d", tops) == "spend in 90 days"
    assert aggregate_title("recency_days", tops) == "recency: days since the last event"


@pytest.mark.bigquery
def test_entity_history_is_the_same_on_bigquery(warehouse, bq_warehouse):
    events = _log(seed=3).head(400)
    warehouse.insert_df("events_denormalized", events)
    bq_warehouse.insert_df("events_denormalized", events)
    ex = as_of_examples(np.array(["c000", "c001", "c002", "c010"]), AS_OF - dt.timedelta(days=5))
    left = entity_history(warehouse, ["item_id", "brand"], {"item_id": ["brand"]}, ex, (7.0, 30.0))
    right = entity_history(bq_warehouse, ["item_id", "brand"], {"item_id": ["brand"]}, ex, (7.0, 30.0))
    for column in ("item_id", "brand"):
        assert len(left[column]) > 0
        pd.testing.assert_frame_equal(left[column], right[column], check_dtype=False, rtol=1e-9)


@pytest.mark.parametrize("dense_bins", [0, 4])
def test_fast_path_equals_integrated_gradients_on_the_input(dense_bins):
    """The attributions carried back through the first layer are exactly captum's Integrated
    Gradients on the compressed input (same quadrature), for a random deeper network; with a
    (trained) dense encoding too, whose pieces are not affine in the input."""
    from captum.attr import IntegratedGradients

    from bm_assets.core.foundation import BehavioralNet, add_dense_encoding

    rng = np.random.default_rng(1)
    net = task_network(None, 20, 16, 2, 0.0, [("item_id", 2, 4)], 3, seed=1)
    with torch.no_grad():  # a trained wide path (it starts at zero): its share must be carried back too
        net.wide.weight.copy_(torch.from_numpy(rng.standard_normal((3, 20)) * 0.3))
    x = np.abs(rng.standard_normal((6, 20)) * 3).astype(np.float32)
    net.set_input_stats(x)
    if dense_bins:
        add_dense_encoding(net, np.abs(rng.standard_normal((200, 20)) * 3).astype(np.float32), dense_bins)
        enc = net.dense_encoding
        assert (enc.start, enc.stop) == (8, 20)  # one sketch block of 2 x 4, then 12 dense entries
        with torch.no_grad():
            enc.linear.weight.copy_(torch.from_numpy(rng.standard_normal(tuple(enc.linear.weight.shape)) * 0.5))
    baseline = np.median(x, 0)
    target = np.array([0, 2, 1, 1, 0, 2])
    # one pass at 48 steps (the public function integrates rows with a large gap again, finer)
    fast = _integrated_gradients(net, x, "multilabel", target, 48, 1024, baseline)
    full = integrated_gradients(net, x, "multilabel", target=target, steps=48, baseline=baseline)
    change = np.abs(full.output - full.baseline_output)
    # complete: the dense pieces' kinks slow the quadrature (the gradient jumps there), so within 1 %
    assert (np.abs(full.delta) <= (1e-2 if dense_bins else 1e-3) * np.maximum(change, 0.01)).all()
    net.double()
    try:

        def forward(z):
            return torch.sigmoid(net(torch.sign(z) * torch.expm1(torch.abs(z))))

        z = BehavioralNet.compress(torch.from_numpy(x.astype(np.float64)))
        z0 = BehavioralNet.compress(torch.from_numpy(baseline.astype(np.float64)))
        plain = IntegratedGradients(forward).attribute(
            z, baselines=z0.expand_as(z).contiguous(), target=target.tolist(), n_steps=48, method="gausslegendre"
        )
    finally:
        net.float()
    np.testing.assert_allclose(fast.attr, plain.detach().numpy(), rtol=1e-6, atol=1e-10)


def test_regression_attributions_include_the_amount_path_exactly():
    """A regression network's amount path reads the raw dense inputs: the attributions still
    equal captum's Integrated Gradients on the compressed input and sum to the score change."""
    from captum.attr import IntegratedGradients

    from bm_assets.core.foundation import BehavioralNet, amount_path

    rng = np.random.default_rng(2)
    x = np.abs(rng.standard_normal((6, 20)) * 3).astype(np.float32)
    net = task_network(None, 20, 16, 2, 0.0, [], 1, seed=1)
    net.set_input_stats(x)
    net.y_mean.fill_(5.0)
    net.y_std.fill_(2.0)
    net.amount = amount_path(x, [], 1)
    with torch.no_grad():  # trained paths (both start at zero)
        net.wide.weight.copy_(torch.from_numpy(rng.standard_normal((1, 20)) * 0.3))
        net.amount.linear.weight.copy_(torch.from_numpy(rng.standard_normal((1, 20)) * 0.5))
    baseline = np.median(x, 0)
    fast = integrated_gradients(net, x, "regression", steps=48, baseline=baseline)
    score = KINDS["regression"].head(net, net(torch.from_numpy(x))).detach().numpy()
    np.testing.assert_allclose(fast.output, score, rtol=1e-5)
    np.testing.assert_allclose(fast.attr.sum(1), fast.output - fast.baseline_output, rtol=1e-6, atol=1e-8)
    net.double()
    try:

        def forward(z):
            return KINDS["regression"].head(net, net(torch.sign(z) * torch.expm1(torch.abs(z))))

        z = BehavioralNet.compress(torch.from_numpy(x.astype(np.float64)))
        z0 = BehavioralNet.compress(torch.from_numpy(baseline.astype(np.float64)))
        plain = IntegratedGradients(forward).attribute(
            z, baselines=z0.expand_as(z).contiguous(), n_steps=48, method="gausslegendre"
        )
    finally:
        net.float()
    np.testing.assert_allclose(fast.attr, plain.detach().numpy(), rtol=1e-6, atol=1e-9)


def test_entity_titles_name_each_present_attribute_once_per_row():
    """Titles are built once per distinct entity and spread back to every row: each row gets its
    own entity's attributes, and an attribute the catalogue lacks is left out, not printed."""
    frame = pd.DataFrame(
        {
            "row": [0, 0, 1, 1, 2, 2],
            "value": ["7", "8", "7", "9", "8", "10"],
            "brand": ["B", None, "B", None, None, "C"],
            "category": ["X", "Y", "X", None, "Y", None],
        }
    )
    assert list(_entity_titles(frame, "item_id")) == [
        "item_id = 7 (brand = B, category = X)",
        "item_id = 8 (category = Y)",
        "item_id = 7 (brand = B, category = X)",
        "item_id = 9",
        "item_id = 8 (category = Y)",
        "item_id = 10 (brand = C)",
    ]
    assert list(_entity_titles(frame[["row", "value"]], "brand")) == [f"brand = {v}" for v in frame["value"]]
