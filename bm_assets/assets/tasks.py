"""Per-task assets, generated from tasks.yaml: `<task>_model` (fine-tuned, scratch, LightGBM and
prior models, selected on the validation window), `<task>_evaluation` (test window and held-out
clients, the report JSON and curves) and `<task>_scores` (daily scores of the model the training picked
on validation, registered in MLflow)."""

import base64
import datetime as dt
import time

import mlflow
import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AutomationCondition,
    BackfillPolicy,
    DailyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from bm_assets.assets.foundation import load_champion_foundation, load_foundation_version, modeling_config
from bm_assets.core.artifacts import SavedTask, ServedModel, Store, load_registered_model, log_served
from bm_assets.core.evaluation import (
    ROLES,
    ModelResult,
    TaskData,
    evaluate,
    intervals_on_test,
    learning_curve,
    rebuild,
    run_task,
)
from bm_assets.core.examples import SPLITS, CachedProfiles, task_examples
from bm_assets.core.explain import (
    drivers_markdown_all,
    drivers_png,
    item_rollups,
    task_drivers,
)
from bm_assets.core.kinds import LabelSpace, kind_of
from bm_assets.core.profiles import iter_profiles, profiles_at_dates, read_layout_of
from bm_assets.core.registry import champion, register_and_promote
from bm_assets.core.report import build_report, curves_png, intervals_markdown, metrics_markdown, write_report
from bm_assets.core.serving import day_inputs, has_reasons, score_reasons, served_choice, served_task_data
from bm_assets.core.tasks import ModelingConfig, TaskSpec, check_task_sql
from bm_assets.partitions import window_of
from bm_assets.resources import ArtifactStore, DatasetResource, MLflowResource, WarehouseResource

TASKS_GROUP = "tasks"
SCORE_COLUMNS = ("client_id", "score_date", "label", "score")


def _load_data(
    dataset: DatasetResource,
    warehouse: WarehouseResource,
    store: Store,
    task: TaskSpec,
    inputs_for: tuple[str, ...] = SPLITS,
) -> tuple:
    cfg = dataset.load()
    mcfg = modeling_config(dataset)
    coders = store.load_coders()
    with warehouse.open(sandboxed=True) as wh:
        check_task_sql(wh, ModelingConfig(tasks=[task], config_file=mcfg.config_file))
        data, frames = task_examples(
            wh, cfg, mcfg, task, coders, CachedProfiles(lambda ds: profiles_at_dates(wh, coders, ds)), inputs_for
        )
    return cfg, mcfg, data, frames


def _md_image(png: bytes, alt: str = "curves") -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def _drivers(context, dataset, warehouse, store: Store, task: TaskSpec, data: TaskData, test: pd.DataFrame, bundle):
    """Global drivers of the fine-tuned network and of LightGBM on test examples (None where
    the task type has no per-client score to explain, or explain_examples is 0)."""
    mcfg = modeling_config(dataset)
    if not kind_of(task).explainable or "finetuned" not in bundle or mcfg.evaluation.explain_examples == 0:
        return None
    start = time.perf_counter()
    coders = store.load_coders()
    gbdt = bundle.get("lightgbm", {}).get("artifact")
    with warehouse.open(sandboxed=True) as wh:
        drivers = task_drivers(
            wh,
            data,
            test,
            bundle["finetuned"]["artifact"],
            gbdt,
            coders,
            read_layout_of(wh, coders),
            item_rollups(dataset.load(), coders),
            mcfg.evaluation.explain_examples,
            mcfg.evaluation.explain_labels,
            mcfg.evaluation.seed,
        )
    context.log.info(f"drivers of {drivers['examples']} test examples in {time.perf_counter() - start:.1f}s")
    return drivers


def build_task_assets(mcfg: ModelingConfig, partitions: DailyPartitionsDefinition) -> list[AssetsDefinition]:
    """Three assets per configured task; a new task in tasks.yaml is a new set of assets."""
    return [a for t in mcfg.tasks for a in (_model_asset(t), _evaluation_asset(t), _scores_asset(t, partitions))]


