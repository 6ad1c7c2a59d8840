"""BigQuery as the warehouse. The SQL stages are written once, in DuckDB's dialect;
`translate` turns each statement into BigQuery Standard SQL (sqlglot plus the few fix-ups
below), so new stages need no BigQuery-specific code.

What runs where: every statement handed to `execute`/`fetch_df` is a BigQuery job. Source
files are parsed in this process by the embedded warehouse's own staging code, on an
in-memory DuckDB (one parser, one row numbering, one reject policy for both engines), and
uploaded as scratch tables; they are deleted when the warehouse closes."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlglot
from google.api_core.exceptions import NotFound
from google.cloud import bigquery
from sqlglot import exp
from sqlglot.errors import ErrorLevel

from bm_assets.config import AttributeTable, EventSource
from bm_assets.core.sql import ident, qualified
from bm_assets.core.warehouse import DuckDBWarehouse, Warehouse

_DDL = (exp.Create, exp.Drop, exp.Alter)


def _string(node: exp.Expression) -> exp.Expression:
    """DuckDB casts operands of || and concat_ws to text implicitly; BigQuery does not."""
    if isinstance(node, exp.Literal) and node.is_string or isinstance(node, exp.DPipe | exp.Null):
        return node
    if isinstance(node, exp.Cast) and node.to.is_type(exp.DataType.Type.VARCHAR, exp.DataType.Type.TEXT):
        return node
    return exp.cast(node, exp.DataType.build("VARCHAR"))


def _fix(node: exp.Expression, scratch: Mapping[str, str]) -> exp.Expression:
    """DuckDB constructs sqlglot leaves as they are (or renders wrongly) -> BigQuery ones."""
    if isinstance(node, exp.Anonymous):
        name, args = node.name.lower(), node.expressions
        if name == "parse_filename" and len(args) == 1:
            return exp.RegexpExtract(this=args[0], expression=exp.Literal.string("[^/]*$"))
        if name == "try_strptime" and len(args) == 2:  # DuckDB TIMESTAMP = BigQuery DATETIME
            return exp.SafeFunc(this=exp.ParseDatetime(this=args[0], format=args[1]))
        if name == "hash" and len(args) == 1:  # a stable 64-bit hash of a value (client shards)
            return exp.func("FARM_FINGERPRINT", args[0])
        if name == "isfinite" and len(args) == 1:
            return exp.paren(exp.not_(exp.or_(exp.func("IS_INF", args[0].copy()), exp.func("IS_NAN", args[0].copy()))))
    if isinstance(node, exp.StrToTime):
        # sqlglot renders DuckDB's strptime as PARSE_TIMESTAMP, a time-zoned type in BigQuery.
        parse = exp.ParseDatetime(this=node.this, format=node.args["format"])
        return exp.SafeFunc(this=parse) if node.args.get("safe") else parse
    if isinstance(node, exp.ConcatWs):
        # BigQuery has no CONCAT_WS; ARRAY_TO_STRING skips NULLs like DuckDB's concat_ws does.
        sep, *parts = node.expressions
        return exp.func("ARRAY_TO_STRING", exp.Array(expressions=[_string(p) for p in parts]), sep)
    if isinstance(node, exp.DPipe):
        node.set("this", _string(node.this))
        node.set("expression", _string(node.expression))
    if isinstance(node, exp.Select) and node.args.get("where") and not node.args.get("from_"):
        # BigQuery refuses WHERE without FROM; one dummy row keeps the meaning.
        node.from_("UNNEST([1])", dialect="bigquery", copy=False)
    if isinstance(node, exp.Insert) and node.args.get("by_name") and isinstance(node.expression, exp.Select):
        # BigQuery has no BY NAME: name the target columns after the SELECT's output columns.
        names = node.expression.named_selects
        if names and not any(isinstance(e, exp.Star) or e.is_star for e in node.expression.expressions):
            node.set("this", exp.Schema(this=node.this, expressions=[exp.to_identifier(n) for n in names]))
            node.set("by_name", None)
    if isinstance(node, exp.Create):
        props = node.args.get("properties")
        if props:  # TEMP tables -> scratch tables (BigQuery has temp tables only in scripts/sessions)
            kept = [p for p in props.expressions if not isinstance(p, exp.TemporaryProperty)]
            props.set("expressions", kept)
            if not props.expressions:
                node.set("properties", None)
    if isinstance(node, exp.Table) and not node.args.get("db") and node.name in scratch:
        target = exp.to_table(scratch[node.name], dialect="bigquery")
        if isinstance(node.parent, exp.From | exp.Join) and not node.alias:
            target.set("alias", exp.TableAlias(this=exp.to_identifier(node.name)))
        elif node.alias:
            target.set("alias", node.args["alias"])
        return target
    return node


def temp_tables(sql: str) -> list[str]:
    """Names of the TEMP tables a DuckDB statement creates."""
    return [
        c.this.name if isinstance(c.this, exp.Table) else c.this.this.name
        for tree in sqlglot.parse(sql, read="duckdb")
        if tree is not None
        for c in tree.find_all(exp.Create)
        if c.args.get("properties") and c.args["properties"].find(exp.TemporaryProperty)
    ]


def translate(sql: str, scratch: Mapping[str, str] | None = None) -> str:
    """DuckDB-dialect SQL -> BigQuery Standard SQL. `scratch` maps unqualified names of
    session tables (DuckDB TEMP tables, stages) to the qualified tables that hold them."""
    scratch = scratch or {}
    out = []
    for tree in sqlglot.parse(sql, read="duckdb"):
        if tree is None:
            continue
        for node in reversed(list(tree.walk(bfs=False))):  # children before their parents
            fixed = _fix(node, scratch)
            if fixed is not node:
                if node is tree:
                    tree = fixed
                else:
                    node.replace(fixed)
        out.append(tree.sql(dialect="bigquery", unsupported_level=ErrorLevel.IGNORE))
    return ";\n".join(out)


def is_ddl(sql: str) -> bool:
    """Statements BigQuery refuses inside a multi-statement transaction (DDL on real tables)."""
    trees = [t for t in sqlglot.parse(sql, read="bigquery") if t is not None]
    return any(isinstance(t, _DDL) for t in trees)


def transaction_script(statements: Sequence[str]) -> str:
    """One BigQuery script: DDL runs as it comes, each run of DML inside
    BEGIN TRANSACTION ... COMMIT TRANSACTION. BigQuery rolls an open transaction back when a
    statement fails, so the DML applies all or nothing; DDL cannot join a transaction, so a
    list is atomic when its DDL comes first (CREATE IF NOT EXISTS, then DELETE + INSERT)."""
    parts: list[str] = []
    in_tx = False
    for stmt in statements:
        ddl = is_ddl(stmt)
        if ddl and in_tx:
            parts.append("COMMIT TRANSACTION")
        elif not ddl and not in_tx:
            parts.append("BEGIN TRANSACTION")
        in_tx = not ddl
        parts.append(stmt)
    if in_tx:
        parts.append("COMMIT TRANSACTION")
    return ";\n".join(parts) + ";"


def _bq_type(duck_type: str) -> tuple[str, str | None]:
    """DuckDB column type -> (BigQuery type, DuckDB cast applied before the upload)."""
    t = duck_type.upper()
    if t in {"VARCHAR", "UUID"}:
        return "STRING", None
    if t in {"BIGINT", "INTEGER", "SMALLINT", "TINYINT", "UINTEGER", "USMALLINT", "UTINYINT"}:
        return "INT64", "BIGINT"
    if t in {"DOUBLE", "FLOAT", "REAL"} or t.startswith("DECIMAL"):
        return "FLOAT64", "DOUBLE"
    if t == "BOOLEAN":
        return "BOOL", None
    if t == "DATE":
        return "DATE", None
    if t.startswith("TIMESTAMP WITH TIME ZONE") or t == "TIMESTAMPTZ":
        return "TIMESTAMP", None
    if t.startswith("TIMESTAMP"):
        return "DATETIME", "TIMESTAMP"
    if t == "BLOB":
        return "BYTES", None
    return "STRING", "VARCHAR"


def _arrow_field(field: pa.Field) -> tuple[bigquery.SchemaField, pa.DataType]:
    """An Arrow column -> (BigQuery field, Arrow type to upload it as). Lists become REPEATED
    fields; narrow ints and floats widen to BigQuery's only sizes (float32 -> FLOAT64 is exact)."""
    t, mode = field.type, "NULLABLE"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t, mode = t.value_type, "REPEATED"
    if pa.types.is_boolean(t):
        bq, up = "BOOL", pa.bool_()
    elif pa.types.is_integer(t):
        bq, up = "INT64", pa.int64()
    elif pa.types.is_floating(t) or pa.types.is_decimal(t):
        bq, up = "FLOAT64", pa.float64()
    elif pa.types.is_date(t):
        bq, up = "DATE", pa.date32()
    elif pa.types.is_timestamp(t):
        bq, up = ("TIMESTAMP", pa.timestamp("us", "UTC")) if t.tz else ("DATETIME", pa.timestamp("us"))
    elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
        bq, up = "BYTES", pa.binary()
    else:
        bq, up = "STRING", pa.string()
    return bigquery.SchemaField(field.name, bq, mode=mode), pa.list_(up) if mode == "REPEATED" else up


