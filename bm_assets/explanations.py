"""`bm-assets explain`: why one client got its score on one day, from the materialized task
model, sketch coders and events up to the end of that day (nothing later is read)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bm_assets.assets.foundation import modeling_config
from bm_assets.core.artifacts import ServedModel, Store, load_registered_model
from bm_assets.core.evaluation import projected_features, rebuild
from bm_assets.core.explain import (
    Aggregates,
    as_of_examples,
    explain_rows,
    gbdt_top_reasons,
    item_rollups,
    top_reasons,
)
from bm_assets.core.features import aggregate_features, feature_tops
from bm_assets.core.foundation import BehavioralNet, predict
from bm_assets.core.kinds import EXPLAINABLE, Boosters, kind_of
from bm_assets.core.profiles import load_profiles, read_layout_of
from bm_assets.core.serving import day_inputs, served_task_data
from bm_assets.core.tasks import TaskConfigError, feature_columns
from bm_assets.resources import DatasetResource, WarehouseResource
from bm_assets.settings import bm_home


@dataclass
class ClientExplanation:
    task: str
    client_id: str
    day: dt.date
    horizon_days: int
    model: str
    label: str | None
    score: float
    baseline_score: float | None
    reasons: pd.DataFrame  # title, direction, share
    completeness_gap: float | None = None
    collision_share: float | None = None
    #: how the shares are made, when not one model's attributions (a mix of two models)
    footer: str | None = None

    def lines(self) -> list[str]:
        window = f"[{self.day + dt.timedelta(days=1)}, {self.day + dt.timedelta(days=1 + self.horizon_days)})"
        what = f"{self.task}" + (f", label {self.label}" if self.label is not None else "")
        out = [
            f"{what} for client {self.client_id} on {self.day} (events up to the end of that day; predicts {window})",
            f"  score {self.score:.4g} ({self.model})"
            + (
                f"; a typical client with no history in the catalogue: {self.baseline_score:.4g}"
                if self.baseline_score is not None
                else ""
            ),
        ]
        width = max([len(t) for t in self.reasons["title"]] + [6])
        out.append(f"  {'reason':<{width}}  direction  share")
        for _, r in self.reasons.iterrows():
            out.append(f"  {r['title']:<{width}}  {r['direction']:<9}  {r['share']:>5.0%}")
        if self.footer is not None:
            out.append(f"  {self.footer}")
        elif self.completeness_gap is not None:
            out.append(
                f"  attributions sum to the score change within {self.completeness_gap:.1e}; "
                f"{self.collision_share:.0%} of the sketch attribution sits in buckets shared by two or more of "
                "this client's entities (split between them by their weight)"
            )
        else:
            out.append("  shares of the model's raw score (log-odds for classifiers; SHAP values)")
        return out


def explain_client(
    dataset: DatasetResource,
    warehouse: WarehouseResource,
    task_name: str,
    client_id: str,
    day: dt.date,
    label: str | None = None,
    model: str = "champion",
    top: int = 10,
) -> ClientExplanation:
    """Explain `task_name`'s score of `client_id` dated `day` (the profile at the end of day).
    `model`: "champion" (the registered version the daily scores use), or a network or
    LightGBM of the latest training ("finetuned", "scratch", "lightgbm")."""
    cfg = dataset.load()
    mcfg = modeling_config(dataset)
    names = [t.name for t in mcfg.tasks]
    if task_name not in names:
        raise TaskConfigError(f"{mcfg.config_file}: no task {task_name!r}; tasks are {names}")
    task = mcfg.task(task_name)
    kind = kind_of(task)
    if not kind.explainable:
        raise TaskConfigError(f"{task_name}: {kind.name} tasks are not explained (explanations cover {EXPLAINABLE})")
    store = Store(bm_home())
    if model == "champion":
        served, version = _champion(cfg.name, task)
        shown = f"champion, version {version}"
        if not isinstance(served.artifact, BehavioralNet):
            with warehouse.open(sandboxed=True) as wh:
                return explain_served(wh, cfg, mcfg, task, served, str(client_id), day, label, top, shown)
        net, labels = served.artifact, served.label_space.labels
    else:
        saved = store.load_task(task.name)
        bundle, labels = saved.models, saved.label_space.labels  # the labels the models were trained on
        if model not in bundle:
            raise TaskConfigError(f"{task_name}: no model {model!r}; trained models are {sorted(bundle)}")
        net, shown = bundle[model]["artifact"], model
    coders = store.load_coders()
    with warehouse.open(sandboxed=True) as wh:
        ids, x = load_profiles(wh, day, coders)
        pos = _client_rows(ids, client_id, day)
        if model == "lightgbm":
            return _explain_gbdt(wh, cfg, mcfg, task, bundle, labels, str(client_id), day, label, top)
        row = x[pos]
        scores = predict(net, row, kind.output())
        j = _label_index(task, labels, scores, label)
        explained = _network_explained(wh, cfg, task, net, ids[pos], row, x, day, coders, j)
    return ClientExplanation(
        task=task.name,
        client_id=str(client_id),
        day=day,
        horizon_days=task.horizon_days,
        model=shown,
        label=None if j is None else str(labels[j]),
        score=float(explained.attributions.output[0]),
        baseline_score=float(explained.attributions.baseline_output[0]),
        reasons=top_reasons(explained.reasons, 0, top),
        completeness_gap=explained.completeness_gap(),
        collision_share=float(explained.collision_share[0]),
    )


def _client_rows(ids: np.ndarray, client_id: str, day: dt.date) -> np.ndarray:
    pos = np.flatnonzero(ids == str(client_id))
    if not len(pos):
        raise LookupError(f"client {client_id} has no event up to the end of {day}: nothing to explain")
    return pos


def _network_explained(wh, cfg, task, net, ids, rows, x, day, coders, j, aggregates=None):
    """Integrated Gradients of the network's output j (None: its only output) for profile rows
    (and the aggregates, for a network reading them)."""
    layout = read_layout_of(wh, coders)
    return explain_rows(
        wh,
        net,
        task.type,
        rows,
        as_of_examples(ids, day),
        coders,
        layout,
        item_rollups(cfg, coders),
        x,
        j,
        aggregates=aggregates,
    )


def _gbdt_reasons(task, models, f: np.ndarray, names: list[str], tops: dict, j: int | None) -> pd.DataFrame:
    """Every input of a LightGBM model that moved the first row's output j, by its SHAP value:
    title (with the client's value), direction, share of the total absolute contribution (the
    daily reasons' `gbdt_top_reasons`, every input kept)."""
    target = None if j is None else np.asarray([j])
    top = gbdt_top_reasons(task.type, models, f[:1], names, tops, target, f.shape[1])
    direction = np.where(top["attribution"].to_numpy(np.float64) >= 0, "raises", "lowers")
    return pd.DataFrame({"title": top["reason"], "direction": direction, "share": top["share"]})


def explain_served(
    wh, cfg, mcfg, task, served: ServedModel, client_id: str, day: dt.date, label: str | None, top: int, shown: str
) -> ClientExplanation:
    """A served model that is not a network alone: LightGBM (SHAP values of its aggregates), the
    hybrid (SHAP values of its aggregates and embedding components), the mix of the network
    and LightGBM (each part's shares weighted by its weight in the mix) or the network reading
    the aggregates (attributions of both, the aggregates against the day's median client). The score is the served
    model's own, from the inputs the daily scores rebuild for `day`."""
    art, labels = served.artifact, served.label_space.labels
    coders = Store(bm_home()).load_coders()
    ids, x = load_profiles(wh, day, coders)
    pos = _client_rows(ids, client_id, day)
    inputs = day_inputs(wh, task, served, mcfg.evaluation, ids[pos], x[pos], day, cfg.list_columns())
    scores = np.asarray(rebuild(served_task_data(task, served), served.name, art)(inputs))
    j = _label_index(task, labels, scores, label)
    score = float(scores.reshape(-1)[0] if j is None else scores.reshape(1, -1)[0, j])
    names, tops = served.feature_names, served.feature_tops
    footer = baseline = gap = collision = None
    if isinstance(art, dict) and "aggregates" in art:  # the network reading the aggregates too
        # the baseline's population
        everyone = day_inputs(wh, task, served, mcfg.evaluation, ids, x, day, cfg.list_columns())
        side = Aggregates(inputs.f, everyone.f, names, tops)
        explained = _network_explained(wh, cfg, task, art["net"], ids[pos], x[pos], x, day, coders, j, side)
        reasons = top_reasons(explained.reasons, 0, top)
        baseline = float(explained.attributions.baseline_output[0])
        gap, collision = explained.completeness_gap(), float(explained.collision_share[0])
    elif isinstance(art, Boosters):
        reasons = _gbdt_reasons(task, art, inputs.f, names, tops, j)
    elif isinstance(art, dict) and "gbdt" in art:
        f = projected_features(art["net"], art)(inputs)
        extra = [f"foundation embedding: component {k + 1}" for k in range(f.shape[1] - len(names))]
        reasons = _gbdt_reasons(task, art["gbdt"], f, names + extra, tops, j)
    elif isinstance(art, dict) and "mix" in art:
        weight = float(art["mix"])
        explained = _network_explained(wh, cfg, task, art["net"], ids[pos], x[pos], x, day, coders, j)
        network = top_reasons(explained.reasons, 0, len(explained.reasons))[["title", "direction", "share"]]
        trees = _gbdt_reasons(task, art["mix_gbdt"], inputs.f, names, tops, j)
        parts = [network.assign(share=network["share"] * weight, title=network["title"] + " (network)")]
        parts.append(trees.assign(share=trees["share"] * (1 - weight), title=trees["title"] + " (LightGBM)"))
        reasons = pd.concat(parts, ignore_index=True).sort_values("share", ascending=False, kind="stable")
        footer = (
            f"the score averages the network ({weight:.0%}) and LightGBM ({1 - weight:.0%}); shares are each "
            "model's shares of its own raw score (attributions; SHAP values), weighted by its part"
        )
    else:
        raise LookupError(
            f"the champion of {task.name} serves {served.name}, which has no reasons to show; explain a model of "
            "the latest training instead: --model finetuned, --model scratch or --model lightgbm"
        )
    return ClientExplanation(
        task.name,
        client_id,
        day,
        task.horizon_days,
        f"{shown}, {served.name}",
        None if j is None else str(labels[j]),
        score,
        baseline,
        reasons.head(top).reset_index(drop=True),
        completeness_gap=gap,
        collision_share=collision,
        footer=footer,
    )


def _champion(dataset_name: str, task) -> tuple[ServedModel, str]:
    """The model the champion version serves (what `<task>_scores` uses) and the version."""
    from bm_assets.assets.tasks import task_model_name
    from bm_assets.core.registry import champion
    from bm_assets.resources import MLflowResource

    registered = task_model_name(dataset_name, task)
    client = MLflowResource().client()
    version = champion(client, registered)
    if version is None:
        raise LookupError(f"registered model {registered} has no champion: materialize {task.name}_model first")
    named = version.tags.get("model", version.tags.get("network", "finetuned"))
    return load_registered_model(client, registered, str(version.version), named), str(version.version)


def _label_index(task, labels: list[str] | None, scores: np.ndarray, label: str | None) -> int | None:
    """The explained output: None for one-score tasks; the asked label, else the top-scored."""
    if kind_of(task).one_score:
        if label is not None:
            raise TaskConfigError(f"{task.name}: a {task.type} task has one score; drop --label")
        return None
    labels = [str(v) for v in labels or []]
    if label is None:
        return int(np.asarray(scores).reshape(1, -1)[0].argmax())
    if label not in labels:
        raise TaskConfigError(f"{task.name}: no label {label!r}; labels are {labels}")
    return labels.index(label)


def _explain_gbdt(wh, cfg, mcfg, task, bundle, labels, client_id, day, label, top) -> ClientExplanation:
    """LightGBM's SHAP contributions for the client's aggregates at split date day + 1."""
    ev = mcfg.evaluation
    lists = cfg.list_columns()
    tops = feature_tops(wh, feature_columns(mcfg, cfg), ev, cfg.temporal.training_cutoff, lists)
    example = pd.DataFrame({"client_id": [client_id], "t": [day + dt.timedelta(days=1)]})
    f, names = aggregate_features(wh, example, ev, tops, lists)
    models = bundle["lightgbm"]["artifact"]
    scores = np.asarray(kind_of(task).gbdt_predict(models, f, len(labels or [])))[0]
    j = _label_index(task, labels, scores, label)
    score = float(scores if j is None else scores[j])
    reasons = _gbdt_reasons(task, models, f, names, tops, j).head(top)
    return ClientExplanation(
        task.name,
        client_id,
        day,
        task.horizon_days,
        "lightgbm",
        None if j is None else str(labels[j]),
        score,
        None,
        reasons,
    )
