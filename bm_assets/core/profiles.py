"""Universal behavioral profiles: per client, EMDE sketches of their events decayed at several
half-lives, plus dense recency/frequency/value features, as of the end of a day.

Everything in the state is additive with exponential decay, so the profile at the end of day D
is the state at D-1 decayed by one day plus the increment of day D's events. A client's state
only changes on days with events; the table `behavioral_profiles` therefore holds one row per
(client, day with events), and the profile as of any date D is the client's latest row at or
before D decayed by the days since (`load_profiles`). `batch_profiles` computes the same from
scratch over the whole history; tests check that both agree."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from bm_assets.core.sketches import SketchCoder, load_sketch_coders, sketch
from bm_assets.core.sql import (
    BEHAVIORAL_PROFILES,
    EVENTS_DENORMALIZED,
    PROFILE_DAYS_TABLE,
    PROFILE_LAYOUT_TABLE,
    ident,
    literal,
)
from bm_assets.core.warehouse import Warehouse

_EPOCH = dt.date(1970, 1, 1)
_LN_HALF = float(np.log(0.5))


def day_number(day: dt.date) -> int:
    """Days since 1970-01-01: the integer day axis of the profile arithmetic."""
    return (day - _EPOCH).days


#: The visit block of the state after the event counts (see ProfileLayout): per half-life the
#: decayed active days and baskets, then whole-history totals and the two days that give tenure
#: and the last inter-visit gap. Churn and spend are about visits, which event lines miss (a
#: 40-line basket is one visit).
VISIT_TOTALS = ("n_active_days", "n_baskets")
#: State entries holding a day number + 1 (0: none; not sums, never decayed): the first active
#: day and the active day before the last. Profiles replace them by `tenure_days` and `last_gap_days`.
VISIT_DAYS = ("first_day", "previous_day")
#: Entries a profile adds after the state: recency and the mean gap between active days.
PROFILE_TAIL = ("days_since_last_event", "mean_gap_days")
#: Dense profile entries per half-life (event count, value, active days, baskets) and once
#: (n_events, value_total, the visit totals and days, the tail).
DENSE_PER_HALF_LIFE = 4
DENSE_FIXED = 2 + len(VISIT_TOTALS) + len(VISIT_DAYS) + len(PROFILE_TAIL)


def sketch_blocks(n_in: int, sizes: list[int]) -> list[tuple[int, int]]:
    """(start, stop) of each sketch block (one column at one half-life) of a profile of width
    n_in whose sketch columns have `sizes` (depth * width) entries: the half-life count follows
    from the width. Inputs of another shape (a bare sketch, aggregates) have no blocks."""
    n_h, rest = divmod(n_in - DENSE_FIXED, sum(sizes) + DENSE_PER_HALF_LIFE) if sizes else (0, 1)
    if n_h < 1 or rest:
        return []
    starts = np.cumsum([0, *sizes * n_h])
    return [(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:], strict=True)]


@dataclass(frozen=True)
class ProfileLayout:
    """Where each feature sits in a profile vector:
    [sketch per half-life and column (depth*width each)] + [decayed event count per half-life]
    + [decayed value per half-life] + [n_events, value_total] + [decayed active days per
    half-life] + [decayed baskets per half-life] + [n_active_days, n_baskets] + [first_day,
    previous_day] (state) then [days_since_last_event, mean_gap_days].
    The first `state_dim` entries form the stored, additive state; in a profile (`finish`) the
    two day numbers become tenure and the last gap, so every feature is relative to its date."""

    columns: tuple[str, ...]
    depth: int
    width: int
    half_lives_days: tuple[float, ...]

    @classmethod
    def from_coders(cls, coders: dict[str, SketchCoder], half_lives_days: list[float]) -> ProfileLayout:
        depths = {c.depth for c in coders.values()}
        widths = {c.width for c in coders.values()}
        if len(depths) != 1 or len(widths) != 1:
            raise ValueError(f"coders must share depth and width; found depths {depths}, widths {widths}")
        return cls(tuple(coders), depths.pop(), widths.pop(), tuple(float(h) for h in half_lives_days))

    @property
    def sketch_dim(self) -> int:
        return len(self.columns) * self.depth * self.width

    @property
    def visit_start(self) -> int:
        """First state entry of the visit block (decayed active days per half-life)."""
        return len(self.half_lives_days) * (self.sketch_dim + 2) + 2

    @property
    def state_dim(self) -> int:
        return self.visit_start + 2 * len(self.half_lives_days) + len(VISIT_TOTALS) + len(VISIT_DAYS)

    @property
    def profile_dim(self) -> int:
        return len(self.half_lives_days) * (self.sketch_dim + DENSE_PER_HALF_LIFE) + DENSE_FIXED

    @property
    def signature(self) -> str:
        """A short hash of the blocks: stored states of another layout cannot be continued."""
        return hashlib.sha256(repr(self.blocks()).encode()).hexdigest()[:8]

    def log_decay(self) -> np.ndarray:
        """float64[state_dim]: ln(daily decay factor) per state entry (0 for the totals and days)."""
        rates = [_LN_HALF / h for h in self.half_lives_days]
        undecayed = np.zeros(len(VISIT_TOTALS) + len(VISIT_DAYS))
        return np.concatenate(
            [np.repeat(rates, self.sketch_dim), rates, rates, np.zeros(2), rates, rates, undecayed]
        ).astype(np.float64)

    def finish(self, out: np.ndarray, last_days: np.ndarray, day: int) -> None:
        """Turn rows of `out` (float32[n, profile_dim], true states as of `day` in the first
        state_dim entries) into profiles in place: the day numbers become tenure (days since the
        first active day) and the last inter-visit gap, and the tail gets recency and the mean gap."""
        last = np.asarray(last_days, dtype=np.float64)
        first_at = self.state_dim - 2
        # stored as day + 1, so 0 means none
        first, previous = out[:, first_at].astype(np.float64) - 1, out[:, first_at + 1].astype(np.float64) - 1
        n_active = out[:, first_at - 2].astype(np.float64)
        out[:, first_at] = np.where(first >= 0, day - first, 0)
        out[:, first_at + 1] = np.where(previous >= 0, last - previous, 0)
        out[:, self.state_dim] = day - last
        out[:, self.state_dim + 1] = np.where(n_active > 1, (last - first) / np.maximum(n_active - 1, 1), 0)

    def decay_runs(self) -> list[tuple[int, int, float]]:
        """(start, stop, ln daily decay) of each contiguous run of state entries that decay alike,
        so decaying rows is a few block multiplies."""
        log_decay = self.log_decay()
        edges = np.flatnonzero(np.diff(log_decay)) + 1
        starts, stops = np.r_[0, edges], np.r_[edges, len(log_decay)]
        return [(int(a), int(b), float(log_decay[a])) for a, b in zip(starts, stops, strict=True)]

    def decay_rows(self, block: np.ndarray, days: np.ndarray) -> None:
        """Decay each row of `block` (state entries first) by its own number of `days`, in place."""
        days = np.asarray(days, dtype=np.float64)
        for a, b, rate in self.decay_runs():
            if rate != 0.0:
                block[:, a:b] *= np.exp(rate * days).astype(np.float32)[:, None]

    def blocks(self) -> list[tuple[str, int, int]]:
        """(name, start, stop) of each block of the profile vector."""
        out, pos = [], 0
        block = self.depth * self.width
        for h in self.half_lives_days:
            for c in self.columns:
                out.append((f"sketch/h{h:g}/{c}", pos, pos + block))
                pos += block
        for name in ("event_count", "value"):
            for h in self.half_lives_days:
                out.append((f"{name}/h{h:g}", pos, pos + 1))
                pos += 1
        for name in ("n_events", "value_total"):
            out.append((name, pos, pos + 1))
            pos += 1
        for name in ("active_days", "baskets"):
            for h in self.half_lives_days:
                out.append((f"{name}/h{h:g}", pos, pos + 1))
                pos += 1
        for name in (*VISIT_TOTALS, "tenure_days", "last_gap_days", *PROFILE_TAIL):
            out.append((name, pos, pos + 1))
            pos += 1
        return out


def profile_feature_names(layout: ProfileLayout) -> list[str]:
    """One name per profile dimension, e.g. 'sketch/h7/item_id/d3/b12' or 'n_events'."""
    names: list[str] = []
    for name, start, stop in layout.blocks():
        if name.startswith("sketch/"):
            names += [f"{name}/d{i // layout.width}/b{i % layout.width}" for i in range(stop - start)]
        else:
            names.append(name)
    return names


def encode_events(coders: dict[str, SketchCoder], events: pd.DataFrame) -> dict[str, np.ndarray]:
    """int32[n_events, depth] codes per sketch column of `events` (missing values -> -1)."""
    out = {}
    for column, coder in coders.items():
        if column not in events.columns:
            raise KeyError(f"events have no column {column!r} for its sketch coder; found {list(events.columns)}")
        out[column] = coder.encode(events[column].to_numpy())  # missing values factorise to -1
    return out


def basket_shares(rows: np.ndarray, days: np.ndarray, baskets: np.ndarray) -> np.ndarray:
    """float32[n_events]: 1 / the number of events in each event's (client row, day, basket), so
    a client's shares sum to its baskets whatever the read order. A basket is counted on each
    day it has events (one spanning midnight counts twice), so a day's increment never depends
    on another day."""
    if len(rows) == 0:
        return np.zeros(0, np.float32)
    _, inverse, counts = np.unique(
        np.stack([np.asarray(rows, np.int64), np.asarray(days, np.int64), np.asarray(baskets, np.int64)]),
        axis=1,
        return_inverse=True,
        return_counts=True,
    )
    return (np.float32(1.0) / counts[inverse.ravel()].astype(np.float32)).astype(np.float32)


def _visit_state(rows, days, weights, shares, n_rows) -> np.ndarray:
    """The visit block of events (see ProfileLayout), from scratch: float32[n_rows, 2 * n_h + 4]."""
    n_h = weights.shape[1]
    out = np.zeros((n_rows, 2 * n_h + 4), dtype=np.float64)
    if len(rows) == 0:
        return out.astype(np.float32)
    days = np.asarray(days, np.int64)
    span = int(days.max() - days.min()) + 1
    pairs, first = np.unique(rows.astype(np.int64) * span + (days - days.min()), return_index=True)
    p_rows, p_days = pairs // span, pairs % span + days.min()
    for k in range(n_h):
        out[:, k] = np.bincount(p_rows, weights=weights[first, k], minlength=n_rows)
        out[:, n_h + k] = np.bincount(rows, weights=weights[:, k] * shares, minlength=n_rows)
    out[:, 2 * n_h] = np.bincount(p_rows, minlength=n_rows)
    out[:, 2 * n_h + 1] = np.bincount(rows, weights=shares, minlength=n_rows)
    # pairs are sorted by (row, day): a row's first pair is its first day, its second-to-last the previous day
    starts = np.r_[True, p_rows[1:] != p_rows[:-1]]
    out[p_rows[starts], 2 * n_h + 2] = p_days[starts] + 1  # day + 1: 0 is "none"
    ends = np.r_[p_rows[1:] != p_rows[:-1], True]
    before_end = np.r_[ends[1:], False] & ~ends
    out[p_rows[before_end], 2 * n_h + 3] = p_days[before_end] + 1
    return out.astype(np.float32)


def _state_from_weights(codes, rows, weights, values, n_rows, layout, days=None, shares=None) -> np.ndarray:
    """State of events with per-half-life weights float32[n_events, n_half_lives] (days and
    basket shares give the visit block; without them it is left at zero)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    parts = []
    for k in range(len(layout.half_lives_days)):
        parts += [sketch(codes[c], rows, weights[:, k], n_rows, layout.width) for c in layout.columns]
    counts = [np.bincount(rows, weights=weights[:, k], minlength=n_rows) for k in range(weights.shape[1])]
    value_sums = [np.bincount(rows, weights=weights[:, k] * values, minlength=n_rows) for k in range(weights.shape[1])]
    totals = [
        np.bincount(rows, minlength=n_rows).astype(np.float64),
        np.bincount(rows, values, minlength=n_rows),
    ]
    dense = np.stack(counts + value_sums + totals, axis=1).astype(np.float32)
    n_visit = 2 * weights.shape[1] + len(VISIT_TOTALS) + len(VISIT_DAYS)
    if days is None:
        visits = np.zeros((n_rows, n_visit), np.float32)
    else:
        shares = np.ones(len(rows), np.float32) if shares is None else np.asarray(shares, np.float32)
        visits = _visit_state(rows, days, weights, shares, n_rows)
    return np.concatenate([*parts, dense, visits], axis=1)


