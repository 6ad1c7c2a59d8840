"""A day's scores as the systems that act on them read them: one file (or query) per task and
date, with the client, the score(s), the model version that scored and the as-of date."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from bm_assets.core.kinds import kind_of
from bm_assets.core.tasks import TaskSpec
from bm_assets.core.warehouse import Warehouse


class ScoresNotFoundError(LookupError):
    """No scores for the task and date asked for; the message says what exists."""


def scores_table(task: TaskSpec) -> str:
    return f"{task.name}_scores"


def scores_sql(wh: Warehouse, task: TaskSpec, day: dt.date, top_k: int) -> str:
    """The export's rows in the warehouse's own SQL (DuckDB's dialect; translated for BigQuery).
    Recommendation: one row per client and item, ranked 1..top_k by score (ties by item id);
    multilabel and multiclass: one row per client and label; binary and regression: one per client."""
    table = wh.table(scores_table(task))
    base = (
        "SELECT CAST(client_id AS VARCHAR) AS client_id, CAST(score_date AS DATE) AS as_of_date, "
        f"model_version, label, score FROM {table} WHERE score_date = DATE '{day.isoformat()}'"
    )
    return kind_of(task).export_sql(base, top_k)


def day_scores(wh: Warehouse, task: TaskSpec, day: dt.date, top_k: int | None = None) -> pd.DataFrame:
    """The scores of `task` dated `day` (predicting [day+1, day+1+horizon) from events up to the end
    of `day`). `top_k` (recommendation) defaults to, and cannot exceed, the task's stored `top_k`."""
    k = task.top_k if top_k is None else top_k
    if k <= 0 or k > task.top_k:
        raise ValueError(
            f"top_k must be in 1..{task.top_k} (the items {scores_table(task)} keeps per client); found {k}"
        )
    table = scores_table(task)
    if not wh.table_exists(table):
        raise ScoresNotFoundError(f"{table} does not exist: materialize {table} (a daily asset) first")
    df = wh.fetch_df(scores_sql(wh, task, day, k))
    if df.empty:
        span = wh.fetch_df(f"SELECT min(score_date) AS a, max(score_date) AS b FROM {wh.table(table)}").iloc[0]
        have = "none" if pd.isna(span["a"]) else f"{pd.Timestamp(span['a']).date()} .. {pd.Timestamp(span['b']).date()}"
        raise ScoresNotFoundError(
            f"{table} has no scores dated {day} (scored days: {have}); materialize partition {day} of {table}"
        )
    df["as_of_date"] = pd.to_datetime(df["as_of_date"]).dt.date
    df.insert(2, "task", task.name)
    if "rank" in df:
        df["rank"] = df["rank"].astype("int32")
    return df.reset_index(drop=True)


def export_scores(
    wh: Warehouse, task: TaskSpec, day: dt.date, out: str | Path, top_k: int | None = None
) -> tuple[Path, int]:
    """Write `day_scores` to a Parquet file `out` (folders created); returns the path and row count."""
    df = day_scores(wh, task, day, top_k)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return path, len(df)
