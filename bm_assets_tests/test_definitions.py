"""The Dagster layer: definitions load, assets materialize in-process against a real DuckDB file
and a real instance, checks report, and re-materializing a partition changes nothing."""

import pandas as pd
from dagster import DagsterInstance, materialize

from bm_assets.core.warehouse import DuckDBWarehouse
from bm_assets.definitions import build_definitions
from bm_assets.resources import DuckDBWarehouseResource
from bm_assets.settings import BUNDLED_DATASET, REPO_ROOT
from bm_assets_tests.factories import HEADER, write_dataset


def _defs(tmp_path, dataset=BUNDLED_DATASET):
    db = str(tmp_path / "wh.duckdb")
    return build_definitions(dataset, warehouse=DuckDBWarehouseResource(database=db)), db


def _assets(defs, *names):
    return [a for a in defs.assets if any(k.to_user_string() in names for k in a.keys)]


def test_definitions_load(tmp_path):
    defs, _ = _defs(tmp_path)
    keys = {k.to_user_string() for a in defs.assets for k in a.keys}
    assert {
        "raw_events",
        "raw_events_quarantine",
        "client_properties",
        "product_catalog",
        "events_denormalized",
    } <= keys
    assert defs.resolve_job_def("daily_refresh").partitions_def is not None
    assert {s.name for s in defs.schedules} >= {"daily_refresh", "attributes_refresh"}
    defs.validate_loadable(defs)


def test_readme_names_what_the_ui_lists(tmp_path):
    """Every schedule, sensor and job of the sample appears in the README under its UI name (the
    README once said `daily_refresh` where the UI listed `daily_refresh_schedule`)."""
    defs, _ = _defs(tmp_path)
    readme = (REPO_ROOT / "README.md").read_text()
    names = {s.name for s in defs.schedules} | {s.name for s in defs.sensors} | {j.name for j in defs.jobs}
    assert {"daily_refresh", "attributes_refresh", "retrain", "purchase_files", "freshness_checks"} <= names
    assert sorted(n for n in names if f"`{n}`" not in readme) == []


def _run(defs, names, instance, partition=None, tags=None):
    return materialize(
        _assets(defs, *names), resources=defs.resources, instance=instance, partition_key=partition, tags=tags
    )


def test_materialize_days_and_rerun_is_idempotent(tmp_path):
    defs, db = _defs(tmp_path)
    instance = DagsterInstance.ephemeral()
    assert _run(defs, ["client_properties", "product_catalog"], instance).success
    for day in ["2017-02-01", "2017-02-02", "2017-02-01"]:
        result = _run(defs, ["raw_events", "events_denormalized"], instance, partition=day)
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert {c.check_name for c in checks} == {
            "rows_in_equal_loaded_plus_quarantined",
            "no_null_keys",
            "events_inside_partition",
            "quarantine_rate",
            "catalog_coverage",
        }
        assert all(c.passed for c in checks)
    wh = DuckDBWarehouse(db)
    counts = wh.fetch_df(
        "SELECT event_date, count(*) AS n, count(DISTINCT event_id) AS ids FROM events_denormalized "
        "GROUP BY 1 ORDER BY 1"
    )
    assert counts["event_date"].dt.strftime("%Y-%m-%d").tolist() == ["2017-02-01", "2017-02-02"]
    assert (counts["n"] == counts["ids"]).all() and counts["n"].min() > 100
    wh.close()


def test_single_run_backfill_equals_daily_runs(tmp_path):
    defs_a, db_a = _defs(tmp_path / "a")
    defs_b, db_b = _defs(tmp_path / "b")
    instance = DagsterInstance.ephemeral()
    for defs in (defs_a, defs_b):
        assert _run(defs, ["client_properties", "product_catalog"], instance).success
    tags = {
        "dagster/asset_partition_range_start": "2017-05-01",
        "dagster/asset_partition_range_end": "2017-05-07",
    }
    assert _run(defs_a, ["raw_events", "events_denormalized"], instance, tags=tags).success
    for d in range(1, 8):
        assert _run(defs_b, ["raw_events", "events_denormalized"], instance, partition=f"2017-05-0{d}").success
    q = "SELECT * FROM events_denormalized ORDER BY event_id"
    a, b = DuckDBWarehouse(db_a), DuckDBWarehouse(db_b)
    pd.testing.assert_frame_equal(a.fetch_df(q), b.fetch_df(q))
    assert len(a.fetch_df(q)) > 1000