class BigQueryWarehouse(Warehouse):
    """One BigQuery dataset. Managed tables are `project.dataset.name`; scratch tables (stages,
    DuckDB TEMP tables) get a per-instance prefix so concurrent runs do not collide."""

    def __init__(self, client: bigquery.Client, dataset: str, project: str | None = None, location: str | None = None):
        self.client = client
        self.project = project or client.project
        self.dataset = dataset
        self.location = location
        self._scratch: dict[str, str] = {}  # session table name -> project.dataset.table holding it
        self._prefix = f"_bm_scratch_{uuid.uuid4().hex[:10]}_"
        self._job_config = bigquery.QueryJobConfig(default_dataset=f"{self.project}.{self.dataset}")

    def ensure_dataset(self) -> None:
        """Create the dataset on first use; an existing one needs no project-level permission."""
        try:
            self.client.get_dataset(f"{self.project}.{self.dataset}")
        except NotFound:
            ds = bigquery.Dataset(f"{self.project}.{self.dataset}")
            if self.location:
                ds.location = self.location
            self.client.create_dataset(ds, exists_ok=True, timeout=60)

    def _ref(self, name: str) -> str:
        return f"{self.project}.{self.dataset}.{name}"

    def table(self, name: str) -> str:
        return qualified(self.project, self.dataset, name)

    def _bq(self, sql: str) -> str:
        for name in temp_tables(sql):
            self._scratch.setdefault(name, self._ref(self._prefix + name))
        return translate(sql, {name: ident(ref, "bigquery") for name, ref in self._scratch.items()})

    def _run(self, bq_sql: str) -> bigquery.table.RowIterator:
        return self.client.query(bq_sql, job_config=self._job_config, location=self.location).result()

    def execute(self, statements: Sequence[str]) -> None:
        translated = [self._bq(s) for s in statements]
        if translated:
            self._run(transaction_script(translated))

    def fetch_df(self, sql: str) -> pd.DataFrame:
        """Rows as pandas with the dtypes DuckDB's .df() gives (dates as datetime64, lists as
        numpy arrays), so core code reads results the same from both engines."""
        table = self._run(self._bq(sql)).to_arrow(create_bqstorage_client=False)
        df = table.to_pandas(date_as_object=False)
        for field in table.schema:
            if pa.types.is_date(field.type):
                df[field.name] = df[field.name].astype("datetime64[us]")
        return df

    def fetch_arrow(self, sql: str) -> pa.Table:
        return self._run(self._bq(sql)).to_arrow(create_bqstorage_client=False)

    def iter_arrow(self, sql: str, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """Page by page through the REST API (the rows are never all in memory)."""
        rows = self.client.query(self._bq(sql), job_config=self._job_config, location=self.location).result(
            page_size=batch_rows
        )
        yield from rows.to_arrow_iterable(bqstorage_client=None)

    def table_exists(self, name: str) -> bool:
        try:
            self.client.get_table(self._ref(name))
        except NotFound:
            return False
        return True

    def record_json_sql(self, alias: str) -> str:
        return f"TO_JSON_STRING({alias})"

    def _stage(self, stage: str, fill: Callable[[DuckDBWarehouse], None]) -> None:
        """Stage with the embedded warehouse's code on an in-memory DuckDB, then upload
        `<stage>` and `<stage>_rejects` as scratch tables."""
        local = DuckDBWarehouse(":memory:")
        try:
            fill(local)
            for name in (stage, f"{stage}_rejects"):
                ref = self._ref(self._prefix + name)
                self._scratch[name] = ref
                self._upload(local.con, name, ref)
        finally:
            local.close()

    def _upload(self, con: duckdb.DuckDBPyConnection, name: str, destination: str) -> None:
        schema, select = [], []
        for col, duck_type, *_ in con.execute(f"DESCRIBE {name}").fetchall():
            bq_type, cast = _bq_type(duck_type)
            schema.append(bigquery.SchemaField(col, bq_type))
            quoted = ident(col)
            select.append(f"CAST({quoted} AS {cast}) AS {quoted}" if cast else quoted)
        df = con.execute(f"SELECT {', '.join(select)} FROM {name}").df()
        config = bigquery.LoadJobConfig(schema=schema, write_disposition="WRITE_TRUNCATE")
        load = self.client.load_table_from_dataframe
        load(df, destination, job_config=config, location=self.location).result()

    def stage_events(self, source: EventSource, path: str | Sequence[str], stage: str) -> None:
        self._stage(stage, lambda local: local.stage_events(source, path, stage))

    def stage_attributes(self, table: AttributeTable, path: str, stage: str) -> None:
        self._stage(stage, lambda local: local.stage_attributes(table, path, stage))

    def insert_df(
        self, name: str, df: pd.DataFrame | pa.Table, before: Sequence[str] = (), after: Sequence[str] = ()
    ) -> None:
        """Upload `df` to a scratch table (a load job: BigQuery cannot take rows inside a
        transaction), then one script: create the target from the frame's schema if missing
        (DDL, before the transaction), then `before` and INSERT ... SELECT in one transaction.
        A failure leaves the target as it was; the scratch table is dropped either way."""
        table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
        fields = [_arrow_field(f) for f in table.schema]
        table = pa.table(
            [col.cast(up) for col, (_, up) in zip(table.columns, fields, strict=True)],
            names=table.column_names,
        )
        buf = io.BytesIO()
        pq.write_table(table, buf)
        buf.seek(0)
        scratch = self._ref(f"{self._prefix}insert_{uuid.uuid4().hex[:8]}")
        config = bigquery.LoadJobConfig(
            schema=[f for f, _ in fields],
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition="WRITE_TRUNCATE",
        )
        config.parquet_options = bigquery.ParquetOptions()
        config.parquet_options.enable_list_inference = True  # parquet LIST -> REPEATED, not a RECORD
        target, source = ident(self._ref(name), "bigquery"), ident(scratch, "bigquery")
        cols = ", ".join(ident(c, "bigquery") for c in table.column_names)
        try:
            self.client.load_table_from_file(buf, scratch, job_config=config, location=self.location).result()
            self._run(
                transaction_script(
                    [
                        f"CREATE TABLE IF NOT EXISTS {target} AS SELECT * FROM {source} LIMIT 0",
                        *(self._bq(s) for s in before),
                        f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {source}",
                        *(self._bq(s) for s in after),
                    ]
                )
            )
        finally:
            self.client.delete_table(scratch, not_found_ok=True)

    def close(self) -> None:
        """Delete this instance's scratch tables."""
        for ref in self._scratch.values():
            self.client.delete_table(ref, not_found_ok=True)
        self._scratch.clear()
