"""EMDE coders and sketches: density-aware buckets, determinism, persistence, and the vectorized
sketch against a per-event reference."""

from __future__ import annotations

import numpy as np
import pytest

from bm_assets.core.sketches import (
    SketchCoder,
    fit_sketch_coder,
    load_sketch_coders,
    save_sketch_coders,
    sketch,
)


@pytest.fixture
def entities():
    rng = np.random.default_rng(3)
    ids = np.array([f"e{i:04d}" for i in rng.permutation(2000)])
    # an anisotropic, shifted cloud: standardisation and median thresholds must handle it
    emb = (rng.standard_normal((2000, 16)) * np.linspace(0.1, 5, 16) + 3).astype(np.float32)
    return ids, emb


def test_codes_are_in_range_and_each_hyperplane_halves_the_entities(entities):
    ids, emb = entities
    coder = fit_sketch_coder("item_id", ids, emb, depth=6, bits=5, seed=1)
    assert coder.codes.shape == (2000, 6) and coder.codes.dtype == np.int32
    assert coder.codes.min() >= 0 and coder.codes.max() < coder.width == 32
    bits = (coder.codes[:, :, None] >> np.arange(5)) & 1  # [n, depth, bits]
    share = bits.mean(axis=0)
    assert np.abs(share - 0.5).max() <= 1 / 2000 + 1e-9
    assert list(coder.entity_ids) == sorted(ids)


def test_fit_is_deterministic_per_seed_and_column(entities):
    ids, emb = entities
    a = fit_sketch_coder("item_id", ids, emb, depth=4, bits=4, seed=7)
    b = fit_sketch_coder("item_id", ids[::-1], emb[::-1], depth=4, bits=4, seed=7)
    c = fit_sketch_coder("item_id", ids, emb, depth=4, bits=4, seed=8)
    d = fit_sketch_coder("brand", ids, emb, depth=4, bits=4, seed=7)
    assert np.array_equal(a.codes, b.codes)
    assert not np.array_equal(a.codes, c.codes)
    assert not np.array_equal(a.codes, d.codes)


def test_similar_embeddings_share_more_buckets(entities):
    ids, emb = entities
    coder = fit_sketch_coder("item_id", ids, emb, depth=10, bits=4, seed=0)
    near = coder.code_embeddings(emb + 0.01 * emb.std(axis=0))
    far = coder.code_embeddings(np.roll(emb, 1, axis=0))
    own = coder.code_embeddings(emb)
    assert (near == own).mean() > 0.9 > 0.3 > (far == own).mean()


def test_encode_maps_unknown_ids_to_minus_one_and_roundtrips(entities, tmp_path):
    ids, emb = entities
    coder = fit_sketch_coder("item_id", ids, emb, depth=3, bits=3, seed=0)
    codes = coder.encode(np.array([ids[5], "nope", ids[9]]))
    assert (codes[1] == -1).all()
    assert np.array_equal(codes[0], coder.codes[np.searchsorted(coder.entity_ids, ids[5])])
    assert np.array_equal(coder.code_embeddings(emb), coder.encode(ids))
    coder.save(tmp_path / "c.npz")
    back = SketchCoder.load(tmp_path / "c.npz")
    assert back.column == "item_id" and back.depth == 3 and back.width == 8
    assert np.array_equal(back.entity_ids, coder.entity_ids) and np.array_equal(back.codes, coder.codes)
    assert np.array_equal(back.code_embeddings(emb), coder.code_embeddings(emb))


def test_load_sketch_coders_finds_the_build_under_bm_home(entities, bm_home):
    ids, emb = entities
    coders = {c: fit_sketch_coder(c, ids, emb, depth=2, bits=3, seed=0) for c in ["item_id", "department"]}
    save_sketch_coders(coders, bm_home / "artifacts" / "sketch_coders")
    for where in (bm_home, bm_home / "artifacts", bm_home / "artifacts" / "sketch_coders"):
        loaded = load_sketch_coders(where)
        assert list(loaded) == ["item_id", "department"]
        assert np.array_equal(loaded["department"].codes, coders["department"].codes)
    with pytest.raises(FileNotFoundError, match="sketch_coders"):
        load_sketch_coders(bm_home / "nowhere")


def test_sketch_equals_a_per_event_sum_and_ignores_unknown_codes():
    rng = np.random.default_rng(0)
    n, depth, width, n_rows = 500, 4, 8, 13
    codes = rng.integers(0, width, size=(n, depth)).astype(np.int32)
    codes[rng.random((n, depth)) < 0.1] = -1
    rows = rng.integers(0, n_rows, size=n)
    weights = rng.random(n).astype(np.float32)
    expected = np.zeros((n_rows, depth * width), dtype=np.float64)
    for e in range(n):
        for level in range(depth):
            if codes[e, level] >= 0:
                expected[rows[e], level * width + codes[e, level]] += weights[e]
    got = sketch(codes, rows, weights, n_rows, width)
    assert got.dtype == np.float32 and got.shape == (n_rows, depth * width)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="rows"):
        sketch(codes, rows[:-1], weights, n_rows, width)


def test_an_exact_head_gives_each_top_value_its_own_first_level_bucket():
    from bm_assets.core.sketches import with_exact_head

    rng = np.random.default_rng(0)
    ids = np.array([f"b{i:03d}" for i in range(200)])
    coder = fit_sketch_coder("brand", ids, rng.standard_normal((200, 8)), depth=3, bits=3, seed=0)
    head = ["b150", "b007", "unknown", "b042"] + [f"b{i:03d}" for i in range(100, 110)]
    exact = with_exact_head(coder, head)
    asked = np.array(["b150", "b007", "b042", "b100", "b103", "b199"])
    codes = exact.encode(asked)
    # level 0: rank in the head for the first width - 1 = 7 head values ("unknown" keeps its rank
    # unused); every other value shares the last bucket
    assert codes[:, 0].tolist() == [0, 1, 3, 4, 7, 7]
    np.testing.assert_array_equal(codes[:, 1:], coder.encode(asked)[:, 1:])
    assert exact.codes.shape == coder.codes.shape and (exact.codes[:, 0] < exact.width).all()
