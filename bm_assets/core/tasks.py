"""Tasks as config: `tasks.yaml` beside the dataset YAML names the prediction tasks (type,
horizon, target over the client's future events, eligibility, metrics) and the settings of
the foundation model and the evaluation protocol. A new task is YAML only. Targets are SQL
run in the warehouse over events_denormalized, in DuckDB's dialect."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import duckdb
import numpy as np
import pandas as pd
from pydantic import Field, ValidationError, field_validator, model_validator

from bm_assets.config import DatasetConfig, StrictModel, TaskConfigError, TemporalSplit, load_yaml_mapping
from bm_assets.core.kinds import KINDS, kind_of
from bm_assets.core.sql import (
    EVENTS_DENORMALIZED,
    UnsafeExpressionError,
    column_values_sql,
    engine_error,
    ident,
    parse_expression,
    render,
)
from bm_assets.core.warehouse import Warehouse

if TYPE_CHECKING:
    from bm_assets.core.foundation import TrainConfig

#: The task types of core/kinds.py (KINDS).
TaskType = Literal[tuple(KINDS)]  # type: ignore[valid-type]

#: Metrics each task type can report; the first one selects models on the validation window.
METRICS: dict[str, tuple[str, ...]] = {name: k.metric_names for name, k in KINDS.items()}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CRON = re.compile(r"^[0-9A-Za-z*/,?-]+(\s+[0-9A-Za-z*/,?-]+){4}$")


__all__ = ["TaskConfigError"]  # raised here, defined beside DatasetConfigError


def _checked(text: str, aggregate: bool) -> str:
    """A task's SQL as it will run: parsed, checked against the allow-list (one expression, no
    statements, tables or files) and re-rendered from the syntax tree."""
    try:
        return render(parse_expression(text, "expression", aggregate=aggregate))
    except UnsafeExpressionError as exc:
        raise ValueError(str(exc).removeprefix("expression: ")) from None


class Eligibility(StrictModel):
    """Who is scored at split date T: clients with at least one matching event in
    [T - active_days, T)."""

    active_days: int = Field(default=60, gt=0)
    where: str = Field(default="TRUE", min_length=1, description="SQL predicate on the past events")

    @field_validator("where")
    @classmethod
    def _safe(cls, v: str) -> str:
        return _checked(v, aggregate=False)


class Target(StrictModel):
    """What to predict from the client's events in [T, T + horizon_days).

    binary/regression: `value`, an SQL aggregate over the window's rows matching `where`, with
    `default` for eligible clients without such rows. multilabel/multiclass/recommendation:
    `column`, whose values (the `top_n` most frequent before the training cutoff, or all for
    recommendation) are the labels."""

    where: str = Field(default="TRUE", min_length=1, description="SQL predicate on the future events")
    value: str | None = Field(default=None, min_length=1)
    default: float | None = None
    column: str | None = None
    top_n: int | None = Field(default=None, gt=0)

    @field_validator("where")
    @classmethod
    def _safe_where(cls, v: str) -> str:
        return _checked(v, aggregate=False)

    @field_validator("value")
    @classmethod
    def _safe_value(cls, v: str | None) -> str | None:
        return None if v is None else _checked(v, aggregate=True)


class TaskSpec(StrictModel):
    name: str
    type: TaskType
    horizon_days: int = Field(gt=0)
    target: Target
    eligible: Eligibility = Field(default_factory=Eligibility)
    metrics: list[str] = Field(default_factory=list)
    learning_curve: bool = Field(default=False, description="also fit on labeled fractions")
    explain: bool = Field(
        default=False,
        description="write the top 3 reasons of every daily score to `<task>_score_reasons` (costs an "
        "attribution pass per scored client and day; global drivers are in the evaluation either way)",
    )
    description: str = ""
    top_k: int = Field(
        default=10,
        gt=0,
        description="recommendation: items kept per client and day in `<task>_scores` (export-scores' default)",
    )

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        if not _IDENTIFIER.match(self.name):
            raise ValueError(f"name {self.name!r} must be an identifier (letters, digits, _)")
        kind = kind_of(self)
        kind.check_spec(self)
        allowed = kind.metric_names
        if not self.metrics:
            object.__setattr__(self, "metrics", list(allowed))
        bad = [m for m in self.metrics if m not in allowed]
        if bad:
            raise ValueError(f"metrics {bad} do not apply to {self.type}; choose from {list(allowed)}")
        return self


class FoundationConfig(StrictModel):
    """The self-supervised model: profile at T -> sketch of events in [T, T + horizon_days)."""

    horizon_days: int = Field(default=14, gt=0)
    hidden: int = Field(default=512, gt=0)
    layers: int = Field(default=2, gt=0)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-5, ge=0)
    batch_size: int = Field(default=256, gt=0)
    max_epochs: int = Field(default=30, gt=0)
    patience: int = Field(default=3, gt=0)
    eligible: Eligibility = Field(default_factory=Eligibility)
    max_train_examples: int = Field(
        default=200_000, gt=0, description="cap on pretraining examples; above it a seeded sample is drawn"
    )
    split_every_days: int | None = Field(
        default=None,
        gt=0,
        description="step between pretraining dates; None = half the horizon (overlapping future windows: "
        "pretraining is self-supervised, so it can see more (client, date) pairs than any task has labels)",
    )

    def pretraining_step(self) -> int:
        return self.split_every_days or max(1, self.horizon_days // 2)

    def train_config(self, seed: int) -> TrainConfig:
        """The pretraining loop's settings, with `seed`."""
        from bm_assets.core.foundation import TrainConfig  # torch is imported only where a network trains

        return TrainConfig(
            lr=self.lr,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            max_epochs=self.max_epochs,
            patience=self.patience,
            seed=seed,
        )


