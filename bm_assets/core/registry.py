"""The MLflow model registry: a new version per training, and the `champion` alias that scoring
follows. A new version becomes the champion only when its validation score is at least the
current champion's, in the metric's own direction (AUROC: higher is better; RMSE: lower)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

CHAMPION = "champion"
#: Metrics where a smaller value is better; every other metric is better when larger.
LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss", "cross_entropy", "val_cross_entropy"})
SCORE_TAG, METRIC_TAG = "validation_score", "validation_metric"


def higher_is_better(metric: str) -> bool:
    return metric.removeprefix("validation_") not in LOWER_IS_BETTER


@dataclass(frozen=True)
class Promotion:
    """The outcome of comparing a new version with the champion; `reason` is a sentence for
    reports and the UI."""

    registered_model: str
    version: str
    metric: str
    score: float
    promoted: bool
    reason: str
    champion_version: str  # the champion after the decision: the new version, or the one kept
    previous_champion: str | None = None
    previous_score: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def decide(metric: str, score: float, champion_score: float | None) -> tuple[bool, str]:
    """(promote, reason): promote when there is no champion, or when `score` is at least
    `champion_score` in the metric's direction. An undefined (NaN) score never replaces a champion."""
    better = "higher" if higher_is_better(metric) else "lower"
    if champion_score is None:
        return True, "no champion yet: the first version becomes the champion"
    if not math.isfinite(score):
        return False, f"validation {metric} is undefined (NaN); the champion is kept"
    if not math.isfinite(champion_score):
        return True, f"validation {metric} {score:.4f}; the champion's is undefined (NaN)"
    ok = score >= champion_score if better == "higher" else score <= champion_score
    relation = (
        ("at least as high as" if better == "higher" else "at most")
        if ok
        else ("below" if better == "higher" else "above")
    )
    return ok, f"validation {metric} {score:.4f} is {relation} the champion's {champion_score:.4f} ({better} is better)"


def champion(client: mlflow.MlflowClient, name: str) -> ModelVersion | None:
    """The version the `champion` alias points to, or None (no model, or no alias yet)."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def register_model(
    client: mlflow.MlflowClient, name: str, source: str, description: str, tags: dict[str, str]
) -> ModelVersion:
    """A new version of registered model `name` from the artifacts at `source` (a network folder
    logged by core/artifacts.log_network), with a description and tags on both the model and the
    version (the registry page says what it is and what data made it)."""
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(name)
    client.update_registered_model(name, description=description)
    for key, value in tags.items():
        client.set_registered_model_tag(name, key, value)
    run_id = mlflow.active_run().info.run_id if mlflow.active_run() else None
    return client.create_model_version(name, source, run_id=run_id, tags=tags, description=description)


def register_and_promote(
    client: mlflow.MlflowClient,
    name: str,
    source: str,
    description: str,
    tags: dict[str, str],
    metric: str,
    score: float,
) -> Promotion:
    """Register a new version with its validation score, compare it with the champion's recorded
    score (`validation_score` tag of the champion version) and move the alias when it is at least
    as good. The decision and its reason are tagged on the new version."""
    current = champion(client, name)
    previous = float(current.tags[SCORE_TAG]) if current is not None and SCORE_TAG in current.tags else None
    if current is not None and current.tags.get(METRIC_TAG, metric) != metric:
        previous = None  # a champion scored on another metric cannot be compared: replaced
    version = register_model(
        client, name, source, description, {**tags, METRIC_TAG: metric, SCORE_TAG: repr(float(score))}
    )
    promoted, reason = decide(metric, score, previous)
    if current is not None and previous is None and promoted:
        reason = f"the champion (version {current.version}) has no recorded validation {metric}: replaced"
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version.version)
    client.set_model_version_tag(name, version.version, "promoted", str(promoted).lower())
    client.set_model_version_tag(name, version.version, "promotion_reason", reason)
    return Promotion(
        registered_model=name,
        version=str(version.version),
        metric=metric,
        score=float(score),
        promoted=promoted,
        reason=reason,
        champion_version=str(version.version) if promoted else str(current.version),
        previous_champion=str(current.version) if current is not None else None,
        previous_score=previous,
    )
