"""What `bm-assets run` prints: progress lines and a results summary, not Dagster's event log."""

import json
import re
import shutil
from pathlib import Path

import duckdb

from bm_assets.cli import main
from bm_assets.console import results_summary

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "purchases_example"


def test_run_prints_progress_and_results_in_few_lines(tmp_path, bm_home, monkeypatch, capsys):
    shutil.copytree(EXAMPLE, tmp_path / "data")
    monkeypatch.setenv("BM_DATASET", str(tmp_path / "data" / "dataset.yaml"))
    assert main(["run"]) == 0
    captured = capsys.readouterr()
    out = captured.out.splitlines() + captured.err.splitlines()
    assert len(out) < 60, "\n".join(out)
    progress = [line for line in out if re.match(r"\[\s*\d+/\d+\] ", line)]
    total = int(progress[0].split("/")[1].split("]")[0])
    assert len(progress) == total
    assert any("events_denormalized  " in line and "days)" in line for line in progress)
    assert not any(" - DEBUG - " in line or "Warning" in line for line in out)
    assert "results (test window; * the pick on validation; reports in" in captured.out
    assert re.search(r"churn +test_auroc: finetuned\*? [\d.]+ \| scratch", captured.out)
    assert re.search(r"spend +test_\w+: finetuned", captured.out)
    # the daily scores of the last day only (every day of the range with --all-scores)
    con = duckdb.connect(str(bm_home / "bm_assets.duckdb"), read_only=True)
    last_event = con.execute("SELECT max(event_date) FROM events_denormalized").fetchall()[0][0]
    scored = con.execute("SELECT DISTINCT score_date FROM churn_scores").fetchall()
    assert len(scored) == 1 and scored[0][0] >= last_event, scored
    con.close()


def test_summary_shows_the_tasks_first_metric(tmp_path):
    report = {
        "task": "next_purchases",
        "models": {
            "finetuned": {"test_hitrate@10": 0.28812, "test_ndcg@10": 0.0593},
            "popularity": {"test_hitrate@10": 0.639, "test_ndcg@10": None},
        },
        "selected": {"model": "finetuned", "by": "validation_ndcg@10", "value": 0.06},
    }
    path = tmp_path / "next_purchases.json"
    path.write_text(json.dumps(report))
    lines = results_summary([path], {"next_purchases": "ndcg@10"})
    assert lines == [
        f"results (test window; * the pick on validation; reports in {tmp_path}):",
        "  next_purchases       test_ndcg@10: finetuned* 0.0593 | popularity n/a",
    ]
    assert "test_hitrate@10: finetuned* 0.288 |" in results_summary([path], {})[1]