class EvaluationConfig(StrictModel):
    """The temporal protocol's knobs; the dates come from the dataset config."""

    split_every_days: int = Field(default=7, gt=0, description="step between split dates")
    warmup_days: int = Field(default=56, ge=0, description="history before the first split date")
    holdout_fraction: float = Field(default=0.1, gt=0, lt=1)
    feature_top_n: int = Field(default=10, gt=0, description="brands/categories in the GBDT aggregates")
    feature_columns: list[str] | None = Field(
        default=None,
        description="columns whose top values get counts in the GBDT aggregates; default: the columns the "
        "multilabel/multiclass tasks target, else the dataset's categorical graph columns (at most 3)",
    )
    feature_windows_days: list[int] = Field(default_factory=lambda: [7, 30, 90])
    label_fractions: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.25, 0.5, 1.0])
    candidates: int = Field(default=2000, gt=0, description="most popular items ranked for recommendation")
    bootstrap: int = Field(
        default=200,
        ge=0,
        description="client-level bootstrap resamples for the 95% intervals of each test metric and of each "
        "model's difference from the reference baseline; 0: none",
    )
    explain_examples: int = Field(
        default=1000,
        ge=0,
        description="test examples (a seeded sample) whose attributions make each task's global drivers; 0: none",
    )
    explain_labels: int = Field(
        default=3, gt=0, description="multilabel/multiclass: global drivers for this many most frequent labels"
    )
    max_train_examples: int = Field(
        default=50_000,
        gt=0,
        description="cap on a task's training examples (client, split date); above it a seeded sample is "
        "drawn, which bounds training time; the report says when it sampled",
    )
    task_max_epochs: int = Field(default=40, gt=0)
    task_patience: int = Field(default=4, gt=0)
    task_lr: float = Field(default=1e-3, gt=0, description="learning rate from scratch")
    finetune_lr: float = Field(default=3e-4, gt=0, description="lower: keeps what pretraining learned")
    task_dropout: float | None = Field(
        default=0.5,
        ge=0,
        lt=1,
        description="dropout rate of the hidden layers of task networks with a new head (every type but "
        "recommendation, whose networks keep the sketch head and the foundation's rate), fine-tuned and from "
        "scratch alike: a task has far fewer examples than pretraining, and at the foundation's rate (0.1) its "
        "networks overfit within one or two epochs; 0.5 is the usual rate for hidden units (Srivastava et al., "
        "JMLR 2014); null: the foundation's rate",
    )
    head_epochs: int | None = Field(
        default=None,
        ge=0,
        description="fine-tuning first fits the new head and the wide path alone (pretrained layers frozen, at "
        "task_lr), then every layer at finetune_lr (linear probing, then fine-tuning: the pretrained features "
        "are not distorted by a random head's gradients). The head phase runs at most this many epochs; None: "
        "up to task_max_epochs, early-stopped with task_patience like the second phase; 0: off",
    )
    dense_bins: int = Field(
        default=0,
        ge=0,
        le=256,
        description="task networks with a new head also read the profile's dense entries (counts, value, visits, "
        "recency, tenure) through a piecewise-linear encoding with this many quantile pieces each, into the first "
        "layer, zero at the start (Gorishniy et al., NeurIPS 2022): thresholds and kinks that the first layer's "
        "single weight per entry fits poorly; 0: off",
    )
    seed: int = 0


