"""The file-arrival sensor of an event source, evaluated tick by tick on a landing folder: new and
changed files request their days once; an unchanged folder requests nothing."""

import os
import shutil
from pathlib import Path

import yaml
from dagster import AssetMaterialization, DagsterInstance, build_sensor_context

from bm_assets.definitions import build_definitions

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "purchases_example"
HEADER = "customer_id,date,n_items,amount\n"


def _write(path: Path, *days: str) -> None:
    path.write_text(HEADER + "".join(f"{i},{d},1,10.0\n" for i, d in enumerate(days)))


def test_new_and_changed_files_request_their_days(tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(EXAMPLE, folder)
    landing = folder / "landing"
    landing.mkdir()
    _write(landing / "a.csv", "19970105", "19970107", "not a date")
    doc = yaml.safe_load((folder / "dataset.yaml").read_text())
    doc["events"][0]["path"] = "landing/*.csv"
    (folder / "dataset.yaml").write_text(yaml.safe_dump(doc))
    defs = build_definitions(folder / "dataset.yaml")
    sensor = next(s for s in defs.sensors if s.name == "purchase_files")

    cursor = None
    with DagsterInstance.ephemeral() as instance:

        def tick() -> list[str]:
            nonlocal cursor
            context = build_sensor_context(instance=instance, cursor=cursor, repository_def=defs.get_repository_def())
            data = sensor.evaluate_tick(context)
            cursor = data.cursor or cursor
            return [r.partition_key for r in data.run_requests or []]

        assert tick() == ["1997-01-05", "1997-01-06", "1997-01-07"]
        assert tick() == []
        _write(landing / "b.csv", "19970110")
        assert tick() == ["1997-01-10"]
        size = (landing / "a.csv").stat().st_size
        _write(landing / "a.csv", "19970105", "19970108", "not a date")
        os.utime(landing / "a.csv", ns=(1, 1))
        assert (landing / "a.csv").stat().st_size == size  # same size, another mtime: changed
        assert tick() == ["1997-01-05", "1997-01-06", "1997-01-07", "1997-01-08"]
        assert tick() == []
        _write(landing / "c.csv", "19990101")  # after data_end: no partition
        assert tick() == []


def test_days_loaded_or_launched_since_the_file_landed_are_not_requested(tmp_path):
    """Turning the sensor on over files that `bm-assets run` already loaded runs nothing, and a day
    whose run another sensor (or the schedule) launched after the file landed is not run twice."""
    folder = tmp_path / "data"
    shutil.copytree(EXAMPLE, folder)
    landing = folder / "landing"
    landing.mkdir()
    _write(landing / "a.csv", "19970105", "19970106")
    doc = yaml.safe_load((folder / "dataset.yaml").read_text())
    doc["events"][0]["path"] = "landing/*.csv"
    doc["sensor_interval_seconds"] = 10
    (folder / "dataset.yaml").write_text(yaml.safe_dump(doc))
    defs = build_definitions(folder / "dataset.yaml")
    sensor = next(s for s in defs.sensors if s.name == "purchase_files")
    assert sensor.minimum_interval_seconds == 10
    job = defs.resolve_job_def("daily_refresh")

    with DagsterInstance.ephemeral() as instance:
        cursor, skipped = None, None

        def tick() -> list[str]:
            nonlocal cursor, skipped
            context = build_sensor_context(instance=instance, cursor=cursor, repository_def=defs.get_repository_def())
            data = sensor.evaluate_tick(context)
            cursor, skipped = data.cursor or cursor, data.skip_message
            return [r.partition_key for r in data.run_requests or []]

        # loaded before the sensor was turned on (bm-assets run): nothing to do
        instance.report_runless_asset_event(AssetMaterialization("raw_events", partition="1997-01-05"))
        instance.report_runless_asset_event(AssetMaterialization("raw_events", partition="1997-01-06"))
        assert tick() == []
        assert skipped == "1 new or changed file(s): their 2 day(s) already loaded or launched"
        # a new file for the 6th and the 7th, whose 7th already has a queued run: only the 6th
        _write(landing / "b.csv", "19970106", "19970107")
        instance.create_run_for_job(job, tags={"dagster/partition": "1997-01-07"})
        assert tick() == ["1997-01-06"]
