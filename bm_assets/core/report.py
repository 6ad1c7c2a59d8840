"""Evaluation reports: the JSON every task writes to $BM_HOME/reports/<task>.json (schema in
the design doc), a markdown table of metrics per model, and the learning-curve figure."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bm_assets.config import TemporalSplit  # noqa: E402
from bm_assets.core.tasks import TaskSpec  # noqa: E402


def _clean(value: object) -> object:
    """JSON has no NaN: undefined metrics become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def build_report(
    task: TaskSpec,
    split: TemporalSplit,
    models: dict[str, dict[str, float]],
    n: dict[str, int],
    learning_curve: list[dict] | None = None,
    time_curve: dict[str, list[dict]] | None = None,
    intervals: dict | None = None,
) -> dict:
    return _clean(
        {
            "task": task.name,
            "type": task.type,
            "horizon_days": task.horizon_days,
            "split": {
                "training_cutoff": str(split.training_cutoff),
                "validation": [str(split.training_cutoff), str(split.test_start)],
                "test": [str(split.test_start), str(split.test_end)],
            },
            "models": models,
            "selected": selected_model(task, models),
            "intervals": intervals,
            "learning_curve": learning_curve or [],
            "time_curve": time_curve or {},
            "n_train": n.get("train", 0),
            "n_validation": n.get("validation", 0),
            "n_test": n.get("test", 0),
            "n_holdout": n.get("holdout", 0),
        }
    )


#: Metrics where lower is better.
LOWER_IS_BETTER = ("rmse", "mae", "log_loss")


def selected_model(task: TaskSpec, models: dict[str, dict[str, float]]) -> dict | None:
    """The model a user should pick: the best on the validation window by the task's first
    metric (never the test window). None when no model has that validation metric."""
    metric = task.metrics[0] if task.metrics else None
    key = f"validation_{metric}"
    scored = {
        name: row[key]
        for name, row in models.items()
        if isinstance(row.get(key), (int, float)) and math.isfinite(row[key])
    }
    if not scored:
        return None
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    best = max(scored, key=lambda name: sign * scored[name])
    return {"model": best, "by": key, "value": scored[best]}


def intervals_markdown(task: TaskSpec, intervals: dict | None) -> str:
    """| model | test metric 95% CI | minus <reference>, 95% CI |; a difference whose interval
    excludes 0 is marked."""
    if not intervals:
        return "not computed (evaluation.bootstrap: 0, or no test clients)"
    metric, ref = task.metrics[0], intervals.get("reference")
    lines = [
        f"| model | test {metric}, 95% CI | minus {ref}, 95% CI |",
        "| --- | --- | --- |",
    ]
    for name, row in intervals["models"].items():
        lo, hi = row["ci95"]
        diff = row.get("diff_ci95")
        cell = "" if diff is None else f"[{_cell(diff[0])}, {_cell(diff[1])}]"
        if diff is not None and all(isinstance(v, float) and math.isfinite(v) for v in diff):
            if diff[0] > 0 or diff[1] < 0:
                cell += " (excludes 0)"
        lines.append(f"| {name} | [{_cell(lo)}, {_cell(hi)}] | {cell} |")
    return "\n".join(lines) + f"\n\nClient-level bootstrap, {intervals.get('resamples')} resamples."


def write_report(report: dict, reports_dir: Path) -> Path:
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"{report['task']}.json"
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return path


_SPLITS = ("validation", "test", "holdout")
_SHORT = {"validation": "val", "average_precision": "AP", "train_seconds": "train s", "n_train": "n train"}


def _column_order(col: str) -> int:
    """Validation, test and holdout metrics first (in that order), then everything else (time,
    epochs, counts); the sort is stable, so metrics keep the task's order inside a split."""
    split = col.split("_")[0]
    return _SPLITS.index(split) if split in _SPLITS else len(_SPLITS)


def _short_name(col: str) -> str:
    split, _, metric = col.partition("_")
    if split in _SPLITS and metric:
        return f"{_SHORT.get(split, split)} {_SHORT.get(metric, metric)}"
    return _SHORT.get(col, col)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


def metrics_markdown(models: dict[str, dict[str, float]], pick: str | None = None) -> str:
    """| model | val ... | test ... | holdout ... | time, epochs |: one row per model, the metrics
    in the order of the protocol, three significant digits, short headers (narrow in the UI).
    `pick` (the model selected on validation) is marked."""
    cols = sorted(dict.fromkeys(k for row in models.values() for k in row), key=_column_order)
    lines = ["| model | " + " | ".join(_short_name(c) for c in cols) + " |", "| --- " * (len(cols) + 1) + "|"]
    for name, row in models.items():
        label = f"**{name}** (pick)" if name == pick else name
        lines.append(f"| {label} | " + " | ".join(_cell(row.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def curves_png(task: TaskSpec, learning_curve: list[dict], time_curve: dict[str, list[dict]]) -> bytes | None:
    """The panels that have data: test metric vs labeled fraction per model (only tasks with
    `learning_curve: true`), and validation metric vs training seconds per network (one point per
    epoch). None when neither was computed: no empty axes."""
    metric = learning_curve[0]["metric"] if learning_curve else (task.metrics[0] if task.metrics else "")
    panels = [p for p, data in (("fraction", learning_curve), ("time", time_curve)) if data]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "fraction":
            for model in sorted({r["model"] for r in learning_curve}):
                rows = sorted((r for r in learning_curve if r["model"] == model), key=lambda r: r["fraction"])
                ax.plot([100 * r["fraction"] for r in rows], [r["test"] for r in rows], marker="o", label=model)
            ax.set_xscale("log")
            ax.set_xlabel("labeled training examples (%)")
            ax.set_ylabel(f"test {metric}")
            ax.set_title(f"{task.name}: learning curve")
        else:
            for model, hist in time_curve.items():
                ax.plot([h["seconds"] for h in hist], [h["val_score"] for h in hist], marker=".", label=model)
            ax.set_xlabel("training time (s)")
            ax.set_ylabel(f"validation {metric}")
            ax.set_title(f"{task.name}: quality vs training time (one point per epoch)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
