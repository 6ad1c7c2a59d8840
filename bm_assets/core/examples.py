"""Training and evaluation examples: one per (client, split date T). Inputs are the client's
behavioral profile at the end of day T-1 (events before T only); targets come from events in
[T, T+h). Holdout clients (a stable hash of the id) never enter a training or validation split."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection

import numpy as np
import pandas as pd
from scipy import sparse

from bm_assets.config import DatasetConfig
from bm_assets.core.evaluation import Split, TaskData
from bm_assets.core.features import aggregate_features, feature_tops
from bm_assets.core.foundation import SketchLayout, normalise_sketch
from bm_assets.core.kinds import kind_of
from bm_assets.core.profiles import encode_events
from bm_assets.core.ranking import ITEM_STATS, ItemHistory
from bm_assets.core.sketches import SketchCoder, sketch
from bm_assets.core.sql import ident, literal
from bm_assets.core.tasks import (
    EVENTS_DENORMALIZED,
    Eligibility,
    ModelingConfig,
    TaskSpec,
    _normalise,
    _splits_cte,
    build_labels,
    check_target_not_empty,
    eligible_clients,
    feature_columns,
    future_window_sql,
    is_holdout,
    label_counts,
    protocol_dates,
)
from bm_assets.core.warehouse import Warehouse

#: as_of dates -> {as_of: (client_ids str[n], float32[n, d])} with events dated <= as_of.
ProfileSource = Callable[[list[dt.date]], dict[dt.date, tuple[np.ndarray, np.ndarray]]]


class CachedProfiles:
    """Profiles by as_of date; the dates not seen yet are loaded together (one replay pass over
    the events), and every date once (the tasks reuse the same split dates)."""

    def __init__(self, load_many: ProfileSource):
        self.load_many = load_many
        self.cache: dict[dt.date, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, dates: list[dt.date]) -> dict[dt.date, tuple[np.ndarray, np.ndarray]]:
        missing = sorted(set(dates) - set(self.cache))
        if missing:
            self.cache.update(self.load_many(missing))
        return {d: self.cache[d] for d in dates}


def layout_of(coders: dict[str, SketchCoder]) -> SketchLayout:
    return [(c, k.depth, k.width) for c, k in coders.items()]


def profile_inputs(profiles: ProfileSource, examples: pd.DataFrame) -> np.ndarray:
    """float32[n, d]: each example's profile at the end of day t-1 (zeros for a client without
    history). One profile load per split date; rows are gathered with an index, not a loop."""
    out: np.ndarray | None = None
    t = examples["t"].to_numpy()
    days = sorted(set(t))
    loaded = profiles([d - dt.timedelta(days=1) for d in days])
    for day in days:
        ids, x = loaded[day - dt.timedelta(days=1)]
        if len(ids) == 0:
            continue
        if out is None:
            out = np.zeros((len(examples), x.shape[1]), dtype=np.float32)
        rows = np.flatnonzero(t == day)
        pos = pd.Index(ids).get_indexer(examples["client_id"].to_numpy()[rows])
        out[rows[pos >= 0]] = x[pos[pos >= 0]]
    if out is None:
        raise LookupError("no behavioral profiles before any split date: materialize behavioral_profiles first")
    return out


def future_sketches(
    wh: Warehouse,
    coders: dict[str, SketchCoder],
    examples: pd.DataFrame,
    horizon_days: int,
    where: str = "TRUE",
) -> np.ndarray:
    """float32[n, sum depth*width]: per example the sketch of its events in [t, t+h) per coder
    column, L1-normalised per depth level (the foundation model's target)."""
    cols = ", ".join(f"CAST(e.{ident(c)} AS VARCHAR) AS {ident(c)}" for c in coders)
    dates = sorted(set(examples["t"]))
    events = _normalise(wh.fetch_df(future_window_sql(wh, dates, horizon_days, where, cols)))
    key = pd.MultiIndex.from_frame(examples[["client_id", "t"]])
    rows = key.get_indexer(pd.MultiIndex.from_frame(events[["client_id", "t"]]))
    events = events[rows >= 0]
    rows = rows[rows >= 0]
    codes = encode_events(coders, events)
    ones = np.ones(len(rows), np.float32)
    raw = np.concatenate([sketch(codes[c], rows, ones, len(examples), k.width) for c, k in coders.items()], axis=1)
    return normalise_sketch(raw, layout_of(coders))


def sample_examples(ex: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A seeded sample of n examples in their original order; `attrs["sampled_from"]` keeps
    the count before sampling, so reports can say that they sampled."""
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(ex), size=n, replace=False))
    out = ex.iloc[keep].reset_index(drop=True)
    out.attrs["sampled_from"] = len(ex)
    return out


#: Half-lives (days) of the exact-item purchase history of recommendation examples, how far back
#: it reads, and the recent part of it: "buy again" signals, the strongest baseline on
#: repeat-heavy (grocery) data.
ITEM_HISTORY_HALF_LIVES = (14.0, 90.0)
ITEM_HISTORY_DAYS = 365
ITEM_HISTORY_RECENT_DAYS = 91


def item_history(wh: Warehouse, task: TaskSpec, examples: pd.DataFrame, labels: list[str]) -> ItemHistory:
    """Each example's purchases of each candidate item among its events matching target.where in
    [t - ITEM_HISTORY_DAYS, t): decayed counts per half-life, purchase days (all and recent),
    days since the first and the last purchase, and the client's purchase days of any item.
    Before the split date only: no leakage into the window being predicted."""
    n, m = len(examples), len(labels)
    dates = sorted(set(examples["t"]))
    col = ident(task.target.column)
    key = pd.MultiIndex.from_frame(examples[["client_id", "t"]])
    # one row per client, item and day first: the join with the split dates then reads days,
    # not purchase lines, and purchase days are a plain count
    # only the days some split date looks back on: a long log is not read whole for each batch
    # of split dates (the daily scores ask for one date at a time)
    within = ""
    if dates:
        first = pd.Timestamp(min(dates)).date() - dt.timedelta(days=ITEM_HISTORY_DAYS)
        within = f" AND e.event_date >= DATE '{first}' AND e.event_date < DATE '{pd.Timestamp(max(dates)).date()}'"
    # the candidates only: the other items' rows would be dropped below, after the join with every
    # split date (a client's year touches several times more items than the candidates)
    candidates = ", ".join(literal(v) for v in labels) or "NULL"
    daily = f"""daily AS (
                SELECT e.client_id, CAST(e.{col} AS VARCHAR) AS v, e.event_date AS d, count(*) AS lines
                FROM {wh.table(EVENTS_DENORMALIZED)} e
                WHERE ({task.target.where}) AND CAST(e.{col} AS VARCHAR) IN ({candidates}){within}
                GROUP BY ALL)"""
    visits = f"""visits AS (
                SELECT DISTINCT e.client_id, e.event_date AS d
                FROM {wh.table(EVENTS_DENORMALIZED)} e WHERE ({task.target.where}){within})"""
    lookback = f"x.d < s.t AND x.d >= s.t - INTERVAL {ITEM_HISTORY_DAYS} DAY"
    recent = f"x.d >= s.t - INTERVAL {ITEM_HISTORY_RECENT_DAYS} DAY"
    names = [f"w{i}" for i in range(len(ITEM_HISTORY_HALF_LIVES))] + [
        "days",
        "recent_days",
        "since_last",
        "since_first",
    ]
    if n and m:
        weights = ", ".join(
            f"sum(x.lines * pow(0.5, date_diff('day', x.d, s.t) / {h})) AS w{i}"
            for i, h in enumerate(ITEM_HISTORY_HALF_LIVES)
        )
        df = _normalise(
            wh.fetch_df(
                f"""WITH {_splits_cte(dates)}, {daily}
                SELECT x.client_id, s.t, x.v, {weights},
                       count(*) AS days,
                       count(*) FILTER (WHERE {recent}) AS recent_days,
                       min(date_diff('day', x.d, s.t)) AS since_last,
                       max(date_diff('day', x.d, s.t)) AS since_first
                FROM daily x JOIN splits s ON {lookback}
                GROUP BY ALL"""
            )
        )
        clients = _normalise(
            wh.fetch_df(
                f"""WITH {_splits_cte(dates)}, {visits}
                SELECT x.client_id, s.t, count(*) AS days, count(*) FILTER (WHERE {recent}) AS recent_days
                FROM visits x JOIN splits s ON {lookback}
                GROUP BY ALL"""
            )
        )
    else:
        df = pd.DataFrame({"client_id": [], "t": [], "v": [], **{c: [] for c in names}})
        clients = pd.DataFrame({"client_id": [], "t": [], "days": [], "recent_days": []})
    row = key.get_indexer(pd.MultiIndex.from_frame(df[["client_id", "t"]])) if len(df) else np.zeros(0, np.int64)
    item = pd.Index(labels).get_indexer(df["v"]) if len(df) else np.zeros(0, np.int64)
    keep = (row >= 0) & (item >= 0)

    def matrix(c: str) -> sparse.csr_matrix:
        values = df[c].to_numpy(np.float32)[keep]
        return sparse.csr_matrix((values, (row[keep], item[keep])), shape=(n, m), dtype=np.float32)

    per_client = np.zeros((2, n), np.float32)
    if len(clients):
        at = key.get_indexer(pd.MultiIndex.from_frame(clients[["client_id", "t"]]))
        per_client[:, at[at >= 0]] = clients[["days", "recent_days"]].to_numpy(np.float32)[at >= 0].T
    return ItemHistory(
        [matrix(f"w{i}") for i in range(len(ITEM_HISTORY_HALF_LIVES))],
        matrix("days"),
        matrix("recent_days"),
        matrix("since_last"),
        matrix("since_first"),
        per_client[0],
        per_client[1],
    )


def item_repeat_stats(wh: Warehouse, task: TaskSpec, labels: list[str], cutoff: dt.date) -> np.ndarray:
    """float32[n_candidates, len(ITEM_STATS)] over every client's purchases in the
    ITEM_HISTORY_DAYS before the training cutoff: log(1 + buyers), the share of buyers who bought
    the item on two days or more, and the median over those of their mean days between purchases
    (NaN without a repeat buyer). How often and how soon an item is bought again."""
    col = ident(task.target.column)
    df = wh.fetch_df(
        f"""SELECT CAST(e.{col} AS VARCHAR) AS v, count(DISTINCT e.event_date) AS days,
                   date_diff('day', min(e.event_date), max(e.event_date)) AS span
            FROM {wh.table(EVENTS_DENORMALIZED)} e
            WHERE ({task.target.where}) AND e.{col} IS NOT NULL AND e.event_date < DATE '{cutoff}'
              AND e.event_date >= DATE '{cutoff - dt.timedelta(days=ITEM_HISTORY_DAYS)}'
            GROUP BY e.client_id, 1"""
    )
    out = np.full((len(labels), len(ITEM_STATS)), np.nan, np.float32)
    out[:, 0] = 0.0
    if df.empty:
        return out
    df["v"] = df["v"].astype(str)
    df["repeat"] = (df["days"] >= 2).astype(np.float64)
    df["gap"] = np.where(df["days"] >= 2, df["span"] / (df["days"] - 1).clip(lower=1), np.nan)
    per_item = df.groupby("v").agg(buyers=("days", "size"), repeat=("repeat", "mean"), gap=("gap", "median"))
    at = pd.Index(labels).get_indexer(per_item.index)
    ok = at >= 0
    out[at[ok]] = np.stack(
        [np.log1p(per_item["buyers"].to_numpy(np.float64)), per_item["repeat"], per_item["gap"]], axis=1
    )[ok]
    return out


def _split_examples(
    wh: Warehouse, eligible: Eligibility, dates: list[dt.date], holdout_fraction: float, holdout: bool | None
) -> pd.DataFrame:
    ex = eligible_clients(wh, eligible, dates)
    if holdout is None:
        return ex
    mask = is_holdout(ex["client_id"].to_numpy(), holdout_fraction)
    return ex[mask == holdout].reset_index(drop=True)


def foundation_examples(
    wh: Warehouse,
    cfg: DatasetConfig,
    mcfg: ModelingConfig,
    coders: dict[str, SketchCoder],
    profiles: ProfileSource,
) -> dict[str, tuple[pd.DataFrame, np.ndarray, np.ndarray]]:
    """{"train"|"validation": (examples, x, y)}: non-holdout clients; examples without any
    future event are dropped (their target sketch is empty)."""
    f, ev = mcfg.foundation, mcfg.evaluation
    step = ev.model_copy(update={"split_every_days": f.pretraining_step()})
    dates = protocol_dates(cfg.data_start, cfg.temporal, step, f.horizon_days)
    out = {}
    for role in ("train", "validation"):
        ex = _split_examples(wh, f.eligible, dates[role], ev.holdout_fraction, holdout=False)
        if role == "train" and len(ex) > f.max_train_examples:
            ex = sample_examples(ex, f.max_train_examples, ev.seed)
        y = future_sketches(wh, coders, ex, f.horizon_days)
        keep = y.sum(1) > 0
        ex = ex[keep].reset_index(drop=True)
        out[role] = (ex, profile_inputs(profiles, ex), y[keep])
    return out


#: A task's splits, in the order they are built: split -> (its split dates, held-out clients or not).
SPLIT_WINDOWS = {
    "train": ("train", False),
    "validation": ("validation", False),
    "test": ("test", False),
    "holdout": ("test", True),
}
SPLITS = tuple(SPLIT_WINDOWS)


def task_examples(
    wh: Warehouse,
    cfg: DatasetConfig,
    mcfg: ModelingConfig,
    task: TaskSpec,
    coders: dict[str, SketchCoder],
    profiles: ProfileSource,
    inputs_for: Collection[str] = SPLITS,
) -> tuple[TaskData, dict[str, pd.DataFrame]]:
    """The task's four splits: train (non-holdout clients, label windows ending by the cutoff),
    validation and test (same clients, later windows) and holdout (held-out clients, test
    windows). Label sets and feature tops are counted before the training cutoff.

    Only the splits in `inputs_for` get inputs and labels (`TaskData.splits`); every split gets
    its examples (`frames`), which are cheap: an evaluation that fits nothing on the training
    split still reports its size without building its profiles, the bulk of the work."""
    ev = mcfg.evaluation
    cutoff = cfg.temporal.training_cutoff
    dates = protocol_dates(cfg.data_start, cfg.temporal, ev, task.horizon_days)
    lists = cfg.list_columns()
    space = kind_of(task).label_space(task, label_counts(wh, task, cutoff, ev.candidates, lists), coders)
    labels = space.labels
    # items ranked by the network's sketch head: it trains on the sketch of the target column
    target_coders = {task.target.column: coders[task.target.column]} if space.item_codes is not None else {}
    tops = feature_tops(wh, feature_columns(mcfg, cfg), ev, cutoff, lists)
    splits: dict[str, Split] = {}
    frames: dict[str, pd.DataFrame] = {}
    feature_names: list[str] = []
    for role, (window, hold) in SPLIT_WINDOWS.items():
        ex = _split_examples(wh, task.eligible, dates[window], ev.holdout_fraction, hold)
        if role == "train" and len(ex) > ev.max_train_examples:
            ex = sample_examples(ex, ev.max_train_examples, ev.seed)
        frames[role] = ex
        if role not in inputs_for:
            continue
        y = build_labels(wh, task, ex, labels, lists)
        check_target_not_empty(task, y, role)
        y_train = None
        if target_coders and role == "train":
            y_train = future_sketches(wh, target_coders, ex, task.horizon_days, task.target.where)
        f, feature_names = aggregate_features(wh, ex, ev, tops, lists)
        history = item_history(wh, task, ex, labels) if space.item_codes is not None else None
        splits[role] = Split(profile_inputs(profiles, ex), f, y, y_train, history, ex["client_id"].to_numpy())
    layout = layout_of(coders)
    item_stats = item_repeat_stats(wh, task, labels, cutoff) if space.item_codes is not None else None
    data = TaskData(
        task, splits, labels, layout, space.item_codes, space.item_log_prior, feature_names, tops, item_stats
    )
    return data, frames
