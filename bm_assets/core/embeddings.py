"""entity_embeddings: Cleora (pycleora, Synerise's Rust implementation) over the hyperedges of
temporal_graph, split per entity column; items first seen after the cutoff are embedded from
their attributes so that profiles stay inductive."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pycleora

from bm_assets.config import CleoraConfig, RepresentationConfig
from bm_assets.core.graph import CleoraInput, cleora_input
from bm_assets.core.sql import CLIENT_PROPERTIES, LIST_SEPARATOR, PRODUCT_CATALOG, ident
from bm_assets.core.warehouse import Warehouse

EMBEDDINGS_DIR = "entity_embeddings"
_MANIFEST = "manifest.json"


@dataclass
class ColumnEmbeddings:
    """One column's entities: `ids` str[n] sorted, `vectors` float32[n, dim]; `inductive`
    bool[n] marks rows derived from attributes rather than from the graph."""

    column: str
    ids: np.ndarray
    vectors: np.ndarray
    inductive: np.ndarray

    @property
    def observed(self) -> ColumnEmbeddings:
        keep = ~self.inductive
        return ColumnEmbeddings(self.column, self.ids[keep], self.vectors[keep], self.inductive[keep])


def run_cleora(lines: list[str], spec: str, cfg: CleoraConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(entity ids str[n], float32[n, dim]) of a bare pycleora run."""
    graph = pycleora.SparseMatrix.from_iterator(iter(lines), columns=spec)
    vectors = pycleora.embed(
        graph,
        feature_dim=cfg.dim,
        num_iterations=cfg.iterations,
        propagation=cfg.propagation,
        seed=seed,
        whiten=cfg.whiten,
    )
    return np.asarray(graph.entity_ids), np.asarray(vectors, dtype=np.float32)


def embed_graph(graph: CleoraInput, cfg: CleoraConfig, seed: int) -> dict[str, ColumnEmbeddings]:
    """Cleora embeddings per entity column of the tokenised hyperedges. Deterministic for a
    fixed seed and line order."""
    if not graph.lines:
        raise ValueError("temporal_graph has no hyperedges: no events before the cutoff?")
    ids, vectors = run_cleora(graph.lines, graph.columns, cfg, seed)
    is_node = np.char.startswith(ids.astype(str), "n")
    token = np.char.lstrip(ids[is_node].astype(str), "n").astype(np.int64)
    vectors = vectors[is_node]
    token_column = graph.node_column[token]
    out = {}
    for column in pd.unique(graph.node_column):
        sel = token_column == column
        ent = graph.node_entity[token[sel]]
        order = np.argsort(ent, kind="stable")
        out[str(column)] = ColumnEmbeddings(
            str(column), ent[order], vectors[sel][order], np.zeros(len(ent), dtype=bool)
        )
    return out


def add_inductive(embeddings: dict[str, ColumnEmbeddings], column: str, attributes: pd.DataFrame) -> ColumnEmbeddings:
    """Embed the entities of `column` that are missing from `embeddings[column]` as the L2-normalised
    mean of their attribute values' embeddings. `attributes`: one row per entity, the entity id in
    `column` and one column per attribute (each an embedded column)."""
    known = embeddings[column]
    attrs = [c for c in attributes.columns if c != column]
    candidates = attributes[~attributes[column].astype(str).isin(known.ids)].reset_index(drop=True)
    ids = candidates[column].astype(str).to_numpy()
    dim = known.vectors.shape[1]
    total = np.zeros((len(ids), dim), dtype=np.float64)
    count = np.zeros(len(ids), dtype=np.int64)
    for a in attrs:
        emb = embeddings[a]
        values = candidates[a].astype("string").fillna("").to_numpy().astype(str)
        pos = np.minimum(np.searchsorted(emb.ids, values), max(len(emb.ids) - 1, 0))
        hit = (emb.ids[pos] == values) & candidates[a].notna().to_numpy() if len(emb.ids) else np.zeros(len(ids), bool)
        total[hit] += emb.vectors[pos[hit]]
        count += hit
    keep = count > 0
    new_ids = ids[keep]
    new_vec = total[keep] / count[keep, None]
    norm = np.linalg.norm(new_vec, axis=1, keepdims=True)
    new_vec = (new_vec / np.where(norm > 0, norm, 1)).astype(np.float32)
    all_ids = np.concatenate([known.ids, new_ids])
    order = np.argsort(all_ids, kind="stable")
    return ColumnEmbeddings(
        column,
        all_ids[order],
        np.concatenate([known.vectors, new_vec])[order],
        np.concatenate([np.zeros(len(known.ids), bool), np.ones(len(new_ids), bool)])[order],
    )


