"""The profile store's numbers did not move with its rewrites: profiles of the bundled sample,
built and read as below, equal those the profile code of commit 7095d43 computed (before client
shards and the one-pass kernel), stored in data/profiles_reference_7095d43.npz.

To write the reference again from that commit (it has the same core API):
    git worktree add /tmp/old 7095d43
    PYTHONPATH=/tmp/old:. python -c "from bm_assets_tests.test_profiles_reference import write; write('out.npz')"
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from bm_assets.core.profiles import (
    ProfileLayout,
    build_profiles_window,
    export_profiles,
    load_profiles,
    profile_feature_names,
)
from bm_assets.core.sketches import coders_fingerprint, fit_sketch_coder

REFERENCE = Path(__file__).parent / "data" / "profiles_reference_7095d43.npz"
START = dt.date(2017, 1, 1)
DAYS = (dt.date(2017, 1, 20), dt.date(2017, 3, 1), dt.date(2017, 3, 3))  # replayed, replayed, last built


def _coders(wh):
    rng = np.random.default_rng(0)
    out = {}
    for c in ("item_id", "department"):
        ids = wh.fetch_df(
            f'SELECT DISTINCT CAST("{c}" AS VARCHAR) AS v FROM events_denormalized WHERE "{c}" IS NOT NULL ORDER BY 1'
        )["v"].to_numpy()
        ids = np.delete(ids, np.arange(0, len(ids), 10))
        out[c] = fit_sketch_coder(c, ids, rng.standard_normal((len(ids), 8)), 4, 4, seed=1)
    return out


def _build(wh, coders, **kwargs) -> None:
    """A two-month window, then three single days forward from the stored rows."""
    fp = coders_fingerprint(coders)
    build_profiles_window(wh, coders, [7.0, 60.0], START, dt.date(2017, 3, 1), START, fp, **kwargs)
    for d in range(1, 4):
        day, end = dt.date(2017, 3, d), dt.date(2017, 3, d + 1)
        build_profiles_window(wh, coders, [7.0, 60.0], day, end, START, fp, **kwargs)


def _reference_rows(ids: np.ndarray) -> np.ndarray:
    return np.arange(0, len(ids), max(1, len(ids) // 60))


def _reference_dims(coders) -> np.ndarray:
    """The profile dimensions the reference has: the sketches and event counts before the visit
    block, and recency (the visit block came later; test_profiles checks it against a batch count)."""
    layout = ProfileLayout.from_coders(coders, [7.0, 60.0])
    return np.r_[np.arange(layout.visit_start), profile_feature_names(layout).index("days_since_last_event")]


def write(path: str) -> None:
    """Build and read the sample's profiles with the code on PYTHONPATH; save every ~60th client."""
    import tempfile

    from bm_assets.config import load_dataset_config
    from bm_assets.core.attributes import build_client_properties, build_product_catalog
    from bm_assets.core.denormalize import denormalize_window
    from bm_assets.core.ingest import ingest_window
    from bm_assets.core.warehouse import DuckDBWarehouse
    from bm_assets.settings import BUNDLED_DATASET

    cfg = load_dataset_config(BUNDLED_DATASET)
    with tempfile.TemporaryDirectory() as tmp:
        wh = DuckDBWarehouse(str(Path(tmp) / "s.duckdb"))
        ingest_window(wh, cfg, cfg.data_start, cfg.end_exclusive)
        build_client_properties(wh, cfg)
        build_product_catalog(wh, cfg)
        denormalize_window(wh, cfg.data_start, cfg.end_exclusive, covers_all_days=True)
        coders = _coders(wh)
        _build(wh, coders)
        out = {}
        for day in DAYS:
            ids, x = load_profiles(wh, day, coders)
            keep = _reference_rows(ids)
            out[f"ids_{day}"], out[f"profiles_{day}"] = ids[keep], x[keep]
        wh.close()
    np.savez_compressed(path, **out)


@pytest.mark.parametrize("memory_mb", [2048.0, 0.5], ids=["one-shard", "client-shards"])
def test_profiles_equal_those_of_the_code_before_the_rewrite(sample_warehouse, tmp_path, memory_mb):
    wh = sample_warehouse
    coders = _coders(wh)
    _build(wh, coders, memory_mb=memory_mb)
    reference = np.load(REFERENCE)
    dims = _reference_dims(coders)
    for day in DAYS:
        ref_ids, ref = reference[f"ids_{day}"], reference[f"profiles_{day}"]
        ids, x = load_profiles(wh, day, coders)
        keep = _reference_rows(ids)
        np.testing.assert_array_equal(ids[keep], ref_ids)
        np.testing.assert_allclose(x[keep][:, dims], ref, rtol=1e-5, atol=1e-5, err_msg=str(day))
        # the export, streamed in shards, holds the same rows
        ids_path, emb_path = export_profiles(wh, day, tmp_path / str(day), coders=coders, memory_mb=memory_mb)
        got_ids, got = np.load(ids_path), np.load(emb_path)
        pos = np.searchsorted(np.sort(got_ids), ref_ids)
        order = np.argsort(got_ids)
        np.testing.assert_array_equal(got_ids[order][pos], ref_ids)
        np.testing.assert_allclose(got[order][pos][:, dims], ref, rtol=1e-5, atol=1e-5, err_msg=f"export {day}")