def _model_asset(task: TaskSpec) -> AssetsDefinition:
    @asset(
        name=f"{task.name}_model",
        deps=["foundation_model"],
        group_name=TASKS_GROUP,
        description=f"{task.type} task, {task.horizon_days}-day horizon: {task.description} Fine-tuned "
        "from the champion foundation model, the same network from scratch, LightGBM on aggregates and a prior "
        "baseline, trained on split dates whose label windows end before the training cutoff. Each training "
        f"registers a new version of the MLflow model `<dataset>_{task.name}` holding the model picked on the "
        f"validation window (any of them; with `explain: true`, one with per-client reasons); it becomes the "
        "`champion` (the "
        f"version {task.name}_scores uses) only if its validation {task.metrics[0]} is at least as good as the "
        "champion's.",
    )
    def task_model(
        context: AssetExecutionContext,
        dataset: DatasetResource,
        warehouse: WarehouseResource,
        mlflow_tracking: MLflowResource,
        artifacts: ArtifactStore,
    ) -> MaterializeResult:
        store = artifacts.store()
        cfg, mcfg, data, frames = _load_data(dataset, warehouse, store, task)
        space = LabelSpace(data.labels, data.item_codes, data.item_log_prior)
        client = mlflow_tracking.client()
        foundation, foundation_version = load_champion_foundation(client, cfg.name)
        with mlflow_tracking.start_run(f"{task.name}_model", tags={"task": task.name, "dataset": cfg.name}) as run:
            mlflow.log_params(
                {
                    "task": task.name,
                    "type": task.type,
                    "horizon_days": task.horizon_days,
                    "target": task.target.model_dump_json(),
                    "labels": len(data.labels or []),
                    "foundation_version": foundation_version,
                    **{f"n_{r}": len(f) for r, f in frames.items()},
                    **mcfg.evaluation.model_dump(exclude={"label_fractions"}),
                }
            )

            def log_epoch(name: str, row: dict) -> None:
                mlflow_tracking.log_metrics(
                    {f"{name}_train_loss": row["train_loss"], f"{name}_val_score": row["val_score"]},
                    step=row["epoch"],
                )

            result = run_task(data, foundation, mcfg.foundation, mcfg.evaluation, on_epoch=log_epoch)
            for name, row in result.report.items():
                mlflow_tracking.log_metrics({f"{name}_{k}": v for k, v in row.items()})
            # the validation pick, with what it reads besides the profile: scoring reads it back
            artifacts_by_name = {n: m.artifact for n, m in result.models.items()}
            served_name = served_choice(task, result.report, artifacts_by_name)
            served = ServedModel(
                served_name,
                result.models[served_name].artifact,
                space,
                list(mcfg.evaluation.feature_windows_days),
                data.feature_tops,
                data.feature_names,
                data.item_stats,
            )
            source = log_served(result.models[served_name], served)
            metric = task.metrics[0]
            window = f"{cfg.data_start}..{cfg.temporal.test_start - dt.timedelta(days=1)}"
            promotion = register_and_promote(
                client,
                task_model_name(cfg.name, task),
                source,
                description=f"{task.type} task {task.name} of dataset {cfg.name} ({task.horizon_days}-day horizon): "
                f"{task.description} Serves {served_name}, the best model of its training on the validation "
                f"window, in {task.name}_scores while this version is the champion; the networks are fine-tuned "
                f"from foundation version {foundation_version}.",
                tags={
                    "dataset": cfg.name,
                    "task": task.name,
                    "type": task.type,
                    "model": served_name,
                    "foundation_version": foundation_version,
                    "data_window": window,
                    "dagster_run_id": context.run_id,
                },
                metric=metric,
                score=result.report[served_name].get(f"validation_{metric}", float("nan")),
            )
            registry = {**promotion.as_dict(), "served_model": served_name}
            mlflow.log_dict(registry, "promotion.json")
            saved = store.save_task(task.name, result.models, registry, space)
            mlflow.log_artifacts(str(saved), artifact_path="bundle")
            link = mlflow_tracking.run_link(run)
        return MaterializeResult(
            metadata={
                "mlflow_run_id": run.info.run_id,
                "mlflow_run": link,
                "validation": MetadataValue.md(metrics_markdown(result.report, served_name)),
                **_promotion_metadata(registry),
                "foundation_version": foundation_version,
                **{f"n_{r}": len(f) for r, f in frames.items()},
                "train_sampled_from": int(frames["train"].attrs.get("sampled_from", len(frames["train"]))),
            }
        )

    return task_model


