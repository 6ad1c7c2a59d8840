"""The dataset contract: a YAML file maps a user's tables onto roles (events, client and item
attributes). Validated on load against the files it names, so a wrong config fails before any
data is written, with a message naming the config file and the key."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bm_assets.core.sql import ident, literal

ColumnKind = Literal["categorical", "numeric", "text"]
#: An attribute column may also hold a list of categories in one cell ("Action|Comedy"): each
#: value is its own graph node and the list is sketched as the mean of its values' embeddings.
AttributeKind = Literal["categorical", "numeric", "text", "list"]

#: Column names of the canonical event table; attribute and context columns may not reuse them.
CANONICAL_EVENT_COLUMNS = (
    "event_id",
    "basket_id",
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

#: Longest column name kept from a user's file or config (DuckDB allows more, BigQuery 300).
MAX_COLUMN_NAME = 255

#: Columns the pipeline itself adds beside the canonical ones (staging and the join).
_PIPELINE_COLUMNS = ("item_in_catalog", "client_in_properties")


def column_name_problem(name: str) -> str | None:
    """Why a column name from a user's file or config cannot become a warehouse column, or None.
    Any other name is fine: every identifier goes through `core.sql.ident`, so `order`,
    `store id` or a name holding quotes and semicolons is just a name."""
    shown = repr(name if len(name) <= 60 else name[:60] + "...")
    if not name.strip():
        return "a column name is empty"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return f"column name {shown} holds a control character (NUL, newline, tab...); rename the column"
    if len(name) > MAX_COLUMN_NAME:
        return f"column name {shown} is {len(name)} characters long; at most {MAX_COLUMN_NAME}"
    if name.startswith("__"):
        return f"column name {shown} starts with '__', which the pipeline reserves for its own columns"
    return None


def _check_names(names: list[str]) -> None:
    """Raise (for the config key being validated) on a name that cannot be a column, or on two
    names that are the same column."""
    for i, name in enumerate(names):
        problem = column_name_problem(name)
        if problem:
            raise ValueError(problem)
        clash = _same_column(name, names[:i])
        if clash:
            raise ValueError(f"columns {clash!r} and {name!r} are the same SQL column (names ignore case)")


def _same_column(name: str, others: Iterable[str]) -> str | None:
    """The name among `others` that is the same SQL column as `name` (identifiers are
    case-insensitive in DuckDB and BigQuery), or None."""
    return next((o for o in others if o.lower() == name.lower()), None)


class DatasetConfigError(ValueError):
    """A dataset config that cannot be used; the message names the file and the key."""


class TaskConfigError(ValueError):
    """A task config that cannot be used; the message names the file and the key."""


class StrictModel(BaseModel):
    """Base of every config model (dataset.yaml, tasks.yaml): unknown keys are errors, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _safe_expression(text: str) -> str:
    expression_columns(text, "expr")  # raises ValueError naming what is refused
    return text


#: A user's SQL expression over one row's columns, checked against the allow-list at load.
SafeExpression = Annotated[str, AfterValidator(_safe_expression)]


class Derived(StrictModel):
    """A value computed from the source's columns: one SQL expression (DuckDB dialect) over the
    columns of one row, e.g. `{expr: "Quantity * UnitPrice"}`. Checked at load: a single
    expression, allow-listed functions, no tables or files (see docs/configuration.md)."""

    expr: SafeExpression = Field(min_length=1, description="SQL expression over the source's columns")


#: A role is a source column (its name) or a derived value ({expr: ...}).
ColumnRef = str | Derived


class ContextColumn(StrictModel):
    """An extra event column with its kind; `expr` derives it from the source's columns."""

    kind: ColumnKind = "categorical"
    expr: SafeExpression | None = Field(default=None, description="SQL expression; default: the column of this name")


class CsvOptions(StrictModel):
    """How a CSV file is laid out where the reader should not guess: many log exports have no
    header line (name the columns here) or a delimiter the sniffer can mistake."""

    header: bool = Field(default=True, description="the first line names the columns; false: name them in `columns`")
    columns: list[str] | None = Field(
        default=None, description="with header: false, the names of the file's columns, in file order"
    )
    delimiter: str | None = Field(
        default=None, min_length=1, max_length=1, description="one character, e.g. ';' or '|'; default: sniffed"
    )

    @model_validator(mode="after")
    def _names_where_no_header(self) -> CsvOptions:
        if not self.header and not self.columns:
            raise ValueError("csv.header is false: name the file's columns in csv.columns, in file order")
        if self.header and self.columns is not None:
            raise ValueError("csv.columns names the columns of a file without a header line: set csv.header: false")
        _check_names(self.columns or [])
        return self

    @property
    def header_lines(self) -> int:
        """Lines before the first data line: file line numbers of data rows are row + this."""
        return 1 if self.header else 0

    def reader_options(self, named: bool = True) -> str:
        """read_csv options for this layout (DuckDB); named=False reads a headerless file with
        the reader's own column names (to count its columns)."""
        opts = ["header=true"] if self.header else ["header=false"]
        if not self.header and named:
            opts.append("names=[" + ", ".join(map(literal, self.columns or [])) + "]")
        if self.delimiter:
            opts.append(f"delim={literal(self.delimiter)}")
        return ", ".join(opts)


def csv_columns_problem(path: str, csv: CsvOptions) -> str | None:
    """Where `csv.columns` names more or fewer columns than a headerless file has (the reader
    would silently drop the names, or invent some), what to fix; None when they match."""
    if csv.header:
        return None
    options = csv.reader_options(named=False)
    found = duckdb.execute(
        f"DESCRIBE SELECT * FROM read_csv({literal(path)}, {options}, all_varchar=true, ignore_errors=true)"
    ).fetchall()
    n = len(csv.columns or [])
    if len(found) == n:
        return None
    return f"{path}: csv.columns names {n} column(s) but the file's lines have {len(found)}: name each, in file order"


