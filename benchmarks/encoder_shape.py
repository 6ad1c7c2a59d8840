"""Benchmark: the foundation encoder's shape (hidden width, number of layers), judged on validation.

For each shape and seed the foundation model is pretrained again on the home's profiles (the
examples the `foundation_model` asset builds), then every classification and regression task is
fine-tuned from it (the reports' `finetuned` model, with the dataset's evaluation config). The
table gives each task's first metric on validation (what a shape is chosen on) and on test, mean
and sd over the seeds, the difference from the configured shape (positive: better, errors
negated), and the training time (pretraining plus fine-tuning) as a ratio to the configured
shape's. Every pretrained network is kept (small) and one task's examples are built at a time,
so peak memory is that of the largest task, not of all of them. Nothing is written to the home.

    python benchmarks/encoder_shape.py --home BM_HOME [--dataset data/completejourney/dataset.yaml]
        [--shapes 256x2,512x2,256x3] [--seeds 3] [--tasks brand_propensity,churn]

BM_HOME must hold a full run up to `foundation_model` (e.g. `benchmarks/out/tasks` after
`python benchmarks/tasks.py`)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def parse_shape(text: str, default_layers: int) -> tuple[int, int]:
    """'512x2' -> (512, 2): hidden units, layers ('512': the configured layers)."""
    hidden, _, layers = text.partition("x")
    return int(hidden), int(layers or default_layers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True, help="a BM_HOME with behavioral_profiles and sketch_coders")
    parser.add_argument("--dataset", default=str(REPO / "data" / "completejourney" / "dataset.yaml"))
    parser.add_argument("--shapes", default="512x2,256x3", help="hidden x layers, comma-separated")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tasks", help="comma-separated task names; default every classification/regression task")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS_encoder_shape.md"))
    args = parser.parse_args(argv)
    home = Path(args.home).resolve()
    os.environ.update(BM_HOME=str(home), BM_DATASET=str(Path(args.dataset).resolve()))

    from bm_assets.assets.foundation import modeling_config
    from bm_assets.core.artifacts import Store
    from bm_assets.core.evaluation import fit_network, metrics, selection_score
    from bm_assets.core.examples import CachedProfiles, foundation_examples, layout_of, task_examples
    from bm_assets.core.foundation import train_foundation
    from bm_assets.core.kinds import kind_of
    from bm_assets.core.profiles import profiles_at_dates
    from bm_assets.definitions import warehouse_from_env
    from bm_assets.resources import DatasetResource

    dataset = DatasetResource(config_path=args.dataset)
    cfg, mcfg = dataset.load(), modeling_config(dataset)
    f0 = mcfg.foundation
    coders = Store(home).load_coders()
    wanted = set(args.tasks.split(",")) if args.tasks else None
    tasks = [t for t in mcfg.tasks if kind_of(t).name != "recommendation" and (wanted is None or t.name in wanted)]
    if not tasks:
        parser.error("no classification or regression task selected")
    configured = (f0.hidden, f0.layers)
    shapes = [configured] + [s for s in (parse_shape(x, f0.layers) for x in args.shapes.split(",")) if s != configured]
    runs = [(shape, seed) for shape in shapes for seed in range(args.seeds)]
    # (shape, task, role) -> per-seed scores (selection scale: higher is better) and raw metrics;
    # (shape, seed) -> seconds of pretraining plus fine-tuning; shape -> pretraining cross-entropy
    scores: dict[tuple, list[float]] = {}
    raw: dict[tuple, list[float]] = {}
    seconds: dict[tuple, float] = {}
    cross_entropy: dict[tuple[int, int], list[float]] = {}
    nets = {}  # small next to the examples: every pretrained network is kept, one task's examples at a time
    with warehouse_from_env().open(sandboxed=True) as wh:
        start = time.perf_counter()
        pretraining = foundation_examples(
            wh, cfg, mcfg, coders, CachedProfiles(lambda ds: profiles_at_dates(wh, coders, ds))
        )
        (_, x_tr, y_tr), (_, x_va, y_va) = pretraining["train"], pretraining["validation"]
        print(f"pretraining examples {x_tr.shape} built in {time.perf_counter() - start:.0f}s", flush=True)
        for (hidden, layers), seed in runs:
            t0 = time.perf_counter()
            fit = train_foundation(
                x_tr, y_tr, x_va, y_va, layout_of(coders), hidden, layers, f0.dropout, f0.train_config(seed)
            )
            nets[((hidden, layers), seed)] = fit.net
            seconds[((hidden, layers), seed)] = time.perf_counter() - t0
            cross_entropy.setdefault((hidden, layers), []).append(-fit.best_score)
            print(f"{hidden}x{layers} seed {seed}: pretraining cross-entropy {-fit.best_score:.4f}", flush=True)
        del pretraining, x_tr, y_tr, x_va, y_va
        for task in tasks:
            start = time.perf_counter()
            data = task_examples(
                wh, cfg, mcfg, task, coders, CachedProfiles(lambda ds: profiles_at_dates(wh, coders, ds))
            )[0]
            print(f"{task.name} examples built in {time.perf_counter() - start:.0f}s", flush=True)
            for (hidden, layers), seed in runs:
                t0 = time.perf_counter()
                fcfg = f0.model_copy(update={"hidden": hidden, "layers": layers})
                ev = mcfg.evaluation.model_copy(update={"seed": seed})
                _, predict = fit_network(data, nets[((hidden, layers), seed)], fcfg, ev)
                for role in ("validation", "test"):
                    m = metrics(task.type, data.splits[role].y, predict(data.splits[role]))
                    scores.setdefault(((hidden, layers), task.name, role), []).append(selection_score(task, m))
                    raw.setdefault(((hidden, layers), task.name, role), []).append(m[task.metrics[0]])
                seconds[((hidden, layers), seed)] += time.perf_counter() - t0
                last = raw[((hidden, layers), task.name, "validation")][-1]
                print(f"{hidden}x{layers} seed {seed}: {task.name} validation {last:.4f}", flush=True)
            del data

    def cell(shape, task, role) -> str:
        v = np.array(raw[(shape, task.name, role)])
        text = f"{v.mean():.4f} ± {v.std():.4f}"
        if shape != configured:
            diff = np.array(scores[(shape, task.name, role)]) - np.array(scores[(configured, task.name, role)])
            text += f" ({diff.mean():+.4f}, better in {int((diff > 0).sum())}/{len(diff)})"
        return text

    names = [f"{h}x{n}" + (" (configured)" if (h, n) == configured else "") for h, n in shapes]
    header = ["task, split, metric"] + names
    rows = [
        [f"{t.name}, {role}, {t.metrics[0]}"] + [cell(shape, t, role) for shape in shapes]
        for t in tasks
        for role in ("validation", "test")
    ]
    per_seed = {x: float(np.mean([seconds[(x, seed)] for seed in range(args.seeds)])) for x in shapes}
    rows.append(["pretraining, validation, cross-entropy"] + [f"{np.mean(cross_entropy[x]):.2f}" for x in shapes])
    rows.append(
        ["training s per seed (ratio)"]
        + [f"{per_seed[x]:.0f} ({per_seed[x] / per_seed[configured]:.2f}x)" for x in shapes]
    )
    table = "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    )
    text = (
        f"# Encoder shape: {cfg.name}\n\n"
        f"Foundation model pretrained again per shape and seed ({args.seeds} seeds), then each task's "
        "`finetuned` model; mean ± sd over seeds; in brackets the mean difference from the configured shape "
        "(positive: better; errors negated) and in how many seeds it was better. Time: pretraining plus "
        f"fine-tuning, per seed. Peak RSS of the whole run: {peak_rss_mb():.0f} MB.\n\n" + table + "\n"
    )
    print(text)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
