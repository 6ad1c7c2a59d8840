"""A live copy of the sample run unattended by a real `dagster dev` for three simulated days.

The copy has no `data_end` (its partitions run up to yesterday, so every day of 2017 is one) and
reads its events from a landing folder (`landing/transactions_*.parquet`,
`landing/coupon_redemptions_*.parquet`). The first half of 2017 is bootstrapped (every asset but the
scores, models included); then the file-arrival sensors, the automation sensor and, once, the retrain
schedule are turned on, as a user does under *Automation*, and the files of 1, 2 and 3 July land one
day at a time (written aside, then renamed into the folder). Each day's partitions, profiles and
scores must appear exactly once, the retrain must register a new version that is promoted or kept
out, and nothing may run twice: every run and every materialization in the instance is counted.
Slow: about 4 minutes on 2 busy cores (the bootstrap 1.5, dagster dev and four runs 2.5)."""

from __future__ import annotations

import collections
import datetime as dt
import importlib.util
import os
import shutil
import time
from pathlib import Path

import duckdb
import yaml
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, DagsterRunStatus, RunsFilter, materialize
from mlflow import MlflowClient

from bm_assets.core.registry import champion
from bm_assets.definitions import build_definitions
from bm_assets.settings import REPO_ROOT
from bm_assets_tests.conftest import TASKS
from bm_assets_tests.test_ui import running_dagster_dev

HISTORY_END = "2017-06-30"
DAYS = ["2017-07-01", "2017-07-02", "2017-07-03"]
DAILY = ["raw_events", "raw_events_quarantine", "events_denormalized", "behavioral_profiles", "churn_scores"]
LOCATION = {"repositoryLocationName": "bm_assets.definitions", "repositoryName": "__repository__"}
SENSORS = ["purchase_files", "coupon_redemption_files", "default_automation_condition_sensor"]
TERMINAL = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}

START_SENSOR = """mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) {
  __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }"""
START_SCHEDULE = """mutation($s: ScheduleSelector!) { startSchedule(scheduleSelector: $s) {
  __typename ... on ScheduleStateResult { scheduleState { id status } } ... on PythonError { message } } }"""
STOP_SCHEDULE = """mutation($id: String!) { stopRunningSchedule(id: $id) {
  __typename ... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message } } }"""
SENSOR_TICKS = """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) {
  ... on Sensor { sensorState { ticks(limit: 1) { timestamp status } } } } }"""


def _live_sample():
    """scripts/live_sample.py, the README walkthrough's helper, as a module."""
    spec = importlib.util.spec_from_file_location("live_sample", REPO_ROOT / "scripts" / "live_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


live_sample = _live_sample()


def live_copy(folder: Path) -> Path:
    """The walkthrough's live copy (no data_end, a landing folder up to HISTORY_END), with small
    representations, the churn task only, and the retrain schedule ticking every minute (the test
    turns it off after its first tick)."""
    dataset = live_sample.prepare(folder, dt.date.fromisoformat(HISTORY_END))
    doc = yaml.safe_load(dataset.read_text())
    doc["sensor_interval_seconds"] = 5
    assert doc["temporal"] == {"training_cutoff": "2017-05-01", "test_start": "2017-05-29", "test_end": "2017-07-01"}
    doc["representation"]["sketch"].update(depth=4, bits=4)
    doc["representation"]["cleora"]["dim"] = 16
    dataset.write_text(yaml.safe_dump(doc))
    (folder / "tasks.yaml").write_text(TASKS + "retrain: {cron_schedule: '* * * * *'}\n")
    return dataset


def _wait(what: str, probe, timeout_s: float = 300, every_s: float = 2):
    """Poll `probe` until it returns something truthy; fail after `timeout_s` naming `what`."""
    deadline = time.monotonic() + timeout_s
    while not (found := probe()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(every_s)
    return found


def _finished_run(
    instance: DagsterInstance, job: str, tags: dict | None = None, timeout_s: float = 300, many: bool = False
):
    """Wait until every run of `job` (with `tags`) has finished; there must be exactly one unless
    `many`, and all must have succeeded."""

    def probe():
        runs = instance.get_runs(RunsFilter(job_name=job, tags=tags or {}))
        return runs if runs and all(r.status in TERMINAL for r in runs) else None

    runs = _wait(f"a finished {job} run {tags or ''}", probe, timeout_s)
    statuses = [r.status for r in runs]
    ok = all(st == DagsterRunStatus.SUCCESS for st in statuses) and (many or len(runs) == 1)
    assert ok, f"{job} {tags}: {statuses}"
    return runs[0]


def _ticks(gql, sensor: str, after: float = 0.0) -> list[dict]:
    """The sensor's latest tick, if it came after `after` (a timestamp)."""
    state = gql(SENSOR_TICKS, {"s": {**LOCATION, "sensorName": sensor}})["data"]["sensorOrError"]["sensorState"]
    return [t for t in state["ticks"] if t["timestamp"] > after]


def _materializations(instance: DagsterInstance, key: str) -> collections.Counter:
    """Partition (None for an unpartitioned asset) -> how many times it was materialized."""
    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey(key)), limit=10_000).records
    return collections.Counter(r.partition_key for r in records)


