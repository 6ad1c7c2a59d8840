"""Ingest benchmark: the full Complete Journey through raw_events + events_denormalized for
every day of 2017, against the floor of one bare DuckDB read_parquet -> join -> CREATE TABLE.

    python benchmarks/ingest.py [--dataset data/completejourney/dataset.yaml]

Each variant runs in its own process so peak RSS is its own. Prints a markdown table."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = REPO / "data" / "completejourney" / "dataset.yaml"


def _floor(dataset: str, db: str) -> dict:
    """One query: the same typed columns and joins, no validation, no partitions."""
    import duckdb

    from bm_assets.config import load_dataset_config

    cfg = load_dataset_config(dataset)
    tx = cfg.resolve(cfg.events[0].path)
    products = cfg.resolve(cfg.items[0].path)
    demo = cfg.resolve(cfg.clients[0].path)
    con = duckdb.connect(db)
    t, cpu = time.perf_counter(), time.process_time()
    con.execute(
        f"""CREATE TABLE floor AS
        SELECT CAST(t.household_id AS VARCHAR) AS client_id, CAST(t.product_id AS VARCHAR) AS item_id,
               t.transaction_timestamp AS event_time, CAST(t.transaction_timestamp AS DATE) AS event_date,
               CAST(t.quantity AS DOUBLE) AS quantity, t.sales_value AS value,
               CAST(t.store_id AS VARCHAR) AS store_id, CAST(t.basket_id AS VARCHAR) AS basket_id,
               p.* EXCLUDE (product_id), d.* EXCLUDE (household_id)
        FROM read_parquet('{tx}') t
        LEFT JOIN read_parquet('{products}') p USING (product_id)
        LEFT JOIN read_parquet('{demo}') d USING (household_id)"""
    )
    rows = con.execute("SELECT count(*) FROM floor").fetchall()[0][0]
    return {"seconds": time.perf_counter() - t, "cpu": time.process_time() - cpu, "rows": rows}


def _pipeline(dataset: str, db: str) -> dict:
    """What a single-run backfill of every day executes: ingest, attributes, the join."""
    from bm_assets.config import load_dataset_config
    from bm_assets.core.attributes import build_client_properties, build_product_catalog
    from bm_assets.core.denormalize import denormalize_window
    from bm_assets.core.ingest import ingest_window
    from bm_assets.core.warehouse import DuckDBWarehouse

    cfg = load_dataset_config(dataset)
    wh = DuckDBWarehouse(db)
    t, cpu = time.perf_counter(), time.process_time()
    report = ingest_window(wh, cfg, cfg.data_start, cfg.end_exclusive)
    t_ingest = time.perf_counter() - t
    build_client_properties(wh, cfg)
    build_product_catalog(wh, cfg)
    rows = denormalize_window(wh, cfg.data_start, cfg.end_exclusive, covers_all_days=True)
    return {
        "seconds": time.perf_counter() - t,
        "cpu": time.process_time() - cpu,
        "rows": rows,
        "rows_in": report.rows_in,
        "ingest_seconds": t_ingest,
        "quarantined": report.rows_quarantined,
    }


def _dagster(dataset: str, db: str) -> dict:
    """The same through Dagster: one single-run backfill over all 366 partitions."""
    from dagster import DagsterInstance, materialize

    from bm_assets.definitions import build_definitions
    from bm_assets.resources import DuckDBWarehouseResource

    defs = build_definitions(dataset, warehouse=DuckDBWarehouseResource(database=db))
    ingest = {"raw_events", "client_properties", "product_catalog", "events_denormalized"}
    assets = [a for a in defs.assets if any(k.to_user_string() in ingest for k in a.keys)]
    keys = [a for a in assets if a.partitions_def is not None][0].partitions_def.get_partition_keys()
    t, cpu = time.perf_counter(), time.process_time()
    result = materialize(
        assets,
        resources=defs.resources,
        instance=DagsterInstance.ephemeral(),
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
    )
    assert result.success
    import duckdb

    rows = duckdb.connect(db, read_only=True).execute("SELECT count(*) FROM events_denormalized").fetchall()[0][0]
    return {"seconds": time.perf_counter() - t, "cpu": time.process_time() - cpu, "rows": rows}


VARIANTS = {"floor": _floor, "pipeline": _pipeline, "dagster": _dagster}


def _child(variant: str, dataset: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = VARIANTS[variant](dataset, str(Path(tmp) / "bench.duckdb"))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET))
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.dataset)
        return
    results = {}
    for variant in VARIANTS:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", variant, "--dataset", args.dataset],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    floor, floor_cpu = results["floor"]["seconds"], results["floor"]["cpu"]
    print(f"Ingest benchmark: {args.dataset}\n")
    print("| variant | rows | wall s | CPU s | rows/s | peak RSS (MB) | wall / floor | CPU / floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    labels = {
        "floor": "floor: one DuckDB read_parquet -> join -> CREATE TABLE",
        "pipeline": "raw_events + quarantine + attributes + events_denormalized (core)",
        "dagster": "same, as one Dagster single-run backfill of 366 partitions",
    }
    for variant, r in results.items():
        print(
            f"| {labels[variant]} | {r['rows']:,} | {r['seconds']:.2f} | {r['cpu']:.2f} "
            f"| {r['rows'] / r['seconds']:,.0f} | {r['peak_rss_mb']:.0f} | {r['seconds'] / floor:.2f}x "
            f"| {r['cpu'] / floor_cpu:.2f}x |"
        )
    p = results["pipeline"]
    print(
        f"\nrows in {p['rows_in']:,} = loaded {p['rows']:,} + quarantined {p['quarantined']:,}; "
        f"ingest alone {p['ingest_seconds']:.2f} s"
    )


if __name__ == "__main__":
    main()
