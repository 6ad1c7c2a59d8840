"""Metrics and the per-task protocol: fit the fine-tuned network, the scratch network, a
LightGBM baseline on aggregates and a prior baseline on the training split dates, select on
the validation window, report on the test window (same clients) and on held-out clients."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import lightgbm as lgb
import numpy as np

from bm_assets.core.foundation import (
    BehavioralNet,
    FitResult,
    SketchLayout,
    TrainConfig,
    add_dense_encoding,
    fit,
    predict,
    task_network,
    with_side_inputs,
)
from bm_assets.core.kinds import KINDS, Boosters, kind_of, ranking_metrics, top_k_columns
from bm_assets.core.ranking import (
    RANKER_MAX_TRAIN_LISTS,
    ItemHistory,
    candidate_pairs,
    fit_listwise_ranker,
    lists_with_relevant,
    ranked_scores,
    ranker_feature_names,
    ranker_features,
)
from bm_assets.core.tasks import EvaluationConfig, FoundationConfig, TaskSpec

ROLES = ("validation", "test", "holdout")


# --- metrics ----------------------------------------------------------------------------------


def metrics(kind: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Every metric of the task type for targets y and predictions pred."""
    return KINDS[kind].metrics(y, pred)


def selection_score(task: TaskSpec, m: dict[str, float]) -> float:
    """Higher is better: the task's first metric, negated for errors."""
    name = task.metrics[0] if task.metrics else kind_of(task).metric_names[0]
    return -m[name] if name in ("rmse", "mae", "log_loss") else m[name]


# --- data -------------------------------------------------------------------------------------


@dataclass
class Split:
    """Examples of one role. x: profiles float32[n, d]; f: aggregates float32[n, k]; y: targets;
    y_train: the network's training target (the future sketch for recommendation, else y)."""

    x: np.ndarray
    f: np.ndarray
    y: np.ndarray
    y_train: np.ndarray | None = None
    #: recommendation: the client's past purchases of each candidate (before the split date)
    history: ItemHistory | None = None
    #: the client of each row (rows of one client are resampled together by the bootstrap)
    clients: np.ndarray | None = None

    def subset(self, idx: np.ndarray) -> Split:
        return Split(
            self.x[idx],
            self.f[idx],
            self.y[idx],
            None if self.y_train is None else self.y_train[idx],
            None if self.history is None else self.history.subset(idx),
            None if self.clients is None else self.clients[idx],
        )

    @property
    def target(self) -> np.ndarray:
        return self.y if self.y_train is None else self.y_train


@dataclass
class TaskData:
    task: TaskSpec
    splits: dict[str, Split]
    labels: list[str] | None = None
    layout: SketchLayout = field(default_factory=list)
    item_codes: np.ndarray | None = None  # int64[n_candidates, depth] for recommendation
    item_log_prior: np.ndarray | None = None  # float[n_candidates]: log frequency before the cutoff
    feature_names: list[str] = field(default_factory=list)  # the aggregates' columns (Split.f)
    feature_tops: dict[str, list[str]] = field(default_factory=dict)  # top values behind them
    #: recommendation: float[n_candidates, len(ITEM_STATS)], repurchase statistics before the cutoff
    item_stats: np.ndarray | None = None


# --- models -----------------------------------------------------------------------------------


@dataclass
class ModelResult:
    name: str
    predict: Callable[[Split], np.ndarray]
    seconds: float
    epochs: int = 0
    history: list[dict] = field(default_factory=list)
    artifact: object = None


#: Suffix of the recommendation models ranked with the popularity-aware decode.
POPULARITY_DECODE = "_popdecode"
#: The fine-tuned network with the task's aggregates appended to its input (an ablation: what
#: the foundation model gains from the hand-made features, inside one network).
WITH_AGGREGATES = "finetuned_with_aggregates"