@numba.njit(cache=True, nogil=True)
def _scatter_events(
    state, last_day, order, rows, days, codes, values, shares, weights, first_day, depth, width, n_columns
):
    """The profile update as one fused loop, events in `order` (client order, so a client's
    entries land together in cache), `codes` a tuple of int32[n_events, depth] per column: per
    event and half-life k, add its weight `weights[day - first_day, k]` to one bucket per depth
    level and column (codes -1 skipped), to the decayed count and value, its basket share to the
    baskets, and 1 and the value to the totals; on a row's new active day, add to its active
    days and move its first/previous day; keep each row's last day."""
    n_h = weights.shape[1]
    block = depth * width
    sketch_dim = n_columns * block
    dense = n_h * sketch_dim
    visit = dense + 2 * n_h + 2
    for e in order:
        row, day = rows[e], days[e]
        value = values[e]
        weight = weights[day - first_day]
        share = shares[e]
        for k in range(n_h):
            state[row, visit + n_h + k] += weight[k] * share
        state[row, visit + 2 * n_h + 1] += share
        if day > last_day[row]:  # the row's first event of a new active day
            for k in range(n_h):
                state[row, visit + k] += weight[k]
            state[row, visit + 2 * n_h] += np.float32(1.0)
            if last_day[row] >= 0:
                state[row, visit + 2 * n_h + 3] = np.float32(last_day[row] + 1)  # day + 1: 0 is "none"
            else:
                state[row, visit + 2 * n_h + 2] = np.float32(day + 1)
        for c in range(n_columns):
            column = codes[c]
            for level in range(depth):
                code = column[e, level]
                if code >= 0:
                    pos = c * block + level * width + code
                    for k in range(n_h):
                        state[row, k * sketch_dim + pos] += weight[k]
        for k in range(n_h):
            state[row, dense + k] += weight[k]
            state[row, dense + n_h + k] += value * weight[k]
        state[row, dense + 2 * n_h] += np.float32(1.0)
        state[row, dense + 2 * n_h + 1] += value
        if day > last_day[row]:
            last_day[row] = day


