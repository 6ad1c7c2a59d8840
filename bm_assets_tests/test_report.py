"""Evaluation report pieces: a metrics table in protocol order and narrow, and a figure with only
the panels that were computed."""

import io

from matplotlib import image

from bm_assets.core.report import curves_png, metrics_markdown
from bm_assets.core.tasks import TaskSpec

TASK = TaskSpec.model_validate(
    {"name": "churn", "type": "binary", "horizon_days": 14, "target": {"value": "count(*) = 0", "default": 1}}
)


def test_metrics_table_is_ordered_and_narrow():
    row = {
        "train_seconds": 12.3456,
        "epochs": 7,
        "test_auroc": 0.712345,
        "holdout_auroc": 0.70111,
        "validation_auroc": 0.7234567,
        "test_average_precision": 0.4567891,
        "validation_average_precision": 0.45,
    }
    table = metrics_markdown({"finetuned": row, "prior": {**row, "test_auroc": float("nan")}})
    header, _, first, second = table.splitlines()
    assert header == "| model | val auroc | val AP | test auroc | test AP | holdout auroc | train s | epochs |"
    assert first == "| finetuned | 0.723 | 0.45 | 0.712 | 0.457 | 0.701 | 12.3 | 7 |"
    assert "| n/a |" in second


def _panels(png: bytes) -> float:
    """Width / height of the figure: 5.5 x 4 inches per panel."""
    h, w, _ = image.imread(io.BytesIO(png)).shape
    return w / h


def test_curves_only_where_computed():
    assert curves_png(TASK, [], {}) is None
    history = {"finetuned": [{"seconds": 0.1, "val_score": 0.6}, {"seconds": 0.2, "val_score": 0.65}]}
    one = curves_png(TASK, [], history)
    curve = [
        {"model": "finetuned", "fraction": f, "test": 0.6 + f / 10, "validation": 0.6, "metric": "auroc"}
        for f in (0.1, 1.0)
    ]
    two = curves_png(TASK, curve, history)
    assert round(_panels(one) * 4 / 5.5, 1) == 1.0
    assert round(_panels(two) * 4 / 5.5, 1) == 2.0


def test_the_pick_is_the_best_on_validation_never_on_test():
    from bm_assets.core.report import metrics_markdown, selected_model
    from bm_assets.core.tasks import TaskSpec

    spend = TaskSpec(name="spend", type="regression", horizon_days=7, target={"value": "sum(value)", "default": 0})
    models = {
        "finetuned": {"validation_rmse": 70.0, "test_rmse": 90.0},
        "lightgbm": {"validation_rmse": 72.0, "test_rmse": 60.0},
        "prior": {"validation_rmse": float("nan"), "test_rmse": 100.0},
    }
    assert selected_model(spend, models) == {"model": "finetuned", "by": "validation_rmse", "value": 70.0}
    churn = TaskSpec(name="churn", type="binary", horizon_days=7, target={"value": "count(*) = 0", "default": 1})
    assert selected_model(churn, {"a": {"validation_auroc": 0.7}, "b": {"validation_auroc": 0.8}})["model"] == "b"
    assert selected_model(churn, {"a": {"test_auroc": 0.7}}) is None
    assert "| **finetuned** (pick) |" in metrics_markdown(models, "finetuned")


def test_bootstrap_intervals_resample_clients():
    import numpy as np

    from bm_assets.core.evaluation import bootstrap_intervals, ranking_metrics

    rng = np.random.default_rng(0)
    clients = np.repeat(np.arange(300), 2).astype(str)  # two rows per client
    y = rng.integers(0, 2, len(clients)).astype(np.float32)
    perfect, noise = y + 0.0, rng.random(len(y))
    out = bootstrap_intervals("binary", "auroc", y, {"good": perfect, "lightgbm": noise}, clients, n_boot=100)
    assert out["reference"] == "lightgbm" and out["models"]["good"]["ci95"] == [1.0, 1.0]
    lo, hi = out["models"]["good"]["diff_ci95"]
    assert 0.4 < lo < hi < 0.6 and "diff_ci95" not in out["models"]["lightgbm"]
    same = bootstrap_intervals("binary", "auroc", y, {"a": noise, "lightgbm": noise}, clients, n_boot=50)
    assert same["models"]["a"]["diff_ci95"] == [0.0, 0.0]
    # ranking metrics are means over rows: the interval brackets the point estimate
    relevant = (rng.random((600, 30)) < 0.1).astype(np.float32)
    scores = relevant + rng.random((600, 30))
    point = ranking_metrics(relevant, scores)["ndcg@10"]
    rec = bootstrap_intervals(
        "recommendation", "ndcg@10", relevant, {"m": scores, "popularity": rng.random((600, 30))}, clients, 100
    )
    lo, hi = rec["models"]["m"]["ci95"]
    assert rec["reference"] == "popularity" and lo <= point <= hi and hi - lo < 0.1


def test_weighted_metrics_equal_the_metric_on_repeated_rows():
    import numpy as np

    from bm_assets.core.evaluation import metrics
    from bm_assets.core.kinds import KINDS

    rng = np.random.default_rng(3)
    w = rng.integers(0, 3, 200)
    idx = np.repeat(np.arange(200), w)
    y = (rng.random((200, 3)) < 0.3).astype(np.float32)
    p = np.round(rng.random((200, 3)), 1)  # ties
    fn = KINDS["multilabel"].weighted_metric("auroc", y, p)
    assert abs(fn(w) - metrics("multilabel", y[idx], p[idx])["auroc"]) < 1e-12
    yr, pr = rng.normal(size=200), rng.normal(size=200)
    for m in ("rmse", "mae"):
        weighted = KINDS["regression"].weighted_metric(m, yr, pr)(w)
        assert abs(weighted - metrics("regression", yr[idx], pr[idx])[m]) < 1e-9
    yc = rng.integers(-1, 3, 200)
    pc = rng.random((200, 3))
    acc = KINDS["multiclass"].weighted_metric("accuracy", yc, pc)(w)
    assert abs(acc - metrics("multiclass", yc[idx], pc[idx])["accuracy"]) < 1e-12