#: A file format: CSV (any delimiter), Parquet, or JSON lines (one JSON object per line).
FileFormat = Literal["csv", "parquet", "json"]

#: File endings whose format needs no `format:` key (the text readers decompress .gz and .zst).
_FORMAT_ENDINGS: dict[str, FileFormat] = {
    **{f"{ext}{z}": "csv" for ext in (".csv", ".tsv", ".txt") for z in ("", ".gz", ".zst")},
    **{f"{ext}{z}": "json" for ext in (".jsonl", ".ndjson", ".json") for z in ("", ".gz", ".zst")},
    ".parquet": "parquet",
    ".pq": "parquet",
}

#: Lines of a JSON-lines file read to list its keys at config load (the whole file at ingest).
JSON_SCHEMA_LINES = 20_480


def json_lines_reader(path: str, rejects: str | None = None) -> str:
    """A DuckDB table function giving each line of a JSON-lines file as text (`line`; NULL for a
    blank line), in file order. The delimiter is a control character no valid JSON line holds
    raw, so every line is one row and keeps its number; a bad line is quarantined, not skipped."""
    opts = "columns={'line': 'VARCHAR'}, header=false, delim='\x01', quote='', escape='', auto_detect=false"
    if rejects:
        opts += f", store_rejects=true, rejects_table={literal(rejects)}, rejects_scan={literal(rejects + '_scan')}"
    else:
        opts += ", ignore_errors=true"
    return f"read_csv({literal(path)}, {opts})"


#: True where a JSON-lines `line` is one JSON object (json_type errs on invalid JSON: test first).
JSON_OBJECT = "CASE WHEN json_valid(line) THEN json_type(line) = 'OBJECT' ELSE FALSE END"


def json_rows_sql(keys: list[str], source: str, extra: str = "") -> str:
    """SELECT over `source` (rows with a `line`) giving each JSON-object line's top-level `keys`
    as text columns (nested objects and arrays as JSON text), as a CSV column is read, plus
    `extra` columns of `source`. One extraction of all keys parses each line once."""
    paths = "[" + ", ".join(literal("$." + json.dumps(k)) for k in keys) + "]"
    columns = ", ".join(f"v[{i}] AS {ident(k)}" for i, k in enumerate(keys, start=1))
    more = f", {extra}" if extra else ""
    return (
        f"SELECT {columns}{more} FROM (SELECT json_extract_string(line, {paths}) AS v{more} FROM {source} "
        f"WHERE {JSON_OBJECT})"
    )


def json_keys_sql(reader: str, lines: int | None = None) -> str:
    """The top-level keys of the objects among the first `lines` lines (all where None), in the
    order they first appear."""
    limit = f" LIMIT {lines}" if lines else ""
    return f"""SELECT k FROM (
            SELECT unnest(json_keys(line)) AS k, unnest(range(len(json_keys(line)))) AS i, r
            FROM (SELECT line, row_number() OVER () AS r FROM {reader}{limit}) WHERE {JSON_OBJECT})
        GROUP BY k ORDER BY min(r * 1000000 + i)"""


def json_lines_problem(path: str) -> str | None:
    """What is wrong with a file meant as JSON lines before its rows are read: a JSON array (one
    document, not one object per line), or no object among its first lines."""
    con = duckdb.connect()
    try:
        reader = json_lines_reader(path)
        first = con.execute(f"SELECT line FROM {reader} WHERE trim(line) <> '' LIMIT 1").fetchall()
        if first and first[0][0].lstrip().startswith("["):
            return f"{path}: a JSON array; bm_assets reads JSON lines: one JSON object per line"
        if not con.execute(json_keys_sql(reader, JSON_SCHEMA_LINES)).fetchall():
            return f"{path}: no JSON object among its first {JSON_SCHEMA_LINES:,} lines (one object per line)"
        return None
    finally:
        con.close()


def format_of_path(path: str) -> FileFormat:
    """A file's format from its ending (.csv, .tsv, .txt; .jsonl, .ndjson, .json; compressed or
    not; .parquet, .pq); anything else must say `format:`, so no file is read with the wrong reader."""
    name = Path(path).name.lower()
    for ending, fmt in sorted(_FORMAT_ENDINGS.items(), key=lambda e: -len(e[0])):
        if name.endswith(ending):
            return fmt
    raise ValueError(f"cannot infer format of {path!r} from its ending; set format: csv|parquet|json")


def _csv_only(fmt: str | None, csv: CsvOptions) -> None:
    if fmt != "csv" and csv != CsvOptions():
        raise ValueError(f"csv options apply to CSV files only (this one is {fmt})")


#: Units of a Unix time (`timestamp.unit`): seconds, milliseconds or microseconds since 1970-01-01 UTC.
UnixTimeUnit = Literal["s", "ms", "us"]


