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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from bm_assets.core.sketches import SketchCoder, load_sketch_coders, sketch
from bm_assets.core.sql import ident
from bm_assets.core.warehouse import Warehouse

BEHAVIORAL_PROFILES = "behavioral_profiles"
_EPOCH = dt.date(1970, 1, 1)
_LN_HALF = float(np.log(0.5))


def day_number(day: dt.date) -> int:
    """Days since 1970-01-01: the integer day axis of the profile arithmetic."""
    return (day - _EPOCH).days


@dataclass(frozen=True)
class ProfileLayout:
    """Where each feature sits in a profile vector:
    [sketch per half-life and column (depth*width each)] + [decayed event count per half-life]
    + [decayed value per half-life] + [n_events, value_total] + [days_since_last_event].
    The first `state_dim` entries form the stored, additive state."""

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
    def state_dim(self) -> int:
        return len(self.half_lives_days) * (self.sketch_dim + 2) + 2

    @property
    def profile_dim(self) -> int:
        return self.state_dim + 1

    def log_decay(self) -> np.ndarray:
        """float64[state_dim]: ln(daily decay factor) per state entry (0 for the totals)."""
        rates = [_LN_HALF / h for h in self.half_lives_days]
        return np.concatenate([np.repeat(rates, self.sketch_dim), rates, rates, np.zeros(2)]).astype(
            np.float64
        )

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
        for name in ("n_events", "value_total", "days_since_last_event"):
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
            raise KeyError(
                f"events have no column {column!r} for its sketch coder; found {list(events.columns)}"
            )
        values = events[column]
        codes = coder.encode(values.fillna("").astype(str).to_numpy())
        codes[values.isna().to_numpy()] = -1
        out[column] = codes
    return out