def save_embeddings(embeddings: dict[str, ColumnEmbeddings], directory: str | Path, info: dict) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for i, (column, emb) in enumerate(embeddings.items()):
        files[column] = f"{i:02d}.npz"
        with open(directory / files[column], "wb") as fh:
            np.savez(fh, ids=emb.ids.astype(str), vectors=emb.vectors, inductive=emb.inductive)
    (directory / _MANIFEST).write_text(
        json.dumps({"columns": list(embeddings), "files": files, **info}, indent=2, default=str),
        encoding="utf-8",
    )
    return directory


def load_embeddings(directory: str | Path) -> dict[str, ColumnEmbeddings]:
    directory = Path(directory)
    if not (directory / _MANIFEST).exists():
        raise FileNotFoundError(f"no {_MANIFEST} in {directory}: materialize entity_embeddings first")
    manifest = json.loads((directory / _MANIFEST).read_text(encoding="utf-8"))
    out = {}
    for column in manifest["columns"]:
        with np.load(directory / manifest["files"][column], allow_pickle=False) as z:
            out[column] = ColumnEmbeddings(column, z["ids"], z["vectors"], z["inductive"])
    return out


def add_list_values(emb: ColumnEmbeddings, lists: np.ndarray) -> ColumnEmbeddings:
    """`emb` (one node per category of a list column) plus each list value ("Action|Comedy")
    it lacks, embedded as the L2-normalised mean of its known categories and marked inductive:
    a sketch coder fits its hyperplanes on the categories and codes each list from the mean, so
    an event's list lands in one bucket per level near the buckets of what it holds."""
    lists = np.unique(np.asarray(lists).astype(str))
    lists = lists[~np.isin(lists, emb.ids)] if len(emb.ids) else lists[:0]
    split = [value.split(LIST_SEPARATOR) for value in lists]
    owner = np.repeat(np.arange(len(lists)), [len(s) for s in split])
    parts = np.asarray([p for s in split for p in s], dtype=str)
    pos = np.minimum(np.searchsorted(emb.ids, parts), max(len(emb.ids) - 1, 0))
    hit = emb.ids[pos] == parts if len(parts) else np.zeros(0, dtype=bool)
    total = np.zeros((len(lists), emb.vectors.shape[1]), dtype=np.float64)
    np.add.at(total, owner[hit], emb.vectors[pos[hit]])
    count = np.bincount(owner[hit], minlength=len(lists))
    keep = count > 0
    vectors = total[keep] / count[keep, None]
    norm = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = (vectors / np.where(norm > 0, norm, 1)).astype(np.float32)
    ids = np.concatenate([emb.ids.astype(str), lists[keep]])
    order = np.argsort(ids, kind="stable")
    return ColumnEmbeddings(
        emb.column,
        ids[order],
        np.concatenate([emb.vectors, vectors])[order],
        np.concatenate([np.asarray(emb.inductive, dtype=bool), np.ones(int(keep.sum()), bool)])[order],
    )


def build_entity_embeddings(
    wh: Warehouse, rep: RepresentationConfig, list_columns: Sequence[str] = ()
) -> dict[str, ColumnEmbeddings]:
    """Cleora embeddings of every graph column from table temporal_graph, plus the inductive
    embeddings of catalogue items never seen before the cutoff. A list column's values
    ("Action|Comedy", read from its attribute table, which holds no time) are embedded from the
    categories they hold (add_list_values)."""
    out = embed_graph(cleora_input(wh, rep.graph.expansion), rep.cleora, rep.seed)
    for column in [c for c in list_columns if c in out]:
        for table in (PRODUCT_CATALOG, CLIENT_PROPERTIES):
            if wh.table_exists(table) and column in wh.fetch_df(f"SELECT * FROM {wh.table(table)} LIMIT 0").columns:
                values = wh.fetch_df(
                    f"SELECT DISTINCT CAST({ident(column)} AS VARCHAR) AS v FROM {wh.table(table)} "
                    f"WHERE {ident(column)} IS NOT NULL"
                )["v"]
                out[column] = add_list_values(out[column], values.to_numpy())
                break
    ind = rep.inductive
    if ind is not None and ind.column in out and wh.table_exists(PRODUCT_CATALOG):
        catalog_cols = set(wh.fetch_df(f"SELECT * FROM {wh.table(PRODUCT_CATALOG)} LIMIT 0").columns)
        attrs = [a for a in ind.attributes if a in catalog_cols and a in out]
        if attrs:
            select = ", ".join(f"CAST({ident(c)} AS VARCHAR) AS {ident(c)}" for c in attrs)
            catalog = wh.fetch_df(
                f"SELECT CAST(item_id AS VARCHAR) AS {ident(ind.column)}, {select} "
                f"FROM {wh.table(PRODUCT_CATALOG)} ORDER BY item_id"
            )
            out[ind.column] = add_inductive(out, ind.column, catalog)
    return out