class TimestampSpec(StrictModel):
    """Where an event's time is and how to parse it. No format and no unit: the column is a
    native timestamp/date or an ISO-8601 string."""

    column: str | None = Field(default=None, description="the column holding the time")
    expr: SafeExpression | None = Field(
        default=None, description="or an SQL expression giving it, e.g. Date || ' ' || Time"
    )
    format: str | None = Field(default=None, description="strptime format, e.g. '%Y-%m-%d %H:%M:%S'")
    unit: UnixTimeUnit | None = Field(
        default=None,
        description="or the time is a number: Unix time in s, ms or us (since 1970-01-01 00:00 UTC), as event "
        "logs and message queues often write it",
    )

    @model_validator(mode="after")
    def _one_source(self) -> TimestampSpec:
        if (self.column is None) == (self.expr is None):
            raise ValueError("set timestamp.column or timestamp.expr (exactly one)")
        if self.format is not None and self.unit is not None:
            raise ValueError("set timestamp.format (text) or timestamp.unit (a Unix-time number), not both")
        return self

    @property
    def ref(self) -> ColumnRef:
        return self.column if self.column is not None else Derived(expr=self.expr or "")

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


class JoinedTable(StrictModel):
    """A table joined to every event line by a key: order lines (order_id, product_id, price)
    whose client and time are on the order, in another file (order_id, customer_id, purchase
    time). Roles and context may name its columns; a column already on the line (or in an
    earlier join) is read from there. One row per key; a line whose key has no row there is
    quarantined."""

    path: str = Field(description="the table's file (or glob)")
    key: str = Field(description="its key column: one row per value")
    line_key: str | None = Field(
        default=None,
        description="the column holding the key, on the lines or in an earlier join; default: key's name",
    )
    format: FileFormat | None = Field(
        default=None,
        description="csv, parquet or json (JSON lines); default: from the file's ending, as for the lines",
    )
    csv: CsvOptions = Field(default_factory=CsvOptions, description="CSV layout: header line, column names, delimiter")

    @model_validator(mode="after")
    def _infer_format(self) -> JoinedTable:
        if self.format is None:
            object.__setattr__(self, "format", format_of_path(self.path))
        _csv_only(self.format, self.csv)
        return self

    @property
    def lines_key(self) -> str:
        return self.line_key or self.key


class EventSource(StrictModel):
    """One file (or glob) of events; several sources form one client event stream."""

    name: str
    path: str
    format: FileFormat | None = Field(
        default=None,
        description="csv, parquet or json (JSON lines: one object per line); default: from the file's ending "
        "(.csv, .tsv, .txt; .jsonl, .ndjson, .json; also .gz or .zst; .parquet, .pq)",
    )
    client_id: ColumnRef = Field(description="column (or {expr}) identifying the client")
    item_id: ColumnRef | None = Field(
        default=None, description="column (or {expr}) identifying the item; omit for a log without items"
    )
    timestamp: TimestampSpec
    event_type: ColumnRef | None = Field(default=None, description="column (or {expr}) holding the event type")
    event_type_value: str | None = Field(default=None, description="constant type; default: the source name")
    quantity: ColumnRef | None = None
    value: ColumnRef | None = Field(default=None, description="monetary value, e.g. {expr: 'Quantity * UnitPrice'}")
    event_id: ColumnRef | None = Field(default=None, description="unique id column; duplicates are kept once")
    basket_id: ColumnRef | None = Field(
        default=None,
        description="column grouping events into a visit/order/invoice; omit to group by the dataset's `baskets` "
        "rule (rows where it is empty take that rule too)",
    )
    item_prefix: str = Field(default="", description="namespace prepended to item ids, e.g. 'coupon:'")
    context: dict[str, ColumnKind | ContextColumn] = Field(
        default_factory=dict, description="extra columns kept as is: name -> kind, or {kind, expr}"
    )
    csv: CsvOptions = Field(default_factory=CsvOptions, description="CSV layout: header line, column names, delimiter")
    join: list[JoinedTable] = Field(
        default_factory=list,
        description="tables whose columns every line takes by key, in order, e.g. order lines joined to "
        "{path: orders.csv, key: order_id} (the client and time), then {path: customers.csv, key: customer_id}; "
        "roles may name their columns; one table may be given without the list",
    )

    @field_validator("join", mode="before")
    @classmethod
    def _one_join(cls, value: object) -> object:
        return [value] if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _infer_format(self) -> EventSource:
        if self.format is None:
            object.__setattr__(self, "format", format_of_path(self.path))
        _csv_only(self.format, self.csv)
        if self.event_type and self.event_type_value:
            raise ValueError("set event_type (a column) or event_type_value (a constant), not both")
        return self

    @field_validator("context")
    @classmethod
    def _context_names(cls, context: dict[str, ColumnKind | ContextColumn]) -> dict[str, ColumnKind | ContextColumn]:
        _check_names(list(context))
        for c in context:
            clash = _same_column(c, CANONICAL_EVENT_COLUMNS + _PIPELINE_COLUMNS)
            if clash:
                raise ValueError(f"context column {c!r} reuses the column name {clash!r}")
        return context

    def role_refs(self) -> dict[str, ColumnRef]:
        """Role -> column or derived expression, for every role this source maps."""
        roles: dict[str, ColumnRef | None] = {
            "client_id": self.client_id,
            "item_id": self.item_id,
            "timestamp": self.timestamp.ref,
            "event_type": self.event_type,
            "quantity": self.quantity,
            "value": self.value,
            "event_id": self.event_id,
            "basket_id": self.basket_id,
        }
        for c, spec in self.context.items():
            roles[f"context.{c}"] = Derived(expr=spec.expr) if isinstance(spec, ContextColumn) and spec.expr else c
        return {role: ref for role, ref in roles.items() if ref is not None}

    def context_kinds(self) -> dict[str, ColumnKind]:
        return {c: (spec.kind if isinstance(spec, ContextColumn) else spec) for c, spec in self.context.items()}

    def required_columns(self) -> dict[str, str]:
        """Role -> source column, for every column the roles read (an expression's columns are
        listed as `<role>.expr:<column>`)."""
        out: dict[str, str] = {}
        for role, ref in self.role_refs().items():
            if isinstance(ref, Derived):
                for col in expression_columns(ref.expr, f"events ({self.name}).{role}.expr"):
                    out[f"{role}.expr:{col}"] = col
            else:
                out[role] = ref
        return out


