"""`dagster dev` from the repo root: the UI's GraphQL API shows the asset graph, and a backfill
launched there is executed by the daemon as one run over the range (single-run policy)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import duckdb
import pytest

from bm_assets.settings import REPO_ROOT

BACKFILL = """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status numPartitions } } }"""
RUNS = "{ runsOrError { ... on Runs { results { runId status } } } }"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dagster_dev(bm_home):
    shutil.copy(REPO_ROOT / "dagster.yaml", bm_home / "dagster" / "dagster.yaml")
    port = _free_port()
    log = open(bm_home / "dagster_dev.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-p", str(port), "-w", "workspace.yaml"],
        cwd=REPO_ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )

    def gql(query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=10).read())

    deadline = time.monotonic() + 120
    while True:
        try:
            if gql("{ assetNodes { assetKey { path } } }").get("data"):
                break
        except OSError:
            pass
        assert proc.poll() is None, (bm_home / "dagster_dev.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "dagster dev did not answer within 120 s"
        time.sleep(1)
    yield gql
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(60)
    log.close()


def test_ui_shows_graph_and_runs_a_backfill(dagster_dev, bm_home):
    gql = dagster_dev
    nodes = gql("{ assetNodes { assetKey { path } } }")["data"]["assetNodes"]
    assert {"raw_events", "raw_events_quarantine", "events_denormalized", "client_properties",
            "product_catalog"} <= {n["assetKey"]["path"][0] for n in nodes}
    subprocess.run([sys.executable, "-m", "dagster", "asset", "materialize", "-m", "bm_assets.definitions",
                    "--select", "client_properties,product_catalog"], cwd=REPO_ROOT, check=True,
                   capture_output=True)
    days = ["2017-01-02", "2017-01-03", "2017-01-04"]
    selection = [{"path": [k]} for k in ("raw_events", "raw_events_quarantine", "events_denormalized")]
    launched = gql(BACKFILL, {"p": {"assetSelection": selection, "partitionNames": days}})
    backfill_id = launched["data"]["launchPartitionBackfill"]["backfillId"]
    deadline = time.monotonic() + 240
    while (status := gql(STATUS, {"id": backfill_id})["data"]["partitionBackfillOrError"]["status"]) in (
        "REQUESTED",
    ):
        assert time.monotonic() < deadline, "backfill did not finish within 240 s"
        time.sleep(2)
    assert status == "COMPLETED_SUCCESS"
    runs = gql(RUNS)["data"]["runsOrError"]["results"]
    assert len(runs) == 2  # the attribute materialization + one run for the three days
    con = duckdb.connect(str(bm_home / "bm_assets.duckdb"), read_only=True)
    got = con.execute("SELECT DISTINCT CAST(event_date AS VARCHAR) FROM events_denormalized ORDER BY 1").fetchall()
    assert [d[0] for d in got] == days
