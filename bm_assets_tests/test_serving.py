"""Daily scores come from the model the training picked on validation, with the inputs it was
evaluated on: on the first half of the sample, every trained model served for a day scores the
clients of that day's test examples exactly as the evaluation did; the registered version holds
the report's pick; the stored scores are its scores; nothing after the scored day is read."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance, materialize
from mlflow import MlflowClient

from bm_assets.assets.foundation import modeling_config
from bm_assets.assets.tasks import _load_data
from bm_assets.cli import main
from bm_assets.core.artifacts import ServedModel, Store, load_registered_model
from bm_assets.core.evaluation import reads_aggregates, reads_history, rebuild
from bm_assets.core.explain import item_rollups
from bm_assets.core.foundation import BehavioralNet
from bm_assets.core.kinds import Boosters
from bm_assets.core.profiles import iter_profiles, read_layout_of
from bm_assets.core.serving import (
    ServedInputsError,
    day_inputs,
    has_reasons,
    score_reasons,
    served_choice,
    served_task_data,
)
from bm_assets.definitions import build_definitions
from bm_assets.explanations import explain_served

TASKS = """
foundation: {horizon_days: 14, hidden: 32, layers: 1, max_epochs: 3, patience: 1, batch_size: 128}
evaluation:
  split_every_days: 14
  warmup_days: 42
  holdout_fraction: 0.2
  feature_top_n: 3
  task_max_epochs: 3
  task_patience: 1
  candidates: 300
  bootstrap: 0
  explain_examples: 0
tasks:
  - name: next_purchases
    type: recommendation
    horizon_days: 14
    target: {column: item_id, where: "event_type = 'purchase'"}
    eligible: {active_days: 60, where: "event_type = 'purchase'"}
  - name: spend
    type: regression
    horizon_days: 14
    target: {value: "coalesce(sum(value) FILTER (WHERE event_type = 'purchase'), 0)", default: 0}
    eligible: {active_days: 60, where: "event_type = 'purchase'"}
"""


@pytest.fixture
def trained(half_year, bm_home):
    """The sample's first half with both tasks trained and evaluated (no scores yet)."""
    (half_year.parent / "tasks.yaml").write_text(TASKS)
    defs = build_definitions(half_year)
    instance = DagsterInstance.ephemeral()
    main = [k for a in defs.assets for k in a.keys if not k.to_user_string().endswith("_scores")]
    tags = {
        "dagster/asset_partition_range_start": "2017-01-01",
        "dagster/asset_partition_range_end": "2017-06-30",
    }
    assert materialize(
        list(defs.assets), selection=main, resources=defs.resources, instance=instance, tags=tags
    ).success
    return defs, instance


def _score_day(defs, instance, task: str, day: dt.date) -> pd.DataFrame:
    tags = {"dagster/asset_partition_range_start": str(day), "dagster/asset_partition_range_end": str(day)}
    assert materialize(
        list(defs.assets), selection=[f"{task}_scores"], resources=defs.resources, instance=instance, tags=tags
    ).success
    with defs.resources["warehouse"].open() as wh:
        df = wh.fetch_df(f"SELECT * FROM {task}_scores WHERE score_date = DATE '{day}'")
    return df.sort_values(["client_id", "label"]).reset_index(drop=True)


