"""Ingest: raw source rows -> typed `raw_events` + `raw_events_quarantine`, by date window.

Every source row ends in exactly one of the two tables. A row is attributed to the day of its
timestamp; rows without a usable timestamp (missing, unparsable, outside the configured range)
and records the file reader could not parse are attributed to the first day of the range, so
that each row has one home partition. Writing a window replaces it in one transaction."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp

from bm_assets.config import DatasetConfig, Derived, EventSource, TimestampSpec
from bm_assets.core.source_index import (
    FileKey,
    FileSpan,
    fingerprint,
    parquet_span,
    read_index,
    select_files,
    spans_from_frame,
    spans_sql,
    write_index,
)
from bm_assets.core.sql import (
    INGEST_LOG,
    QUARANTINE,
    RAW_EVENTS,
    engine_error,
    ident,
    literal,
    parse_expression,
    referenced_columns,
    unix_time_sql,
    wall_clock_text_sql,
)
from bm_assets.core.warehouse import DuckDBWarehouse, SourceReadError, Warehouse, expand_paths

#: Reason of rows whose timestamp lies outside data_start..data_end: excluded by the config
#: (e.g. a range trimmed on purpose), not bad data, so the quarantine rate leaves them out.
OUT_OF_RANGE = "timestamp outside the configured range"


@dataclass
class SourceIngest:
    source: str
    rows_in: int
    rows_loaded: int
    rows_quarantined: int
    ignored_columns: list[str] = field(default_factory=list)
    files_read: list[str] = field(default_factory=list)  # the files staged for the window
    files_total: int = 0  # the files the source's path matches


@dataclass
class IngestReport:
    start: dt.date
    end: dt.date  # exclusive
    sources: list[SourceIngest]

    @property
    def rows_in(self) -> int:
        return sum(s.rows_in for s in self.sources)

    @property
    def rows_loaded(self) -> int:
        return sum(s.rows_loaded for s in self.sources)

    @property
    def rows_quarantined(self) -> int:
        return sum(s.rows_quarantined for s in self.sources)


def raw_events_columns(cfg: DatasetConfig) -> dict[str, str]:
    """Column -> SQL type of raw_events."""
    cols = {
        "event_id": "VARCHAR",
        "basket_id": "VARCHAR",
        "source": "VARCHAR",
        "source_file": "VARCHAR",
        "source_row": "BIGINT",
        "client_id": "VARCHAR",
        "item_id": "VARCHAR",
        "event_time": "TIMESTAMP",
        "event_date": "DATE",
        "event_type": "VARCHAR",
        "quantity": "DOUBLE",
        "value": "DOUBLE",
    }
    for c, kind in cfg.context_columns().items():
        cols[c] = "DOUBLE" if kind == "numeric" else "VARCHAR"
    return cols


QUARANTINE_COLUMNS = {
    "source": "VARCHAR",
    "source_file": "VARCHAR",
    "source_row": "BIGINT",
    "column_name": "VARCHAR",
    "reason": "VARCHAR",
    "raw_record": "VARCHAR",
    "partition_date": "DATE",
}

INGEST_LOG_COLUMNS = {
    "source": "VARCHAR",
    "partition_date": "DATE",
    "rows_in": "BIGINT",
    "rows_loaded": "BIGINT",
    "rows_quarantined": "BIGINT",
}


def create_table_sql(wh: Warehouse, name: str, columns: dict[str, str]) -> str:
    body = ", ".join(f"{ident(c)} {t}" for c, t in columns.items())
    return f"CREATE TABLE IF NOT EXISTS {wh.table(name)} ({body})"


def _text(col: str) -> str:
    return f"NULLIF(TRIM(CAST({ident(col)} AS VARCHAR)), '')"


def _label(ref: str | Derived) -> str:
    """How a role's source is named in a quarantine reason."""
    return f"column {ref}" if isinstance(ref, str) else f"expression {ref.expr}"


def _column_name(ref: str | Derived) -> str:
    """The quarantine row's column_name: the column, or the expression's columns."""
    if isinstance(ref, str):
        return ref
    return ", ".join(referenced_columns(parse_expression(ref.expr, "expr", aggregate=False))) or ref.expr