def _state_from_weights(codes, rows, weights, values, n_rows, layout) -> np.ndarray:
    """State of events with per-half-life weights float32[n_events, n_half_lives]."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    parts = []
    for k in range(len(layout.half_lives_days)):
        parts += [sketch(codes[c], rows, weights[:, k], n_rows, layout.width) for c in layout.columns]
    counts = [np.bincount(rows, weights=weights[:, k], minlength=n_rows) for k in range(weights.shape[1])]
    value_sums = [
        np.bincount(rows, weights=weights[:, k] * values, minlength=n_rows) for k in range(weights.shape[1])
    ]
    totals = [
        np.bincount(rows, minlength=n_rows).astype(np.float64),
        np.bincount(rows, values, minlength=n_rows),
    ]
    dense = np.stack(counts + value_sums + totals, axis=1).astype(np.float32)
    return np.concatenate([*parts, dense], axis=1) if parts else dense


class ProfileState:
    """The decayed sums of many clients, updated one day at a time in place.

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
        # contiguous runs of equal decay rate, so scaling is a few block multiplies
        edges = np.flatnonzero(np.diff(self.log_decay)) + 1
        starts, stops = np.r_[0, edges], np.r_[edges, len(self.log_decay)]
        self._runs = [(int(a), int(b), float(self.log_decay[a])) for a, b in zip(starts, stops, strict=True)]
        n_h, n_c, block = len(layout.half_lives_days), len(layout.columns), layout.depth * layout.width
        levels = np.arange(layout.depth, dtype=np.int64) * layout.width
        dense = n_h * layout.sketch_dim  # then counts[n_h], values[n_h], n_events, value_total
        # Every event adds to the same entries of its row (plus its bucket codes): sketch levels
        # of each half-life and column, then the dense features. Offsets [entries_per_event]:
        sketch_offsets = [(k * n_c + i) * block + levels for k in range(n_h) for i in range(n_c)]
        self._offsets = np.concatenate([*sketch_offsets, dense + np.arange(2 * n_h + 2)])
        self._n_sketch_entries = n_h * n_c * layout.depth

    def set_rows(self, rows: np.ndarray, states: np.ndarray, last_days: np.ndarray) -> None:
        """Load true states (each as of its `last_days`, all <= ref_day) into `rows`."""
        if len(rows) == 0:
            return
        if (last_days > self.ref_day).any():
            raise ValueError(f"a loaded state is newer than the reference day {self.ref_day}")
        gap = (last_days - self.ref_day).astype(np.float64)
        for a, b, rate in self._runs:
            self.state[rows, a:b] = states[:, a:b] * np.exp(-rate * gap)[:, None].astype(np.float32)
        self.last_day[rows] = last_days

    def _rebase(self, day: int) -> None:
        for a, b, rate in self._runs:
            if rate != 0.0:
                self.state[:, a:b] *= np.float32(np.exp(rate * (day - self.ref_day)))
        self.ref_day = day

    def add_day(self, day: int, rows: np.ndarray, codes: dict[str, np.ndarray], values: np.ndarray) -> None:
        """Add one day's events: `rows` int64[n_events] (client row of each event), `codes` per
        sketch column int32[n_events, depth] (-1 = unknown, skipped), `values` float[n_events]
        (NaN = 0). Days must come in increasing order."""
        if len(rows) == 0:
            return
        rows = np.asarray(rows, dtype=np.int64)
        latest = int(self.last_day[rows].max())
        if day < latest:
            raise ValueError(f"day {day} comes before a day already added ({latest})")
        if -self._rates.min() * (day - self.ref_day) / np.log(2) > self._MAX_DOUBLINGS:
            self._rebase(day)
        weight = np.exp(-self._rates * (day - self.ref_day)).astype(np.float32)  # one per half-life
        n, n_h, ns = len(rows), len(weight), self._n_sketch_entries
        code = np.concatenate([np.asarray(codes[c]) for c in self.layout.columns], axis=1)  # [n, C*depth]
        known = code >= 0
        all_known = bool(known.all())
        entries = (rows * self.layout.state_dim)[:, None] + self._offsets[None, :]  # [n, entries]
        w = np.empty(entries.shape, dtype=np.float32)
        sketch_entries = entries[:, :ns].reshape(n, n_h, -1)
        sketch_w = w[:, :ns].reshape(n, n_h, -1)
        if all_known:
            sketch_entries += code[:, None, :]
            sketch_w[...] = weight[None, :, None]
        else:  # unknown codes add 0 to the level's bucket 0
            sketch_entries += np.where(known, code, 0)[:, None, :]
            sketch_w[...] = known[:, None, :] * weight[None, :, None]
        values = np.nan_to_num(np.asarray(values, dtype=np.float32))
        w[:, ns : ns + n_h] = weight
        w[:, ns + n_h : ns + 2 * n_h] = values[:, None] * weight
        w[:, ns + 2 * n_h] = 1.0
        w[:, ns + 2 * n_h + 1] = values
        np.add.at(self.state.reshape(-1), entries.reshape(-1), w.reshape(-1))
        self.last_day[rows] = day

    def snapshot(self, rows: np.ndarray, day: int) -> np.ndarray:
        """float32[len(rows), state_dim]: true states of `rows` at the end of `day`."""
        out = np.take(self.state, rows, axis=0)
        out *= np.exp(self.log_decay * (day - self.ref_day)).astype(np.float32)
        return out


def profiles_at(state: np.ndarray, last_day: np.ndarray, as_of: int, log_decay: np.ndarray) -> np.ndarray:
    """float32[n, profile_dim]: the states (at their last_day) decayed to day `as_of`, plus
    days since the last event."""
    gap = (as_of - last_day).astype(np.float64)
    if (gap < 0).any():
        raise ValueError(f"a state is newer ({int(last_day.max())}) than the requested day {as_of}")
    decayed = state * np.exp(gap[:, None] * log_decay[None, :]).astype(np.float32)
    return np.concatenate([decayed, gap[:, None].astype(np.float32)], axis=1)


