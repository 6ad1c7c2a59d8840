"""Benchmark: is the foundation model's client embedding a universal representation? A fixed
downstream MLP (the same for every embedding, in the style of the RecSys Challenge 2025) is
trained on embeddings as of T with labels from [T, T+14d) and scored on the same clients' labels
from [T+14d, T+28d), for three tasks: churn, top-20 category propensity and top-50 item
propensity (macro AUROC). Embeddings compared:

- `aggregates`: the hand-made aggregates LightGBM uses (recency, frequency, value, per top
  brand/category counts; 7/30/90-day windows);
- `profile`: the raw behavioral profile (`bm-assets export-profiles`);
- `foundation`: the foundation model's client embedding (`export-profiles --kind foundation`);
- `foundation+aggregates`: both, concatenated.

    python benchmarks/universal.py --home BM_HOME [--dataset data/completejourney/dataset.yaml] [--date 2017-11-15]

T defaults to the dataset's test_start: after every window the foundation model trained or
selected on, so no label window was seen by the representation."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

SEEDS = (0, 1, 2)


def mlp_auroc(x_train: np.ndarray, y_train: np.ndarray, y_test: np.ndarray, seed: int) -> float:
    """The fixed downstream model: standardised sign-log inputs, one hidden layer of 256 (ReLU,
    dropout 0.2), Adam 1e-3, 20 epochs of batches of 256, BCE; macro AUROC over labels with both
    classes in the scored window."""
    torch.manual_seed(seed)
    x = np.sign(x_train) * np.log1p(np.abs(x_train))
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y_train.astype(np.float32))
    net = nn.Sequential(nn.Linear(x.shape[1], 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, y_train.shape[1]))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(20):
        net.train()
        for idx in torch.randperm(len(xt), generator=gen).split(256):
            loss = nn.functional.binary_cross_entropy_with_logits(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        p = torch.sigmoid(net(xt)).numpy()
    ok = [j for j in range(y_test.shape[1]) if 0 < y_test[:, j].sum() < len(y_test)]
    return float(np.mean([roc_auc_score(y_test[:, j], p[:, j]) for j in ok]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True, help="a BM_HOME with behavioral_profiles and foundation_model")
    parser.add_argument("--dataset", default=str(HERE.parent / "data" / "completejourney" / "dataset.yaml"))
    parser.add_argument("--date", help="T (YYYY-MM-DD); default the dataset's test_start")
    parser.add_argument("--out", default=str(HERE / "RESULTS_universal.md"))
    args = parser.parse_args(argv)
    os.environ["BM_HOME"] = args.home
    os.environ["BM_DATASET"] = args.dataset

    from bm_assets.assets.foundation import load_champion_foundation, modeling_config
    from bm_assets.core.artifacts import Store
    from bm_assets.core.features import aggregate_features, feature_tops
    from bm_assets.core.foundation import client_embedding
    from bm_assets.core.profiles import load_profiles
    from bm_assets.core.sql import EVENTS_DENORMALIZED as EVENTS
    from bm_assets.core.sql import ident
    from bm_assets.core.tasks import feature_columns, top_values
    from bm_assets.definitions import warehouse_from_env
    from bm_assets.resources import DatasetResource, MLflowResource
    from bm_assets.settings import bm_home

    dataset = DatasetResource(config_path=args.dataset)
    cfg, mcfg = dataset.load(), modeling_config(dataset)
    t = dt.date.fromisoformat(args.date) if args.date else cfg.temporal.test_start
    windows = [(t, t + dt.timedelta(days=14)), (t + dt.timedelta(days=14), t + dt.timedelta(days=28))]
    coders = Store(bm_home()).load_coders()
    net, _ = load_champion_foundation(MLflowResource().client(), cfg.name)
    with warehouse_from_env().open(sandboxed=True) as wh:
        ids, profiles = load_profiles(wh, t - dt.timedelta(days=1), coders)
        active = wh.fetch_df(
            f"""SELECT DISTINCT CAST(client_id AS VARCHAR) AS c FROM {wh.table(EVENTS)}
            WHERE event_type = 'purchase' AND event_date >= DATE '{t - dt.timedelta(days=30)}'
              AND event_date < DATE '{t}'"""
        )["c"]
        keep = np.isin(ids, active.to_numpy())
        ids, profiles = ids[keep], profiles[keep]
        ev = mcfg.evaluation
        tops = feature_tops(wh, feature_columns(mcfg, cfg), ev, t, cfg.list_columns())
        examples = pd.DataFrame({"client_id": ids, "t": [t] * len(ids)})
        aggregates, _ = aggregate_features(wh, examples, ev, tops, cfg.list_columns())
        labels: dict[str, list[np.ndarray]] = {}
        specs = (("churn", None, 0), ("category_top20", "product_category", 20), ("item_top50", "item_id", 50))
        for task, column, n in specs:
            values = top_values(wh, column, "event_type = 'purchase'", t, n) if column else []
            per_window = []
            for start, end in windows:
                what = "'_'" if column is None else f"CAST({ident(column)} AS VARCHAR)"
                df = wh.fetch_df(
                    f"""SELECT DISTINCT CAST(client_id AS VARCHAR) AS c, {what} AS v FROM {wh.table(EVENTS)}
                    WHERE event_type = 'purchase' AND event_date >= DATE '{start}' AND event_date < DATE '{end}'"""
                )
                row = pd.Index(ids).get_indexer(df["c"])
                if column is None:  # churn: no purchase in the window
                    y = np.ones((len(ids), 1), np.float32)
                    y[row[row >= 0], 0] = 0.0
                else:
                    col = pd.Index(values).get_indexer(df["v"])
                    ok = (row >= 0) & (col >= 0)
                    y = np.zeros((len(ids), len(values)), np.float32)
                    y[row[ok], col[ok]] = 1.0
                per_window.append(y)
            labels[task] = per_window
    embedding = client_embedding(net, profiles)
    inputs = {
        "aggregates": aggregates,
        "profile": profiles,
        "foundation": embedding,
        "foundation+aggregates": np.concatenate([embedding, aggregates], axis=1),
    }
    rows = []
    for name, x in inputs.items():
        start = time.perf_counter()
        scores = {task: [mlp_auroc(x, y[0], y[1], s) for s in SEEDS] for task, y in labels.items()}
        rows.append((name, x.shape[1], scores, time.perf_counter() - start))
        print(name, {k: round(float(np.mean(v)), 4) for k, v in scores.items()}, flush=True)
    tasks = list(labels)
    lines = [
        f"# Universal embeddings: {cfg.name}, T = {t}",
        "",
        f"{len(ids):,} clients with a purchase in the 30 days before T; train on labels in [{windows[0][0]}, "
        f"{windows[0][1]}), score on [{windows[1][0]}, {windows[1][1]}); fixed MLP (benchmarks/universal.py), "
        f"macro AUROC, mean ± sd over seeds {list(SEEDS)}.",
        "",
        "| embedding | dims | " + " | ".join(tasks) + " | seconds |",
        "| --- | ---: | " + " | ".join("---:" for _ in tasks) + " | ---: |",
    ]
    for name, dims, scores, seconds in rows:
        cells = " | ".join(f"{np.mean(scores[k]):.4f} ± {np.std(scores[k]):.4f}" for k in tasks)
        lines.append(f"| {name} | {dims:,} | {cells} | {seconds:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
