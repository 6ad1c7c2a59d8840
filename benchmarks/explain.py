"""Benchmark: explanations of one task's scores for many clients on one day, on a materialized
BM_HOME (e.g. the one `benchmarks/tasks.py` builds on the full Complete Journey).

    python benchmarks/explain.py --home BM_HOME [--dataset data/completejourney/dataset.yaml]
        [--task brand_propensity] [--date 2017-12-15] [--clients 1000]

Stages: the day's profiles (replayed from the events), the fine-tuned network's attributions of
the scored label (Integrated Gradients) with the clients' entity history and the folding back to
entities (what `explain: true` adds to a day of scores), LightGBM's SHAP values for the same
clients (aggregates + pred_contrib), and one client end to end (`bm-assets explain`). Peak RSS
is the process's high-water mark after each stage."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True, help="a BM_HOME with the task's model materialized")
    parser.add_argument("--dataset", default=str(HERE.parent / "data" / "completejourney" / "dataset.yaml"))
    parser.add_argument("--task", default="brand_propensity")
    parser.add_argument("--date", default="2017-12-15")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--out", default=str(HERE / "RESULTS_explain.md"))
    args = parser.parse_args(argv)
    os.environ["BM_HOME"] = args.home
    os.environ["BM_DATASET"] = args.dataset

    from bm_assets.assets.foundation import modeling_config
    from bm_assets.core.artifacts import Store
    from bm_assets.core.explain import (
        as_of_examples,
        entity_history,
        fold,
        gbdt_label_contributions,
        integrated_gradients,
        item_rollups,
        reference_baseline,
    )
    from bm_assets.core.features import aggregate_features, feature_tops
    from bm_assets.core.foundation import predict
    from bm_assets.core.kinds import kind_of
    from bm_assets.core.profiles import load_profiles, read_layout_of
    from bm_assets.core.tasks import feature_columns
    from bm_assets.definitions import warehouse_from_env
    from bm_assets.explanations import explain_client
    from bm_assets.resources import DatasetResource
    from bm_assets.settings import bm_home

    day = dt.date.fromisoformat(args.date)
    dataset = DatasetResource(config_path=args.dataset)
    warehouse = warehouse_from_env()
    cfg, mcfg = dataset.load(), modeling_config(dataset)
    task = mcfg.task(args.task)
    store = Store(bm_home())
    bundle = store.load_task(task.name).models
    net = bundle["finetuned"]["artifact"]
    coders = store.load_coders()
    rows: list[dict] = []

    def record(stage: str, n: int, seconds: float) -> None:
        rows.append({"stage": stage, "clients": n, "seconds": seconds, "rss": _rss_mb()})
        print(f"{stage}: {n} clients in {seconds:.2f}s", flush=True)

    with warehouse.open() as wh:
        t0 = time.perf_counter()
        ids, x = load_profiles(wh, day, coders)
        record(f"profiles at the end of {day} (replayed from the events)", len(ids), time.perf_counter() - t0)
        pick = np.sort(np.random.default_rng(0).choice(len(ids), size=min(args.clients, len(ids)), replace=False))
        xs, cs = x[pick], ids[pick]
        layout = read_layout_of(wh, coders)
        rollups = item_rollups(cfg, coders)

        t0 = time.perf_counter()
        scores = predict(net, xs, kind_of(task).output())
        target = None if scores.ndim == 1 else scores.argmax(1)
        t_ig = time.perf_counter()
        attributions = integrated_gradients(net, xs, task.type, target, baseline=reference_baseline(x, layout))
        t_ig = time.perf_counter() - t_ig
        t_hist = time.perf_counter()
        history = entity_history(wh, list(layout.columns), rollups, as_of_examples(cs, day), layout.half_lives_days)
        t_hist = time.perf_counter() - t_hist
        t_fold = time.perf_counter()
        reasons, collision = fold(attributions, xs, layout, coders, history)
        t_fold = time.perf_counter() - t_fold
        record("fine-tuned network: score, attributions, history, folding", len(pick), time.perf_counter() - t0)
        record("  of which Integrated Gradients", len(pick), t_ig)
        record("  of which the clients' entity history (SQL)", len(pick), t_hist)
        record("  of which folding to entities", len(pick), t_fold)

        t0 = time.perf_counter()
        ev = mcfg.evaluation
        tops = feature_tops(wh, feature_columns(mcfg, cfg), ev, cfg.temporal.training_cutoff, cfg.list_columns())
        split = pd.DataFrame({"client_id": cs, "t": [day + dt.timedelta(days=1)] * len(cs)})
        f, _ = aggregate_features(wh, split, ev, tops, cfg.list_columns())
        models = bundle["lightgbm"]["artifact"]
        for j in sorted(set(target.tolist())) if target is not None else [None]:
            gbdt_label_contributions(task.type, models, f, j)
        record("LightGBM: aggregates and SHAP values", len(pick), time.perf_counter() - t0)

    t0 = time.perf_counter()
    one = explain_client(dataset, warehouse, task.name, str(cs[0]), day, model="finetuned")
    record("one client end to end (bm-assets explain)", 1, time.perf_counter() - t0)

    gap = float(np.abs(attributions.delta).max())
    lines = [
        f"# Explanations: {task.name} on {cfg.name}, {day}",
        "",
        f"`python benchmarks/explain.py --home <BM_HOME> --task {task.name} --date {day} --clients {args.clients}` "
        f"on {os.cpu_count()} cores. Completeness gap (max |sum of attributions - score change|): {gap:.1e}; "
        f"mean collision share: {float(collision.mean()):.0%}; reasons per client: "
        f"{len(reasons) / max(len(pick), 1):.0f}.",
        "",
        "| stage | clients | seconds | clients/s | peak RSS (MB) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        rate = r["clients"] / r["seconds"] if r["seconds"] > 0 else float("inf")
        lines.append(f"| {r['stage']} | {r['clients']:,} | {r['seconds']:.2f} | {rate:,.0f} | {r['rss']:,.0f} |")
    lines += ["", "One client (`bm-assets explain`):", "", "```", *one.lines(), "```", ""]
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
