"""Benchmark: the whole chain on the full Complete Journey (ingest -> representations ->
foundation model -> every task's model and evaluation -> one day of scores), then a markdown
table per task and model of the test metrics, training time and the stage's peak RSS.

    python benchmarks/tasks.py [--dataset data/completejourney/dataset.yaml] [--home benchmarks/out/tasks]

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default=str(REPO / "data" / "completejourney" / "dataset.yaml"))
    parser.add_argument("--home", default=str(REPO / "benchmarks" / "out" / "tasks"))
    parser.add_argument("--keep", action="store_true", help="reuse BM_HOME (skip stages already built)")
    parser.add_argument(
        "--start-at",
        help="with --keep: skip the stages before this one (their timings are "
        "read from the previous run's timings.json)",
    )
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS_tasks.md"))
    args = parser.parse_args(argv)
    home = Path(args.home).resolve()
    if home.exists() and not args.keep:
        shutil.rmtree(home)
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    os.environ.update(
        BM_HOME=str(home), BM_DATASET=str(Path(args.dataset).resolve()), DAGSTER_HOME=str(home / "dagster")
    )

    from dagster import DagsterInstance, materialize

    from bm_assets.config import load_dataset_config
    from bm_assets.core.report import intervals_markdown
    from bm_assets.core.tasks import load_modeling_config, tasks_path_for
    from bm_assets.definitions import build_definitions

    cfg = load_dataset_config(args.dataset)
    mcfg = load_modeling_config(tasks_path_for(args.dataset))
    defs = build_definitions(args.dataset)
    assets = list(defs.assets)
    instance = DagsterInstance.ephemeral()
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
    for name, selection, tags in stages:
        reset_peak()
        start = time.perf_counter()
        result = materialize(
            assets,
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
            return 1
    total = time.perf_counter() - start_all

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
            cells = [
                row.get(f"{role}_{m}") for role in ("test", "holdout", "validation") for m in metric_names
            ]
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
                "| fraction | n_train | "
                + " | ".join(sorted({r["model"] for r in report["learning_curve"]}))
                + " |",
                "| --- " * (2 + len({r["model"] for r in report["learning_curve"]})) + "|",
            ]
            models = sorted({r["model"] for r in report["learning_curve"]})
            for frac in sorted({r["fraction"] for r in report["learning_curve"]}):
                rows = {r["model"]: r for r in report["learning_curve"] if r["fraction"] == frac}
                n = next(iter(rows.values()))["n_train"]
                lines.append(
                    f"| {frac:.0%} | {n} | "
                    + " | ".join(
                        f"{rows[m]['test']:.4f}" if m in rows and rows[m]["test"] is not None else ""
                        for m in models
                    )
                    + " |"
                )
            png = home / "reports" / f"{t.name}.png"
            if png.exists():
                shutil.copy(png, REPO / "benchmarks" / f"RESULTS_{t.name}.png")
                lines += ["", f"![{t.name}](RESULTS_{t.name}.png)"]
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
