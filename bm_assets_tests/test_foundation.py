"""The network, its training loop and the metrics, on small synthetic arrays."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import torch

from bm_assets.core.evaluation import Split, TaskData, fit_network, metrics, ranking_metrics, rebuild, run_task
from bm_assets.core.examples import future_sketches, profile_inputs
from bm_assets.core.foundation import (
    BehavioralNet,
    TrainConfig,
    item_scores,
    normalise_sketch,
    task_network,
    train_foundation,
)
from bm_assets.core.kinds import top_k_columns
from bm_assets.core.sketches import fit_sketch_coder
from bm_assets.core.tasks import EvaluationConfig, FoundationConfig, TaskSpec
from bm_assets_tests.conftest import TRAINED_MODELS

LAYOUT = [("brand", 2, 8), ("item_id", 2, 8)]


def _synthetic(n: int, seed: int):
    """Profiles whose first 32 entries set the future bucket distribution: learnable."""
    rng = np.random.default_rng(seed)
    x = rng.poisson(1.0, (n, 40)).astype(np.float32)
    p = np.exp(x[:, :32].reshape(n, 4, 8))
    p /= p.sum(-1, keepdims=True)
    return x, p.reshape(n, 32).astype(np.float32)


CFG = TrainConfig(max_epochs=4, patience=2, batch_size=64, seed=3)


def _train(seed: int = 3):
    x, y = _synthetic(600, 0)
    xv, yv = _synthetic(200, 1)
    return train_foundation(
        x,
        y,
        xv,
        yv,
        LAYOUT,
        hidden=32,
        layers=2,
        dropout=0.1,
        cfg=TrainConfig(**{**CFG.__dict__, "seed": seed}),
    )


def test_foundation_is_repeatable_with_a_seed_and_learns():
    a, b, c = _train(3), _train(3), _train(4)
    for k, v in a.net.state_dict().items():
        assert torch.equal(v, b.net.state_dict()[k]), k
    assert any(not torch.equal(v, c.net.state_dict()[k]) for k, v in a.net.state_dict().items())
    assert [h["val_score"] for h in a.history] == [h["val_score"] for h in b.history]
    uniform = 4 * np.log(8)  # cross-entropy of a uniform prediction over 4 groups of 8 buckets
    assert -a.best_score < uniform - 0.1


def test_sketch_head_normalises_per_group():
    net = BehavioralNet(40, 16, 1, 0.0, LAYOUT)
    logp = net.sketch_logp(torch.ones(3, 40))
    assert logp.shape == (3, 4, 8)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(3, 4))
    assert net.sketch_logp(torch.ones(3, 40), "item_id").shape == (3, 2, 8)
    raw = np.array([[2, 0, 0, 0, 0, 0, 0, 2] + [0] * 8 + [1] * 8 + [0] * 8], dtype=np.float32)
    norm = normalise_sketch(raw, LAYOUT)
    np.testing.assert_allclose(norm.reshape(4, 8).sum(1), [1, 0, 1, 0])


def test_item_scores_sum_log_probabilities_of_the_items_buckets():
    logp = torch.log_softmax(torch.randn(2, 3, 4), -1)
    codes = torch.tensor([[0, 1, 2], [3, 3, 3]])
    got = item_scores(logp, codes)
    want = torch.stack(
        [logp[:, 0, 0] + logp[:, 1, 1] + logp[:, 2, 2], logp[:, 0, 3] + logp[:, 1, 3] + logp[:, 2, 3]], 1
    )
    torch.testing.assert_close(got, want)


def test_finetuning_starts_from_the_foundation_weights():
    found = _train().net
    tuned = task_network(found, 40, 32, 2, 0.1, LAYOUT, n_out=3, seed=0)
    scratch = task_network(None, 40, 32, 2, 0.1, LAYOUT, n_out=3, seed=0)
    for k, v in found.encoder.state_dict().items():
        assert torch.equal(v, tuned.encoder.state_dict()[k])
    assert not torch.equal(found.encoder[0].weight, scratch.encoder[0].weight)
    assert tuned.task_head.out_features == 3
    # the wide path (profile -> output) starts at zero: the first predictions are the encoder's alone
    assert found.wide is None and not tuned.wide.weight.any() and not tuned.wide.bias.any()
    x = torch.from_numpy(np.random.default_rng(0).random((5, 40), dtype=np.float32))
    with torch.no_grad():
        assert torch.equal(tuned.eval()(x), tuned.task_head(tuned.embed(x)))


def _dropout_rates(net) -> set[float]:
    return {m.p for m in net.encoder if isinstance(m, torch.nn.Dropout)}


def test_task_networks_take_the_task_dropout_and_leave_the_foundation_as_it_was():
    found = _train().net
    before = _dropout_rates(found)
    tuned = task_network(found, 40, 32, 2, 0.5, LAYOUT, n_out=3, seed=0)
    scratch = task_network(None, 40, 32, 2, 0.5, LAYOUT, n_out=3, seed=0)
    assert _dropout_rates(tuned) == _dropout_rates(scratch) == {0.5}
    assert _dropout_rates(found) == before and before != {0.5}
    for k, v in found.encoder.state_dict().items():  # weights copied, only the rate differs
        assert torch.equal(v, tuned.encoder.state_dict()[k])


def test_metrics_on_hand_examples():
    relevant = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    scores = np.array([[0.9, 0.8, 0.1, 0.0], [0.9, 0.8, 0.1, 0.0], [1, 1, 1, 1]])
    m = ranking_metrics(relevant, scores, k=1)
    assert m == {"hitrate@1": 0.5, "ndcg@1": 0.5}  # the client without relevant items is skipped
    m = ranking_metrics(relevant, scores, k=2)
    assert m["hitrate@2"] == 1.0 and m["ndcg@2"] == pytest.approx((1 / np.log2(3) + 1) / 2)
    y = np.array([[0, 1], [1, 0], [1, 1], [0, 0]], dtype=np.float32)
    p = np.array([[0.1, 0.9], [0.8, 0.1], [0.7, 0.6], [0.2, 0.3]])
    assert metrics("multilabel", y, p)["auroc"] == 1.0
    assert metrics("regression", np.array([1.0, 3.0]), np.array([2.0, 2.0])) == {"rmse": 1.0, "mae": 1.0}


def test_normalise_in_place_matches_the_formula_and_keeps_gradients_to_the_input():
    net = BehavioralNet(6, 8, 1, 0.0, [])
    rng = np.random.default_rng(0)
    x = torch.from_numpy(
        np.concatenate([rng.normal(0, 5, (50, 6)), np.zeros((2, 6)), -np.zeros((1, 6))]).astype(np.float32)
    )
    net.set_input_stats(x.numpy())
    before = x.clone()
    expected = (torch.sign(x) * torch.log1p(x.abs()) - net.x_mean) / net.x_std
    assert torch.equal(net.normalise(x), expected)
    assert torch.equal(x, before)  # the caller's batch is left as it was
    xg, xf = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net.normalise(xg).sum(), xg)
    (formula,) = torch.autograd.grad(((torch.sign(xf) * torch.log1p(xf.abs()) - net.x_mean) / net.x_std).sum(), xf)
    assert torch.equal(grad, formula) and (grad[:50] > 0).all()


def test_the_amount_path_reads_the_raw_dense_profile_and_starts_at_zero():
    """Regression networks get a linear path over the dense features after the sketch blocks,
    standardised but not compressed; at the start it adds nothing."""
    from bm_assets.core.kinds import KINDS
    from bm_assets.core.profiles import DENSE_FIXED, DENSE_PER_HALF_LIFE

    layout, n_h = [("brand", 2, 4), ("item_id", 3, 4)], 2
    n_sketch = 20 * n_h
    n_in = n_sketch + DENSE_PER_HALF_LIFE * n_h + DENSE_FIXED
    rng = np.random.default_rng(0)
    x = rng.exponential(50.0, (64, n_in)).astype(np.float32)
    net = task_network(None, n_in, 16, 1, 0.0, layout, 1, seed=0)
    net.set_input_stats(x)
    before = net(torch.from_numpy(x)).detach()
    KINDS["regression"].prepare_network(net, Split(x, x[:, :2], x[:, -1]))
    assert (net.amount.start, net.amount.stop) == (n_sketch, n_in)
    assert torch.equal(net(torch.from_numpy(x)).detach(), before)
    np.testing.assert_allclose(net.amount.raw_mean.numpy(), x[:, n_sketch:].mean(0), rtol=1e-5)
    with torch.no_grad():
        net.amount.linear.weight.zero_()
        net.amount.linear.weight[0, -1] = 1.0
    doubled = x.copy()
    doubled[:, -1] *= 2  # linear in the raw value, not in its logarithm
    step = (net.amount(torch.from_numpy(doubled)) - net.amount(torch.from_numpy(x))).detach().numpy()[:, 0]
    np.testing.assert_allclose(step, x[:, -1] / net.amount.raw_std[-1].item(), rtol=1e-4)
    classifier = task_network(None, n_in, 16, 1, 0.0, layout, 1, seed=0)
    KINDS["binary"].prepare_network(classifier, Split(x, x[:, :2], (x[:, -1] > 50).astype(np.float32)))
    assert classifier.amount is None


def test_top_k_columns_is_the_head_of_a_stable_descending_sort():
    """Ties at the k-th score go to the lower column, as a stable sort would order them."""
    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0], [5.0, -1.0, 4.0, 4.0, 4.0]])
    assert top_k_columns(scores, 2).tolist() == [[1, 2], [0, 1], [0, 2]]
    assert top_k_columns(scores, 4).tolist() == [[1, 2, 4, 3], [0, 1, 2, 3], [0, 2, 3, 4]]
    rng = np.random.default_rng(0)
    for k in (1, 3, 10, 12):  # 12 > the 11 columns: every column, ranked
        many_ties = rng.integers(-2, 3, size=(200, 11)).astype(np.float32)
        for s in (many_ties, rng.normal(size=(200, 11)), np.where(many_ties > 0, np.nan, many_ties)):
            assert np.array_equal(top_k_columns(s, k), np.argsort(-s, axis=1, kind="stable")[:, :k])


def _task_data(kind: str, target: dict) -> TaskData:
    task = TaskSpec(name="t", type=kind, horizon_days=14, target=target)
    splits = {}
    for i, (role, n) in enumerate([("train", 400), ("validation", 150), ("test", 150), ("holdout", 100)]):
        x, sk = _synthetic(n, 10 + i)
        y = (x[:, 0] > 1).astype(np.float32) if kind == "binary" else (sk[:, 16:24] > 0.15).astype(np.float32)
        splits[role] = Split(x, x[:, :8].copy(), y, sk[:, 16:32] if kind == "recommendation" else None)
    codes = np.stack([np.arange(8), np.arange(8)], 1) if kind == "recommendation" else None
    return TaskData(task, splits, [str(i) for i in range(8)] if kind == "recommendation" else None, LAYOUT, codes)


def test_run_task_fits_every_model_and_reports_validation_only():
    data = _task_data("binary", {"value": "count(*) > 0"})
    fc, ev = FoundationConfig(hidden=32), EvaluationConfig(task_max_epochs=3, task_patience=2)
    run = run_task(data, _train().net, fc, ev)
    assert set(run.models) == TRAINED_MODELS | {"prior"}
    assert all(not any(k.startswith("test_") for k in row) for row in run.report.values())
    assert run.report["lightgbm"]["validation_auroc"] > 0.9  # x[:, 0] is among its features
    assert run.report["prior"]["validation_auroc"] == 0.5
    # the hybrid sees the aggregates plus 16 components of the fine-tuned embedding, and its
    # saved artifact rebuilds the same predictions
    hybrid = run.models["lightgbm_fm"]
    assert hybrid.artifact["basis"].shape == (32, 16)
    val = data.splits["validation"]
    np.testing.assert_allclose(rebuild(data, "lightgbm_fm", hybrid.artifact)(val), hybrid.predict(val))
    # the blend averages the two models' predictions with the weight that is best on validation
    mix = run.models["finetuned_lightgbm"]
    w = mix.artifact["mix"]
    expected = w * run.models["finetuned"].predict(val) + (1 - w) * run.models["lightgbm"].predict(val)
    np.testing.assert_allclose(mix.predict(val), expected, rtol=1e-6)
    np.testing.assert_allclose(rebuild(data, "finetuned_lightgbm", mix.artifact)(val), mix.predict(val))
    best = max(run.report[m]["validation_auroc"] for m in ("finetuned", "lightgbm"))
    assert run.report["finetuned_lightgbm"]["validation_auroc"] >= best  # w = 0 and 1 are in the grid
    # the fine-tuned network with the aggregates in its input: x[:, 0] (the label's feature) is
    # among the aggregates, and its saved artifact rebuilds the same predictions
    appended = run.models["finetuned_with_aggregates"]
    assert appended.artifact["aggregates"] == 8 and appended.artifact["net"].x_mean.shape == (val.x.shape[1] + 8,)
    rebuilt = rebuild(data, "finetuned_with_aggregates", appended.artifact)
    np.testing.assert_allclose(rebuilt(val), appended.predict(val))


def test_side_inputs_start_as_the_network_was_and_then_count():
    """Appending inputs changes nothing until training: the new first-layer columns and wide
    weights start at zero; the side columns get their own standardisation."""
    import torch

    from bm_assets.core.foundation import predict, task_network, with_side_inputs

    net = task_network(_train().net, 40, 32, 1, 0.0, LAYOUT, 1, seed=0)
    torch.nn.init.normal_(net.wide.weight)  # as after training: the wide path is kept too
    x, _ = _synthetic(50, 3)
    side = np.random.default_rng(0).gamma(2.0, 5.0, (50, 3)).astype(np.float32)
    wider = with_side_inputs(net, side)
    out = lambda n, xb: n(xb)  # noqa: E731
    # float32 through a wider matmul: the zero columns change the summation order (seen at 4e-6)
    np.testing.assert_allclose(
        predict(wider, np.concatenate([x, side], 1), out), predict(net, x, out), rtol=1e-5, atol=1e-5
    )
    z = wider.normalise(torch.from_numpy(np.concatenate([x, side], 1))).detach().numpy()[:, -3:]
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0, ddof=1), 1, rtol=1e-3)
    assert net.x_mean.shape == (x.shape[1],)  # the original is left as it was


def test_a_network_with_aggregates_learns_what_only_the_aggregates_know():
    """A label set by an aggregate the profile does not hold: the fine-tuned network alone is
    at chance, with the aggregates appended it learns the label."""
    data = _task_data("binary", {"value": "count(*) > 0"})
    rng = np.random.default_rng(7)
    for s in data.splits.values():
        s.f = rng.gamma(2.0, 3.0, (len(s.y), 2)).astype(np.float32)
        s.y = (s.f[:, 1] > 6).astype(np.float32)
    fc = FoundationConfig(hidden=32, batch_size=32)
    ev = EvaluationConfig(task_max_epochs=10, task_patience=3, task_lr=3e-3, finetune_lr=3e-3)
    foundation = _train().net
    val = data.splits["validation"]
    auroc = {}
    for appended in (False, True):
        _, predict = fit_network(data, foundation, fc, ev, with_aggregates=appended)
        auroc[appended] = metrics("binary", val.y, predict(val))["auroc"]
    assert auroc[False] < 0.65 and auroc[True] > 0.9, auroc


def test_recommendation_reuses_the_sketch_head():
    data = _task_data("recommendation", {"column": "item_id"})
    fc, ev = FoundationConfig(hidden=32), EvaluationConfig(task_max_epochs=2)
    res, predict = fit_network(data, _train().net, fc, ev)
    scores = predict(data.splits["test"])
    assert scores.shape == (150, 8)
    assert res.net.task_head is None


def test_inputs_come_from_the_day_before_the_split_and_targets_from_the_window(warehouse):
    """No leakage: a profile source only ever asked for days before T; future sketches count
    events in [T, T+h) and nothing else."""
    asked: list[dt.date] = []

    def source(dates: list[dt.date]):
        asked.extend(dates)
        return {d: (np.array(["a", "b"]), np.full((2, 3), d.toordinal(), np.float32)) for d in dates}

    t = dt.date(2017, 3, 1)
    ex = pd.DataFrame({"client_id": ["b", "c", "a"], "t": [t, t, t + dt.timedelta(days=7)]})
    x = profile_inputs(source, ex)
    assert sorted(asked) == [t - dt.timedelta(days=1), t + dt.timedelta(days=6)]
    np.testing.assert_array_equal(
        x[:, 0], [(t - dt.timedelta(days=1)).toordinal(), 0, (t + dt.timedelta(days=6)).toordinal()]
    )

    coder = fit_sketch_coder("item_id", np.array(["i1", "i2", "i3"]), np.eye(3), depth=2, bits=2, seed=0)
    days = [t - dt.timedelta(days=1), t, t + dt.timedelta(days=13), t + dt.timedelta(days=14)]
    ev = pd.DataFrame({"client_id": "b", "event_date": days, "item_id": ["i1", "i2", "i2", "i3"]})
    warehouse.con.register("__ev", ev)
    warehouse.execute(["CREATE TABLE events_denormalized AS SELECT * FROM __ev"])
    ex = pd.DataFrame({"client_id": ["b"], "t": [t]})
    y = future_sketches(warehouse, {"item_id": coder}, ex, horizon_days=14)
    code_i2 = coder.encode(np.array(["i2"]))[0]
    want = np.zeros(8, np.float32)
    want[[code_i2[0], 4 + code_i2[1]]] = 1.0  # both window events are i2: all mass on its buckets
    np.testing.assert_array_equal(y[0], want)


def test_popularity_decode_shares_a_buckets_probability_by_item_frequency():
    codes = torch.tensor([[0, 0], [0, 0], [1, 1]])  # items 0 and 1 share every bucket
    log_prior = torch.log(torch.tensor([3.0, 1.0, 4.0]))
    logp = torch.log(torch.tensor([[[0.5, 0.5], [0.5, 0.5]]]))
    plain = item_scores(logp, codes)
    assert plain[0, 0] == plain[0, 1]
    scored = item_scores(logp, codes, log_prior)
    # p(bucket 0) = 0.5 split 3:1 between items 0 and 1; item 2 alone in bucket 1.
    probs = scored.exp()[0]
    torch.testing.assert_close(probs[0] / probs[1], torch.tensor(3.0))
    assert probs.argmax() == 2
    # Equally frequent items in buckets of equal mass: the same ranking as the plain decode.
    one_each = torch.tensor([[0, 0], [1, 1]])
    diff = item_scores(logp, one_each, torch.zeros(2)) - item_scores(logp, one_each)
    torch.testing.assert_close(diff[0, 0], diff[0, 1])


def test_task_dropout_applies_to_new_heads_and_recommendation_keeps_the_foundation_rate():
    foundation = _train().net
    fc = FoundationConfig(hidden=32, dropout=0.1)
    ev = EvaluationConfig(task_max_epochs=1, task_patience=1, task_dropout=0.5)
    binary = _task_data("binary", {"value": "count(*) > 0"})
    recommendation = _task_data("recommendation", {"column": "item_id"})
    for init in (foundation, None):  # fine-tuned and from scratch
        assert _dropout_rates(fit_network(binary, init, fc, ev)[0].net) == {0.5}
        assert _dropout_rates(fit_network(recommendation, init, fc, ev)[0].net) == {0.1}
        unset = ev.model_copy(update={"task_dropout": None})  # null: the foundation's rate
        assert _dropout_rates(fit_network(binary, init, fc, unset)[0].net) == {0.1}
    assert _dropout_rates(foundation) == {0.1}


def test_fine_tuning_fits_the_new_head_first_with_the_pretrained_layers_frozen():
    data = _task_data("binary", {"value": "count(*) > 0"})
    foundation = _train().net
    fc = FoundationConfig(hidden=32)
    # a vanishing learning rate after the head phase: what moved, moved while the head trained alone
    ev = EvaluationConfig(task_max_epochs=3, task_patience=1, finetune_lr=1e-12)  # head phase on by default
    assert ev.head_epochs is None  # the head phase runs to convergence on validation
    res, _ = fit_network(data, foundation, fc, ev)
    before, after = foundation.state_dict(), res.net.state_dict()
    for name, value in before.items():
        if name.startswith("encoder."):
            torch.testing.assert_close(after[name], value, rtol=0, atol=1e-9, msg=name)
    assert all(p.requires_grad for p in res.net.parameters())  # unfrozen for the whole-network phase
    # without the head phase the same fine-tuning leaves the head where it started (lr ~ 0)
    still, _ = fit_network(data, foundation, fc, ev.model_copy(update={"head_epochs": 0}))
    assert not torch.allclose(res.net.task_head.weight, still.net.task_head.weight)
    assert not torch.allclose(res.net.wide.weight, still.net.wide.weight)  # the wide path trains with the head
    capped, _ = fit_network(data, foundation, fc, ev.model_copy(update={"head_epochs": 1}))
    assert not torch.allclose(capped.net.task_head.weight, still.net.task_head.weight)


def test_the_dense_encoding_cuts_each_dense_entry_at_its_quantiles_and_starts_at_zero():
    """Task networks may read the dense entries after the sketch blocks through a piecewise-linear
    encoding: piece t of an entry is 0 below its t-th quantile edge, 1 above the next and linear
    between; repeated quantiles merge pieces; at the start it adds nothing to the network."""
    from bm_assets.core.foundation import add_dense_encoding
    from bm_assets.core.profiles import DENSE_FIXED, DENSE_PER_HALF_LIFE

    layout, n_h = [("brand", 2, 4), ("item_id", 3, 4)], 2
    n_sketch = 20 * n_h
    n_dense = DENSE_PER_HALF_LIFE * n_h + DENSE_FIXED
    rng = np.random.default_rng(0)
    x = rng.exponential(5.0, (400, n_sketch + n_dense)).astype(np.float32)
    x[:, n_sketch] = 0.0  # an entry that never varies: no piece
    x[:, n_sketch + 1] = (np.arange(400) % 10 == 0) * 3.0  # mostly zero: one piece
    net = task_network(None, x.shape[1], 16, 2, 0.0, layout, 1, seed=0)
    net.set_input_stats(x)
    before = net(torch.from_numpy(x)).detach()
    add_dense_encoding(net, x, bins=4)
    enc = net.dense_encoding
    assert (enc.start, enc.stop, enc.bins) == (n_sketch, x.shape[1], 4)
    assert torch.equal(net(torch.from_numpy(x)).detach(), before)
    assert enc.used.sum(1).tolist()[:3] == [0.0, 1.0, 4.0]
    z = (
        (BehavioralNet.compress(torch.from_numpy(x[:, n_sketch:])) - net.x_mean[n_sketch:]) / net.x_std[n_sketch:]
    ).numpy()
    edges = np.quantile(z[:, 2].astype(np.float64), [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(enc.lower[2].numpy(), edges[:-1], rtol=1e-5)
    probe = torch.zeros(3, x.shape[1] - n_sketch)
    probe[:, 2] = torch.tensor([edges[0] - 1.0, (edges[1] + edges[2]) / 2, edges[4] + 1.0])
    pieces = enc.pieces(probe).reshape(3, -1, 4)[:, 2].numpy()
    np.testing.assert_allclose(pieces, [[0, 0, 0, 0], [1, 0.5, 0, 0], [1, 1, 1, 1]], atol=1e-5)
    assert enc.linear.weight.requires_grad and not enc.lower.requires_grad


def test_dense_bins_give_task_heads_a_dense_encoding_and_leave_recommendation_alone():
    foundation = _train().net
    fc = FoundationConfig(hidden=32)
    ev = EvaluationConfig(task_max_epochs=2, task_patience=1, dense_bins=4)
    binary = _task_data("binary", {"value": "count(*) > 0"})
    recommendation = _task_data("recommendation", {"column": "item_id"})
    for init in (foundation, None):
        net = fit_network(binary, init, fc, ev)[0].net
        assert net.dense_encoding is not None and net.dense_encoding.linear.weight.abs().sum() > 0  # it trained
        assert fit_network(recommendation, init, fc, ev)[0].net.dense_encoding is None
        assert fit_network(binary, init, fc, ev.model_copy(update={"dense_bins": 0}))[0].net.dense_encoding is None
    assert foundation.dense_encoding is None
