"""What `bm-assets run` prints: one line per finished step instead of Dagster's event log, and a
results summary read from the evaluation reports. The Dagster instance still records every event."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from dagster import AssetsDefinition, DagsterEventType, LoggerDefinition, logger
from dagster._core.log_manager import get_log_record_metadata, has_log_record_metadata

_FINISHED = {
    DagsterEventType.STEP_SUCCESS: "",
    DagsterEventType.STEP_FAILURE: "  FAILED",
    DagsterEventType.STEP_SKIPPED: "  skipped: no output upstream",
}


def step_labels(assets: Sequence[AssetsDefinition], window: tuple[str, str, int] | None) -> dict[str, str]:
    """Step key (the op's name) -> what the line shows: its assets and, for partitioned ones, the
    window `(first, last, days)` the run covers."""
    labels = {}
    for a in assets:
        names = ", ".join(sorted(k.to_user_string() for k in a.keys))
        if a.partitions_def is not None and window:
            first, last, days = window
            names += f"  {first}..{last} ({days} day{'s' if days != 1 else ''})"
        labels[a.node_def.name] = names
    return labels


class ProgressHandler(logging.Handler):
    """Turns step events into `[n/N] label  elapsed` lines; the user's warnings pass through as
    one line each; everything else (Dagster's DEBUG events) stays in the instance only."""

    def __init__(self, labels: dict[str, str]):
        super().__init__(level=logging.DEBUG)
        self.labels = labels
        self.started: dict[str, float] = {}
        self.done = 0

    def emit(self, record: logging.LogRecord) -> None:
        if not has_log_record_metadata(record):
            return
        meta = get_log_record_metadata(record)
        event, step = meta["dagster_event"], meta["step_key"] or ""
        message = meta["orig_message"].strip().splitlines()[0] if meta["orig_message"].strip() else ""
        if event is None:
            # Dagster reports a step left out after an upstream failure as a plain warning.
            if message.startswith(f"Dependencies for step {step} failed"):
                self.line(step, "skipped: an upstream step failed")
            elif record.levelno >= logging.WARNING:
                print(f"  {step}: {message}", flush=True)
            return
        if event.event_type == DagsterEventType.STEP_START:
            self.started[step] = time.monotonic()
        elif event.event_type in _FINISHED:
            elapsed = time.monotonic() - self.started.get(step, time.monotonic())
            self.line(step, f"{elapsed:.1f}s{_FINISHED[event.event_type]}")

    def line(self, step: str, status: str) -> None:
        self.done += 1
        width = len(str(len(self.labels)))
        print(f"[{self.done:>{width}}/{len(self.labels)}] {self.labels.get(step, step)}  {status}", flush=True)


def progress_logger(handler: ProgressHandler) -> LoggerDefinition:
    """A Dagster logger that prints progress lines through `handler` (one handler can serve
    several runs, so the count continues); it takes the place of the console logger."""

    @logger(description="one line per finished step (bm-assets run without --verbose)")
    def progress(_init_context) -> logging.Logger:
        log = logging.Logger("bm_assets.progress", level=logging.DEBUG)
        log.addHandler(handler)
        return log

    return progress


@contextmanager
def quiet_libraries(names: Sequence[str] = ("mlflow",)) -> Iterator[None]:
    """Only warnings from these libraries' loggers while the run lasts (MLflow announces its
    database migrations at INFO)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def results_summary(report_paths: Sequence[str | Path], headline: Mapping[str, str]) -> list[str]:
    """Per evaluated task, one line: the headline test metric (`headline[task]`, the task's first
    metric; else the report's first) of each model, in the report's order."""
    lines: list[str] = []
    folders = set()
    for path in report_paths:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
        folders.add(str(Path(path).parent))
        models: dict[str, dict] = report["models"]
        found = [k for row in models.values() for k in row if k.startswith("test_")]
        metric = f"test_{headline[report['task']]}" if report["task"] in headline else next(iter(found), None)
        if metric is None:
            continue
        pick = (report.get("selected") or {}).get("model")
        cells = [f"{name}{'*' if name == pick else ''} {_short(row.get(metric))}" for name, row in models.items()]
        lines.append(f"  {report['task']:<20} {metric}: " + " | ".join(cells))
    if lines:
        where = ", ".join(sorted(folders))
        lines.insert(0, f"results (test window; * the pick on validation; reports in {where}):")
    return lines


def _short(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else "n/a" if value is None else str(value)
