"""events_denormalized: events with item and client attributes, joined in the warehouse."""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    DailyPartitionsDefinition,
    MaterializeResult,
    asset,
)

from bm_assets.assets.metadata import md_table
from bm_assets.core.denormalize import denormalize_window
from bm_assets.core.quality import catalog_coverage
from bm_assets.core.sql import EVENTS_DENORMALIZED
from bm_assets.partitions import window_of
from bm_assets.resources import DatasetResource, WarehouseResource


def build_denormalize_assets(partitions: DailyPartitionsDefinition) -> list:
    @asset(
        partitions_def=partitions,
        deps=["raw_events", "client_properties", "product_catalog"],
        group_name="ingest",
        backfill_policy=BackfillPolicy.single_run(),
        description="Each event joined with its item's and client's attributes (SQL in the warehouse).",
        check_specs=[
            AssetCheckSpec(
                "catalog_coverage",
                asset=EVENTS_DENORMALIZED,
                description="Share of events whose item is in product_catalog is at least the "
                "dataset's catalog_coverage_min.",
            )
        ],
    )
    def events_denormalized(context: AssetExecutionContext, dataset: DatasetResource, warehouse: WarehouseResource):
        cfg = dataset.load()
        start, end = window_of(context)
        with warehouse.open() as wh:
            rows = denormalize_window(
                wh, start, end, covers_all_days=(start, end) == (cfg.data_start, cfg.end_exclusive)
            )
            share, n = catalog_coverage(wh, start, end)
            preview = wh.preview(EVENTS_DENORMALIZED, 5, days=(start, end))
        yield MaterializeResult(
            metadata={
                "dagster/row_count": rows,
                "window": f"{start} .. {end} (exclusive)",
                "catalog_coverage": share,
                "preview": md_table(preview),
            }
        )
        yield AssetCheckResult(
            check_name="catalog_coverage",
            passed=share >= cfg.catalog_coverage_min,
            severity=AssetCheckSeverity.WARN,
            metadata={"share": share, "events": n, "minimum": cfg.catalog_coverage_min},
        )

    return [events_denormalized]