def network_predictor(data: TaskData, popularity: bool = False) -> Callable[[BehavioralNet, np.ndarray], np.ndarray]:
    """Predictions of a task network on profiles; recommendation ranks candidate items (with
    `popularity`, by the popularity-aware decode of `item_scores`)."""
    return kind_of(data.task).network_predictor(data, popularity)


def fit_network(
    data: TaskData,
    foundation: BehavioralNet | None,
    fcfg: FoundationConfig,
    ev: EvaluationConfig,
    train_idx: np.ndarray | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    with_aggregates: bool = False,
) -> tuple[FitResult, Callable[[Split], np.ndarray]]:
    """Fine-tune `foundation` (or train the same network from scratch when None) on the task's
    training split, early-stopped on the validation metric. `with_aggregates`: the task's
    aggregates appended to the profile input (`with_side_inputs`)."""
    t, kind = data.task, kind_of(data.task)
    tr = data.splits["train"] if train_idx is None else data.splits["train"].subset(train_idx)
    val = data.splits["validation"]
    n_out = kind.n_out(len(data.labels or []))
    net = task_network(
        foundation, tr.x.shape[1], fcfg.hidden, fcfg.layers, task_dropout(fcfg, ev, n_out), data.layout, n_out, ev.seed
    )
    if foundation is None:
        net.set_input_stats(tr.x)
    inputs = network_inputs(with_aggregates)
    if with_aggregates:
        net = with_side_inputs(net, tr.f)
    if n_out:
        net = add_dense_encoding(net, tr.x, ev.dense_bins)
    kind.prepare_network(net, tr)
    loss = kind.loss(t)
    pred = network_predictor(data)
    x_train, x_val = inputs(tr), inputs(val)

    def validate(n: BehavioralNet) -> float:
        return selection_score(t, kind.metrics(val.y, pred(n, x_val)))

    cfg = TrainConfig(
        lr=ev.task_lr if foundation is None else ev.finetune_lr,
        weight_decay=fcfg.weight_decay,
        batch_size=fcfg.batch_size,
        max_epochs=ev.task_max_epochs,
        patience=ev.task_patience,
        seed=ev.seed,
    )
    head = net.task_head if foundation is not None and ev.head_epochs != 0 else None  # None: the sketch head is reused
    if head is not None:  # the new head (and wide path) alone first, pretrained layers frozen
        net.requires_grad_(False)
        head.requires_grad_(True)
        if net.wide is not None:
            net.wide.requires_grad_(True)
        if ev.head_epochs is None:  # to convergence on validation
            warm = replace(cfg, lr=ev.task_lr)
        else:
            warm = replace(cfg, lr=ev.task_lr, max_epochs=ev.head_epochs, patience=ev.head_epochs)
        net = fit(net, loss, x_train, tr.target, validate, warm, on_epoch).net
        net.requires_grad_(True)
    result = fit(net, loss, x_train, tr.target, validate, cfg, on_epoch)
    return result, lambda s: pred(result.net, inputs(s))


def task_dropout(fcfg: FoundationConfig, ev: EvaluationConfig, n_out: int) -> float:
    """Dropout of a task network: `task_dropout` where a new head learns from the task's labels
    (n_out > 0); the foundation's own rate where the network keeps the sketch head and goes on
    with the pretraining objective on the task's examples (recommendation)."""
    return fcfg.dropout if ev.task_dropout is None or not n_out else ev.task_dropout


def network_inputs(with_aggregates: bool) -> Callable[[Split], np.ndarray]:
    """What a task network reads of a split: the profile, or the profile and the aggregates."""
    if with_aggregates:
        return lambda s: np.concatenate([s.x, s.f.astype(s.x.dtype)], axis=1)
    return lambda s: s.x


