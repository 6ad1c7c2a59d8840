"""The dataset contract: a YAML file maps a user's tables onto roles (events, client and item
attributes). Validated on load against the files it names, so a wrong config fails before any
data is written, with a message naming the config file and the key."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Literal

import duckdb
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ColumnKind = Literal["categorical", "numeric", "text"]

#: Column names of the canonical event table; attribute and context columns may not reuse them.
CANONICAL_EVENT_COLUMNS = (
    "event_id",
    "source",
    "source_file",
    "source_row",
    "client_id",
    "item_id",
    "event_time",
    "event_date",
    "event_type",
    "quantity",
    "value",
)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DatasetConfigError(ValueError):
    """A dataset config that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimestampSpec(_Strict):
    """Where an event's time is and how to parse it. No format: the column is a native
    timestamp/date or an ISO-8601 string."""

    column: str
    format: str | None = Field(default=None, description="strptime format, e.g. '%Y-%m-%d %H:%M:%S'")

    @field_validator("format")
    @classmethod
    def _format_is_strptime(cls, fmt: str | None) -> str | None:
        if fmt is None:
            return fmt
        if "%" not in fmt:
            raise ValueError(f"timestamp format {fmt!r} has no % directive")
        try:
            duckdb.execute("SELECT try_strptime('2000-01-01', ?)", [fmt]).fetchall()
        except duckdb.Error as exc:
            raise ValueError(f"invalid timestamp format {fmt!r}: {exc}") from None
        return fmt


class EventSource(_Strict):
    """One file (or glob) of events; several sources form one client event stream."""

    name: str
    path: str
    format: Literal["csv", "parquet"] | None = None
    client_id: str
    item_id: str
    timestamp: TimestampSpec
    event_type: str | None = Field(default=None, description="column holding the event type")
    event_type_value: str | None = Field(default=None, description="constant type; default: the source name")
    quantity: str | None = None
    value: str | None = None
    event_id: str | None = Field(default=None, description="unique id column; duplicates are kept once")
    item_prefix: str = Field(default="", description="namespace prepended to item ids, e.g. 'coupon:'")
    context: dict[str, ColumnKind] = Field(default_factory=dict, description="extra columns kept as is")

    @model_validator(mode="after")
    def _infer_format(self) -> EventSource:
        if self.format is None:
            suffix = Path(self.path).suffix.lower()
            inferred = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}.get(suffix)
            if inferred is None:
                raise ValueError(f"cannot infer format of {self.path!r}; set format: csv|parquet")
            object.__setattr__(self, "format", inferred)
        if self.event_type and self.event_type_value:
            raise ValueError("set event_type (a column) or event_type_value (a constant), not both")
        return self

    def required_columns(self) -> dict[str, str]:
        """Role -> source column, for every role this source maps."""
        roles = {
            "client_id": self.client_id,
            "item_id": self.item_id,
            "timestamp.column": self.timestamp.column,
            "event_type": self.event_type,
            "quantity": self.quantity,
            "value": self.value,
            "event_id": self.event_id,
        }
        roles.update({f"context.{c}": c for c in self.context})
        return {role: col for role, col in roles.items() if col}


class AttributeTable(_Strict):
    """A client or item attribute table keyed by the client/item id. A multi-valued table
    (several rows per key, e.g. campaigns a client received) is aggregated to one row per key:
    a row count plus the sorted distinct values of each column joined by '|'."""

    name: str
    path: str
    format: Literal["csv", "parquet"] | None = None
    key: str
    key_prefix: str = ""
    columns: dict[str, ColumnKind] | None = Field(default=None, description="allow-list; None = all")
    deny: list[str] = Field(default_factory=list)
    multi_valued: bool = False

    @model_validator(mode="after")
    def _infer_format(self) -> AttributeTable:
        if self.format is None:
            suffix = Path(self.path).suffix.lower()
            object.__setattr__(self, "format", "csv" if suffix == ".csv" else "parquet")
        return self


class TemporalSplit(_Strict):
    """The temporal protocol's dates. Training uses events before `training_cutoff`; the
    validation window is [training_cutoff, test_start); the test window [test_start, test_end)."""

    training_cutoff: dt.date
    test_start: dt.date
    test_end: dt.date = Field(description="end of the test window, exclusive")

    @model_validator(mode="after")
    def _ordered(self) -> TemporalSplit:
        if not self.training_cutoff < self.test_start < self.test_end:
            raise ValueError(
                f"need training_cutoff < test_start < test_end, found {self.training_cutoff}, "
                f"{self.test_start}, {self.test_end}"
            )
        return self