class RetrainConfig(StrictModel):
    """When the `retrain` schedule trains new versions of the models. Each version is registered in
    MLflow and becomes the `champion` (what scoring uses) only if its validation score is at least
    the champion's."""

    cron_schedule: str = Field(
        default="0 3 * * 0", description="cron, in the dataset's timezone; default Sundays at 03:00 (weekly)"
    )
    foundation: bool = Field(default=True, description="retrain the foundation model too, before the task models")

    @field_validator("cron_schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        if not _CRON.match(v.strip()):
            raise ValueError(f"{v!r} is not a cron expression (five fields, e.g. '0 3 * * 0')")
        return v


class ModelingConfig(StrictModel):
    foundation: FoundationConfig = Field(default_factory=FoundationConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    tasks: list[TaskSpec] = Field(default_factory=list)
    config_file: Path | None = None

    @model_validator(mode="after")
    def _unique(self) -> ModelingConfig:
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate task names: {dupes}")
        return self

    def task(self, name: str) -> TaskSpec:
        return next(t for t in self.tasks if t.name == name)


def tasks_path_for(dataset_file: str | Path) -> Path:
    """tasks.yaml lives beside the dataset YAML."""
    return Path(dataset_file).resolve().parent / "tasks.yaml"


def load_modeling_config(path: str | Path) -> ModelingConfig:
    """Load and validate tasks.yaml; errors name the file and the key."""
    path = Path(path).resolve()
    raw = load_yaml_mapping(path, "task config", TaskConfigError, empty_ok=True)
    raw["config_file"] = str(path)
    try:
        return ModelingConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"key {_key(raw, e['loc'])}: {e['msg']}" for e in exc.errors())
        raise TaskConfigError(f"{path}: {problems}") from None


def _key(raw: dict, loc: tuple) -> str:
    """`tasks[2] (churn).horizon_days` rather than `tasks.2.horizon_days`."""
    parts: list[str] = []
    node: object = raw
    for p in loc:
        if isinstance(p, int) and parts:
            name = node[p].get("name") if isinstance(node, list) and isinstance(node[p], dict) else None
            parts[-1] += f"[{p}]" + (f" ({name})" if name else "")
        else:
            parts.append(str(p))
        try:
            node = node[p]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts) or "<root>"


def feature_columns(mcfg: ModelingConfig, dataset: DatasetConfig) -> list[str]:
    """The GBDT aggregate columns: configured, else what the tasks target, else a few of the
    dataset's own categorical graph columns (never a Complete Journey name)."""
    if mcfg.evaluation.feature_columns is not None:
        return list(mcfg.evaluation.feature_columns)
    targets = top_n_target_columns(mcfg)
    if targets:
        return targets
    graph = dataset.representation.graph.columns or []
    return [c for c in graph if c not in ("item_id", "event_type")][:3]


def top_n_target_columns(mcfg: ModelingConfig) -> list[str]:
    """The columns whose top values a multilabel/multiclass task predicts (brand, category)."""
    return list(dict.fromkeys(t.target.column for t in mcfg.tasks if kind_of(t).top_n_labels and t.target.column))


def task_target_columns(mcfg: ModelingConfig, dataset: DatasetConfig) -> list[str]:
    """The categorical (and list) columns the configured tasks predict (brand, category, item...)."""
    kinds = dataset.event_columns()
    cols = [t.target.column for t in mcfg.tasks if kind_of(t).column_target and t.target.column]
    return [c for c in dict.fromkeys(cols) if kinds.get(c) in ("categorical", "list")]


