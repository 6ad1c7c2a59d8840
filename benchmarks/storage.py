"""Benchmark: the DuckDB file against the source parquet, through Dagster on the full Complete
Journey: ingest (raw events, attributes, the join), then the representations (temporal graph,
entity embeddings, sketch coders, behavioral profiles). After each stage: the file size (after a
CHECKPOINT) and its ratio to the source parquet; at the end, each table's share.

    python benchmarks/storage.py [--dataset data/completejourney/dataset.yaml] [--home benchmarks/out/storage]

A table's share is estimated from DuckDB's storage info: each column segment counts the bytes from
its offset to the next segment's in the same block (the last one to the block's end), so it is an
upper bound for tables whose segments share a block with free space."""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parents[1]


def table_mb(path: Path) -> dict[str, float]:
    """Estimated MB per table of the DuckDB file at `path` (see the module docstring)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        block = con.execute("SELECT block_size FROM pragma_database_size()").fetchall()[0][0]
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        by_block: dict[int, list[tuple[str, int, int]]] = defaultdict(list)
        for t in tables:
            rows = con.execute(
                "SELECT block_id, block_offset, len(coalesce(additional_block_ids, [])) "
                "FROM pragma_storage_info(?) WHERE persistent AND block_id >= 0",
                [t],
            ).fetchall()
            for block_id, offset, extra in rows:
                by_block[block_id].append((t, offset, extra))
    finally:
        con.close()
    size: dict[str, float] = defaultdict(float)
    for segments in by_block.values():
        segments.sort(key=lambda s: s[1])
        ends = [s[1] for s in segments[1:]] + [block]
        for (t, offset, extra), end in zip(segments, ends, strict=True):
            size[t] += end - offset + extra * block
    return {t: v / 1e6 for t, v in sorted(size.items(), key=lambda x: -x[1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(REPO / "data" / "completejourney" / "dataset.yaml"))
    parser.add_argument("--home", default=str(REPO / "benchmarks" / "out" / "storage"))
    parser.add_argument("--out", help="also write the text to this markdown file")
    args = parser.parse_args(argv)
    home = Path(args.home).resolve()
    if home.exists():
        shutil.rmtree(home)
    (home / "dagster").mkdir(parents=True)
    os.environ.update(
        BM_HOME=str(home), BM_DATASET=str(Path(args.dataset).resolve()), DAGSTER_HOME=str(home / "dagster")
    )

    from dagster import DagsterInstance, materialize

    from bm_assets.config import load_dataset_config
    from bm_assets.definitions import build_definitions

    cfg = load_dataset_config(args.dataset)
    source_mb = sum(p.stat().st_size for p in Path(cfg.base_dir).glob("*.parquet")) / 1e6
    defs = build_definitions(args.dataset)
    instance = DagsterInstance.ephemeral()
    window = {
        "dagster/asset_partition_range_start": cfg.data_start.isoformat(),
        "dagster/asset_partition_range_end": cfg.data_end.isoformat(),
    }
    stages = [
        (
            "ingest and join",
            ["raw_events", "raw_events_quarantine", "client_properties", "product_catalog", "events_denormalized"],
        ),
        ("representations", ["temporal_graph", "entity_embeddings", "sketch_coders", "behavioral_profiles"]),
    ]
    database = home / "bm_assets.duckdb"
    lines = ["| after | time s | DuckDB MB | × source parquet |", "| --- | --- | --- | --- |"]
    for name, selection in stages:
        start = time.perf_counter()
        result = materialize(
            list(defs.assets),
            selection=selection,
            resources=defs.resources,
            instance=instance,
            tags=window,
            raise_on_error=False,
        )
        seconds = time.perf_counter() - start
        if not result.success:
            print(f"{name}: FAILED")
            return 1
        con = duckdb.connect(str(database))
        con.execute("CHECKPOINT")
        con.close()
        mb = database.stat().st_size / 1e6
        lines.append(f"| {name} | {seconds:.1f} | {mb:.1f} | {mb / source_mb:.2f}x |")
    shares = table_mb(database)
    table = ["| table | MB (estimated) |", "| --- | --- |"]
    table += [f"| {t} | {v:.1f} |" for t, v in shares.items() if v >= 0.5]
    text = (
        f"{cfg.name}: source parquet {source_mb:.1f} MB ({Path(cfg.base_dir).resolve()}), through Dagster in one "
        f"process.\n\n" + "\n".join(lines) + "\n\nTables of 0.5 MB or more at the end:\n\n" + "\n".join(table) + "\n"
    )
    print(text)
    if args.out:
        title = "# Storage benchmark: the DuckDB file against the source\n\n"
        Path(args.out).write_text(title + text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
