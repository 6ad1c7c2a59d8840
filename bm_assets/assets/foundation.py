"""foundation_model: self-supervised pretraining on the behavioral profiles, tracked in MLflow."""

import dataclasses
import datetime as dt
from collections.abc import Iterator

import mlflow
import torch
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from bm_assets.core.artifacts import load_registered, log_network
from bm_assets.core.examples import CachedProfiles, foundation_examples, layout_of
from bm_assets.core.foundation import train_foundation
from bm_assets.core.profiles import profiles_at_dates
from bm_assets.core.registry import champion, register_and_promote
from bm_assets.core.tasks import ModelingConfig, events_end, load_modeling_config, tasks_path_for
from bm_assets.resources import ArtifactStore, DatasetResource, MLflowResource, WarehouseResource

MODELS_GROUP = "models"


def foundation_name(dataset_name: str) -> str:
    return f"{dataset_name}_foundation"


def load_champion_foundation(client: mlflow.MlflowClient, dataset_name: str) -> tuple[torch.nn.Module, str]:
    """The champion foundation network and its version: task models fine-tune from it."""
    name = foundation_name(dataset_name)
    version = champion(client, name)
    if version is None:
        raise RuntimeError(f"registered model {name} has no champion: materialize foundation_model first")
    net, _ = load_registered(client, name, str(version.version))
    return net, str(version.version)


def load_foundation_version(client: mlflow.MlflowClient, dataset_name: str, version: str) -> torch.nn.Module:
    """One registered version of the foundation network (the one a task model was fine-tuned from)."""
    net, _ = load_registered(client, foundation_name(dataset_name), version)
    return net


def modeling_config(dataset: DatasetResource) -> ModelingConfig:
    return load_modeling_config(tasks_path_for(dataset.config_path))


@asset(
    deps=["sketch_coders", "behavioral_profiles"],
    group_name=MODELS_GROUP,
    description="Profile at split date T -> per-column sketch of the client's events in [T, T+h); "
    "no task label is used. Each training registers a new version in MLflow; it becomes the `champion` "
    "(the one task models start from) when its validation cross-entropy is at most the champion's. "
    "Skipped (with the task assets after it) while the events do not reach the end of the "
    "validation window.",
    output_required=False,
)
def foundation_model(
    context: AssetExecutionContext,
    dataset: DatasetResource,
    warehouse: WarehouseResource,
    mlflow_tracking: MLflowResource,
    artifacts: ArtifactStore,
) -> Iterator[MaterializeResult]:
    cfg = dataset.load()
    mcfg = modeling_config(dataset)
    f = mcfg.foundation
    with warehouse.open(sandboxed=True) as wh:
        last = events_end(wh)
        needed = cfg.temporal.test_start - dt.timedelta(days=1)
        if last is None or last < needed:
            # e.g. `bm-assets run` over a few days: there is nothing to pretrain on yet.
            context.log.warning(
                f"events_denormalized ends at {last}; the foundation model needs events through the "
                f"validation window (to {needed}): skipped, and the task assets after it"
            )
            return
        coders = artifacts.store().load_coders()
        data = foundation_examples(wh, cfg, mcfg, coders, CachedProfiles(lambda ds: profiles_at_dates(wh, coders, ds)))
    (ex_tr, x_tr, y_tr), (ex_va, x_va, y_va) = data["train"], data["validation"]
    train_cfg = f.train_config(mcfg.evaluation.seed)
    with mlflow_tracking.start_run("foundation_model", tags={"dataset": cfg.name, "stage": "pretraining"}) as run:
        mlflow.log_params(
            {
                **f.model_dump(exclude={"eligible"}),
                "active_days": f.eligible.active_days,
                "seed": train_cfg.seed,
                "n_train": len(ex_tr),
                "n_validation": len(ex_va),
                "input_dim": x_tr.shape[1],
                "columns": ",".join(coders),
                "train_dates": f"{min(ex_tr['t'])}..{max(ex_tr['t'])}",
                "validation_dates": f"{min(ex_va['t'])}..{max(ex_va['t'])}",
            }
        )

        def log_epoch(row: dict) -> None:
            context.log.info(f"foundation epoch {row['epoch']}: {row}")
            mlflow_tracking.log_metrics(
                {
                    "train_loss": row["train_loss"],
                    "val_cross_entropy": -row["val_score"],
                    "seconds": row["seconds"],
                },
                step=row["epoch"],
            )

        result = train_foundation(
            x_tr, y_tr, x_va, y_va, layout_of(coders), f.hidden, f.layers, f.dropout, train_cfg, log_epoch
        )
        mlflow_tracking.log_metrics(
            {
                "best_val_cross_entropy": -result.best_score,
                "best_epoch": result.best_epoch,
                "train_seconds": result.seconds,
            }
        )
        source = log_network(result.net, "model")
        window = f"{cfg.data_start}..{needed}"  # through the validation window, no test-window event
        promotion = register_and_promote(
            mlflow_tracking.client(),
            foundation_name(cfg.name),
            source,
            description=f"Behavioral foundation model of dataset {cfg.name}: from a client's profile at a "
            f"split date T, predicts the sketch of their events in [T, T+{f.horizon_days}d). Self-supervised "
            f"(no task label), trained on events {window}; task models start from its weights.",
            tags={
                "dataset": cfg.name,
                "data_window": window,
                "train_dates": f"{min(ex_tr['t'])}..{max(ex_tr['t'])}",
                "validation_dates": f"{min(ex_va['t'])}..{max(ex_va['t'])}",
                "val_cross_entropy": f"{-result.best_score:.4f}",
                "dagster_run_id": context.run_id,
            },
            metric="cross_entropy",
            score=-result.best_score,
        )
        link = mlflow_tracking.run_link(run)
    yield MaterializeResult(
        metadata={
            "mlflow_run_id": run.info.run_id,
            "mlflow_run": link,
            "model_uri": source,
            "registered_model": promotion.registered_model,
            "registered_version": promotion.version,
            "champion_version": promotion.champion_version,
            "promoted": promotion.promoted,
            "promotion_reason": promotion.reason,
            "best_epoch": result.best_epoch,
            "val_cross_entropy": -result.best_score,
            "train_seconds": round(result.seconds, 2),
            "n_train": len(ex_tr),
            "n_validation": len(ex_va),
            "history": MetadataValue.json([dataclasses.asdict(train_cfg)] + result.history),
        }
    )