#: Where a text column of a CSV is read as a number in a derived expression: its type follows
#: its use, so `Quantity * UnitPrice` multiplies while `InvoiceNo LIKE 'C%'` matches text.
_NUMERIC_CONTEXT = tuple(
    getattr(exp, name)
    for name in (
        "Add",
        "Sub",
        "Mul",
        "Div",
        "IntDiv",
        "Mod",
        "Neg",
        "Abs",
        "Round",
        "Floor",
        "Ceil",
        "Ln",
        "Log",
        "Exp",
        "Sqrt",
        "Pow",
        "Sign",
        "Greatest",
        "Least",
        "Sum",
        "Avg",
    )
    if hasattr(exp, name)
)
_COMPARISON = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)


def _numeric_use(column: exp.Column) -> bool:
    parent = column.parent
    while isinstance(parent, exp.Paren):
        parent = parent.parent
    if isinstance(parent, _NUMERIC_CONTEXT):
        return True
    if isinstance(parent, _COMPARISON):
        other = parent.expression if parent.this is column else parent.this
        return isinstance(other, exp.Literal) and other.is_number
    return False


class SourceColumns:
    """SQL for a role's value over a staged source. `string_columns` hold text (CSV, or text in
    Parquet): a text column is cleaned (trimmed, empty = NULL), and read as a number where a
    derived expression uses it as one. Columns the file already types are used as they are."""

    def __init__(self, string_columns: set[str]):
        self.strings = string_columns

    def expr(self, ref: Derived) -> str:
        node = parse_expression(ref.expr, "expr", aggregate=False).copy()

        def typed(sub: exp.Expression) -> exp.Expression:
            if not isinstance(sub, exp.Column) or sub.name not in self.strings:
                return sub
            sql = f"TRY_CAST({_text(sub.name)} AS DOUBLE)" if _numeric_use(sub) else _text(sub.name)
            return sqlglot.parse_one(sql, dialect="duckdb")

        return "(" + node.transform(typed).sql(dialect="duckdb") + ")"

    def text(self, ref: str | Derived) -> str:
        if isinstance(ref, Derived):
            return f"NULLIF(TRIM(CAST({self.expr(ref)} AS VARCHAR)), '')"
        return _text(ref) if ref in self.strings else f"CAST({ident(ref)} AS VARCHAR)"

    def present(self, ref: str | Derived) -> str:
        if isinstance(ref, Derived):
            cols = referenced_columns(parse_expression(ref.expr, "expr", aggregate=False))
            return "(" + " AND ".join(self.present(c) for c in cols) + ")" if cols else "TRUE"
        return f"({self.text(ref) if ref in self.strings else ident(ref)} IS NOT NULL)"

    def number(self, ref: str | Derived) -> str:
        if isinstance(ref, Derived):
            return f"TRY_CAST({self.expr(ref)} AS DOUBLE)"
        return f"TRY_CAST({self.text(ref) if ref in self.strings else ident(ref)} AS DOUBLE)"


def basket_sql(cfg: DatasetConfig, src: EventSource) -> str:
    """The basket (visit) of an event: the source's basket_id (staged as basket_raw), or the
    client's events at one timestamp (or on one day), per the dataset's `baskets` rule.

    A basket column filled on some rows only (a transaction id on purchases, none on views)
    falls back to the rule row by row, so the graph, the aggregates and the profile's visit
    block all read one basket per event instead of three different readings of NULL."""
    if cfg.baskets == "day":
        rule = "client_id || '@' || CAST(CAST(event_time AS DATE) AS VARCHAR)"
    else:
        rule = "client_id || '@' || CAST(event_time AS VARCHAR)"  # one engine-neutral cast, no format string
    return rule if src.basket_id is None else f"COALESCE(basket_raw, {rule})"


