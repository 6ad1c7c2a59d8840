"""Scale benchmark: synthetic logs (benchmarks/synthetic.py, 10 events per client, 100k items)
through ingest -> join -> profiles -> export of the profiles at the last day, with the core
functions the assets call (no Dagster; the model stages are left out). Each size runs in its own
process; per stage: wall, CPU, peak RSS of the process so far, bytes on disk; and the time per
event across sizes (linear = constant).

    python benchmarks/scale.py --sizes 1000000,3000000,10000000 [--out benchmarks/RESULTS_scale.md]
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

DEPTH, BITS, HALF_LIVES = 8, 6, [7.0, 60.0]
MEMORY_MB = 4096.0  # profile.memory_mb: one client shard's replay
DUCKDB_MEMORY = "6GB"  # DuckDB's own buffer limit (it spills beyond it); default would be 80% of RAM
START = dt.date(2017, 1, 1)


BLOCK = 5_000_000  # events generated and written per row group: generation memory stays flat


def write_log(n_events: int, folder: Path) -> Path:
    """The synthetic log as Parquet plus a dataset YAML mapping it (sketch column item_id).
    Written in blocks of BLOCK events, each with its own clients (the same 10 events per client
    on average), so generating 100M events holds one block at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from synthetic import generate

    writer = None
    n_blocks = max(1, -(-n_events // BLOCK))
    for b in range(n_blocks):
        n = min(BLOCK, n_events - b * BLOCK)
        log = generate(n, max(n // 10, 1), 100_000, seed=b)
        ts = (
            np.datetime64(START, "s")
            + log["day"].astype("timedelta64[D]").astype("timedelta64[s]")
            + log["second_of_day"].astype("timedelta64[s]")
        )
        table = pa.table(
            {
                "client": pa.array(np.char.add(f"c{b}_", log["client"].astype(str))),
                "item": pa.array(np.char.add("i", log["item"].astype(str))),
                "ts": pa.array(ts),
                "amount": pa.array(log["value"].astype(np.float64)),
            }
        )
        writer = writer or pq.ParquetWriter(folder / "events.parquet", table.schema)
        writer.write_table(table)
        del log, ts, table
    writer.close()
    (folder / "dataset.yaml").write_text(
        "name: scale\ndata_start: 2017-01-01\ndata_end: 2017-12-31\n"
        "temporal: {training_cutoff: 2017-10-01, test_start: 2017-11-15, test_end: 2018-01-01}\n"
        "events:\n  - {name: purchase, path: events.parquet, client_id: client, item_id: item,"
        " timestamp: {column: ts}, value: amount}\n"
        f"representation: {{graph: {{columns: [item_id]}}, sketch: {{depth: {DEPTH}, bits: {BITS}}}, "
        f"profile: {{half_lives_days: {HALF_LIVES}, memory_mb: {MEMORY_MB}}}}}\n"
    )
    return folder / "dataset.yaml"


def _usage() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_maxrss / 1024


def worker(n_events: int, folder: Path) -> dict:
    from bm_assets.config import load_dataset_config
    from bm_assets.core.attributes import build_client_properties, build_product_catalog
    from bm_assets.core.denormalize import denormalize_window
    from bm_assets.core.ingest import ingest_window
    from bm_assets.core.profiles import build_profiles_window, export_profiles
    from bm_assets.core.sketches import coders_fingerprint, fit_sketch_coder
    from bm_assets.core.warehouse import DuckDBWarehouse

    stages = []
    cfg = load_dataset_config(folder / "dataset.yaml")
    db = folder / "scale.duckdb"
    wh = DuckDBWarehouse(str(db))
    wh.con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
    wh.con.execute(f"SET temp_directory = '{folder / 'duckdb_tmp'}'")

    def stage(name: str, fn, files=()):
        cpu0, t0 = _usage()[0], time.perf_counter()
        out = fn()
        cpu1, peak = _usage()
        wh.con.execute("CHECKPOINT")
        disk = os.path.getsize(db) + sum(os.path.getsize(f) for f in files if os.path.exists(f))
        print(f"{n_events:,} {name}: {time.perf_counter() - t0:.1f} s, peak {peak:.0f} MB", file=sys.stderr)
        stages.append(
            {
                "stage": name,
                "wall_s": time.perf_counter() - t0,
                "cpu_s": cpu1 - cpu0,
                "peak_rss_mb": peak,
                "disk_mb": disk / 1e6,
            }
        )
        return out

    def ingest():
        ingest_window(wh, cfg, cfg.data_start, cfg.end_exclusive)
        build_client_properties(wh, cfg)  # empty here: the join still needs the tables
        build_product_catalog(wh, cfg)

    stage("ingest", ingest)
    stage("join", lambda: denormalize_window(wh, cfg.data_start, cfg.end_exclusive, covers_all_days=True))

    def coders():
        ids = wh.fetch_df("SELECT DISTINCT item_id AS v FROM events_denormalized ORDER BY 1")["v"].to_numpy()
        emb = np.random.default_rng(0).standard_normal((len(ids), 64)).astype(np.float32)
        return {"item_id": fit_sketch_coder("item_id", ids, emb, DEPTH, BITS, 0)}

    cod = stage("coders", coders)
    build = stage(
        "profiles",
        lambda: build_profiles_window(
            wh,
            cod,
            HALF_LIVES,
            cfg.data_start,
            cfg.end_exclusive,
            cfg.data_start,
            coders_fingerprint(cod),
            memory_mb=MEMORY_MB,
        ),
    )
    out = folder / "export"
    stage(
        "export",
        lambda: export_profiles(wh, cfg.data_end, out, dtype="float16", coders=cod, memory_mb=MEMORY_MB),
        files=[out / "client_ids.npy", out / "embeddings.npy"],
    )
    clients = int(wh.fetch_df("SELECT count(*) AS n FROM behavioral_profiles")["n"].iloc[0])
    wh.close()
    return {"events": n_events, "clients": clients, "shards": build.shards, "stages": stages}


def run_size(n_events: int) -> dict:
    """Generate the log in one process, then run the stages in a fresh one (so its peak RSS is
    the stages', not the generator's); the folder is removed afterwards."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("SCALE_TMP")) as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--generate", str(n_events), tmp], check=True)
        print(f"{n_events:,} events generated in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        out = subprocess.run(
            [sys.executable, __file__, "--worker", str(n_events), tmp], stdout=subprocess.PIPE, text=True, check=True
        ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,3000000")
    parser.add_argument("--out")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--generate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("folder", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        write_log(args.generate, Path(args.folder))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.folder))))
        return
    results = []
    for n in (int(float(s)) for s in args.sizes.split(",")):
        results.append(run_size(n))
        print(f"{n:,} events done", file=sys.stderr)
    lines = [
        "| events | clients | client shards | stage | wall s | CPU s | peak RSS MB | disk MB |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    per_event = []
    for r in results:
        for s in r["stages"]:
            lines.append(
                f"| {r['events']:,} | {r['clients']:,} | {r['shards']} | {s['stage']} | {s['wall_s']:.1f} | "
                f"{s['cpu_s']:.1f} | {s['peak_rss_mb']:.0f} | {s['disk_mb']:.0f} |"
            )
        total = sum(s["wall_s"] for s in r["stages"])
        per_event.append(f"{r['events'] / 1e6:g}M: {total / r['events'] * 1e6:.2f} µs/event")
    text = (
        f"Synthetic logs, 10 events per client, 100k items; sketch item_id depth {DEPTH} x width {2**BITS}, "
        f"half-lives {HALF_LIVES}; profile.memory_mb {MEMORY_MB:g} (one client shard), DuckDB memory_limit "
        f"{DUCKDB_MEMORY}; {os.cpu_count()} cores. Peak RSS is the stage process's so far (DuckDB's buffers "
        "included); disk is the DuckDB file plus the export. Wall time per event over all stages: "
        f"{', '.join(per_event)}.\n\n" + "\n".join(lines) + "\n"
    )
    print(text)
    if args.out:
        Path(args.out).write_text("# Scale benchmark\n\n" + text, encoding="utf-8")


if __name__ == "__main__":
    main()
