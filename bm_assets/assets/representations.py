"""Representation assets: temporal_graph -> entity_embeddings -> sketch_coders ->
behavioral_profiles (daily, incremental). Graph, embeddings and coders see only events before
the dataset's training cutoff; profiles of day D see only events up to D."""

import datetime as dt
import time

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AutomationCondition,
    BackfillPolicy,
    DailyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    TimeWindowPartitionMapping,
    asset,
)

from bm_assets.assets.metadata import md_table
from bm_assets.core.embeddings import build_entity_embeddings
from bm_assets.core.graph import build_temporal_graph, graph_rows
from bm_assets.core.profiles import ProfileLayout, batch_check, build_profiles_window
from bm_assets.core.sketches import coders_fingerprint, fit_coders
from bm_assets.core.sql import BEHAVIORAL_PROFILES
from bm_assets.core.tasks import exact_head_values
from bm_assets.partitions import window_of
from bm_assets.resources import ArtifactStore, DatasetResource, WarehouseResource

GROUP = "representations"


@asset(
    deps=["events_denormalized"],
    group_name=GROUP,
    description="Hyperedges (per client and window, per basket) of the events before the training "
    "cutoff: one row per (hyperedge, node) with its events; nodes (column, entity) and hyperedges are "
    "numbered in temporal_graph_nodes and temporal_graph_edges. Built by SQL in the warehouse.",
)
def temporal_graph(dataset: DatasetResource, warehouse: WarehouseResource) -> MaterializeResult:
    cfg = dataset.load()
    rep = cfg.representation
    with warehouse.open() as wh:
        build = build_temporal_graph(wh, rep.graph, cfg.data_start, cfg.temporal.training_cutoff, cfg.list_columns())
        preview = graph_rows(wh, 10)
    return MaterializeResult(
        metadata={
            "dagster/row_count": build.rows,
            "cutoff": str(build.cutoff),
            "nodes_per_column": MetadataValue.json(build.nodes),
            "edges_per_kind": MetadataValue.json(build.edges),
            "nodes": sum(build.nodes.values()),
            "edges": sum(build.edges.values()),
            "basket_column": str(build.basket_column),
            "preview": md_table(preview),
        }
    )


@asset(
    deps=[temporal_graph, "product_catalog"],
    group_name=GROUP,
    description="Cleora (pycleora) embeddings per entity column; catalogue items unseen before the "
    "cutoff embedded from their attributes. Files under $BM_HOME/artifacts/entity_embeddings.",
)
def entity_embeddings(
    dataset: DatasetResource, warehouse: WarehouseResource, artifacts: ArtifactStore
) -> MaterializeResult:
    cfg = dataset.load()
    rep = cfg.representation
    t0 = time.perf_counter()
    with warehouse.open() as wh:
        embeddings = build_entity_embeddings(wh, rep, cfg.list_columns())
    seconds = time.perf_counter() - t0
    directory = artifacts.store().save_embeddings(
        embeddings,
        {
            "cutoff": cfg.temporal.training_cutoff,
            "cleora": rep.cleora.model_dump(),
            "seed": rep.seed,
        },
    )
    summary = pd.DataFrame(
        [
            {
                "column": c,
                "entities": len(e.ids),
                "inductive": int(e.inductive.sum()),
                "dim": e.vectors.shape[1],
            }
            for c, e in embeddings.items()
        ]
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(directory)),
            "columns": md_table(summary),
            "entities": int(summary["entities"].sum()),
            "seconds": round(seconds, 2),
            "cleora": MetadataValue.json(rep.cleora.model_dump()),
        }
    )