def fit_gbdt(
    data: TaskData,
    ev: EvaluationConfig,
    train_idx: np.ndarray | None = None,
    features: Callable[[Split], np.ndarray] | None = None,
    name: str = "lightgbm",
) -> ModelResult | None:
    """LightGBM on the aggregates (or on `features(split)`), with the kind's objective,
    early-stopped on validation. None for a kind without a GBDT baseline (recommendation)."""
    tr = data.splits["train"] if train_idx is None else data.splits["train"].subset(train_idx)
    val = data.splits["validation"]
    if features is not None:
        tr, val = _with_features(tr, features), _with_features(val, features)
    params = dict(
        n_estimators=400,
        learning_rate=0.05,
        num_leaves=15,
        min_child_samples=20,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        random_state=ev.seed,
        deterministic=True,
        force_row_wise=True,
        n_jobs=2,
        verbose=-1,
    )
    stop = [lgb.early_stopping(20, verbose=False)]
    start = time.perf_counter()
    models = kind_of(data.task).gbdt_fit(params, stop, tr, val)
    if models is None:
        return None
    fn = gbdt_predictor(data, models)
    if features is not None:
        base = fn
        fn = lambda s: base(_with_features(s, features))  # noqa: E731
    return ModelResult(name, fn, time.perf_counter() - start, artifact=models)


def _with_features(s: Split, features: Callable[[Split], np.ndarray]) -> Split:
    return Split(s.x, features(s), s.y, s.y_train, s.history, s.clients)


#: Components of the fine-tuned network's client embedding given to the hybrid LightGBM.
EMBEDDING_COMPONENTS = 16


def embedding_features(net: BehavioralNet, train: Split, k: int = EMBEDDING_COMPONENTS):
    """(features, projection): f -> [aggregates, the first k principal components of the
    network's client embedding] (components fitted on the training split): the foundation
    model's view of the client, compact enough for trees."""
    e = _embed(net, train.x)
    mean = e.mean(0)
    _, _, vt = np.linalg.svd(e - mean, full_matrices=False)
    projection = {"mean": mean, "basis": vt[: min(k, vt.shape[0])].T}
    return projected_features(net, projection), projection


def _embed(net: BehavioralNet, x: np.ndarray) -> np.ndarray:
    return predict(net, x, lambda n, xb: n.embed(xb)).astype(np.float64)


def projected_features(net: BehavioralNet, projection: dict) -> Callable[[Split], np.ndarray]:
    def features(s: Split) -> np.ndarray:
        z = (_embed(net, s.x) - projection["mean"]) @ projection["basis"]
        return np.concatenate([s.f, z.astype(np.float32)], axis=1)

    return features


#: Weights of the fine-tuned network tried for the network + LightGBM blend (the rest LightGBM's).
MIX_GRID = tuple(i / 10 for i in range(11))


def _mix_predictor(data: TaskData, weight: float, net: BehavioralNet, gbdt: Boosters) -> Callable[[Split], np.ndarray]:
    network, trees = network_predictor(data), gbdt_predictor(data, gbdt)
    return lambda s: weight * network(net, s.x) + (1 - weight) * trees(s)


def fit_mix(data: TaskData, network: ModelResult, gbdt: ModelResult, name: str) -> ModelResult:
    """The average of the network's and LightGBM's predictions (probabilities or values), the
    network's weight chosen on the validation window from MIX_GRID: the two learn from different
    inputs (a profile of the whole history vs windowed aggregates), so their errors differ."""
    t0 = time.perf_counter()
    val = data.splits["validation"]
    kind = kind_of(data.task)
    p_net, p_gbdt = network.predict(val), gbdt.predict(val)
    scores = [selection_score(data.task, kind.metrics(val.y, w * p_net + (1 - w) * p_gbdt)) for w in MIX_GRID]
    weight = float(MIX_GRID[int(np.argmax(scores))])
    artifact = {"mix": weight, "net": network.artifact, "mix_gbdt": gbdt.artifact}
    fn = _mix_predictor(data, weight, network.artifact, gbdt.artifact)
    return ModelResult(name, fn, network.seconds + gbdt.seconds + time.perf_counter() - t0, artifact=artifact)


