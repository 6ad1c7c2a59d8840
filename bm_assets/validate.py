"""`bm-assets validate`: both YAML files checked against the data in seconds, before a run.

It runs the real ingest, attribute and join SQL on an in-memory DuckDB (nothing is written to
BM_HOME), then the task targets on the protocol's split dates, and reports what a user needs
to see before spending minutes on a run: columns, timestamp parse rate, what lands in
quarantine and why, the date range, and per task the examples and label rates per window."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bm_assets.config import DatasetConfig, load_dataset_config
from bm_assets.core.attributes import AttributeDataError, build_client_properties, build_product_catalog
from bm_assets.core.denormalize import denormalize_window
from bm_assets.core.ingest import ingest_window
from bm_assets.core.kinds import kind_of
from bm_assets.core.quality import ingest_quality
from bm_assets.core.sql import EVENTS_DENORMALIZED, QUARANTINE, RAW_EVENTS
from bm_assets.core.tasks import (
    ModelingConfig,
    TaskConfigError,
    build_labels,
    check_modeling_columns,
    check_task_sql,
    eligible_clients,
    load_modeling_config,
    protocol_dates,
    task_labels,
    tasks_path_for,
)
from bm_assets.core.warehouse import DuckDBWarehouse, SourceReadError


@dataclass
class ValidationReport:
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def text(self) -> str:
        out = list(self.lines)
        out += [f"WARNING: {w}" for w in self.warnings]
        out += [f"ERROR: {e}" for e in self.errors]
        out.append("OK: the configs fit the data" if self.ok else f"FAILED: {len(self.errors)} error(s)")
        return "\n".join(out)


def _scalar(wh: DuckDBWarehouse, sql: str) -> object:
    return wh.fetch_df(sql).iloc[0, 0]


def validate_dataset(dataset_file: str | Path) -> ValidationReport:
    """Load both configs (errors name file and key), ingest everything in memory, summarise."""
    rep = ValidationReport()
    cfg = load_dataset_config(dataset_file)  # raises DatasetConfigError with file and key
    rep.lines.append(f"dataset {cfg.name}: {cfg.config_file}")
    live = f" (live: up to yesterday in {cfg.timezone})" if cfg.data_end is None else ""
    rep.lines.append(
        f"  range {cfg.data_start} .. {cfg.last_day}{live}; validation from {cfg.temporal.training_cutoff}, "
        f"test {cfg.temporal.test_start} .. {cfg.temporal.test_end} (exclusive)"
    )
    rep.lines.append(f"  graph/sketch columns: {cfg.representation.graph.columns}")
    tasks_file = tasks_path_for(dataset_file)
    mcfg = load_modeling_config(tasks_file) if tasks_file.exists() else None
    if mcfg is not None:
        check_modeling_columns(mcfg, cfg)
    wh = DuckDBWarehouse(":memory:")
    try:
        try:
            _check_events(wh, cfg, rep)
        except (SourceReadError, AttributeDataError) as exc:  # the data, not the config: name the file and row
            rep.errors.append(str(exc))
        if mcfg is not None and rep.ok:
            _check_tasks(wh, cfg, mcfg, rep)
        elif mcfg is None:
            rep.lines.append(f"no {tasks_file.name} beside the dataset YAML: the run stops at the representations")
    finally:
        wh.close()
    return rep


def _check_events(wh: DuckDBWarehouse, cfg: DatasetConfig, rep: ValidationReport) -> None:
    """Ingest the whole range; judge its quarantine rate by the dataset's limits, as the
    quarantine_rate check of a run over the whole range would."""
    ingest = ingest_window(wh, cfg, cfg.data_start, cfg.end_exclusive)
    for s in ingest.sources:
        share = s.rows_quarantined / s.rows_in if s.rows_in else 0.0
        rep.lines.append(
            f"source {s.source}: {s.rows_in} rows, {s.rows_loaded} loaded, {s.rows_quarantined} quarantined "
            f"({share:.1%})" + (f"; columns not used: {s.ignored_columns}" if s.ignored_columns else "")
        )
        if s.rows_in == 0:
            rep.errors.append(f"source {s.source}: the file holds no rows")
        elif s.rows_loaded == 0:
            rep.errors.append(f"source {s.source}: every row is quarantined; see the reasons above")
    rate = ingest_quality(wh, cfg.data_start, cfg.end_exclusive).quarantine_rate
    limits = cfg.quarantine
    if rate > limits.error_rate:
        rep.errors.append(
            f"{rate:.1%} of the rows in the date range quarantined, above quarantine.error_rate "
            f"{limits.error_rate:.0%}: a run over the whole range would fail its quarantine_rate check"
        )
    elif rate > limits.warn_rate:
        rep.warnings.append(
            f"{rate:.1%} of the rows in the date range quarantined (quarantine.warn_rate {limits.warn_rate:.0%})"
        )
    reasons = wh.fetch_df(
        f"SELECT source, reason, count(*) AS n, min(source_row) AS first_row FROM {QUARANTINE} "
        "GROUP BY ALL ORDER BY n DESC LIMIT 8"
    )
    for r in reasons.itertuples():
        rep.lines.append(f"  quarantine [{r.source}] {r.n} rows (first at row {r.first_row}): {r.reason}")
    span = wh.fetch_df(
        f"SELECT min(event_date) AS a, max(event_date) AS b, count(DISTINCT client_id) AS c FROM {RAW_EVENTS}"
    )
    if ingest.rows_loaded:
        rep.lines.append(
            f"events {ingest.rows_loaded} from {span['a'].iloc[0].date()} to {span['b'].iloc[0].date()}, "
            f"{int(span['c'].iloc[0])} clients"
        )
    clients = build_client_properties(wh, cfg)
    items = build_product_catalog(wh, cfg)
    for build in (clients, items):
        skipped = {k: v for k, v in (build.skipped_rows or {}).items() if v}
        rep.lines.append(
            f"{build.table}: {build.rows} rows, columns {list(build.columns)}"
            + (f"; lines without a key skipped: {skipped}" if skipped else "")
        )
    denormalize_window(wh, cfg.data_start, cfg.end_exclusive, covers_all_days=True)
    if cfg.has_items and items.rows:
        share = float(
            _scalar(
                wh,
                f"SELECT avg(CASE WHEN item_in_catalog THEN 1 ELSE 0 END) FROM {EVENTS_DENORMALIZED} "
                "WHERE item_id IS NOT NULL",
            )
            or 0.0
        )
        rep.lines.append(f"catalog coverage: {share:.1%} of events with an item")
        if share < cfg.catalog_coverage_min:
            rep.warnings.append(
                f"catalog coverage {share:.1%} is below catalog_coverage_min {cfg.catalog_coverage_min}"
            )


def _check_tasks(wh: DuckDBWarehouse, cfg: DatasetConfig, mcfg: ModelingConfig, rep: ValidationReport) -> None:
    try:
        check_task_sql(wh, mcfg)
    except TaskConfigError as exc:
        rep.errors.append(str(exc))
        return
    cutoff = cfg.temporal.training_cutoff
    for task in mcfg.tasks:
        try:
            dates = protocol_dates(cfg.data_start, cfg.temporal, mcfg.evaluation, task.horizon_days)
            labels = task_labels(wh, task, cutoff, mcfg.evaluation.candidates, cfg.list_columns())
        except TaskConfigError as exc:
            rep.errors.append(str(exc))
            continue
        parts = []
        for role in ("train", "validation", "test"):
            ex = eligible_clients(wh, task.eligible, dates[role])
            if ex.empty:
                rep.errors.append(f"task {task.name}: no eligible client on the {role} split dates")
                continue
            y = build_labels(wh, task, ex, labels, cfg.list_columns())
            kind = kind_of(task)
            parts.append(f"{role} {len(ex)} examples on {len(dates[role])} dates, {kind.label_rate(y)}")
            problem = kind.empty_target(y)
            if problem is not None:
                rep.errors.append(f"task {task.name}: {problem} in the {role} window")
        rep.lines.append(f"task {task.name} ({task.type}, {task.horizon_days} days): " + "; ".join(parts))
