"""Command line: materialize the whole asset graph on the configured dataset, export profiles."""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from dagster import DagsterInstance, materialize

from bm_assets.settings import REPO_ROOT, bm_home


def dagster_instance() -> DagsterInstance:
    """A persistent instance under $BM_HOME/dagster, so runs show up in `dagster dev`."""
    home = os.environ.setdefault("DAGSTER_HOME", str(bm_home() / "dagster"))
    os.makedirs(home, exist_ok=True)
    if not os.path.exists(os.path.join(home, "dagster.yaml")):
        shutil.copy(REPO_ROOT / "dagster.yaml", os.path.join(home, "dagster.yaml"))
    return DagsterInstance.get()


def run_all(start: str | None = None, end: str | None = None) -> bool:
    """Materialize every asset: partitioned ones over [start, end] (default: every day) in one
    run per stage, in dependency order."""
    from bm_assets.definitions import build_definitions

    defs = build_definitions()  # built now, so BM_HOME / BM_DATASET of this call apply
    instance = dagster_instance()
    assets = list(defs.assets)
    partitioned = [a for a in assets if a.partitions_def is not None]
    keys = partitioned[0].partitions_def.get_partition_keys() if partitioned else []
    first, last = start or keys[0], end or keys[-1]
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    result = materialize(assets, resources=defs.resources, instance=instance, tags=tags)
    return result.success


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bm-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialize every asset on the configured dataset")
    run.add_argument("--start", help="first partition (YYYY-MM-DD); default the dataset's first day")
    run.add_argument("--end", help="last partition (YYYY-MM-DD); default the dataset's last day")
    args = parser.parse_args(argv)
    if args.command == "run":
        return 0 if run_all(args.start, args.end) else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