class AttributeTable(StrictModel):
    """A client or item attribute table keyed by the client/item id. A multi-valued table
    (several rows per key, e.g. campaigns a client received) is aggregated to one row per key:
    a row count plus the sorted distinct values of each column joined by '|'. A `list` column
    holds several categories in one cell ("Action|Comedy", split at `list_separator`): it is
    stored the same way, its distinct values trimmed, sorted and joined by '|'.

    `from_events` takes the attributes from an event source's lines instead of a table of their
    own (e.g. a country column repeated on every invoice line): one row per client (or item), the
    value picked by `pick`; lines without a key are skipped and counted, not fatal."""

    name: str
    path: str | None = Field(default=None, description="the table's file (or glob); not with from_events")
    format: FileFormat | None = Field(
        default=None,
        description="csv, parquet or json (JSON lines: one object per line); default: from the file's ending "
        "(.csv, .tsv, .txt; .jsonl, .ndjson, .json; also .gz or .zst; .parquet, .pq)",
    )
    key: str | None = Field(default=None, description="the id column; with from_events: the source's id role")
    csv: CsvOptions = Field(default_factory=CsvOptions, description="CSV layout: header line, column names, delimiter")
    key_prefix: str = ""
    columns: dict[str, AttributeKind] | None = Field(
        default=None,
        description="allow-list, column -> kind (categorical, numeric, text, or list: several categories in "
        "one cell, split at list_separator); None = all",
    )
    deny: list[str] = Field(default_factory=list)
    multi_valued: bool = False
    list_separator: str = Field(
        default="|", min_length=1, description="what separates the values in a cell of a list column"
    )
    from_events: str | None = Field(default=None, description="name of the event source whose lines hold them")
    pick: Literal["most_frequent", "first", "last"] = Field(
        default="most_frequent", description="with from_events: which line's value a client (item) gets"
    )

    @field_validator("columns")
    @classmethod
    def _column_names(cls, columns: dict[str, AttributeKind] | None) -> dict[str, AttributeKind] | None:
        _check_names(list(columns or {}))
        return columns

    @model_validator(mode="after")
    def _infer_format(self) -> AttributeTable:
        if self.from_events is not None:
            if self.path is not None or self.key is not None:
                raise ValueError("from_events takes the source's file and id; drop path and key")
            if not self.columns:
                raise ValueError("from_events needs columns: the event columns to take, with their kinds")
            if self.multi_valued:
                raise ValueError("from_events picks one value per key; multi_valued does not apply")
            lists = [c for c, k in self.columns.items() if k == "list"]
            if lists:
                raise ValueError(f"from_events picks one value per key; columns {lists} cannot be lists")
            return self
        lists = [c for c, k in (self.columns or {}).items() if k == "list"]
        if lists and self.multi_valued:
            raise ValueError(
                f"the columns of a multi_valued table are aggregated to lists already; drop kind list from {lists} "
                "(or give the table one row per key)"
            )
        if self.path is None or self.key is None:
            raise ValueError("an attribute table needs path and key (or from_events: <event source>)")
        if self.format is None:
            object.__setattr__(self, "format", format_of_path(self.path))
        _csv_only(self.format, self.csv)
        return self


class TemporalSplit(StrictModel):
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


class GraphConfig(StrictModel):
    """Which event columns form the hyperedges of `temporal_graph`, and how they are grouped."""

    columns: list[str] | None = Field(
        default=None,
        description="events_denormalized columns whose values become graph nodes; default: item_id (where "
        "sources have items), the categorical item attributes and the categorical context columns, "
        "or event_type when the data has none of these; every categorical column a task of tasks.yaml "
        "targets is added",
    )
    window_days: int = Field(default=7, ge=1, description="one hyperedge per client and window of this length")
    basket_column: str | None = Field(
        default="basket_id", description="also one hyperedge per basket (set to null to leave baskets out)"
    )
    expansion: Literal["clique", "star"] = Field(
        default="star",
        description="clique: every pair of a hyperedge's nodes is an edge (k^2 edges); star: the hyperedge "
        "is a node linked to its members (k edges), which scales to large windows",
    )


class CleoraConfig(StrictModel):
    """pycleora settings for `entity_embeddings`."""

    dim: int = Field(default=64, ge=2)
    iterations: int = Field(default=4, ge=1)
    whiten: bool = False
    propagation: Literal["left", "symmetric"] = "left"


class InductiveConfig(StrictModel):
    """Items never seen before the cutoff are embedded as the mean of their attributes' embeddings
    (looked up in product_catalog), so a new item still has a sketch code."""

    column: str = "item_id"
    attributes: list[str] | None = Field(
        default=None,
        description="product_catalog columns that are also graph columns; default: every such column",
    )


class SketchConfig(StrictModel):
    """EMDE coders: `depth` independent partitions of the embedding space into 2**bits buckets."""

    columns: list[str] | None = Field(
        default=None,
        description="graph columns that get a coder and a profile sketch; None = all; every categorical "
        "column a task of tasks.yaml targets is added",
    )
    depth: int = Field(default=8, ge=1)
    bits: int = Field(default=6, ge=1, le=16)
    exact_head_columns: list[str] | None = Field(
        default=None,
        description="sketch columns whose first level is exact: one bucket for each of their 2**bits - 1 "
        "most frequent values before the cutoff, one for the rest; None = the columns whose top values a "
        "multilabel/multiclass task of tasks.yaml predicts",
    )

    @property
    def width(self) -> int:
        return 2**self.bits


