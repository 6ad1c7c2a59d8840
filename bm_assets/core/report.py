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
            "learning_curve": learning_curve or [],
            "time_curve": time_curve or {},
            "n_train": n.get("train", 0),
            "n_validation": n.get("validation", 0),
            "n_test": n.get("test", 0),
            "n_holdout": n.get("holdout", 0),
        }
    )


def write_report(report: dict, reports_dir: Path) -> Path:
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"{report['task']}.json"
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return path


def metrics_markdown(models: dict[str, dict[str, float]]) -> str:
    """| model | metric... | with one row per model."""
    cols = sorted({k for row in models.values() for k in row}, key=lambda k: (k.split("_")[0] != "test", k))
    lines = ["| model | " + " | ".join(cols) + " |", "| --- " * (len(cols) + 1) + "|"]
    for name, row in models.items():
        cells = [f"{row[c]:.4g}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curves_png(task: TaskSpec, learning_curve: list[dict], time_curve: dict[str, list[dict]]) -> bytes:
    """Left: test metric vs labeled fraction per model. Right: validation metric vs training
    seconds per network (one point per epoch)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    metric = learning_curve[0]["metric"] if learning_curve else (task.metrics[0] if task.metrics else "")
    for model in sorted({r["model"] for r in learning_curve}):
        rows = sorted((r for r in learning_curve if r["model"] == model), key=lambda r: r["fraction"])
        axes[0].plot([100 * r["fraction"] for r in rows], [r["test"] for r in rows], marker="o", label=model)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("labeled training examples (%)")
    axes[0].set_ylabel(f"test {metric}")
    axes[0].set_title(f"{task.name}: learning curve")
    for model, hist in time_curve.items():
        axes[1].plot([h["seconds"] for h in hist], [h["val_score"] for h in hist], marker=".", label=model)
    axes[1].set_xlabel("training time (s)")
    axes[1].set_ylabel(f"validation {metric}")
    axes[1].set_title("quality vs training time (one point per epoch)")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
