"""What a task serves: the model its training picked on the validation window (the report's
pick), and that model's inputs for one scored day. A daily score must come from the model the
report recommends, not from a fixed network: on repeat-heavy data the pick of a recommendation
task (a ranker over the client's purchase history) scores several times the network's NDCG."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

import numpy as np
import pandas as pd

from bm_assets.core.artifacts import ServedModel
from bm_assets.core.evaluation import Split, TaskData, projected_features, reads_aggregates, reads_history
from bm_assets.core.examples import item_history
from bm_assets.core.explain import (
    Aggregates,
    as_of_examples,
    explain_rows,
    gbdt_top_reasons,
    top_reasons_per_row,
)
from bm_assets.core.features import aggregate_features
from bm_assets.core.foundation import BehavioralNet
from bm_assets.core.kinds import Boosters
from bm_assets.core.profiles import ProfileLayout
from bm_assets.core.report import selected_model
from bm_assets.core.sketches import SketchCoder
from bm_assets.core.tasks import EvaluationConfig, TaskSpec
from bm_assets.core.warehouse import Warehouse


class ServedInputsError(RuntimeError):
    """The served model's inputs cannot be rebuilt as it was trained on them."""


def has_reasons(artifact: object) -> bool:
    """Whether a model's scores can be explained per client: a network, also one reading the
    aggregates (attributions), LightGBM and the hybrid (SHAP values), the mix of the two (both,
    weighted by the mix). The prior, the same score for everyone, has nothing to explain."""
    if isinstance(artifact, dict):
        return any(k in artifact for k in ("gbdt", "mix", "aggregates"))
    return isinstance(artifact, (BehavioralNet, Boosters))


def servable(task: TaskSpec, artifact: object) -> bool:
    """Whether the daily scores can run the model: with `explain: true` only a model with
    reasons (the reasons written beside each score must explain the model that scored);
    otherwise any model."""
    return has_reasons(artifact) or not task.explain


def served_choice(task: TaskSpec, report: dict[str, dict[str, float]], artifacts: dict[str, object]) -> str:
    """The validation pick among the servable models (`report`: validation metrics per model).
    Without a finite validation metric, the fine-tuned network (else the first network)."""
    rows = {n: r for n, r in report.items() if n in artifacts and servable(task, artifacts[n])}
    pick = selected_model(task, rows)
    if pick is not None:
        return pick["model"]
    nets = [n for n in ("finetuned", "scratch") if isinstance(artifacts.get(n), BehavioralNet)]
    if not nets:
        raise ServedInputsError(f"{task.name}: no model to serve (no network and no finite validation metric)")
    return nets[0]


def served_task_data(task: TaskSpec, served: ServedModel) -> TaskData:
    """The task context `evaluation.rebuild` predicts with, as saved at training."""
    space = served.label_space
    return TaskData(
        task,
        {},
        space.labels,
        [],
        space.item_codes,
        space.item_log_prior,
        served.feature_names,
        served.feature_tops,
        served.item_stats,
    )


def day_inputs(
    wh: Warehouse,
    task: TaskSpec,
    served: ServedModel,
    ev: EvaluationConfig,
    client_ids: np.ndarray,
    x: np.ndarray,
    day: dt.date,
    lists: Collection[str] = (),
) -> Split:
    """The served model's view of each client at the end of `day` (the split date is day + 1):
    the profile, and the aggregates or the purchase history only when the model reads them,
    from events up to the end of `day` only, with the windows and top values of its training.
    `lists`: the dataset's list columns (DatasetConfig.list_columns)."""
    n = len(client_ids)
    examples = pd.DataFrame({"client_id": np.asarray(client_ids, dtype=str), "t": day + dt.timedelta(days=1)})
    f = np.zeros((n, 0), np.float32)
    if reads_aggregates(served.artifact) and n:
        windows = ev.model_copy(update={"feature_windows_days": served.feature_windows_days})
        f, names = aggregate_features(wh, examples, windows, served.feature_tops, lists)
        if names != served.feature_names:
            raise ServedInputsError(
                f"{task.name}: the aggregates rebuilt for {day} are not the ones model {served.name} was trained "
                f"on ({len(names)} columns vs {len(served.feature_names)}): retrain {task.name}_model"
            )
    history = None
    if reads_history(served.artifact):
        history = item_history(wh, task, examples, served.label_space.labels or [])
    return Split(x, f, np.zeros((n, 0), np.float32), history=history, clients=np.asarray(client_ids))


