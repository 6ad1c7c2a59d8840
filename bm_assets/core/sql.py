"""One way to say a name, a value or a user's expression in SQL, for every engine.

Identifiers and literals from a user's files or config are never pasted into SQL as they are:
`ident` and `literal` quote them. Expressions written by users (a derived event column in the
dataset YAML, a task's target or filter in tasks.yaml) are parsed with sqlglot and accepted only
as a single scalar or aggregate expression over known columns, with functions from an
allow-list: no statements, no subqueries, no tables or table functions, no file access. What
runs is the SQL re-rendered from the checked syntax tree, never the text as written."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError


class UnsafeExpressionError(ValueError):
    """A user expression that is not a single, allowed SQL expression over known columns."""


def ident(name: str, dialect: Literal["duckdb", "bigquery"] = "duckdb") -> str:
    """A quoted identifier. SQL for the warehouse is written in DuckDB's dialect (the BigQuery
    translation re-quotes it); `dialect="bigquery"` is for the few statements sent to BigQuery as
    written (backticks, backslash escapes)."""
    if dialect == "bigquery":
        return "`" + str(name).replace("\\", "\\\\").replace("`", "\\`") + "`"
    return '"' + str(name).replace('"', '""') + '"'


def qualified(*parts: str) -> str:
    """A dotted name (e.g. project, dataset, table), each part quoted by `ident`."""
    return ".".join(ident(p) for p in parts)


def literal(value: str) -> str:
    """A quoted string literal."""
    return "'" + str(value).replace("'", "''") + "'"


#: How a list attribute ("Action|Comedy": several categories in one cell) is stored in
#: client_properties, product_catalog and events_denormalized: its distinct values, trimmed and
#: sorted, joined by this separator (the form multi-valued tables aggregate to).
LIST_SEPARATOR = "|"


def list_values_sql(column: str, separator: str, native: bool) -> str:
    """DuckDB: the values of one list cell as a VARCHAR[], trimmed, empty ones dropped: a native
    list's elements (a Parquet array), a JSON array's (a JSON-lines list, or a cell holding
    one), or else the text split at `separator`. A '|' inside a value (`Movies | TV` in an array)
    becomes '/', since '|' separates the values of a stored list."""
    col = ident(column)
    if native:
        values = f"list_transform({col}, lambda x: CAST(x AS VARCHAR))"
    else:
        text = f"CAST({col} AS VARCHAR)"
        values = (
            f"CASE WHEN {json_array_sql(text)} THEN json_extract_string({text}, '$[*]') "
            f"ELSE string_split({text}, {literal(separator)}) END"
        )
    inner = f"replace(trim(x), {literal(LIST_SEPARATOR)}, '/')"
    return f"list_filter(list_transform({values}, lambda x: {inner}), lambda x: x <> '')"


def json_array_sql(text: str) -> str:
    """DuckDB: whether `text` is a JSON array (no error on text that is no JSON at all)."""
    return f"coalesce(json_type(CASE WHEN json_valid({text}) THEN {text} END) = 'ARRAY', false)"


def list_cell_sql(column: str, separator: str, native: bool) -> str:
    """DuckDB: a list cell in its stored form, its distinct values sorted and joined by
    LIST_SEPARATOR (NULL when it holds none)."""
    values = list_values_sql(column, separator, native)
    return f"nullif(array_to_string(list_sort(list_distinct({values})), {literal(LIST_SEPARATOR)}), '')"


def column_values_sql(column: str, is_list: bool, alias: str = "e") -> tuple[str, str]:
    """(value expression, what to add to FROM) reading one value of `column` per row of `alias`,
    or, for a list column, one row per value it holds (a movie's genres each count)."""
    col = f"{alias}.{ident(column)}"
    if not is_list:
        return f"CAST({col} AS VARCHAR)", ""
    return "list_part", f", unnest(string_split(CAST({col} AS VARCHAR), {literal(LIST_SEPARATOR)})) AS parts(list_part)"


def value_match_sql(column: str, value: str, is_list: bool, alias: str = "e") -> str:
    """Condition: the row's `column` is `value` or, for a list column, holds it."""
    col = f"CAST({alias}.{ident(column)} AS VARCHAR)"
    if not is_list:
        return f"{col} = {literal(value)}"
    sep = literal(LIST_SEPARATOR)
    return f"strpos({sep} || {col} || {sep}, {literal(LIST_SEPARATOR + value + LIST_SEPARATOR)}) > 0"


#: Microseconds in one unit of a Unix time (`timestamp.unit`).
UNIX_TIME_MICROS = {"s": 1_000_000, "ms": 1_000, "us": 1}
#: 10000-01-01 in Unix microseconds: past BigQuery's last timestamp (and any real event).
_UNIX_MICROS_END = 253_402_300_800_000_000


def unix_time_sql(number: str, unit: str) -> str:
    """A TIMESTAMP (UTC, no zone) from `number`, an SQL number of Unix-time units; NULL where it
    lies past year 9999 either side, so a garbage value is quarantined, not an overflow error.
    Written once for both engines: DuckDB's make_timestamp(µs) is BigQuery's TIMESTAMP_MICROS."""
    micros = f"(({number}) * {UNIX_TIME_MICROS[unit]})"
    return (
        f"CASE WHEN abs({micros}) < {_UNIX_MICROS_END} "
        f"THEN CAST(make_timestamp(CAST(round({micros}) AS BIGINT)) AS TIMESTAMP) END"
    )


#: A zone designator after a time of day: Z, a name (UTC, Europe/Warsaw) or an offset (+02:00).
_ZONE_AFTER_TIME = r"^(.*\d:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(?:Z|[A-Za-z][A-Za-z_/]*|[+-]\d{2}(?::?\d{2})?)$"


def wall_clock_text_sql(text: str) -> str:
    """`text` (an SQL string) without a zone designator after its time of day, so the cast to a
    zone-less timestamp reads the wall-clock time as written on both engines: DuckDB's cast
    drops the designator, BigQuery's DATETIME would refuse the value."""
    return f"regexp_replace({text}, {literal(_ZONE_AFTER_TIME)}, '\\1')"


#: What an engine says about a name the SQL uses and the warehouse lacks, per engine: DuckDB (and
#: DuckDB-based emulators), then BigQuery. Matched in `engine_error` -> one wording for both.
_UNKNOWN = (
    (re.compile(r'Referenced column "([^"]+)" not found'), "unknown column {!r}"),
    (re.compile(r"Unrecognized name: ([^\s;]+)"), "unknown column {!r}"),
    (re.compile(r"Scalar Function with name (\S+) does not exist"), "unknown function {}()"),
    (re.compile(r"Function not found: ([^\s;]+)"), "unknown function {}()"),
)


def repeated_key_sql(table: str, key: str) -> str:
    """The first key (by row) on several rows of a staged table (with __file, __row): columns
    k, f (its file) and rows (its rows, in order); no row when every key is unique."""
    return (
        f"SELECT {key} AS k, any_value(__file) AS f, list(__row ORDER BY __row) AS rows FROM {table} "
        f"WHERE {key} IS NOT NULL GROUP BY 1 HAVING count(*) > 1 ORDER BY min(__row) LIMIT 1"
    )


def engine_error(exc: BaseException) -> str:
    """One line saying what a warehouse engine refused, worded the same for DuckDB and BigQuery:
    a missing column or function is named as such; any other error is the engine's own first
    line, without the HTTP status, job details or position in the generated SQL that Google's
    client adds. Callers prefix the file and key the SQL came from."""
    errors = getattr(exc, "errors", None)  # google.api_core exceptions: [{"message": ...}, ...]
    text = errors[0].get("message", "") if errors and isinstance(errors[0], dict) else ""
    text = re.sub(r"^Query execution failed: ", "", text or str(exc)).strip()
    for pattern, wording in _UNKNOWN:
        found = pattern.search(text)
        if found:
            return wording.format(found.group(1).strip('`"'))
    first = text.splitlines()[0] if text else type(exc).__name__
    return re.sub(r"^\d{3} |\s+at \[\d+:\d+\]$", "", first)


# Managed tables: the one place their names are written. SQL names them through
# `Warehouse.table(name)`, which qualifies and quotes them for the engine.
RAW_EVENTS = "raw_events"
QUARANTINE = "raw_events_quarantine"
INGEST_LOG = "raw_events_ingest_log"
FILE_INDEX = "raw_events_file_index"
CLIENT_PROPERTIES = "client_properties"
PRODUCT_CATALOG = "product_catalog"
EVENTS_DENORMALIZED = "events_denormalized"
TEMPORAL_GRAPH = "temporal_graph"
GRAPH_NODES = "temporal_graph_nodes"
GRAPH_EDGES = "temporal_graph_edges"
BEHAVIORAL_PROFILES = "behavioral_profiles"
PROFILE_LAYOUT_TABLE = "behavioral_profiles_layout"
PROFILE_DAYS_TABLE = "behavioral_profiles_days"


#: Functions a user expression may call (upper-case SQL names as sqlglot renders them).
ALLOWED_FUNCTIONS = frozenset(
    {
        # aggregates (task targets)
        "COUNT",
        "SUM",
        "AVG",
        "MIN",
        "MAX",
        "ANY_VALUE",
        "COUNT_IF",
        "COUNTIF",
        "MEDIAN",
        "STDDEV",
        "STDDEV_POP",
        "STDDEV_SAMP",
        "VARIANCE",
        "VAR_POP",
        "VAR_SAMP",
        "BOOL_OR",
        "BOOL_AND",
        "LOGICAL_OR",
        "LOGICAL_AND",
        "APPROX_DISTINCT",
        "APPROX_COUNT_DISTINCT",
        "ARG_MAX",
        "ARG_MIN",
        "ARGMAX",
        "ARGMIN",
        "MODE",
        "FIRST",
        "LAST",
        # conditionals and types
        "CASE",
        "IF",
        "IFF",
        "COALESCE",
        "NULLIF",
        "IFNULL",
        "NVL",
        "CAST",
        "TRY_CAST",
        "GREATEST",
        "LEAST",
        # numbers
        "ABS",
        "ROUND",
        "FLOOR",
        "CEIL",
        "CEILING",
        "SIGN",
        "LN",
        "LOG",
        "LOG10",
        "LOG2",
        "EXP",
        "SQRT",
        "POW",
        "POWER",
        "MOD",
        "TRUNC",
        "ISNAN",
        "ISFINITE",
        "ISINF",
        # text
        "LOWER",
        "UPPER",
        "TRIM",
        "LTRIM",
        "RTRIM",
        "LENGTH",
        "SUBSTRING",
        "SUBSTR",
        "LEFT",
        "RIGHT",
        "CONCAT",
        "CONCAT_WS",
        "REPLACE",
        "STARTS_WITH",
        "STARTSWITH",
        "ENDS_WITH",
        "CONTAINS",
        "STRPOS",
        "REGEXP_MATCHES",
        "REGEXP_LIKE",
        "REGEXP_REPLACE",
        "REGEXP_EXTRACT",
        "LPAD",
        "RPAD",
        "SPLIT_PART",
        "MD5",
        "REVERSE",
        # dates and times
        "STRPTIME",
        "TRY_STRPTIME",
        "STRFTIME",
        "STR_TO_TIME",
        "STR_TO_DATE",
        "TIME_STR_TO_TIME",
        "DATE_DIFF",
        "DATEDIFF",
        "DATE_TRUNC",
        "DATETRUNC",
        "TIMESTAMP_TRUNC",
        "DATE_ADD",
        "DATE_SUB",
        "EXTRACT",
        "DAYOFWEEK",
        "DAY_OF_WEEK",
        "DAYOFMONTH",
        "DAY_OF_MONTH",
        "DAYOFYEAR",
        "DAY_OF_YEAR",
        "YEAR",
        "MONTH",
        "DAY",
        "HOUR",
        "MINUTE",
        "WEEK",
        "QUARTER",
        "MAKE_DATE",
        "MAKE_TIMESTAMP",
        "TO_TIMESTAMP",
        "EPOCH",
        "TS_OR_DS_TO_DATE",
        "DATE",
        "TIMESTAMP",
        "DATE_FROM_PARTS",
        "TIMESTAMP_FROM_PARTS",
        "UNIX_TO_TIME",
        "STR_POSITION",
        "TIME_TO_STR",
        "DATE_TO_DATE_STR",
        "DATE_STR_TO_DATE",
        "TS_OR_DS_ADD",
        "TS_OR_DS_DIFF",
        "TIME_STR_TO_DATE",
        "INTERVAL",
    }
)

#: Syntax that reaches beyond one row's columns: statements, queries, tables, variables.
_FORBIDDEN = (
    exp.Query,
    exp.Subquery,
    exp.Table,
    exp.Join,
    exp.From,
    exp.Create,
    exp.Drop,
    exp.Insert,
    exp.Delete,
    exp.Update,
    exp.Command,
    exp.Copy,
    exp.Pragma,
    exp.Set,
    exp.Use,
    exp.Placeholder,
    exp.Parameter,
    exp.Window,
    exp.Lambda,
)


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).upper()
    return node.sql_name().upper()


