"""EMDE sketches: a density-aware locality-sensitive hash of entity embeddings, and the
vectorized sum of one-hot buckets that turns a client's events into a sketch.

Per column (Dąbrowski et al. 2020, "An efficient manifold density estimator for all
recommendation systems"): standardise the entity embeddings, project them with a seeded Gaussian
matrix to depth*bits dimensions, threshold each projected dimension at its median over entities
(each hyperplane halves the entities, so buckets follow the data's density), and pack the bits of
each depth level into a bucket in [0, 2**bits). The coder keeps its projection, so codes of new
entities (e.g. an item first sold after the cutoff) can be computed later the same way."""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: Folder (under $BM_HOME/artifacts) holding one `<column>.npz` per coder and a manifest.
CODERS_DIR = "sketch_coders"
MANIFEST = "manifest.json"


@dataclass
class SketchCoder:
    """Bucket codes of one column's entities. `entity_ids`: str[n] sorted; `codes`:
    int32[n, depth] in [0, width). The projection parameters are optional: a coder built from
    codes alone can encode known ids but not new embeddings."""

    column: str
    entity_ids: np.ndarray
    codes: np.ndarray
    depth: int
    width: int
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    projection: np.ndarray | None = None
    thresholds: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.entity_ids = np.asarray(self.entity_ids).astype(str)
        self.codes = np.asarray(self.codes, dtype=np.int32)
        if self.codes.shape != (len(self.entity_ids), self.depth):
            raise ValueError(
                f"coder {self.column!r}: codes have shape {self.codes.shape}, expected "
                f"({len(self.entity_ids)}, {self.depth})"
            )
        if len(self.entity_ids) > 1 and not (self.entity_ids[1:] > self.entity_ids[:-1]).all():
            raise ValueError(f"coder {self.column!r}: entity_ids must be sorted and unique")

    @property
    def bits(self) -> int:
        return int(self.width).bit_length() - 1

    def encode(self, ids: np.ndarray) -> np.ndarray:
        """int32[n, depth] codes of `ids` (str[n]); rows of ids the coder does not know are -1."""
        # look up each distinct id once (a hash factorisation, not a sort of every string)
        inverse, uniques = pd.factorize(np.asarray(ids, dtype=object))
        out = np.full((len(inverse), self.depth), -1, dtype=np.int32)
        if len(self.entity_ids) == 0 or len(inverse) == 0:
            return out
        uniq = np.asarray(uniques).astype(str)
        pos = np.minimum(np.searchsorted(self.entity_ids, uniq), len(self.entity_ids) - 1)
        per_unique = np.where((self.entity_ids[pos] == uniq)[:, None], self.codes[pos], -1).astype(np.int32)
        known = inverse >= 0
        out[known] = per_unique[inverse[known]]
        return out

    def code_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """int32[n, depth] codes of new embeddings (float[n, dim]) with this coder's hyperplanes."""
        if self.projection is None or self.mean is None or self.scale is None or self.thresholds is None:
            raise ValueError(f"coder {self.column!r} was saved without its projection; cannot code new embeddings")
        return _pack(
            _project(embeddings, self.mean, self.scale, self.projection) > self.thresholds,
            self.depth,
            self.bits,
        )

    def save(self, path: str | Path) -> None:
        arrays = {
            "entity_ids": self.entity_ids,
            "codes": self.codes,
            "meta": np.array(json.dumps({"column": self.column, "depth": self.depth, "width": self.width})),
        }
        for name in ("mean", "scale", "projection", "thresholds"):
            value = getattr(self, name)
            if value is not None:
                arrays[name] = value
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> SketchCoder:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            optional = {k: z[k] for k in ("mean", "scale", "projection", "thresholds") if k in z.files}
            return cls(
                column=meta["column"],
                entity_ids=z["entity_ids"],
                codes=z["codes"],
                depth=int(meta["depth"]),
                width=int(meta["width"]),
                **optional,
            )


def column_seed(seed: int, column: str) -> int:
    """A per-column seed, stable across processes (str hash() is salted), so columns get
    independent hyperplanes from one configured seed."""
    return (int(seed) * 1_000_003 + zlib.crc32(column.encode())) % (2**32)