class GraphConfig(_Strict):
    """Which event columns form the hyperedges of `temporal_graph`, and how they are grouped."""

    columns: list[str] = Field(
        default_factory=lambda: ["item_id", "manufacturer_id", "product_category", "department", "store_id"],
        min_length=1,
        description="events_denormalized columns whose values become graph nodes",
    )
    window_days: int = Field(
        default=7, ge=1, description="one hyperedge per client and window of this length"
    )
    basket_column: str | None = Field(
        default="basket_id", description="also one hyperedge per basket, where this column exists and is set"
    )
    expansion: Literal["clique", "star"] = Field(
        default="star",
        description="clique: every pair of a hyperedge's nodes is an edge (k^2 edges); star: the hyperedge "
        "is a node linked to its members (k edges), which scales to large windows",
    )


class CleoraConfig(_Strict):
    """pycleora settings for `entity_embeddings`."""

    dim: int = Field(default=64, ge=2)
    iterations: int = Field(default=4, ge=1)
    whiten: bool = False
    propagation: Literal["left", "symmetric"] = "left"


class InductiveConfig(_Strict):
    """Items never seen before the cutoff are embedded as the mean of their attributes' embeddings
    (looked up in product_catalog), so a new item still has a sketch code."""

    column: str = "item_id"
    attributes: list[str] = Field(
        default_factory=lambda: ["manufacturer_id", "product_category", "department"],
        description="product_catalog columns that are also graph columns",
    )


class SketchConfig(_Strict):
    """EMDE coders: `depth` independent partitions of the embedding space into 2**bits buckets."""

    columns: list[str] | None = Field(
        default=None, description="graph columns that get a coder and a profile sketch; None = all"
    )
    depth: int = Field(default=8, ge=1)
    bits: int = Field(default=6, ge=1, le=16)

    @property
    def width(self) -> int:
        return 2**self.bits


class ProfileConfig(_Strict):
    """Behavioral profiles: sketches and counts decayed with each half-life (days)."""

    half_lives_days: list[float] = Field(default_factory=lambda: [7.0, 60.0], min_length=1)

    @field_validator("half_lives_days")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        if any(v <= 0 for v in values):
            raise ValueError(f"half-lives must be > 0 days, found {values}")
        return values


class RepresentationConfig(_Strict):
    """Settings of the representation stage: graph, Cleora embeddings, EMDE coders, profiles."""

    graph: GraphConfig = Field(default_factory=GraphConfig)
    cleora: CleoraConfig = Field(default_factory=CleoraConfig)
    inductive: InductiveConfig | None = Field(default_factory=InductiveConfig)
    sketch: SketchConfig = Field(default_factory=SketchConfig)
    profile: ProfileConfig = Field(default_factory=ProfileConfig)
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> RepresentationConfig:
        graph_cols = self.graph.columns
        if len(set(graph_cols)) != len(graph_cols):
            raise ValueError(f"graph.columns has duplicates: {graph_cols}")
        unknown = [c for c in self.sketch.columns or [] if c not in graph_cols]
        if unknown:
            raise ValueError(f"sketch.columns {unknown} are not graph.columns {graph_cols}")
        if self.inductive is not None:
            if self.inductive.column not in graph_cols:
                raise ValueError(
                    f"inductive.column {self.inductive.column!r} is not in graph.columns {graph_cols}"
                )
            missing = [c for c in self.inductive.attributes if c not in graph_cols]
            if missing:
                raise ValueError(f"inductive.attributes {missing} are not graph.columns {graph_cols}")
        return self

    @property
    def sketch_columns(self) -> list[str]:
        return list(self.sketch.columns or self.graph.columns)


class DatasetConfig(_Strict):
    name: str
    data_start: dt.date
    data_end: dt.date = Field(description="last day (inclusive) of the event range")
    events: list[EventSource] = Field(min_length=1)
    clients: list[AttributeTable] = Field(default_factory=list)
    items: list[AttributeTable] = Field(default_factory=list)
    catalog_coverage_min: float = Field(default=0.9, ge=0, le=1)
    temporal: TemporalSplit
    representation: RepresentationConfig = Field(default_factory=RepresentationConfig)
    base_dir: Path = Field(default=Path("."), description="folder relative paths resolve against")
    config_file: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> DatasetConfig:
        if self.data_end < self.data_start:
            raise ValueError(f"data_end {self.data_end} is before data_start {self.data_start}")
        t = self.temporal
        if not (self.data_start < t.training_cutoff and t.test_end <= self.end_exclusive):
            raise ValueError(
                f"temporal dates must lie inside [{self.data_start}, {self.end_exclusive}]: "
                f"training_cutoff {t.training_cutoff}, test_end {t.test_end}"
            )
        names = [s.name for s in self.events] + [t.name for t in self.clients + self.items]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate source/table names: {dupes}")
        for n in names:
            if not _IDENTIFIER.match(n):
                raise ValueError(f"name {n!r} must be a SQL identifier (letters, digits, _)")
        return self

    def resolve(self, path: str) -> str:
        p = Path(path)
        return str(p if p.is_absolute() else (self.base_dir / p).resolve())

    @property
    def end_exclusive(self) -> dt.date:
        return self.data_end + dt.timedelta(days=1)

    def context_columns(self) -> dict[str, ColumnKind]:
        """Union of the event sources' context columns, in config order."""
        out: dict[str, ColumnKind] = {}
        for s in self.events:
            out.update(s.context)
        return out