def _evaluation_asset(task: TaskSpec) -> AssetsDefinition:
    @asset(
        name=f"{task.name}_evaluation",
        deps=[f"{task.name}_model"],
        group_name=TASKS_GROUP,
        description=f"{task.name} on the test window (same clients, their future) and on held-out clients; "
        f"writes `$BM_HOME/reports/{task.name}.json`.",
    )
    def task_evaluation(
        context: AssetExecutionContext,
        dataset: DatasetResource,
        warehouse: WarehouseResource,
        mlflow_tracking: MLflowResource,
        artifacts: ArtifactStore,
    ) -> MaterializeResult:
        store = artifacts.store()
        saved: SavedTask = store.load_task(task.name)
        bundle, promotion = saved.models, saved.promotion
        with_curve = task.learning_curve and "finetuned" in bundle
        # the training split's inputs only for the learning curve, the one thing here fitted on them
        inputs_for = SPLITS if with_curve else ROLES
        cfg, mcfg, data, frames = _load_data(dataset, warehouse, store, task, inputs_for)
        models = {
            n: ModelResult(n, rebuild(data, n, b["artifact"]), b["seconds"], b["epochs"], b["history"])
            for n, b in bundle.items()
        }
        with mlflow_tracking.start_run(f"{task.name}_evaluation", tags={"task": task.name, "dataset": cfg.name}) as run:
            test_predictions: dict = {}  # for the bootstrap below
            metrics = evaluate(data, models, test_predictions=test_predictions)
            curve: list[dict] = []
            curve_foundation = None
            if with_curve:
                # fine-tuned at each fraction from the foundation version the task model started
                # from: never from the task's own network, which has seen every training label;
                # at 100% the curve is the task model's own models, already fitted from it
                start = time.perf_counter()
                client = mlflow_tracking.client()
                version = client.get_model_version(promotion["registered_model"], promotion["version"])
                curve_foundation = version.tags["foundation_version"]
                foundation = load_foundation_version(client, cfg.name, curve_foundation)
                curve = learning_curve(data, foundation, mcfg.foundation, mcfg.evaluation, fitted_on_all=models)
                context.log.info(f"learning curve in {time.perf_counter() - start:.1f}s")
            time_curve = {n: m.history for n, m in models.items() if m.history}
            ev = mcfg.evaluation
            intervals = intervals_on_test(data, models, ev.bootstrap, ev.seed, test_predictions)
            test_predictions.clear()  # ranked items: one score per candidate, not kept past the bootstrap
            report = build_report(
                task, cfg.temporal, metrics, {r: len(f) for r, f in frames.items()}, curve, time_curve, intervals
            )
            report["registry"] = promotion  # which version this is, whether it was promoted and why
            report["learning_curve_foundation_version"] = curve_foundation
            path = write_report(report, store.reports_dir)
            for name, row in metrics.items():
                mlflow_tracking.log_metrics({f"{name}_{k}": v for k, v in row.items()})
            meta = {
                "report": str(path),
                "mlflow_run_id": run.info.run_id,
                "mlflow_run": mlflow_tracking.run_link(run),
                "metrics": MetadataValue.md(metrics_markdown(metrics, (report.get("selected") or {}).get("model"))),
                "intervals": MetadataValue.md(intervals_markdown(task, report.get("intervals"))),
                **_promotion_metadata(promotion),
                **{f"n_{r}": len(f) for r, f in frames.items()},
            }
            drivers = _drivers(context, dataset, warehouse, store, task, data, frames["test"], bundle)
            if drivers is not None:
                report["drivers"] = {k: v for k, v in drivers.items() if k != "frames"}
                mlflow_tracking.log_metrics(
                    {
                        "explain_completeness_gap": drivers["completeness_gap"],
                        "explain_collision_share": drivers["collision_share"],
                    }
                )
                write_report(report, store.reports_dir)
                meta["drivers"] = MetadataValue.md(drivers_markdown_all(drivers))
                first = next(iter(drivers["frames"]), None)
                chart = drivers_png(drivers["frames"][first], f"{task.name}: drivers of {first}") if first else None
                if chart is not None:
                    chart_path = path.with_name(f"{task.name}_drivers.png")
                    chart_path.write_bytes(chart)
                    mlflow.log_artifact(str(chart_path))
                    meta["drivers_chart"] = MetadataValue.md(_md_image(chart, "drivers"))
            else:
                meta["drivers"] = MetadataValue.text(
                    "not computed: explanations cover binary, multilabel, multiclass and regression tasks "
                    "(and need evaluation.explain_examples > 0)"
                )
            png = curves_png(task, curve, time_curve)
            if png is not None:
                png_path = path.with_suffix(".png")
                png_path.write_bytes(png)
                mlflow.log_artifact(str(png_path))
                meta["curves"] = MetadataValue.md(_md_image(png))
            mlflow.log_artifact(str(path))
            if not curve:
                meta["learning_curve"] = MetadataValue.text(
                    "not computed for this task (set `learning_curve: true` in tasks.yaml)"
                )
            else:
                meta["learning_curve"] = MetadataValue.md(
                    metrics_markdown(
                        {
                            f"{r['model']} @{r['fraction']:.0%}": {
                                "validation": r["validation"],
                                "test": r["test"],
                                "n_train": r["n_train"],
                            }
                            for r in curve
                        }
                    )
                )
        return MaterializeResult(metadata=meta)

    return task_evaluation


