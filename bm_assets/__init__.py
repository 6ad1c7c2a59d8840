"""bm_assets: a behavioral foundation model built and served as Dagster assets."""