class ProfileConfig(StrictModel):
    """Behavioral profiles: sketches and counts decayed with each half-life (days)."""

    half_lives_days: list[float] = Field(default_factory=lambda: [7.0, 60.0], min_length=1)
    memory_mb: float = Field(
        default=2048.0,
        gt=0,
        description="memory one client shard of the profile replay may hold (MB): clients are split into "
        "hash shards processed one at a time, so memory follows a shard, not all clients",
    )

    @field_validator("half_lives_days")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        if any(v <= 0 for v in values):
            raise ValueError(f"half-lives must be > 0 days, found {values}")
        return values


class RepresentationConfig(StrictModel):
    """Settings of the representation stage: graph, Cleora embeddings, EMDE coders, profiles."""

    graph: GraphConfig = Field(default_factory=GraphConfig)
    cleora: CleoraConfig = Field(default_factory=CleoraConfig)
    inductive: InductiveConfig | None = Field(
        default_factory=InductiveConfig,
        description="embed unseen catalogue items from their attributes; applies where item_id and item "
        "attributes are graph columns (null turns it off)",
    )
    sketch: SketchConfig = Field(default_factory=SketchConfig)
    profile: ProfileConfig = Field(default_factory=ProfileConfig)
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> RepresentationConfig:
        if self.graph.columns is None:
            return self  # defaults are resolved from the dataset (resolve_representation)
        graph_cols = self.graph.columns
        if not graph_cols:
            raise ValueError("graph.columns is empty; name at least one column (or omit it for the default)")
        if len(set(graph_cols)) != len(graph_cols):
            raise ValueError(f"graph.columns has duplicates: {graph_cols}")
        unknown = [c for c in self.sketch.columns or [] if c not in graph_cols]
        if unknown:
            raise ValueError(f"sketch.columns {unknown} are not graph.columns {graph_cols}")
        sketched = self.sketch.columns or graph_cols
        unknown = [c for c in self.sketch.exact_head_columns or [] if c not in sketched]
        if unknown:
            raise ValueError(f"sketch.exact_head_columns {unknown} are not sketch columns {sketched}")
        if self.inductive is not None:
            if self.inductive.column not in graph_cols:
                raise ValueError(f"inductive.column {self.inductive.column!r} is not in graph.columns {graph_cols}")
            missing = [c for c in self.inductive.attributes or [] if c not in graph_cols]
            if missing:
                raise ValueError(f"inductive.attributes {missing} are not graph.columns {graph_cols}")
        return self

    @property
    def sketch_columns(self) -> list[str]:
        return list(self.sketch.columns or self.graph.columns or [])


class QuarantineConfig(StrictModel):
    """Limits on the share of a run window's source rows that land in `raw_events_quarantine`
    (asset check `quarantine_rate`): above `warn_rate` the check warns; above `error_rate` it
    fails the run before anything downstream reads the window (a timestamp format that matches
    nothing quarantines every row: that must not look like success). Rows whose timestamp lies
    outside data_start..data_end are not counted: the config excludes them on purpose."""

    warn_rate: float = Field(
        default=0.01, ge=0, le=1, description="share of rows quarantined above which the check warns"
    )
    error_rate: float = Field(
        default=0.2, ge=0, le=1, description="share of rows quarantined above which the check fails the run"
    )

    @model_validator(mode="after")
    def _ordered(self) -> QuarantineConfig:
        if self.warn_rate > self.error_rate:
            raise ValueError(f"warn_rate {self.warn_rate} is above error_rate {self.error_rate}")
        return self