def test_low_catalog_coverage_fails_its_check(tmp_path):
    csv = HEADER + "e1,1,A,2024-01-02 10:00:00,1,1,s\ne2,1,ZZZ,2024-01-02 11:00:00,1,1,s\n"
    defs, _ = _defs(tmp_path, write_dataset(tmp_path / "ds", csv))
    instance = DagsterInstance.ephemeral()
    assert _run(defs, ["client_properties", "product_catalog"], instance).success
    result = _run(defs, ["raw_events", "events_denormalized"], instance, partition="2024-01-02")
    coverage = [c for c in result.get_asset_check_evaluations() if c.check_name == "catalog_coverage"][0]
    assert not coverage.passed and coverage.metadata["share"].value == 0.5


def _quarantine_run(tmp_path, timestamp_format: str, rows: str):
    defs, _ = _defs(tmp_path, write_dataset(tmp_path / "ds", HEADER + rows, timestamp_format=timestamp_format))
    instance = DagsterInstance.ephemeral()
    assert _run(defs, ["client_properties", "product_catalog"], instance).success
    result = materialize(
        _assets(defs, "raw_events", "events_denormalized"),
        resources=defs.resources,
        instance=instance,
        partition_key="2024-01-01",
        raise_on_error=False,
    )
    check = [c for c in result.get_asset_check_evaluations() if c.check_name == "quarantine_rate"][0]
    return result, check


def test_fully_quarantined_partition_fails_its_run(tmp_path):
    """A timestamp format that matches nothing quarantines every row: the run fails at the
    blocking check, names the reason, and the join downstream never runs."""
    rows = "e1,1,A,2024-01-01 10:00:00,1,1,s\ne2,2,B,2024-01-01 11:00:00,1,1,s\n"
    result, check = _quarantine_run(tmp_path, "%d/%m/%Y", rows)
    assert not result.success
    assert not check.passed and check.severity.value == "ERROR" and check.metadata["rate"].value == 1.0
    assert "unparsable timestamp in column ts (format %d/%m/%Y)" in check.metadata["top_reasons"].value
    assert not result.asset_materializations_for_node("events_denormalized")


def test_quarantine_rate_warns_between_levels_and_passes_when_clean(tmp_path):
    clean = "".join(f"e{i},1,A,2024-01-01 10:00:{i:02d},1,1,s\n" for i in range(19))
    result, check = _quarantine_run(tmp_path / "clean", "%Y-%m-%d %H:%M:%S", clean)
    assert result.success and check.passed and check.metadata["rate"].value == 0.0
    result, check = _quarantine_run(tmp_path / "warn", "%Y-%m-%d %H:%M:%S", clean + "bad,1,A,x,1,1,s\n")
    assert result.success and not check.passed and check.severity.value == "WARN"
    assert check.metadata["rate"].value == 0.05


def test_rows_outside_the_configured_range_do_not_count_as_quarantined(tmp_path):
    """A range trimmed on purpose (data_end before the file's last day) is not bad data: those
    rows are still quarantined and listed, but the rate leaves them out."""
    clean = "e0,1,A,2024-01-01 10:00:00,1,1,s\n"
    later = "".join(f"x{i},1,A,2024-03-0{i + 1} 10:00:00,1,1,s\n" for i in range(5))
    result, check = _quarantine_run(tmp_path, "%Y-%m-%d %H:%M:%S", clean + later)
    assert result.success and check.passed and check.metadata["rate"].value == 0.0
    assert "timestamp outside the configured range" in check.metadata["top_reasons"].value
