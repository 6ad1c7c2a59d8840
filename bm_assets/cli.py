"""Command line: materialize the whole asset graph on the configured dataset, export profiles and scores."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import time
from contextlib import nullcontext

from dagster import DagsterInstance, Definitions, define_asset_job

from bm_assets.config import DatasetConfigError
from bm_assets.console import ProgressHandler, progress_logger, quiet_libraries, results_summary, step_labels
from bm_assets.core.tasks import TaskConfigError, load_modeling_config, tasks_path_for
from bm_assets.settings import REPO_ROOT, bm_home, dataset_path

RUN_JOB = "bm_assets_run"


def dagster_instance() -> DagsterInstance:
    """A persistent instance under $BM_HOME/dagster, so runs show up in `dagster dev`."""
    home = os.environ.setdefault("DAGSTER_HOME", str(bm_home() / "dagster"))
    os.makedirs(home, exist_ok=True)
    if not os.path.exists(os.path.join(home, "dagster.yaml")):
        shutil.copy(REPO_ROOT / "dagster.yaml", os.path.join(home, "dagster.yaml"))
    return DagsterInstance.get()


def run_all(start: str | None = None, end: str | None = None, verbose: bool = False, all_scores: bool = False) -> bool:
    """Materialize every asset: partitioned ones over [start, end] (default: every day) in one
    run, in dependency order; then the daily scores of the last day only (what a consumer reads
    next), or of every day of the range with `all_scores` (a second run). A failing asset skips
    only what depends on it (one task's failure leaves the other tasks running); the failures
    are summarised at the end. Without `verbose` the console shows one line per finished step
    and the results; the instance keeps all events."""
    from bm_assets.definitions import build_definitions

    defs = build_definitions()  # built now, so BM_HOME / BM_DATASET of this call apply
    instance = dagster_instance()
    assets = list(defs.assets)
    partitioned = [a for a in assets if a.partitions_def is not None]
    keys = partitioned[0].partitions_def.get_partition_keys() if partitioned else []
    first, last = start or keys[0], end or keys[-1]
    score_first = first if all_scores else last
    scores = [a for a in assets if any(k.to_user_string().endswith(SCORES_SUFFIX) for k in a.keys)]
    main_assets = [a for a in assets if a not in scores]

    def window(a: str, b: str) -> tuple[str, str, int]:
        return a, b, len([k for k in keys if a <= k <= b])

    labels = {**step_labels(main_assets, window(first, last)), **step_labels(scores, window(score_first, last))}
    handler = ProgressHandler(labels)
    began = time.monotonic()
    failures, reports, run_ids, ok = {}, [], [], True
    with nullcontext() if verbose else quiet_libraries():
        result = _execute(defs, main_assets, instance, (first, last), verbose, handler)
        failures.update(step_failures(result))
        reports = [
            str(m.metadata["report"].value)
            for e in result.get_asset_materialization_events()
            if "report" in (m := e.step_materialization_data.materialization).metadata
        ]
        run_ids.append(result.run_id)
        ok = result.success
        # a task's scores need its model from this run; the others are skipped, as a failed upstream step
        trained = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        ready = [a for a in scores if all(_model_of(k.to_user_string()) in trained for k in a.keys)]
        for a in scores:
            if a not in ready and not verbose:
                handler.line(a.node_def.name, "skipped: an upstream step failed")
        if ready:
            result = _execute(defs, ready, instance, (score_first, last), verbose, handler)
            failures.update(step_failures(result))
            run_ids.append(result.run_id)
            ok = ok and result.success
    tasks_file = tasks_path_for(dataset_path())
    headline = {t.name: t.metrics[0] for t in load_modeling_config(tasks_file).tasks} if tasks_file.exists() else {}
    for line in results_summary(reports, headline):
        print(line)
    for step, message in failures.items():
        print(f"FAILED {step}: {message}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} asset(s) failed; what depends on them was skipped, the rest ran", file=sys.stderr)
    print(
        f"{'finished' if ok else 'finished with failures'} in {time.monotonic() - began:.0f}s; "
        f"Dagster run{'s' if len(run_ids) > 1 else ''} {', '.join(run_ids)} in {instance.root_directory}"
    )
    return ok


SCORES_SUFFIX = "_scores"


def _model_of(scores_key: str) -> str:
    return scores_key[: -len(SCORES_SUFFIX)] + "_model"


def _execute(defs, assets, instance, window: tuple[str, str], verbose: bool, handler):
    """One in-process run of `assets` (the others as sources) over the partition range `window`."""
    from dagster import AssetSelection

    selection = AssetSelection.assets(*[k for a in assets for k in a.keys])
    job = Definitions(
        assets=list(defs.assets), resources=defs.resources, jobs=[define_asset_job(RUN_JOB, selection=selection)]
    ).resolve_job_def(RUN_JOB)
    run_config = {}
    if not verbose:  # a logger runs only when the run config names it
        job = job.with_logger_defs({"progress": progress_logger(handler)})
        run_config = {"loggers": {"progress": {}}}
    tags = {"dagster/asset_partition_range_start": window[0], "dagster/asset_partition_range_end": window[1]}
    return job.execute_in_process(run_config, instance=instance, tags=tags, raise_on_error=False)


def step_failures(result) -> dict[str, str]:
    """Step key -> the first line of its error, for every failed step of a run."""
    out: dict[str, str] = {}
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error is not None and error.cause is not None:  # the user's error, not Dagster's wrapper
                error = error.cause
            message = error.message.strip().splitlines()[0] if error else "failed"
            out[str(event.step_key)] = message
    return out


def validate_cli() -> int:
    """Check the dataset YAML and tasks.yaml against the data; print a short report."""
    from bm_assets.validate import validate_dataset

    report = validate_dataset(dataset_path())
    print(report.text())
    return 0 if report.ok else 1


def init_cli(
    events: list[str], clients: str | None, items: str | None, out: str | None, name: str | None, force: bool
) -> int:
    """Write a starter dataset.yaml and tasks.yaml guessed from the files; never overwrite
    a config by accident."""
    from pathlib import Path

    from bm_assets.starter import DATASET_FILE, TASKS_FILE, StarterError, write_starter

    out_dir = Path(out) if out else Path(events[0]).parent
    existing = [str(out_dir / f) for f in (DATASET_FILE, TASKS_FILE) if (out_dir / f).exists()]
    if existing and not force:
        print(f"{' and '.join(existing)} exist; pass --force to overwrite", file=sys.stderr)
        return 1
    try:
        dataset, tasks = write_starter(events, clients, items, out_dir, name)
    except StarterError as exc:
        print(f"init: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {dataset}\nwrote {tasks}")
    for line in dataset.read_text().splitlines():
        if line.startswith("# Left out: "):
            print(line.removeprefix("# "))
    print(f"next: check the guessed roles, then `BM_DATASET={dataset} bm-assets validate`, then `bm-assets run`")
    return 0


def export_profiles_cli(date: str, out: str, dtype: str, kind: str = "profile") -> int:
    """Write the profiles at the end of `date` (or, with kind=foundation, the foundation model's
    client embedding of them) as client_ids.npy + embeddings.npy under `out`."""
    from bm_assets.core.profiles import export_profiles
    from bm_assets.definitions import warehouse_from_env

    try:
        as_of = dt.date.fromisoformat(date)
    except ValueError:
        print(f"--date: expected YYYY-MM-DD, found {date!r}", file=sys.stderr)
        return 2
    transform = None
    if kind == "foundation":
        from bm_assets.assets.foundation import load_champion_foundation
        from bm_assets.config import load_dataset_config
        from bm_assets.core.foundation import client_embedding
        from bm_assets.resources import MLflowResource

        try:  # the champion: the version task models fine-tune from
            net, _ = load_champion_foundation(MLflowResource().client(), load_dataset_config(dataset_path()).name)
        except RuntimeError as exc:
            print(f"export-profiles: {exc}", file=sys.stderr)
            return 1
        transform = lambda x: client_embedding(net, x)  # noqa: E731
    with warehouse_from_env().open() as wh:
        ids_path, emb_path = export_profiles(wh, as_of, out, dtype=dtype, transform=transform)
    print(f"wrote {ids_path} and {emb_path}")
    return 0


def export_scores_cli(task_name: str, date: str, out: str, top_k: int | None) -> int:
    """Write one task's scores dated `date` to a Parquet file."""
    from bm_assets.core.scores import ScoresNotFoundError, export_scores
    from bm_assets.definitions import warehouse_from_env

    try:
        as_of = dt.date.fromisoformat(date)
    except ValueError:
        print(f"--date: expected YYYY-MM-DD, found {date!r}", file=sys.stderr)
        return 2
    tasks_file = tasks_path_for(dataset_path())
    tasks = {t.name: t for t in load_modeling_config(tasks_file).tasks} if tasks_file.exists() else {}
    if task_name not in tasks:
        print(
            f"--task: {task_name!r} is not a task of {tasks_file} (tasks: {', '.join(tasks) or 'none'})",
            file=sys.stderr,
        )
        return 2
    try:
        with warehouse_from_env().open() as wh:
            path, rows = export_scores(wh, tasks[task_name], as_of, out, top_k)
    except (ScoresNotFoundError, ValueError) as exc:
        print(f"export-scores: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {rows} rows of {task_name} scores dated {as_of} to {path}")
    return 0


def explain_cli(task: str, client: str, date: str, label: str | None, model: str, top: int) -> int:
    """Print a client's score on a day and its top reasons."""
    from bm_assets.definitions import warehouse_from_env
    from bm_assets.explanations import explain_client
    from bm_assets.resources import DatasetResource

    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        print(f"--date: expected YYYY-MM-DD, found {date!r}", file=sys.stderr)
        return 2
    try:
        explanation = explain_client(
            DatasetResource(config_path=str(dataset_path())), warehouse_from_env(), task, client, day, label, model, top
        )
    except (LookupError, FileNotFoundError) as exc:
        print(f"explain: {exc}", file=sys.stderr)
        return 1
    print("\n".join(explanation.lines()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bm-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialize every asset on the configured dataset")
    run.add_argument("--start", help="first partition (YYYY-MM-DD); default the dataset's first day")
    run.add_argument("--end", help="last partition (YYYY-MM-DD); default the dataset's last day")
    run.add_argument("--verbose", action="store_true", help="Dagster's full event log instead of progress lines")
    run.add_argument(
        "--all-scores",
        action="store_true",
        help="score every day of the range (default: the daily scores of its last day only)",
    )
    sub.add_parser("validate", help="check the dataset YAML and tasks.yaml (BM_DATASET) against the data, in seconds")
    init = sub.add_parser("init", help="write a starter dataset.yaml and tasks.yaml guessed from data files")
    init.add_argument(
        "--events",
        action="extend",
        nargs="+",
        required=True,
        help="event files or globs (repeatable; a folder's files: `--events data/*` also sorts out client and "
        "item tables among them)",
    )
    init.add_argument("--clients", help="a client attribute file")
    init.add_argument("--items", help="an item attribute file")
    init.add_argument("--out", help="folder for the YAML files; default the first events file's folder")
    init.add_argument("--name", help="the dataset's name; default the folder's name")
    init.add_argument("--force", action="store_true", help="overwrite existing YAML files")
    export = sub.add_parser("export-profiles", help="write the behavioral profiles of a date as .npy files")
    export.add_argument("--date", required=True, help="profiles at the end of this day (YYYY-MM-DD)")
    export.add_argument("--out", required=True, help="folder for client_ids.npy and embeddings.npy")
    export.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    export.add_argument(
        "--kind",
        choices=["profile", "foundation"],
        default="profile",
        help="profile: the behavioral profile (sketches and counters); foundation: the foundation model's "
        "client embedding of it (its encoder output, e.g. 256 floats, then the profile's dense entries "
        "standardised as the network reads them)",
    )
    explain = sub.add_parser("explain", help="why a client got its score on a day: the top reasons")
    explain.add_argument("--task", required=True, help="a task of tasks.yaml")
    explain.add_argument("--client", required=True, help="the client id")
    explain.add_argument("--date", required=True, help="the score's date (YYYY-MM-DD): events up to its end")
    explain.add_argument("--label", help="multilabel/multiclass: the label to explain; default the top-scored")
    explain.add_argument(
        "--model",
        default="champion",
        choices=["champion", "finetuned", "scratch", "lightgbm"],
        help="champion (default): the registered version the daily scores use; or a model of the latest training",
    )
    explain.add_argument("--top", type=int, default=10, help="how many reasons (default 10)")
    scores = sub.add_parser("export-scores", help="write one task's scores of a date to a Parquet file")
    scores.add_argument("--task", required=True, help="a task name from tasks.yaml")
    scores.add_argument("--date", required=True, help="scores as of the end of this day (YYYY-MM-DD)")
    scores.add_argument("--out", required=True, help="the Parquet file to write")
    scores.add_argument("--top-k", type=int, help="recommendation: items per client (default: the task's top_k, 10)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of a config error")
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except (DatasetConfigError, TaskConfigError) as exc:
        if args.debug:
            raise
        print(f"config error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "validate":
        return validate_cli()
    if args.command == "run":
        return 0 if run_all(args.start, args.end, args.verbose, args.all_scores) else 1
    if args.command == "init":
        return init_cli(args.events, args.clients, args.items, args.out, args.name, args.force)
    if args.command == "explain":
        return explain_cli(args.task, args.client, args.date, args.label, args.model, args.top)
    if args.command == "export-profiles":
        return export_profiles_cli(args.date, args.out, args.dtype, args.kind)
    if args.command == "export-scores":
        return export_scores_cli(args.task, args.date, args.out, args.top_k)
    return 2


if __name__ == "__main__":
    sys.exit(main())