def gbdt_predictor(data: TaskData, models: Boosters) -> Callable[[Split], np.ndarray]:
    """Predictions of fitted LightGBM models."""
    kind, n_labels = kind_of(data.task), len(data.labels or [])
    return lambda s: kind.gbdt_predict(models, s.f, n_labels)


def prior_predictor(rate: np.ndarray) -> Callable[[Split], np.ndarray]:
    return lambda s: np.broadcast_to(rate, (len(s.x), *rate.shape)).copy()


# --- recommendation: buy again, popularity and the model's decode ------------------------------
#
# On repeat-heavy data (grocery) a client's own past purchases are the strongest signal (Li et
# al., "A Next Basket Recommendation Reality Check", TOIS 2023). The baselines score candidates
# by the client's decayed past count; the blend adds popularity and the fine-tuned network's
# decoded sketch, with weights chosen on the validation window.

#: the blend's inputs, in weight order
BLEND_INPUTS = ("history_short", "history_long", "popularity", "model")


def blend_scores(s: Split, data: TaskData, weights: dict[str, float], model_logp: np.ndarray | None) -> np.ndarray:
    """float32[n, n_candidates]: sum of weight x input, inputs log1p(decayed past counts) at
    each history half-life, log popularity (0 for the most popular item) and the model's
    log-probability decode (ranks only depend on relative weights)."""
    assert s.history is not None and data.item_log_prior is not None
    out = np.zeros((s.history.shape[0], len(data.item_log_prior)), dtype=np.float32)
    for key, h in zip(BLEND_INPUTS[:2], s.history.decayed, strict=True):
        if weights.get(key):
            out += weights[key] * np.log1p(h.toarray())
    if weights.get("popularity"):
        out += weights["popularity"] * (data.item_log_prior - data.item_log_prior.max()).astype(np.float32)
    if weights.get("model") and model_logp is not None:
        out += weights["model"] * model_logp
    return out


def _blend_predictor(data: TaskData, weights: dict[str, float], net: BehavioralNet | None):
    decode = network_predictor(data) if net is not None else None
    return lambda s: blend_scores(
        s, data, weights, decode(net, s.x) if decode is not None and weights.get("model") else None
    )


