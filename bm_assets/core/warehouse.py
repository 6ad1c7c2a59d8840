"""The warehouse the SQL stages run in. Assets only talk to this interface, so an embedded
DuckDB file and BigQuery are interchangeable. SQL handed to it is written in DuckDB's dialect;
an implementation for another engine translates it in one place."""

from __future__ import annotations

import datetime as dt
import glob as globlib
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from bm_assets.config import (
    JSON_OBJECT,
    AttributeTable,
    CsvOptions,
    EventSource,
    csv_columns_problem,
    empty_file_problem,
    json_keys_sql,
    json_lines_problem,
    json_lines_reader,
    json_rows_sql,
    unreadable_csv_message,
)
from bm_assets.core.sql import ident, list_cell_sql, literal, repeated_key_sql


class SourceReadError(ValueError):
    """A source file that cannot be ingested at all (missing file or required column)."""


class Warehouse(ABC):
    """Runs SQL where the data lives. `table(name)` gives the qualified name of a managed table."""

    @abstractmethod
    def table(self, name: str) -> str: ...

    @abstractmethod
    def execute(self, statements: Sequence[str]) -> None:
        """Run statements in one transaction: all of them apply, or none."""

    @abstractmethod
    def fetch_df(self, sql: str) -> pd.DataFrame: ...

    @abstractmethod
    def fetch_arrow(self, sql: str) -> pa.Table:
        """Rows as Arrow: for bulk reads, where per-row Python objects would dominate."""

    def iter_arrow(self, sql: str, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """Rows as a stream of Arrow record batches of about `batch_rows` rows: memory follows a
        batch, not the result."""
        yield from self.fetch_arrow(sql).to_batches(batch_rows)

    @abstractmethod
    def table_exists(self, name: str) -> bool: ...

    @abstractmethod
    def stage_events(self, source: EventSource, path: str | Sequence[str], stage: str) -> None:
        """Load the raw rows of an event source (a path or glob, or a list of its files) into temp
        tables: `<stage>` holds the source
        columns plus __file and __row (1-based row in the file, or line for CSV);
        `<stage>_rejects` holds records the reader could not parse (__file, __row,
        column_name, reason, raw)."""

    @abstractmethod
    def record_json_sql(self, alias: str) -> str:
        """SQL expression rendering a whole row of table alias `alias` as a JSON string."""

    @abstractmethod
    def stage_attributes(self, table: AttributeTable, path: str, stage: str) -> None:
        """Load an attribute table's raw rows into temp table `<stage>`, with __file, __row."""

    def insert_df(
        self, name: str, df: pd.DataFrame | pa.Table, before: Sequence[str] = (), after: Sequence[str] = ()
    ) -> None:
        """Append `df` (a DataFrame, or an Arrow table: no conversion of list columns) to managed
        table `name` (created from df's schema if missing), after running `before` (e.g. a DELETE
        of the rows being replaced) and before `after` (e.g. a compaction that needs the new
        rows), all in one transaction."""
        raise NotImplementedError(f"{type(self).__name__} cannot insert a DataFrame into {name}")

    def preview(
        self, name: str, limit: int = 5, days: tuple[dt.date, dt.date] | None = None, day_column: str = "event_date"
    ) -> pd.DataFrame:
        """Up to `limit` rows of managed table `name` (of days [start, end) of `day_column` when
        `days` is given): what an asset shows in its metadata."""
        col = ident(day_column)
        where = f"{col} >= DATE '{days[0]}' AND {col} < DATE '{days[1]}'" if days else "TRUE"
        return self.fetch_df(f"SELECT * FROM {self.table(name)} WHERE {where} LIMIT {int(limit)}")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def expand_paths(path: str) -> list[str]:
    """A path or glob -> sorted existing files; an error naming the path if none exist."""
    if any(ch in path for ch in "*?["):
        files, missing = sorted(globlib.glob(path)), []  # glob lists existing files only
    else:
        files, missing = [path], [] if Path(path).exists() else [path]
    if not files or missing:
        raise SourceReadError(f"source file {missing[0] if missing else path} does not exist")
    return files


class DuckDBWarehouse(Warehouse):
    """An embedded DuckDB file. One connection per instance; the file has one writer at a
    time, so opening retries while another process holds the lock. With external_access=False
    no statement can read or write a file, load an extension or attach a database (DuckDB's
    enable_external_access; it holds until the file's last connection in this process closes);
    tables and explicitly registered data frames still work."""

    def __init__(
        self, database: str, lock_timeout_s: float = 120.0, threads: int | None = None, external_access: bool = True
    ):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + lock_timeout_s
        while True:
            try:
                self.con = duckdb.connect(database)
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        if not external_access:
            self.con.execute("SET enable_external_access = false")

    def table(self, name: str) -> str:
        return ident(name)

    def execute(self, statements: Sequence[str]) -> None:
        self.con.execute("BEGIN TRANSACTION")
        try:
            for stmt in statements:
                self.con.execute(stmt)
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def fetch_df(self, sql: str) -> pd.DataFrame:
        return self.con.execute(sql).df()

    def fetch_arrow(self, sql: str) -> pa.Table:
        return self.con.sql(sql).to_arrow_table()  # a relation: no extra copy of the rows

    def iter_arrow(self, sql: str, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        yield from self.con.sql(sql).to_arrow_reader(batch_rows)

    def table_exists(self, name: str) -> bool:
        rows = self.con.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_name = ? AND table_schema = 'main'",
            [name],
        ).fetchall()
        return bool(rows)

    def _reader(self, path: str, fmt: str, rejects: str | None, csv: CsvOptions) -> str:
        """A table function reading one file. Without `rejects` (schema look-ups only) bad CSV
        records are skipped; with it they are kept in the rejects table."""
        if fmt == "parquet":
            return f"read_parquet({literal(path)})"
        opts = f"{csv.reader_options()}, all_varchar=true"
        if not rejects:
            opts += ", ignore_errors=true"
        else:
            opts += f", store_rejects=true, rejects_table={literal(rejects)}, rejects_scan={literal(rejects + '_scan')}"
        return f"read_csv({literal(path)}, {opts})"

    def _drop(self, name: str) -> None:
        """Drop a temp table or view of that name, whichever it is."""
        for kind in ("VIEW", "TABLE"):
            try:
                self.con.execute(f"DROP {kind} IF EXISTS {name}")
            except duckdb.CatalogException:
                continue

    def _stage(
        self,
        path_or_glob: str | Sequence[str],
        fmt: str,
        stage: str,
        required: dict[str, str],
        rejects: bool,
        csv: CsvOptions,
    ) -> None:
        self._drop(stage)
        self._drop(f"{stage}_rejects")
        self.con.execute(
            f"CREATE TEMP TABLE {stage}_rejects (__file VARCHAR, __row BIGINT, column_name VARCHAR, "
            "reason VARCHAR, raw VARCHAR)"
        )
        files = expand_paths(path_or_glob) if isinstance(path_or_glob, str) else list(path_or_glob)
        if fmt == "json":
            self._stage_json_lines(files, stage, required, rejects)
            return
        for path in files:
            problem = empty_file_problem(path) or (csv_columns_problem(path, csv) if fmt == "csv" else None)
            if problem:
                raise SourceReadError(problem)
            try:
                described = self.con.execute(f"DESCRIBE SELECT * FROM {self._reader(path, fmt, None, csv)}").fetchall()
            except duckdb.Error as exc:
                if fmt != "csv":
                    raise
                raise SourceReadError(unreadable_csv_message(path, exc)) from None
            schema = {r[0] for r in described}
            for role, col in required.items():
                if col not in schema:
                    raise SourceReadError(
                        f"{path}: required column {col!r} (role {role}) is missing; found {sorted(schema)}"
                    )
        if fmt == "parquet":
            # Parquet needs no copy: a view over the files, rows numbered by the reader.
            file_list = "[" + ", ".join(literal(p) for p in files) + "]"
            self.con.execute(
                f"CREATE TEMP VIEW {stage} AS SELECT * EXCLUDE (filename, file_row_number), "
                f"filename AS __file, file_row_number + 1 AS __row "
                f"FROM read_parquet({file_list}, filename=true, file_row_number=true, union_by_name=true)"
            )
            return
        for i, path in enumerate(files):
            reject_tbl = f"{stage}_csvrej{i}"
            self.con.execute(f"DROP TABLE IF EXISTS {reject_tbl}")
            self.con.execute(f"DROP TABLE IF EXISTS {reject_tbl}_scan")
            # row_number() OVER () follows file order for a single-file scan (insertion order is
            # preserved); rejected CSV lines are re-inserted into the numbering below.
            select = (
                f"SELECT *, {literal(path)} AS __file, row_number() OVER () AS __row "
                f"FROM {self._reader(path, fmt, reject_tbl if rejects else None, csv)}"
            )
            if i == 0:
                self.con.execute(f"CREATE TEMP TABLE {stage} AS {select}")
            else:
                self.con.execute(f"INSERT INTO {stage} BY NAME {select}")
            self._renumber_after_rejects(stage, path, reject_tbl, csv.header_lines)

    def _stage_json_lines(self, files: list[str], stage: str, required: dict[str, str], rejects: bool) -> None:
        """Stage JSON-lines files: one text column per top-level key (the union over the files,
        in first-seen order), `__file` and `__row` (the file line). A line that is not one JSON
        object goes to `<stage>_rejects` with its line; a blank line is no record."""
        keys: list[str] = []
        for path in files:
            problem = empty_file_problem(path) or json_lines_problem(path)
            if problem:
                raise SourceReadError(problem)
            found = [k[0] for k in self.con.execute(json_keys_sql(json_lines_reader(path))).fetchall()]
            keys += [k for k in found if k not in keys]
        for role, col in required.items():
            if col not in keys:
                raise SourceReadError(
                    f"{files[0]}: required column {col!r} (role {role}) is missing; found {sorted(keys)}"
                )
        for i, path in enumerate(files):
            lines, reject_tbl = f"{stage}_lines{i}", f"{stage}_jsonrej{i}"
            self._drop(lines)
            self.con.execute(f"DROP TABLE IF EXISTS {reject_tbl}")
            self.con.execute(f"DROP TABLE IF EXISTS {reject_tbl}_scan")
            # row_number() OVER () follows file order for a single-file scan, blank lines included
            self.con.execute(
                f"CREATE TEMP TABLE {lines} AS SELECT line, {literal(path)} AS __file, row_number() OVER () AS __row "
                f"FROM {json_lines_reader(path, reject_tbl if rejects else None)}"
            )
            if rejects:
                self._renumber_after_rejects(lines, path, reject_tbl, 0, rejects_into=f"{stage}_rejects")
            self.con.execute(
                f"""INSERT INTO {stage}_rejects SELECT __file, __row, NULL,
                    CASE WHEN json_valid(line) THEN 'not a JSON object' ELSE 'invalid JSON' END, line
                FROM {lines} WHERE trim(line) <> '' AND NOT ({JSON_OBJECT})"""
            )
            select = json_rows_sql(keys, lines, extra="__file, __row")
            if i == 0:
                self.con.execute(f"CREATE TEMP TABLE {stage} AS {select}")
            else:
                self.con.execute(f"INSERT INTO {stage} BY NAME {select}")
            self._drop(lines)

    def _renumber_after_rejects(
        self, stage: str, path: str, reject_tbl: str, header_lines: int, rejects_into: str | None = None
    ) -> None:
        """Map parsed-row ordinals to file lines when the CSV reader rejected some lines, and
        copy the rejected lines into `<stage>_rejects` (or `rejects_into`). Line numbers count a
        header as line 1; Parquet rows keep their 1-based row index."""
        self.con.execute(
            f"""INSERT INTO {rejects_into or stage + "_rejects"}
            SELECT {literal(path)}, line, any_value(column_name),
                   string_agg(error_type || ': ' || error_message, '; '), any_value(csv_line)
            FROM {reject_tbl} GROUP BY line"""
        )
        n_rej = self.con.execute(f"SELECT count(DISTINCT line) FROM {reject_tbl}").fetchall()[0][0]
        if n_rej:
            # Rejected data line d_j (j-th, 1-based) has d_j - j good lines before it; parsed
            # row k sits after every reject with d_j - j < k.
            self.con.execute(
                f"""UPDATE {stage} SET __row = __row + (
                    SELECT count(*) FROM (
                        SELECT line - {header_lines} - row_number() OVER (ORDER BY line) AS good_before
                        FROM (SELECT DISTINCT line FROM {reject_tbl})
                    ) r WHERE r.good_before < {stage}.__row)
                WHERE __file = {literal(path)}"""
            )
        # CSV data rows are reported as file lines (a header is line 1).
        if header_lines:
            self.con.execute(f"UPDATE {stage} SET __row = __row + {header_lines} WHERE __file = {literal(path)}")

    def record_json_sql(self, alias: str) -> str:
        return f"CAST(to_json({alias}) AS VARCHAR)"

    def stage_events(self, source: EventSource, path: str | Sequence[str], stage: str) -> None:
        """With `source.join`, `<stage>` is a view of the lines with each joined table's new
        columns and `__unjoined`: 0, or the 1-based index of the first join that found no row."""
        if not source.join:
            self._stage(
                path, source.format or "parquet", stage, source.required_columns(), rejects=True, csv=source.csv
            )
            return
        tables: dict[str, list[str]] = {}  # joined table -> its columns
        for k, j in enumerate(source.join):
            table = f"{stage}_join{k}"
            self._stage(j.path, j.format or "parquet", table, {f"join[{k}].key": j.key}, rejects=True, csv=j.csv)
            dup = self.con.execute(repeated_key_sql(table, f"CAST({ident(j.key)} AS VARCHAR)")).fetchone()
            if dup:
                raise SourceReadError(
                    f"{dup[1]}: rows {[int(r) for r in dup[2]][:5]}: key {dup[0]!r} in column {j.key!r} appears "
                    f"more than once; events ({source.name}).join[{k}] needs one row per key"
                )
            tables[table] = self._columns(table)
        joined_cols = {c for cols in tables.values() for c in cols} - {"__file", "__row"}
        keys = {f"join[{k}].line_key": j.lines_key for k, j in enumerate(source.join)}
        required = {r: c for r, c in {**source.required_columns(), **keys}.items() if c not in joined_cols}
        lines = f"{stage}_lines"
        self._stage(path, source.format or "parquet", lines, required, rejects=True, csv=source.csv)
        alias = {c: "l" for c in self._columns(lines)}  # column -> the first table that has it
        picked, missing = [], []
        for k, (j, (table, table_cols)) in enumerate(zip(source.join, tables.items(), strict=True)):
            if j.lines_key not in alias:
                raise SourceReadError(
                    f"events ({source.name}).join[{k}]: column {j.lines_key!r} is neither on the lines nor in an "
                    f"earlier join (found {sorted(alias)})"
                )
            ons = f"CAST({alias[j.lines_key]}.{ident(j.lines_key)} AS VARCHAR) = CAST(j{k}.{ident(j.key)} AS VARCHAR)"
            picked.append(f"LEFT JOIN {table} j{k} ON {ons}")
            missing.append(f"WHEN j{k}.__row IS NULL THEN {k + 1}")
            for c in table_cols:
                alias.setdefault(c, f"j{k}")
        cols = ", ".join(f"{a}.{ident(c)}" for c, a in alias.items() if a != "l")
        for name in (stage, f"{stage}_rejects"):
            self._drop(name)
        self.con.execute(
            f"""CREATE TEMP VIEW {stage} AS SELECT l.*, {cols + ", " if cols else ""}
                CASE {" ".join(missing)} ELSE 0 END AS __unjoined FROM {lines} l {" ".join(picked)}"""
        )
        self.con.execute(f"CREATE TEMP VIEW {stage}_rejects AS SELECT * FROM {lines}_rejects")

    def _columns(self, name: str) -> list[str]:
        return [r[0] for r in self.con.execute(f"DESCRIBE {name}").fetchall()]

    def stage_attributes(self, table: AttributeTable, path: str, stage: str) -> None:
        """Stage an attribute table; its `list` columns in their stored form (list_cell_sql),
        read here, in DuckDB, for every engine: a Parquet array, a JSON array or delimited text."""
        lists = [c for c, k in (table.columns or {}).items() if k == "list"]
        cells = f"{stage}_cells" if lists else stage
        self._drop(stage)
        self._stage(path, table.format or "parquet", cells, {"key": table.key}, rejects=True, csv=table.csv)
        if not lists:
            return
        types = {r[0]: str(r[1]) for r in self.con.execute(f"DESCRIBE {cells}").fetchall()}
        # a missing column is reported where the table is read (core/attributes)
        present = [c for c in lists if c in types]
        cells_sql = [f"{list_cell_sql(c, table.list_separator, types[c].endswith(']'))} AS {ident(c)}" for c in present]
        select = f"* REPLACE ({', '.join(cells_sql)})" if cells_sql else "*"
        self._drop(f"{stage}_rejects")
        self.con.execute(f"CREATE TEMP VIEW {stage} AS SELECT {select} FROM {cells}")
        self.con.execute(f"CREATE TEMP VIEW {stage}_rejects AS SELECT * FROM {cells}_rejects")

    def insert_df(
        self, name: str, df: pd.DataFrame | pa.Table, before: Sequence[str] = (), after: Sequence[str] = ()
    ) -> None:
        self.con.register("__insert_df", df)
        try:
            self.execute(
                [
                    f"CREATE TABLE IF NOT EXISTS {self.table(name)} AS SELECT * FROM __insert_df WHERE FALSE",
                    *before,
                    f"INSERT INTO {self.table(name)} BY NAME SELECT * FROM __insert_df",
                    *after,
                ]
            )
        finally:
            self.con.unregister("__insert_df")

    def close(self) -> None:
        self.con.close()
