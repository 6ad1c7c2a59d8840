"""Task kinds: everything that differs between task types, one class per type, in KINDS.

A kind says how its target is written in tasks.yaml, how labels are built from the future
window's rows, the size of the network's head, its loss and output, its metrics (and their
bootstrap weights), its LightGBM objective, its prior baseline, the rows of its daily scores
and of their export. The rest of the package looks a kind up (`kind_of(task)`) and never
branches on the task type. Adding a task type is one subclass registered here, and a test
(docs/tasks.md)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd

from bm_assets.config import TaskConfigError
from bm_assets.core.sql import column_values_sql

if TYPE_CHECKING:
    import lightgbm as lgb
    import torch

    from bm_assets.core.evaluation import Split, TaskData
    from bm_assets.core.foundation import BehavioralNet
    from bm_assets.core.sketches import SketchCoder
    from bm_assets.core.tasks import TaskSpec

# torch, LightGBM and scikit-learn are imported where a kind trains or scores, so that reading
# tasks.yaml (which validates each task against its kind) stays fast.
Loss = Callable[["BehavioralNet", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]
Output = Callable[["BehavioralNet", "torch.Tensor"], "torch.Tensor"]
#: row weights (a bootstrap's multiplicities) -> the metric
Weighted = Callable[[np.ndarray], float]


@dataclass
class LabelSpace:
    """What a task's outputs mean, fixed when its model is trained and saved with it (scoring
    reads it back rather than recounting): the labels (column kinds) and, for recommendation,
    each candidate item's sketch codes int64[n_labels, depth] and log frequency float[n_labels]."""

    labels: list[str] | None = None
    item_codes: np.ndarray | None = None
    item_log_prior: np.ndarray | None = None


@dataclass
class Boosters:
    """Fitted LightGBM models: one booster per label (a float for a label constant in training),
    or one multiclass booster with the classes (label indices) it saw."""

    models: list
    classes: list[int] | None = None


def _macro(fn, y: np.ndarray, p: np.ndarray) -> float:
    """Mean over label columns having both classes; NaN when none has."""
    y, p = y.reshape(len(y), -1), p.reshape(len(p), -1)
    ok = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return float(np.mean([fn(y[:, j], p[:, j]) for j in ok])) if ok else float("nan")