def batch_profiles(
    codes: dict[str, np.ndarray],
    client_rows: np.ndarray,
    event_days: np.ndarray,
    values: np.ndarray,
    n_clients: int,
    as_of: int,
    layout: ProfileLayout,
) -> tuple[np.ndarray, np.ndarray]:
    """From scratch over the whole history: (present bool[n_clients], float32[n_clients,
    profile_dim]) as of the end of day `as_of`. Events after `as_of` are ignored; each event
    weighs 0.5 ** ((as_of - day) / half_life)."""
    keep = event_days <= as_of
    codes = {c: v[keep] for c, v in codes.items()}
    rows, days, values = client_rows[keep], event_days[keep], values[keep]
    age = (as_of - days).astype(np.float64)
    weights = np.exp(age[:, None] * (_LN_HALF / np.array(layout.half_lives_days))[None, :]).astype(np.float32)
    state = _state_from_weights(codes, rows, weights, values, n_clients, layout)
    last = np.full(n_clients, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, rows, days.astype(np.int64))
    present = last > np.iinfo(np.int64).min
    since = np.where(present, as_of - last, 0).astype(np.float32)
    return present, np.concatenate([state, since[:, None]], axis=1)


# --- warehouse storage --------------------------------------------------------------------


def latest_states(
    wh: Warehouse, before: dt.date, inclusive: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(client_ids str[n], last_day int64[n], state float32[n, state_dim]) from each client's
    latest row dated before `before` (or at it, if inclusive)."""
    if not wh.table_exists(BEHAVIORAL_PROFILES):
        return np.array([], dtype=str), np.array([], dtype=np.int64), np.zeros((0, 0), np.float32)
    op = "<=" if inclusive else "<"
    df = wh.fetch_df(
        f"""SELECT client_id, profile_date, state FROM {wh.table(BEHAVIORAL_PROFILES)}
        WHERE profile_date {op} DATE '{before}'
        QUALIFY row_number() OVER (PARTITION BY client_id ORDER BY profile_date DESC) = 1
        ORDER BY client_id"""
    )
    if df.empty:
        return np.array([], dtype=str), np.array([], dtype=np.int64), np.zeros((0, 0), np.float32)
    days = pd.to_datetime(df["profile_date"]).to_numpy().astype("datetime64[D]").astype(np.int64)
    state = np.stack(df["state"].to_numpy()).astype(np.float32)
    return df["client_id"].astype(str).to_numpy(), days, state


def load_profiles(wh: Warehouse, as_of: dt.date) -> tuple[np.ndarray, np.ndarray]:
    """(client_ids str[n] sorted, float32[n, profile_dim]): profiles at the END of day `as_of`
    (events with event_date <= as_of) of every client with an event by then."""
    ids, last, state = latest_states(wh, as_of, inclusive=True)
    if len(ids) == 0:
        return ids, np.zeros((0, 0), np.float32)
    log_decay = _log_decay_from_state_dim(state.shape[1], profile_half_lives(wh))
    return ids, profiles_at(state, last, day_number(as_of), log_decay)


PROFILE_LAYOUT_TABLE = "behavioral_profiles_layout"
PROFILE_DAYS_TABLE = "behavioral_profiles_days"


class ProfileOrderError(RuntimeError):
    """A day's profiles were requested before the previous day's, or with other coders."""


@dataclass
class ProfileBuild:
    start: dt.date
    end: dt.date  # exclusive
    days: int
    events: int
    rows: int
    clients: int
    state_dim: int


def _create_statements(wh: Warehouse) -> list[str]:
    return [
        f"CREATE TABLE IF NOT EXISTS {wh.table(BEHAVIORAL_PROFILES)} (client_id VARCHAR, profile_date DATE, "
        "events_today BIGINT, state FLOAT[])",
        f"CREATE TABLE IF NOT EXISTS {wh.table(PROFILE_DAYS_TABLE)} (profile_date DATE, clients BIGINT, "
        "events BIGINT, coders VARCHAR)",
    ]


def _check_previous_day(wh: Warehouse, start: dt.date, data_start: dt.date, fingerprint: str) -> None:
    """The state before `start` must be complete (day start-1 processed) and built with the
    same coders, else the increment would add to a wrong state."""
    if start <= data_start:
        return
    prev = start - dt.timedelta(days=1)
    rows = wh.fetch_df(
        f"SELECT coders FROM {wh.table(PROFILE_DAYS_TABLE)} WHERE profile_date = DATE '{prev}'"
    )
    if rows.empty:
        raise ProfileOrderError(
            f"behavioral_profiles for {start} needs the profiles of {prev}, which were never built; "
            f"materialize the partitions from {data_start} (or the first missing day) up to {prev} first"
        )
    if rows["coders"].iloc[0] != fingerprint:
        raise ProfileOrderError(
            f"behavioral_profiles of {prev} were built with sketch coders {rows['coders'].iloc[0]}, "
            f"the current ones are {fingerprint}; backfill every partition from {data_start}"
        )


def build_profiles_window(
    wh: Warehouse,
    coders: dict[str, SketchCoder],
    half_lives_days: list[float],
    start: dt.date,
    end: dt.date,
    data_start: dt.date,
    fingerprint: str,
    events_table: str = "events_denormalized",
) -> ProfileBuild:
    """Compute and store the profiles of days [start, end), in order, each from the previous
    day's state plus that day's events. Memory: one day's events plus the state of the clients
    active in the window."""
    layout = ProfileLayout.from_coders(coders, half_lives_days)
    wh.execute(_create_statements(wh) + write_layout(wh, layout))
    _check_previous_day(wh, start, data_start, fingerprint)
    prev_ids, prev_last, prev_state = latest_states(wh, start)
    if len(prev_ids) and prev_state.shape[1] != layout.state_dim:
        raise ProfileOrderError(
            f"stored profile states have {prev_state.shape[1]} dims, the layout now gives "
            f"{layout.state_dim}; "
            f"backfill every partition from {data_start}"
        )
    table = wh.table(events_table)
    window = f"event_date >= DATE '{start}' AND event_date < DATE '{end}'"
    window_ids = wh.fetch_df(f"SELECT DISTINCT client_id FROM {table} WHERE {window}")["client_id"]
    vocab = np.unique(np.concatenate([prev_ids, window_ids.astype(str).to_numpy()]))
    state = ProfileState(layout, len(vocab), ref_day=day_number(start))
    if len(prev_ids):
        state.set_rows(np.searchsorted(vocab, prev_ids), prev_state, prev_last)
    cols = ", ".join(f"CAST({ident(c)} AS VARCHAR) AS {ident(c)}" for c in layout.columns)
    wh.execute(
        [
            f"DELETE FROM {wh.table(BEHAVIORAL_PROFILES)} WHERE profile_date >= DATE '{start}' "
            f"AND profile_date < DATE '{end}'",
            f"DELETE FROM {wh.table(PROFILE_DAYS_TABLE)} WHERE profile_date >= DATE '{start}' "
            f"AND profile_date < DATE '{end}'",
        ]
    )
    n_events = n_rows = 0
    day = start
    while day < end:
        events = wh.fetch_df(f"SELECT client_id, value, {cols} FROM {table} WHERE event_date = DATE '{day}'")
        rows_global = np.searchsorted(vocab, events["client_id"].astype(str).to_numpy())
        state.add_day(day_number(day), rows_global, encode_events(coders, events), events["value"].to_numpy())
        active, local = np.unique(rows_global, return_inverse=True)
        frame = pd.DataFrame(
            {
                "client_id": vocab[active],
                "profile_date": pd.Timestamp(day),
                "events_today": np.bincount(local, minlength=len(active)).astype(np.int64),
                "state": _list_column(state.snapshot(active, day_number(day))),
            }
        )
        frame["profile_date"] = frame["profile_date"].dt.date
        wh.insert_df(
            BEHAVIORAL_PROFILES,
            frame,
            before=[
                f"INSERT INTO {wh.table(PROFILE_DAYS_TABLE)} "
                f"VALUES (DATE '{day}', {len(active)}, {len(events)}, '{fingerprint}')"
            ],
        )
        n_events += len(events)
        n_rows += len(active)
        day += dt.timedelta(days=1)
    return ProfileBuild(
        start, end, (end - start).days, n_events, n_rows, int((state.last_day >= 0).sum()), layout.state_dim
    )


def _list_column(matrix: np.ndarray) -> pd.arrays.ArrowExtensionArray:
    """float32[n, d] as an Arrow list column: no per-row Python objects."""
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).ravel())
    return pd.arrays.ArrowExtensionArray(pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1]))


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


def stored_feature_names(wh: Warehouse) -> list[str]:
    """Names of the stored profiles' dimensions, read from the layout table."""
    layout = read_layout(wh)
    names: list[str] = []
    for block, start, stop, _, width in layout[
        ["block", "start_dim", "stop_dim", "depth", "width"]
    ].itertuples(index=False):
        if block.startswith("sketch/"):
            names += [f"{block}/d{i // width}/b{i % width}" for i in range(stop - start)]
        else:
            names.append(block)
    return names


def _log_decay_from_state_dim(state_dim: int, half_lives: list[float]) -> np.ndarray:
    """ProfileLayout.log_decay of stored states, from their width and half-lives alone."""
    n_h = len(half_lives)
    sketch_dim = (state_dim - 2) // n_h - 2
    rates = [_LN_HALF / h for h in half_lives]
    return np.concatenate([np.repeat(rates, sketch_dim), rates, rates, np.zeros(2)])


def export_profiles(
    wh: Warehouse, as_of: dt.date, out_dir: str | Path, dtype: str = "float32"
) -> tuple[Path, Path]:
    """Write `client_ids.npy` (str[n]) and `embeddings.npy` (float16/float32[n, profile_dim])
    of the profiles at the end of `as_of`."""
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, found {dtype!r}")
    ids, profiles = load_profiles(wh, as_of)
    if len(ids) == 0:
        raise LookupError(f"no profiles at or before {as_of} in {BEHAVIORAL_PROFILES}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "client_ids.npy", ids.astype(str))
    np.save(out / "embeddings.npy", profiles.astype(dtype))
    return out / "client_ids.npy", out / "embeddings.npy"


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
    "profiles_at",
]


def batch_check(
    wh: Warehouse,
    coders: dict[str, SketchCoder],
    half_lives_days: list[float],
    as_of: dt.date,
    max_clients: int = 50,
    events_table: str = "events_denormalized",
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
    in_list = ", ".join("'" + str(c).replace("'", "''") + "'" for c in sample)
    events = wh.fetch_df(
        f"SELECT client_id, event_date, value, {cols} FROM {table} "
        f"WHERE event_date <= DATE '{as_of}' AND client_id IN ({in_list})"
    )
    ids, rows = np.unique(events["client_id"].astype(str).to_numpy(), return_inverse=True)
    days = pd.to_datetime(events["event_date"]).to_numpy().astype("datetime64[D]").astype(np.int64)
    _, batch = batch_profiles(
        encode_events(coders, events),
        rows,
        days,
        events["value"].to_numpy(),
        len(ids),
        day_number(as_of),
        layout,
    )
    stored_ids, stored = load_profiles(wh, as_of)
    pos = np.searchsorted(stored_ids, ids)
    if (pos >= len(stored_ids)).any() or not np.array_equal(
        stored_ids[np.minimum(pos, len(stored_ids) - 1)], ids
    ):
        return len(ids), float("inf")
    return len(ids), float((np.abs(stored[pos] - batch) / (1 + np.abs(batch))).max())
