"""Join benchmark: ingesting order lines whose client and time sit in another file (`events[].join`),
against ingesting the same lines already joined in one file (the baseline).

The full Complete Journey purchases are split, as order exports often come, into lines.parquet
(basket_id, product_id, quantity, sales_value: 1,469,307 rows) and baskets.parquet (basket_id,
household_id, store_id, transaction_timestamp: one row per basket); the baseline reads
joined.parquet, the two already joined. Both load every day of 2017 into raw_events.

    python benchmarks/ingest_join.py [--transactions ../shared/data/completejourney/transactions.parquet]

Each variant runs in its own process so peak RSS is its own. Prints a markdown table and checks
that both load the same events."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TRANSACTIONS = REPO.parent / "shared" / "data" / "completejourney" / "transactions.parquet"
LINE_COLUMNS = ("basket_id", "product_id", "quantity", "sales_value")
BASKET_COLUMNS = ("household_id", "store_id", "transaction_timestamp")


def _split(transactions: str, folder: Path) -> None:
    """lines.parquet, baskets.parquet (one row per basket: its first time and store) and
    joined.parquet (the lines with their basket's columns)."""
    import duckdb

    con = duckdb.connect()
    con.execute(
        f"CREATE TABLE t AS SELECT {', '.join(LINE_COLUMNS + BASKET_COLUMNS)} FROM read_parquet('{transactions}')"
    )
    con.execute(
        "CREATE TABLE b AS SELECT basket_id, any_value(household_id) AS household_id, min(store_id) AS store_id, "
        "min(transaction_timestamp) AS transaction_timestamp FROM t GROUP BY basket_id"
    )
    con.execute(f"COPY (SELECT {', '.join(LINE_COLUMNS)} FROM t) TO '{folder / 'lines.parquet'}'")
    con.execute(f"COPY b TO '{folder / 'baskets.parquet'}'")
    con.execute(
        f"COPY (SELECT l.*, b.* EXCLUDE (basket_id) FROM (SELECT {', '.join(LINE_COLUMNS)} FROM t) l "
        f"JOIN b USING (basket_id)) TO '{folder / 'joined.parquet'}'"
    )


def _dataset(folder: Path, variant: str) -> Path:
    source = {
        "name": "purchase",
        "path": "joined.parquet" if variant == "one_file" else "lines.parquet",
        "client_id": "household_id",
        "item_id": "product_id",
        "timestamp": {"column": "transaction_timestamp"},
        "quantity": "quantity",
        "value": "sales_value",
        "basket_id": "basket_id",
        "context": {"store_id": "categorical"},
    }
    if variant == "join":
        source["join"] = [{"path": "baskets.parquet", "key": "basket_id"}]
    cfg = {
        "name": "join_bench",
        "data_start": "2017-01-01",
        "data_end": "2018-01-01",
        "temporal": {"training_cutoff": "2017-10-01", "test_start": "2017-11-15", "test_end": "2018-01-01"},
        "events": [source],
    }
    path = folder / f"{variant}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _child(variant: str, folder: Path) -> None:
    from bm_assets.config import load_dataset_config
    from bm_assets.core.ingest import ingest_window
    from bm_assets.core.warehouse import DuckDBWarehouse

    cfg = load_dataset_config(_dataset(folder, variant))
    db = folder / f"{variant}.duckdb"
    if db.exists():
        os.remove(db)
    wh = DuckDBWarehouse(str(db))
    t, cpu = time.perf_counter(), time.process_time()
    report = ingest_window(wh, cfg, cfg.data_start, cfg.end_exclusive)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    digest = wh.fetch_df(
        "SELECT count(*) AS n, sum(hash(client_id, item_id, event_time, value, basket_id, store_id)) AS h "
        "FROM raw_events"
    ).iloc[0]
    wh.close()
    out = {
        "seconds": seconds,
        "cpu": cpu,
        "rows": report.rows_loaded,
        "quarantined": report.rows_quarantined,
        "digest": [int(digest["n"]), int(digest["h"])],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", default=str(DEFAULT_TRANSACTIONS))
    parser.add_argument("--child", choices=["one_file", "join"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, Path(args.folder))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _split(args.transactions, folder)
        results = {}
        for variant in ("one_file", "join"):
            proc = subprocess.run(
                [sys.executable, __file__, "--child", variant, "--folder", str(folder)],
                check=True,
                capture_output=True,
                text=True,
                cwd=REPO,
            )
            results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    base, base_cpu = results["one_file"]["seconds"], results["one_file"]["cpu"]
    print(f"Join benchmark: {args.transactions}, split into lines and baskets\n")
    print("| variant | rows loaded | wall s | CPU s | rows/s | peak RSS (MB) | wall / one file | CPU / one file |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    labels = {
        "one_file": "one file: the lines already joined (baseline)",
        "join": "lines.parquet + join: baskets.parquet by basket_id",
    }
    for variant, r in results.items():
        print(
            f"| {labels[variant]} | {r['rows']:,} | {r['seconds']:.2f} | {r['cpu']:.2f} "
            f"| {r['rows'] / r['seconds']:,.0f} | {r['peak_rss_mb']:.0f} | {r['seconds'] / base:.2f}x "
            f"| {r['cpu'] / base_cpu:.2f}x |"
        )
    same = results["one_file"]["digest"] == results["join"]["digest"]
    print(f"\nthe same events loaded (count and hash of client, item, time, value, basket, store): {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
