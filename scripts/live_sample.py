"""A live copy of the bundled sample, for trying daily operation (README, "Running it live").

    python scripts/live_sample.py prepare live/                  # live/dataset.yaml, live/landing/ up to 2017-06-30
    python scripts/live_sample.py land live/ 2017-07-01          # one more day's files land in live/landing/

`prepare` copies the sample without `data_end` (a live dataset: partitions up to yesterday), with its
event sources read from a landing folder (`landing/transactions_*.parquet`,
`landing/coupon_redemptions_*.parquet`) that holds the events up to `--history-end` (default
2017-06-30), and the temporal protocol moved inside that history (test on its last 33 days).
`land` writes one day's rows of each source beside the folder's pattern and renames them into it, as
a landing process makes a file appear whole; the file-arrival sensors then run that day.
bm_assets_tests/test_live.py uses the same two functions."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
from pathlib import Path

import duckdb
import yaml

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "completejourney_sample"
#: Event file of the sample -> its timestamp column.
SOURCES = {"transactions": "transaction_timestamp", "coupon_redemptions": "redemption_date"}


def prepare(folder: Path, history_end: dt.date = dt.date(2017, 6, 30)) -> Path:
    """The live copy in `folder` (created); returns its dataset YAML."""
    shutil.copytree(SAMPLE, folder, ignore=shutil.ignore_patterns(*(f"{s}.parquet" for s in SOURCES)))
    (folder / "landing").mkdir()
    after = (history_end + dt.timedelta(days=1)).isoformat()
    for source, column in SOURCES.items():
        _cut(source, f"{column} < DATE '{after}'", folder / "landing" / f"{source}_history.parquet")
    doc = yaml.safe_load((SAMPLE / "dataset.yaml").read_text())
    del doc["data_end"]
    # The temporal protocol inside the history: test on its last 33 days, select on the 28 before.
    test_end = history_end + dt.timedelta(days=1)
    test_start = test_end - dt.timedelta(days=33)
    doc["temporal"] = {
        "training_cutoff": (test_start - dt.timedelta(days=28)).isoformat(),
        "test_start": test_start.isoformat(),
        "test_end": test_end.isoformat(),
    }
    for event in doc["events"]:
        source = Path(event["path"]).stem
        event["path"] = f"landing/{source}_*.parquet"
    path = folder / "dataset.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def land(folder: Path, day: dt.date) -> list[Path]:
    """Day `day`'s rows of each source, as `landing/<source>_<day>.parquet` (a source without events
    that day lands no file); returns the files landed."""
    landed = []
    for source, column in SOURCES.items():
        aside = folder / "landing" / f".{source}_{day}.tmp"
        if _cut(source, f"CAST({column} AS DATE) = DATE '{day.isoformat()}'", aside):
            target = folder / "landing" / f"{source}_{day}.parquet"
            os.replace(aside, target)
            landed.append(target)
    return landed


def _cut(source: str, where: str, out: Path) -> int:
    """Rows of the sample's `source` matching `where` (SQL written here, never user input), written
    to `out` as Parquet when there are any; returns how many."""
    path = str(SAMPLE / f"{source}.parquet").replace("'", "''")
    target = str(out).replace("'", "''")
    con = duckdb.connect()
    try:
        n = con.execute(f"SELECT count(*) FROM read_parquet('{path}') WHERE {where}").fetchone()[0]
        if n:
            con.execute(f"COPY (SELECT * FROM read_parquet('{path}') WHERE {where}) TO '{target}' (FORMAT parquet)")
    finally:
        con.close()
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="a live copy of the sample in FOLDER")
    p.add_argument("folder", type=Path)
    p.add_argument("--history-end", type=dt.date.fromisoformat, default=dt.date(2017, 6, 30))
    p = sub.add_parser("land", help="one day's event files into FOLDER/landing")
    p.add_argument("folder", type=Path)
    p.add_argument("day", type=dt.date.fromisoformat)
    args = parser.parse_args()
    if args.command == "prepare":
        dataset = prepare(args.folder, args.history_end)
        print(f"wrote {dataset}; events up to {args.history_end} in {args.folder / 'landing'}")
    else:
        for path in land(args.folder, args.day):
            print(f"landed {path}")


if __name__ == "__main__":
    main()