def referenced_columns(node: exp.Expression) -> list[str]:
    """Column names an expression reads, in order of first use."""
    return list(dict.fromkeys(c.name for c in node.find_all(exp.Column)))


def parse_expression(
    text: str,
    where: str,
    columns: Iterable[str] | None = None,
    aggregate: bool | None = None,
) -> exp.Expression:
    """The checked syntax tree of one user expression; `where` (file and key) prefixes every
    error. `columns`: the names it may read (case-insensitive, as in SQL); None skips that check.
    `aggregate`: True requires every column to be read inside an aggregate (a value per group),
    False forbids aggregates (a value per row), None accepts either."""
    if not isinstance(text, str) or not text.strip():
        raise UnsafeExpressionError(f"{where}: is empty; write an SQL expression")
    try:
        statements = [s for s in sqlglot.parse(f"SELECT {text}", dialect="duckdb") if s is not None]
    except ParseError as exc:
        first = str(exc).splitlines()[0]
        raise UnsafeExpressionError(f"{where}: {text!r} is not a valid SQL expression: {first}") from None
    if len(statements) != 1:
        raise UnsafeExpressionError(
            f"{where}: {text!r} holds {len(statements)} statements; write one expression, without ';'"
        )
    select = statements[0]
    # anything beside the one projection (FROM, WHERE, JOIN, LIMIT, DISTINCT...) is refused
    clauses = [k.rstrip("_") for k, v in select.args.items() if k != "expressions" and v]
    if not isinstance(select, exp.Select) or clauses or len(select.expressions) != 1:
        raise UnsafeExpressionError(
            f"{where}: {text!r} is not a single expression (found {', '.join(clauses) or 'several'}); "
            'write one expression over the columns, e.g. "Quantity * UnitPrice"'
        )
    node = select.expressions[0]
    if isinstance(node, exp.Alias):
        raise UnsafeExpressionError(f"{where}: {text!r}: drop the alias (AS ...); the key names the result")
    for sub in node.walk():
        if isinstance(sub, _FORBIDDEN):
            part = sub.sql(dialect="duckdb")[:80]
            raise UnsafeExpressionError(
                f"{where}: {text!r}: {type(sub).__name__.lower()} {part!r} is not allowed; an expression "
                "may read the row's columns only (no statements, subqueries, tables or files)"
            )
        operator = isinstance(sub, (exp.Binary, exp.Unary, exp.Connector))  # AND, +, NOT...: not calls
        if isinstance(sub, exp.Func) and not operator and _function_name(sub) not in ALLOWED_FUNCTIONS:
            raise UnsafeExpressionError(
                f"{where}: {text!r}: function {_function_name(sub).lower()}() is not allowed; allowed "
                "functions are listed in docs/configuration.md"
            )
    if columns is not None:
        known = {c.lower(): c for c in columns}
        unknown = [c for c in referenced_columns(node) if c.lower() not in known]
        if unknown:
            raise UnsafeExpressionError(
                f"{where}: {text!r} reads column {unknown[0]!r}, which does not exist here "
                f"(columns: {sorted(known.values())})"
            )
    if aggregate is not None:
        has_agg = any(isinstance(s, exp.AggFunc) for s in node.walk())
        loose = [c.name for c in node.find_all(exp.Column) if c.find_ancestor(exp.AggFunc, exp.Filter) is None]
        if aggregate and loose:
            raise UnsafeExpressionError(
                f"{where}: {text!r} reads column {loose[0]!r} outside an aggregate; a target value "
                "summarises the window's events, e.g. count(*) or sum(value)"
            )
        if not aggregate and has_agg:
            raise UnsafeExpressionError(f"{where}: {text!r} uses an aggregate; it applies to one row")
    return node


def render(node: exp.Expression) -> str:
    """SQL of a checked expression (DuckDB dialect), parenthesised so it composes."""
    return f"({node.sql(dialect='duckdb')})"