def test_every_model_is_served_with_the_inputs_it_was_evaluated_on(trained, bm_home):
    defs, instance = trained
    res = defs.resources
    store = Store(bm_home)
    coders = store.load_coders()
    covered = {"aggregates": False, "history": False, "profile only": False}
    explained: set[str] = set()
    for name in ("next_purchases", "spend"):
        mcfg = modeling_config(res["dataset"])
        task = mcfg.task(name)
        _, _, data, frames = _load_data(res["dataset"], res["warehouse"], store, task)
        test = frames["test"]
        t0 = min(test["t"])
        day = t0 - dt.timedelta(days=1)  # the score dated `day` predicts from the split date t0
        rows = np.flatnonzero(test["t"].to_numpy() == t0)
        split = data.splits["test"].subset(rows)
        saved = store.load_task(name)
        with res["warehouse"].open(sandboxed=True) as wh:
            ((_, ids, x),) = list(iter_profiles(wh, coders, [day]))
            pos = pd.Index(ids).get_indexer(test["client_id"].to_numpy()[rows])
            assert (pos >= 0).all()
            for model, entry in saved.models.items():
                artifact = entry["artifact"]
                served = ServedModel(
                    model,
                    artifact,
                    saved.label_space,
                    list(mcfg.evaluation.feature_windows_days),
                    data.feature_tops,
                    data.feature_names,
                    data.item_stats,
                )
                evaluated = rebuild(data, model, artifact)(split)
                inputs = day_inputs(wh, task, served, mcfg.evaluation, ids, x, day)
                scored = rebuild(served_task_data(task, served), model, artifact)(inputs)[pos]
                np.testing.assert_allclose(scored, evaluated, rtol=1e-5, atol=1e-5, err_msg=f"{name}: {model}")
                if name == "spend" and not isinstance(artifact, BehavioralNet):
                    _check_explained(res["dataset"].load(), mcfg, task, served, wh, test, rows, scored, day)
                    cfg = res["dataset"].load()
                    _check_daily_reasons(cfg, mcfg, task, served, wh, coders, ids, x, inputs, pos, day)
                    explained.add(model)
                covered["aggregates"] |= reads_aggregates(artifact)
                covered["history"] |= reads_history(artifact)
                covered["profile only"] |= isinstance(artifact, BehavioralNet)
    assert all(covered.values()), covered
    assert {"lightgbm", "lightgbm_fm", "finetuned_lightgbm", "finetuned_with_aggregates", "prior"} <= explained


def _check_explained(cfg, mcfg, task, served, wh, test, rows, scored, day) -> None:
    """A served model that is not a network alone explains a client's score with its own
    score: SHAP values, both parts of the mix weighted, or the attributions of the network that
    reads the aggregates (to the profile's entities and to each aggregate); the prior has
    nothing to show."""
    client = str(test["client_id"].to_numpy()[rows][0])
    if not has_reasons(served.artifact):  # the prior
        with pytest.raises(LookupError, match="no reasons"):
            explain_served(wh, cfg, mcfg, task, served, client, day, None, 5, "v")
        return
    e = explain_served(wh, cfg, mcfg, task, served, client, day, None, 5, "v")
    assert e.score == pytest.approx(float(scored[0]), rel=1e-5)
    shares = e.reasons["share"].to_numpy()
    assert len(shares) == 5 and (np.diff(shares) <= 0).all() and shares.sum() <= 1 + 1e-9
    assert set(e.reasons["direction"]) <= {"raises", "lowers"}
    if served.name == "finetuned_lightgbm":
        assert "averages the network" in e.footer
        assert e.reasons["title"].str.endswith(("(network)", "(LightGBM)")).all()
    if served.name == "finetuned_with_aggregates":
        assert e.completeness_gap < 1e-3 and e.baseline_score is not None
        everything = explain_served(wh, cfg, mcfg, task, served, client, day, None, 10_000, "v")
        assert everything.reasons["title"].str.contains(r" in \d+ days = ").any()  # an aggregate's reason
    if served.name == "lightgbm_fm":
        everything = explain_served(wh, cfg, mcfg, task, served, client, day, None, 10_000, "v")
        assert everything.reasons["title"].str.startswith("foundation embedding: component").any()


def _check_daily_reasons(cfg, mcfg, task, served, wh, coders, ids, x, inputs, pos, day) -> None:
    """With `explain: true`, the reasons stored beside each daily score are the served model's:
    for a client, the top 3 of what `bm-assets explain` shows for that score."""
    layout, rollups = read_layout_of(wh, coders), item_rollups(cfg, coders)
    rows = pos[:4]
    args = (wh, task, served, ids[rows], x[rows], inputs.subset(rows), None, day, coders, layout, rollups, x, inputs.f)
    if not has_reasons(served.artifact):
        with pytest.raises(ServedInputsError, match="no reasons"):
            score_reasons(*args)
        return
    top = score_reasons(*args)
    assert sorted(set(top["row"])) == list(range(len(rows)))
    assert all(list(r) == [1, 2, 3] for _, r in top.groupby("row")["rank"])
    assert top["share"].between(0, 1).all() and set(top["direction"]) <= {"raises", "lowers"}
    assert (top.groupby("row")["share"].sum() <= 1 + 1e-9).all()
    for i, row in enumerate(rows):
        e = explain_served(wh, cfg, mcfg, task, served, str(ids[row]), day, None, 3, "v")
        mine = top[top["row"] == i]
        assert list(mine["reason"]) == list(e.reasons["title"]), served.name
        np.testing.assert_allclose(mine["share"], e.reasons["share"], rtol=1e-4)
        assert list(mine["direction"]) == list(e.reasons["direction"])