def classify_sql(cfg: DatasetConfig, src: EventSource, stage: str, string_columns: set[str]) -> str:
    """SELECT over a staged source giving every row its typed values, its reject reason (NULL
    when valid) and its home partition date (see SourceColumns for the two column arguments)."""
    cols = SourceColumns(string_columns)
    text, present, number, expr = cols.text, cols.present, cols.number, cols.expr

    ts_ref = src.timestamp.ref
    if src.timestamp.unit:
        ts = unix_time_sql(number(ts_ref), src.timestamp.unit)
    elif src.timestamp.format:
        ts = f"TRY_STRPTIME({text(ts_ref)}, {literal(src.timestamp.format)})"
    elif isinstance(ts_ref, Derived):
        ts = f"TRY_CAST({expr(ts_ref)} AS TIMESTAMP)"
    elif ts_ref in string_columns:  # text: the wall-clock time as written, a zone designator dropped
        ts = f"TRY_CAST({wall_clock_text_sql(text(ts_ref))} AS TIMESTAMP)"
    else:
        ts = f"TRY_CAST({ident(ts_ref)} AS TIMESTAMP)"
    event_type = text(src.event_type) if src.event_type else literal(src.event_type_value or src.name)
    event_id = (
        text(src.event_id)
        if src.event_id
        else f"{literal(src.name + ':')} || parse_filename(__file) || ':' || CAST(__row AS VARCHAR)"
    )
    helpers = ["item_raw", "ts_given", "basket_raw"]
    typed = [
        f"{text(src.basket_id) if src.basket_id is not None else 'CAST(NULL AS VARCHAR)'} AS basket_raw",
        f"{literal(src.name)} AS source",
        "__file AS source_file",
        "__row AS source_row",
        f"{text(src.client_id)} AS client_id",
        f"{text(src.item_id) if src.item_id is not None else 'CAST(NULL AS VARCHAR)'} AS item_raw",
        f"{present(ts_ref)} AS ts_given",
        f"{ts} AS event_time",
        f"{event_type} AS event_type",
        f"{event_id} AS event_id",
    ]
    ts_label = _label(ts_ref)
    checks: list[tuple[str, str, str]] = [  # (condition, column, reason)
        ("NOT ts_given", _column_name(ts_ref), f"missing timestamp in {ts_label}"),
        (
            "ts_given AND event_time IS NULL",
            _column_name(ts_ref),
            f"unparsable timestamp in {ts_label}" + _parse_rule(src.timestamp),
        ),
        (
            f"event_time < TIMESTAMP '{cfg.data_start}' OR event_time >= TIMESTAMP '{cfg.end_exclusive}'",
            _column_name(ts_ref),
            f"{OUT_OF_RANGE} [{cfg.data_start}, {cfg.last_day}]",
        ),
        ("client_id IS NULL", _column_name(src.client_id), f"missing client id in {_label(src.client_id)}"),
    ]
    if src.item_id is not None:
        checks.append(("item_raw IS NULL", _column_name(src.item_id), f"missing item id in {_label(src.item_id)}"))
    if src.event_id:
        checks.append(("event_id IS NULL", _column_name(src.event_id), f"missing event id in {_label(src.event_id)}"))
    for role in ("quantity", "value"):
        ref = getattr(src, role)
        if ref:
            typed += [f"{present(ref)} AS {role}_given", f"{number(ref)} AS {role}"]
            helpers.append(f"{role}_given")
            checks += [
                (
                    f"{role}_given AND ({role} IS NULL OR NOT isfinite({role}))",
                    _column_name(ref),
                    f"non-numeric {role} in {_label(ref)}",
                ),
                (f"{role} < 0", _column_name(ref), f"negative {role} in {_label(ref)}"),
            ]
        else:
            typed.append(f"CAST(NULL AS DOUBLE) AS {role}")
    refs = src.role_refs()
    for c, kind in cfg.context_columns().items():
        if c not in src.context:
            typed.append(f"CAST(NULL AS {'DOUBLE' if kind == 'numeric' else 'VARCHAR'}) AS {ident(c)}")
            continue
        ref = refs[f"context.{c}"]
        if kind == "numeric":
            flag = ident(c + "__given")
            typed += [f"{present(ref)} AS {flag}", f"{number(ref)} AS {ident(c)}"]
            helpers.append(c + "__given")
            checks.append((f"{flag} AND {ident(c)} IS NULL", _column_name(ref), f"non-numeric {c}"))
        else:
            typed.append(f"{text(ref)} AS {ident(c)}")
    if src.join:  # a line without its joined row has that one reason: its other roles are empty because of it
        typed.append("__unjoined AS unjoined")
        helpers.append("unjoined")
        unjoined = [
            (f"unjoined = {k + 1}", j.lines_key, f"no readable row with its {j.lines_key} in {j.path} (join)")
            for k, j in enumerate(src.join)
        ]
        checks = unjoined + [(f"unjoined = 0 AND ({c})", col, r) for c, col, r in checks]
    reason = "concat_ws('; ', " + ", ".join(f"CASE WHEN {cond} THEN {literal(r)} END" for cond, _, r in checks) + ")"
    column = "CASE " + " ".join(f"WHEN {cond} THEN {literal(col)}" for cond, col, _ in checks) + " END"
    if src.event_id:
        # The first occurrence (by file and row) of an event id wins, across the whole source.
        win = "OVER (PARTITION BY event_id, reason IS NULL ORDER BY source_file, source_row)"
        dup_rank = f"CASE WHEN reason IS NULL THEN row_number() {win} END"
        location = "parse_filename(source_file) || ':' || source_row"
        first_seen = f"CASE WHEN reason IS NULL THEN first_value({location}) {win} END"
    else:  # generated ids are unique by construction
        dup_rank, first_seen = "CAST(NULL AS BIGINT)", "CAST(NULL AS VARCHAR)"
    in_range = f"event_time >= TIMESTAMP '{cfg.data_start}' AND event_time < TIMESTAMP '{cfg.end_exclusive}'"
    return f"""
    WITH typed AS (SELECT {", ".join(typed)} FROM {stage}),
    checked AS (
        SELECT *, NULLIF({reason}, '') AS reason, {column} AS column_name,
               CASE WHEN {in_range} THEN CAST(event_time AS DATE) ELSE DATE '{cfg.data_start}' END
                   AS partition_date
        FROM typed
    ),
    ranked AS (
        SELECT *, {dup_rank} AS dup_rank, {first_seen} AS first_seen FROM checked
    )
    SELECT * EXCLUDE (reason, column_name, {", ".join(map(ident, helpers))}),
        {literal(src.item_prefix)} || item_raw AS item_id,
        {basket_sql(cfg, src)} AS basket_id,
        CASE WHEN dup_rank > 1 THEN 'duplicate event_id ' || event_id || ' (first seen at ' || first_seen || ')'
             ELSE reason END AS reason,
        CASE WHEN dup_rank > 1 THEN {literal(_column_name(src.event_id) if src.event_id else "event_id")}
             ELSE column_name END AS column_name
    FROM ranked"""