def top_k_columns(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k highest scores, highest first, ties by column order: the
    first k of a stable descending argsort, found without sorting every row in full (ranking
    thousands of candidate items at every validation epoch spent most of its time sorting)."""
    n, m = scores.shape
    if m <= k or not np.isfinite(scores).all():
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    kth = np.partition(scores, m - k, axis=1)[:, m - k : m - k + 1]  # each row's k-th highest score
    rows, cols = np.nonzero(scores >= kth)  # at least k per row; more where the k-th is tied
    order = np.lexsort((cols, -scores[rows, cols], rows))  # by row, score descending, column
    first = np.r_[0, np.cumsum(np.bincount(rows, minlength=n))[:-1]]
    return cols[order][first[:, None] + np.arange(k)]


def ranking_metrics(relevant: np.ndarray, scores: np.ndarray, k: int = 10) -> dict[str, float]:
    """HitRate@k and NDCG@k (binary relevance) over clients with at least one relevant item.
    relevant: {0,1}[n, n_items]; scores: float[n, n_items]."""
    has = relevant.sum(1) > 0
    rel, sc = relevant[has], scores[has]
    if not len(rel):
        return {f"hitrate@{k}": float("nan"), f"ndcg@{k}": float("nan")}
    top = top_k_columns(sc, k)
    gains = np.take_along_axis(rel, top, 1)
    discount = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))  # fewer than k items: rank them all
    ideal = np.cumsum(discount)[np.minimum(rel.sum(1), top.shape[1]).astype(int) - 1]
    ndcg = (gains * discount).sum(1) / ideal
    return {f"hitrate@{k}": float((gains.sum(1) > 0).mean()), f"ndcg@{k}": float(ndcg.mean())}


def _per_row_ranking(relevant: np.ndarray, scores: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows with a relevant item, their NDCG@k or hit@k): ranking metrics are means over rows."""
    k = int(metric.split("@")[1])
    has = relevant.sum(1) > 0
    rel, sc = relevant[has], scores[has]
    top = top_k_columns(sc, k)
    gains = np.take_along_axis(rel, top, 1)
    if metric.startswith("hitrate"):
        return has, (gains.sum(1) > 0).astype(np.float64)
    discount = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    ideal = np.cumsum(discount)[np.minimum(rel.sum(1), top.shape[1]).astype(int) - 1]
    return has, (gains * discount).sum(1) / ideal


def _check_finite(s: np.ndarray) -> None:
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")


def auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve of one label, ties counting one half (scikit-learn's
    `roc_auc_score`, without its per-call input checks, which cost more than the sort at every
    validation epoch): the bootstrap's statistic with every row weighing one."""
    return _weighted_auroc(y, s)(np.ones(len(y)))


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Precision at each distinct score (tied scores one point, scores descending) weighted by
    the recall gained there: scikit-learn's `average_precision_score`, without its input checks."""
    _check_finite(s)
    order = np.argsort(-s, kind="stable")
    ys, ss = y[order] > 0, s[order]
    last = np.r_[np.flatnonzero(ss[1:] != ss[:-1]), len(ss) - 1]  # last row of each tie group
    tp, seen = np.cumsum(ys)[last], last + 1
    return float((np.diff(np.r_[0, tp]) * tp / seen).sum() / tp[-1])


def _weighted_auroc(y: np.ndarray, s: np.ndarray) -> Weighted:
    """AUROC of one label under row weights (a bootstrap's multiplicities), O(n) per call:
    the weighted Mann-Whitney statistic over scores sorted once, ties counting one half."""
    _check_finite(s)
    order = np.argsort(s, kind="stable")
    ys, ss = y[order] > 0, s[order]
    _, start = np.unique(ss, return_index=True)
    group = np.repeat(np.arange(len(start)), np.diff(np.r_[start, len(ss)]))

    def weighted(weight: np.ndarray) -> float:
        w = weight[order].astype(np.float64)
        wn = np.bincount(group, w * ~ys, minlength=len(start))
        wp = np.bincount(group, w * ys, minlength=len(start))
        below = np.cumsum(wn) - wn  # negative weight strictly below each score group
        total_p, total_n = wp.sum(), wn.sum()
        if total_p == 0 or total_n == 0:
            return float("nan")
        return float((wp * (below + 0.5 * wn)).sum() / (total_p * total_n))

    return weighted


def _per_label_boosters(params: dict, stop: list, tr: Split, val: Split) -> Boosters:
    """One binary classifier per label column (a float: the rate of a constant label)."""
    import lightgbm as lgb

    # One contiguous row per label: LightGBM copies (and warns about) a strided column slice.
    ys = np.ascontiguousarray(tr.y.reshape(len(tr.y), -1).T)
    yv = np.ascontiguousarray(val.y.reshape(len(val.y), -1).T)
    models: list = []
    for j in range(ys.shape[0]):
        if 0 < ys[j].sum() < ys.shape[1]:
            fitted = lgb.LGBMClassifier(**params).fit(tr.f, ys[j], eval_X=(val.f,), eval_y=(yv[j],), callbacks=stop)
            models.append(fitted.booster_)
        else:
            models.append(float(ys[j].mean()))
    return Boosters(models)


def _per_label_predict(models: Boosters, f: np.ndarray) -> np.ndarray:
    cols = [np.full(len(f), m) if isinstance(m, float) else m.predict(f) for m in models.models]
    return np.stack(cols, 1)


def shap_values(model: lgb.Booster | float, f: np.ndarray) -> np.ndarray:
    """float64[n, n_features]: SHAP contributions of one fitted LightGBM model (raw score:
    log-odds for classifiers), without the bias column; a constant label has none (zeros)."""
    if isinstance(model, float):
        return np.zeros(f.shape, dtype=np.float64)
    return np.asarray(model.predict(f, pred_contrib=True), dtype=np.float64)[:, : f.shape[1]]


class TaskKind:
    """The interface every task type implements; defaults serve the per-label kinds."""

    name: ClassVar[str]
    #: metrics the type can report; the first one selects models on the validation window
    metric_names: ClassVar[tuple[str, ...]]
    #: the target is `target.column` (labels are its values) rather than `target.value`
    column_target: ClassVar[bool] = False
    #: labels are the target column's `top_n` values, and that column feeds the GBDT aggregates
    top_n_labels: ClassVar[bool] = False
    #: one score per client (else one per label)
    one_score: ClassVar[bool] = False
    #: Integrated Gradients and SHAP explain its scores
    explainable: ClassVar[bool] = True
    #: the baselines every model is compared with in the bootstrap, in order of preference
    reference_models: ClassVar[tuple[str, ...]] = ("lightgbm", "prior")
    prior_name: ClassVar[str] = "prior"

    # --- tasks.yaml -------------------------------------------------------------------------

    def check_spec(self, task: TaskSpec) -> None:
        """Raise ValueError when the task's target does not fit the type."""
        t = task.target
        if not self.column_target:
            if t.value is None:
                raise ValueError(f"a {self.name} task needs target.value (an SQL aggregate)")
            if t.column is not None:
                raise ValueError(f"a {self.name} task takes target.value, not target.column")
            return
        if t.column is None:
            raise ValueError(f"a {self.name} task needs target.column")
        if self.top_n_labels and t.top_n is None:
            raise ValueError(f"a {self.name} task needs target.top_n")

    # --- labels -----------------------------------------------------------------------------

    def label_count(self, task: TaskSpec, candidates: int) -> int | None:
        """How many of the target column's most frequent values are labels (None: no labels)."""
        return (task.target.top_n or candidates) if self.column_target else None

    def label_space(self, task: TaskSpec, counts: pd.DataFrame | None, coders: dict[str, SketchCoder]) -> LabelSpace:
        """The labels from (v, n): the most frequent values before the training cutoff."""
        return LabelSpace(None if counts is None else counts["v"].tolist())

    def label_query(self, task: TaskSpec, window: str, is_list: bool = False) -> str:
        """Rows (client_id, t, ...) that `label_array` turns into targets, from `window`: the
        rows (client_id, t, e.*) of the events in each example's future window; an event of a
        list column counts once for each value it holds."""
        value, parts = column_values_sql(task.target.column, is_list, "w")
        return f"""SELECT w.client_id, w.t, {value} AS v, count(*) AS n
        FROM ({window}) w{parts}
        GROUP BY ALL"""

    def label_array(
        self, task: TaskSpec, rows: pd.DataFrame, key: pd.MultiIndex, labels: list[str] | None
    ) -> np.ndarray:
        """float32[n, n_labels] in {0,1}: has a matching event with the label in the window."""
        assert labels is not None
        row, col, _ = self._label_cells(rows, key, labels)
        y = np.zeros((len(key), len(labels)), dtype=np.float32)
        y[row, col] = 1.0
        return y

    @staticmethod
    def _label_cells(rows: pd.DataFrame, key: pd.MultiIndex, labels: list[str]):
        row = key.get_indexer(pd.MultiIndex.from_frame(rows[["client_id", "t"]]))
        col = pd.Index(labels).get_indexer(rows["v"])
        keep = (row >= 0) & (col >= 0)
        return row[keep], col[keep], rows["n"].to_numpy()[keep]

    def empty_target(self, y: np.ndarray) -> str | None:
        """Why targets y cannot be learned, e.g. "no positive label" (None: they can)."""
        return None if (y > 0).any() else "no positive label"

    def label_rate(self, y: np.ndarray) -> str:
        """A line for `bm-assets validate`."""
        return f"mean positives per example {float(y.sum(1).mean()):.2f} of {y.shape[1]}"

    # --- the network ------------------------------------------------------------------------

    def n_out(self, n_labels: int) -> int:
        """Width of the task head (0: the network answers with its sketch head)."""
        return n_labels

    def prepare_network(self, net: BehavioralNet, train: Split) -> None:
        """Set what the head needs from the training targets before fitting."""

    def loss(self, task: TaskSpec) -> Loss:
        from torch.nn import functional as F

        return lambda n, xb, yb: F.binary_cross_entropy_with_logits(n(xb).reshape(yb.shape), yb)

    def head(self, n: BehavioralNet, out: torch.Tensor) -> torch.Tensor:
        """The task head's raw output [n, n_out] -> the prediction users see."""
        return out.sigmoid()

    def output(self) -> Output:
        """The network's prediction on a batch of profiles."""
        return lambda n, xb: self.head(n, n(xb))

    def network_predictor(
        self, data: TaskData, popularity: bool = False
    ) -> Callable[[BehavioralNet, np.ndarray], np.ndarray]:
        from bm_assets.core.foundation import predict

        out = self.output()
        return lambda net, x: predict(net, x, out)

    # --- metrics ----------------------------------------------------------------------------

    def metrics(self, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
        return {"auroc": _macro(auroc, y, pred), "average_precision": _macro(average_precision, y, pred)}

    def weighted_metric(self, metric: str, y: np.ndarray, p: np.ndarray) -> Weighted | None:
        """metric(row weights) where weights are cheap (None: the bootstrap repeats rows)."""
        if metric != "auroc":
            return None
        y2, p2 = y.reshape(len(y), -1), p.reshape(len(p), -1)
        labels = [_weighted_auroc(y2[:, j], p2[:, j]) for j in range(y2.shape[1])]

        def macro(weight: np.ndarray) -> float:
            values = [f(weight) for f in labels]
            ok = [v for v in values if np.isfinite(v)]
            return float(np.mean(ok)) if ok else float("nan")

        return macro

    # --- LightGBM and the prior -------------------------------------------------------------

    def gbdt_fit(self, params: dict, stop: list, tr: Split, val: Split) -> Boosters | None:
        """LightGBM on the aggregates, early-stopped on validation (None: no GBDT baseline)."""
        return _per_label_boosters(params, stop, tr, val)

    def gbdt_predict(self, models: Boosters, f: np.ndarray, n_labels: int) -> np.ndarray:
        return _per_label_predict(models, f)

    def gbdt_contributions(self, models: Boosters, f: np.ndarray, j: int | None) -> np.ndarray | None:
        """SHAP contributions for output j (None: the only output); None when j has no model."""
        return shap_values(models.models[0 if j is None else j], f)

    def prior(self, tr: Split, data: TaskData) -> np.ndarray:
        """The prior baseline's prediction, the same for every client."""
        return np.asarray(tr.y.mean(0), dtype=np.float64)

    # --- scores -----------------------------------------------------------------------------

    def explained_outputs(self, n_labels: int, labels: list[str] | None) -> list[int | None]:
        """The outputs the global drivers explain (None: the one score)."""
        return list(range(min(n_labels, len(labels or []))))

    def score_frame(
        self, task: TaskSpec, labels: list[str] | None, ids: np.ndarray, pred: np.ndarray, day: dt.date
    ) -> pd.DataFrame:
        """A day's scores in long format (client_id, score_date, label, score)."""
        rows = np.repeat(np.arange(len(ids)), pred.shape[1])
        return pd.DataFrame(
            {
                "client_id": ids[rows],
                "score_date": day,
                "label": np.tile(np.asarray(labels), len(ids)),
                "score": pred.ravel(),
            }
        )

    def export_sql(self, base: str, top_k: int) -> str:
        """The export's columns and order over `base` (client_id, as_of_date, model_version,
        label, score) rows of one day."""
        return f"SELECT client_id, as_of_date, label, score, model_version FROM ({base}) ORDER BY client_id, label"


class _OneScore(TaskKind):
    """A target.value kind: one score per client."""

    one_score = True

    def label_space(self, task, counts, coders) -> LabelSpace:
        return LabelSpace()

    def label_query(self, task: TaskSpec, window: str, is_list: bool = False) -> str:
        return f"""SELECT client_id, t, {task.target.value} AS y FROM ({window}) GROUP BY client_id, t"""

    def label_array(self, task, rows, key, labels) -> np.ndarray:
        """float32[n]: the aggregate, `target.default` for examples without a matching row."""
        y = np.full(len(key), np.nan if task.target.default is None else task.target.default, dtype=np.float64)
        pos = key.get_indexer(pd.MultiIndex.from_frame(rows[["client_id", "t"]]))
        keep = pos >= 0
        y[pos[keep]] = pd.to_numeric(rows["y"], errors="coerce").to_numpy(np.float64)[keep]
        if np.isnan(y).any():
            raise TaskConfigError(
                f"{task.name}: target.value is NULL for {int(np.isnan(y).sum())} examples; "
                "set target.default or coalesce the expression"
            )
        return y.astype(np.float32)

    def n_out(self, n_labels: int) -> int:
        return 1

    def explained_outputs(self, n_labels, labels) -> list[int | None]:
        return [None]

    def score_frame(self, task, labels, ids, pred, day) -> pd.DataFrame:
        return pd.DataFrame({"client_id": ids, "score_date": day, "label": task.name, "score": pred})

    def export_sql(self, base: str, top_k: int) -> str:
        return f"SELECT client_id, as_of_date, score, model_version FROM ({base}) ORDER BY client_id"


class Binary(_OneScore):
    """Will the aggregate be true (1) in the window: churn, a purchase in a category."""

    name = "binary"
    metric_names = ("auroc", "average_precision")

    def head(self, n, out):
        return out[:, 0].sigmoid()

    def gbdt_predict(self, models, f, n_labels):
        return _per_label_predict(models, f)[:, 0]

    def label_rate(self, y):
        return f"positive rate {float(np.mean(y)):.1%}"


class Regression(_OneScore):
    """The aggregate's value in the window: spend, visits."""

    name = "regression"
    metric_names = ("rmse", "mae")

    def empty_target(self, y):
        return None if float(np.nanstd(y)) != 0.0 else f"no variation (every value is {float(y[0])})"

    def label_rate(self, y):
        return f"mean {float(np.mean(y)):.2f}, zero share {float(np.mean(y == 0)):.1%}"

    def prepare_network(self, net, train):
        from bm_assets.core.foundation import amount_path

        net.y_mean.fill_(float(train.y.mean()))
        net.y_std.fill_(float(train.y.std() or 1.0))
        net.amount = amount_path(train.x, net.layout, 1)

    def loss(self, task):
        from torch.nn import functional as F

        return lambda n, xb, yb: F.mse_loss(n(xb)[:, 0], (yb - n.y_mean[0]) / n.y_std[0])

    def head(self, n, out):
        return out[:, 0] * n.y_std[0] + n.y_mean[0]

    def metrics(self, y, pred):
        err = pred.astype(np.float64) - y
        return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}

    def weighted_metric(self, metric, y, p):
        err = p.astype(np.float64) - y
        per_row = err**2 if metric == "rmse" else np.abs(err)
        root = metric == "rmse"

        def error(weight: np.ndarray) -> float:
            mean = float((per_row * weight).sum() / weight.sum())
            return float(np.sqrt(mean)) if root else mean

        return error

    def gbdt_fit(self, params, stop, tr, val):
        import lightgbm as lgb

        model = lgb.LGBMRegressor(**params).fit(tr.f, tr.y, eval_X=(val.f,), eval_y=(val.y,), callbacks=stop)
        return Boosters([model.booster_])

    def gbdt_predict(self, models, f, n_labels):
        return models.models[0].predict(f)


class Multilabel(TaskKind):
    """Which of the top_n values of the target column appear in the window."""

    name = "multilabel"
    metric_names = ("auroc", "average_precision")
    column_target = True
    top_n_labels = True


class Multiclass(TaskKind):
    """The most frequent of the top_n values of the target column in the window (-1: none)."""

    name = "multiclass"
    metric_names = ("accuracy", "log_loss")
    column_target = True
    top_n_labels = True

    def label_array(self, task, rows, key, labels) -> np.ndarray:
        """int64[n]: index into labels, -1 when no labelled event is in the window."""
        assert labels is not None
        row, col, cnt = self._label_cells(rows, key, labels)
        counts = np.zeros((len(key), len(labels)), dtype=np.float64)
        np.add.at(counts, (row, col), cnt)
        return np.where(counts.sum(1) > 0, counts.argmax(1), -1).astype(np.int64)

    def empty_target(self, y):
        return None if (y >= 0).any() else "no labelled example"

    def label_rate(self, y):
        return f"labelled share {float(np.mean(y >= 0)):.1%}"

    def loss(self, task):
        from torch.nn import functional as F

        return lambda n, xb, yb: F.cross_entropy(n(xb), yb, ignore_index=-1)

    def head(self, n, out):
        return out.softmax(-1)

    def metrics(self, y, pred):
        from sklearn.metrics import log_loss

        ok = y >= 0
        p = np.clip(pred[ok], 1e-7, 1)
        return {
            "accuracy": float((p.argmax(1) == y[ok]).mean()),
            "log_loss": float(log_loss(y[ok], p / p.sum(1, keepdims=True), labels=np.arange(p.shape[1]))),
        }

    def weighted_metric(self, metric, y, p):
        if metric != "accuracy":
            return None
        ok = y >= 0
        correct = np.zeros(len(y))
        correct[ok] = p[ok].argmax(1) == y[ok]
        return lambda w: float((correct * w * ok).sum() / (w * ok).sum()) if (w * ok).sum() else float("nan")

    def gbdt_fit(self, params, stop, tr, val):
        import lightgbm as lgb

        ok, vok = tr.y >= 0, val.y >= 0
        model = lgb.LGBMClassifier(**params).fit(
            tr.f[ok], tr.y[ok], eval_X=(val.f[vok],), eval_y=(val.y[vok],), callbacks=stop
        )
        return Boosters([model.booster_], [int(c) for c in model.classes_])

    def gbdt_predict(self, models, f, n_labels):
        p = np.zeros((len(f), n_labels))
        p[:, models.classes] = models.models[0].predict(f)
        return p

    def gbdt_contributions(self, models, f, j):
        if j not in models.classes:
            return None
        raw = np.asarray(models.models[0].predict(f, pred_contrib=True), dtype=np.float64)
        width = f.shape[1] + 1
        k = models.classes.index(j)
        return raw[:, k * width : k * width + f.shape[1]]

    def prior(self, tr, data):
        ok = tr.y[tr.y >= 0]
        return np.bincount(ok, minlength=len(data.labels or [])) / max(len(ok), 1)


class Recommendation(TaskKind):
    """The items of the target column the client will have in the window, ranked among the
    `evaluation.candidates` most popular; the network answers with its sketch head."""

    name = "recommendation"
    metric_names = ("ndcg@10", "hitrate@10")
    column_target = True
    explainable = False
    reference_models = ("repurchase_popularity", "popularity")
    prior_name = "popularity"

    def check_spec(self, task):
        super().check_spec(task)
        if task.explain:
            raise ValueError("explain: recommendation scores are not explained (rank lists, not one score)")

    def label_space(self, task, counts, coders) -> LabelSpace:
        """Candidates with a sketch code, most popular first, with their codes and log frequency."""
        coder = coders.get(task.target.column)
        if coder is None:
            raise TaskConfigError(
                f"{task.name}: target.column {task.target.column!r} has no sketch coder; "
                f"sketched columns are {list(coders)}"
            )
        codes = coder.encode(counts["v"].to_numpy())
        known = codes[:, 0] >= 0
        return LabelSpace(
            counts["v"][known].tolist(),
            codes[known].astype(np.int64),
            np.log(counts["n"].to_numpy(np.float64)[known]),
        )

    def n_out(self, n_labels):
        return 0

    def loss(self, task):
        from bm_assets.core.foundation import sketch_cross_entropy

        column = task.target.column

        def loss(n, xb, yb):
            return sketch_cross_entropy(n.sketch_logp(xb, column), yb)

        return loss

    def network_predictor(self, data, popularity=False):
        """Ranks candidate items by the decoded sketch (with `popularity`, the popularity-aware
        decode of `item_scores`)."""
        import torch

        from bm_assets.core.foundation import item_scores, predict

        codes = torch.from_numpy(data.item_codes.astype(np.int64))
        prior = torch.from_numpy(np.asarray(data.item_log_prior, np.float32)) if popularity else None
        column = data.task.target.column

        def rank(n: BehavioralNet, xb: torch.Tensor) -> torch.Tensor:
            p = None if prior is None else prior.to(xb.device)
            return item_scores(n.sketch_logp(xb, column), codes.to(xb.device), p)

        return lambda net, x: predict(net, x, rank, batch_size=256)

    def metrics(self, y, pred):
        return ranking_metrics(y, pred)

    def weighted_metric(self, metric, y, p):
        has, values = _per_row_ranking(y, p, metric)

        def mean(weight: np.ndarray) -> float:
            w = weight[has]
            return float((values * w).sum() / w.sum()) if w.sum() else float("nan")

        return mean

    def gbdt_fit(self, params, stop, tr, val):
        return None  # ranking thousands of items is not a per-label classifier's job

    def prior(self, tr, data):
        # candidates are ordered by their popularity before the training cutoff
        return -np.arange(len(data.item_codes), dtype=np.float64)

    def explained_outputs(self, n_labels, labels):
        return []

    def score_frame(self, task, labels, ids, pred, day):
        """The top `task.top_k` items per client and day."""
        top = top_k_columns(pred, task.top_k)
        rows = np.repeat(np.arange(len(ids)), top.shape[1])
        return pd.DataFrame(
            {
                "client_id": ids[rows],
                "score_date": day,
                "label": np.asarray(labels)[top.ravel()],
                "score": pred[rows, top.ravel()],
            }
        )

    def export_sql(self, base, top_k):
        return (
            "SELECT client_id, as_of_date, label AS item_id, rank, score, model_version FROM ("
            "SELECT *, row_number() OVER (PARTITION BY client_id ORDER BY score DESC, label) AS rank "
            f"FROM ({base})) WHERE rank <= {int(top_k)} ORDER BY client_id, rank"
        )


#: Every task type, by its name in tasks.yaml (`type:`), in the order the docs list them.
KINDS: dict[str, TaskKind] = {k.name: k() for k in (Binary, Multilabel, Multiclass, Regression, Recommendation)}


def kind_of(task: TaskSpec) -> TaskKind:
    return KINDS[task.type]


#: Task types whose scores are explained (Integrated Gradients on the network, SHAP on LightGBM).
EXPLAINABLE = tuple(name for name, k in KINDS.items() if k.explainable)
