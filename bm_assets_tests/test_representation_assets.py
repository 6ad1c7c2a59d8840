"""The representation assets in Dagster: wiring (self-dependent daily profiles in the daily job),
an in-process run of the whole graph on a one-month cut of the sample, a single-day re-run, and
the export-profiles command on the result."""

from __future__ import annotations

import datetime as dt

import numpy as np
import yaml
from dagster import AssetKey, DagsterInstance, TimeWindowPartitionMapping, materialize

from bm_assets.cli import main as cli_main
from bm_assets.core.profiles import load_profiles
from bm_assets.core.sketches import load_sketch_coders
from bm_assets.core.warehouse import DuckDBWarehouse
from bm_assets.definitions import build_definitions
from bm_assets.resources import DuckDBWarehouseResource
from bm_assets.settings import BUNDLED_DATASET


def _month_config(tmp_path):
    raw = yaml.safe_load(BUNDLED_DATASET.read_text())
    raw.update(base_dir=str(BUNDLED_DATASET.parent), data_end="2017-01-31")
    raw["temporal"] = {"training_cutoff": "2017-01-22", "test_start": "2017-01-26", "test_end": "2017-02-01"}
    raw["representation"]["cleora"]["dim"] = 16
    path = tmp_path / "month.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_profiles_asset_depends_on_its_previous_day_and_joins_the_daily_job():
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    key = AssetKey("behavioral_profiles")
    assert graph.get(key).parent_keys == {key, AssetKey("events_denormalized"), AssetKey("sketch_coders")}
    assert key in defs.resolve_job_def("daily_refresh").asset_layer.executable_asset_keys
    assets_def = next(a for a in defs.assets if key in a.keys)
    mapping = assets_def.get_partition_mapping(key)
    assert isinstance(mapping, TimeWindowPartitionMapping)
    assert (mapping.start_offset, mapping.end_offset) == (-1, -1)
    parts = assets_def.partitions_def
    upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(
        parts.subset_with_partition_keys(["2017-03-02"]), parts, parts
    ).partitions_subset
    assert list(upstream.get_partition_keys()) == ["2017-03-01"]


def test_whole_graph_in_process_then_a_single_day_again(tmp_path, bm_home, monkeypatch):
    config = _month_config(tmp_path)
    monkeypatch.setenv("BM_DATASET", str(config))
    database = bm_home / "bm_assets.duckdb"
    defs = build_definitions(config, warehouse=DuckDBWarehouseResource(database=str(database)))
    instance = DagsterInstance.ephemeral()
    tags = {
        "dagster/asset_partition_range_start": "2017-01-01",
        "dagster/asset_partition_range_end": "2017-01-31",
    }
    result = materialize(list(defs.assets), resources=defs.resources, instance=instance, tags=tags)
    assert result.success
    meta = {
        m.asset_key.to_user_string(): m.metadata
        for m in (e.event_specific_data.materialization for e in result.get_asset_materialization_events())
    }
    assert meta["temporal_graph"]["nodes"].value > 1000 and meta["temporal_graph"]["edges"].value > 500
    assert meta["behavioral_profiles"]["days"].value == 31
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["incremental_equals_batch"].passed
    assert checks["incremental_equals_batch"].metadata["clients"].value > 10
    coders = load_sketch_coders(bm_home)
    assert list(coders) == ["item_id", "product_category", "department"]

    wh = DuckDBWarehouse(str(database))
    ids, before = load_profiles(wh, dt.date(2017, 1, 31))
    wh.close()
    # per half-life 3 sketches and 4 counts (events, value, active days, baskets); 4 totals, 2 days, 2 derived
    assert len(ids) > 200 and before.shape[1] == 2 * (3 * 8 * 64 + 4) + 4 + 2 + 2

    again = materialize(
        [a for a in defs.assets if AssetKey("behavioral_profiles") in a.keys],
        resources=defs.resources,
        instance=instance,
        partition_key="2017-01-15",
        selection=[AssetKey("behavioral_profiles")],
    )
    assert again.success
    wh = DuckDBWarehouse(str(database))
    ids_after, after = load_profiles(wh, dt.date(2017, 1, 31))
    wh.close()
    assert np.array_equal(ids, ids_after)
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)

    out = tmp_path / "export"
    assert cli_main(["export-profiles", "--date", "2017-01-31", "--out", str(out)]) == 0
    assert np.array_equal(np.load(out / "client_ids.npy"), ids)
    assert np.load(out / "embeddings.npy").shape == before.shape
