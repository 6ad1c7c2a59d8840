"""Next purchases: the exact-item history read before the split date only, the buy-again
baselines (repurchase, repurchase_popularity), the blend and the history ranker, on hand-made
logs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from scipy import sparse

from bm_assets.core.artifacts import load_task_models, save_task_models
from bm_assets.core.evaluation import (
    Split,
    TaskData,
    evaluate,
    fit_ranker,
    fit_recommendation_baselines,
    rebuild,
    repeat_share,
)
from bm_assets.core.examples import ITEM_HISTORY_HALF_LIVES, item_history, item_repeat_stats
from bm_assets.core.kinds import LabelSpace
from bm_assets.core.ranking import ITEM_STATS, ItemHistory, candidate_pairs, ranker_feature_names
from bm_assets.core.tasks import TaskSpec
from bm_assets_tests.test_tasks import ROWS, T, _events, _load

D = dt.timedelta


def _task() -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "name": "next",
            "type": "recommendation",
            "horizon_days": 14,
            "target": {"column": "item_id", "where": "event_type = 'purchase'"},
        }
    )


def test_item_history_counts_past_purchases_decayed_and_never_the_window(warehouse):
    _load(warehouse, _events(ROWS))
    ex = pd.DataFrame({"client_id": ["a", "b", "c"], "t": [T, T, T]})
    short, long = item_history(warehouse, _task(), ex, ["i1", "i2", "i3"]).decayed
    h_short, h_long = ITEM_HISTORY_HALF_LIVES
    # a bought i1 at T-1 (input side); its purchases at T and later are the window: not counted
    assert short[0].toarray().tolist() == [[np.float32(0.5 ** (1 / h_short)), 0, 0]]
    np.testing.assert_allclose(long[1].toarray(), [[0.5 ** (30 / h_long), 0, 0]], rtol=1e-6)
    np.testing.assert_allclose(long[2].toarray(), [[0, 0.5 ** (31 / h_long), 0]], rtol=1e-6)
    # the coupon of d is not a purchase: d has no history
    ex_d = pd.DataFrame({"client_id": ["d"], "t": [T]})
    assert item_history(warehouse, _task(), ex_d, ["i1"]).days.nnz == 0


def test_item_history_counts_purchase_days_and_their_dates_before_the_split(warehouse):
    d = lambda days: T - D(days)  # noqa: E731
    rows = [
        ("x", d(400), "purchase", "i1", "m1", "c1", 1.0),  # before the 365-day lookback
        ("x", d(200), "purchase", "i2", "m2", "c2", 1.0),
        ("x", d(100), "purchase", "i1", "m1", "c1", 1.0),
        ("x", d(50), "purchase", "i1", "m1", "c1", 1.0),
        ("x", d(10), "purchase", "i1", "m1", "c1", 1.0),
        ("x", d(10), "purchase", "i1", "m1", "c1", 1.0),  # a second line on the same day
        ("x", d(10), "purchase", "i9", "m9", "c9", 1.0),  # not a candidate: counts as a client day only
        ("x", T, "purchase", "i2", "m2", "c2", 1.0),  # the window being predicted
        ("y", T + D(1), "purchase", "i1", "m1", "c1", 1.0),
    ]
    _load(warehouse, _events(rows))
    ex = pd.DataFrame({"client_id": ["x", "y"], "t": [T, T]})
    h = item_history(warehouse, _task(), ex, ["i1", "i2"])
    assert h.days.toarray().tolist() == [[3, 1], [0, 0]]
    assert h.recent_days.toarray().tolist() == [[2, 0], [0, 0]]  # the last 91 days: T-50 and T-10
    assert h.since_last.toarray().tolist() == [[10, 200], [0, 0]]
    assert h.since_first.toarray().tolist() == [[100, 200], [0, 0]]
    assert h.client_days.tolist() == [4, 0] and h.client_recent_days.tolist() == [2, 0]
    np.testing.assert_allclose(
        h.decayed[1].toarray()[0, 0], 0.5 ** (100 / 90) + 0.5 ** (50 / 90) + 2 * 0.5 ** (10 / 90)
    )
    # each example's history is the same whatever split dates share its batch: the read window
    # (the lookback of the earliest date to the latest date) never cuts another date's lookback
    far = pd.DataFrame({"client_id": ["x", "x", "y"], "t": [T - D(300), T, T + D(2)]})
    together = item_history(warehouse, _task(), far, ["i1", "i2"])
    for i in range(len(far)):
        alone = item_history(warehouse, _task(), far.iloc[[i]], ["i1", "i2"])
        parts = zip(
            [*together.decayed, together.days, together.since_last],
            [*alone.decayed, alone.days, alone.since_last],
            strict=True,
        )
        for a, b in parts:
            np.testing.assert_allclose(a[i].toarray(), b[0].toarray())
        assert together.client_days[i] == alone.client_days[0]
    # T-300 looks back to i1 at T-400 (outside T's lookback); y's purchase at T+1 is before T+2
    assert together.days.toarray().tolist() == [[1, 0], [3, 1], [1, 0]]
    assert h.subset(np.array([1])).days.nnz == 0


def test_item_repeat_stats_read_buyers_repeats_and_cycles_before_the_cutoff(warehouse):
    c = T
    rows = [
        ("x", c - D(30), "purchase", "i1", "m1", "c1", 1.0),
        ("x", c - D(20), "purchase", "i1", "m1", "c1", 1.0),
        ("x", c - D(10), "purchase", "i1", "m1", "c1", 1.0),  # every 10 days
        ("y", c - D(5), "purchase", "i1", "m1", "c1", 1.0),  # once
        ("y", c + D(1), "purchase", "i1", "m1", "c1", 1.0),  # after the cutoff: not read
        ("z", c - D(40), "purchase", "i1", "m1", "c1", 1.0),
        ("z", c - D(10), "purchase", "i1", "m1", "c1", 1.0),  # every 30 days
        ("z", c + D(2), "purchase", "i2", "m2", "c2", 1.0),  # i2 only after the cutoff
    ]
    _load(warehouse, _events(rows))
    stats = item_repeat_stats(warehouse, _task(), ["i1", "i2"], c)
    assert stats.shape == (2, len(ITEM_STATS))
    np.testing.assert_allclose(stats[0], [np.log1p(3), 2 / 3, 20.0], rtol=1e-6)
    assert stats[1, 0] == 0 and np.isnan(stats[1, 1:]).all()


def _split(history: np.ndarray, y: np.ndarray) -> Split:
    h = sparse.csr_matrix(history.astype(np.float32))
    seen = (h > 0).astype(np.float32).tocsr()
    days = np.asarray(seen.sum(1), np.float32).ravel()
    nowhen = sparse.csr_matrix(h.shape, dtype=np.float32)
    item_history_ = ItemHistory([h, h], seen, seen, nowhen, nowhen, days, days)
    return Split(np.zeros((len(y), 2), np.float32), np.zeros((len(y), 1), np.float32), y, None, item_history_)


def test_repurchase_ranks_the_clients_own_items_first_with_popularity_breaking_ties():
    # 4 candidates ordered by popularity (0 most popular); client 0 bought item 3 often, item 2 once
    history = np.array([[0, 0, 1, 5], [0, 0, 0, 0], [2, 0, 0, 0]], np.float32)
    y = np.array([[0, 0, 0, 1], [0, 1, 0, 0], [1, 0, 0, 0]], np.float32)
    split = _split(history, y)
    prior = np.log(np.array([40.0, 30.0, 20.0, 10.0]))
    data = TaskData(
        _task(),
        {"train": split, "validation": split, "test": split},
        ["a", "b", "c", "d"],
        item_codes=np.zeros((4, 1), np.int64),
        item_log_prior=prior,
    )
    models = fit_recommendation_baselines(data, net=None)
    assert set(models) == {"repurchase", "repurchase_popularity"}
    scores = models["repurchase"].predict(split)
    # client 0: its own items by count (3, 2), then the rest by popularity (0, 1)
    assert np.argsort(-scores[0], kind="stable").tolist() == [3, 2, 0, 1]
    # client 1 has no history: pure popularity
    assert np.argsort(-scores[1], kind="stable").tolist() == [0, 1, 2, 3]
    report = evaluate(data, models, roles=("test",))
    # clients 0 and 2 hit at rank 1 with a repeat; client 1's item ranks 2nd (not a repeat)
    assert report["repurchase"]["test_ndcg@10"] == np.mean([1.0, 1 / np.log2(3), 1.0])
    assert report["repurchase"]["test_repeat_share_of_hits@10"] == 2 / 3
    assert repeat_share(split, scores, k=1) == 1.0  # at k=1 only the two repeats are hits
    # the popularity weight is chosen on validation and never makes it worse there
    assert report["repurchase_popularity"]["test_ndcg@10"] >= report["repurchase"]["test_ndcg@10"]


def _cycle_split(n: int, m: int, rng: np.random.Generator) -> Split:
    """Every client bought every item on 5 days, each item on its own cycle (7, 14, 21 or 28
    days); the relevant items are those falling due within the 14-day window. Decayed counts
    are equal, so only the dates tell the items apart."""
    cycle = 7.0 * (1 + np.arange(m) % 4)
    since_last = rng.uniform(1, 28, (n, m)).astype(np.float32)
    due = cycle[None, :] - since_last
    y = ((due >= 0) & (due < 7)).astype(np.float32)
    full = lambda v: sparse.csr_matrix(np.broadcast_to(np.float32(v), (n, m)).copy())  # noqa: E731
    h = ItemHistory(
        [full(2.0), full(4.0)],
        full(5.0),
        full(3.0),
        sparse.csr_matrix(since_last),
        sparse.csr_matrix(since_last + 4 * cycle[None, :].astype(np.float32)),
        np.full(n, 20, np.float32),
        np.full(n, 10, np.float32),
    )
    return Split(np.zeros((n, 2), np.float32), np.zeros((n, 1), np.float32), y, None, h, np.arange(n).astype(str))


def _cycle_data(m: int, sizes: tuple[int, int, int], seed: int, popularity: tuple[float, float]) -> TaskData:
    """Train, validation and test splits of `_cycle_split` over m candidates, popularity falling
    linearly from popularity[0] to popularity[1], item statistics that know each cycle."""
    rng = np.random.default_rng(seed)
    splits = {role: _cycle_split(n, m, rng) for role, n in zip(("train", "validation", "test"), sizes, strict=True)}
    stats = np.stack([np.full(m, 3.0), np.full(m, 0.9), 7.0 * (1 + np.arange(m) % 4)], axis=1)
    return TaskData(
        _task(),
        splits,
        [f"i{j}" for j in range(m)],
        item_codes=np.zeros((m, 1), np.int64),
        item_log_prior=np.log(np.linspace(*popularity, m)),
        item_stats=stats,
    )


def test_the_history_ranker_learns_when_an_item_falls_due_and_survives_a_save():
    m = 24
    data = _cycle_data(m, (800, 300, 300), seed=0, popularity=(100, 50))
    splits, prior = data.splits, data.item_log_prior
    models = fit_recommendation_baselines(data, net=None, seed=0)
    assert set(models) == {"repurchase", "repurchase_popularity", "history_ranker"}
    report = evaluate(data, models, roles=("test",))
    # equal counts: repurchase ranks by popularity alone; the ranker reads the cycles
    assert report["history_ranker"]["test_ndcg@10"] > report["repurchase"]["test_ndcg@10"] + 0.2
    rows, items = candidate_pairs(splits["test"].history)
    assert len(rows) == 300 * m  # every bought item is a candidate
    # the saved bundle scores the same
    before = models["history_ranker"].predict(splits["test"])
    space = LabelSpace(data.labels, data.item_codes, prior)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        saved = load_task_models(
            save_task_models({"history_ranker": models["history_ranker"]}, {}, space, Path(tmp) / "b")
        )
        after = rebuild(data, "history_ranker", saved.models["history_ranker"]["artifact"])(splits["test"])
    np.testing.assert_array_equal(before, after)
    booster = saved.models["history_ranker"]["artifact"]["ranker"].models[0]
    assert booster.feature_name() == ranker_feature_names(2, with_model=False)  # the saved model names its inputs


def test_the_ranker_puts_bought_and_popular_candidates_before_the_rest():
    m = 80  # more candidates than the popular ones every list gets
    data = _cycle_data(m, (300, 200, 50), seed=1, popularity=(1000, 10))
    splits = data.splits
    # client 0 of the test split bought nothing but the last candidate
    h = splits["test"].history
    keep = np.ones(m, np.float32)
    keep[:-1] = 0
    mask = sparse.csr_matrix(np.vstack([keep[None, :], np.ones((49, m), np.float32)]))
    splits["test"].history = ItemHistory(
        [d.multiply(mask).tocsr() for d in h.decayed],
        h.days.multiply(mask).tocsr(),
        h.recent_days.multiply(mask).tocsr(),
        h.since_last.multiply(mask).tocsr(),
        h.since_first.multiply(mask).tocsr(),
        h.client_days,
        h.client_recent_days,
    )
    predict = fit_ranker(data, "history_ranker", seed=0).predict
    scores = predict(splits["test"])[0]
    order = np.argsort(-scores, kind="stable")
    ranked = set(order[:51].tolist())
    assert ranked == set(range(50)) | {m - 1}  # the 50 most popular and its own item
    assert scores[order[50]] > scores[order[51]] + 0.5  # ... above the rest
    rest = order[51:]
    assert rest.tolist() == sorted(rest.tolist())  # the others by popularity
    # a client's scores are its own: the same row scored alone or in its batch
    alone = predict(splits["test"].subset(np.array([3])))[0]
    np.testing.assert_array_equal(alone, predict(splits["test"])[3])


def test_ranker_inputs_ignore_events_at_or_after_the_split_and_the_cutoff(warehouse):
    """No leakage into the ranker's inputs: poisoning every client's purchases from the split
    date (history) or the cutoff (item statistics) on leaves them bit-identical; the same
    poison one day earlier changes them, so the comparison can fail."""
    ex = pd.DataFrame({"client_id": ["a", "b", "c"], "t": [T, T, T]})
    labels = ["i1", "i2", "i3"]

    def inputs(rows):
        _load(warehouse, _events(rows))
        h = item_history(warehouse, _task(), ex, labels)
        mats = [*h.decayed, h.days, h.recent_days, h.since_last, h.since_first]
        return [m.toarray() for m in mats] + [h.client_days, h.client_recent_days], item_repeat_stats(
            warehouse, _task(), labels, T
        )

    def poison(day):
        return [(c, day + D(k), "purchase", i, "m1", "c1", 1e6) for c in "abcz" for i in labels for k in (0, 1, 13)]

    before, stats = inputs(ROWS)
    after, stats_after = inputs(ROWS + poison(T))
    for x, y in zip(before, after, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(stats, stats_after)
    leaky, stats_leaky = inputs(ROWS + poison(T - D(1)))
    assert not all(np.array_equal(x, y) for x, y in zip(before, leaky, strict=True))
    assert not np.array_equal(stats, stats_leaky, equal_nan=True)


def test_no_ranker_without_a_relevant_candidate_to_stop_on():
    data = _cycle_data(12, (100, 50, 50), seed=2, popularity=(100, 50))
    data.splits["validation"].y[:] = 0  # nobody in the validation window bought a candidate
    assert fit_ranker(data, "history_ranker", seed=0) is None
    assert "history_ranker" not in fit_recommendation_baselines(data, net=None, seed=0)