class DatasetConfig(StrictModel):
    name: str
    data_start: dt.date
    data_end: dt.date | None = Field(
        default=None,
        description="last day (inclusive) of the event range; leave it out for data that keeps arriving: "
        "partitions then run up to yesterday in `timezone`",
    )
    timezone: str = Field(
        default="UTC", description="IANA time zone of the daily partitions and schedules, e.g. Europe/Warsaw"
    )
    events: list[EventSource] = Field(min_length=1)
    clients: list[AttributeTable] = Field(default_factory=list)
    items: list[AttributeTable] = Field(default_factory=list)
    catalog_coverage_min: float = Field(default=0.9, ge=0, le=1)
    fresh_by_hour: int = Field(
        default=6,
        ge=0,
        le=23,
        description="hour (in `timezone`) by which yesterday's partition of every daily asset, scores included, "
        "should exist; after it their freshness checks warn in the UI (the daily schedule runs at 02:00)",
    )
    sensor_interval_seconds: int = Field(
        default=60,
        ge=5,
        description="how often each event source's file-arrival sensor (`<source>_files`) lists its files",
    )
    quarantine: QuarantineConfig = Field(default_factory=QuarantineConfig)
    baskets: Literal["timestamp", "day"] = Field(
        default="timestamp",
        description="how events form baskets (visits) where a source maps no basket_id, or a row's is empty: "
        "one client's events at one timestamp, or on one day",
    )
    temporal: TemporalSplit
    representation: RepresentationConfig = Field(default_factory=RepresentationConfig)
    base_dir: Path = Field(default=Path("."), description="folder relative paths resolve against")
    config_file: Path | None = None
    attribute_kinds: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="set at load: attribute output column -> kind, per clients/items"
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; expected an IANA name such as UTC or Europe/Warsaw"
            ) from None
        return value

    @model_validator(mode="after")
    def _check(self) -> DatasetConfig:
        if self.data_end is not None and self.data_end < self.data_start:
            raise ValueError(f"data_end {self.data_end} is before data_start {self.data_start}")
        t = self.temporal
        if not (self.data_start < t.training_cutoff and t.test_end <= self.end_exclusive):
            raise ValueError(
                f"temporal dates must lie inside [{self.data_start}, {self.end_exclusive}]: "
                f"training_cutoff {t.training_cutoff}, test_end {t.test_end}"
            )
        for key, table in [
            *(("events", s) for s in self.events),
            *(("clients", t) for t in self.clients),
            *(("items", t) for t in self.items),
        ]:
            if table.path is not None and not self._inside_base_dir(table.path):
                raise ValueError(
                    f"{key} ({table.name}).path {table.path!r} leaves base_dir {self.base_dir}; write an absolute "
                    "path to read a file outside it"
                )
        for s in self.events:
            for i, j in enumerate(s.join):
                if not self._inside_base_dir(j.path):
                    raise ValueError(
                        f"events ({s.name}).join[{i}].path {j.path!r} leaves base_dir {self.base_dir}; write an "
                        "absolute path to read a file outside it"
                    )
                # resolved here: every reader of the source (ingest, sensors, spans) gets the file
                object.__setattr__(j, "path", self.resolve(j.path))
        names = [s.name for s in self.events] + [t.name for t in self.clients + self.items]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate source/table names: {dupes}")
        for n in names:
            if not _IDENTIFIER.match(n):
                raise ValueError(f"name {n!r} must be a SQL identifier (letters, digits, _)")
        context: dict[str, str] = {}
        for s in self.events:
            for c in s.context:
                clash = _same_column(c, [o for o in context if o != c])
                if clash:
                    raise ValueError(
                        f"context column {c!r} of source {s.name} and {clash!r} of {context[clash]} are the same SQL "
                        "column (names ignore case); use one spelling"
                    )
                context.setdefault(c, s.name)
        sources = [s.name for s in self.events]
        for role in ("clients", "items"):
            for i, table in enumerate(getattr(self, role)):
                if table.from_events is not None and table.from_events not in sources:
                    raise ValueError(
                        f"{role}[{i}] ({table.name}).from_events names {table.from_events!r}, which is not an "
                        f"event source (sources: {sources})"
                    )
                if role == "items" and table.from_events is not None:
                    src = next(s for s in self.events if s.name == table.from_events)
                    if src.item_id is None:
                        raise ValueError(f"items[{i}] ({table.name}).from_events: source {src.name!r} has no item_id")
        return self

    def _inside_base_dir(self, path: str) -> bool:
        """A relative path (or glob) stays under base_dir: `..` may not climb out of it."""
        if Path(path).is_absolute():
            return True
        base = os.path.normpath(self.base_dir)
        return os.path.commonpath([base, os.path.normpath(os.path.join(base, path))]) == base

    def event_columns(self) -> dict[str, str]:
        """Column -> kind of events_denormalized (what task SQL and representation columns read)."""
        return denormalized_columns(self, self.attribute_kinds or declared_attributes(self))

    def list_columns(self) -> list[str]:
        """The columns of events_denormalized that hold lists of categories ("A|B"): multi-valued
        tables' columns and `list` attributes."""
        return [c for c, k in self.event_columns().items() if k == "list"]

    @property
    def has_items(self) -> bool:
        """Whether any event source maps an item id."""
        return any(s.item_id is not None for s in self.events)

    def resolve(self, path: str) -> str:
        p = Path(path)
        return str(p if p.is_absolute() else (self.base_dir / p).resolve())

    @property
    def end_exclusive(self) -> dt.date:
        """The day after the last one: data_end + 1, or today in `timezone` for a live dataset
        (yesterday is the last complete day)."""
        if self.data_end is None:
            return dt.datetime.now(ZoneInfo(self.timezone)).date()
        return self.data_end + dt.timedelta(days=1)

    @property
    def last_day(self) -> dt.date:
        return self.end_exclusive - dt.timedelta(days=1)

    def context_columns(self) -> dict[str, ColumnKind]:
        """Union of the event sources' context columns, in config order."""
        out: dict[str, ColumnKind] = {}
        for s in self.events:
            out.update(s.context_kinds())
        return out


def expression_columns(text: str, where: str) -> list[str]:
    """The source columns a derived value reads; raises if the expression is not allowed."""
    from bm_assets.core.sql import UnsafeExpressionError, parse_expression, referenced_columns

    try:
        return referenced_columns(parse_expression(text, where, aggregate=False))
    except UnsafeExpressionError as exc:
        raise ValueError(str(exc)) from None


def source_schema(path: str, fmt: str, csv: CsvOptions | None = None) -> dict[str, str]:
    """Column -> DuckDB type of a file, read from its header/footer only (JSON lines: the keys
    of its first lines, every value text)."""
    if fmt == "json":
        keys = duckdb.execute(json_keys_sql(json_lines_reader(path), JSON_SCHEMA_LINES)).fetchall()
        return {k[0]: "VARCHAR" for k in keys}
    reader = (
        f"read_parquet({literal(path)})"
        if fmt == "parquet"
        else (
            f"read_csv({literal(path)}, {(csv or CsvOptions()).reader_options()}, all_varchar=true, ignore_errors=true)"
        )
    )
    rows = duckdb.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()
    return {r[0]: r[1] for r in rows}


