"""`bm-assets run`: the README's main command, on a few days of the bundled sample."""

import duckdb

from bm_assets.cli import main


def test_run_materializes_every_asset_into_bm_home(bm_home):
    assert main(["run", "--start", "2017-01-01", "--end", "2017-01-03"]) == 0
    con = duckdb.connect(str(bm_home / "bm_assets.duckdb"), read_only=True)
    days = con.execute("SELECT DISTINCT event_date FROM events_denormalized ORDER BY 1").fetchall()
    assert [str(d[0]) for d in days] == ["2017-01-01", "2017-01-02", "2017-01-03"]
    assert con.execute("SELECT count(*) FROM product_catalog").fetchall()[0][0] > 28_000
    assert (bm_home / "dagster" / "dagster.yaml").exists()
    profiled = con.execute("SELECT DISTINCT CAST(profile_date AS VARCHAR) FROM behavioral_profiles_days ORDER BY 1")
    assert [d[0] for d in profiled.fetchall()] == ["2017-01-01", "2017-01-02", "2017-01-03"]
