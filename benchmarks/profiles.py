"""Benchmark of the daily profile update (bm_assets.core.profiles.ProfileState) on the full
Complete Journey and on synthetic logs (benchmarks/synthetic.py), against the naive loop of the
EMDE workshop (per client, per event: decay the whole sketch, then add one per depth level).

Each case runs in its own process pinned to one core, so peak RSS and time are its own. Prints a
markdown table (and writes it with --out).

    python benchmarks/profiles.py --sizes 1000000,3000000,10000000 --out benchmarks/RESULTS_profiles.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bm_assets.core.profiles import ProfileLayout, ProfileState  # noqa: E402
from bm_assets.core.sketches import fit_sketch_coder  # noqa: E402

CJ = Path(os.environ.get("CJ_DIR", HERE.parent.parent / "shared" / "data" / "completejourney"))
DEPTH, BITS, DIM, HALF_LIVES, SEED = 8, 6, 64, (7.0, 60.0), 0


def _log_cj() -> dict[str, np.ndarray]:
    import duckdb

    df = duckdb.execute(
        "SELECT household_id, product_id, "
        "date_diff('day', DATE '2017-01-01', CAST(transaction_timestamp AS DATE)) AS day, sales_value "
        f"FROM read_parquet('{CJ / 'transactions.parquet'}') ORDER BY transaction_timestamp"
    ).df()
    _, client = np.unique(df["household_id"].to_numpy(), return_inverse=True)
    _, item = np.unique(df["product_id"].to_numpy(), return_inverse=True)
    return {
        "client": client,
        "item": item,
        "day": df["day"].to_numpy(),
        "value": df["sales_value"].to_numpy(),
    }


def _item_codes(n_items: int) -> np.ndarray:
    """int32[n_items, depth]: EMDE codes of random item embeddings (throughput does not depend on
    where the embeddings come from)."""
    rng = np.random.default_rng(SEED)
    ids = np.char.add("i", np.arange(n_items).astype(str))
    coder = fit_sketch_coder(
        "item_id", ids, rng.standard_normal((n_items, DIM)).astype(np.float32), DEPTH, BITS, SEED
    )
    return coder.encode(ids)


def _naive(log: dict[str, np.ndarray], codes: np.ndarray, width: int, max_events: int) -> tuple[int, float]:
    """The workshop's loop on the clients whose events come first in id order, up to max_events:
    per client, per event, decay the whole sketch by the days elapsed, then add one per level."""
    order = np.argsort(log["client"], kind="stable")  # per client, in time order
    sel = order[:max_events]
    sel = sel[log["client"][sel] < log["client"][sel[-1]]] if len(order) > max_events else sel
    decay = np.array([0.5 ** (1 / h) for h in HALF_LIVES])
    client, item, day = log["client"][sel].tolist(), log["item"][sel].tolist(), log["day"][sel].tolist()
    t0 = time.perf_counter()
    current, sketch, last, out = -1, None, 0, {}
    for c, i, d in zip(client, item, day, strict=True):
        if c != current:
            if sketch is not None:
                out[current] = sketch
            current, sketch, last = c, np.zeros((len(HALF_LIVES), DEPTH * width)), d
        sketch *= (decay ** (d - last))[:, None]
        for level in range(DEPTH):
            sketch[:, level * width + codes[i, level]] += 1.0
        last = d
    return len(sel), time.perf_counter() - t0


def worker(case: str, n_events: int, naive_events: int) -> dict:
    if case == "cj":
        log = _log_cj()
    else:
        from synthetic import generate

        log = generate(n_events, max(n_events // 10, 1), 100_000, seed=SEED)
    n_clients, n_items = int(log["client"].max()) + 1, int(log["item"].max()) + 1
    codes = _item_codes(n_items)
    layout = ProfileLayout(("item_id",), DEPTH, 2**BITS, HALF_LIVES)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    state = ProfileState(layout, n_clients, ref_day=0)
    state.state.fill(0.0)  # first touch of the pages, timed apart from the updates
    init_s = time.perf_counter() - t0
    bounds = np.searchsorted(log["day"], np.arange(int(log["day"].max()) + 2))
    t_update = t_snapshot = 0.0
    max_day_events = int(np.diff(bounds).max())
    for day in range(len(bounds) - 1):
        sl = slice(bounds[day], bounds[day + 1])
        t0 = time.perf_counter()
        rows = log["client"][sl].astype(np.int64)
        state.add_day(day, rows, {"item_id": codes[log["item"][sl]]}, log["value"][sl])
        t1 = time.perf_counter()
        state.snapshot(np.unique(rows), day)  # the rows a daily partition writes
        t_snapshot += time.perf_counter() - t1
        t_update += t1 - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_naive, t_naive = _naive(log, codes, 2**BITS, naive_events)
    n = len(log["client"])
    return {
        "case": case,
        "events": n,
        "clients": n_clients,
        "items": n_items,
        "days": len(bounds) - 1,
        "max_day_events": max_day_events,
        "state_mb": state.state.nbytes / 2**20,
        "init_s": init_s,
        "update_s": t_update,
        "snapshot_s": t_snapshot,
        "peak_rss_mb": peak,
        "rss_before_state_mb": rss_before,
        "naive_events": n_naive,
        "naive_s": t_naive,
    }


def _row(r: dict) -> str:
    naive_rate = r["naive_events"] / r["naive_s"]
    rate = r["events"] / r["update_s"]
    rate_rows = r["events"] / (r["update_s"] + r["snapshot_s"])
    return (
        f"| {r['case']} | {r['events']:,} | {r['clients']:,} | {r['items']:,} | {r['update_s']:.2f} | "
        f"{rate / 1e6:.2f} M | {r['update_s'] / r['events'] * 1e6:.3f} | {rate_rows / 1e6:.2f} M | "
        f"{naive_rate / 1e3:.0f} k ({r['naive_events']:,} ev) | {rate / naive_rate:.0f}x | "
        f"{r['events'] / naive_rate / 60:.1f} min | {r['state_mb']:.0f} ({r['init_s']:.2f} s) | "
        f"{r['peak_rss_mb']:.0f} |"
    )


HEADER = (
    "| log | events | clients | items | update s | events/s (update) | µs/event | events/s (update + daily "
    "rows) | naive loop events/s (measured on) | speed-up | naive, extrapolated | state MB (allocation s) "
    "| peak RSS MB |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000000,3000000", help="synthetic log sizes (events)")
    parser.add_argument("--naive-events", type=int, default=50_000)
    parser.add_argument("--no-cj", action="store_true", help="skip the Complete Journey case")
    parser.add_argument("--out", help="also write the table to this markdown file")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "EVENTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.naive_events)))
        return
    cases = ([] if args.no_cj or not CJ.exists() else [("cj", 0)]) + [
        ("synthetic", int(float(s))) for s in args.sizes.split(",")
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    results = []
    for case, n in cases:
        cmd = [
            "taskset",
            "-c",
            "0",
            sys.executable,
            __file__,
            "--worker",
            case,
            str(n),
            "--naive-events",
            str(args.naive_events),
        ]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(_row(results[-1]), file=sys.stderr)
    config = (
        f"One core (taskset), numpy {np.__version__}. Sketch column item_id, depth {DEPTH}, width {2**BITS}, "
        f"half-lives {list(HALF_LIVES)} days: state {2 * DEPTH * 2**BITS + 6} float32 per client. "
        "'update' = ProfileState.add_day over every day (scatter-add of each event's entries, codes "
        "gathered per event); 'daily rows' adds the snapshot of each day's active clients that a "
        "partition writes. Synthetic logs: clients = events / 10, 100k items."
    )
    table = "\n".join([HEADER, *(_row(r) for r in results)])
    per_m = [(r["events"], r["update_s"] / r["events"] * 1e6) for r in results if r["case"] == "synthetic"]
    linear = ", ".join(f"{n / 1e6:g}M: {us:.3f} µs/event" for n, us in per_m)
    text = f"{config}\n\n{table}\n\nTime per event across synthetic sizes (linear = constant): {linear}\n"
    print(text)
    if args.out:
        Path(args.out).write_text("# Profile update benchmark\n\n" + text, encoding="utf-8")


if __name__ == "__main__":
    main()
