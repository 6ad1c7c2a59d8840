"""The event read's helpers give exactly what the plain numpy versions give: the packed-key sort
the lexsort order (ties in the kept hash bits included), the Arrow lookup SketchCoder.encode's
codes, and the compiled sparse rows the dense states' non-zero entries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from bm_assets.core.profiles import _entity_codes, _event_order, day_number, sparse_rows
from bm_assets.core.sketches import fit_sketch_coder


@pytest.mark.parametrize("hashes", ["uint64", "int64", "few_values", "wide_groups"])
def test_event_order_is_the_lexsort_order(hashes):
    rng = np.random.default_rng(7)
    for _ in range(40):
        n = int(rng.integers(1, 2000))
        ranks = rng.integers(0, 40, n)
        days = rng.integers(17_000, 17_030, n)
        if hashes == "int64":  # BigQuery's FARM_FINGERPRINT is signed
            h = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
        elif hashes == "few_values":  # equal top bits, different low bits: the fallback decides
            h = rng.integers(0, 4, n, dtype=np.uint64) << np.uint64(int(rng.integers(0, 62)))
        else:
            h = rng.integers(0, 2**64, n, dtype=np.uint64)
        if hashes == "wide_groups":  # too many (client, day) groups for the packed key
            ranks = ranks * 10**13
        group = ranks * (days.max() - days.min() + 1) + (days - days.min())
        np.testing.assert_array_equal(_event_order(ranks, days, h), np.lexsort((h, group)))
    assert len(_event_order(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint64))) == 0


def test_entity_codes_equal_the_coders_encoding():
    rng = np.random.default_rng(3)
    ids = np.array([f"item {i}" for i in range(300)])
    coder = fit_sketch_coder("item_id", ids, rng.standard_normal((300, 16)), 4, 3, 0)
    values = rng.choice(np.r_[ids, ["unknown", "other"]], 5000).astype(object)
    values[rng.random(5000) < 0.05] = None
    order = rng.permutation(5000)
    column = pa.chunked_array([pa.array(values[:2000]), pa.array(values[2000:])])
    expected = coder.encode(np.where(values == None, None, values))[order]  # noqa: E711
    np.testing.assert_array_equal(_entity_codes(column, coder, order), expected)


def test_sparse_rows_hold_the_non_zero_entries_in_order():
    rng = np.random.default_rng(5)
    state = rng.standard_normal((50, 37)).astype(np.float32)
    state[rng.random(state.shape) < 0.6] = 0
    state[3] = 0  # a row without entries
    table = sparse_rows(np.array([f"c{i}" for i in range(50)]), np.arange(17_000, 17_050), state)
    assert table.schema.field("dims").type == pa.list_(pa.int32())
    assert table.schema.field("vals").type == pa.list_(pa.float32())
    dense = np.zeros_like(state)
    lists = zip(table.column("dims").to_pylist(), table.column("vals").to_pylist(), strict=True)
    for i, (dims, vals) in enumerate(lists):
        assert dims == sorted(dims)
        dense[i, dims] = vals
    np.testing.assert_array_equal(dense, state)
    assert [day_number(d) for d in table.column("profile_date").to_pylist()] == list(range(17_000, 17_050))
    assert sparse_rows(np.array([], dtype=str), np.array([], dtype=np.int64), state[:0]).num_rows == 0


def test_basket_shares_in_linear_time_equal_the_exact_sort():
    from bm_assets.core.profiles import _basket_shares, basket_shares

    rng = np.random.default_rng(3)
    n = 5000
    ranks, days = rng.integers(0, 50, n), rng.integers(17000, 17030, n)
    # basket ids repeat across clients and days (per-client numbering), signed like BigQuery's hash
    baskets = rng.integers(-3, 3, n).astype(np.int64) * (2**61)
    got = _basket_shares(ranks, days, baskets)
    np.testing.assert_array_equal(got, basket_shares(ranks, days, pd.factorize(baskets)[0]))
    # a client's shares sum to its distinct (day, basket) pairs
    mine = ranks == 7
    assert got[mine].sum() == pytest.approx(len(set(zip(days[mine], baskets[mine], strict=True))), rel=1e-5)