def test_the_registered_version_serves_the_report_pick_and_scores_only_its_day(
    trained, bm_home, half_year, monkeypatch, capsys
):
    defs, instance = trained
    client = MlflowClient(tracking_uri=f"sqlite:///{bm_home / 'mlflow.db'}")
    store = Store(bm_home)
    day = dt.date(2017, 6, 10)
    for name in ("next_purchases", "spend"):
        report = json.loads((bm_home / "reports" / f"{name}.json").read_text())
        version = client.get_model_version_by_alias(f"completejourney_sample_{name}", "champion")
        assert version.tags["model"] == report["selected"]["model"] == report["registry"]["served_model"]
        served = load_registered_model(client, version.name, version.version)
        assert served.name == report["selected"]["model"]
        local = store.load_task(name).models[served.name]["artifact"]
        assert type(served.artifact) is type(local)
        scores = _score_day(defs, instance, name, day)
        assert len(scores) and set(scores["model_version"]) == {str(version.version)}
        if name == "next_purchases":
            assert scores.groupby("client_id").size().max() == 10  # top_k items per client
        else:  # the champion's explanation prints the stored score, whatever model it serves
            monkeypatch.setenv("BM_DATASET", str(half_year))
            row = scores.iloc[0]
            capsys.readouterr()
            assert main(["explain", "--task", name, "--client", row["client_id"], "--date", str(day)]) == 0
            assert f"score {row['score']:.4g} (champion, version {version.version}" in capsys.readouterr().out

        # events after the scored day (and only those) poisoned: the same scores
        with defs.resources["warehouse"].open() as wh:
            wh.execute(
                [
                    "CREATE TABLE kept AS SELECT * FROM events_denormalized",
                    "UPDATE events_denormalized SET item_id = 'POISON', value = value * 100 "
                    f"WHERE event_date > DATE '{day}'",
                ]
            )
        pd.testing.assert_frame_equal(_score_day(defs, instance, name, day), scores)
        with defs.resources["warehouse"].open() as wh:
            wh.execute(["DELETE FROM events_denormalized", "INSERT INTO events_denormalized SELECT * FROM kept"])
            wh.execute(["DROP TABLE kept"])


def test_served_choice_is_the_validation_pick_and_a_model_with_reasons_when_explained():
    from bm_assets.core.tasks import TaskSpec

    net = BehavioralNet(4, 8, 1, 0.0, [], 1)
    report = {
        "finetuned": {"validation_auroc": 0.70},
        "lightgbm": {"validation_auroc": 0.75},
        "finetuned_lightgbm": {"validation_auroc": 0.76},
        "prior": {"validation_auroc": 0.5},
    }
    artifacts = {
        "finetuned": net,
        "lightgbm": Boosters([object()]),
        "finetuned_lightgbm": {"mix": 0.5},
        "prior": np.zeros(1),
    }
    task = TaskSpec(name="churn", type="binary", horizon_days=14, target={"value": "count(*) = 0", "default": 1})
    assert served_choice(task, report, artifacts) == "finetuned_lightgbm"
    explained = task.model_copy(update={"explain": True})
    assert served_choice(explained, report, artifacts) == "finetuned_lightgbm"
    # the prior, best on validation, has no reasons: with explain: true the best model that has
    prior_best = {**report, "prior": {"validation_auroc": 0.9}}
    assert served_choice(task, prior_best, artifacts) == "prior"
    assert served_choice(explained, prior_best, artifacts) == "finetuned_lightgbm"
    undefined = {n: {"validation_auroc": float("nan")} for n in report}
    assert served_choice(task, undefined, artifacts) == "finetuned"
