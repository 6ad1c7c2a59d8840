"""End to end on the bundled sample (first half of 2017 to stay fast): ingest, representations,
the foundation model and the churn task, materialized in-process with a real MLflow sqlite store."""

from __future__ import annotations

import json
import os

import mlflow
import pandas as pd
import pytest
from dagster import DagsterInstance, UrlMetadataValue, materialize
from mlflow import MlflowClient

from bm_assets.core.warehouse import DuckDBWarehouse
from bm_assets.definitions import build_definitions


def test_definitions_have_the_task_assets():
    keys = {k.to_user_string() for k in build_definitions().resolve_asset_graph().get_all_asset_keys()}
    for task in ("brand_propensity", "category_propensity", "churn", "next_purchases", "spend"):
        assert {f"{task}_model", f"{task}_evaluation", f"{task}_scores"} <= keys
    assert "foundation_model" in keys


def test_foundation_and_churn_end_to_end(half_year, bm_home):
    defs = build_definitions(half_year)
    assets = list(defs.assets)
    instance = DagsterInstance.ephemeral()
    tags = {
        "dagster/asset_partition_range_start": "2017-01-01",
        "dagster/asset_partition_range_end": "2017-06-30",
    }
    main = [k for a in assets for k in a.keys if not k.to_user_string().endswith("_scores")]
    result = materialize(assets, selection=main, resources=defs.resources, instance=instance, tags=tags)
    assert result.success

    meta = result.asset_materializations_for_node("foundation_model")[0].metadata
    client = MlflowClient(tracking_uri=f"sqlite:///{bm_home / 'mlflow.db'}")
    run = client.get_run(meta["mlflow_run_id"].value)
    assert run.info.status == "FINISHED"
    assert run.data.params["columns"] and "val_cross_entropy" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) >= 1
    versions = client.search_model_versions("name = 'completejourney_sample_foundation'")
    assert [v.run_id for v in versions] == [run.info.run_id]
    assert versions[0].tags["data_window"] == "2017-01-01..2017-05-28"
    assert float(versions[0].tags["val_cross_entropy"]) == pytest.approx(run.data.metrics["val_cross_entropy"], 1e-3)
    registered = client.get_registered_model("completejourney_sample_foundation")
    assert "completejourney_sample" in registered.description
    assert registered.tags["dataset"] == "completejourney_sample"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    link = meta["mlflow_run"]
    assert isinstance(link, UrlMetadataValue)
    assert link.url == f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    assert run.info.artifact_uri.startswith((bm_home / "mlartifacts").as_uri())

    report = json.loads((bm_home / "reports" / "churn.json").read_text())
    assert {"task", "type", "horizon_days", "split", "models", "learning_curve", "n_train", "n_test"} <= set(
        report
    )
    assert set(report["models"]) == {"finetuned", "scratch", "lightgbm", "lightgbm_fm", "prior"}
    for row in report["models"].values():
        assert {"validation_auroc", "test_auroc", "holdout_auroc", "test_average_precision"} <= set(row)
    assert report["models"]["prior"]["test_auroc"] == 0.5
    assert report["models"]["lightgbm"]["test_auroc"] > 0.6
    assert report["n_train"] > 0 and report["n_holdout"] > 0
    eval_meta = result.asset_materializations_for_node("churn_evaluation")[0].metadata
    assert "| finetuned |" in eval_meta["metrics"].value
    assert eval_meta["learning_curve"].value.startswith("not computed")
    assert "curves" in eval_meta  # the time panel alone
    spec = next(a for a in assets if a.node_def.name == "churn_evaluation").specs_by_key
    assert "`$BM_HOME/reports/churn.json`" in next(iter(spec.values())).description
    evaluation_run = mlflow.get_run(eval_meta["mlflow_run_id"].value)
    assert "finetuned_test_auroc" in evaluation_run.data.metrics

    scored = materialize(
        assets,
        selection=["churn_scores"],
        resources=defs.resources,
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": "2017-06-28",
            "dagster/asset_partition_range_end": "2017-06-29",
        },
    )
    assert scored.success
    wh = DuckDBWarehouse(str(bm_home / "bm_assets.duckdb"))
    try:
        scores = wh.fetch_df("SELECT * FROM churn_scores")
    finally:
        wh.close()
    assert sorted(pd.to_datetime(scores["score_date"]).dt.date.astype(str).unique()) == [
        "2017-06-28",
        "2017-06-29",
    ]
    assert scores["score"].between(0, 1).all() and scores["client_id"].nunique() > 100


def test_mlflow_resource_store_location(bm_home, tmp_path, monkeypatch):
    from bm_assets.resources import MLflowResource

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert MLflowResource().uri() == f"sqlite:///{bm_home / 'mlflow.db'}"
    other = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    res = MLflowResource(experiment="t")
    with res.start_run("r") as run:
        res.log_metrics({"finetuned_test_ndcg@10": 0.5, "undefined": float("nan")})
    assert res.uri() == other
    assert res.run_link(run).url == f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    monkeypatch.setenv("BM_MLFLOW_UI", "https://mlflow.example.com/")
    assert res.run_link(run).url.startswith("https://mlflow.example.com/#/experiments/")
    logged = MlflowClient(tracking_uri=other).get_run(run.info.run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.metrics == {"finetuned_test_ndcg_at_10": 0.5}


def test_a_run_killed_with_sigkill_is_closed_as_failed_by_the_next_run(tmp_path, monkeypatch):
    """kill -9 never reaches the `with` that ends an MLflow run: the next run of the resource
    marks it FAILED (its owning process is gone); a live run is left alone."""
    import signal
    import subprocess
    import sys
    import textwrap

    from bm_assets.resources import MLflowResource

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    script = textwrap.dedent(
        """
        import sys, time
        from bm_assets.resources import MLflowResource
        with MLflowResource(experiment="t").start_run("doomed") as run:
            print(run.info.run_id, flush=True)
            time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env={**os.environ})
    doomed = proc.stdout.readline().decode().strip()
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(doomed).info.status == "RUNNING"
    res = MLflowResource(experiment="t")
    with res.start_run("alive") as alive:  # the doomed run's process still lives: left alone
        assert client.get_run(doomed).info.status == "RUNNING"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert client.get_run(doomed).info.status == "RUNNING"  # nothing ended it
    with res.start_run("next"):
        pass
    assert client.get_run(doomed).info.status == "FAILED"
    assert client.get_run(alive.info.run_id).info.status == "FINISHED"