def _project(embeddings: np.ndarray, mean: np.ndarray, scale: np.ndarray, projection: np.ndarray) -> np.ndarray:
    z = (np.asarray(embeddings, dtype=np.float64) - mean) / scale
    return z @ projection


def _pack(bits: np.ndarray, depth: int, n_bits: int) -> np.ndarray:
    """bool[n, depth*bits] -> int32[n, depth]: bit j of level l has value 2**j."""
    weights = 1 << np.arange(n_bits, dtype=np.int64)
    return (bits.reshape(len(bits), depth, n_bits).astype(np.int64) * weights).sum(axis=2).astype(np.int32)


def fit_sketch_coder(
    column: str, entity_ids: np.ndarray, embeddings: np.ndarray, depth: int, bits: int, seed: int
) -> SketchCoder:
    """Fit a density-aware LSH on `embeddings` (float32[n, dim], row i = entity_ids[i])."""
    entity_ids = np.asarray(entity_ids).astype(str)
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or len(embeddings) != len(entity_ids):
        raise ValueError(
            f"coder {column!r}: expected embeddings float[{len(entity_ids)}, dim] for {len(entity_ids)} ids, "
            f"found shape {embeddings.shape}"
        )
    if len(entity_ids) == 0:
        raise ValueError(f"coder {column!r}: no entities to fit on")
    if len(np.unique(entity_ids)) != len(entity_ids):
        raise ValueError(f"coder {column!r}: entity_ids are not unique")
    order = np.argsort(entity_ids, kind="stable")
    entity_ids, embeddings = entity_ids[order], embeddings[order]
    mean = embeddings.mean(axis=0)
    scale = embeddings.std(axis=0)
    scale[scale == 0] = 1.0
    rng = np.random.default_rng(column_seed(seed, column))
    projection = rng.standard_normal((embeddings.shape[1], depth * bits))
    projected = _project(embeddings, mean, scale, projection)
    thresholds = np.median(projected, axis=0)
    codes = _pack(projected > thresholds, depth, bits)
    return SketchCoder(
        column=column,
        entity_ids=entity_ids,
        codes=codes,
        depth=depth,
        width=2**bits,
        mean=mean,
        scale=scale,
        projection=projection,
        thresholds=thresholds,
    )


def sketch(codes: np.ndarray, rows: np.ndarray, weights: np.ndarray, n_rows: int, width: int) -> np.ndarray:
    """float32[n_rows, depth*width]: per row, the weighted sum of its events' one-hot buckets.
    `codes`: int32[n_events, depth] (-1 = unknown entity, ignored); `rows`: int64[n_events] in
    [0, n_rows); `weights`: float32[n_events]."""
    codes = np.asarray(codes)
    n_events, depth = codes.shape
    rows = np.asarray(rows, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float32)
    if len(rows) != n_events or len(weights) != n_events:
        raise ValueError(f"sketch: {n_events} codes but {len(rows)} rows and {len(weights)} weights")
    size = n_rows * depth * width
    if n_events == 0:
        return np.zeros((n_rows, depth * width), dtype=np.float32)
    flat = (rows[:, None] * (depth * width) + np.arange(depth, dtype=np.int64) * width + codes).ravel()
    w = np.broadcast_to(weights[:, None], codes.shape).ravel()
    known = codes.ravel() >= 0
    if not known.all():
        flat, w = flat[known], w[known]
    out = np.bincount(flat, weights=w, minlength=size)
    return out.astype(np.float32).reshape(n_rows, depth * width)


