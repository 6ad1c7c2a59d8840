"""Benchmark: the whole chain on the full Complete Journey (ingest -> representations ->
foundation model -> every task's model and evaluation -> one day of scores), then a markdown
table per task and model of the test metrics, training time and the stage's peak RSS.

    python benchmarks/tasks.py [--dataset data/completejourney/dataset.yaml] [--home benchmarks/out/tasks] [--seeds 3]

With --seeds N (default 3) the foundation model and every task model are retrained with
evaluation.seed 0..N-1 on the same tables (homes <home>_seed<k> beside the first), and each task
gets a mean ± sd table over the seeds; the chain time and peak RSS are those of the first seed.

Peak RSS is per stage (each asset materialization): the kernel's high-water mark is reset
between stages through /proc/self/clear_refs."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def run_stages(stages: list[tuple[str, list[str], dict]], defs, timings: dict, timings_file: Path) -> bool:
    """Materialize each stage in turn in a fresh ephemeral instance; record wall time and peak RSS."""
    from dagster import DagsterInstance, materialize

    instance = DagsterInstance.ephemeral()
    for name, selection, tags in stages:
        reset_peak()
        start = time.perf_counter()
        result = materialize(
            list(defs.assets),
            selection=selection,
            resources=defs.resources,
            instance=instance,
            tags=tags,
            raise_on_error=False,
        )
        timings[name] = (time.perf_counter() - start, peak_rss_mb())
        print(
            f"{name}: {'ok' if result.success else 'FAILED'} in {timings[name][0]:.1f}s, "
            f"peak RSS {timings[name][1]:.0f} MB",
            flush=True,
        )
        timings_file.write_text(json.dumps(timings))
        if not result.success:
            return False
    return True


def reseeded_home(home: Path, dataset_file: Path, cfg, seed: int) -> tuple[Path, Path]:
    """A BM_HOME beside `home` holding its tables and representation artifacts (the stages before
    the models, which no seed changes) but no models or MLflow store, and a copy of the dataset
    and tasks YAML whose only change is evaluation.seed (base_dir made absolute)."""
    import yaml

    seed_home = home.parent / f"{home.name}_seed{seed}"
    if seed_home.exists():
        shutil.rmtree(seed_home)
    (seed_home / "dagster").mkdir(parents=True)
    shutil.copy(home / "bm_assets.duckdb", seed_home / "bm_assets.duckdb")
    shutil.copytree(home / "artifacts", seed_home / "artifacts")
    config_dir = seed_home / "config"
    config_dir.mkdir()
    dataset = yaml.safe_load(dataset_file.read_text(encoding="utf-8"))
    dataset["base_dir"] = str(cfg.base_dir)
    (config_dir / dataset_file.name).write_text(yaml.safe_dump(dataset, sort_keys=False), encoding="utf-8")
    tasks = yaml.safe_load((dataset_file.parent / "tasks.yaml").read_text(encoding="utf-8"))
    tasks.setdefault("evaluation", {})["seed"] = seed
    (config_dir / "tasks.yaml").write_text(yaml.safe_dump(tasks, sort_keys=False), encoding="utf-8")
    return seed_home, config_dir / dataset_file.name


def seeds_markdown(task, reports: list[dict]) -> str:
    """Each model's test metric as mean ± sd over the seeds, its difference to the reference
    model likewise, and in how many seeds the bootstrap interval of that difference was above
    or below 0."""
    import numpy as np

    from bm_assets.core.registry import higher_is_better

    metric = task.metrics[0]
    ref = (reports[0].get("intervals") or {}).get("reference")
    lines = [
        f"Over {len(reports)} seeds (the foundation model and every task model retrained per seed; "
        f"{'higher' if higher_is_better(metric) else 'lower'} {metric} is better):",
        "",
        f"| model | test {metric}, mean ± sd | minus {ref}, mean ± sd | seeds with the difference's 95% CI > 0 / < 0 |",
        "| --- | --- | --- | --- |",
    ]
    for model in reports[0]["models"]:
        values = [r["models"][model].get(f"test_{metric}") for r in reports if model in r["models"]]
        if any(v is None for v in values) or len(values) < len(reports):
            continue
        cell = ""
        if ref and ref in reports[0]["models"] and model != ref:
            diffs = [r["models"][model][f"test_{metric}"] - r["models"][ref][f"test_{metric}"] for r in reports]
            cis = [((r.get("intervals") or {}).get("models", {}).get(model) or {}).get("diff_ci95") for r in reports]
            above = sum(1 for c in cis if c and c[0] > 0)
            below = sum(1 for c in cis if c and c[1] < 0)
            cell = f"{np.mean(diffs):+.4f} ± {np.std(diffs, ddof=1):.4f} | {above} / {below}"
        else:
            cell = " | "
        lines.append(f"| {model} | {np.mean(values):.4f} ± {np.std(values, ddof=1):.4f} | {cell} |")
    curves = [r.get("learning_curve") or [] for r in reports]
    if all(curves):
        lines += [
            "",
            "Learning curve over the seeds (test, mean ± sd):",
            "",
            "| fraction | model | test |",
            "| --- | --- | --- |",
        ]
        keys = sorted({(c["fraction"], c["model"]) for c in curves[0]})
        for frac, model in keys:
            vals = [c["test"] for curve in curves for c in curve if c["fraction"] == frac and c["model"] == model]
            if len(vals) == len(curves) and all(v is not None for v in vals):
                lines.append(f"| {frac:.0%} | {model} | {np.mean(vals):.4f} ± {np.std(vals, ddof=1):.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(REPO / "data" / "completejourney" / "dataset.yaml"))
    parser.add_argument("--home", default=str(REPO / "benchmarks" / "out" / "tasks"))
    parser.add_argument("--keep", action="store_true", help="reuse BM_HOME (skip stages already built)")
    parser.add_argument(
        "--start-at",
        help="with --keep: skip the stages before this one (their timings are "
        "read from the previous run's timings.json)",
    )
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS_tasks.md"))
    parser.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="train the foundation model and every task model with this many seeds (evaluation.seed "
        "0, 1, ...; the data stages run once) and report each test metric's mean and sd over them",
    )
    args = parser.parse_args(argv)
    home = Path(args.home).resolve()
    if home.exists() and not args.keep:
        shutil.rmtree(home)
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    os.environ.update(
        BM_HOME=str(home), BM_DATASET=str(Path(args.dataset).resolve()), DAGSTER_HOME=str(home / "dagster")
    )

    from bm_assets.config import load_dataset_config
    from bm_assets.core.report import intervals_markdown
    from bm_assets.core.tasks import load_modeling_config, tasks_path_for
    from bm_assets.definitions import build_definitions

    cfg = load_dataset_config(args.dataset)
    mcfg = load_modeling_config(tasks_path_for(args.dataset))
    full = {
        "dagster/asset_partition_range_start": cfg.data_start.isoformat(),
        "dagster/asset_partition_range_end": cfg.data_end.isoformat(),
    }
    last = {
        "dagster/asset_partition_range_start": cfg.data_end.isoformat(),
        "dagster/asset_partition_range_end": cfg.data_end.isoformat(),
    }
    stages: list[tuple[str, list[str], dict]] = [
        (
            "ingest",
            [
                "raw_events",
                "raw_events_quarantine",
                "client_properties",
                "product_catalog",
                "events_denormalized",
            ],
            full,
        ),
        (
            "representations",
            ["temporal_graph", "entity_embeddings", "sketch_coders", "behavioral_profiles"],
            full,
        ),
        ("foundation_model", ["foundation_model"], {}),
    ]
    for t in mcfg.tasks:
        stages += [
            (f"{t.name}_model", [f"{t.name}_model"], {}),
            (f"{t.name}_evaluation", [f"{t.name}_evaluation"], {}),
            (f"{t.name}_scores", [f"{t.name}_scores"], last),
        ]
    stages_all = list(stages)
    timings_file = home / "timings.json"
    timings: dict[str, tuple[float, float]] = {}
    if args.start_at:
        if not args.keep:
            parser.error("--start-at needs --keep")
        previous = json.loads(timings_file.read_text()) if timings_file.exists() else {}
        names = [n for n, _, _ in stages]
        timings = {n: tuple(previous[n]) for n in names[: names.index(args.start_at)]}
        stages = stages[names.index(args.start_at) :]
    start_all = time.perf_counter() - sum(s for s, _ in timings.values())
    if not run_stages(stages, build_definitions(args.dataset), timings, timings_file):
        return 1
    total = time.perf_counter() - start_all
    reports = {t.name: [json.loads((home / "reports" / f"{t.name}.json").read_text())] for t in mcfg.tasks}
    for seed in range(mcfg.evaluation.seed + 1, mcfg.evaluation.seed + args.seeds):
        seed_home, dataset_file = reseeded_home(home, Path(args.dataset), cfg, seed)
        os.environ.update(BM_HOME=str(seed_home), BM_DATASET=str(dataset_file), DAGSTER_HOME=str(seed_home / "dagster"))
        model_stages = [s for s in stages_all if s[0] == "foundation_model" or not s[0].endswith("_scores")]
        model_stages = model_stages[[n for n, _, _ in model_stages].index("foundation_model") :]
        print(f"seed {seed} in {seed_home}", flush=True)
        if not run_stages(model_stages, build_definitions(str(dataset_file)), {}, seed_home / "timings.json"):
            return 1
        for t in mcfg.tasks:
            reports[t.name].append(json.loads((seed_home / "reports" / f"{t.name}.json").read_text()))

    lines = [
        f"# Tasks benchmark: {cfg.name}",
        "",
        f"Whole chain in **{total / 60:.1f} min** on {os.cpu_count()} cores "
        f"(machine shared with other jobs: timings are under contention).",
        "",
        "| stage | seconds | peak RSS (MB) |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {n} | {s:.1f} | {r:.0f} |" for n, (s, r) in timings.items()]
    for t in mcfg.tasks:
        report = json.loads((home / "reports" / f"{t.name}.json").read_text())
        metric_names = [m for m in t.metrics]
        lines += [
            "",
            f"## {t.name} ({t.type}, {t.horizon_days} days; n_train={report['n_train']}, "
            f"n_test={report['n_test']}, n_holdout={report['n_holdout']})",
            "",
            "| model | "
            + " | ".join(f"test {m}" for m in metric_names)
            + " | "
            + " | ".join(f"holdout {m}" for m in metric_names)
            + " | "
            + " | ".join(f"validation {m}" for m in metric_names)
            + " | train s | epochs |",
            "| --- " * (3 * len(metric_names) + 3) + "|",
        ]
        for model, row in report["models"].items():
            cells = [row.get(f"{role}_{m}") for role in ("test", "holdout", "validation") for m in metric_names]
            lines.append(
                f"| {model} | "
                + " | ".join("" if c is None else f"{c:.4f}" for c in cells)
                + f" | {row['train_seconds']:.1f} | {row['epochs']} |"
            )
        pick = (report.get("selected") or {}).get("model")
        lines += ["", f"Pick on validation: **{pick}**.", "", intervals_markdown(t, report.get("intervals"))]
        drivers = report.get("drivers")
        if drivers:
            for label, tables in list(drivers["outputs"].items())[:2]:
                for name, rows in tables.items():
                    if name == "network" or name.startswith("network, items by " + (t.target.column or "-")):
                        top = "; ".join(f"{r['driver']} ({r['mean']:+.3f})" for r in rows[:5])
                        lines += ["", f"Drivers of {label}, {name} (mean attribution): {top}"]
        if report["learning_curve"]:
            lines += [
                "",
                "Learning curve (test " + report["learning_curve"][0]["metric"] + "):",
                "",
                "| fraction | n_train | " + " | ".join(sorted({r["model"] for r in report["learning_curve"]})) + " |",
                "| --- " * (2 + len({r["model"] for r in report["learning_curve"]})) + "|",
            ]
            models = sorted({r["model"] for r in report["learning_curve"]})
            for frac in sorted({r["fraction"] for r in report["learning_curve"]}):
                rows = {r["model"]: r for r in report["learning_curve"] if r["fraction"] == frac}
                n = next(iter(rows.values()))["n_train"]
                lines.append(
                    f"| {frac:.0%} | {n} | "
                    + " | ".join(
                        f"{rows[m]['test']:.4f}" if m in rows and rows[m]["test"] is not None else "" for m in models
                    )
                    + " |"
                )
            png = home / "reports" / f"{t.name}.png"
            if png.exists():
                shutil.copy(png, Path(args.out).resolve().parent / f"RESULTS_{t.name}.png")  # beside the table
                lines += ["", f"![{t.name}](RESULTS_{t.name}.png)"]
        if len(reports[t.name]) > 1:
            lines += ["", seeds_markdown(t, reports[t.name])]
        curve = report.get("time_curve", {})
        if "finetuned" in curve and "scratch" in curve:
            best = max(h["val_score"] for h in curve["scratch"])
            scratch_s = next(h["seconds"] for h in curve["scratch"] if h["val_score"] >= best)
            hit = next((h["seconds"] for h in curve["finetuned"] if h["val_score"] >= best), None)
            lines += [
                "",
                f"Scratch reaches its best validation score ({best:.4f}) after {scratch_s:.1f}s; "
                + (
                    f"fine-tuned reaches it after {hit:.1f}s ({hit / scratch_s:.2f}x)."
                    if hit is not None
                    else "fine-tuned never reaches it."
                ),
            ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