class ProfileState:
    """The decayed sums of many clients, updated in place by spans of days (or one day).

    Kept in time-normalised form: entry j of a row holds sum_e w_e * 2 ** ((d_e - ref_day) /
    h_j), so adding a day's events is a scatter-add of a few entries per event (no decay of whole
    rows), and the true state on day D is that times 2 ** (-(D - ref_day) / h_j). `ref_day` moves
    forward (rescaling every row once) before the factors could leave float32's range."""

    _MAX_DOUBLINGS = 60.0  # 2**60 is far inside float32's range (2**127)

    def __init__(self, layout: ProfileLayout, n_rows: int, ref_day: int):
        self.layout = layout
        self.log_decay = layout.log_decay()
        self.state = np.zeros((n_rows, layout.state_dim), dtype=np.float32)
        self.last_day = np.full(n_rows, -1, dtype=np.int64)
        self.ref_day = int(ref_day)
        self._rates = np.array([_LN_HALF / h for h in layout.half_lives_days])
        self._runs = layout.decay_runs()

    def set_rows(self, rows: np.ndarray, states: np.ndarray, last_days: np.ndarray) -> None:
        """Load true states (each as of its `last_days`, all <= ref_day) into `rows`."""
        if len(rows) == 0:
            return
        if (last_days > self.ref_day).any():
            raise ValueError(f"a loaded state is newer than the reference day {self.ref_day}")
        block = np.array(states[:, : self.layout.state_dim], dtype=np.float32)
        self.layout.decay_rows(block, self.ref_day - last_days)  # into the time-normalised form
        self.state[rows] = block
        self.last_day[rows] = last_days

    def _rebase(self, day: int) -> None:
        for a, b, rate in self._runs:
            if rate != 0.0:
                self.state[:, a:b] *= np.float32(np.exp(rate * (day - self.ref_day)))
        self.ref_day = day

    def add_day(
        self,
        day: int,
        rows: np.ndarray,
        codes: dict[str, np.ndarray],
        values: np.ndarray,
        shares: np.ndarray | None = None,
    ) -> None:
        """Add one day's events: `rows` int64[n_events] (client row of each event), `codes` per
        sketch column int32[n_events, depth] (-1 = unknown, skipped), `values` float[n_events]
        (NaN = 0), `shares` their basket_shares (default: each event its own basket). Days must
        come in increasing order."""
        self.add_events(np.full(len(rows), day, dtype=np.int64), rows, codes, values, shares)

    def add_events(
        self,
        days: np.ndarray,
        rows: np.ndarray,
        codes: dict[str, np.ndarray],
        values: np.ndarray,
        shares: np.ndarray | None = None,
    ) -> None:
        """Add events of any days (int64[n_events], each after the last day already added to its
        row: a day is added whole, once), in one pass: each event weighs 2 ** ((day - ref_day) / h)
        at half-life h.
        One compiled loop (no per-entry temporaries) in client order (a stable sort of the rows),
        so each client's entries land together in cache: the cost follows the events, not cache
        misses over every client's state."""
        if len(rows) == 0:
            return
        rows = np.asarray(rows, dtype=np.int64)
        days = np.asarray(days, dtype=np.int64)
        late = days <= self.last_day[rows]
        if late.any():
            raise ValueError(
                f"day {int(days[late][0])} comes at or before a day already added "
                f"({int(self.last_day[rows][late][0])}); add each day's events once, in day order"
            )
        latest, fastest = int(days.max()), float(-self._rates.min())  # -ln(0.5)/h_min
        if fastest * (latest - self.ref_day) / np.log(2) > self._MAX_DOUBLINGS:
            self._rebase(latest - int(self._MAX_DOUBLINGS * np.log(2) / fastest))
        if len(rows) < 2 or bool((rows[1:] >= rows[:-1]).all()):
            order = np.arange(len(rows))  # already in client order (the store's replay reads it so)
        else:  # a stable sort by client; small row numbers take numpy's linear-time radix sort
            order = np.argsort(rows.astype(np.uint16) if len(self.state) <= 1 << 16 else rows, kind="stable")
        values = np.nan_to_num(np.asarray(values, dtype=np.float32))
        shares = np.ones(len(rows), np.float32) if shares is None else np.asarray(shares, dtype=np.float32)
        # one weight per day and half-life, 2 ** ((day - ref_day) / h), looked up per event
        first = int(days.min())
        span = np.arange(first, latest + 1, dtype=np.float64) - self.ref_day
        weights = np.exp(-self._rates[None, :] * span[:, None]).astype(np.float32)
        code = tuple(np.ascontiguousarray(codes[c], dtype=np.int32) for c in self.layout.columns)
        if not code:
            code = (np.zeros((len(rows), self.layout.depth), dtype=np.int32),)  # no column: nothing read
        _scatter_events(
            self.state,
            self.last_day,
            order,
            rows,
            days,
            code,
            values,
            shares,
            weights,
            first,
            self.layout.depth,
            self.layout.width,
            len(self.layout.columns),
        )

    def snapshot(self, rows: np.ndarray, day: int) -> np.ndarray:
        """float32[len(rows), state_dim]: true states of `rows` at the end of `day`."""
        out = np.take(self.state, rows, axis=0)
        out *= np.exp(self.log_decay * (day - self.ref_day)).astype(np.float32)
        return out


