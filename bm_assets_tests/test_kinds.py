"""The task-kind registry: every type of tasks.yaml is one class in KINDS, and each implements
the whole interface (labels, head, loss, metrics, LightGBM, prior, scores) end to end."""

from __future__ import annotations

import datetime as dt
from typing import get_args

import duckdb
import numpy as np
import pytest

from bm_assets.core.evaluation import Split, TaskData, evaluate, intervals_on_test, learning_curve, run_task
from bm_assets.core.kinds import KINDS, TaskKind, auroc, average_precision, kind_of
from bm_assets.core.tasks import EvaluationConfig, FoundationConfig, TaskSpec, TaskType
from bm_assets_tests.conftest import TRAINED_MODELS
from bm_assets_tests.test_foundation import LAYOUT, _synthetic, _train

LABELS = [f"l{i}" for i in range(8)]


def test_every_task_type_is_a_kind():
    assert list(KINDS) == list(get_args(TaskType))
    for name, kind in KINDS.items():
        assert isinstance(kind, TaskKind) and kind.name == name and kind.metric_names


def _target(kind: TaskKind) -> np.ndarray:
    return {"value": "count(*)"} if not kind.column_target else {"column": "item_id", "top_n": 8}


def _y(name: str, x: np.ndarray, sk: np.ndarray) -> np.ndarray:
    """Learnable targets of each type from the synthetic profiles."""
    labels = sk[:, 16:24]
    return {
        "binary": (x[:, 0] > 1).astype(np.float32),
        "regression": (3 * x[:, 0] + x[:, 1]).astype(np.float32),
        "multilabel": (labels > 0.15).astype(np.float32),
        "multiclass": labels.argmax(1).astype(np.int64),
    }[name]


@pytest.mark.parametrize("name", [n for n in KINDS if n != "recommendation"])  # test_recommendation.py
def test_each_kind_trains_evaluates_and_scores(name):
    kind = KINDS[name]
    task = TaskSpec(name="t", type=name, horizon_days=14, target=_target(kind))
    assert kind_of(task) is kind
    splits = {}
    for i, (role, n) in enumerate([("train", 400), ("validation", 150), ("test", 150), ("holdout", 100)]):
        x, sk = _synthetic(n, 10 + i)
        splits[role] = Split(x, x[:, :8].copy(), _y(name, x, sk), clients=np.arange(n).astype(str))
    labels = None if kind.one_score else LABELS
    data = TaskData(task, splits, labels, LAYOUT)
    ev = EvaluationConfig(task_max_epochs=2, task_patience=1)
    run = run_task(data, _train().net, FoundationConfig(hidden=32), ev)
    assert set(run.models) == TRAINED_MODELS | {kind.prior_name}
    report = evaluate(data, run.models)
    test = data.splits["test"]
    for model, row in report.items():
        assert {f"test_{m}" for m in kind.metric_names} <= set(row), model
        pred = run.models[model].predict(test)
        assert pred.shape == ((len(test.y),) if kind.one_score else (len(test.y), len(LABELS))), model
        assert np.isfinite(pred).all(), model
    # the kind's daily score rows, and its export over them, for the fine-tuned network
    pred = run.models["finetuned"].predict(test)[:5]
    ids = np.array([f"c{i}" for i in range(5)])
    frame = kind.score_frame(task, labels, ids, pred, dt.date(2017, 12, 1))
    assert list(frame.columns) == ["client_id", "score_date", "label", "score"]
    assert len(frame) == 5 * (1 if kind.one_score else len(LABELS))
    frame["model_version"] = "1"
    frame["as_of_date"] = frame["score_date"]
    con = duckdb.connect()
    con.register("day", frame)
    out = con.execute(kind.export_sql("SELECT * FROM day", top_k=3)).df()
    assert len(out) == len(frame) and "score" in out and "model_version" in out
    assert kind.empty_target(test.y) is None and kind.label_rate(test.y)


def test_evaluation_reuses_what_it_already_fitted_and_predicted():
    """At 100% of labels the curve takes the task's own fine-tuned, scratch and LightGBM models
    instead of fitting them again, and the bootstrap takes evaluate's test predictions: computing
    them again gives the same numbers, so nothing changes but the time."""
    task = TaskSpec(name="t", type="binary", horizon_days=14, target={"value": "count(*)"})
    splits = {}
    for i, (role, n) in enumerate([("train", 300), ("validation", 120), ("test", 120)]):
        x, sk = _synthetic(n, 20 + i)
        splits[role] = Split(x, x[:, :8].copy(), _y("binary", x, sk), clients=np.arange(n).astype(str))
    data = TaskData(task, splits, None, LAYOUT)
    ev = EvaluationConfig(task_max_epochs=2, task_patience=1, label_fractions=[0.5, 1.0])
    foundation, fcfg = _train().net, FoundationConfig(hidden=32)
    run = run_task(data, foundation, fcfg, ev)
    reused = learning_curve(data, foundation, fcfg, ev, fitted_on_all=run.models)
    refitted = learning_curve(data, foundation, fcfg, ev)

    def by_key(rows):
        return {(r["fraction"], r["model"]): (r["n_train"], r["validation"], r["test"]) for r in rows}

    assert set(by_key(reused)) == {(f, m) for f in (0.5, 1.0) for m in ("finetuned", "scratch", "lightgbm")}
    assert by_key(reused) == by_key(refitted)
    for row in reused:  # the 100% rows are the task's models: their own training time
        if row["fraction"] == 1.0:
            assert row["train_seconds"] == round(run.models[row["model"]].seconds, 3)
    # the bootstrap reuses evaluate's test predictions: the same intervals as predicting again
    test_predictions: dict = {}
    assert evaluate(data, run.models, test_predictions=test_predictions) == evaluate(data, run.models)
    assert set(test_predictions) == set(run.models)
    reused_preds = intervals_on_test(data, run.models, 50, 0, test_predictions)
    assert reused_preds == intervals_on_test(data, run.models, 50, 0) and reused_preds["models"]


def test_auroc_and_average_precision_equal_scikit_learns_with_ties():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(300):
        n = int(rng.integers(2, 200))
        y = (rng.random(n) < rng.random()).astype(np.float32)
        if not 0 < y.sum() < n:
            continue
        # continuous scores, a few tied levels, rounded scores
        s = [rng.random(n), rng.integers(0, 4, n).astype(np.float64), np.round(rng.random(n), 1)][trial % 3]
        assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
        checked += 1
    assert checked > 200
    assert auroc(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.5, 0.5])) == 0.875  # by hand: 3.5 of 4 pairs
    with pytest.raises(ValueError, match="NaN"):
        auroc(np.array([0, 1]), np.array([0.1, np.nan]))