def _parse_rule(ts: TimestampSpec) -> str:
    """How the time was read, for the quarantine reason of a value it could not read."""
    if ts.unit:
        return f" (Unix time in {ts.unit})"
    return f" (format {ts.format})" if ts.format else ""


def _string_columns(wh: Warehouse, stage: str) -> set[str]:
    staged = wh.fetch_df(f"SELECT * FROM {stage} LIMIT 0")
    return {c for c in staged.columns if staged[c].dtype == object}


def _classify(wh: Warehouse, cfg: DatasetConfig, src: EventSource, stage: str, classified: str) -> None:
    """Temp table `classified`: every staged row typed, checked and given its partition date."""
    try:
        wh.execute(
            [
                f"CREATE OR REPLACE TEMP TABLE {classified} AS "
                f"{classify_sql(cfg, src, stage, _string_columns(wh, stage))}"
            ]
        )
    except Exception as exc:
        if not any(isinstance(r, Derived) for r in src.role_refs().values()):
            raise
        raise SourceReadError(
            f"events ({src.name}): a derived expression does not fit {src.path}: {engine_error(exc)}. A text column "
            "is a number in arithmetic and numeric functions, text elsewhere: cast it where needed, e.g. "
            "TRY_CAST(col AS DOUBLE)"
        ) from None


def scan_span(cfg: DatasetConfig, src: EventSource, path: str) -> FileSpan:
    """One file's span, read by the ingest's own reader and rules in a scratch in-memory DuckDB."""
    local = DuckDBWarehouse(":memory:")
    try:
        local.stage_events(src, [path], "stage")
        _classify(local, cfg, src, "stage", "classified")
        spans = spans_from_frame(local.fetch_df(spans_sql("classified", "stage_rejects", src.event_id is not None)))
    finally:
        local.close()
    return spans.get(path, FileSpan(None, None))


def _files_to_stage(
    wh: Warehouse, cfg: DatasetConfig, src: EventSource, start: dt.date, end: dt.date
) -> tuple[list[str], list[str], list[FileKey]]:
    """(every file of the source, the files to stage for days [start, end), the files whose span
    the index lacks and that are staged to learn it). A window covering the whole range stages
    every file and learns the missing spans from its own stage; any other window first indexes
    the files it does not know (Parquet statistics, else a scan of that file alone)."""
    files = expand_paths(cfg.resolve(src.path))
    fp = fingerprint(src)
    known = read_index(wh, src.name, fp)
    keys = {f: FileKey.of(f) for f in files}
    missing = [keys[f] for f in files if keys[f] not in known]
    if start <= cfg.data_start and end >= cfg.end_exclusive:
        return files, files, missing
    learned = {}
    for key in missing:
        learned[key] = parquet_span(src, key.path) or scan_span(cfg, src, key.path)
    write_index(wh, src.name, fp, learned)
    spans = {f: known.get(keys[f]) or learned[keys[f]] for f in files}
    return files, select_files(cfg, files, spans, start, end, src.event_id is not None), []


