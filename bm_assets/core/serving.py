"""What a task serves: the model its training picked on the validation window (the report's
pick), and that model's inputs for one scored day. A daily score must come from the model the
report recommends, not from a fixed network: on repeat-heavy data the pick of a recommendation
task (a ranker over the client's purchase history) scores several times the network's NDCG."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from bm_assets.core.artifacts import ServedModel
from bm_assets.core.evaluation import Split, TaskData, reads_aggregates, reads_history
from bm_assets.core.examples import item_history
from bm_assets.core.features import aggregate_features
from bm_assets.core.foundation import BehavioralNet
from bm_assets.core.report import selected_model
from bm_assets.core.tasks import EvaluationConfig, TaskSpec
from bm_assets.core.warehouse import Warehouse


class ServedInputsError(RuntimeError):
    """The served model's inputs cannot be rebuilt as it was trained on them."""


def servable(task: TaskSpec, artifact: object) -> bool:
    """Whether the daily scores can run the model: with `explain: true` only a network (the
    reasons written beside each score are the network's attributions, so they must explain the
    model that scored); otherwise any model."""
    return isinstance(artifact, BehavioralNet) or not task.explain


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
) -> Split:
    """The served model's view of each client at the end of `day` (the split date is day + 1):
    the profile, and the aggregates or the purchase history only when the model reads them,
    from events up to the end of `day` only, with the windows and top values of its training."""
    n = len(client_ids)
    examples = pd.DataFrame({"client_id": np.asarray(client_ids, dtype=str), "t": day + dt.timedelta(days=1)})
    f = np.zeros((n, 0), np.float32)
    if reads_aggregates(served.artifact) and n:
        windows = ev.model_copy(update={"feature_windows_days": served.feature_windows_days})
        f, names = aggregate_features(wh, examples, windows, served.feature_tops)
        if names != served.feature_names:
            raise ServedInputsError(
                f"{task.name}: the aggregates rebuilt for {day} are not the ones model {served.name} was trained "
                f"on ({len(names)} columns vs {len(served.feature_names)}): retrain {task.name}_model"
            )
    history = None
    if reads_history(served.artifact):
        history = item_history(wh, task, examples, served.label_space.labels or [])
    return Split(x, f, np.zeros((n, 0), np.float32), history=history, clients=np.asarray(client_ids))
