"""Attribute tables -> one row per client (`client_properties`) or item (`product_catalog`).

Attribute rows carry no time, so a bad key cannot be quarantined into a day: a missing or
duplicated key, or a non-numeric value in a numeric column, stops the build with an error
naming the file, row and column."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bm_assets.config import AttributeTable, DatasetConfig, attribute_columns, attribute_output_name
from bm_assets.core.ingest import _ident, _text
from bm_assets.core.warehouse import Warehouse, _q

CLIENT_PROPERTIES = "client_properties"
PRODUCT_CATALOG = "product_catalog"


class AttributeDataError(ValueError):
    """An attribute table row that cannot be used."""


@dataclass
class AttributeBuild:
    table: str
    rows: int
    columns: dict[str, str]  # output column -> kind
    source_rows: dict[str, int]


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
            f"SELECT __file, __row, CAST({_ident(c)} AS VARCHAR) AS v FROM {stage} "
            f"WHERE {_text(c)} IS NOT NULL AND TRY_CAST({_text(c)} AS DOUBLE) IS NULL ORDER BY __row LIMIT 1"
        )
        if len(bad):
            raise AttributeDataError(
                f"{bad.iloc[0, 0]}: row {bad.iloc[0, 1]}: column {c!r} is numeric but holds {bad.iloc[0, 2]!r}"
            )
    out_kinds = {attribute_output_name(table, c): k for c, k in cols.items()}
    prefixed_key = f"{_q(table.key_prefix)} || {key}"
    if not table.multi_valued:
        dup = wh.fetch_df(
            f"SELECT {key} AS k, list(__row ORDER BY __row) AS rows, any_value(__file) AS f FROM {stage} "
            f"GROUP BY 1 HAVING count(*) > 1 ORDER BY min(__row) LIMIT 1"
        )
        if len(dup):
            first = dup.iloc[0]
            rows = [int(r) for r in first["rows"]][:5]
            raise AttributeDataError(
                f"{first['f']}: rows {rows}: key {first['k']!r} in column "
                f"{table.key!r} appears more than once; {table.name} needs one row per key "
                "(set multi_valued: true to aggregate)"
            )
        exprs = [
            f"TRY_CAST({_text(c)} AS DOUBLE) AS {_ident(c)}"
            if k == "numeric"
            else f"{_text(c)} AS {_ident(c)}"
            for c, k in cols.items()
        ]
        return (
            f"SELECT {prefixed_key} AS {key_name}, {', '.join([*exprs]) or 'NULL AS _none'} FROM {stage}",
            out_kinds,
        )
    exprs = [f"count(*) AS {_ident(table.name + '_rows')}"] + [
        f"string_agg(DISTINCT {_text(c)}, '|' ORDER BY {_text(c)}) AS {_ident(attribute_output_name(table, c))}"
        for c in cols
    ]
    out_kinds[f"{table.name}_rows"] = "numeric"
    return f"SELECT {prefixed_key} AS {key_name}, {', '.join(exprs)} FROM {stage} GROUP BY 1", out_kinds


def build_attributes(
    wh: Warehouse, cfg: DatasetConfig, tables: list[AttributeTable], target: str, key_name: str
) -> AttributeBuild:
    """Replace `target` with the outer union of the given attribute tables on their keys."""
    parts, kinds, source_rows = [], {}, {}
    for t in tables:
        stage = f"stage_attr_{t.name}"
        wh.stage_attributes(t, cfg.resolve(t.path), stage)
        rejects = wh.fetch_df(f"SELECT __file, __row, reason FROM {stage}_rejects ORDER BY __row LIMIT 1")
        if len(rejects):
            r = rejects.iloc[0]
            raise AttributeDataError(f"{r['__file']}: line {r['__row']}: unreadable record: {r['reason']}")
        sql, out = _table_sql(wh, t, stage, key_name)
        parts.append((t.name, sql))
        kinds.update(out)
        source_rows[t.name] = int(wh.fetch_df(f"SELECT count(*) AS n FROM {stage}")["n"].iloc[0])
    if parts:
        ctes = ", ".join(f"{_ident('t_' + n)} AS ({sql})" for n, sql in parts)
        keys = " UNION ".join(f"SELECT {key_name} FROM {_ident('t_' + n)}" for n, _ in parts)
        joins = " ".join(f"LEFT JOIN {_ident('t_' + n)} USING ({key_name})" for n, _ in parts)
        cols = ", ".join(_ident(c) for c in kinds)
        select = (
            f"WITH {ctes}, keys AS ({keys}) SELECT {key_name}, {cols} FROM keys {joins} ORDER BY {key_name}"
        )
    else:
        select = f"SELECT CAST(NULL AS VARCHAR) AS {key_name} WHERE FALSE"
    wh.execute([f"CREATE OR REPLACE TABLE {wh.table(target)} AS {select}"])
    rows = int(wh.fetch_df(f"SELECT count(*) AS n FROM {wh.table(target)}")["n"].iloc[0])
    return AttributeBuild(target, rows, kinds, source_rows)


def build_client_properties(wh: Warehouse, cfg: DatasetConfig) -> AttributeBuild:
    return build_attributes(wh, cfg, cfg.clients, CLIENT_PROPERTIES, "client_id")


def build_product_catalog(wh: Warehouse, cfg: DatasetConfig) -> AttributeBuild:
    return build_attributes(wh, cfg, cfg.items, PRODUCT_CATALOG, "item_id")
