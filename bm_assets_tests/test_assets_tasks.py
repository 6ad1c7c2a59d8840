"""End to end on the bundled sample (first half of 2017 to stay fast): ingest, representations,
the foundation model and the churn task, materialized in-process with a real MLflow sqlite store."""

from __future__ import annotations

import json
import os
import re

import mlflow
import pandas as pd
import pytest
from dagster import DagsterInstance, UrlMetadataValue, materialize
from mlflow import MlflowClient

from bm_assets.core.warehouse import DuckDBWarehouse
from bm_assets.definitions import build_definitions
from bm_assets_tests.conftest import TRAINED_MODELS


def test_definitions_have_the_task_assets():
    keys = {k.to_user_string() for k in build_definitions().resolve_asset_graph().get_all_asset_keys()}
    for task in ("brand_propensity", "category_propensity", "churn", "next_purchases", "spend"):
        assert {f"{task}_model", f"{task}_evaluation", f"{task}_scores"} <= keys
    assert "foundation_model" in keys


def test_foundation_and_churn_end_to_end(half_year, bm_home, monkeypatch, capsys):
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
    assert {"task", "type", "horizon_days", "split", "models", "learning_curve", "n_train", "n_test"} <= set(report)
    assert set(report["models"]) == TRAINED_MODELS | {"prior"}
    for row in report["models"].values():
        assert {"validation_auroc", "test_auroc", "holdout_auroc", "test_average_precision"} <= set(row)
    assert report["models"]["prior"]["test_auroc"] == 0.5
    intervals = report["intervals"]
    assert intervals["reference"] == "lightgbm" and intervals["resamples"] == 200
    for name, row in intervals["models"].items():
        lo, hi = row["ci95"]
        assert lo <= report["models"][name]["test_auroc"] <= hi or name == "prior"
    assert report["selected"]["by"] == "validation_auroc" and report["selected"]["model"] in report["models"]
    assert report["models"]["lightgbm"]["test_auroc"] > 0.6
    assert report["n_train"] > 0 and report["n_holdout"] > 0
    eval_meta = result.asset_materializations_for_node("churn_evaluation")[0].metadata
    assert "| finetuned |" in eval_meta["metrics"].value or "| **finetuned** (pick) |" in eval_meta["metrics"].value
    assert "minus lightgbm, 95% CI" in eval_meta["intervals"].value
    # the learning curve fine-tunes from the foundation version the task model started from, never
    # from the task's own network (which has seen every training label)
    task_version = client.search_model_versions("name = 'completejourney_sample_churn'")[0]
    assert report["learning_curve_foundation_version"] == task_version.tags["foundation_version"] == "1"
    assert {(r["fraction"], r["model"]) for r in report["learning_curve"]} == {
        (f, m) for f in (0.5, 1.0) for m in ("finetuned", "scratch", "lightgbm")
    }
    for row in report["learning_curve"]:  # at 100% of labels: the task's own models, not refitted
        if row["fraction"] == 1.0:
            model = report["models"][row["model"]]
            assert (row["validation"], row["test"]) == (model["validation_auroc"], model["test_auroc"])
            assert row["train_seconds"] == model["train_seconds"]
    assert "finetuned @50%" in eval_meta["learning_curve"].value
    assert "curves" in eval_meta  # the time panel alone
    spec = next(a for a in assets if a.node_def.name == "churn_evaluation").specs_by_key
    assert "`$BM_HOME/reports/churn.json`" in next(iter(spec.values())).description
    evaluation_run = mlflow.get_run(eval_meta["mlflow_run_id"].value)
    assert "finetuned_test_auroc" in evaluation_run.data.metrics
    # global drivers: the network's and LightGBM's, in the report, the UI and MLflow
    drivers = report["drivers"]
    assert drivers["examples"] == min(1000, report["n_test"]) and drivers["completeness_gap"] < 1e-2
    tables = drivers["outputs"]["churn"]
    assert {"network", "lightgbm"} <= set(tables) and any(k.startswith("network, items by ") for k in tables)
    assert len(tables["network"]) >= 5 and tables["network"][0]["mean_abs"] >= tables["network"][-1]["mean_abs"]
    # aggregates by their names for people ("baskets in 30 days"), not column names
    assert not any(re.search(r"_\d+d$", r["driver"]) for r in tables["lightgbm"])
    assert re.search(r"in \d+ days", tables["lightgbm"][0]["driver"])
    assert "| driver |" in eval_meta["drivers"].value and "data:image/png" in eval_meta["drivers_chart"].value
    assert 0 <= evaluation_run.data.metrics["explain_collision_share"] <= 1

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
    # explain: true -> the top 3 reasons of every score
    wh = DuckDBWarehouse(str(bm_home / "bm_assets.duckdb"))
    try:
        reasons = wh.fetch_df("SELECT * FROM churn_score_reasons")
    finally:
        wh.close()
    per_score = reasons.groupby(["client_id", "score_date"])["rank"].apply(sorted)
    assert len(per_score) == len(scores) and all(r == [1, 2, 3] for r in per_score)
    assert reasons["share"].between(0, 1).all() and set(reasons["direction"]) <= {"raises", "lowers"}

    # the command line: one client's explanation, the score it prints is the stored score
    from bm_assets.cli import main

    monkeypatch.setenv("BM_DATASET", str(half_year))
    row = scores[pd.to_datetime(scores["score_date"]).dt.date.astype(str) == "2017-06-29"].iloc[0]
    capsys.readouterr()
    assert main(["explain", "--task", "churn", "--client", str(row["client_id"]), "--date", "2017-06-29"]) == 0
    out = capsys.readouterr().out
    assert f"churn for client {row['client_id']} on 2017-06-29" in out and "direction  share" in out
    assert f"score {row['score']:.4g} (champion, version {row['model_version']}" in out
    # the reasons stored beside the score are the top 3 the command shows, whatever model serves
    mine = reasons[(reasons["client_id"] == row["client_id"]) & (pd.to_datetime(reasons["score_date"]) == "2017-06-29")]
    shown = [line.strip() for line in out.splitlines() if line.rstrip().endswith("%")][:3]
    for line, (_, r) in zip(shown, mine.sort_values("rank").iterrows(), strict=True):
        assert line.startswith(r["reason"]) and f"{r['direction']}" in line and line.endswith(f"{r['share']:.0%}")
    # nothing after the explained day is read: rewrite the last day's events, same explanation
    wh = DuckDBWarehouse(str(bm_home / "bm_assets.duckdb"))
    try:
        wh.execute(
            [
                "UPDATE events_denormalized SET product_category = 'POISON', department = 'POISON', "
                "item_id = 'POISON', value = value * 100 WHERE event_date > DATE '2017-06-29'"
            ]
        )
    finally:
        wh.close()
    assert main(["explain", "--task", "churn", "--client", str(row["client_id"]), "--date", "2017-06-29"]) == 0
    assert capsys.readouterr().out == out
    assert len([line for line in out.splitlines() if line.rstrip().endswith("%")]) == 10
    assert (
        main(
            [
                "explain",
                "--task",
                "churn",
                "--client",
                str(row["client_id"]),
                "--date",
                "2017-06-29",
                "--model",
                "lightgbm",
                "--top",
                "5",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "(lightgbm)" in out and len([line for line in out.splitlines() if line.rstrip().endswith("%")]) == 5
    assert main(["explain", "--task", "churn", "--client", "no-such-client", "--date", "2017-06-29"]) == 1

    # the universal embedding: the foundation model's encoder output (hidden-size wide), then the
    # profile's dense entries as the network sees them (sign-log, standardised)
    import numpy as np

    from bm_assets.core.profiles import DENSE_FIXED, DENSE_PER_HALF_LIFE

    out_dir = bm_home / "export"
    assert main(["export-profiles", "--date", "2017-06-29", "--out", str(out_dir / "p")]) == 0
    assert main(["export-profiles", "--date", "2017-06-29", "--out", str(out_dir / "f"), "--kind", "foundation"]) == 0
    profiles, embedded = np.load(out_dir / "p" / "embeddings.npy"), np.load(out_dir / "f" / "embeddings.npy")
    n_dense = DENSE_FIXED + DENSE_PER_HALF_LIFE * 2  # two half-lives on the sample
    assert embedded.shape == (len(profiles), 32 + n_dense) and profiles.shape[1] > 100
    assert (np.load(out_dir / "p" / "client_ids.npy") == np.load(out_dir / "f" / "client_ids.npy")).all()
    assert np.isfinite(embedded).all() and embedded[:, :32].std(0).min() > 0
    dense = profiles[:, -n_dense:].astype(np.float64)
    for j in np.flatnonzero(dense.std(0) > 0):  # an increasing affine map of sign-log of the entry
        assert np.corrcoef(np.sign(dense[:, j]) * np.log1p(np.abs(dense[:, j])), embedded[:, 32 + j])[0, 1] > 0.9999


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
    assert (
        res.run_link(run).url == f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    )
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


def test_a_new_bm_home_gets_its_own_mlflow_store(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; the resource must not read its own
    export back as the user's choice, or a second BM_HOME in one process keeps the first store."""
    from bm_assets.resources import MLflowResource

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uris = []
    for name in ("first", "second"):
        monkeypatch.setenv("BM_HOME", str(tmp_path / name))
        res = MLflowResource(experiment="t")
        with res.start_run("r"):
            pass
        res.client()
        uris.append(res.uri())
    assert uris == [f"sqlite:///{tmp_path / 'first' / 'mlflow.db'}", f"sqlite:///{tmp_path / 'second' / 'mlflow.db'}"]
    assert "MLFLOW_TRACKING_URI" not in os.environ
