"""core/sql.py: engine errors worded the same for DuckDB and BigQuery."""

import duckdb
import pytest
from google.api_core.exceptions import BadRequest

from bm_assets.core.sql import engine_error, literal, wall_clock_text_sql


def _bigquery(message: str) -> BadRequest:
    """The exception google-cloud-bigquery raises for a refused query (its real shape)."""
    return BadRequest(message, errors=[{"reason": "invalidQuery", "message": message, "location": "query"}])


def _duckdb(sql: str) -> duckdb.Error:
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT 1.0 AS value")
    with pytest.raises(duckdb.Error) as err:
        con.execute(sql)
    return err.value


def test_unknown_column_reads_the_same_from_both_engines():
    duck = engine_error(_duckdb('SELECT "no_such_column" FROM t'))
    bq = engine_error(_bigquery("Unrecognized name: no_such_column at [1:8]"))
    assert duck == bq == "unknown column 'no_such_column'"


def test_unknown_function_reads_the_same_from_both_engines():
    duck = engine_error(_duckdb("SELECT nosuchfn(value) FROM t"))
    bq = engine_error(_bigquery("Function not found: nosuchfn at [1:8]"))
    assert duck == bq == "unknown function nosuchfn()"


def test_other_errors_keep_the_engine_words_without_transport_details():
    bq = _bigquery("No matching signature for operator > for argument types: FLOAT64, STRING at [1:40]")
    assert str(bq).startswith("400 ")  # what the raw exception would have shown
    assert engine_error(bq) == "No matching signature for operator > for argument types: FLOAT64, STRING"
    duck = engine_error(_duckdb("SELECT CAST('x' AS INTEGER)"))
    assert duck.startswith("Conversion Error:") and "\n" not in duck


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("2024-01-02 10:00:00 UTC", "2024-01-02 10:00:00"),
        ("2024-01-03T11:30:00.250Z", "2024-01-03T11:30:00.250"),
        ("2024-01-04 09:15:00+02:00", "2024-01-04 09:15:00"),
        ("2024-01-04 09:15-0530", "2024-01-04 09:15"),
        ("2024-01-04 09:15:00 Europe/Warsaw", "2024-01-04 09:15:00"),
        ("2024-01-05", "2024-01-05"),  # a date's -05 is no offset
        ("2024-01-05 10:51:09", "2024-01-05 10:51:09"),
        ("not a time Z", "not a time Z"),
    ],
)
def test_a_zone_designator_after_the_time_is_dropped(written, read):
    assert duckdb.sql(f"SELECT {wall_clock_text_sql(literal(written))}").fetchall() == [(read,)]
