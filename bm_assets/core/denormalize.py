"""events_denormalized: each event joined with its item's and client's attributes, as one SQL
statement in the warehouse (no dataframe merges), replaced by date window. Lineage columns
(source_file, source_row) stay in raw_events; event_id links the two."""

from __future__ import annotations

import datetime as dt

from bm_assets.core.sql import CLIENT_PROPERTIES, EVENTS_DENORMALIZED, PRODUCT_CATALOG, RAW_EVENTS, ident
from bm_assets.core.warehouse import Warehouse


def _columns(wh: Warehouse, table: str, key: str) -> list[str]:
    return [c for c in wh.fetch_df(f"SELECT * FROM {wh.table(table)} LIMIT 0").columns if c != key]


def denormalized_select(wh: Warehouse, start: dt.date, end: dt.date) -> str:
    item_cols = _columns(wh, PRODUCT_CATALOG, "item_id")
    client_cols = _columns(wh, CLIENT_PROPERTIES, "client_id")
    cols = ", ".join([*(f"i.{ident(c)}" for c in item_cols), *(f"c.{ident(c)}" for c in client_cols)])
    return f"""
        SELECT e.* EXCLUDE (source_file, source_row), {cols + "," if cols else ""}
               i.item_id IS NOT NULL AS item_in_catalog,
               c.client_id IS NOT NULL AS client_in_properties
        FROM {wh.table(RAW_EVENTS)} e
        LEFT JOIN {wh.table(PRODUCT_CATALOG)} i ON e.item_id = i.item_id
        LEFT JOIN {wh.table(CLIENT_PROPERTIES)} c ON e.client_id = c.client_id
        WHERE e.event_date >= DATE '{start}' AND e.event_date < DATE '{end}'"""


class SchemaDriftError(RuntimeError):
    """The attribute tables changed shape since events_denormalized was written."""


def denormalize_window(wh: Warehouse, start: dt.date, end: dt.date, covers_all_days: bool = False) -> int:
    """Replace days [start, end) of events_denormalized; returns the rows written. When the
    attribute columns changed, only a run over every day may rebuild the table."""
    select = denormalized_select(wh, start, end)
    target = wh.table(EVENTS_DENORMALIZED)
    statements = [f"CREATE TABLE IF NOT EXISTS {target} AS SELECT * FROM ({select}) WHERE FALSE"]
    if wh.table_exists(EVENTS_DENORMALIZED):
        existing = list(wh.fetch_df(f"SELECT * FROM {target} LIMIT 0").columns)
        wanted = list(wh.fetch_df(f"SELECT * FROM ({select}) LIMIT 0").columns)
        if existing != wanted:
            if not covers_all_days:
                raise SchemaDriftError(
                    f"events_denormalized has columns {existing} but the attribute tables now give "
                    f"{wanted}; backfill the whole partition range so every day is re-joined"
                )
            statements = [f"DROP TABLE {target}", *statements]
    statements += [
        f"DELETE FROM {target} WHERE event_date >= DATE '{start}' AND event_date < DATE '{end}'",
        f"INSERT INTO {target} {select}",
    ]
    wh.execute(statements)
    return int(
        wh.fetch_df(
            f"SELECT count(*) AS n FROM {target} WHERE event_date >= DATE '{start}' AND event_date < DATE '{end}'"
        )["n"].iloc[0]
    )
