"""The daily schedule at fixed tick times: a closed dataset skips with a reason past its data_end,
a live one (no data_end) requests yesterday's partition in its time zone."""

import datetime as dt
import shutil
from contextlib import nullcontext
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from dagster import (
    DagsterInstance,
    RunRequest,
    SkipReason,
    build_schedule_context,
    instance_for_test,
    partition_loading_context,
)

from bm_assets.config import DatasetConfigError, load_dataset_config
from bm_assets.definitions import build_definitions
from bm_assets.partitions import daily_partitions

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "purchases_example"


def _dataset(tmp_path: Path, **changes) -> Path:
    """The purchases example with `changes` applied to its YAML (a value of None drops the key)."""
    folder = tmp_path / "data"
    shutil.copytree(EXAMPLE, folder)
    path = folder / "dataset.yaml"
    doc = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        if value is None:
            doc.pop(key)
        else:
            doc[key] = value
    path.write_text(yaml.safe_dump(doc))
    return path


def _tick(dataset: Path, when: dt.datetime, instance: DagsterInstance | None = None) -> RunRequest | SkipReason:
    defs = build_definitions(dataset)
    schedule = next(s for s in defs.schedules if s.name == "daily_refresh")
    with nullcontext(instance) if instance else instance_for_test() as instance:
        # entered and left like the instance: the context sets Dagster's current state storage
        with build_schedule_context(
            instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
        ) as context:
            data = schedule.evaluate_tick(context)
    return data.run_requests[0] if data.run_requests else SkipReason(data.skip_message)


def test_closed_dataset_schedule_skips_after_data_end(tmp_path):
    dataset = _dataset(tmp_path)
    inside = _tick(dataset, dt.datetime(1997, 6, 2, 2, tzinfo=dt.UTC))
    assert isinstance(inside, RunRequest) and inside.partition_key == "1997-06-01"
    last = _tick(dataset, dt.datetime(1998, 1, 1, 2, tzinfo=dt.UTC))
    assert isinstance(last, RunRequest) and last.partition_key == "1997-12-31"
    after = _tick(dataset, dt.datetime(2026, 11, 29, 2, tzinfo=dt.UTC))
    assert isinstance(after, SkipReason)
    assert "ends on 1997-12-31" in after.skip_message and "2026-11-28" in after.skip_message


def test_live_dataset_runs_up_to_yesterday_in_its_time_zone(tmp_path):
    dataset = _dataset(tmp_path, data_end=None, timezone="America/New_York")
    cfg = load_dataset_config(dataset)
    assert cfg.data_end is None
    assert cfg.last_day == dt.datetime.now(ZoneInfo("America/New_York")).date() - dt.timedelta(days=1)
    # 02:00 in New York on 2026-03-10 is 06:00 UTC: the day to process is New York's 9 March.
    tick = dt.datetime(2026, 3, 10, 6, tzinfo=dt.UTC)
    with partition_loading_context(tick):
        assert daily_partitions(cfg).get_last_partition_key() == "2026-03-09"
    request = _tick(dataset, tick)
    assert isinstance(request, RunRequest) and request.partition_key == "2026-03-09"


def test_unknown_time_zone_is_refused(tmp_path):
    with pytest.raises(DatasetConfigError, match="unknown time zone 'Mars/Olympus'"):
        load_dataset_config(_dataset(tmp_path, timezone="Mars/Olympus"))


def test_live_schedule_skips_a_day_a_sensor_already_ran_after_it_ended(tmp_path):
    """Files of yesterday that land after midnight start its run by the file-arrival sensor; the
    02:00 tick then has nothing to add (that run read every file of the day) and skips."""
    dataset = _dataset(tmp_path, data_end=None)
    tick = dt.datetime(2026, 3, 10, 2, tzinfo=dt.UTC)
    with instance_for_test() as instance:  # a schedule's context needs an instance with a ref
        job = build_definitions(dataset).resolve_job_def("daily_refresh")
        instance.create_run_for_job(job, tags={"dagster/partition": "2026-03-08"})  # another day
        assert isinstance(_tick(dataset, tick, instance), RunRequest)
        instance.create_run_for_job(job, tags={"dagster/partition": "2026-03-09"})  # created after the 9th ended
        skipped = _tick(dataset, tick, instance)
    assert isinstance(skipped, SkipReason) and "2026-03-09 was already loaded or launched" in skipped.skip_message
