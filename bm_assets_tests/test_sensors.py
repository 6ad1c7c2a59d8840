"""The file-arrival sensor of an event source, evaluated tick by tick on a landing folder: new and
changed files request their days once; an unchanged folder requests nothing."""

import os
import shutil
from pathlib import Path

import yaml
from dagster import DagsterInstance, build_sensor_context

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
