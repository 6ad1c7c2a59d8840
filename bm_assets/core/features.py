"""Hand-made aggregates for the gradient-boosted baseline: recency, frequency and monetary
value plus counts and values per top brand/category over several windows, computed in the
warehouse as one SQL statement over every (client, split date) example. Only events before
the split date are read."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

import numpy as np
import pandas as pd

from bm_assets.core.sql import EVENTS_DENORMALIZED, ident, value_match_sql
from bm_assets.core.tasks import EvaluationConfig, _normalise, _splits_cte, top_values
from bm_assets.core.warehouse import Warehouse


def aggregate_features_sql(
    wh: Warehouse,
    dates: list[dt.date],
    ev: EvaluationConfig,
    tops: dict[str, list[str]],
    lists: Collection[str] = (),
) -> str:
    """(client_id, t, features...) for every client with an event in the longest window
    before t (older history is left out: it bounds the join to windows x events). A top value
    of a list column (`lists`) counts the events whose list holds it."""
    windows = sorted(ev.feature_windows_days)
    longest = max(windows)
    age = "date_diff('day', e.event_date, s.t)"
    aggs = [
        f"min({age}) AS recency_days",
        f"max({age}) AS first_seen_days",
    ]
    for w in windows:
        within = f"{age} <= {w}"
        aggs += [
            f"count(*) FILTER (WHERE {within}) AS events_{w}d",
            f"count(DISTINCT e.basket_id) FILTER (WHERE {within}) AS baskets_{w}d",
            f"coalesce(sum(e.value) FILTER (WHERE {within}), 0) AS value_{w}d",
            f"count(DISTINCT e.event_date) FILTER (WHERE {within}) AS active_days_{w}d",
        ]
    for column, values in tops.items():
        for j, v in enumerate(values):
            match = value_match_sql(column, v, column in lists)
            for w in windows:
                aggs.append(f"count(*) FILTER (WHERE {match} AND {age} <= {w}) AS {ident(f'{column}_{j}_n_{w}d')}")
            aggs.append(
                f"coalesce(sum(e.value) FILTER (WHERE {match} AND {age} <= {longest}), 0) "
                f"AS {ident(f'{column}_{j}_value_{longest}d')}"
            )
    return f"""
        WITH {_splits_cte(dates)}
        SELECT e.client_id, s.t, {", ".join(aggs)}
        FROM {wh.table(EVENTS_DENORMALIZED)} e JOIN splits s
          ON e.event_date < s.t AND e.event_date >= s.t - INTERVAL {longest} DAY
        GROUP BY e.client_id, s.t"""


def feature_tops(
    wh: Warehouse, columns: list[str], ev: EvaluationConfig, cutoff: dt.date, lists: Collection[str] = ()
) -> dict[str, list[str]]:
    """The top values per feature column, counted before the training cutoff (each value of a
    list column on its own)."""
    return {c: top_values(wh, c, "TRUE", cutoff, ev.feature_top_n, c in lists) for c in columns}


def aggregate_features(
    wh: Warehouse,
    examples: pd.DataFrame,
    ev: EvaluationConfig,
    tops: dict[str, list[str]],
    lists: Collection[str] = (),
) -> tuple[np.ndarray, list[str]]:
    """float32[n_examples, n_features] aligned with examples (client_id, t); clients without
    recent history get recency of 10 years and zero counts. `lists`: the dataset's list columns."""
    dates = sorted(set(examples["t"]))
    df = _normalise(wh.fetch_df(aggregate_features_sql(wh, dates, ev, tops, lists)))
    names = [c for c in df.columns if c not in ("client_id", "t")]
    key = pd.MultiIndex.from_frame(examples[["client_id", "t"]])
    pos = key.get_indexer(pd.MultiIndex.from_frame(df[["client_id", "t"]]))
    keep = pos >= 0
    x = np.zeros((len(examples), len(names)), dtype=np.float32)
    x[:, names.index("recency_days")] = 3650
    x[:, names.index("first_seen_days")] = 3650
    x[pos[keep]] = df.loc[keep, names].to_numpy(np.float32)
    return x, names
