"""Small helpers that turn results into Dagster UI metadata."""

from __future__ import annotations

import pandas as pd
from dagster import MetadataValue


def md_table(df: pd.DataFrame, max_rows: int = 20) -> MetadataValue:
    """A DataFrame as a markdown table (first rows only)."""
    if df.empty:
        return MetadataValue.md("_(no rows)_")
    shown = df.head(max_rows)
    header = "| " + " | ".join(map(str, shown.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in shown.columns) + " |"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    more = [f"\n_{len(df) - max_rows} more rows_"] if len(df) > max_rows else []
    return MetadataValue.md("\n".join([header, rule, *body, *more]))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")
