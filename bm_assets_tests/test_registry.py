"""The champion rule against a real MLflow sqlite registry: a version takes the `champion` alias only
when its validation score is at least the champion's, in the metric's direction."""

from __future__ import annotations

import math

import mlflow
import pytest
import torch

from bm_assets.core.artifacts import load_registered, log_network
from bm_assets.core.foundation import BehavioralNet
from bm_assets.core.registry import CHAMPION, champion, decide, higher_is_better, register_and_promote


@pytest.mark.parametrize(
    ("metric", "new", "old", "promoted"),
    [
        ("auroc", 0.71, 0.70, True),
        ("auroc", 0.70, 0.70, True),  # at least as good
        ("auroc", 0.69, 0.70, False),
        ("rmse", 74.0, 75.0, True),
        ("rmse", 75.0, 75.0, True),
        ("rmse", 76.0, 75.0, False),
        ("val_cross_entropy", 2.1, 2.0, False),
        ("ndcg@10", 0.2, 0.1, True),
        ("auroc", float("nan"), 0.7, False),
        ("auroc", 0.6, None, True),
    ],
)
def test_decide_is_direction_aware(metric, new, old, promoted):
    ok, reason = decide(metric, new, old)
    assert ok is promoted
    assert reason  # always a sentence for the report


def test_directions():
    assert higher_is_better("auroc") and higher_is_better("ndcg@10") and higher_is_better("validation_auroc")
    assert not higher_is_better("rmse") and not higher_is_better("validation_mae")


def _logged(value: float) -> str:
    net = BehavioralNet(2, 4, 1, 0.0, [], n_out=1)
    with torch.no_grad():
        net.task_head.weight.fill_(value)
    return log_network(net, "net")


@pytest.mark.parametrize(
    ("metric", "scores", "expected"),
    [
        ("auroc", [0.70, 0.65, 0.72, 0.72], [True, False, True, True]),
        ("rmse", [80.0, 81.0, 79.5, 90.0], [True, False, True, False]),
    ],
)
def test_register_and_promote_moves_the_alias_only_forward(tmp_path, monkeypatch, metric, scores, expected):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # restored after the test (set_tracking_uri would leak it)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    champions = []
    for i, score in enumerate(scores):
        with mlflow.start_run(experiment_id=exp):
            p = register_and_promote(client, "m", _logged(i), "a model", {"dataset": "d"}, metric, score)
        assert p.version == str(i + 1)
        assert p.promoted is expected[i], p.reason
        version = client.get_model_version("m", p.version)
        assert version.tags["promoted"] == str(expected[i]).lower()
        assert version.tags["promotion_reason"] == p.reason
        assert float(version.tags["validation_score"]) == score
        champions.append(str(champion(client, "m").version))
        assert p.champion_version == champions[-1]
    # the alias follows the rule, and the champion's weights are what its version loads
    best = {True: max, False: min}[higher_is_better(metric)]
    winner = champions[-1]
    assert float(client.get_model_version("m", winner).tags["validation_score"]) == best(
        s for s, e in zip(scores, expected, strict=True) if e
    )
    loaded, space = load_registered(client, "m", client.get_model_version_by_alias("m", CHAMPION).version)
    assert math.isclose(float(loaded.task_head.weight.detach()[0, 0]), float(int(winner) - 1)) and space is None
