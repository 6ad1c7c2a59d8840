"""Ingest assets: raw_events (+ its quarantine) by day, and the attribute snapshots."""

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetSpec,
    BackfillPolicy,
    DailyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)

from bm_assets.assets.metadata import md_table
from bm_assets.config import QuarantineConfig
from bm_assets.core.attributes import build_client_properties, build_product_catalog
from bm_assets.core.ingest import ingest_window
from bm_assets.core.quality import ingest_quality, quarantine_reasons
from bm_assets.partitions import window_of
from bm_assets.resources import DatasetResource, WarehouseResource

INGEST_GROUP = "ingest"


def build_ingest_assets(partitions: DailyPartitionsDefinition) -> list:
    @multi_asset(
        specs=[
            AssetSpec(
                "raw_events",
                description="Typed, validated events of every source, by day.",
                group_name=INGEST_GROUP,
                partitions_def=partitions,
            ),
            AssetSpec(
                "raw_events_quarantine",
                description="One row per rejected source row, with its reason.",
                group_name=INGEST_GROUP,
                partitions_def=partitions,
            ),
        ],
        check_specs=[
            AssetCheckSpec(
                "rows_in_equal_loaded_plus_quarantined",
                asset="raw_events",
                description="Every source row of the window is loaded or quarantined, once.",
            ),
            AssetCheckSpec(
                "no_null_keys",
                asset="raw_events",
                description="No loaded event lacks a client id, item id or timestamp.",
            ),
            AssetCheckSpec(
                "events_inside_partition",
                asset="raw_events",
                description="Every event's timestamp falls on its partition's day.",
            ),
            AssetCheckSpec(
                "quarantine_rate",
                asset="raw_events",
                description="Share of the window's source rows quarantined: a warning above the dataset's "
                "quarantine.warn_rate; above quarantine.error_rate the run fails before downstream assets.",
                blocking=True,
            ),
        ],
        backfill_policy=BackfillPolicy.single_run(),
    )
    def raw_events(context: AssetExecutionContext, dataset: DatasetResource, warehouse: WarehouseResource):
        cfg = dataset.load()
        start, end = window_of(context)
        with warehouse.open() as wh:
            report = ingest_window(wh, cfg, start, end)
            quality = ingest_quality(wh, start, end, [s.name for s in cfg.events if s.item_id is not None])
            reasons = quarantine_reasons(wh, start, end)
        per_source = pd.DataFrame(
            [
                {**s.__dict__, "ignored_columns": str(s.ignored_columns), "files_read": len(s.files_read)}
                for s in report.sources
            ]
        )
        if report.rows_in == 0:
            context.log.warning(f"no source rows for {start}..{end}: the window is empty")
        ignored = {s.source: s.ignored_columns for s in report.sources if s.ignored_columns}
        if ignored:
            context.log.info(f"columns not mapped by the dataset config, ignored: {ignored}")
        yield MaterializeResult(
            asset_key="raw_events",
            metadata={
                "window": f"{start} .. {end} (exclusive)",
                "dagster/row_count": quality.rows_loaded,
                "rows_in": report.rows_in,
                "rows_quarantined": report.rows_quarantined,
                "per_source": md_table(per_source),
                "ignored_columns": MetadataValue.json(ignored),
                # the files each source staged: only those that can hold the window's rows
                "files_read": MetadataValue.json({s.source: s.files_read for s in report.sources}),
            },
        )
        yield MaterializeResult(
            asset_key="raw_events_quarantine",
            metadata={"dagster/row_count": quality.rows_quarantined, "reasons": md_table(reasons)},
        )
        yield AssetCheckResult(
            asset_key="raw_events",
            check_name="rows_in_equal_loaded_plus_quarantined",
            passed=quality.balanced,
            metadata={
                "rows_in": quality.rows_in,
                "rows_loaded": quality.rows_loaded,
                "rows_quarantined": quality.rows_quarantined,
            },
        )
        yield AssetCheckResult(
            asset_key="raw_events",
            check_name="no_null_keys",
            passed=quality.null_keys == 0,
            metadata={"rows": quality.null_keys},
        )
        yield AssetCheckResult(
            asset_key="raw_events",
            check_name="events_inside_partition",
            passed=quality.outside_partition == 0,
            severity=AssetCheckSeverity.ERROR,
            metadata={"rows": quality.outside_partition},
        )
        yield _quarantine_check(quality.quarantine_rate, cfg.quarantine, reasons)

    @asset(group_name=INGEST_GROUP, description="One row per client: client attribute tables, joined on the id.")
    def client_properties(dataset: DatasetResource, warehouse: WarehouseResource) -> MaterializeResult:
        with warehouse.open() as wh:
            build = build_client_properties(wh, dataset.load())
            preview = wh.preview(build.table)
        return _attribute_result(build, preview)

    @asset(group_name=INGEST_GROUP, description="One row per item: item attribute tables, joined on the id.")
    def product_catalog(dataset: DatasetResource, warehouse: WarehouseResource) -> MaterializeResult:
        with warehouse.open() as wh:
            build = build_product_catalog(wh, dataset.load())
            preview = wh.preview(build.table)
        return _attribute_result(build, preview)

    return [raw_events, client_properties, product_catalog]


def _quarantine_check(rate: float, limits: QuarantineConfig, reasons: pd.DataFrame) -> AssetCheckResult:
    """quarantine_rate: passes up to warn_rate, warns above it, errors (blocking) above error_rate."""
    top = reasons.groupby("reason", as_index=False)["rows"].sum().nlargest(3, "rows")
    return AssetCheckResult(
        asset_key="raw_events",
        check_name="quarantine_rate",
        passed=rate <= limits.warn_rate,
        severity=AssetCheckSeverity.ERROR if rate > limits.error_rate else AssetCheckSeverity.WARN,
        description=f"{rate:.1%} of the source rows quarantined"
        + (f"; top reason: {top['reason'].iloc[0]}" if len(top) else ""),
        metadata={
            "rate": rate,
            "warn_rate": limits.warn_rate,
            "error_rate": limits.error_rate,
            "top_reasons": md_table(top),
        },
    )


def _attribute_result(build, preview: pd.DataFrame) -> MaterializeResult:
    return MaterializeResult(
        metadata={
            "dagster/row_count": build.rows,
            "source_rows": MetadataValue.json(build.source_rows),
            "lines_without_key_skipped": MetadataValue.json(build.skipped_rows or {}),
            "columns": MetadataValue.json(build.columns),
            "preview": md_table(preview),
        }
    )
