"""Retraining with a champion, end to end on the first half of the sample: a first training, then two
runs of the real `retrain` job, one that validates better (promoted) and one trained on 40 examples
for one epoch (kept out); the daily scores and the export use the champion throughout."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from dagster import DagsterInstance, materialize
from mlflow import MlflowClient

from bm_assets.cli import main
from bm_assets.core.registry import champion
from bm_assets.definitions import build_definitions
from bm_assets_tests.conftest import TASKS

# Fewer labels and one epoch: a real, worse training (its score is measured, not assumed).
STARVED = TASKS.replace("  task_patience: 1\n", "  task_patience: 1\n  max_train_examples: 40\n").replace(
    "task_max_epochs: 3", "task_max_epochs: 1"
)


def _defs(dataset, tasks_yaml: str):
    (dataset.parent / "tasks.yaml").write_text(tasks_yaml)
    return build_definitions(dataset)


def _score_days(defs, instance, first: str, last: str):
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    result = materialize(
        list(defs.assets), selection=["churn_scores"], resources=defs.resources, instance=instance, tags=tags
    )
    assert result.success
    return result.asset_materializations_for_node("churn_scores")[0].metadata


def test_two_retrains_one_promoted_one_not(half_year, bm_home, monkeypatch):
    assert "max_train_examples: 40" in STARVED and "task_max_epochs: 1" in STARVED
    instance = DagsterInstance.ephemeral()
    client = MlflowClient(tracking_uri=f"sqlite:///{bm_home / 'mlflow.db'}")

    # 1. first training on starved labels: no champion yet, so it becomes the champion
    defs = _defs(half_year, STARVED)
    tags = {"dagster/asset_partition_range_start": "2017-01-01", "dagster/asset_partition_range_end": "2017-06-30"}
    main_keys = [k for a in defs.assets for k in a.keys if not k.to_user_string().endswith("_scores")]
    first = materialize(list(defs.assets), selection=main_keys, resources=defs.resources, instance=instance, tags=tags)
    assert first.success
    v1 = first.asset_materializations_for_node("churn_model")[0].metadata
    assert v1["registered_version"].value == "1" and v1["promoted"].value is True
    assert str(champion(client, "completejourney_sample_churn").version) == "1"

    # 2. the `retrain` job with the full labels: validates better, promoted
    defs = _defs(half_year, TASKS)
    assert {"foundation_model", "churn_model", "churn_evaluation"} == {
        k.to_user_string() for k in defs.resolve_job_def("retrain").asset_layer.executable_asset_keys
    }
    second = defs.resolve_job_def("retrain").execute_in_process(instance=instance)
    assert second.success
    v2 = second.asset_materializations_for_node("churn_model")[0].metadata
    s1 = float(client.get_model_version("completejourney_sample_churn", "1").tags["validation_score"])
    s2 = float(client.get_model_version("completejourney_sample_churn", "2").tags["validation_score"])
    assert s2 > s1, f"the scenario needs the full training to validate better: {s2} vs {s1}"
    assert v2["registered_version"].value == "2" and v2["promoted"].value is True
    assert v2["champion_version"].value == "2"
    report = json.loads((bm_home / "reports" / "churn.json").read_text())
    assert report["registry"]["version"] == "2" and report["registry"]["promoted"] is True
    assert "at least as high as the champion's" in report["registry"]["reason"]
    scores_meta = _score_days(defs, instance, "2017-06-28", "2017-06-29")
    assert scores_meta["model_version"].value == "2"

    # 3. the `retrain` job on starved labels again: validates worse, not promoted; scoring keeps v2
    defs = _defs(half_year, STARVED)
    third = defs.resolve_job_def("retrain").execute_in_process(instance=instance)
    assert third.success
    v3 = third.asset_materializations_for_node("churn_model")[0].metadata
    s3 = float(client.get_model_version("completejourney_sample_churn", "3").tags["validation_score"])
    assert s3 < s2
    assert v3["registered_version"].value == "3" and v3["promoted"].value is False
    assert v3["champion_version"].value == "2"
    assert "below the champion's" in v3["promotion_reason"].value
    evaluation = third.asset_materializations_for_node("churn_evaluation")[0].metadata
    assert evaluation["promoted"].value is False and evaluation["champion_version"].value == "2"
    report = json.loads((bm_home / "reports" / "churn.json").read_text())
    assert report["registry"] == {**report["registry"], "version": "3", "promoted": False, "champion_version": "2"}
    assert client.get_model_version("completejourney_sample_churn", "3").tags["promoted"] == "false"
    assert str(champion(client, "completejourney_sample_churn").version) == "2"
    assert _score_days(defs, instance, "2017-06-29", "2017-06-29")["model_version"].value == "2"

    # every foundation training is a version; the champion is one that was promoted
    foundation = client.search_model_versions("name = 'completejourney_sample_foundation'")
    assert len(foundation) == 3
    assert champion(client, "completejourney_sample_foundation").tags["promoted"] == "true"

    # 4. the day's scores delivered as a file: client, score, model version, as-of date
    monkeypatch.setenv("BM_DATASET", str(half_year))
    out = bm_home / "out" / "churn_2017-06-29.parquet"
    assert main(["export-scores", "--task", "churn", "--date", "2017-06-29", "--out", str(out)]) == 0
    exported = pd.read_parquet(out)
    assert list(exported.columns) == ["client_id", "as_of_date", "task", "score", "model_version"]
    assert exported["client_id"].is_unique and len(exported) > 100
    assert set(exported["model_version"]) == {"2"} and set(exported["task"]) == {"churn"}
    assert set(pd.to_datetime(exported["as_of_date"]).dt.date.astype(str)) == {"2017-06-29"}
    assert exported["score"].between(0, 1).all()
    assert main(["export-scores", "--task", "churn", "--date", "2017-06-27", "--out", str(out)]) == 1


@pytest.mark.parametrize("cron", ["0 3 * * 0", "*/15 2 1 * mon"])
def test_retrain_schedule_is_configurable(half_year, cron):
    defs = _defs(half_year, TASKS + f"retrain: {{cron_schedule: '{cron}', foundation: false}}\n")
    schedule = defs.resolve_schedule_def("retrain")
    assert schedule.cron_schedule == cron
    keys = {k.to_user_string() for k in defs.resolve_job_def("retrain").asset_layer.executable_asset_keys}
    assert keys == {"churn_model", "churn_evaluation"}


def test_retrain_is_weekly_by_default(half_year):
    assert _defs(half_year, TASKS).resolve_schedule_def("retrain").cron_schedule == "0 3 * * 0"
