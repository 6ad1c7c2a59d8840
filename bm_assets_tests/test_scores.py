"""A day's scores as delivered: the stored long format (written by the scores asset's own frame
builder) read back per task type into the export's shape, in a real DuckDB file."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from bm_assets.core.kinds import kind_of
from bm_assets.core.scores import ScoresNotFoundError, day_scores, export_scores
from bm_assets.core.tasks import TaskSpec

DAY = dt.date(2017, 12, 1)


def _task(kind: str, **extra) -> TaskSpec:
    target = {"value": "count(*)"} if kind in ("binary", "regression") else {"column": "item_id", "top_n": 3}
    return TaskSpec(name=f"t_{kind}", type=kind, horizon_days=7, target=target, **extra)


def _store(wh, task: TaskSpec, labels, pred: np.ndarray, day=DAY, version="4"):
    frame = kind_of(task).score_frame(task, labels, np.array(["c1", "c2"]), pred, day)
    frame["model_version"] = version
    wh.insert_df(f"{task.name}_scores", frame)


def test_recommendation_keeps_top_k_ranked(warehouse):
    task = _task("recommendation", top_k=3)
    items = ["a", "b", "c", "d", "e"]
    pred = np.array([[0.1, 0.9, 0.5, 0.7, 0.2], [0.3, 0.3, 0.8, 0.1, 0.0]])
    _store(warehouse, task, items, pred)
    stored = warehouse.fetch_df(f"SELECT * FROM {task.name}_scores")
    assert len(stored) == 6  # top_k = 3 items per client kept by the scores asset

    out = day_scores(warehouse, task, DAY)
    assert list(out.columns) == ["client_id", "as_of_date", "task", "item_id", "rank", "score", "model_version"]
    c1 = out[out.client_id == "c1"]
    assert c1["item_id"].tolist() == ["b", "d", "c"] and c1["rank"].tolist() == [1, 2, 3]
    c2 = out[out.client_id == "c2"]
    assert c2["item_id"].tolist() == ["c", "a", "b"]  # a tie (0.3, 0.3) ordered by item id
    assert set(out["as_of_date"]) == {DAY} and set(out["model_version"]) == {"4"}

    top2 = day_scores(warehouse, task, DAY, top_k=2)
    assert top2.groupby("client_id")["rank"].max().tolist() == [2, 2]
    with pytest.raises(ValueError, match=r"top_k must be in 1\.\.3"):
        day_scores(warehouse, task, DAY, top_k=5)


def test_multilabel_one_row_per_label_and_binary_one_per_client(warehouse, tmp_path):
    multi = _task("multilabel")
    _store(warehouse, multi, ["x", "y", "z"], np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]))
    out = day_scores(warehouse, multi, DAY)
    assert list(out.columns) == ["client_id", "as_of_date", "task", "label", "score", "model_version"]
    assert len(out) == 6
    assert out.set_index(["client_id", "label"])["score"].to_dict()[("c2", "y")] == pytest.approx(0.5)

    binary = _task("binary")
    _store(warehouse, binary, None, np.array([0.25, 0.75]))
    _store(warehouse, binary, None, np.array([0.5, 0.5]), day=DAY + dt.timedelta(days=1))
    path, rows = export_scores(warehouse, binary, DAY, tmp_path / "out" / "b.parquet")
    back = pd.read_parquet(path)
    assert rows == 2 and list(back.columns) == ["client_id", "as_of_date", "task", "score", "model_version"]
    assert back["score"].tolist() == [0.25, 0.75]  # the day asked for, not the next one


def test_missing_scores_say_what_exists(warehouse):
    task = _task("binary")
    with pytest.raises(ScoresNotFoundError, match="t_binary_scores does not exist"):
        day_scores(warehouse, task, DAY)
    _store(warehouse, task, None, np.array([0.25, 0.75]))
    with pytest.raises(ScoresNotFoundError, match=r"dated 2017-12-05 \(scored days: 2017-12-01 .. 2017-12-01\)"):
        day_scores(warehouse, task, DAY + dt.timedelta(days=4))


@pytest.mark.bigquery
def test_export_reads_the_same_rows_from_bigquery(bq_warehouse, warehouse):
    """BM_STORAGE=bigquery: `<task>_scores` in BM_BQ_DATASET is the table users read; the export's
    query (translated) gives the rows DuckDB gives."""
    task = _task("recommendation", top_k=3)
    pred = np.array([[0.1, 0.9, 0.5, 0.7, 0.2], [0.3, 0.3, 0.8, 0.1, 0.0]])
    for wh in (warehouse, bq_warehouse):
        _store(wh, task, ["a", "b", "c", "d", "e"], pred)
    local, remote = day_scores(warehouse, task, DAY, top_k=2), day_scores(bq_warehouse, task, DAY, top_k=2)
    pd.testing.assert_frame_equal(local, remote, check_dtype=False)