def fit_blend(
    data: TaskData, name: str, free: tuple[str, ...], start: dict[str, float], net: BehavioralNet | None = None
) -> ModelResult:
    """Weights of the `free` inputs by coordinate ascent on validation NDCG@10 (two sweeps over
    a log grid), from `start`. The test windows are never looked at."""
    t0 = time.perf_counter()
    val = data.splits["validation"]
    logp = network_predictor(data)(net, val.x) if net is not None else None
    weights = dict(start)

    def score(w: dict[str, float]) -> float:
        return ranking_metrics(val.y, blend_scores(val, data, w, logp))["ndcg@10"]

    best = score(weights)
    grid = (0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
    for _ in range(2):
        for key in free:
            for value in grid:
                trial = {**weights, key: value}
                if not any(trial.get(k) for k in BLEND_INPUTS):
                    continue
                got = score(trial)
                if got > best + 1e-9:
                    best, weights = got, trial
    artifact = {"weights": weights, "net": net}
    return ModelResult(name, _blend_predictor(data, weights, net), time.perf_counter() - t0, artifact=artifact)


def _ranker_predictor(data: TaskData, booster: lgb.Booster, net: BehavioralNet | None) -> Callable[[Split], np.ndarray]:
    decode = network_predictor(data) if net is not None else None
    return lambda s: ranked_scores(
        booster, s.history, data.item_log_prior, data.item_stats, decode(net, s.x) if decode is not None else None
    )


def _ranker_pairs(data: TaskData, s: Split, net: BehavioralNet | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, relevance, rows) of the candidate pairs of the lists holding a relevant item."""
    rows, items = candidate_pairs(s.history)
    relevance = s.y[rows, items].astype(np.float32)
    keep = lists_with_relevant(rows, relevance)
    rows, items, relevance = rows[keep], items[keep], relevance[keep]
    logp = network_predictor(data)(net, s.x) if net is not None else None
    x = ranker_features(s.history, rows, items, data.item_log_prior, data.item_stats, logp)
    return x, relevance, rows


def fit_ranker(data: TaskData, name: str, seed: int, net: BehavioralNet | None = None) -> ModelResult | None:
    """A LightGBM listwise ranker (XE-NDCG) over the exact-item history features
    (core/ranking.py) and, with `net`, the network's decoded sketch; fitted on the training
    windows (at most RANKER_MAX_TRAIN_LISTS lists with a relevant item, a seeded sample),
    early-stopped on validation. None when either window has no list with a relevant candidate
    (nothing to learn or to stop on)."""
    t0 = time.perf_counter()
    tr, val = data.splits["train"], data.splits["validation"]
    lists = np.flatnonzero(tr.y.sum(1) > 0)
    if len(lists) > RANKER_MAX_TRAIN_LISTS:
        lists = np.sort(np.random.default_rng(seed).choice(lists, RANKER_MAX_TRAIN_LISTS, replace=False))
    train, validation = _ranker_pairs(data, tr.subset(lists), net), _ranker_pairs(data, val, net)
    if not train[1].any() or not validation[1].any():
        return None
    names = ranker_feature_names(len(tr.history.decayed), with_model=net is not None)
    booster = fit_listwise_ranker(train, validation, seed, names)
    artifact = {"ranker": Boosters([booster], []), "net": net}
    return ModelResult(name, _ranker_predictor(data, booster, net), time.perf_counter() - t0, artifact=artifact)


def fit_recommendation_baselines(data: TaskData, net: BehavioralNet | None, seed: int = 0) -> dict[str, ModelResult]:
    """repurchase: the client's decayed past count (long half-life), popularity breaking ties;
    repurchase_popularity: that plus popularity with a weight chosen on validation;
    <net>_blend: both history half-lives, popularity and the network's decode, weights chosen
    on validation; history_ranker: a listwise ranker over the history features (with item
    statistics); <net>_ranker: the same with the network's decode as one more feature."""
    if data.splits["train"].history is None or data.item_log_prior is None:
        return {}
    tie = {"history_long": 1.0, "popularity": 1e-6}
    out = {
        "repurchase": ModelResult(
            "repurchase", _blend_predictor(data, tie, None), 0.0, artifact={"weights": tie, "net": None}
        ),
        "repurchase_popularity": fit_blend(data, "repurchase_popularity", ("popularity",), tie),
    }
    if net is not None:
        start = {**out["repurchase_popularity"].artifact["weights"], "model": 0.0}
        out["finetuned_blend"] = fit_blend(data, "finetuned_blend", BLEND_INPUTS, start, net)
    if data.item_stats is not None:
        rankers = {"history_ranker": None, **({"finetuned_ranker": net} if net is not None else {})}
        for name, ranker_net in rankers.items():
            ranker = fit_ranker(data, name, seed, ranker_net)
            if ranker is not None:
                out[name] = ranker
    return out


def repeat_share(s: Split, scores: np.ndarray, k: int = 10) -> float:
    """Among the hits in each client's top k, the share of items the client had bought before
    (a repeat rather than an exploration), over clients with a relevant item."""
    if s.history is None:
        return float("nan")
    has = s.y.sum(1) > 0
    top = top_k_columns(scores[has], k)
    hits = np.take_along_axis(s.y[has], top, 1) > 0
    seen = np.take_along_axis(s.history.decayed[-1][np.flatnonzero(has)].toarray(), top, 1) > 0
    return float((hits & seen).sum() / hits.sum()) if hits.sum() else float("nan")


def rebuild(data: TaskData, name: str, artifact: object) -> Callable[[Split], np.ndarray]:
    """The predictor of a saved model (network, LightGBM list, blend weights or prior rates)."""
    if isinstance(artifact, dict) and "ranker" in artifact:
        return _ranker_predictor(data, artifact["ranker"].models[0], artifact["net"])
    if isinstance(artifact, dict) and "weights" in artifact:
        return _blend_predictor(data, artifact["weights"], artifact["net"])
    if isinstance(artifact, dict) and "mix" in artifact:
        return _mix_predictor(data, artifact["mix"], artifact["net"], artifact["mix_gbdt"])
    if isinstance(artifact, dict) and "gbdt" in artifact:
        features = projected_features(artifact["net"], artifact)
        base = gbdt_predictor(data, artifact["gbdt"])
        return lambda s: base(_with_features(s, features))
    if isinstance(artifact, dict) and "aggregates" in artifact:
        net, n_aggregates, pred = artifact["net"], int(artifact["aggregates"]), network_predictor(data)
        inputs = network_inputs(True)

        def with_aggregates(s: Split) -> np.ndarray:
            if s.f.shape[1] != n_aggregates:
                raise ValueError(f"{name} reads {n_aggregates} aggregates, the split has {s.f.shape[1]}")
            return pred(net, inputs(s))

        return with_aggregates
    if isinstance(artifact, BehavioralNet):
        pred = network_predictor(data, popularity=name.endswith(POPULARITY_DECODE))
        return lambda s: pred(artifact, s.x)
    if isinstance(artifact, Boosters):
        return gbdt_predictor(data, artifact)
    return prior_predictor(np.asarray(artifact))


def reads_aggregates(artifact: object) -> bool:
    """Whether the saved model reads Split.f (LightGBM alone, the hybrid, the mix or the network
    with the aggregates in its input)."""
    if isinstance(artifact, dict):
        return any(k in artifact for k in ("gbdt", "mix", "aggregates"))
    return isinstance(artifact, Boosters)


def reads_history(artifact: object) -> bool:
    """Whether the saved model reads Split.history (the repurchase blends and the rankers)."""
    return isinstance(artifact, dict) and ("weights" in artifact or "ranker" in artifact)


def fit_prior(data: TaskData, train_idx: np.ndarray | None = None) -> ModelResult:
    """Base rate (binary, multilabel), class frequencies, mean value, or item popularity."""
    kind = kind_of(data.task)
    tr = data.splits["train"] if train_idx is None else data.splits["train"].subset(train_idx)
    start = time.perf_counter()
    rate = kind.prior(tr, data)
    name = kind.prior_name
    return ModelResult(name, prior_predictor(rate), time.perf_counter() - start, artifact=rate)


# --- the protocol -----------------------------------------------------------------------------


@dataclass
class TaskRun:
    models: dict[str, ModelResult]
    report: dict[str, dict[str, float]]


def evaluate(
    data: TaskData,
    models: dict[str, ModelResult],
    roles: tuple[str, ...] = ROLES,
    test_predictions: dict[str, np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """{model: {"<role>_<metric>": value, "train_seconds": s, "epochs": n}} on validation, test
    and held-out clients. `test_predictions`, when given, receives {model: prediction on the
    test window}, for the bootstrap to reuse rather than predict again."""
    t, kind = data.task, kind_of(data.task)
    out: dict[str, dict[str, float]] = {}
    for name, m in models.items():
        row: dict[str, float] = {"train_seconds": round(m.seconds, 3), "epochs": m.epochs}
        for role in roles:
            s = data.splits.get(role)
            if s is None or not len(s.y):
                continue
            pred = m.predict(s)
            if test_predictions is not None and role == "test":
                test_predictions[name] = pred
            for metric, value in kind.metrics(s.y, pred).items():
                if metric in t.metrics:
                    row[f"{role}_{metric}"] = value
            if s.history is not None:  # items ranked against the client's own purchases
                row[f"{role}_repeat_share_of_hits@10"] = repeat_share(s, pred)
        out[name] = row
    return out


# --- honest statistics: client-level bootstrap -------------------------------------------------


def reference_model(kind: str, names: list[str]) -> str | None:
    """The model every other is compared with: the kind's strongest simple baseline present."""
    return next((m for m in KINDS[kind].reference_models if m in names), None)


def bootstrap_intervals(
    kind: str,
    metric: str,
    y: np.ndarray,
    preds: dict[str, np.ndarray],
    clients: np.ndarray,
    n_boot: int = 200,
    seed: int = 0,
) -> dict:
    """95% percentile intervals of `metric` per model and of each model's difference from the
    reference model (REFERENCE_MODELS), resampling clients with replacement (all rows of a
    drawn client come along: rows of one client are not independent).

    Returns {"reference": name, "resamples": n, "models": {name: {"ci95": [lo, hi],
    "diff_ci95": [lo, hi]}}}; the difference is model minus reference (for errors, negative is
    better)."""
    _, inverse = np.unique(np.asarray(clients).astype(str), return_inverse=True)
    n_clients = int(inverse.max()) + 1 if len(inverse) else 0
    rng = np.random.default_rng(seed)
    names = list(preds)
    reference = reference_model(kind, names)
    weighted = {name: KINDS[kind].weighted_metric(metric, y, p) for name, p in preds.items()}
    weighted = {name: fn for name, fn in weighted.items() if fn is not None}
    draws: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(n_boot if n_clients else 0):
        weight = np.bincount(rng.integers(0, n_clients, n_clients), minlength=n_clients)[inverse]
        for name, p in preds.items():
            draws[name].append(weighted[name](weight) if name in weighted else _repeated(kind, metric, y, p, weight))
    out: dict = {"reference": reference, "resamples": n_boot, "models": {}}
    for name in names:
        d = np.asarray(draws[name])
        entry = {"ci95": _percentiles(d)}
        if reference is not None and name != reference:
            entry["diff_ci95"] = _percentiles(d - np.asarray(draws[reference]))
        out["models"][name] = entry
    return out


def _repeated(kind: str, metric: str, y: np.ndarray, p: np.ndarray, weight: np.ndarray) -> float:
    idx = np.repeat(np.arange(len(y)), weight)
    return metrics(kind, y[idx], p[idx]).get(metric, float("nan"))


def _percentiles(values: np.ndarray) -> list[float]:
    values = values[np.isfinite(values)]
    return [float(v) for v in np.percentile(values, [2.5, 97.5])] if len(values) else [float("nan")] * 2


def intervals_on_test(
    data: TaskData,
    models: dict[str, ModelResult],
    n_boot: int,
    seed: int,
    test_predictions: dict[str, np.ndarray] | None = None,
) -> dict | None:
    """Bootstrap intervals of the task's first metric on the test window (same clients).
    `test_predictions`: what `evaluate` already predicted there, {model: prediction}."""
    test = data.splits.get("test")
    if test is None or test.clients is None or not len(test.y) or n_boot == 0:
        return None
    metric = data.task.metrics[0]
    known = test_predictions or {}
    preds = {name: known[name] if name in known else m.predict(test) for name, m in models.items()}
    return bootstrap_intervals(data.task.type, metric, test.y, preds, test.clients, n_boot, seed)


def run_task(
    data: TaskData,
    foundation: BehavioralNet | None,
    fcfg: FoundationConfig,
    ev: EvaluationConfig,
    on_epoch: Callable[[str, dict], None] | None = None,
) -> TaskRun:
    """The four models on every training example, and their validation metrics (the test
    windows are left to `evaluate`, after selection)."""
    models: dict[str, ModelResult] = {}
    nets = {"finetuned": foundation, "scratch": None} if foundation is not None else {"scratch": None}
    for name, init in nets.items():
        res, fn = fit_network(data, init, fcfg, ev, on_epoch=(lambda r, n=name: on_epoch(n, r)) if on_epoch else None)
        models[name] = ModelResult(name, fn, res.seconds, res.best_epoch, res.history, artifact=res.net)
        if data.item_log_prior is not None:  # items ranked: also the popularity-aware decode
            pop = name + POPULARITY_DECODE
            models[pop] = ModelResult(pop, rebuild(data, pop, res.net), res.seconds, res.best_epoch, artifact=res.net)
    gbdt = fit_gbdt(data, ev)
    if gbdt is not None:
        models[gbdt.name] = gbdt
        if "finetuned" in models:  # the hybrid: aggregates plus the foundation model's embedding
            net = models["finetuned"].artifact
            features, projection = embedding_features(net, data.splits["train"])
            hybrid = fit_gbdt(data, ev, features=features, name="lightgbm_fm")
            if hybrid is not None:
                hybrid.artifact = {"gbdt": hybrid.artifact, "net": net, **projection}
                models[hybrid.name] = hybrid
            mix = fit_mix(data, models["finetuned"], gbdt, "finetuned_lightgbm")
            models[mix.name] = mix
            if data.splits["train"].f.shape[1]:  # the foundation model reading the aggregates too
                res, fn = fit_network(data, foundation, fcfg, ev, with_aggregates=True)
                artifact = {"net": res.net, "aggregates": int(data.splits["train"].f.shape[1])}
                models[WITH_AGGREGATES] = ModelResult(
                    WITH_AGGREGATES, fn, res.seconds, res.best_epoch, res.history, artifact=artifact
                )
    prior = fit_prior(data)
    models[prior.name] = prior
    best_net = models["finetuned"].artifact if "finetuned" in models else None
    models.update(fit_recommendation_baselines(data, best_net, ev.seed))  # {} unless items are ranked
    return TaskRun(models, evaluate(data, models, roles=("validation",)))


#: The models of a learning curve, each fitted at every labeled fraction.
CURVE_MODELS = ("finetuned", "scratch", "lightgbm")


def learning_curve(
    data: TaskData,
    foundation: BehavioralNet,
    fcfg: FoundationConfig,
    ev: EvaluationConfig,
    fitted_on_all: Mapping[str, ModelResult] | None = None,
) -> list[dict]:
    """Validation and test metric per labeled fraction for fine-tuned, scratch and LightGBM.
    Fractions are training examples drawn by one seeded permutation, so they nest.
    `fitted_on_all`: those models already fitted on every training example (the fine-tuned one
    from `foundation`); a fraction that covers every example reuses them instead of fitting the
    same models again (the curve's most expensive fraction)."""
    t = data.task
    n = len(data.splits["train"].y)
    order = np.random.default_rng(ev.seed).permutation(n)
    metric = t.metrics[0]
    rows: list[dict] = []
    for frac in ev.label_fractions:
        idx = np.sort(order[: max(2, int(round(frac * n)))])
        every = len(idx) == n and fitted_on_all is not None
        fitted = {k: fitted_on_all[k] for k in CURVE_MODELS if k in fitted_on_all} if every else {}
        for name, init in {"finetuned": foundation, "scratch": None}.items():
            if name not in fitted:
                res, fn = fit_network(data, init, fcfg, ev, train_idx=idx)
                fitted[name] = ModelResult(name, fn, res.seconds, res.best_epoch)
        gbdt = None if "lightgbm" in fitted else fit_gbdt(data, ev, train_idx=idx)
        if gbdt is not None:
            fitted[gbdt.name] = gbdt
        for name, row in evaluate(data, fitted).items():
            rows.append(
                {
                    "fraction": frac,
                    "n_train": len(idx),
                    "model": name,
                    "metric": metric,
                    "validation": row.get(f"validation_{metric}"),
                    "test": row.get(f"test_{metric}"),
                    "train_seconds": row["train_seconds"],
                }
            )
    return rows