def with_task_columns(dataset: DatasetConfig, mcfg: ModelingConfig) -> DatasetConfig:
    """The dataset with every column a task targets among its graph and sketch columns, so the
    behavioral profiles carry what the tasks ask (a new brand task gets a brand sketch without
    anyone editing the representation). Columns already there are left as they are."""
    rep = dataset.representation
    graph = list(rep.graph.columns or [])
    missing = [c for c in task_target_columns(mcfg, dataset) if c not in graph]
    sketch = rep.sketch.columns
    sketch_missing = [c for c in task_target_columns(mcfg, dataset) if sketch is not None and c not in sketch]
    heads = rep.sketch.exact_head_columns
    if heads is None:  # the columns whose top values a task predicts get an exact first level
        kinds = dataset.event_columns()
        heads = [c for c in top_n_target_columns(mcfg) if kinds.get(c) == "categorical"]
    update: dict = {"sketch": rep.sketch.model_copy(update={"exact_head_columns": heads})}
    if missing or sketch_missing:
        update["graph"] = rep.graph.model_copy(update={"columns": graph + missing})
        if sketch is not None:
            update["sketch"] = update["sketch"].model_copy(update={"columns": list(sketch) + sketch_missing})
    return dataset.model_copy(update={"representation": rep.model_copy(update=update)})


def load_dataset_for_tasks(dataset_file: str | Path) -> DatasetConfig:
    """The dataset config as the pipeline runs it: with the columns tasks.yaml targets added to
    its representation (when a tasks.yaml sits beside it)."""
    from bm_assets.config import load_dataset_config

    cfg = load_dataset_config(dataset_file)
    tasks_file = tasks_path_for(dataset_file)
    return with_task_columns(cfg, load_modeling_config(tasks_file)) if tasks_file.exists() else cfg


def check_modeling_columns(mcfg: ModelingConfig, dataset: DatasetConfig) -> None:
    """Every column tasks.yaml names (task SQL, target columns, feature columns) exists in
    events_denormalized, checked from the configs alone, in milliseconds, before any run."""
    available = dataset.event_columns()
    where = str(mcfg.config_file)
    for i, task in enumerate(mcfg.tasks):
        exprs = {"target.where": task.target.where, "eligible.where": task.eligible.where}
        if task.target.value:
            exprs["target.value"] = task.target.value
        for key, text in exprs.items():
            try:
                parse_expression(text, f"{where}: tasks[{i}] ({task.name}).{key}", available)
            except UnsafeExpressionError as exc:
                raise TaskConfigError(str(exc)) from None
        if task.target.column == "item_id" and not dataset.has_items:
            raise TaskConfigError(
                f"{where}: tasks[{i}] ({task.name}).target.column: item_id, but no event source of "
                f"{dataset.config_file} maps item_id; target another column or drop the task"
            )
        if task.target.column and task.target.column not in available:
            raise TaskConfigError(
                f"{where}: tasks[{i}] ({task.name}).target.column: {task.target.column!r} is not a column of "
                f"events_denormalized (columns: {sorted(available)})"
            )
        if task.target.column and available[task.target.column] == "list" and not kind_of(task).top_n_labels:
            raise TaskConfigError(
                f"{where}: tasks[{i}] ({task.name}).target.column: {task.target.column!r} holds lists of values "
                f"(a list attribute or a multi_valued table), which a {task.type} task cannot rank; a multilabel "
                "or multiclass task can (each value it holds is a label)"
            )
    for c in feature_columns(mcfg, dataset):
        if c not in available:
            raise TaskConfigError(
                f"{where}: evaluation.feature_columns: {c!r} is not a column of events_denormalized "
                f"(columns: {sorted(available)})"
            )


def check_task_sql(wh: Warehouse, cfg: ModelingConfig) -> None:
    """Bind every task's SQL against events_denormalized without reading rows, so an unknown
    column fails before training with the file and key that name it."""
    table = wh.table(EVENTS_DENORMALIZED)
    for i, task in enumerate(cfg.tasks):
        exprs = {
            "target.where": f"SELECT count(*) FROM {table} WHERE {task.target.where}",
            "eligible.where": f"SELECT count(*) FROM {table} WHERE {task.eligible.where}",
        }
        if task.target.value:
            exprs["target.value"] = f"SELECT {task.target.value} FROM {table} WHERE FALSE"
        if task.target.column:
            exprs["target.column"] = f"SELECT {ident(task.target.column)} FROM {table} WHERE FALSE"
        for key, sql in exprs.items():
            try:
                wh.fetch_df(sql + " LIMIT 0" if key != "target.value" else sql)
            except Exception as exc:  # any engine's error, named by file and key
                raise TaskConfigError(
                    f"{cfg.config_file}: tasks[{i}] ({task.name}).{key}: {engine_error(exc)}"
                ) from None


