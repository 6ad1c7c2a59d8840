"""The bundled example datasets through the whole chain, by YAML alone: the bundled configs, and
the configs `bm-assets init` writes from the same files, unedited (validate, then run)."""

import json
import shutil
from pathlib import Path

import duckdb
import pytest
import yaml
from mlflow.tracking import MlflowClient

from bm_assets.cli import main
from bm_assets.settings import REPO_ROOT

DATA = REPO_ROOT / "data"
#: example -> (the files `init` is given, the tasks its bundled tasks.yaml declares)
EXAMPLES = {
    "invoices_example": ({"events": ["invoices.csv"]}, {"churn", "spend", "next_purchases"}),
    "purchases_example": ({"events": ["purchases.csv"]}, {"churn", "spend"}),
}


def _reports(home: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (home / "reports").glob("*.json")}


def _copy_example(name: str, dest: Path) -> Path:
    shutil.copytree(DATA / name, dest)
    return dest / "dataset.yaml"


def test_one_failing_task_leaves_the_others_running(tmp_path, bm_home, monkeypatch, capsys):
    """The bundled invoices example, plus a task whose target is never positive: that task's
    model fails, every other task still gets its evaluation and scores."""
    dataset = _copy_example("invoices_example", tmp_path / "invoices")
    tasks_file = dataset.parent / "tasks.yaml"
    tasks = yaml.safe_load(tasks_file.read_text())
    tasks["tasks"].append(
        {
            "name": "never",
            "type": "binary",
            "horizon_days": 14,
            "target": {"value": "count(*) FILTER (WHERE event_type = 'no such type') > 0", "default": 0},
        }
    )
    tasks_file.write_text(yaml.safe_dump(tasks, sort_keys=False))
    monkeypatch.setenv("BM_DATASET", str(dataset))
    assert main(["validate"]) == 1  # validate already says the target is never positive
    assert "task never: no positive label" in capsys.readouterr().out
    assert main(["run"]) == 1
    err = capsys.readouterr().err
    assert "FAILED never_model" in err and "no positive label" in err
    assert set(_reports(bm_home)) == EXAMPLES["invoices_example"][1]
    con = duckdb.connect(str(bm_home / "bm_assets.duckdb"), read_only=True)
    quarantined = con.execute("SELECT count(*) FROM raw_events_quarantine").fetchall()[0][0]
    countries = con.execute("SELECT count(DISTINCT Country) FROM client_properties").fetchall()[0][0]
    assert quarantined > 0 and countries > 1
    assert con.execute("SELECT count(*) FROM churn_scores").fetchall()[0][0] > 0


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_init_then_validate_then_run(name, tmp_path, bm_home, monkeypatch, capsys):
    files, _ = EXAMPLES[name]
    folder = tmp_path / name
    folder.mkdir()
    args = ["init", "--out", str(folder)]
    for role, names in files.items():
        for f in names:
            args += [f"--{role}", str(DATA / name / f)]
    assert main(args) == 0
    text = (folder / "dataset.yaml").read_text()
    assert text.count("#") > 10  # commented for a person to read
    monkeypatch.setenv("BM_DATASET", str(folder / "dataset.yaml"))
    assert main(["validate"]) == 0, capsys.readouterr().out
    assert main(["run"]) == 0, capsys.readouterr().err
    declared = {t["name"] for t in yaml.safe_load((folder / "tasks.yaml").read_text())["tasks"]}
    reports = _reports(bm_home)
    assert set(reports) == declared and "churn" in declared
    for report in reports.values():
        assert report["n_test"] > 0 and "finetuned" in report["models"]
    # an evaluation without a learning curve builds no training inputs, yet reports the size of
    # the training split the model asset fitted on
    client = MlflowClient(tracking_uri=f"sqlite:///{bm_home / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    for task, report in reports.items():
        assert not report["learning_curve"]
        (run,) = client.search_runs(experiments, f"attributes.run_name = '{task}_model'")
        assert report["n_train"] == int(run.data.params["n_train"]) > 0


def test_init_and_validate_on_the_complete_journey_sample(tmp_path, monkeypatch, capsys):
    sample = DATA / "completejourney_sample"
    args = ["init", "--out", str(tmp_path), "--events", str(sample / "transactions.parquet")]
    args += ["--items", str(sample / "products.parquet"), "--clients", str(sample / "demographics.parquet")]
    assert main(args) == 0
    monkeypatch.setenv("BM_DATASET", str(tmp_path / "dataset.yaml"))
    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    assert "manufacturer_id_propensity" in out and "OK: the configs fit the data" in out
