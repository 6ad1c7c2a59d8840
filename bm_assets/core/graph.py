"""temporal_graph: the hyperedges Cleora embeds, built by SQL in the warehouse from the events
strictly before a cutoff date. One hyperedge per client and time window, and one per basket
where the data has a basket column; its members are the values of the configured columns
(items, manufacturers, categories, ...) the events touched.

Stored normalised, each string once: `temporal_graph_nodes` numbers the (column, entity) pairs,
`temporal_graph_edges` the hyperedges, and `temporal_graph` holds one row per (hyperedge, node)
as integers with the number of events behind it. Rows are grouped by column, so each column's
node numbers and counts stay narrow and compress well (a third of the size of the same rows
with their strings and a second copy of the members as token lines)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bm_assets.config import GraphConfig
from bm_assets.core.sql import (
    EVENTS_DENORMALIZED,
    GRAPH_EDGES,
    GRAPH_NODES,
    TEMPORAL_GRAPH,
    column_values_sql,
    ident,
    literal,
)
from bm_assets.core.warehouse import Warehouse

#: The members table of earlier versions (each hyperedge's tokens as one string): dropped on
#: rebuild, the lines are now aggregated when Cleora reads them.
_OLD_MEMBERS = "temporal_graph_members"


@dataclass
class GraphBuild:
    cutoff: dt.date
    rows: int
    nodes: dict[str, int]
    edges: dict[str, int]
    basket_column: str | None


def graph_select(
    wh: Warehouse,
    cfg: GraphConfig,
    data_start: dt.date,
    cutoff: dt.date,
    basket_column: str | None,
    list_columns: Sequence[str] = (),
) -> str:
    """SQL of the hyperedge rows (edge_kind, edge_id, client_id, column_name, entity, events) of
    the events with event_date < cutoff. A hyperedge is one (edge_id, client_id): a basket id
    counted per client (a session or order number) names a different basket for each client.
    A value of a list column ("Action|Comedy") is one node per category it holds."""
    cols = ", ".join(ident(c) for c in dict.fromkeys([*cfg.columns, *([basket_column] if basket_column else [])]))
    window = f"CAST(floor(date_diff('day', DATE '{data_start}', event_date) / {cfg.window_days}) AS BIGINT)"
    source = (
        f"SELECT client_id, {window} AS window_index, {cols} FROM {wh.table(EVENTS_DENORMALIZED)} "
        f"WHERE event_date < DATE '{cutoff}'"
    )
    kinds = [("client_window", "'cw:' || client_id || ':' || CAST(window_index AS VARCHAR)", "TRUE")]
    if basket_column:
        b = ident(basket_column)
        kinds.append(("basket", f"'b:' || CAST({b} AS VARCHAR)", f"{b} IS NOT NULL"))
    parts = [
        f"SELECT '{kind}' AS edge_kind, {edge_id} AS edge_id, client_id, {literal(col)} AS column_name, "
        f"{entity} AS entity, count(*) AS events FROM ev{split} "
        f"WHERE {cond} AND ev.{ident(col)} IS NOT NULL GROUP BY 1, 2, 3, 4, 5"
        for kind, edge_id, cond in kinds
        for col in cfg.columns
        for entity, split in [column_values_sql(col, col in list_columns, "ev")]
    ]
    return f"WITH ev AS ({source}) " + " UNION ALL ".join(parts)


def build_temporal_graph(
    wh: Warehouse, cfg: GraphConfig, data_start: dt.date, cutoff: dt.date, list_columns: Sequence[str] = ()
) -> GraphBuild:
    """(Re)write table temporal_graph from events_denormalized before `cutoff`; `list_columns`:
    the columns holding lists of categories (DatasetConfig.list_columns)."""
    if not wh.table_exists(EVENTS_DENORMALIZED):
        raise LookupError(f"no table {EVENTS_DENORMALIZED}: materialize it before temporal_graph")
    available = set(wh.fetch_df(f"SELECT * FROM {wh.table(EVENTS_DENORMALIZED)} LIMIT 0").columns)
    missing = [c for c in cfg.columns if c not in available]
    if missing:
        raise KeyError(
            f"representation.graph.columns {missing} are not columns of {EVENTS_DENORMALIZED} "
            f"(found {sorted(available)})"
        )
    basket = cfg.basket_column if cfg.basket_column in available else None
    target, nodes_t, edges_t = wh.table(TEMPORAL_GRAPH), wh.table(GRAPH_NODES), wh.table(GRAPH_EDGES)
    long = ident("temporal_graph_long")  # a session (TEMP) table: unqualified
    wh.execute(
        [
            f"CREATE OR REPLACE TEMP TABLE {long} AS {graph_select(wh, cfg, data_start, cutoff, basket, list_columns)}",
            # node k is the token n<k>: entity values may hold spaces, and equal values in two
            # columns are different nodes
            f"""CREATE OR REPLACE TABLE {nodes_t} AS SELECT column_name, entity,
                CAST(row_number() OVER (ORDER BY column_name, entity) - 1 AS BIGINT) AS node
                FROM (SELECT DISTINCT column_name, entity FROM {long}) ORDER BY node""",
            f"""CREATE OR REPLACE TABLE {edges_t} AS SELECT
                CAST(row_number() OVER (ORDER BY edge_id, client_id) AS BIGINT) AS edge_index,
                edge_kind, edge_id, client_id
                FROM (SELECT DISTINCT edge_kind, edge_id, client_id FROM {long}) ORDER BY edge_index""",
            f"""CREATE OR REPLACE TABLE {target} AS SELECT e.edge_index, n.node, g.events FROM {long} g
                JOIN {edges_t} e ON g.edge_id = e.edge_id AND g.client_id = e.client_id
                JOIN {nodes_t} n ON g.column_name = n.column_name AND g.entity = n.entity
                ORDER BY g.column_name, e.edge_index, n.node""",
            f"DROP TABLE IF EXISTS {long}",
            f"DROP TABLE IF EXISTS {wh.table(_OLD_MEMBERS)}",
        ]
    )
    nodes = wh.fetch_df(f"SELECT column_name, count(*) AS n FROM {nodes_t} GROUP BY 1")
    edges = wh.fetch_df(f"SELECT edge_kind, count(*) AS n FROM {edges_t} GROUP BY 1")
    rows = int(wh.fetch_df(f"SELECT count(*) AS n FROM {target}")["n"].iloc[0])
    return GraphBuild(
        cutoff=cutoff,
        rows=rows,
        nodes={c: int(nodes.set_index("column_name")["n"].get(c, 0)) for c in cfg.columns},
        edges={str(k): int(v) for k, v in zip(edges["edge_kind"], edges["n"], strict=True)},
        basket_column=basket,
    )


@dataclass
class CleoraInput:
    """pycleora input built in the warehouse: one line per hyperedge; node k is token `n<k>`
    (entity values may hold spaces, and equal values in two columns are different nodes), and
    hyperedge j is token `e<j>` in star expansion."""

    lines: list[str]
    columns: str
    node_column: np.ndarray
    node_entity: np.ndarray


def graph_rows(wh: Warehouse, limit: int | None = None) -> pd.DataFrame:
    """temporal_graph with its names: (edge_kind, edge_id, client_id, column_name, entity, events)
    per (hyperedge, node), in hyperedge then node order (the first `limit` rows)."""
    return wh.fetch_df(
        f"""SELECT e.edge_kind, e.edge_id, e.client_id, n.column_name, n.entity, g.events
        FROM {wh.table(TEMPORAL_GRAPH)} g
        JOIN {wh.table(GRAPH_EDGES)} e ON g.edge_index = e.edge_index
        JOIN {wh.table(GRAPH_NODES)} n ON g.node = n.node
        ORDER BY g.edge_index, g.node{f" LIMIT {int(limit)}" if limit is not None else ""}"""
    )


def cleora_input(wh: Warehouse, expansion: str) -> CleoraInput:
    """The lines of temporal_graph's hyperedges, tokenised in SQL: each hyperedge's node
    tokens in node order, hyperedges in index order."""
    if not wh.table_exists(GRAPH_EDGES):
        raise LookupError(f"no table {GRAPH_EDGES}: materialize temporal_graph first")
    members = "string_agg('n' || CAST(node AS VARCHAR), ' ' ORDER BY node)"
    if expansion == "clique":
        line, columns = members, "complex::reflexive::entity"
    else:
        line, columns = f"'e' || CAST(edge_index AS VARCHAR) || chr(9) || {members}", "hyperedge complex::entity"
    lines = wh.fetch_df(
        f"SELECT {line} AS line FROM {wh.table(TEMPORAL_GRAPH)} GROUP BY edge_index ORDER BY edge_index"
    )["line"]
    nodes = wh.fetch_df(f"SELECT column_name, entity FROM {wh.table(GRAPH_NODES)} ORDER BY node")
    return CleoraInput(
        lines.tolist(),
        columns,
        nodes["column_name"].astype(str).to_numpy(),
        nodes["entity"].astype(str).to_numpy(),
    )