def _scores_asset(task: TaskSpec, partitions: DailyPartitionsDefinition) -> AssetsDefinition:
    @asset(
        name=f"{task.name}_scores",
        deps=[f"{task.name}_model", "behavioral_profiles"],
        group_name=TASKS_GROUP,
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        # The latest day is scored again when its profiles land or the task model is retrained.
        automation_condition=AutomationCondition.eager(),
        description=f"Daily {task.name} scores of the champion version of the registered task model for every "
        "client with a profile: the row dated D predicts [D+1, D+1+h) from events up to the end of D, and names "
        "the model version that scored it. Days before the training cutoff (the model's training period) are "
        "not scored.",
    )
    def task_scores(
        context: AssetExecutionContext,
        dataset: DatasetResource,
        warehouse: WarehouseResource,
        mlflow_tracking: MLflowResource,
        artifacts: ArtifactStore,
    ) -> MaterializeResult:
        client = mlflow_tracking.client()
        registered = task_model_name(dataset.load().name, task)
        version = champion(client, registered)
        if version is None:
            raise RuntimeError(f"registered model {registered} has no champion: materialize {task.name}_model first")
        # versions registered before a task served its validation pick hold a network named by tag
        named = version.tags.get("model", version.tags.get("network", "finetuned"))
        served = load_registered_model(client, registered, str(version.version), named)
        if task.explain and not has_reasons(served.artifact):
            raise RuntimeError(
                f"version {version.version} of {registered} serves {served.name}, which has no per-client reasons, "
                f"and {task.name} has explain: true: materialize {task.name}_model again"
            )
        ev = modeling_config(dataset).evaluation
        start, end = window_of(context)
        table = f"{task.name}_scores"
        frames = []
        with warehouse.open(sandboxed=True) as wh:
            labels = served.label_space.labels  # the labels the model was trained on, saved with it
            predict = rebuild(served_task_data(task, served), served.name, served.artifact)
            # Days before the training cutoff are the model's own training period: scoring them
            # would only cost time (a whole-history backfill), so they are left empty.
            first_scored = max(start, dataset.load().temporal.training_cutoff)
            days = [first_scored + dt.timedelta(days=i) for i in range((end - first_scored).days)]
            coders = artifacts.store().load_coders()
            layout = read_layout_of(wh, coders) if task.explain else None
            rollups = item_rollups(dataset.load(), coders)
            lists = dataset.load().list_columns()
            reason_frames = []
            for day, ids, x in iter_profiles(wh, coders, days):  # one pass over the window, a day at a time
                if len(ids):
                    inputs = day_inputs(wh, task, served, ev, ids, x, day, lists)
                    pred = predict(inputs)
                    frames.append(kind_of(task).score_frame(task, labels, ids, pred, day))
                    if layout is not None:
                        reason_frames.append(
                            _reason_frame(wh, task, served, ids, x, inputs, pred, day, coders, layout, rollups)
                        )
            scores = pd.concat(frames) if frames else pd.DataFrame({c: [] for c in SCORE_COLUMNS})
            scores["model_version"] = str(version.version)
            wh.insert_df(
                table,
                scores,
                before=[
                    f"DELETE FROM {wh.table(table)} WHERE score_date >= DATE '{start}' AND score_date < DATE '{end}'"
                ],
            )
            if task.explain:
                reasons = (
                    pd.concat(reason_frames)
                    if reason_frames
                    else pd.DataFrame(
                        {
                            "client_id": [],
                            "score_date": [],
                            "label": [],
                            "rank": [],
                            "reason": [],
                            "direction": [],
                            "share": [],
                        }
                    )
                )
                wh.insert_df(
                    f"{task.name}_score_reasons",
                    reasons,
                    before=[
                        f"DELETE FROM {wh.table(task.name + '_score_reasons')} "
                        f"WHERE score_date >= DATE '{start}' AND score_date < DATE '{end}'"
                    ],
                )
        return MaterializeResult(
            metadata={
                "dagster/row_count": len(scores),
                "registered_model": registered,
                "model_version": str(version.version),
                "served_model": served.name,
                "promotion_reason": version.tags.get("promotion_reason", ""),
                "window": f"{start} .. {end} (exclusive)",
                "scored_from": str(first_scored),
            }
        )

    return task_scores


