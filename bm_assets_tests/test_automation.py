"""Declarative automation and freshness, with Dagster's own test APIs on a real ephemeral instance:
profiles and scores follow a newly landed day, and a daily asset whose latest day is missing fails
its freshness check until the day lands. Upstream materializations are recorded with
`report_runless_asset_event`, the API external systems use to report them."""

from __future__ import annotations

from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    DagsterInstance,
    Definitions,
    define_asset_job,
    evaluate_automation_conditions,
)

from bm_assets.definitions import build_definitions

LAST, BEFORE = "2017-06-30", "2017-06-29"  # the half-year dataset's last two days


def _land(instance: DagsterInstance, key: str, partition: str | None = None) -> None:
    instance.report_runless_asset_event(AssetMaterialization(asset_key=key, partition=partition))


def _requested(result, key: str) -> set[str]:
    return set(result.get_requested_partitions(AssetKey(key)))


def test_profiles_and_scores_follow_a_new_day(half_year):
    defs = build_definitions(half_year)
    instance = DagsterInstance.ephemeral()
    for key in ("sketch_coders", "churn_model"):
        _land(instance, key)
    for key in ("events_denormalized", "behavioral_profiles", "churn_scores"):
        _land(instance, key, BEFORE)
    result = evaluate_automation_conditions(defs, instance)
    assert result.total_requested == 0  # everything up to date: nothing to do

    _land(instance, "events_denormalized", LAST)  # a new day lands
    result = evaluate_automation_conditions(defs, instance, cursor=result.cursor)
    profiles = _requested(result, "behavioral_profiles")
    assert LAST in profiles and profiles <= {BEFORE, LAST}
    assert _requested(result, "churn_scores") == {LAST}  # after the profiles, in the same run

    _land(instance, "behavioral_profiles", LAST)
    _land(instance, "churn_scores", LAST)
    result = evaluate_automation_conditions(defs, instance, cursor=result.cursor)
    assert result.total_requested == 0  # handled: nothing runs twice

    _land(instance, "churn_model")  # a retrain: the latest day is scored again
    result = evaluate_automation_conditions(defs, instance, cursor=result.cursor)
    assert _requested(result, "churn_scores") == {LAST}
    assert _requested(result, "behavioral_profiles") == set()


def test_daily_assets_have_freshness_checks_that_fail_until_the_day_lands(half_year):
    defs = build_definitions(half_year)
    checked = {k.asset_key.to_user_string() for c in defs.asset_checks for k in c.check_keys}
    assert {"raw_events", "events_denormalized", "behavioral_profiles", "churn_scores"} <= checked
    assert "foundation_model" not in checked and "churn_model" not in checked
    assert "freshness_checks" in {s.name for s in defs.sensors}

    key = AssetCheckKey(AssetKey("churn_scores"), "freshness_check")
    run_check = (
        Definitions(
            assets=list(defs.assets),
            asset_checks=list(defs.asset_checks),
            resources=defs.resources,
            jobs=[define_asset_job("check", selection=AssetSelection.checks(key))],
        )
        .resolve_job_def("check")
        .execute_in_process
    )
    instance = DagsterInstance.ephemeral()
    _land(instance, "churn_scores", BEFORE)
    late = run_check(instance=instance).get_asset_check_evaluations()
    assert [e.passed for e in late] == [False]
    assert late[0].metadata["dagster/freshness_params"].value["deadline_cron"] == "0 6 * * *"
    assert instance.get_latest_materialization_event(AssetKey("churn_scores")) is not None

    _land(instance, "churn_scores", LAST)
    fresh = run_check(instance=instance).get_asset_check_evaluations()
    assert [e.passed for e in fresh] == [True]
