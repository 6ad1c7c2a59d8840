"""Attribute tables -> one row per client (`client_properties`) or item (`product_catalog`).

Attribute rows carry no time, so a bad key cannot be quarantined into a day: a missing or
duplicated key, or a non-numeric value in a numeric column, stops the build with an error
naming the file, row and column."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bm_assets.config import AttributeTable, DatasetConfig, attribute_columns, attribute_output_name
from bm_assets.core.ingest import SourceColumns, _text
from bm_assets.core.sql import CLIENT_PROPERTIES, PRODUCT_CATALOG, ident, literal, repeated_key_sql
from bm_assets.core.warehouse import Warehouse


class AttributeDataError(ValueError):
    """An attribute table row that cannot be used."""


@dataclass
class AttributeBuild:
    table: str
    rows: int
    columns: dict[str, str]  # output column -> kind
    source_rows: dict[str, int]
    skipped_rows: dict[str, int] | None = None  # lines without a key, per table taken from events


def _table_sql(wh: Warehouse, table: AttributeTable, stage: str, key_name: str) -> tuple[str, dict[str, str]]:
    """SELECT giving one row per key for one attribute table; raises on bad rows."""
    empty = wh.fetch_df(f"SELECT * FROM {stage} LIMIT 0")
    schema = list(empty.columns)
    cols = attribute_columns(
        table,
        {
            c: ("DOUBLE" if pd.api.types.is_numeric_dtype(empty[c]) else "VARCHAR")
            for c in schema
            if not c.startswith("__")
        },
    )
    missing = [c for c in cols if c not in schema]
    if missing:
        raise AttributeDataError(f"{table.path}: attribute column {missing[0]!r} is missing; found {schema}")
    key = _text(table.key)
    bad = wh.fetch_df(f"SELECT __file, __row FROM {stage} WHERE {key} IS NULL ORDER BY __row LIMIT 1")
    if len(bad):
        raise AttributeDataError(
            f"{bad.iloc[0, 0]}: row {bad.iloc[0, 1]}: missing key in column {table.key!r} ({table.name})"
        )
    for c, kind in cols.items():
        if kind != "numeric":
            continue
        bad = wh.fetch_df(
            f"SELECT __file, __row, CAST({ident(c)} AS VARCHAR) AS v FROM {stage} "
            f"WHERE {_text(c)} IS NOT NULL AND TRY_CAST({_text(c)} AS DOUBLE) IS NULL ORDER BY __row LIMIT 1"
        )
        if len(bad):
            raise AttributeDataError(
                f"{bad.iloc[0, 0]}: row {bad.iloc[0, 1]}: column {c!r} is numeric but holds {bad.iloc[0, 2]!r}"
            )
    out_kinds = {attribute_output_name(table, c): k for c, k in cols.items()}
    prefixed_key = f"{literal(table.key_prefix)} || {key}"
    if not table.multi_valued:
        dup = wh.fetch_df(repeated_key_sql(stage, key))
        if len(dup):
            first = dup.iloc[0]
            rows = [int(r) for r in first["rows"]][:5]
            raise AttributeDataError(
                f"{first['f']}: rows {rows}: key {first['k']!r} in column "
                f"{table.key!r} appears more than once; {table.name} needs one row per key "
                "(set multi_valued: true to aggregate)"
            )
        exprs = [
            f"TRY_CAST({_text(c)} AS DOUBLE) AS {ident(c)}"
            if k == "numeric"
            else f"{_text(c)} AS {ident(c)}"  # a list is in its stored form already (stage_attributes)
            for c, k in cols.items()
        ]
        return (
            f"SELECT {prefixed_key} AS {key_name}, {', '.join([*exprs]) or 'NULL AS _none'} FROM {stage}",
            out_kinds,
        )
    exprs = [f"count(*) AS {ident(table.name + '_rows')}"] + [
        f"string_agg(DISTINCT {_text(c)}, '|' ORDER BY {_text(c)}) AS {ident(attribute_output_name(table, c))}"
        for c in cols
    ]
    out_kinds[f"{table.name}_rows"] = "numeric"
    return f"SELECT {prefixed_key} AS {key_name}, {', '.join(exprs)} FROM {stage} GROUP BY 1", out_kinds


def _from_events_sql(
    wh: Warehouse, cfg: DatasetConfig, table: AttributeTable, stage: str, key_name: str
) -> tuple[str, dict[str, str], str]:
    """One row per client (item) from an event source's lines: each column's most frequent
    non-empty value (ties: the smallest), or its value on the first/last line in file order.
    Returns (SELECT, output kinds, SQL counting the lines without a key)."""
    src = next(s for s in cfg.events if s.name == table.from_events)
    empty = wh.fetch_df(f"SELECT * FROM {stage} LIMIT 0")
    strings = {c for c in empty.columns if empty[c].dtype == object}
    cols = SourceColumns(strings)
    ref = src.client_id if key_name == "client_id" else src.item_id
    assert ref is not None  # checked at load: an item table from events needs a source with items
    prefix = src.item_prefix if key_name == "item_id" else ""
    key = f"{literal(prefix)} || {cols.text(ref)}"
    kinds = dict(table.columns or {})
    values = [f"{key} AS k", "__file", "__row"]
    for c, kind in kinds.items():
        values.append(
            f"{'TRY_CAST(' + cols.text(c) + ' AS DOUBLE)' if kind == 'numeric' else cols.text(c)} AS {ident(c)}"
        )
    lines = f"SELECT {', '.join(values)} FROM {stage}"
    picks = []
    for i, c in enumerate(kinds):
        if table.pick == "most_frequent":
            order = "n DESC, v"
            ranked = (
                f"SELECT k, {ident(c)} AS v, count(*) AS n FROM lines "
                f"WHERE k IS NOT NULL AND {ident(c)} IS NOT NULL GROUP BY 1, 2"
            )
        else:
            order = "f, r" if table.pick == "first" else "f DESC, r DESC"
            ranked = (
                f"SELECT k, {ident(c)} AS v, __file AS f, __row AS r FROM lines "
                f"WHERE k IS NOT NULL AND {ident(c)} IS NOT NULL"
            )
        picks.append(
            f"p{i} AS (SELECT k, v AS {ident(c)} FROM ("
            f"SELECT *, row_number() OVER (PARTITION BY k ORDER BY {order}) AS rank FROM ({ranked})) WHERE rank = 1)"
        )
    joins = " ".join(f"LEFT JOIN p{i} USING (k)" for i in range(len(kinds)))
    select = (
        f"WITH lines AS ({lines}), keys AS (SELECT DISTINCT k FROM lines WHERE k IS NOT NULL), "
        f"{', '.join(picks)} SELECT k AS {key_name}, {', '.join(ident(c) for c in kinds)} FROM keys {joins}"
    )
    skipped = f"SELECT count(*) AS n FROM {stage} WHERE {key} IS NULL"
    return select, {attribute_output_name(table, c): k for c, k in kinds.items()}, skipped


def build_attributes(
    wh: Warehouse, cfg: DatasetConfig, tables: list[AttributeTable], target: str, key_name: str
) -> AttributeBuild:
    """Replace `target` with the outer union of the given attribute tables on their keys."""
    parts, kinds, source_rows, skipped = [], {}, {}, {}
    for t in tables:
        stage = f"stage_attr_{t.name}"
        if t.from_events is not None:
            src = next(s for s in cfg.events if s.name == t.from_events)
            wh.stage_events(src, cfg.resolve(src.path), stage)
            sql, out, skipped_sql = _from_events_sql(wh, cfg, t, stage, key_name)
            parts.append((t.name, sql))
            kinds.update(out)
            source_rows[t.name] = int(wh.fetch_df(f"SELECT count(*) AS n FROM {stage}")["n"].iloc[0])
            skipped[t.name] = int(wh.fetch_df(skipped_sql)["n"].iloc[0])
            continue
        wh.stage_attributes(t, cfg.resolve(t.path or ""), stage)
        rejects = wh.fetch_df(f"SELECT __file, __row, reason FROM {stage}_rejects ORDER BY __row LIMIT 1")
        if len(rejects):
            r = rejects.iloc[0]
            raise AttributeDataError(f"{r['__file']}: line {r['__row']}: unreadable record: {r['reason']}")
        sql, out = _table_sql(wh, t, stage, key_name)
        parts.append((t.name, sql))
        kinds.update(out)
        source_rows[t.name] = int(wh.fetch_df(f"SELECT count(*) AS n FROM {stage}")["n"].iloc[0])
    if parts:
        ctes = ", ".join(f"{ident('t_' + n)} AS ({sql})" for n, sql in parts)
        keys = " UNION ".join(f"SELECT {key_name} FROM {ident('t_' + n)}" for n, _ in parts)
        joins = " ".join(f"LEFT JOIN {ident('t_' + n)} USING ({key_name})" for n, _ in parts)
        cols = ", ".join(ident(c) for c in kinds)
        select = f"WITH {ctes}, keys AS ({keys}) SELECT {key_name}, {cols} FROM keys {joins} ORDER BY {key_name}"
    else:
        select = f"SELECT CAST(NULL AS VARCHAR) AS {key_name} WHERE FALSE"
    wh.execute([f"CREATE OR REPLACE TABLE {wh.table(target)} AS {select}"])
    rows = int(wh.fetch_df(f"SELECT count(*) AS n FROM {wh.table(target)}")["n"].iloc[0])
    return AttributeBuild(target, rows, kinds, source_rows, skipped)


def build_client_properties(wh: Warehouse, cfg: DatasetConfig) -> AttributeBuild:
    return build_attributes(wh, cfg, cfg.clients, CLIENT_PROPERTIES, "client_id")


def build_product_catalog(wh: Warehouse, cfg: DatasetConfig) -> AttributeBuild:
    return build_attributes(wh, cfg, cfg.items, PRODUCT_CATALOG, "item_id")
