"""behavioral_profiles: the incremental day-by-day state equals a from-scratch batch over the
whole history for any day; a profile as of D never reads an event after D; the export."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bm_assets.cli import main as cli_main
from bm_assets.core.profiles import (
    ProfileLayout,
    ProfileOrderError,
    ProfileState,
    StaleProfilesError,
    basket_shares,
    batch_check,
    batch_profiles,
    build_profiles_window,
    day_number,
    encode_events,
    export_profiles,
    load_profiles,
    profile_feature_names,
    read_layout,
)
from bm_assets.core.sketches import coders_fingerprint, fit_sketch_coder

START = dt.date(2017, 1, 1)
HALF_LIVES = [7.0, 60.0]


def _coders(wh, columns=("item_id", "department"), depth=4, bits=4):
    """Coders over random embeddings of each column's values (the profile arithmetic does not
    depend on where embeddings come from); every 10th value is left out to exercise unknowns."""
    rng = np.random.default_rng(0)
    out = {}
    for c in columns:
        ids = wh.fetch_df(
            f'SELECT DISTINCT CAST("{c}" AS VARCHAR) AS v FROM events_denormalized WHERE "{c}" IS NOT NULL ORDER BY 1'
        )["v"].to_numpy()
        ids = np.delete(ids, np.arange(0, len(ids), 10))
        out[c] = fit_sketch_coder(c, ids, rng.standard_normal((len(ids), 8)), depth, bits, seed=1)
    return out


def _build(wh, coders, start, end, fingerprint=None, memory_mb=2048.0):
    return build_profiles_window(
        wh, coders, HALF_LIVES, start, end, START, fingerprint or coders_fingerprint(coders), memory_mb=memory_mb
    )


def _batch(wh, coders, as_of: dt.date):
    cols = ", ".join(f'CAST("{c}" AS VARCHAR) AS "{c}"' for c in coders)
    events = wh.fetch_df(
        f"SELECT client_id, event_date, value, basket_id, {cols} FROM events_denormalized "
        f"WHERE event_date >= DATE '{START}' ORDER BY event_id"
    )
    ids, rows = np.unique(events["client_id"].to_numpy().astype(str), return_inverse=True)
    days = events["event_date"].to_numpy().astype("datetime64[D]").astype(np.int64)
    baskets = pd.factorize(events["basket_id"].astype(str))[0]
    layout = ProfileLayout.from_coders(coders, HALF_LIVES)
    present, profiles = batch_profiles(
        encode_events(coders, events),
        rows,
        days,
        events["value"].to_numpy(),
        len(ids),
        day_number(as_of),
        layout,
        basket_shares(rows, days, baskets),
    )
    return ids[present], profiles[present]


@pytest.mark.parametrize("memory_mb", [2048.0, 0.5], ids=["one-shard", "client-shards"])
def test_incremental_profiles_equal_a_batch_computation_for_any_day(sample_warehouse, memory_mb):
    wh = sample_warehouse
    coders = _coders(wh)
    # a range run, then single days, then another range: the states must chain exactly
    builds = [_build(wh, coders, START, dt.date(2017, 1, 20), memory_mb=memory_mb)]
    for d in range(20, 23):
        builds.append(_build(wh, coders, dt.date(2017, 1, d), dt.date(2017, 1, d + 1), memory_mb=memory_mb))
    builds.append(_build(wh, coders, dt.date(2017, 1, 23), dt.date(2017, 3, 1), memory_mb=memory_mb))
    # the small budget splits the clients into hash shards, processed one at a time
    assert (builds[0].shards > 2) == (memory_mb < 1), [b.shards for b in builds]
    assert not wh.table_exists("behavioral_profiles_staging")
    layout = ProfileLayout.from_coders(coders, HALF_LIVES)
    for as_of in [
        dt.date(2017, 1, 1),
        dt.date(2017, 1, 19),
        dt.date(2017, 1, 21),
        dt.date(2017, 2, 14),
        dt.date(2017, 2, 28),
    ]:
        ids, profiles = load_profiles(wh, as_of, coders)
        ref_ids, ref = _batch(wh, coders, as_of)
        assert np.array_equal(ids, ref_ids), as_of
        assert profiles.shape == (len(ids), layout.profile_dim)
        np.testing.assert_allclose(profiles, ref, rtol=2e-5, atol=1e-4, err_msg=str(as_of))
    # clients without events on a day carry over, decayed
    ids_a, a = load_profiles(wh, dt.date(2017, 2, 27), coders)
    ids_b, b = load_profiles(wh, dt.date(2017, 2, 28), coders)
    active = set(
        wh.fetch_df("SELECT DISTINCT client_id FROM events_denormalized WHERE event_date = DATE '2017-02-28'")[
            "client_id"
        ]
    )
    idle = np.array([i not in active for i in ids_a])
    assert idle.sum() > 50
    sel_b = np.searchsorted(ids_b, ids_a[idle])
    names = profile_feature_names(layout)
    h7 = slice(0, len(coders) * layout.depth * layout.width)
    np.testing.assert_allclose(b[sel_b, h7], a[idle, h7] * 0.5 ** (1 / 7), rtol=1e-5, atol=1e-6)
    since = names.index("days_since_last_event")
    np.testing.assert_array_equal(b[sel_b, since], a[idle, since] + 1)
    assert read_layout(wh)["stop_dim"].max() == len(names)  # the stored layout spans every named dimension

    # the asset check's comparison passes, and fails once a stored state is wrong
    checked, worst = batch_check(wh, coders, HALF_LIVES, dt.date(2017, 2, 28))
    assert checked > 10 and worst < 1e-4
    wh.execute(
        [
            "UPDATE behavioral_profiles SET vals = list_transform(vals, lambda x: x * 1.01) "
            "WHERE profile_date = DATE '2017-02-28'"
        ]
    )
    assert batch_check(wh, coders, HALF_LIVES, dt.date(2017, 2, 28))[1] > 1e-3


def test_a_profile_as_of_d_never_reads_a_later_event(sample_warehouse):
    wh = sample_warehouse
    coders = _coders(wh)
    day = dt.date(2017, 2, 10)
    _build(wh, coders, START, day + dt.timedelta(days=1))
    ids, before = load_profiles(wh, day, coders)
    wh.execute(
        [
            f"""UPDATE events_denormalized SET value = value * 1000, item_id = 'poison:' || item_id,
            department = 'POISON' WHERE event_date > DATE '{day}'""",
            f"""INSERT INTO events_denormalized BY NAME
            SELECT * REPLACE (DATE '{day + dt.timedelta(days=1)}' AS event_date, 'intruder' AS client_id)
            FROM events_denormalized WHERE event_date = DATE '{day}'""",
        ]
    )
    _build(wh, coders, START, day + dt.timedelta(days=1))
    ids_after, after = load_profiles(wh, day, coders)
    assert np.array_equal(ids, ids_after) and np.array_equal(before, after)
    # control: changing day D itself does change the profile
    wh.execute([f"UPDATE events_denormalized SET value = value * 1000 WHERE event_date = DATE '{day}'"])
    _build(wh, coders, day, day + dt.timedelta(days=1))
    assert not np.array_equal(before, load_profiles(wh, day, coders)[1])


def test_days_must_be_built_in_order_with_the_same_coders(sample_warehouse):
    wh = sample_warehouse
    coders = _coders(wh)
    with pytest.raises(ProfileOrderError, match="2017-01-09"):
        _build(wh, coders, dt.date(2017, 1, 10), dt.date(2017, 1, 11))
    _build(wh, coders, START, dt.date(2017, 1, 10))
    with pytest.raises(ProfileOrderError, match="sketch coders"):
        _build(wh, coders, dt.date(2017, 1, 10), dt.date(2017, 1, 11), fingerprint="other")


def test_export_writes_ids_and_embeddings(sample_warehouse, tmp_path):
    wh = sample_warehouse
    coders = _coders(wh)
    _build(wh, coders, START, dt.date(2017, 1, 15))
    ids_path, emb_path = export_profiles(wh, dt.date(2017, 1, 14), tmp_path / "out", dtype="float16", coders=coders)
    ids, profiles = load_profiles(wh, dt.date(2017, 1, 14), coders)
    assert np.array_equal(np.load(ids_path), ids)
    emb = np.load(emb_path)
    assert emb.dtype == np.float16 and emb.shape == profiles.shape
    np.testing.assert_array_equal(emb, profiles.astype(np.float16))
    # a replayed day streams client shards (shard order), the stored last day streams the stored
    # rows in batches: the same rows either way
    for day in (dt.date(2017, 1, 9), dt.date(2017, 1, 14)):
        ids, profiles = load_profiles(wh, day, coders)
        ids_path, emb_path = export_profiles(wh, day, tmp_path / f"shards{day}", coders=coders, memory_mb=0.02)
        got_ids, got = np.load(ids_path), np.load(emb_path)
        assert np.array_equal(np.sort(got_ids), ids)
        assert day == dt.date(2017, 1, 14) or not np.array_equal(got_ids, ids)
        np.testing.assert_allclose(got[np.argsort(got_ids)], profiles, rtol=1e-5, atol=1e-5)
    with pytest.raises(LookupError, match="2016-12-31"):
        export_profiles(wh, dt.date(2016, 12, 31), tmp_path / "none", coders=coders)
    assert cli_main(["export-profiles", "--date", "2017-13-01", "--out", str(tmp_path)]) == 2


def test_profile_state_matches_batch_on_generated_events_across_rebases():
    rng = np.random.default_rng(5)
    n_clients, n_days, n_events, depth, width = 40, 120, 3000, 3, 8
    layout = ProfileLayout(("a", "b"), depth, width, (2.0, 30.0))
    days = np.sort(rng.integers(0, n_days, n_events))
    rows = rng.integers(0, n_clients, n_events)
    codes = {c: rng.integers(-1, width, (n_events, depth)).astype(np.int32) for c in layout.columns}
    values = rng.lognormal(0, 1, n_events).astype(np.float32)
    values[::17] = np.nan
    basket_ids = rng.integers(0, 3, n_events)  # up to 3 baskets a client-day
    shares = basket_shares(rows, days, basket_ids)
    state = ProfileState(layout, n_clients, ref_day=0)
    state._MAX_DOUBLINGS = 3.0  # rebase every few days, to exercise it
    bounds = np.searchsorted(days, np.arange(n_days + 1))
    for day in range(n_days):
        sl = slice(bounds[day], bounds[day + 1])
        state.add_day(day, rows[sl], {c: v[sl] for c, v in codes.items()}, values[sl], shares[sl])
        if day in (0, 37, 119):
            present, ref = batch_profiles(codes, rows, days, np.nan_to_num(values), n_clients, day, layout, shares)
            seen = np.flatnonzero(state.last_day >= 0)
            assert np.array_equal(seen, np.flatnonzero(present))
            # snapshot() gives true states at `day`; finish() adds recency, tenure and gaps from last_day
            got = np.concatenate([state.snapshot(seen, day), np.zeros((len(seen), 2), np.float32)], axis=1)
            layout.finish(got, state.last_day[seen], day)
            np.testing.assert_allclose(got, ref[seen], rtol=1e-4, atol=1e-4)
    # the visit block against a direct count: active days, baskets, tenure and the last gap
    names = profile_feature_names(layout)
    day = n_days - 1
    assert np.array_equal(seen, np.arange(n_clients))
    for client in range(5):
        mine = rows == client
        active = np.unique(days[mine])
        baskets = len(set(zip(days[mine].tolist(), basket_ids[mine].tolist(), strict=True)))
        assert got[client, names.index("n_active_days")] == len(active)
        assert got[client, names.index("n_baskets")] == pytest.approx(baskets, rel=1e-5)
        assert got[client, names.index("tenure_days")] == day - active[0]
        assert got[client, names.index("last_gap_days")] == (active[-1] - active[-2] if len(active) > 1 else 0)
        assert got[client, names.index("days_since_last_event")] == day - active[-1]
        np.testing.assert_allclose(
            got[client, names.index("mean_gap_days")], (active[-1] - active[0]) / max(len(active) - 1, 1)
        )
    assert state.ref_day > 100
    with pytest.raises(ValueError, match="before a day already added"):
        state.add_day(5, rows[:3], {c: v[:3] for c, v in codes.items()}, values[:3])


def test_the_store_keeps_one_sparse_row_per_client_and_rebuilds_later_days(sample_warehouse, tmp_path):
    wh = sample_warehouse
    coders = _coders(wh)
    _build(wh, coders, START, dt.date(2017, 2, 1))
    for d in range(1, 5):
        _build(wh, coders, dt.date(2017, 2, d), dt.date(2017, 2, d + 1))
    rows = wh.fetch_df("SELECT client_id, profile_date, len(dims) AS nnz FROM behavioral_profiles")
    active = wh.fetch_df(
        "SELECT client_id, max(event_date) AS last FROM events_denormalized "
        "WHERE event_date <= DATE '2017-02-04' GROUP BY 1"
    )
    # one row per client, dated its last event day (lazy decay), sparse
    assert rows["client_id"].is_unique and len(rows) == len(active)
    merged = rows.merge(active, on="client_id")
    assert (merged["profile_date"] == merged["last"].dt.date).all()
    layout = ProfileLayout.from_coders(coders, HALF_LIVES)
    assert rows["nnz"].max() < layout.state_dim
    expected = load_profiles(wh, dt.date(2017, 2, 4), coders)
    # re-running a day in the middle re-derives the later days in the same transaction
    _build(wh, coders, dt.date(2017, 2, 2), dt.date(2017, 2, 3))
    days = wh.fetch_df("SELECT max(profile_date) AS d FROM behavioral_profiles_days")["d"].iloc[0]
    assert str(days)[:10] == "2017-02-04"
    again = load_profiles(wh, dt.date(2017, 2, 4), coders)
    assert np.array_equal(expected[0], again[0])
    np.testing.assert_allclose(again[1], expected[1], rtol=2e-5, atol=1e-4)
    # a date with events the store has not built is refused, not silently stale
    with pytest.raises(StaleProfilesError, match="built through 2017-02-04"):
        load_profiles(wh, dt.date(2017, 2, 10), coders)
    with pytest.raises(StaleProfilesError, match="built through 2017-02-04"):  # the streamed export too
        export_profiles(wh, dt.date(2017, 2, 10), tmp_path / "stale", coders=coders)
    assert not (tmp_path / "stale" / "embeddings.npy").exists()


def test_a_killed_build_leaves_the_previous_profiles_whole(sample_events_db, tmp_path):
    """A real SIGKILL in the middle of a long window: the table is exactly as before, and a
    re-run gives what a clean run gives."""
    import shutil
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    from bm_assets.core.warehouse import DuckDBWarehouse

    path = tmp_path / "kill.duckdb"
    shutil.copy(sample_events_db, path)
    script = textwrap.dedent(
        f"""
        import datetime as dt, sys, time
        import bm_assets.core.profiles as p
        from bm_assets.core.warehouse import DuckDBWarehouse
        from bm_assets_tests.test_profiles import _coders, _build
        wh = DuckDBWarehouse({str(path)!r})
        coders = _coders(wh)
        if sys.argv[1] == "first":
            _build(wh, coders, dt.date(2017, 1, 1), dt.date(2017, 2, 1))
        else:
            slow = p.ProfileState.add_events
            def add_events(self, *a, **k):  # slow the replay down so the kill lands mid-window
                time.sleep(10)
                return slow(self, *a, **k)
            p.ProfileState.add_events = add_events
            print("started", flush=True)
            _build(wh, coders, dt.date(2017, 2, 1), dt.date(2017, 12, 31))
        wh.close()
        """
    )
    run = [sys.executable, "-c", script]
    subprocess.run([*run, "first"], check=True, cwd=Path(__file__).resolve().parents[1])
    wh = DuckDBWarehouse(str(path))
    before = wh.fetch_df("SELECT * FROM behavioral_profiles ORDER BY client_id")
    days_before = wh.fetch_df("SELECT * FROM behavioral_profiles_days ORDER BY profile_date")
    wh.close()
    proc = subprocess.Popen([*run, "second"], stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1])
    assert proc.stdout.readline().strip() == b"started"
    time.sleep(2.0)  # the build is still replaying
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wh = DuckDBWarehouse(str(path))
    try:
        after = wh.fetch_df("SELECT * FROM behavioral_profiles ORDER BY client_id")
        pd.testing.assert_frame_equal(after, before)
        pd.testing.assert_frame_equal(
            wh.fetch_df("SELECT * FROM behavioral_profiles_days ORDER BY profile_date"), days_before
        )
        coders = _coders(wh)
        _build(wh, coders, dt.date(2017, 2, 1), dt.date(2017, 3, 1))
        ids, x = load_profiles(wh, dt.date(2017, 2, 28), coders)
        ref_ids, ref = _batch(wh, coders, dt.date(2017, 2, 28))
        assert np.array_equal(ids, ref_ids)
        np.testing.assert_allclose(x, ref, rtol=2e-5, atol=1e-4)
    finally:
        wh.close()


def test_the_network_finds_the_sketch_blocks_of_a_profile():
    from bm_assets.core.profiles import sketch_blocks

    layout = ProfileLayout(("a", "b"), 3, 8, (2.0, 30.0, 90.0))
    names = profile_feature_names(layout)
    assert layout.profile_dim == len(names) == layout.state_dim + 2
    blocks = sketch_blocks(layout.profile_dim, [24, 24])
    assert blocks == [(s, e) for n, s, e in layout.blocks() if n.startswith("sketch/")]
    assert all(names[s].startswith("sketch/") and names[e - 1].startswith("sketch/") for s, e in blocks)
    assert sketch_blocks(layout.profile_dim + 1, [24, 24]) == []


def test_the_dense_block_equals_a_direct_sql_recomputation(sample_warehouse):
    """Every dense profile entry (decayed counts and value, the visit block: decayed active days and
    baskets, totals, tenure, gaps, recency), recomputed by one SQL query over events_denormalized."""
    wh = sample_warehouse
    coders = _coders(wh)
    _build(wh, coders, START, dt.date(2017, 3, 1))
    as_of = dt.date(2017, 2, 28)
    ids, profiles = load_profiles(wh, as_of, coders)
    layout = ProfileLayout.from_coders(coders, HALF_LIVES)
    names = profile_feature_names(layout)

    def decayed(h: float, what: str) -> str:
        return f"sum(power(0.5, (DATE '{as_of}' - r.d) / {h}){what})"

    per_half_life = ", ".join(
        f"{decayed(h, '')} FILTER (WHERE kind = 'event') AS \"event_count/h{h:g}\", "
        f"{decayed(h, ' * v')} FILTER (WHERE kind = 'event') AS \"value/h{h:g}\", "
        f"{decayed(h, '')} FILTER (WHERE kind = 'day') AS \"active_days/h{h:g}\", "
        f"{decayed(h, '')} FILTER (WHERE kind = 'basket') AS \"baskets/h{h:g}\""
        for h in HALF_LIVES
    )
    expected = wh.fetch_df(
        f"""
        WITH e AS (
            SELECT CAST(client_id AS VARCHAR) AS c, event_date AS d, coalesce(value, 0) AS v,
                   CAST(basket_id AS VARCHAR) AS b
            FROM events_denormalized WHERE event_date >= DATE '{START}' AND event_date <= DATE '{as_of}'
        ),
        active AS (SELECT c, d, lag(d) OVER (PARTITION BY c ORDER BY d) AS prev FROM e GROUP BY c, d),
        rows AS (
            SELECT c, d, v, 'event' AS kind FROM e
            UNION ALL SELECT c, d, 0, 'day' FROM active
            UNION ALL SELECT c, d, 0, 'basket' FROM (SELECT c, d, b FROM e GROUP BY c, d, b)
        )
        SELECT r.c, {per_half_life},
            count(*) FILTER (WHERE kind = 'event') AS n_events,
            sum(v) FILTER (WHERE kind = 'event') AS value_total,
            count(*) FILTER (WHERE kind = 'day') AS n_active_days,
            count(*) FILTER (WHERE kind = 'basket') AS n_baskets,
            DATE '{as_of}' - min(r.d) AS tenure_days,
            any_value(coalesce(a.last_d - a.prev, 0)) AS last_gap_days,
            DATE '{as_of}' - max(r.d) AS days_since_last_event,
            CASE WHEN count(*) FILTER (WHERE kind = 'day') > 1
                 THEN (max(r.d) - min(r.d)) / (count(*) FILTER (WHERE kind = 'day') - 1) ELSE 0 END AS mean_gap_days
        FROM rows r
        JOIN (SELECT c, d AS last_d, prev FROM active QUALIFY row_number() OVER (PARTITION BY c ORDER BY d DESC) = 1) a
          ON a.c = r.c
        GROUP BY r.c ORDER BY r.c
        """
    )
    assert np.array_equal(ids, expected["c"].to_numpy())
    dense = [n for n in names if not n.startswith("sketch/")]
    assert {"active_days/h7", "baskets/h60", "n_baskets", "tenure_days", "mean_gap_days"} <= set(dense)
    assert set(dense) == set(expected.columns) - {"c"}
    for name in dense:
        np.testing.assert_allclose(
            profiles[:, names.index(name)], expected[name].to_numpy(np.float64), rtol=2e-5, atol=1e-3, err_msg=name
        )