def ingest_window(wh: Warehouse, cfg: DatasetConfig, start: dt.date, end: dt.date) -> IngestReport:
    """Replace days [start, end) of raw_events and raw_events_quarantine from the sources.
    Each source stages only the files that can hold the window's rows (see core/source_index.py)."""
    cols = raw_events_columns(cfg)
    first_day_in_window = start <= cfg.data_start < end
    window = f"partition_date >= DATE '{start}' AND partition_date < DATE '{end}'"
    statements = [
        create_table_sql(wh, RAW_EVENTS, cols),
        create_table_sql(wh, QUARANTINE, QUARANTINE_COLUMNS),
        create_table_sql(wh, INGEST_LOG, INGEST_LOG_COLUMNS),
        f"DELETE FROM {wh.table(RAW_EVENTS)} WHERE event_date >= DATE '{start}' AND event_date < DATE '{end}'",
        f"DELETE FROM {wh.table(QUARANTINE)} WHERE {window}",
        f"DELETE FROM {wh.table(INGEST_LOG)} WHERE {window}",
    ]
    reports = []
    for src in cfg.events:
        files, chosen, unindexed = _files_to_stage(wh, cfg, src, start, end)
        if not chosen:
            reports.append(SourceIngest(src.name, 0, 0, 0, files_read=[], files_total=len(files)))
            continue
        stage = f"stage_{src.name}"
        wh.stage_events(src, chosen, stage)
        classified = f"classified_{src.name}"
        _classify(wh, cfg, src, stage, classified)
        if unindexed:
            spans = spans_from_frame(wh.fetch_df(spans_sql(classified, f"{stage}_rejects", src.event_id is not None)))
            learned = {k: spans.get(k.path, FileSpan(None, None)) for k in unindexed}
            write_index(wh, src.name, fingerprint(src), learned)
        reader_rejects = f"""SELECT {literal(src.name)} AS source, __file AS source_file, __row AS source_row,
            column_name, 'unreadable record: ' || reason AS reason, raw AS raw_record,
            DATE '{cfg.data_start}' AS partition_date FROM {stage}_rejects
            WHERE {"TRUE" if first_day_in_window else "FALSE"}"""
        select_cols = ", ".join(ident(c) if c != "event_date" else "partition_date AS event_date" for c in cols)
        statements += [
            f"INSERT INTO {wh.table(RAW_EVENTS)} ({', '.join(map(ident, cols))}) "
            f"SELECT {select_cols} FROM {classified} WHERE reason IS NULL AND {window}",
            f"INSERT INTO {wh.table(QUARANTINE)} "
            f"SELECT c.source, c.source_file, c.source_row, c.column_name, c.reason, "
            f"{wh.record_json_sql('s')}, c.partition_date FROM {classified} c JOIN {stage} s "
            f"ON s.__file = c.source_file AND s.__row = c.source_row "
            f"WHERE c.reason IS NOT NULL AND {window} UNION ALL {reader_rejects}",
        ]
        per_day = f"""SELECT partition_date, count(*) FILTER (WHERE reason IS NULL) AS loaded,
                       count(*) FILTER (WHERE reason IS NOT NULL) AS quarantined
                FROM (SELECT partition_date, reason FROM {classified} WHERE {window}
                      UNION ALL SELECT partition_date, reason FROM ({reader_rejects}))
                GROUP BY partition_date"""
        statements.append(
            f"INSERT INTO {wh.table(INGEST_LOG)} SELECT {literal(src.name)}, partition_date, loaded + quarantined, "
            f"loaded, quarantined FROM ({per_day})"
        )
        totals = wh.fetch_df(f"SELECT sum(loaded) AS loaded, sum(quarantined) AS quarantined FROM ({per_day})")
        loaded, quarantined = (int(v) if v == v and v is not None else 0 for v in totals.iloc[0])
        schema_cols = set(wh.fetch_df(f"SELECT * FROM {stage} LIMIT 0").columns)
        attributes = {c for t in cfg.clients + cfg.items if t.from_events == src.name for c in t.columns or {}}
        used = set(src.required_columns().values()) | attributes | {"__file", "__row", "__unjoined"}
        ignored = sorted(schema_cols - used)
        reports.append(SourceIngest(src.name, loaded + quarantined, loaded, quarantined, ignored, chosen, len(files)))
    wh.execute(statements)
    return IngestReport(start, end, reports)