def batch_profiles(
    codes: dict[str, np.ndarray],
    client_rows: np.ndarray,
    event_days: np.ndarray,
    values: np.ndarray,
    n_clients: int,
    as_of: int,
    layout: ProfileLayout,
    shares: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """From scratch over the whole history: (present bool[n_clients], float32[n_clients,
    profile_dim]) as of the end of day `as_of`. Events after `as_of` are ignored; each event
    weighs 0.5 ** ((as_of - day) / half_life). `shares`: basket_shares of the events (default:
    each event its own basket)."""
    keep = event_days <= as_of
    codes = {c: v[keep] for c, v in codes.items()}
    rows, days, values = client_rows[keep], event_days[keep], values[keep]
    shares = np.ones(len(rows), np.float32) if shares is None else np.asarray(shares, np.float32)[keep]
    age = (as_of - days).astype(np.float64)
    weights = np.exp(age[:, None] * (_LN_HALF / np.array(layout.half_lives_days))[None, :]).astype(np.float32)
    state = _state_from_weights(codes, rows, weights, values, n_clients, layout, days, shares)
    last = np.full(n_clients, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, rows, days.astype(np.int64))
    present = last > np.iinfo(np.int64).min
    out = np.concatenate([state, np.zeros((n_clients, len(PROFILE_TAIL)), np.float32)], axis=1)
    layout.finish(out, np.where(present, last, as_of), as_of)
    return present, out


# --- warehouse storage --------------------------------------------------------------------
#
# `behavioral_profiles` holds sparse states: per client ONE row, its state as of its last event
# day (decay is lazy, applied on read), with the non-zero entries as two lists (dims, vals). A
# run writes the rows of the clients whose state changed and drops their older rows, in the
# same transaction, so the table stays about one row per client, not one per client-day.
# What changed on a day is that day's events, already in events_denormalized: profiles of a
# past day are replayed from them through ProfileState (millions of events/s), which is
# cheaper than storing them a second time (docs/representations.md has the measurements).


class ProfileOrderError(RuntimeError):
    """A day's profiles were requested before the previous day's, or with other coders."""


class StaleProfilesError(LookupError):
    """Profiles were asked for a day that behavioral_profiles has not (completely) built."""


@dataclass
class ProfileBuild:
    start: dt.date
    end: dt.date  # exclusive
    days: int
    events: int
    rows: int
    clients: int
    state_dim: int
    shards: int = 1


@dataclass(frozen=True)
class ClientShard:
    """The clients whose id hashes to `index` modulo `count`. The profile stages hold one shard's
    states at a time, so memory follows a shard, not all clients. The hash is the engine's own
    (DuckDB's hash, BigQuery's FARM_FINGERPRINT): stable for the life of a run, which is all a shard
    needs (nothing stored depends on the assignment). `column`: a column that already holds the
    shard number (a table staged by shard), read instead of hashing again."""

    index: int = 0
    count: int = 1
    column: str | None = None

    def number_sql(self, column: str = "client_id") -> str:
        return f"abs(hash(CAST({ident(column)} AS VARCHAR)) % {int(self.count)})"

    def predicate(self, column: str = "client_id") -> str:
        if self.count == 1:
            return "TRUE"
        if self.column is not None:
            return f"{ident(self.column)} = {int(self.index)}"
        return f"{self.number_sql(column)} = {int(self.index)}"


ALL_CLIENTS = ClientShard()


def shards_for(n_clients: int, n_events: int, layout: ProfileLayout, memory_mb: float) -> int:
    """How many client shards keep one shard's work within `memory_mb`. Per client, 16 bytes per
    state entry: its dense float32 state, a second dense copy (the stored rows read back, or the
    profiles handed out) and, at most, its non-zero entries as (int32 dim, float32 value) lists.
    Per event: the encoded log (client, row, day, value, int32 codes) and the Arrow columns read."""
    per_client = 16 * layout.state_dim
    per_event = 68 + 4 * layout.depth * len(layout.columns) + 20 * len(layout.columns)
    need = n_clients * per_client + n_events * per_event
    return max(1, int(np.ceil(need / (memory_mb * 2**20))))


def _create_statements(wh: Warehouse) -> list[str]:
    return [
        f"CREATE TABLE IF NOT EXISTS {wh.table(BEHAVIORAL_PROFILES)} (client_id VARCHAR, profile_date DATE, "
        "dims INTEGER[], vals FLOAT[])",
        f"CREATE TABLE IF NOT EXISTS {wh.table(PROFILE_DAYS_TABLE)} (profile_date DATE, clients BIGINT, "
        "events BIGINT, coders VARCHAR)",
    ]


def _date(day: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=int(day))


def built_through(wh: Warehouse) -> dt.date | None:
    """The last day behavioral_profiles has built (None before the first run)."""
    if not wh.table_exists(PROFILE_DAYS_TABLE):
        return None
    d = wh.fetch_df(f"SELECT max(profile_date) AS d FROM {wh.table(PROFILE_DAYS_TABLE)}")["d"].iloc[0]
    return None if pd.isna(d) else pd.Timestamp(d).date()


def _no_states(state_dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.array([], dtype=str), np.array([], dtype=np.int64), np.zeros((0, state_dim), np.float32)


def _stored_rows(wh: Warehouse, where: str = "TRUE") -> pa.Table:
    """(client_id, day, dims, vals) of the stored rows matching the SQL condition `where`, one per
    client (its newest), sorted by client id; Arrow, so the lists stay flat buffers."""
    if not wh.table_exists(BEHAVIORAL_PROFILES):
        return pa.table({"client_id": pa.array([], pa.string()), "day": pa.array([], pa.int64())})
    return wh.fetch_arrow(
        f"""SELECT client_id, date_diff('day', DATE '1970-01-01', profile_date) AS day, dims, vals
        FROM {wh.table(BEHAVIORAL_PROFILES)} WHERE {where}
        QUALIFY row_number() OVER (PARTITION BY client_id ORDER BY profile_date DESC) = 1
        ORDER BY client_id"""
    )


def _scatter_rows(rows_t: pa.Table, out: np.ndarray, state_dim: int, chunk: int = 65_536) -> None:
    """Write the stored rows' non-zero entries into the zeroed `out[:, :state_dim]`, a chunk of
    rows at a time (the index temporaries follow a chunk, not the shard)."""
    for start in range(0, rows_t.num_rows, chunk):
        part = rows_t.slice(start, chunk)
        dims_col = part.column("dims").combine_chunks()
        counts = pc.list_value_length(dims_col).to_numpy(zero_copy_only=False)
        if not counts.sum():
            continue
        dims = pc.list_flatten(dims_col).to_numpy(zero_copy_only=False)
        if dims.max() >= state_dim:
            raise ProfileOrderError(
                f"stored profile states have dimension {int(dims.max()) + 1} or more, the layout now gives "
                f"{state_dim}; backfill every partition of behavioral_profiles"
            )
        vals = pc.list_flatten(part.column("vals").combine_chunks()).to_numpy(zero_copy_only=False)
        rows = np.repeat(np.arange(start, start + part.num_rows), counts)
        out[rows, dims] = vals


def _ids_and_days(rows_t: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    ids = rows_t.column("client_id").cast(pa.string()).to_numpy(zero_copy_only=False).astype(str)
    return ids, rows_t.column("day").to_numpy().astype(np.int64)


def stored_states(wh: Warehouse, state_dim: int, where: str = "TRUE") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(client_ids str[n] sorted, last_day int64[n], state float32[n, state_dim]) of the stored
    rows (those matching the SQL condition `where`): each client's state as of its last event
    day up to the last built day."""
    rows_t = _stored_rows(wh, where)
    if rows_t.num_rows == 0:
        return _no_states(state_dim)
    state = np.zeros((rows_t.num_rows, state_dim), dtype=np.float32)
    _scatter_rows(rows_t, state, state_dim)
    ids, days = _ids_and_days(rows_t)
    return ids, days, state


def _stored_profiles(rows_t: pa.Table, layout: ProfileLayout, day: int) -> np.ndarray:
    """float32[n, profile_dim]: the stored rows decayed to the end of `day` (at or after every
    row's date), built in one matrix: no dense copy of the states besides it."""
    out = np.zeros((rows_t.num_rows, layout.profile_dim), dtype=np.float32)
    _scatter_rows(rows_t, out, layout.state_dim)
    last = rows_t.column("day").to_numpy().astype(np.int64)
    layout.decay_rows(out, day - last)
    layout.finish(out, last, day)
    return out


@numba.njit(cache=True, nogil=True)
def _gather_nonzero(state, offsets, dims, vals):
    """Row i's non-zero entries of `state` (float32[n, d]) into dims/vals[offsets[i]:offsets[i + 1]],
    in column order: one pass, written straight into the output (no index temporaries)."""
    for i in range(state.shape[0]):
        pos = offsets[i]
        for j in range(state.shape[1]):
            v = state[i, j]
            if v != 0:
                dims[pos] = j
                vals[pos] = v
                pos += 1


def sparse_rows(ids: np.ndarray, last_day: np.ndarray, state: np.ndarray) -> pa.Table:
    """(client_id, profile_date, dims, vals) rows of dense states, non-zero entries only, as an
    Arrow table the warehouse takes as it is; the lists are filled by one compiled pass over
    the states (no per-row Python objects, no index arrays the size of the states)."""
    state = np.ascontiguousarray(state, dtype=np.float32)
    offsets = np.zeros(len(state) + 1, dtype=np.int64)
    np.cumsum(np.count_nonzero(state, axis=1), out=offsets[1:])
    dims = np.empty(int(offsets[-1]), dtype=np.int32)
    vals = np.empty(int(offsets[-1]), dtype=np.float32)
    _gather_nonzero(state, offsets, dims, vals)
    offsets_arrow = pa.array(offsets.astype(np.int32))
    return pa.table(
        {
            "client_id": pa.array(np.asarray(ids).astype(str), type=pa.string()),
            "profile_date": pa.array(np.asarray(last_day).astype("datetime64[D]"), type=pa.date32()),
            "dims": pa.ListArray.from_arrays(offsets_arrow, pa.array(dims)),
            "vals": pa.ListArray.from_arrays(offsets_arrow, pa.array(vals)),
        }
    )


@dataclass
class _EventLog:
    """Encoded events in client order, then day: client (index into client_ids), day numbers,
    codes per column, values."""

    clients: np.ndarray
    client_ids: np.ndarray
    days: np.ndarray
    codes: dict[str, np.ndarray]
    values: np.ndarray
    shares: np.ndarray  # basket_shares


def _factorize(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(int64 codes with -1 for null, str uniques) of an Arrow column, without a Python object
    per row: Arrow's dictionary encoding runs in C++."""
    encoded = pc.dictionary_encode(column.cast(pa.string())).combine_chunks()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    codes = np.where(pc.is_null(encoded.indices).to_numpy(zero_copy_only=False), -1, codes).astype(np.int64)
    return codes, np.asarray(encoded.dictionary.to_pylist(), dtype=object).astype(str)


def _event_order(ranks: np.ndarray, days: np.ndarray, event_hash: np.ndarray) -> np.ndarray:
    """int64 positions of the events sorted by client rank, then day, then event hash, ties in
    arrival order: np.lexsort((event_hash, (rank, day))), as ONE stable sort of a uint64 key
    ((rank, day) in the high bits, the hash's top bits below), several times cheaper. Where two
    events of a client and day agree in the kept hash bits but not in the rest, the full sort
    decides, so the order is always the exact one."""
    if len(days) == 0:
        return np.zeros(0, dtype=np.int64)
    first = int(days.min())
    group = ranks * (int(days.max()) - first + 1) + (days - first)  # (client rank, day) as one integer
    bits = max(int(group.max()).bit_length(), 1)
    kind = event_hash.dtype.kind
    if bits <= 48 and kind in "iu":  # at least 16 bits of the hash fit beside the group
        # an order-keeping map of the hash onto uint64 (a signed one, as BigQuery's, flips its sign bit)
        unsigned = event_hash.astype(np.uint64) ^ np.uint64(1 << 63) if kind == "i" else event_hash
        key = (group.astype(np.uint64) << np.uint64(64 - bits)) | (unsigned >> np.uint64(bits))
        order = np.argsort(key, kind="stable")
        key = key[order]
        tie = np.flatnonzero(key[1:] == key[:-1])
        if not len(tie) or np.array_equal(event_hash[order[tie]], event_hash[order[tie + 1]]):
            return order
    return np.lexsort((event_hash, group))


def _basket_shares(ranks: np.ndarray, days: np.ndarray, basket_hash: np.ndarray) -> np.ndarray:
    """float32[n]: basket_shares of events given their client rank, day and basket hash, in any
    order, in one hash-table pass (pandas): (client, day, basket) is mixed into one 64-bit key.
    Two distinct triples share a key with probability about n**2 / 2**65 (1e-7 for 1.5M events);
    the shares would then count two baskets as one."""
    if len(days) == 0:
        return np.zeros(0, np.float32)
    with np.errstate(over="ignore"):  # wrapping 64-bit arithmetic is the point
        group = ranks.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + days.astype(np.uint64)
        key = basket_hash.astype(np.uint64) ^ (group * np.uint64(0xBF58476D1CE4E5B9))
    inverse, uniques = pd.factorize(key)
    counts = np.bincount(inverse, minlength=len(uniques)).astype(np.float32)
    return (np.float32(1.0) / counts)[inverse]


def _entity_codes(column: pa.ChunkedArray, coder: SketchCoder, order: np.ndarray) -> np.ndarray:
    """int32[len(order), depth]: the codes of `column`'s values taken in `order`, -1 for a
    missing value or an id the coder does not know (as SketchCoder.encode). Each value is
    looked up in the coder's ids by Arrow's hash lookup (C++): no string array in Python."""
    ids = pa.array(coder.entity_ids, type=pa.string())
    rows = pc.fill_null(pc.index_in(column.cast(pa.string()), value_set=ids), -1).to_numpy()
    # one gather: a last row of -1 serves the missing values (row -1)
    table = np.vstack([coder.codes.astype(np.int32), np.full((1, coder.depth), -1, np.int32)])
    return np.take(table, rows[order], axis=0, mode="wrap")


def _read_events(
    wh: Warehouse,
    coders: dict[str, SketchCoder],
    after: dt.date | None,
    through: dt.date,
    events_table: str,
    shard: ClientShard = ALL_CLIENTS,
    source: str | None = None,
) -> _EventLog:
    """The events of `shard`'s clients on days (after, through], in one query, encoded for the
    profile kernel and put in client order, then day, then a hash of the event id: the kernel walks
    events and states in memory order, and the order is total, so sums repeat exactly. Sorting
    here (integer keys) rather than in SQL (string keys) is several times cheaper. Clients are
    ranked once per distinct id; entity ids are looked up in the coders' ids by Arrow, in C++
    (_entity_codes). `source`: a table reference to read instead of `events_table` (the events
    staged by shard)."""
    cols = "".join(f", CAST({ident(c)} AS VARCHAR) AS {ident(c)}" for c in coders)
    lower = f"event_date > DATE '{after}' AND " if after is not None else ""
    ev = wh.fetch_arrow(
        f"SELECT client_id, date_diff('day', DATE '1970-01-01', event_date) AS day, value{cols}, "
        f"hash(CAST(event_id AS VARCHAR)) AS event_hash, hash(CAST(basket_id AS VARCHAR)) AS basket_hash "
        f"FROM {source or wh.table(events_table)} WHERE {lower}event_date <= DATE '{through}' "
        f"AND {shard.predicate()}"
    )
    clients, client_ids = _factorize(ev.column("client_id"))
    by_id = np.argsort(client_ids, kind="stable")
    rank = np.empty(len(client_ids), dtype=np.int64)
    rank[by_id] = np.arange(len(client_ids))
    days = ev.column("day").to_numpy().astype(np.int64)
    event_hash = np.asarray(ev.column("event_hash").to_numpy(zero_copy_only=False))
    order = _event_order(rank[clients], days, event_hash)
    codes = {c: _entity_codes(ev.column(c), coder, order) for c, coder in coders.items()}
    basket_hash = np.asarray(ev.column("basket_hash").to_numpy(zero_copy_only=False))
    shares = _basket_shares(rank[clients], days, basket_hash)[order]
    value = np.asarray(ev.column("value").to_numpy(), dtype=np.float64)[order]
    return _EventLog(rank[clients][order], client_ids[by_id], days[order], codes, value, shares)


class _Replay:
    """ProfileState over a client vocabulary, started from stored states and advanced through
    an event log up to each date asked."""

    def __init__(self, layout: ProfileLayout, ids, last, state, log: _EventLog, first_day: int):
        self.vocab = np.unique(np.concatenate([ids, log.client_ids]))
        self.state = ProfileState(layout, len(self.vocab), ref_day=first_day)
        if len(ids):
            self.state.set_rows(np.searchsorted(self.vocab, ids), state, last)
        self.log = log
        self.rows = np.searchsorted(self.vocab, log.client_ids)[log.clients] if len(log.clients) else log.clients
        self.added_through: int | None = None  # the last day of the log added so far

    def advance(self, through: int) -> None:
        """Add every event of the log after the days already added, up to and including day
        `through`, in one pass."""
        days = self.log.days
        if self.added_through is None and (len(days) == 0 or days.max() <= through):
            sel = slice(None)  # the whole log: no copies
        else:
            lower = days > self.added_through if self.added_through is not None else True
            sel = np.flatnonzero(lower & (days <= through))
        codes = {c: v[sel] for c, v in self.log.codes.items()}
        self.state.add_events(days[sel], self.rows[sel], codes, self.log.values[sel], self.log.shares[sel])
        self.added_through = through if self.added_through is None else max(self.added_through, through)

    def activity(self, first: int, last: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Over days [first, last] of the log: (bool[len(vocab)] clients with an event, distinct
        clients per day int64[last - first + 1], events per day), from the distinct (client, day)
        pairs: adjacent in the log's client-then-day order, so no sort is needed (one is made if
        the log is in another order)."""
        keep = (self.log.days >= first) & (self.log.days <= last)
        days, rows = self.log.days[keep] - first, self.rows[keep]
        n_days = last - first + 1
        active = np.zeros(len(self.vocab), dtype=bool)
        active[rows] = True
        pairs = rows * n_days + days
        if len(pairs) and not bool((pairs[1:] >= pairs[:-1]).all()):
            pairs = np.sort(pairs)
        pairs = pairs[np.r_[True, pairs[1:] != pairs[:-1]]] if len(pairs) else pairs
        clients = np.bincount(pairs % n_days, minlength=n_days) if len(pairs) else np.zeros(n_days)
        return active, clients.astype(np.int64), np.bincount(days, minlength=n_days).astype(np.int64)

    def seen(self) -> np.ndarray:
        return np.flatnonzero(self.state.last_day >= 0)


def _has_events(wh: Warehouse, events_table: str, after: dt.date, through: dt.date) -> bool:
    n = wh.fetch_df(
        f"SELECT count(*) AS n FROM {wh.table(events_table)} "
        f"WHERE event_date > DATE '{after}' AND event_date <= DATE '{through}'"
    )["n"].iloc[0]
    return int(n) > 0


def read_layout_of(wh: Warehouse, coders: dict[str, SketchCoder]) -> ProfileLayout:
    """The layout the stored states were built with: the coders plus the stored half-lives."""
    return ProfileLayout.from_coders(coders, profile_half_lives(wh))


def profiles_at_dates(
    wh: Warehouse,
    coders: dict[str, SketchCoder],
    dates: list[dt.date],
    events_table: str = EVENTS_DENORMALIZED,
) -> dict[dt.date, tuple[np.ndarray, np.ndarray]]:
    """{date: (client_ids str[n] sorted, float32[n, profile_dim])}: see iter_profiles."""
    return {d: (ids, x) for d, ids, x in iter_profiles(wh, coders, dates, events_table)}


def iter_profiles(
    wh: Warehouse,
    coders: dict[str, SketchCoder],
    dates: list[dt.date],
    events_table: str = EVENTS_DENORMALIZED,
    shard: ClientShard = ALL_CLIENTS,
) -> Iterator[tuple[dt.date, np.ndarray, np.ndarray]]:
    """(date, client_ids str[n] sorted, float32[n, profile_dim]) in date order: the profiles at
    the END of each date (events with event_date <= date) of every client with an event by then.
    Dates at or after the last built day read the stored rows (decayed: there are no events
    after it); earlier dates are replayed in ONE pass over the events up to the last of them;
    one date's matrix is held at a time. `shard` limits all of it to one client shard. Raises
    StaleProfilesError for a date with events that behavioral_profiles has not built."""
    if not dates:
        return
    layout = read_layout_of(wh, coders)
    built = built_through(wh)
    last_needed = max(dates)
    if built is None or (last_needed > built and _has_events(wh, events_table, built, last_needed)):
        raise StaleProfilesError(
            f"profiles are built through {built or 'no day yet'}, but {last_needed} was asked for and "
            "events_denormalized has events in between; materialize behavioral_profiles up to that day first"
        )
    wanted = sorted({day_number(d) for d in dates})
    empty = np.array([], dtype=str), np.zeros((0, layout.profile_dim), np.float32)
    if min(dates) >= built:  # the stored rows decayed (no events after `built`): no replay
        rows_t = _stored_rows(wh, shard.predicate())
        ids = _ids_and_days(rows_t)[0]
        for target in wanted:
            if len(ids):
                yield _date(target), ids, _stored_profiles(rows_t, layout, target)
            else:
                yield _date(target), *empty
        return
    log = _read_events(wh, coders, None, last_needed, events_table, shard)
    first_day = int(log.days.min()) if len(log.days) else 0
    no_states = _no_states(layout.state_dim)
    replay = _Replay(layout, *no_states, log, first_day)
    for target in wanted:
        replay.advance(target)
        seen = replay.seen()
        if target < first_day or len(seen) == 0:
            yield _date(target), *empty
        else:
            yield _date(target), replay.vocab[seen], _profile(replay, seen, target, layout)


def _profile(replay: _Replay, rows: np.ndarray, day: int, layout: ProfileLayout) -> np.ndarray:
    out = np.concatenate(
        [replay.state.snapshot(rows, day), np.zeros((len(rows), len(PROFILE_TAIL)), np.float32)], axis=1
    )
    layout.finish(out, replay.state.last_day[rows], day)
    return out


def load_profiles(
    wh: Warehouse, as_of: dt.date, coders: dict[str, SketchCoder] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(client_ids str[n] sorted, float32[n, profile_dim]): profiles at the END of day `as_of`
    (events with event_date <= as_of). Coders default to the materialized sketch_coders."""
    if coders is None:
        from bm_assets.settings import bm_home

        coders = load_sketch_coders(bm_home())
    return profiles_at_dates(wh, coders, [as_of])[as_of]


def _check_previous_day(wh: Warehouse, start: dt.date, data_start: dt.date, fingerprint: str) -> None:
    """The state before `start` must be complete (day start-1 processed) and built with the
    same coders, else the increment would add to a wrong state."""
    if start <= data_start:
        return
    prev = start - dt.timedelta(days=1)
    rows = wh.fetch_df(f"SELECT coders FROM {wh.table(PROFILE_DAYS_TABLE)} WHERE profile_date = DATE '{prev}'")
    if rows.empty:
        raise ProfileOrderError(
            f"behavioral_profiles for {start} needs the profiles of {prev}, which were never built; "
            f"materialize the partitions from {data_start} (or the first missing day) up to {prev} first"
        )
    if rows["coders"].iloc[0] != fingerprint:
        raise ProfileOrderError(
            f"behavioral_profiles of {prev} were built with sketch coders and profile layout "
            f"{rows['coders'].iloc[0]}, the current ones are {fingerprint}; backfill every partition from {data_start}"
        )


def _window_size(wh: Warehouse, events_table: str, after: dt.date | None, through: dt.date) -> tuple[int, int]:
    """(distinct clients, events) on days (after, through]: what a replay of that span holds."""
    lower = f"event_date > DATE '{after}' AND " if after is not None else ""
    row = wh.fetch_df(
        f"SELECT count(DISTINCT client_id) AS clients, count(*) AS events FROM {wh.table(events_table)} "
        f"WHERE {lower}event_date <= DATE '{through}'"
    ).iloc[0]
    return int(row["clients"]), int(row["events"])


def build_profiles_window(
    wh: Warehouse,
    coders: dict[str, SketchCoder],
    half_lives_days: list[float],
    start: dt.date,
    end: dt.date,
    data_start: dt.date,
    fingerprint: str,
    events_table: str = EVENTS_DENORMALIZED,
    memory_mb: float = 2048.0,
) -> ProfileBuild:
    """Compute the profiles of days [start, end) from the state at the end of start-1 plus each
    day's events, and store them in ONE transaction: the new rows of the clients whose state
    changed (their older rows dropped) and the day ledger. A crash leaves the previous state
    whole. Continuing from the last built day reads the stored rows of the window's clients
    only; re-running an earlier window replays from the first day and re-derives every later
    built day with it. Clients are processed in hash shards sized so one shard's replay fits in
    `memory_mb`; with several shards the rows are staged per shard and moved in at the end."""
    layout = ProfileLayout.from_coders(coders, half_lives_days)
    fingerprint = f"{fingerprint}/{layout.signature}"  # the coders and the layout the states follow
    wh.execute(_create_statements(wh) + write_layout(wh, layout))
    _check_previous_day(wh, start, data_start, fingerprint)
    built = built_through(wh)
    prev = start - dt.timedelta(days=1)
    forward = start > data_start and built == prev  # continue from the stored rows
    # re-running a window before the last built day re-derives the later days too (in the same
    # replay), so the store never holds days built on a state that has changed under them
    through = end - dt.timedelta(days=1) if forward or built is None else max(end - dt.timedelta(days=1), built)
    base = prev if forward else None
    n_clients, n_window_events = _window_size(wh, events_table, base, through)
    count = shards_for(n_clients, n_window_events, layout, memory_mb)
    t, days_t = wh.table(BEHAVIORAL_PROFILES), wh.table(PROFILE_DAYS_TABLE)
    staging = f"{BEHAVIORAL_PROFILES}_staging"
    by_shard = ident("profile_events_by_shard")  # a session (TEMP) table: unqualified
    if count > 1:
        # the window's events once, clustered by shard: each shard then reads its own rows, not a
        # scan of every event per shard (which would grow with events x shards)
        lower = f"event_date > DATE '{base}' AND " if base is not None else ""
        cols = "".join(f", {ident(c)}" for c in coders)
        wh.execute(
            [
                f"DROP TABLE IF EXISTS {wh.table(staging)}",
                f"CREATE OR REPLACE TEMP TABLE {by_shard} AS SELECT client_id, event_date, event_id, basket_id, "
                f"value{cols}, "
                f"{ClientShard(0, count).number_sql()} AS client_shard FROM {wh.table(events_table)} "
                f"WHERE {lower}event_date <= DATE '{through}' ORDER BY client_shard, event_date",
            ]
        )
    first_day = day_number(start) if forward else day_number(data_start)
    per_day = np.zeros((day_number(through) - first_day + 1, 2), dtype=np.int64)  # clients, events
    rows_written = seen = 0
    frame = None  # the rows to write when there is one shard
    for index in range(count):
        shard = ClientShard(index, count)
        if forward:  # only the window's clients change: read their stored rows, no one else's
            window_clients = (
                f"client_id IN (SELECT client_id FROM {wh.table(events_table)} "
                f"WHERE event_date > DATE '{prev}' AND event_date <= DATE '{through}')"
            )
            ids, last, state = stored_states(wh, layout.state_dim, f"{shard.predicate()} AND {window_clients}")
        else:
            ids, last, state = _no_states(layout.state_dim)
        if count > 1:
            log = _read_events(
                wh, coders, base, through, events_table, ClientShard(index, count, "client_shard"), by_shard
            )
        else:
            log = _read_events(wh, coders, base, through, events_table)
        replay = _Replay(layout, ids, last, state, log, first_day)
        del ids, last, state
        replay.advance(day_number(through))
        changed, clients_per_day, events_per_day = replay.activity(day_number(start), day_number(through))
        per_day[day_number(start) - first_day :] += np.stack([clients_per_day, events_per_day], axis=1)
        # forward: only the clients that changed; otherwise every client (all rows are rewritten)
        frame = _sparse_frame(replay, np.flatnonzero(changed) if forward else replay.seen())
        rows_written += len(frame)
        seen += len(replay.seen())
        if count > 1:
            wh.insert_df(staging, frame)
            frame = None
    ledger = [
        f"(DATE '{_date(first_day + i)}', {c}, {n}, '{fingerprint}')"
        for i, (c, n) in enumerate(per_day)
        if first_day + i >= day_number(start)
    ]
    write_ledger = [
        f"DELETE FROM {days_t} WHERE profile_date >= DATE '{start}'",
        *([] if forward else [f"DELETE FROM {t} WHERE TRUE"]),
        *([f"INSERT INTO {days_t} VALUES {', '.join(ledger)}"] if ledger else []),
    ]
    # a client keeps one row: its newest
    keep_newest = (
        f"DELETE FROM {t} AS old WHERE EXISTS (SELECT 1 FROM {t} AS newer "
        "WHERE newer.client_id = old.client_id AND newer.profile_date > old.profile_date)"
    )
    if count == 1:
        wh.insert_df(BEHAVIORAL_PROFILES, frame, before=write_ledger, after=[keep_newest])
    else:
        # one transaction moves every shard's rows in; a crash before it leaves only the staging table
        wh.execute(
            [
                *write_ledger,
                f"INSERT INTO {t} SELECT client_id, profile_date, dims, vals FROM {wh.table(staging)}",
                keep_newest,
            ]
        )
        wh.execute([f"DROP TABLE IF EXISTS {wh.table(staging)}", f"DROP TABLE IF EXISTS {by_shard}"])
    n_events = int(per_day[day_number(start) - first_day :, 1].sum())
    clients = seen if not forward else int(wh.fetch_df(f"SELECT count(*) AS n FROM {t}")["n"].iloc[0])
    return ProfileBuild(start, end, (end - start).days, n_events, rows_written, clients, layout.state_dim, count)


def _sparse_frame(replay: _Replay, rows: np.ndarray, chunk: int = 65_536) -> pa.Table:
    """The stored rows of `rows` (ascending), built a chunk of clients at a time. Spends the
    replay: a contiguous chunk is decayed in place, other chunks are copied one at a time, so
    memory never holds a second copy of the whole state."""
    parts = []
    for i in range(0, len(rows), chunk):
        sel = rows[i : i + chunk]
        lasts = replay.state.last_day[sel]
        contiguous = sel[-1] - sel[0] + 1 == len(sel)
        block = replay.state.state[sel[0] : sel[-1] + 1] if contiguous else np.take(replay.state.state, sel, axis=0)
        # time-normalised rows -> states as of each row's own last event day (a reader decays further)
        replay.state.layout.decay_rows(block, lasts - replay.state.ref_day)
        parts.append(sparse_rows(replay.vocab[sel], lasts, block))
    return (
        pa.concat_tables(parts)
        if parts
        else sparse_rows(
            np.array([], dtype=str),
            np.array([], dtype=np.int64),
            np.zeros((0, replay.state.state.shape[1]), np.float32),
        )
    )


def write_layout(wh: Warehouse, layout: ProfileLayout) -> list[str]:
    """Statements that record the layout the stored states were built with (one row per block)."""
    t = wh.table(PROFILE_LAYOUT_TABLE)
    rows = ", ".join(
        f"('{name.replace(chr(39), chr(39) * 2)}', {start}, {stop}, {layout.depth}, {layout.width})"
        for name, start, stop in layout.blocks()
    )
    return [
        f"CREATE OR REPLACE TABLE {t} (block VARCHAR, start_dim INTEGER, stop_dim INTEGER, "
        f"depth INTEGER, width INTEGER)",
        f"INSERT INTO {t} VALUES {rows}",
    ]


def read_layout(wh: Warehouse) -> pd.DataFrame:
    if not wh.table_exists(PROFILE_LAYOUT_TABLE):
        raise LookupError(f"no table {PROFILE_LAYOUT_TABLE}: materialize behavioral_profiles first")
    return wh.fetch_df(f"SELECT * FROM {wh.table(PROFILE_LAYOUT_TABLE)} ORDER BY start_dim")


def profile_half_lives(wh: Warehouse) -> list[float]:
    blocks = read_layout(wh)["block"]
    return [float(b.split("/h", 1)[1]) for b in blocks if b.startswith("event_count/h")]


def _export_chunks(wh, coders, layout, as_of, replayed, n_clients, n_events, memory_mb, events_table):
    """(client_ids, profiles) parts of the profiles at the end of `as_of`, see export_profiles."""
    if not replayed:  # the stored rows (one per client) decayed batch by batch: one pass, no shards
        sql = (
            f"SELECT client_id, date_diff('day', DATE '1970-01-01', profile_date) AS day, dims, vals "
            f"FROM {wh.table(BEHAVIORAL_PROFILES)}"
        )
        for batch in wh.iter_arrow(sql):
            rows_t = pa.Table.from_batches([batch])
            yield _ids_and_days(rows_t)[0], _stored_profiles(rows_t, layout, day_number(as_of))
        return
    count = shards_for(n_clients, n_events, layout, memory_mb)
    for index in range(count):
        for _, ids, profiles in iter_profiles(wh, coders, [as_of], events_table, ClientShard(index, count)):
            yield ids, profiles


def export_profiles(
    wh: Warehouse,
    as_of: dt.date,
    out_dir: str | Path,
    dtype: str = "float32",
    coders: dict[str, SketchCoder] | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    memory_mb: float = 2048.0,
    events_table: str = EVENTS_DENORMALIZED,
) -> tuple[Path, Path]:
    """Write `client_ids.npy` (str[n]) and `embeddings.npy` (float16/float32[n, d]) of the
    profiles at the end of `as_of` (d = profile_dim), or of `transform(profiles)` (e.g. the
    foundation model's client embedding), streamed so memory follows a part, not all clients: at
    or after the last built day the stored rows are read in batches, in the table's order; an
    earlier day is replayed one client shard at a time (sized by `memory_mb`), rows in shard
    order, client id order within a shard (one shard: sorted ids)."""
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, found {dtype!r}")
    if coders is None:
        from bm_assets.settings import bm_home

        coders = load_sketch_coders(bm_home())
    layout = read_layout_of(wh, coders)
    built = built_through(wh)
    n_clients, n_events = _window_size(wh, events_table, None, as_of)
    if n_clients == 0:
        raise LookupError(f"no profiles at or before {as_of} in {BEHAVIORAL_PROFILES}")
    replayed = built is None or as_of < built  # else the stored rows are read, no events
    if not replayed and as_of > built and _has_events(wh, events_table, built, as_of):
        raise StaleProfilesError(
            f"profiles are built through {built}, but {as_of} was asked for and {events_table} has events in "
            "between; materialize behavioral_profiles up to that day first"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    emb_path, ids_path = out / "embeddings.npy", out / "client_ids.npy"
    written, id_parts = 0, []
    # plain writes after an .npy header (not a memory map: mapped pages would count as resident)
    with open(emb_path, "wb") as fh:
        parts = _export_chunks(wh, coders, layout, as_of, replayed, n_clients, n_events, memory_mb, events_table)
        for ids, profiles in parts:
            if len(ids):
                if transform is not None:
                    profiles = transform(profiles)
                if written == 0:
                    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False}
                    np.lib.format.write_array_header_2_0(fh, {**header, "shape": (n_clients, profiles.shape[1])})
                if written + len(ids) > n_clients:
                    break
                np.ascontiguousarray(profiles, dtype=dtype).tofile(fh)
                written += len(ids)
                id_parts.append(ids.astype(str))
    if written != n_clients:
        emb_path.unlink(missing_ok=True)
        raise RuntimeError(f"export of {as_of}: {written} profiles written, {n_clients} clients counted")
    np.save(ids_path, np.concatenate(id_parts))
    return ids_path, emb_path


__all__ = [
    "BEHAVIORAL_PROFILES",
    "ProfileLayout",
    "ProfileState",
    "batch_profiles",
    "encode_events",
    "export_profiles",
    "load_profiles",
    "load_sketch_coders",
    "profile_feature_names",
    "iter_profiles",
]


def batch_check(
    wh: Warehouse,
    coders: dict[str, SketchCoder],
    half_lives_days: list[float],
    as_of: dt.date,
    max_clients: int = 50,
    events_table: str = EVENTS_DENORMALIZED,
) -> tuple[int, float]:
    """Recompute from scratch the profiles as of `as_of` of up to `max_clients` clients active that
    day (a stable sample by MD5 of the id, the same on every engine) and compare them with the
    stored, incremental ones. Returns (clients compared, largest |difference| / (1 + |value|))."""
    table = wh.table(events_table)
    sample = wh.fetch_df(
        f"SELECT client_id FROM (SELECT DISTINCT client_id FROM {table} WHERE event_date = DATE '{as_of}') "
        f"ORDER BY md5(CAST(client_id AS VARCHAR)), client_id LIMIT {int(max_clients)}"
    )["client_id"]
    if sample.empty:
        return 0, 0.0
    layout = ProfileLayout.from_coders(coders, half_lives_days)
    cols = ", ".join(f"CAST({ident(c)} AS VARCHAR) AS {ident(c)}" for c in layout.columns)
    in_list = ", ".join(literal(str(c)) for c in sample)
    events = wh.fetch_df(
        f"SELECT client_id, event_date, value, hash(CAST(basket_id AS VARCHAR)) AS basket_hash, {cols} FROM {table} "
        f"WHERE event_date <= DATE '{as_of}' AND client_id IN ({in_list})"
    )
    ids, rows = np.unique(events["client_id"].astype(str).to_numpy(), return_inverse=True)
    days = pd.to_datetime(events["event_date"]).to_numpy().astype("datetime64[D]").astype(np.int64)
    baskets = events["basket_hash"].to_numpy().astype(np.uint64).astype(np.int64)
    _, batch = batch_profiles(
        encode_events(coders, events),
        rows,
        days,
        events["value"].to_numpy(),
        len(ids),
        day_number(as_of),
        layout,
        basket_shares(rows, days, baskets),
    )
    stored_ids, stored = load_profiles(wh, as_of, coders)
    pos = np.searchsorted(stored_ids, ids)
    if (pos >= len(stored_ids)).any() or not np.array_equal(stored_ids[np.minimum(pos, len(stored_ids) - 1)], ids):
        return len(ids), float("inf")
    return len(ids), float((np.abs(stored[pos] - batch) / (1 + np.abs(batch))).max())