def source_schema(path: str, fmt: str) -> dict[str, str]:
    """Column -> DuckDB type of a file, read from its header/footer only."""
    reader = (
        f"read_parquet('{_sql_str(path)}')"
        if fmt == "parquet"
        else (f"read_csv('{_sql_str(path)}', header=true, all_varchar=true, ignore_errors=true)")
    )
    rows = duckdb.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()
    return {r[0]: r[1] for r in rows}


def _sql_str(value: str) -> str:
    return value.replace("'", "''")


def attribute_columns(table: AttributeTable, schema: dict[str, str]) -> dict[str, ColumnKind]:
    """Source columns kept after the allow/deny lists; kinds inferred from types if not given."""
    if table.columns is not None:
        cols = dict(table.columns)
    else:
        numeric = ("INT", "DOUBLE", "FLOAT", "DECIMAL", "REAL")
        cols = {
            c: ("numeric" if any(t in ty.upper() for t in numeric) else "categorical")
            for c, ty in schema.items()
            if c != table.key
        }
    return {c: k for c, k in cols.items() if c not in table.deny}


def attribute_output_name(table: AttributeTable, column: str) -> str:
    """Name of an attribute in client_properties/product_catalog. Multi-valued tables are
    aggregated, so their columns are qualified by the table name (they hold '|' lists)."""
    return f"{table.name}_{column}" if table.multi_valued else column


def _check_files(cfg: DatasetConfig, where: str) -> None:
    """Every mapped column exists in its file; attribute columns don't collide."""
    seen_attr: dict[str, str] = {}
    for i, src in enumerate(cfg.events):
        path = cfg.resolve(src.path)
        schema = _schema_or_error(path, src.format or "parquet", f"{where}: events[{i}].path")
        for role, col in src.required_columns().items():
            if col not in schema:
                raise DatasetConfigError(
                    f"{where}: events[{i}] ({src.name}).{role} names column {col!r}, "
                    f"which is not in {path} (columns: {sorted(schema)})"
                )
        for c in src.context:
            if c in CANONICAL_EVENT_COLUMNS:
                raise DatasetConfigError(f"{where}: events[{i}].context.{c} reuses a canonical column name")
    for role in ("clients", "items"):
        for i, table in enumerate(getattr(cfg, role)):
            path = cfg.resolve(table.path)
            schema = _schema_or_error(path, table.format or "parquet", f"{where}: {role}[{i}].path")
            if table.key not in schema:
                raise DatasetConfigError(
                    f"{where}: {role}[{i}] ({table.name}).key names column {table.key!r}, "
                    f"which is not in {path} (columns: {sorted(schema)})"
                )
            for c in attribute_columns(table, schema):
                out = attribute_output_name(table, c)
                if c not in schema:
                    raise DatasetConfigError(
                        f"{where}: {role}[{i}] ({table.name}).columns.{c} is not in {path} "
                        f"(columns: {sorted(schema)})"
                    )
                if out in CANONICAL_EVENT_COLUMNS or out in cfg.context_columns():
                    raise DatasetConfigError(
                        f"{where}: {role}[{i}].columns.{c} collides with event column {out!r}; deny it"
                    )
                if out in seen_attr:
                    raise DatasetConfigError(
                        f"{where}: {role}[{i}].columns.{c} is also an attribute of {seen_attr[out]}; deny one"
                    )
                seen_attr[out] = table.name


def _schema_or_error(path: str, fmt: str, where: str) -> dict[str, str]:
    if not any(ch in path for ch in "*?[") and not Path(path).exists():
        raise DatasetConfigError(f"{where}: file {path} does not exist")
    try:
        return source_schema(path, fmt)
    except duckdb.Error as exc:
        raise DatasetConfigError(f"{where}: cannot read {path} as {fmt}: {exc}") from None


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: str) -> str:
    """Expand ${VAR} and ${VAR:-default} so one YAML serves several machines."""
    return _ENV_REF.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), value)


def load_dataset_config(path: str | Path, check_files: bool = True) -> DatasetConfig:
    """Load and validate a dataset YAML. Relative paths inside resolve against its folder."""
    path = Path(path).resolve()
    if not path.exists():
        raise DatasetConfigError(f"dataset config {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DatasetConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise DatasetConfigError(f"{path}: expected a mapping at the top level")
    raw["base_dir"] = str((path.parent / _expand_env(str(raw.get("base_dir", ".")))).resolve())
    raw["config_file"] = str(path)
    try:
        cfg = DatasetConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"key {'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise DatasetConfigError(f"{path}: {problems}") from None
    if check_files:
        _check_files(cfg, str(path))
    return cfg