def save_sketch_coders(coders: dict[str, SketchCoder], directory: str | Path, info: dict | None = None) -> Path:
    """Write each coder to `<directory>/<column>.npz` and a manifest with the column order."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for i, (column, coder) in enumerate(coders.items()):
        name = f"{i:02d}_{''.join(ch if ch.isalnum() or ch in '-_' else '_' for ch in column)}.npz"
        coder.save(directory / name)
        files[column] = name
    manifest = {"columns": list(coders), "files": files, **(info or {})}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    return directory


def load_sketch_coders(home_or_dir: str | Path) -> dict[str, SketchCoder]:
    """The coders of the current build, in profile column order. Accepts $BM_HOME, its
    artifacts folder, or the coders folder itself."""
    base = Path(home_or_dir)
    for candidate in (base, base / CODERS_DIR, base / "artifacts" / CODERS_DIR):
        if (candidate / MANIFEST).exists():
            manifest = json.loads((candidate / MANIFEST).read_text(encoding="utf-8"))
            return {c: SketchCoder.load(candidate / manifest["files"][c]) for c in manifest["columns"]}
    raise FileNotFoundError(
        f"no sketch coders under {base}: expected {MANIFEST} in it, in {CODERS_DIR}/ or in "
        f"artifacts/{CODERS_DIR}/; materialize the sketch_coders asset first"
    )


def coders_fingerprint(coders: dict[str, SketchCoder]) -> str:
    """A short hash of the coders' columns, ids and codes: profiles built with other coders
    must not be continued with these."""
    h = hashlib.sha256()
    for column, coder in coders.items():
        h.update(column.encode())
        h.update(np.asarray(coder.entity_ids).astype(str).tobytes())
        h.update(np.ascontiguousarray(coder.codes, dtype=np.int32).tobytes())
        h.update(f"{coder.depth}/{coder.width}".encode())
    return h.hexdigest()[:16]


def with_exact_head(coder: SketchCoder, head: list[str]) -> SketchCoder:
    """The coder with level 0 replaced by the identity of the `width - 1` first values of `head`
    (its most frequent values, most frequent first): bucket j is head[j] alone, the last bucket
    every other value. A column a task predicts (its top brands) then has exact counts in the
    profile and an exact target in pretraining, while the other levels keep the LSH of the tail."""
    ids = np.asarray([str(v) for v in head][: coder.width - 1], dtype=str)
    codes = coder.codes.copy()
    codes[:, 0] = coder.width - 1
    if len(ids) and len(coder.entity_ids):
        pos = np.minimum(np.searchsorted(coder.entity_ids, ids), len(coder.entity_ids) - 1)
        known = coder.entity_ids[pos] == ids
        codes[pos[known], 0] = np.arange(len(ids))[known]
    return SketchCoder(
        coder.column,
        coder.entity_ids,
        codes,
        coder.depth,
        coder.width,
        coder.mean,
        coder.scale,
        coder.projection,
        coder.thresholds,
    )


def fit_coders(
    embeddings: dict,
    columns: list[str],
    depth: int,
    bits: int,
    seed: int,
    heads: dict[str, list[str]] | None = None,
) -> dict[str, SketchCoder]:
    """One coder per column, fitted on the entities observed in the graph (so the median
    thresholds follow behaviour, not the catalogue); entities embedded inductively get codes
    from the same hyperplanes. `embeddings[c]` has `ids`, `vectors`, `inductive` (bool).
    `heads`: per column, its values by frequency, for an exact first level (with_exact_head)."""
    out = {}
    for column in columns:
        if column not in embeddings:
            raise KeyError(f"no embeddings for sketch column {column!r}; embedded: {sorted(embeddings)}")
        emb = embeddings[column]
        seen = ~np.asarray(emb.inductive, dtype=bool)
        coder = fit_sketch_coder(column, emb.ids[seen], emb.vectors[seen], depth, bits, seed)
        if (~seen).any():
            new_ids = np.asarray(emb.ids[~seen]).astype(str)
            ids = np.concatenate([coder.entity_ids, new_ids])
            codes = np.concatenate([coder.codes, coder.code_embeddings(emb.vectors[~seen])])
            order = np.argsort(ids, kind="stable")
            coder = SketchCoder(
                column,
                ids[order],
                codes[order],
                depth,
                coder.width,
                coder.mean,
                coder.scale,
                coder.projection,
                coder.thresholds,
            )
        if heads and column in heads:
            coder = with_exact_head(coder, heads[column])
        out[column] = coder
    return out
