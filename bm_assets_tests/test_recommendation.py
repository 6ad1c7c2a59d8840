"""Next purchases: the exact-item history read before the split date only, and the buy-again
baselines (repurchase, repurchase_popularity) and the blend, on hand-made logs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from scipy import sparse

from bm_assets.core.evaluation import Split, TaskData, evaluate, fit_recommendation_baselines, repeat_share
from bm_assets.core.examples import ITEM_HISTORY_HALF_LIVES, item_history
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
    short, long = item_history(warehouse, _task(), ex, ["i1", "i2", "i3"])
    h_short, h_long = ITEM_HISTORY_HALF_LIVES
    # a bought i1 at T-1 (input side); its purchases at T and later are the window: not counted
    assert short[0].toarray().tolist() == [[np.float32(0.5 ** (1 / h_short)), 0, 0]]
    np.testing.assert_allclose(long[1].toarray(), [[0.5 ** (30 / h_long), 0, 0]], rtol=1e-6)
    np.testing.assert_allclose(long[2].toarray(), [[0, 0.5 ** (31 / h_long), 0]], rtol=1e-6)
    # the coupon of d is not a purchase: d has no history
    ex_d = pd.DataFrame({"client_id": ["d"], "t": [T]})
    assert item_history(warehouse, _task(), ex_d, ["i1"])[0].nnz == 0


def _split(history: np.ndarray, y: np.ndarray) -> Split:
    h = sparse.csr_matrix(history.astype(np.float32))
    return Split(np.zeros((len(y), 2), np.float32), np.zeros((len(y), 1), np.float32), y, None, [h, h])


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