def test_live_dataset_runs_unattended_for_three_days(tmp_path, bm_home, monkeypatch):
    began = time.monotonic()
    folder = tmp_path / "live"
    dataset = live_copy(folder)
    monkeypatch.setenv("BM_DATASET", str(dataset))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    shutil.copy(REPO_ROOT / "dagster.yaml", bm_home / "dagster" / "dagster.yaml")

    # 1. bootstrap: the history and the first models (what `bm-assets run --end 2017-06-30` does in
    # the README's walkthrough, less the history's daily scores, which nothing here reads)
    defs = build_definitions(dataset)
    keys = [k for a in defs.assets for k in a.keys if not k.to_user_string().endswith("_scores")]
    tags = {"dagster/asset_partition_range_start": "2017-01-01", "dagster/asset_partition_range_end": HISTORY_END}
    with DagsterInstance.get() as instance:
        assert materialize(
            list(defs.assets), selection=keys, resources=defs.resources, instance=instance, tags=tags
        ).success
    bootstrapped = time.monotonic()
    mlflow = MlflowClient(tracking_uri=f"sqlite:///{bm_home / 'mlflow.db'}")
    assert str(champion(mlflow, "completejourney_sample_churn").version) == "1"

    with running_dagster_dev(bm_home) as gql, DagsterInstance.get() as instance:
        for name in SENSORS:  # what a user turns on under Automation
            started = gql(START_SENSOR, {"s": {**LOCATION, "sensorName": name}})["data"]["startSensor"]
            assert started["__typename"] == "Sensor", started
        # the sensors' first ticks: the history was loaded by the bootstrap, so nothing runs
        for name in SENSORS[:2]:
            _wait(f"a first tick of {name}", lambda n=name: _ticks(gql, n), 120)

        for i, day in enumerate(DAYS):
            assert live_sample.land(folder, dt.date.fromisoformat(day))
            if i == 1:  # the retrain schedule's first tick, during the second day
                state = gql(START_SCHEDULE, {"s": {**LOCATION, "scheduleName": "retrain"}})["data"]["startSchedule"]
                assert state["__typename"] == "ScheduleStateResult", state
                _wait("a retrain run", lambda: instance.get_runs(RunsFilter(job_name="retrain")), 250, 1)
                stopped = gql(STOP_SCHEDULE, {"id": state["scheduleState"]["id"]})["data"]["stopRunningSchedule"]
                stopped_at = time.time()
                assert stopped["scheduleState"]["status"] == "STOPPED", stopped
                # on a loaded machine a second tick can fire before the stop lands: wait for all
                time.sleep(5)
                _finished_run(instance, "retrain", timeout_s=400, many=True)
            _finished_run(instance, "daily_refresh", {"dagster/partition": day})

        # quiet: every sensor ticks again after the last run ended, and starts nothing
        last_end = max(r.end_time for r in instance.get_run_records() if r.end_time)
        for name in SENSORS:
            _wait(f"a tick of {name} after the last run", lambda n=name: _ticks(gql, n, after=last_end), 120)
        runs = instance.get_runs()
        jobs = collections.Counter(r.job_name for r in runs)
        retrains = [r.create_timestamp.timestamp() for r in instance.get_run_records(RunsFilter(job_name="retrain"))]
        # a retrain is a scheduled tick, not a partition: on a loaded machine the daemon may launch a
        # second tick before the stop lands, which is the schedule working, not a run done twice
        assert jobs.pop("retrain", 0) >= 1, f"retrain runs created at {sorted(retrains)}, stopped at {stopped_at}"
        assert jobs == {"__ephemeral_asset_job__": 1, "daily_refresh": 3}, jobs
        assert all(r.status == DagsterRunStatus.SUCCESS for r in runs)
        daily = sorted(r.tags["dagster/partition"] for r in runs if r.job_name == "daily_refresh")
        assert daily == DAYS
        assert {r.tags.get("dagster/sensor_name") for r in runs if r.job_name == "daily_refresh"} <= set(SENSORS)
        counts = {key: _materializations(instance, key) for key in [*DAILY, "foundation_model", "churn_model"]}

    # 2. each day's partitions, profiles and scores appear once; the history was not run again
    for key in DAILY:
        assert set(DAYS) <= set(counts[key]), f"{key}: {sorted(set(DAYS) - set(counts[key]))} missing"
        twice = {p: n for p, n in counts[key].items() if n > 1}
        assert not twice, f"{key} materialized more than once: {twice}"
    assert max(counts["raw_events"]) == DAYS[-1]
    n_retrains = len(retrains)
    assert counts["churn_model"] == {None: 1 + n_retrains} and counts["foundation_model"] == {None: 1 + n_retrains}

    # 3. each retrain registered a version and promoted it or kept the champion; scores follow the champion
    promoted = []
    for version in range(2, 2 + n_retrains):
        tags = mlflow.get_model_version("completejourney_sample_churn", str(version)).tags
        assert tags["promoted"] in ("true", "false") and tags["promotion_reason"]
        promoted += [str(version)] if tags["promoted"] == "true" else []
    kept = str(champion(mlflow, "completejourney_sample_churn").version)
    assert kept == (promoted[-1] if promoted else "1")
    con = duckdb.connect(str(bm_home / "bm_assets.duckdb"), read_only=True)
    try:
        versions = dict(
            con.execute(
                "SELECT CAST(score_date AS VARCHAR), min(model_version) FROM churn_scores "
                f"WHERE score_date >= DATE '{DAYS[0]}' GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )
    finally:
        con.close()
    assert list(versions) == DAYS
    assert versions[DAYS[0]] == "1" and versions[DAYS[2]] == kept
    print(f"bootstrap {bootstrapped - began:.0f} s, three days {time.monotonic() - bootstrapped:.0f} s")
