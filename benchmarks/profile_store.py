"""End-to-end benchmark of the profile store on the full Complete Journey: what the
`behavioral_profiles` asset does (read the window's events from DuckDB, encode them, run the
kernel, write the sparse rows in one transaction), next to the bare kernel (ProfileState.add_day)
at the production sketch configuration, a one-day forward run, a replay of 40 past dates (what
the task stages read), and the bytes on disk against the source parquet.

    python benchmarks/profile_store.py [--out benchmarks/RESULTS_profile_store.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from bm_assets.config import load_dataset_config  # noqa: E402
from bm_assets.core.attributes import build_client_properties, build_product_catalog  # noqa: E402
from bm_assets.core.denormalize import denormalize_window  # noqa: E402
from bm_assets.core.ingest import ingest_window  # noqa: E402
from bm_assets.core.profiles import (  # noqa: E402
    ProfileLayout,
    ProfileState,
    build_profiles_window,
    encode_events,
    iter_profiles,
)
from bm_assets.core.sketches import coders_fingerprint, fit_sketch_coder  # noqa: E402
from bm_assets.core.warehouse import DuckDBWarehouse  # noqa: E402

DATASET = HERE.parent / "data" / "completejourney" / "dataset.yaml"
COLUMNS, DEPTH, BITS, HALF_LIVES = ("item_id", "product_category", "department"), 8, 6, [7.0, 60.0]


def _coders(wh: DuckDBWarehouse) -> dict:
    """Coders over random embeddings of each column's values: the store's cost does not depend
    on where the embeddings come from."""
    rng = np.random.default_rng(0)
    out = {}
    for c in COLUMNS:
        ids = wh.fetch_df(
            f'SELECT DISTINCT CAST("{c}" AS VARCHAR) AS v FROM events_denormalized WHERE "{c}" IS NOT NULL ORDER BY 1'
        )["v"].to_numpy()
        out[c] = fit_sketch_coder(c, ids, rng.standard_normal((len(ids), 64)).astype(np.float32), DEPTH, BITS, 0)
    return out


def _kernel(wh: DuckDBWarehouse, coders: dict) -> tuple[int, float]:
    """(events, seconds) of ProfileState.add_day alone over every day, codes precomputed."""
    cols = ", ".join(f'CAST("{c}" AS VARCHAR) AS "{c}"' for c in coders)
    ev = wh.fetch_df(f"SELECT client_id, event_date, value, {cols} FROM events_denormalized ORDER BY event_date")
    codes = encode_events(coders, ev)
    _, rows = np.unique(ev["client_id"].astype(str).to_numpy(), return_inverse=True)
    days = ev["event_date"].to_numpy().astype("datetime64[D]").astype(np.int64)
    values = ev["value"].to_numpy()
    layout = ProfileLayout.from_coders(coders, HALF_LIVES)
    state = ProfileState(layout, int(rows.max()) + 1, ref_day=int(days[0]))
    bounds = np.searchsorted(days, np.arange(days[0], days[-1] + 2))
    t0 = time.perf_counter()
    for i in range(len(bounds) - 1):
        sl = slice(bounds[i], bounds[i + 1])
        state.add_day(int(days[0]) + i, rows[sl], {c: v[sl] for c, v in codes.items()}, values[sl])
    return len(rows), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args()
    cfg = load_dataset_config(DATASET)
    source_mb = sum(p.stat().st_size for p in Path(cfg.base_dir).glob("*.parquet")) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cj.duckdb")
        wh = DuckDBWarehouse(path)
        ingest_window(wh, cfg, cfg.data_start, cfg.end_exclusive)
        build_client_properties(wh, cfg)
        build_product_catalog(wh, cfg)
        denormalize_window(wh, cfg.data_start, cfg.end_exclusive, covers_all_days=True)
        wh.con.execute("CHECKPOINT")
        events_mb = os.path.getsize(path) / 1e6
        coders = _coders(wh)
        fp = coders_fingerprint(coders)
        n_kernel, t_kernel = _kernel(wh, coders)
        last = cfg.data_end
        t0 = time.perf_counter()
        build = build_profiles_window(wh, coders, HALF_LIVES, cfg.data_start, last, cfg.data_start, fp)
        t_window = time.perf_counter() - t0
        t0 = time.perf_counter()
        day = build_profiles_window(wh, coders, HALF_LIVES, last, cfg.end_exclusive, cfg.data_start, fp)
        t_day = time.perf_counter() - t0
        wh.con.execute("CHECKPOINT")
        total_mb = os.path.getsize(path) / 1e6
        stats = wh.fetch_df("SELECT count(*) AS n, sum(len(dims)) AS nnz FROM behavioral_profiles").iloc[0]
        dates = [cfg.data_start + dt.timedelta(days=56 + 7 * i) for i in range(40)]
        t0 = time.perf_counter()
        n_snap = sum(len(ids) for _, ids, _ in iter_profiles(wh, coders, dates))
        t_replay = time.perf_counter() - t0
        wh.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    layout = ProfileLayout.from_coders(coders, HALF_LIVES)
    rows = [
        (
            "kernel: ProfileState.add_day, every day",
            f"{n_kernel:,} events",
            f"{t_kernel:.2f} s",
            f"{n_kernel / t_kernel / 1e6:.2f} M events/s",
        ),
        (
            "behavioral_profiles window (read, encode, kernel, write)",
            f"{build.events:,} events, {build.days} days",
            f"{t_window:.2f} s",
            f"{build.events / t_window / 1e6:.2f} M events/s",
        ),
        (
            "one more day, forward from the stored rows",
            f"{day.events:,} events",
            f"{t_day:.2f} s",
            f"{day.rows} rows written",
        ),
        (
            "replay of 40 weekly dates (task inputs)",
            f"{n_snap:,} client profiles",
            f"{t_replay:.2f} s",
            f"{n_snap / t_replay / 1e3:.0f} k profiles/s",
        ),
    ]
    table = "\n".join(
        ["| step | work | wall | rate |", "| --- | --- | --- | --- |", *(f"| {' | '.join(r)} |" for r in rows)]
    )
    dense = int(stats["n"]) * layout.state_dim
    store = (
        f"Store: {int(stats['n']):,} rows (one per client), {int(stats['nnz']):,} non-zero entries of "
        f"{dense:,} dense ({int(stats['nnz']) / dense:.0%}). "
        f"DuckDB file: {events_mb:.0f} MB after ingest and join, {total_mb:.0f} MB with the profiles "
        f"(+{total_mb - events_mb:.0f} MB); source parquet {source_mb:.1f} MB, so {total_mb / source_mb:.1f}x. "
        f"Peak RSS {peak:.0f} MB."
    )
    config = (
        f"Full Complete Journey, sketch columns {list(COLUMNS)}, depth {DEPTH}, width {2**BITS}, half-lives "
        f"{HALF_LIVES}: state {layout.state_dim} float32 per client. numpy {np.__version__}, "
        f"{os.cpu_count()} cores, one process."
    )
    text = f"{config}\n\n{table}\n\n{store}\n"
    print(text)
    if args.out:
        Path(args.out).write_text("# Profile store benchmark\n\n" + text, encoding="utf-8")


if __name__ == "__main__":
    main()