def task_model_name(dataset_name: str, task: TaskSpec) -> str:
    """The registered model of a task in MLflow."""
    return f"{dataset_name}_{task.name}"


def _promotion_metadata(promotion: dict) -> dict:
    return {
        "registered_model": promotion["registered_model"],
        "registered_version": promotion["version"],
        "champion_version": promotion["champion_version"],
        "promoted": promotion["promoted"],
        "promotion_reason": promotion["reason"],
        # the model this version serves (bundles saved before versions served their pick: a network)
        "served_model": promotion.get("served_model", "finetuned"),
    }


#: Clients explained per attribution pass (bounds memory and the size of the history query).
_EXPLAIN_CHUNK = 2000


def _reason_frame(wh, task, served, ids, x, inputs, pred, day, coders, layout, rollups) -> pd.DataFrame:
    """The top 3 reasons of each client's score on `day` by the served model (multilabel and
    multiclass: of its top-scored label), from events up to the end of `day` only."""
    labels = served.label_space.labels
    target = None if pred.ndim == 1 else pred.argmax(1)
    out = []
    for i in range(0, len(ids), _EXPLAIN_CHUNK):
        sl = slice(i, i + _EXPLAIN_CHUNK)
        rows = np.arange(len(ids))[sl]
        top = score_reasons(
            wh,
            task,
            served,
            ids[sl],
            x[sl],
            inputs.subset(rows),
            None if target is None else target[sl],
            day,
            coders,
            layout,
            rollups,
            x,
            inputs.f,
        )
        r = top["row"].to_numpy(dtype=np.int64)
        label = task.name if target is None else np.asarray(labels)[target[sl]][r]
        out.append(
            pd.DataFrame({"client_id": ids[sl][r], "score_date": day, "label": label}).join(
                top.drop(columns="row").reset_index(drop=True)
            )
        )
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()