@asset(
    deps=[entity_embeddings],
    group_name=GROUP,
    description="EMDE density-aware LSH per sketch column (bucket codes of every entity, with the "
    "projection). Files under $BM_HOME/artifacts/sketch_coders.",
)
def sketch_coders(
    dataset: DatasetResource, warehouse: WarehouseResource, artifacts: ArtifactStore
) -> MaterializeResult:
    cfg = dataset.load()
    rep = cfg.representation
    store = artifacts.store()
    embeddings = store.load_embeddings()
    with warehouse.open() as wh:  # the most frequent values before the cutoff
        heads = exact_head_values(
            wh, rep.sketch.exact_head_columns or [], cfg.temporal.training_cutoff, rep.sketch.width
        )
    coders = fit_coders(embeddings, rep.sketch_columns, rep.sketch.depth, rep.sketch.bits, rep.seed, heads)
    fingerprint = coders_fingerprint(coders)
    directory = store.save_coders(
        coders,
        {
            "cutoff": cfg.temporal.training_cutoff,
            "fingerprint": fingerprint,
            "seed": rep.seed,
        },
    )
    summary = pd.DataFrame(
        [
            {
                "column": c,
                "entities": len(k.entity_ids),
                "depth": k.depth,
                "width": k.width,
                "buckets_used_level0": len(np.unique(k.codes[:, 0])),
                "largest_bucket_share_level0": float(np.bincount(k.codes[:, 0]).max() / max(len(k.codes), 1)),
                "exact_first_level": c in heads,
            }
            for c, k in coders.items()
        ]
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(directory)),
            "fingerprint": fingerprint,
            "coders": md_table(summary),
        }
    )


def build_representation_assets(partitions: DailyPartitionsDefinition) -> list:
    """The graph, embeddings and coders (one build each), and the daily profiles on `partitions`."""

    @asset(
        partitions_def=partitions,
        deps=[
            "events_denormalized",
            sketch_coders,
            AssetDep(
                "behavioral_profiles",
                partition_mapping=TimeWindowPartitionMapping(start_offset=-1, end_offset=-1),
            ),
        ],
        group_name=GROUP,
        backfill_policy=BackfillPolicy.single_run(),
        # A newly landed day of events_denormalized requests the same day here (the latest day only,
        # once its deps exist: the previous day's profiles included).
        automation_condition=AutomationCondition.eager(),
        check_specs=[
            AssetCheckSpec(
                "incremental_equals_batch",
                asset="behavioral_profiles",
                description="On the window's last day, the profiles of up to 50 clients active that day "
                "equal a from-scratch computation over their whole history (relative difference < 1e-4).",
            )
        ],
        description="Per client, EMDE sketches decayed at each half-life plus recency/frequency/value, at "
        "the end of each day: yesterday's state decayed by a day plus today's events. Stored sparse, one "
        "row per client (its state as of its last event day, decayed on read); a window is written in one "
        "transaction. Past days are replayed from the events (iter_profiles).",
    )
    def behavioral_profiles(
        context: AssetExecutionContext, dataset: DatasetResource, warehouse: WarehouseResource, artifacts: ArtifactStore
    ):
        cfg = dataset.load()
        half_lives = cfg.representation.profile.half_lives_days
        start, end = window_of(context)
        last_day = end - dt.timedelta(days=1)
        coders = artifacts.store().load_coders()
        t0 = time.perf_counter()
        with warehouse.open() as wh:
            build = build_profiles_window(
                wh,
                coders,
                half_lives,
                start,
                end,
                cfg.data_start,
                coders_fingerprint(coders),
                memory_mb=cfg.representation.profile.memory_mb,
            )
            seconds = time.perf_counter() - t0
            checked, worst = batch_check(wh, coders, half_lives, last_day)
        yield MaterializeResult(
            metadata={
                "dagster/row_count": build.rows,
                "window": f"{start} .. {end} (exclusive)",
                "days": build.days,
                "events": build.events,
                "rows_written": build.rows,
                "clients_with_history": build.clients,
                "profile_dim": ProfileLayout.from_coders(coders, half_lives).profile_dim,
                "client_shards": build.shards,
                "table": BEHAVIORAL_PROFILES,
                "events_per_second": round(build.events / seconds, 1) if seconds > 0 else 0.0,
            }
        )
        yield AssetCheckResult(
            check_name="incremental_equals_batch",
            passed=worst < 1e-4,
            metadata={"day": str(last_day), "clients": checked, "max_relative_difference": worst},
        )

    return [temporal_graph, entity_embeddings, sketch_coders, behavioral_profiles]