def events_end(wh: Warehouse) -> dt.date | None:
    """The last event day in the warehouse (None when empty): how far the protocol can reach."""
    if not wh.table_exists(EVENTS_DENORMALIZED):
        return None
    day = wh.fetch_df(f"SELECT max(event_date) AS d FROM {wh.table(EVENTS_DENORMALIZED)}")["d"].iloc[0]
    return None if pd.isna(day) else pd.Timestamp(day).date()


def _d(day: dt.date) -> str:
    return f"DATE '{day.isoformat()}'"


# --- split dates and clients ------------------------------------------------------------------


def split_dates(start: dt.date, end: dt.date, every_days: int) -> list[dt.date]:
    """Dates start, start + every_days, ... strictly before end."""
    n = max(0, -(-(end - start).days // every_days))
    return [start + dt.timedelta(days=every_days * i) for i in range(n)]


def protocol_dates(
    data_start: dt.date, split: TemporalSplit, ev: EvaluationConfig, horizon_days: int
) -> dict[str, list[dt.date]]:
    """Split dates per role. Train: label windows end by training_cutoff. Validation: windows
    inside [training_cutoff, test_start). Test: windows inside [test_start, test_end)."""
    h = dt.timedelta(days=horizon_days)
    first = data_start + dt.timedelta(days=ev.warmup_days)
    roles = {
        "train": split_dates(first, split.training_cutoff - h + dt.timedelta(days=1), ev.split_every_days),
        "validation": split_dates(
            split.training_cutoff, split.test_start - h + dt.timedelta(days=1), ev.split_every_days
        ),
        "test": split_dates(split.test_start, split.test_end - h + dt.timedelta(days=1), ev.split_every_days),
    }
    for role, dates in roles.items():
        if not dates:
            raise TaskConfigError(
                f"no {role} split date fits a {horizon_days}-day horizon in {split}; shorten the horizon"
            )
    return roles


def is_holdout(client_ids: np.ndarray, fraction: float) -> np.ndarray:
    """bool[n]: a stable draw of clients never used for training: the first 8 bytes of
    md5(client_id) as a little-endian integer, over 2**64, below `fraction`. Vectorised in an
    in-memory DuckDB (the same expression runs in the warehouse)."""
    con = duckdb.connect()
    try:
        con.register("ids", pd.DataFrame({"c": np.asarray(client_ids).astype(str)}))
        u = con.execute("SELECT md5_number_upper(c) AS u FROM ids").df()["u"].to_numpy(np.float64)
    finally:
        con.close()
    return u / 2.0**64 < fraction


def _splits_cte(dates: list[dt.date]) -> str:
    """`splits(t)`, one row per split date. A UNION ALL rather than a VALUES list: VALUES with
    column aliases does not translate to BigQuery (its struct fields lose the alias)."""
    return "splits AS (" + " UNION ALL ".join(f"SELECT {_d(d)} AS t" for d in dates) + ")"


def eligible_sql(wh: Warehouse, eligible: Eligibility, dates: list[dt.date]) -> str:
    """(client_id, t) of clients with a matching event in [t - active_days, t)."""
    return f"""
        WITH {_splits_cte(dates)}
        SELECT DISTINCT e.client_id, s.t
        FROM {wh.table(EVENTS_DENORMALIZED)} e JOIN splits s
          ON e.event_date >= s.t - INTERVAL {eligible.active_days} DAY AND e.event_date < s.t
        WHERE {eligible.where}"""


def eligible_clients(wh: Warehouse, eligible: Eligibility, dates: list[dt.date]) -> pd.DataFrame:
    """Examples (client_id str, t date), sorted, one row per eligible client and split date."""
    df = wh.fetch_df(eligible_sql(wh, eligible, dates) + " ORDER BY s.t, e.client_id")
    return _normalise(df)


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    df["client_id"] = df["client_id"].astype(str)
    df["t"] = pd.to_datetime(df["t"]).dt.date
    return df.reset_index(drop=True)


def value_counts(
    wh: Warehouse, column: str, where: str, before: dt.date, n: int | None, is_list: bool = False
) -> pd.DataFrame:
    """(v, n): the n most frequent values of `column` among events matching `where` before
    `before` (the training cutoff: labels never look at the evaluated windows), with counts;
    each value a list column's cells hold counts on its own (a comedy drama is a comedy)."""
    limit = f"LIMIT {n}" if n else ""
    value, parts = column_values_sql(column, is_list)
    return wh.fetch_df(
        f"""SELECT {value} AS v, count(*) AS n FROM {wh.table(EVENTS_DENORMALIZED)} e{parts}
        WHERE e.event_date < {_d(before)} AND ({where}) AND e.{ident(column)} IS NOT NULL
        GROUP BY 1 ORDER BY n DESC, v {limit}"""
    )


def top_values(
    wh: Warehouse, column: str, where: str, before: dt.date, n: int | None, is_list: bool = False
) -> list[str]:
    return value_counts(wh, column, where, before, n, is_list)["v"].tolist()


def exact_head_values(wh: Warehouse, columns: list[str], cutoff: dt.date, width: int) -> dict[str, list[str]]:
    """Per column, the `width - 1` most frequent values over every event before `cutoff`: the
    values a sketch coder's exact first level gives a bucket of their own (with_exact_head)."""
    return {c: top_values(wh, c, "TRUE", cutoff, width - 1) for c in columns}


def future_window_sql(wh: Warehouse, dates: list[dt.date], horizon_days: int, where: str, cols: str) -> str:
    """Rows (client_id, t, cols...) of the events in [t, t + horizon_days) matching `where`."""
    return f"""
        WITH {_splits_cte(dates)}
        SELECT e.client_id, s.t, {cols}
        FROM {wh.table(EVENTS_DENORMALIZED)} e JOIN splits s
          ON e.event_date >= s.t AND e.event_date < s.t + INTERVAL {horizon_days} DAY
        WHERE {where}"""


def build_labels(
    wh: Warehouse, task: TaskSpec, examples: pd.DataFrame, labels: list[str] | None, lists: Collection[str] = ()
) -> np.ndarray:
    """Targets aligned with `examples` (client_id, t), as the task's kind builds them from the
    rows of each example's future window (core/kinds.py). `lists`: the dataset's list columns
    (DatasetConfig.list_columns), whose every value is a label."""
    kind = kind_of(task)
    dates = sorted(set(examples["t"]))
    window = future_window_sql(wh, dates, task.horizon_days, task.target.where, "e.*")
    rows = _normalise(wh.fetch_df(kind.label_query(task, window, task.target.column in lists)))
    return kind.label_array(task, rows, pd.MultiIndex.from_frame(examples[["client_id", "t"]]), labels)


def label_counts(
    wh: Warehouse, task: TaskSpec, cutoff: dt.date, candidates: int, lists: Collection[str] = ()
) -> pd.DataFrame | None:
    """(v, n) of the values the task's labels are drawn from, before the cutoff only, most
    frequent first; None for a kind without labels."""
    n = kind_of(task).label_count(task, candidates)
    if n is None:
        return None
    column = task.target.column
    counts = value_counts(wh, column, task.target.where, cutoff, n, column in lists)
    if counts.empty:
        raise TaskConfigError(f"{task.name}: target.column {task.target.column} has no values before {cutoff}")
    return counts


def task_labels(
    wh: Warehouse, task: TaskSpec, cutoff: dt.date, candidates: int, lists: Collection[str] = ()
) -> list[str] | None:
    """Label names for column tasks, from events before the cutoff only."""
    counts = label_counts(wh, task, cutoff, candidates, lists)
    return None if counts is None else counts["v"].tolist()


def check_target_not_empty(task: TaskSpec, y: np.ndarray, role: str) -> None:
    """A target with one value only cannot be learned or evaluated: fail loudly."""
    if y.size == 0:
        raise TaskConfigError(f"{task.name}: no {role} examples (no eligible clients)")
    problem = kind_of(task).empty_target(y)
    if problem is not None:
        raise TaskConfigError(f"{task.name}: the target is empty: {problem} among {len(y)} {role} examples")
