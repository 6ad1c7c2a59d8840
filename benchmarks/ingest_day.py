"""One new day's ingest as the history grows: a synthetic source with one file per day, 30 or 365
days of it already ingested, then the next day's file arrives and its partition is ingested.

    python benchmarks/ingest_day.py [--events-per-day 10000] [--histories 30 365] [--repeats 5]

Two source formats: CSV with an event_id column (a new file's span is learned by scanning it
once) and Parquet without one (spans from the footer statistics, no data read). Each history
runs in its own process: the history is ingested in one backfill, then `--repeats` new days
arrive one after the other (so the history grows by at most that many days). `new day s` is the
median first run of a new day's partition (it indexes the new file, then stages it); `re-run s`
the median of re-running it; the CPU columns the same in CPU time of the process (all threads),
steadier than wall time on a shared machine. Both loaded row counts are checked. Prints a
markdown table."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
START = dt.date(2024, 1, 1)


def _day_frame(day_index: int, n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed + day_index)
    day = pd.Timestamp(START + dt.timedelta(days=day_index))
    seconds = np.sort(rng.integers(0, 86_400, n))
    first_id = day_index * n
    return pd.DataFrame(
        {
            "event_id": [f"{first_id + i:012d}" for i in range(n)],
            "client": rng.integers(0, 5_000, n).astype(str),
            "item": rng.integers(0, 20_000, n).astype(str),
            "ts": day + pd.to_timedelta(seconds, unit="s"),
            "qty": rng.integers(1, 4, n).astype(float),
            "amount": np.round(rng.gamma(2.0, 3.0, n), 2),
        }
    )


def _write_day(folder: Path, fmt: str, day_index: int, n: int) -> None:
    df = _day_frame(day_index, n)
    name = folder / "events" / f"day_{day_index:04d}.{fmt}"
    if fmt == "csv":
        df.assign(ts=df["ts"].dt.strftime("%Y-%m-%d %H:%M:%S")).to_csv(name, index=False)
    else:
        df.drop(columns="event_id").to_parquet(name, index=False)


def _dataset(folder: Path, fmt: str, history: int, new_days: int) -> Path:
    """A dataset whose range is the history plus the new days."""
    (folder / "events").mkdir(parents=True)
    (folder / "items.csv").write_text("sku,brand\n1,b1\n")
    (folder / "clients.csv").write_text("cid,segment\n1,x\n")
    source = {
        "name": "purchase",
        "path": f"events/*.{fmt}",
        "client_id": "client",
        "item_id": "item",
        "timestamp": {"column": "ts", **({"format": "%Y-%m-%d %H:%M:%S"} if fmt == "csv" else {})},
        "quantity": "qty",
        "value": "amount",
        **({"event_id": "event_id"} if fmt == "csv" else {}),
    }
    cfg = {
        "name": f"ingest_day_{fmt}_{history}",
        "data_start": str(START),
        "data_end": str(START + dt.timedelta(days=history + new_days - 1)),
        "temporal": {"training_cutoff": "2024-01-20", "test_start": "2024-01-25", "test_end": "2024-01-31"},
        "events": [source],
        "clients": [{"name": "clients", "path": "clients.csv", "key": "cid", "columns": {"segment": "categorical"}}],
        "items": [{"name": "items", "path": "items.csv", "key": "sku", "columns": {"brand": "categorical"}}],
    }
    path = folder / "dataset.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _child(fmt: str, history: int, events_per_day: int, repeats: int) -> dict:
    from bm_assets.config import load_dataset_config
    from bm_assets.core.ingest import ingest_window
    from bm_assets.core.warehouse import DuckDBWarehouse

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cfg_path = _dataset(folder, fmt, history, repeats)
        for i in range(history):
            _write_day(folder, fmt, i, events_per_day)
        cfg = load_dataset_config(cfg_path)
        wh = DuckDBWarehouse(str(folder / "bench.duckdb"), threads=2)
        t = time.perf_counter()
        ingest_window(wh, cfg, cfg.data_start, cfg.end_exclusive)  # the history: one backfill of every day
        history_s = time.perf_counter() - t
        firsts, reruns = [], []  # (wall s, CPU s of this process, all threads)
        for k in range(repeats):
            _write_day(folder, fmt, history + k, events_per_day)  # the new day arrives
            day = cfg.data_start + dt.timedelta(days=history + k)
            t, cpu = time.perf_counter(), time.process_time()
            report = ingest_window(wh, cfg, day, day + dt.timedelta(days=1))
            firsts.append((time.perf_counter() - t, time.process_time() - cpu))
            t, cpu = time.perf_counter(), time.process_time()
            again = ingest_window(wh, cfg, day, day + dt.timedelta(days=1))
            reruns.append((time.perf_counter() - t, time.process_time() - cpu))
            assert again.rows_loaded == report.rows_loaded == events_per_day, (again, report)
        rows = wh.fetch_df("SELECT count(*) AS n FROM raw_events")["n"].iloc[0]
        assert rows == events_per_day * (history + repeats), rows
        wh.close()
    src = report.sources[0]
    return {
        "format": fmt,
        "history": history,
        "files": src.files_total,
        "files_read": len(src.files_read),
        "history_s": history_s,
        "first_s": statistics.median(w for w, _ in firsts),
        "first_cpu": statistics.median(c for _, c in firsts),
        "rerun_cpu": statistics.median(c for _, c in reruns),
        "rerun_s": statistics.median(w for w, _ in reruns),
        "rows_loaded": report.rows_loaded,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events-per-day", type=int, default=10_000)
    parser.add_argument("--histories", type=int, nargs="+", default=[30, 365])
    parser.add_argument("--formats", nargs="+", default=["csv", "parquet"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], int(args.child[1]), args.events_per_day, args.repeats)))
        return
    print(f"One new day's ingest, {args.events_per_day} events a day, one file a day\n")
    print(
        "| format | history days | files (at the end) | files read | new day s | re-run s | new day CPU s "
        "| re-run CPU s | vs 30: new day | re-run | new day CPU | re-run CPU | history backfill s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for fmt in args.formats:
        base = None
        for history in args.histories:
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    fmt,
                    str(history),
                    "--events-per-day",
                    str(args.events_per_day),
                    "--repeats",
                    str(args.repeats),
                ],
                check=True,
                capture_output=True,
                text=True,
                cwd=REPO,
            )
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            base = base or r
            ratios = " | ".join(f"{r[k] / base[k]:.2f}" for k in ("first_s", "rerun_s", "first_cpu", "rerun_cpu"))
            print(
                f"| {fmt} | {history} | {r['files']} | {r['files_read']} | {r['first_s']:.3f} | {r['rerun_s']:.3f} "
                f"| {r['first_cpu']:.3f} | {r['rerun_cpu']:.3f} | {ratios} | {r['history_s']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