#: Reason columns of `<task>_score_reasons`, after client_id, score_date and label.
REASON_COLUMNS = ("rank", "reason", "direction", "share")


def _network_top_reasons(
    wh, net, task, x, ids, day, coders, layout, rollups, reference, target, k, aggregates=None
) -> pd.DataFrame:
    """(row, reason, attribution, share) of the network's Integrated Gradients attributions
    (against the baseline of the `reference` profiles)."""
    examples = as_of_examples(ids, day)
    explained = explain_rows(
        wh, net, task.type, x, examples, coders, layout, rollups, reference, target, aggregates=aggregates
    )
    top = top_reasons_per_row(explained.reasons, k)
    sign = np.where(top["direction"].to_numpy() == "raises", 1.0, -1.0)
    return pd.DataFrame(
        {"row": top["row"], "reason": top["reason"], "attribution": sign * top["share"], "share": top["share"]}
    )


def score_reasons(
    wh: Warehouse,
    task: TaskSpec,
    served: ServedModel,
    ids: np.ndarray,
    x: np.ndarray,
    inputs: Split,
    target: np.ndarray | None,
    day: dt.date,
    coders: dict[str, SketchCoder],
    layout: ProfileLayout,
    rollups: dict[str, list[str]],
    reference: np.ndarray,
    reference_aggregates: np.ndarray | None = None,
    k: int = 3,
) -> pd.DataFrame:
    """(row, rank, reason, direction, share): the k largest reasons of each row's score by the
    served model, from the inputs it scored with (`inputs`, rows of `x`, the profiles of `ids`
    at the end of `day`). A network: its attributions over the profile, against the baseline of
    the `reference` profiles (the day's population; a network reading the aggregates, also their
    median over `reference_aggregates`); LightGBM and the hybrid: SHAP values of the aggregates and
    embedding components; the mix: both, each model's shares of its own raw score weighted by its
    part (reasons end in "(network)" or "(LightGBM)"). Multilabel/multiclass: of output
    target[row]. Shares are of the row's total absolute contribution."""
    art = served.artifact
    names, tops = served.feature_names, served.feature_tops
    if isinstance(art, BehavioralNet):
        top = _network_top_reasons(wh, art, task, x, ids, day, coders, layout, rollups, reference, target, k)
    elif isinstance(art, dict) and "aggregates" in art:
        if reference_aggregates is None:
            raise ValueError(f"{task.name}: {served.name} reads the aggregates: give the day's reference_aggregates")
        side = Aggregates(inputs.f, reference_aggregates, names, tops)
        net = art["net"]
        top = _network_top_reasons(wh, net, task, x, ids, day, coders, layout, rollups, reference, target, k, side)
    elif isinstance(art, Boosters):
        top = gbdt_top_reasons(task.type, art, inputs.f, names, tops, target, k)
    elif isinstance(art, dict) and "gbdt" in art:
        f = projected_features(art["net"], art)(inputs)
        extra = [f"foundation embedding: component {j + 1}" for j in range(f.shape[1] - len(names))]
        top = gbdt_top_reasons(task.type, art["gbdt"], f, names + extra, tops, target, k)
    elif isinstance(art, dict) and "mix" in art:
        weight = float(art["mix"])
        network = _network_top_reasons(wh, art["net"], task, x, ids, day, coders, layout, rollups, reference, target, k)
        trees = gbdt_top_reasons(task.type, art["mix_gbdt"], inputs.f, names, tops, target, k)
        parts = [
            network.assign(share=network["share"] * weight, reason=network["reason"] + " (network)"),
            trees.assign(share=trees["share"] * (1 - weight), reason=trees["reason"] + " (LightGBM)"),
        ]
        top = pd.concat([p for p in parts if len(p)], ignore_index=True)  # the k largest of each hold both's
    else:
        raise ServedInputsError(f"{task.name}: {served.name} has no reasons to write (explain: true)")
    if not len(top):
        return pd.DataFrame(columns=["row", *REASON_COLUMNS])
    top = top.sort_values(["row", "share"], ascending=[True, False], kind="stable").groupby("row").head(k)
    top = top.reset_index(drop=True)
    return pd.DataFrame(
        {
            "row": top["row"].to_numpy(),
            "rank": top.groupby("row").cumcount().to_numpy() + 1,
            "reason": top["reason"].to_numpy(),
            "direction": np.where(top["attribution"].to_numpy() >= 0, "raises", "lowers"),
            "share": top["share"].to_numpy(dtype=np.float64),
        }
    )