def read_config_text(path: Path) -> str:
    """A config file's text; a file that is not UTF-8 is named, with where it stops decoding."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetConfigError(
            f"{path}: not UTF-8 (byte 0x{data[exc.start]:02x} on line {line}); save the file as UTF-8"
        ) from None


def load_yaml_mapping(path: Path, what: str, error: type[ValueError], empty_ok: bool = False) -> dict:
    """The top-level mapping of a config YAML (`what`, e.g. "task config"), for every config file
    of the project; a missing file, one that is not UTF-8 or not YAML, or a top level that is not a
    mapping raises `error` naming the file. `empty_ok`: an empty file reads as {}."""
    if not path.exists():
        raise error(f"{what} {path} does not exist")
    try:
        raw = yaml.safe_load(read_config_text(path))
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None
    except DatasetConfigError as exc:  # not UTF-8
        raise error(str(exc)) from None
    if raw is None and empty_ok:
        raw = {}
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a mapping at the top level")
    return raw


def empty_file_problem(path: str) -> str | None:
    """`the file is empty` for a 0-byte file (a CSV reader would invent a column for it)."""
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        return f"{path}: the file is empty (0 bytes); expected a header line and rows"
    return None


def unreadable_csv_message(path: str, exc: Exception) -> str:
    """Why DuckDB's CSV reader gave up on a file, in one line and without the file's content:
    mixed line endings are named (the sniffer only says it found no dialect)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if b"\r\n" in head and re.search(rb"(?<!\r)\n", head):
        return (
            f"{path}: mixed line endings (some lines end in CRLF, others in LF); convert the file to one "
            "line ending, e.g. with dos2unix, and load it again"
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{path}: cannot read it as csv: {first}"


def attribute_columns(table: AttributeTable, schema: dict[str, str]) -> dict[str, AttributeKind]:
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


def _check_files(cfg: DatasetConfig, where: str) -> dict[str, dict[str, str]]:
    """Every mapped column exists in its file; attribute columns don't collide. Returns the
    attribute columns (output name -> kind; 'list' for multi-valued) of "clients" and "items"."""
    seen_attr: dict[str, str] = {}
    kinds: dict[str, dict[str, AttributeKind]] = {"clients": {}, "items": {}}
    schemas: dict[str, dict[str, str]] = {}
    for i, src in enumerate(cfg.events):
        path = cfg.resolve(src.path)
        schema = _schema_or_error(path, src.format or "parquet", f"{where}: events[{i}].path", src.csv)
        for k, j in enumerate(src.join):
            joined = _schema_or_error(j.path, j.format or "parquet", f"{where}: events[{i}].join[{k}].path", j.csv)
            for col, file, cols in ((j.lines_key, path, schema), (j.key, j.path, joined)):
                if col not in cols:
                    raise DatasetConfigError(
                        f"{where}: events[{i}] ({src.name}).join[{k}]: key column {col!r} is not in {file} "
                        f"(columns: {sorted(cols)})"
                    )
            path = f"{path} or {j.path}"
            schema = {**joined, **schema}  # a column already there is read from there
        schemas[src.name] = schema
        for role, col in src.required_columns().items():
            if col not in schema:
                raise DatasetConfigError(
                    f"{where}: events[{i}] ({src.name}).{role} names column {col!r}, "
                    f"which is not in {path} ({_columns_hint(schema, src.required_columns().values())})"
                )
    for role in ("clients", "items"):
        for i, table in enumerate(getattr(cfg, role)):
            if table.from_events is not None:
                schema = schemas[table.from_events]
                src_path = cfg.resolve(next(s for s in cfg.events if s.name == table.from_events).path)
                for c in table.columns or {}:
                    if c not in schema:
                        raise DatasetConfigError(
                            f"{where}: {role}[{i}] ({table.name}).columns.{c} is not a column of event source "
                            f"{table.from_events!r} ({src_path}; columns: {sorted(schema)})"
                        )
                    out = attribute_output_name(table, c)
                    _check_attribute_name(cfg, where, role, i, c, out, seen_attr)
                    seen_attr[out] = table.name
                    kinds[role][out] = (table.columns or {})[c]
                continue
            path = cfg.resolve(table.path or "")
            schema = _schema_or_error(path, table.format or "parquet", f"{where}: {role}[{i}].path", table.csv)
            if table.key not in schema:
                raise DatasetConfigError(
                    f"{where}: {role}[{i}] ({table.name}).key names column {table.key!r}, "
                    f"which is not in {path} ({_columns_hint(schema, [table.key, *(table.columns or {})])})"
                )
            for c, kind in attribute_columns(table, schema).items():
                out = attribute_output_name(table, c)
                if c not in schema:
                    raise DatasetConfigError(
                        f"{where}: {role}[{i}] ({table.name}).columns.{c} is not in {path} (columns: {sorted(schema)})"
                    )
                _check_attribute_name(cfg, where, role, i, c, out, seen_attr)
                seen_attr[out] = table.name
                kinds[role][out] = "list" if table.multi_valued else kind
            if table.multi_valued:
                kinds[role][f"{table.name}_rows"] = "numeric"
    return kinds


def _columns_hint(schema: dict[str, str], mapped: Iterable[str]) -> str:
    """The file's columns, to fix a mapping; when the file has none of the mapped columns it is
    probably the wrong file, and its first line (which may be data) is not repeated."""
    if any(c in schema for c in mapped):
        return f"columns: {sorted(schema)}"
    return f"{len(schema)} column(s), none of them mapped: is this the right file, with a header line?"


def _check_attribute_name(
    cfg: DatasetConfig, where: str, role: str, i: int, column: str, out: str, seen: dict[str, str]
) -> None:
    problem = column_name_problem(out)
    if problem:
        raise DatasetConfigError(f"{where}: {role}[{i}] ({getattr(cfg, role)[i].name}).columns: {problem}; deny it")
    clash = _same_column(out, CANONICAL_EVENT_COLUMNS + _PIPELINE_COLUMNS + tuple(cfg.context_columns()))
    if clash:
        raise DatasetConfigError(f"{where}: {role}[{i}].columns.{column} collides with event column {clash!r}; deny it")
    clash = _same_column(out, seen)
    if clash:
        raise DatasetConfigError(
            f"{where}: {role}[{i}].columns.{column} is the same column as {clash!r} of {seen[clash]}; deny one"
        )


def _schema_or_error(path: str, fmt: str, where: str, csv: CsvOptions) -> dict[str, str]:
    is_glob = any(ch in path for ch in "*?[")
    if not is_glob and not Path(path).exists():
        raise DatasetConfigError(f"{where}: file {path} does not exist")
    problem = None if is_glob else empty_file_problem(path)
    if problem:
        raise DatasetConfigError(f"{where}: {problem}")
    try:
        problem = None
        if not is_glob and fmt == "csv":
            problem = csv_columns_problem(path, csv)
        elif not is_glob and fmt == "json":
            problem = json_lines_problem(path)
        if problem:
            raise DatasetConfigError(f"{where}: {problem}")
        return source_schema(path, fmt, csv)
    except duckdb.Error as exc:
        if fmt == "csv" and not is_glob:
            raise DatasetConfigError(f"{where}: {unreadable_csv_message(path, exc)}") from None
        first = str(exc).strip().splitlines()[0]
        raise DatasetConfigError(f"{where}: cannot read {path} as {fmt}: {first}") from None


def declared_attributes(cfg: DatasetConfig) -> dict[str, dict[str, str]]:
    """Attribute columns known without reading files (tables with an explicit `columns` list)."""
    out: dict[str, dict[str, str]] = {"clients": {}, "items": {}}
    for role in out:
        for table in getattr(cfg, role):
            for c, kind in (table.columns or {}).items():
                out[role][attribute_output_name(table, c)] = "list" if table.multi_valued else kind
            if table.multi_valued:
                out[role][f"{table.name}_rows"] = "numeric"
    return out


def denormalized_columns(cfg: DatasetConfig, attributes: dict[str, dict[str, str]]) -> dict[str, str]:
    """Column -> kind of events_denormalized, known from the config (and attribute schemas)."""
    cols: dict[str, str] = {c: "categorical" for c in CANONICAL_EVENT_COLUMNS if c not in ("source_file", "source_row")}
    cols.update(event_time="timestamp", event_date="date", quantity="numeric", value="numeric")
    cols.update(cfg.context_columns())
    cols.update(attributes["items"])
    cols.update(attributes["clients"])
    cols.update(item_in_catalog="boolean", client_in_properties="boolean")
    return cols


def default_graph_columns(cfg: DatasetConfig, attributes: dict[str, dict[str, str]]) -> list[str]:
    """item_id (where sources have items), the categorical and list item attributes (a list
    value, "Action|Comedy", is one node per value), the categorical context columns; event_type
    when there is none of these (every dataset has it)."""
    cols = ["item_id"] if cfg.has_items else []
    cols += [c for c, k in attributes["items"].items() if k in ("categorical", "list")]
    cols += [c for c, k in cfg.context_columns().items() if k == "categorical"]
    return list(dict.fromkeys(cols)) or ["event_type"]


def resolve_representation(cfg: DatasetConfig, attributes: dict[str, dict[str, str]], where: str) -> DatasetConfig:
    """Fill the representation defaults from the data and check every column it names."""
    rep = cfg.representation
    available = denormalized_columns(cfg, attributes)
    graph_cols = rep.graph.columns or default_graph_columns(cfg, attributes)
    inductive = rep.inductive
    item_attrs = [c for c in graph_cols if attributes["items"].get(c) in ("categorical", "list")]
    if inductive is not None and inductive.attributes is None:
        usable = inductive.column in graph_cols and bool(item_attrs)
        inductive = inductive.model_copy(update={"attributes": item_attrs}) if usable else None
    raw = rep.model_dump()
    raw["graph"]["columns"] = graph_cols
    raw["inductive"] = inductive.model_dump() if inductive is not None else None
    try:
        resolved = RepresentationConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise DatasetConfigError(f"{where}: key representation: {problems}") from None
    named = {"graph.columns": graph_cols, "sketch.columns": rep.sketch.columns or []}
    if resolved.inductive is not None:
        named["inductive.attributes"] = resolved.inductive.attributes or []
    for key, cols in named.items():
        missing = [c for c in cols if c not in available]
        if missing:
            raise DatasetConfigError(
                f"{where}: key representation.{key}: {missing} are not columns of events_denormalized "
                f"(columns: {sorted(available)})"
            )
    return cfg.model_copy(update={"representation": resolved, "attribute_kinds": attributes})


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: str) -> str:
    """Expand ${VAR} and ${VAR:-default} so one YAML serves several machines."""
    return _ENV_REF.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), value)


def load_dataset_config(path: str | Path, check_files: bool = True) -> DatasetConfig:
    """Load and validate a dataset YAML. Relative paths inside resolve against its folder."""
    path = Path(path).resolve()
    raw = load_yaml_mapping(path, "dataset config", DatasetConfigError)
    raw["base_dir"] = str((path.parent / _expand_env(str(raw.get("base_dir", ".")))).resolve())
    raw["config_file"] = str(path)
    try:
        cfg = DatasetConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"key {'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors())
        raise DatasetConfigError(f"{path}: {problems}") from None
    attributes = _check_files(cfg, str(path)) if check_files else declared_attributes(cfg)
    return resolve_representation(cfg, attributes, str(path))
