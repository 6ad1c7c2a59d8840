"""Benchmark of the behavioral profiles, kernel and store, in one run:

1. The full Complete Journey at its production configuration (data/completejourney's dataset.yaml
   with the columns tasks.yaml targets: every sketch column, every half-life), one process:
   - kernel, window pass: ProfileState.add_events over the whole log (a backfill or a replay);
   - kernel, daily: ProfileState.add_day once per day (a daily partition);
   - the naive loop of the EMDE workshop at the same configuration (per client, per event: decay
     the whole sketch, then add one per depth level and column), timed on the first clients;
   - behavioral_profiles end to end on DuckDB (read the events, encode, kernel, write the sparse
     rows in one transaction), one more day forward, a replay of 40 weekly dates (the task
     inputs), and the DuckDB file against the source parquet.
2. Synthetic logs (benchmarks/synthetic.py; sketch item_id only), one process per size pinned to
   one core: kernel time per event across sizes (linear = constant).

    python benchmarks/profiles.py [--sizes 1000000,10000000] [--out benchmarks/RESULTS_profiles.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bm_assets.core.profiles import ProfileLayout, ProfileState, sparse_rows  # noqa: E402
from bm_assets.core.sketches import fit_sketch_coder  # noqa: E402

DATASET = HERE.parent / "data" / "completejourney" / "dataset.yaml"
SEED = 0


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _naive(
    rows, days, codes: dict[str, np.ndarray], layout: ProfileLayout, max_events: int
) -> tuple[int, float, float]:
    """The workshop's loop on the clients whose events come first in row order, up to
    max_events: per client, per event, decay the whole sketch (every half-life and column) by the
    days elapsed, then add one in each level's bucket of each column."""
    order = np.argsort(rows, kind="stable")  # per client, in time order
    sel = order[:max_events]
    sel = sel[rows[sel] < rows[sel[-1]]] if len(order) > max_events else sel
    decay = np.array([0.5 ** (1 / h) for h in layout.half_lives_days])
    block = layout.depth * layout.width
    cols = list(layout.columns)
    client, day = rows[sel].tolist(), days[sel].tolist()
    code = np.concatenate([codes[c][sel] for c in cols], axis=1).tolist()
    t0, c0 = time.perf_counter(), time.thread_time()
    current, sketch, last = -1, None, 0
    for c, d, cs in zip(client, day, code, strict=True):
        if c != current:
            current, sketch, last = c, np.zeros((len(decay), len(cols) * block)), d
        sketch *= (decay ** (d - last))[:, None]
        for j, b in enumerate(cs):
            if b >= 0:
                sketch[:, (j // layout.depth) * block + (j % layout.depth) * layout.width + b] += 1.0
        last = d
    return len(sel), time.perf_counter() - t0, time.thread_time() - c0


def _warm_up(layout: ProfileLayout, codes, rows, days, values) -> None:
    """One tiny update and one tiny sparse row first, so the timings leave out loading the
    compiled code (once per process)."""
    state = ProfileState(layout, int(rows[:10].max()) + 1, ref_day=int(days[:10].min()))
    state.add_events(days[:10], rows[:10], {c: v[:10] for c, v in codes.items()}, values[:10])
    sparse_rows(np.array(["c"]), days[:1], state.state[:1])


def cj_worker(naive_events: int) -> dict:
    from bm_assets.core.attributes import build_client_properties, build_product_catalog
    from bm_assets.core.denormalize import denormalize_window
    from bm_assets.core.ingest import ingest_window
    from bm_assets.core.profiles import build_profiles_window, encode_events, iter_profiles
    from bm_assets.core.sketches import coders_fingerprint
    from bm_assets.core.tasks import load_dataset_for_tasks
    from bm_assets.core.warehouse import DuckDBWarehouse

    cfg = load_dataset_for_tasks(DATASET)
    rep = cfg.representation
    columns, half_lives = rep.sketch_columns, rep.profile.half_lives_days
    source_mb = sum(p.stat().st_size for p in Path(cfg.base_dir).glob("*.parquet")) / 1e6
    out: dict = {"columns": columns, "depth": rep.sketch.depth, "width": rep.sketch.width, "half_lives": half_lives}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cj.duckdb")
        wh = DuckDBWarehouse(path)
        ingest_window(wh, cfg, cfg.data_start, cfg.end_exclusive)
        build_client_properties(wh, cfg)
        build_product_catalog(wh, cfg)
        denormalize_window(wh, cfg.data_start, cfg.end_exclusive, covers_all_days=True)
        wh.con.execute("CHECKPOINT")
        events_mb = os.path.getsize(path) / 1e6
        rng = np.random.default_rng(SEED)
        coders = {}
        for c in columns:  # random embeddings: the cost does not depend on where they come from
            # in id order, so each id gets the same vector (and the store the same entries) every run
            ids = wh.fetch_df(
                f'SELECT DISTINCT CAST("{c}" AS VARCHAR) AS v FROM events_denormalized WHERE "{c}" IS NOT NULL '
                "ORDER BY v"
            )["v"].to_numpy()
            emb = rng.standard_normal((len(ids), 64)).astype(np.float32)
            coders[c] = fit_sketch_coder(c, ids, emb, rep.sketch.depth, rep.sketch.bits, SEED)
        layout = ProfileLayout.from_coders(coders, half_lives)

        # the kernel alone: codes, rows and days precomputed, as the store's replay has them
        cols = ", ".join(f'CAST("{c}" AS VARCHAR) AS "{c}"' for c in columns)
        # in client order, then day, as the store's replay reads them (the daily pass re-sorts by day)
        ev = wh.fetch_df(
            f"SELECT client_id, event_date, value, {cols} FROM events_denormalized "
            "ORDER BY client_id, event_date, event_id"
        )
        codes = encode_events(coders, ev)
        _, rows = np.unique(ev["client_id"].astype(str).to_numpy(), return_inverse=True)
        days = ev["event_date"].to_numpy().astype("datetime64[D]").astype(np.int64)
        values = ev["value"].to_numpy()
        n_rows = int(rows.max()) + 1
        _warm_up(layout, codes, rows, days, values)
        first = int(days.min())
        state = ProfileState(layout, n_rows, ref_day=first)
        state.state.fill(0.0)  # first touch of the pages, apart from the timing
        t0, c0 = time.perf_counter(), time.thread_time()
        state.add_events(days, rows, codes, values)
        out["kernel_window_s"], out["kernel_window_cpu_s"] = time.perf_counter() - t0, time.thread_time() - c0
        state = ProfileState(layout, n_rows, ref_day=first)
        state.state.fill(0.0)
        by_day = np.argsort(days, kind="stable")
        d_rows, d_days, d_values = rows[by_day], days[by_day], values[by_day]
        d_codes = {c: v[by_day] for c, v in codes.items()}
        bounds = np.searchsorted(d_days, np.arange(first, d_days[-1] + 2))
        t0, c0 = time.perf_counter(), time.thread_time()
        for i in range(len(bounds) - 1):
            sl = slice(bounds[i], bounds[i + 1])
            state.add_day(first + i, d_rows[sl], {c: v[sl] for c, v in d_codes.items()}, d_values[sl])
        out["kernel_daily_s"], out["kernel_daily_cpu_s"] = time.perf_counter() - t0, time.thread_time() - c0
        out["kernel_events"], out["days"], out["clients"] = len(rows), len(bounds) - 1, n_rows
        out["naive_events"], out["naive_s"], out["naive_cpu_s"] = _naive(rows, days, codes, layout, naive_events)
        del ev, codes, state

        fp = coders_fingerprint(coders)
        t0, c0 = time.perf_counter(), time.process_time()
        build = build_profiles_window(wh, coders, half_lives, cfg.data_start, cfg.data_end, cfg.data_start, fp)
        out["window_s"], out["window_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
        out["window_events"], out["window_days"] = build.events, build.days
        t0 = time.perf_counter()
        day = build_profiles_window(wh, coders, half_lives, cfg.data_end, cfg.end_exclusive, cfg.data_start, fp)
        out["day_s"], out["day_events"], out["day_rows"] = time.perf_counter() - t0, day.events, day.rows
        wh.con.execute("CHECKPOINT")
        total_mb = os.path.getsize(path) / 1e6
        stats = wh.fetch_df("SELECT count(*) AS n, sum(len(dims)) AS nnz FROM behavioral_profiles").iloc[0]
        dates = [cfg.data_start + dt.timedelta(days=56 + 7 * i) for i in range(40)]
        t0 = time.perf_counter()
        out["replay_profiles"] = sum(len(ids) for _, ids, _ in iter_profiles(wh, coders, dates))
        out["replay_s"] = time.perf_counter() - t0
        wh.close()
    out.update(
        state_dim=layout.state_dim,
        stored_rows=int(stats["n"]),
        nnz=int(stats["nnz"]),
        events_mb=events_mb,
        total_mb=total_mb,
        source_mb=source_mb,
        peak_rss_mb=_rss_mb(),
    )
    return out


def synthetic_worker(n_events: int) -> dict:
    from synthetic import generate

    log = generate(n_events, max(n_events // 10, 1), 100_000, seed=SEED)
    n_clients, n_items = int(log["client"].max()) + 1, int(log["item"].max()) + 1
    ids = np.char.add("i", np.arange(n_items).astype(str))
    emb = np.random.default_rng(SEED).standard_normal((n_items, 64)).astype(np.float32)
    item_codes = fit_sketch_coder("item_id", ids, emb, 8, 6, SEED).encode(ids)
    layout = ProfileLayout(("item_id",), 8, 64, (7.0, 60.0))
    rows, days = log["client"].astype(np.int64), log["day"].astype(np.int64)
    codes = {"item_id": item_codes[log["item"]]}
    _warm_up(layout, codes, rows, days, log["value"])
    state = ProfileState(layout, n_clients, ref_day=0)
    t0 = time.perf_counter()
    state.state.fill(0.0)
    init_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.thread_time()
    state.add_events(days, rows, codes, log["value"])
    window_s, window_cpu_s = time.perf_counter() - t0, time.thread_time() - c0
    return {
        "events": n_events,
        "clients": n_clients,
        "state_mb": state.state.nbytes / 2**20,
        "init_s": init_s,
        "window_s": window_s,
        "window_cpu_s": window_cpu_s,
        "peak_rss_mb": _rss_mb(),
    }


def _cj_text(r: dict) -> str:
    k = r["kernel_events"]

    def rate(n: float, seconds: float, unit: float = 1e6, suffix: str = "M") -> str:
        return f"{n / seconds / unit:.2f} {suffix}"

    naive_cpu = r["naive_events"] / r["naive_cpu_s"]
    window_cpu = k / r["kernel_window_cpu_s"]
    rows = [
        (
            "kernel, window pass: ProfileState.add_events over the whole log",
            f"{k:,} events",
            f"{r['kernel_window_s']:.2f} s ({r['kernel_window_cpu_s']:.2f} s)",
            f"{rate(k, r['kernel_window_s'])} (**{rate(k, r['kernel_window_cpu_s'])}**) events/s",
        ),
        (
            "kernel, daily: ProfileState.add_day once per day",
            f"{r['days']} days",
            f"{r['kernel_daily_s']:.2f} s ({r['kernel_daily_cpu_s']:.2f} s)",
            f"{rate(k, r['kernel_daily_s'])} ({rate(k, r['kernel_daily_cpu_s'])}) events/s",
        ),
        (
            "naive loop (EMDE workshop), same configuration",
            f"first {r['naive_events']:,} events",
            f"{r['naive_s']:.2f} s ({r['naive_cpu_s']:.2f} s)",
            f"{rate(r['naive_events'], r['naive_cpu_s'], 1e3, 'k')} events/s (CPU): window pass "
            f"**{window_cpu / naive_cpu:,.0f}x**",
        ),
        (
            "behavioral_profiles end to end (read, encode, kernel, write)",
            f"{r['window_events']:,} events, {r['window_days']} days",
            f"{r['window_s']:.2f} s ({r['window_cpu_s']:.2f} s, all threads)",
            f"**{rate(r['window_events'], r['window_s'])}** events/s",
        ),
        (
            "one more day, forward from the stored rows",
            f"{r['day_events']:,} events",
            f"{r['day_s']:.2f} s",
            f"{r['day_rows']} rows written",
        ),
        (
            "replay of 40 weekly dates (task inputs)",
            f"{r['replay_profiles']:,} client profiles",
            f"{r['replay_s']:.2f} s",
            f"{rate(r['replay_profiles'], r['replay_s'], 1e3, 'k')} profiles/s",
        ),
    ]
    table = "\n".join(
        [
            "| step | work | wall (CPU) | rate, wall (CPU) |",
            "| --- | --- | --- | --- |",
            *(f"| {' | '.join(x)} |" for x in rows),
        ]
    )
    dense = r["stored_rows"] * r["state_dim"]
    return (
        f"Full Complete Journey at the production configuration: sketch columns {r['columns']}, depth "
        f"{r['depth']}, width {r['width']}, half-lives {r['half_lives']}: {r['state_dim']} state entries per "
        f"client, {r['clients']:,} clients. One process, numpy {np.__version__}; the kernel is one thread (its CPU "
        f"time is the per-core figure, apart from other jobs on the machine); DuckDB uses the {os.cpu_count()} "
        f"cores.\n\n{table}\n\n"
        f"Store: {r['stored_rows']:,} rows (one per client), {r['nnz']:,} non-zero entries of {dense:,} dense "
        f"({r['nnz'] / dense:.0%}). DuckDB file: {r['events_mb']:.0f} MB after ingest and join, "
        f"{r['total_mb']:.0f} MB with the profiles (+{r['total_mb'] - r['events_mb']:.0f} MB); source parquet "
        f"{r['source_mb']:.1f} MB, so {r['total_mb'] / r['source_mb']:.1f}x. Peak RSS {r['peak_rss_mb']:.0f} MB.\n"
    )


def _synthetic_text(results: list[dict]) -> str:
    lines = [
        "| events | clients | kernel window pass s (CPU) | events/s (CPU) | µs/event (CPU) | state MB (first touch s) "
        "| peak RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['events']:,} | {r['clients']:,} | {r['window_s']:.2f} ({r['window_cpu_s']:.2f}) | "
            f"{r['events'] / r['window_cpu_s'] / 1e6:.2f} M | {r['window_cpu_s'] / r['events'] * 1e6:.3f} | "
            f"{r['state_mb']:.0f} ({r['init_s']:.2f}) | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    return (
        "Synthetic logs (clients = events / 10, 100k items; sketch item_id depth 8 x width 64, half-lives 7 and "
        "60 days: 1030 state entries per client), one process per size on one core (taskset):\n\n"
        + "\n".join(lines)
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,10000000", help="synthetic log sizes (events); empty: none")
    parser.add_argument("--naive-events", type=int, default=20_000)
    parser.add_argument("--out", help="also write the text to this markdown file")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "EVENTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        case, n = args.worker
        print(json.dumps(cj_worker(args.naive_events) if case == "cj" else synthetic_worker(int(n))))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def run(cmd: list[str]) -> dict:
        return json.loads(
            subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
        )

    me = [sys.executable, __file__]
    parts = [_cj_text(run([*me, "--worker", "cj", "0", "--naive-events", str(args.naive_events)]))]
    sizes = [int(float(s)) for s in args.sizes.split(",") if s]
    if sizes:
        parts.append(
            _synthetic_text([run(["taskset", "-c", "0", *me, "--worker", "synthetic", str(n)]) for n in sizes])
        )
    text = "\n".join(parts)
    print(text)
    if args.out:
        Path(args.out).write_text("# Profile benchmark: kernel and store\n\n" + text, encoding="utf-8")


if __name__ == "__main__":
    main()
