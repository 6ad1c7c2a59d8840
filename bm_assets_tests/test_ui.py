"""`dagster dev` from the repo root: the UI's GraphQL API shows the asset graph, and a backfill
launched there is executed by the daemon as one run over the range (single-run policy)."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import yaml

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


def _default_signals() -> None:
    """In the child: SIGINT and SIGTERM back to their defaults. A shell that starts jobs in the
    background sets SIGINT to ignored, and `dagster dev` maps SIGTERM onto SIGINT, so without
    this it would ignore both (docs/operations.md)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def stop_group(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the process group, wait up to `grace_s` for all of it, then SIGKILL what is left;
    fails if any process of the group survives."""
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while (proc.poll() is None or group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if proc.poll() is None or group_members(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert not group_members(pgid), f"processes of dagster dev's group left: {group_members(pgid)}"


@contextlib.contextmanager
def running_dagster_dev(bm_home: Path) -> Iterator:
    """`dagster dev` on a free port in its own process group, serving the environment's BM_DATASET;
    yields a GraphQL client (`gql(query, variables)`, `gql.base_url`) once the UI answers, and stops
    the whole group (checked stopped) on exit. Run monitoring polls every 2 s instead of 30 s, to keep
    the tests short."""
    instance_cfg = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    instance_cfg["run_monitoring"]["poll_interval_seconds"] = 2
    (bm_home / "dagster" / "dagster.yaml").write_text(yaml.safe_dump(instance_cfg))
    port = _free_port()
    log = open(bm_home / "dagster_dev.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-p", str(port), "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=dict(os.environ),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_default_signals,
    )

    def gql(query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        return json.loads(urllib.request.urlopen(req, timeout=30).read())

    gql.base_url = f"http://127.0.0.1:{port}"  # the UI itself, for the browser tests
    try:
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
    finally:
        stop_group(proc)
        log.close()


@pytest.fixture
def dagster_dev(bm_home):
    with running_dagster_dev(bm_home) as gql:
        yield gql


def _materialize(selection: str, *extra: str) -> list[str]:
    """`dagster asset materialize` of the project's definitions, as a process of its own."""
    return [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "bm_assets.definitions",
        "--select",
        selection,
        *extra,
    ]


def _wait_backfill(gql, backfill_id: str, timeout_s: float = 240) -> str:
    deadline = time.monotonic() + timeout_s
    while (status := gql(STATUS, {"id": backfill_id})["data"]["partitionBackfillOrError"]["status"]) in ("REQUESTED",):
        assert time.monotonic() < deadline, f"backfill did not finish within {timeout_s} s"
        time.sleep(2)
    return status


def test_ui_shows_graph_and_runs_a_backfill(dagster_dev, bm_home):
    gql = dagster_dev
    nodes = gql("{ assetNodes { assetKey { path } } }")["data"]["assetNodes"]
    assert {"raw_events", "raw_events_quarantine", "events_denormalized", "client_properties", "product_catalog"} <= {
        n["assetKey"]["path"][0] for n in nodes
    }
    subprocess.run(
        _materialize("client_properties,product_catalog"),
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    days = ["2017-01-02", "2017-01-03", "2017-01-04"]
    selection = [{"path": [k]} for k in ("raw_events", "raw_events_quarantine", "events_denormalized")]
    launched = gql(BACKFILL, {"p": {"assetSelection": selection, "partitionNames": days}})
    backfill_id = launched["data"]["launchPartitionBackfill"]["backfillId"]
    assert _wait_backfill(gql, backfill_id) == "COMPLETED_SUCCESS"
    runs = gql(RUNS)["data"]["runsOrError"]["results"]
    assert len(runs) == 2  # the attribute materialization + one run for the three days
    con = duckdb.connect(str(bm_home / "bm_assets.duckdb"), read_only=True)
    got = con.execute("SELECT DISTINCT CAST(event_date AS VARCHAR) FROM events_denormalized ORDER BY 1").fetchall()
    assert [d[0] for d in got] == days


RUN = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"
INGEST = [{"path": ["raw_events"]}, {"path": ["raw_events_quarantine"]}]


def test_run_killed_with_sigkill_does_not_block_the_queue(dagster_dev, bm_home):
    """A run executed by the process that asked for it (`dagster asset materialize`, `bm-assets
    run`) and killed with -9 used to stay STARTED and, with max_concurrent_runs 1, hold the only
    slot: runs queued in dagster dev never started. Run monitoring now marks it failed and the
    next run completes. Slow: about 2 minutes on 2 busy cores (dagster dev, two runs)."""
    gql = dagster_dev
    lock = duckdb.connect(str(bm_home / "bm_assets.duckdb"))  # the run waits for the file's lock
    cli = subprocess.Popen(
        _materialize("raw_events,raw_events_quarantine", "--partition", "2017-01-02"),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not (runs := gql(RUNS)["data"]["runsOrError"]["results"]) or runs[0]["status"] != "STARTED":
            assert time.monotonic() < deadline and cli.poll() is None, "the run did not start within 180 s"
            time.sleep(1)
        run_id = runs[0]["runId"]
        os.killpg(cli.pid, signal.SIGKILL)
        cli.wait(10)
    finally:
        lock.close()
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while (status := gql(RUN, {"id": run_id})["data"]["runOrError"]["status"]) == "STARTED":
        assert time.monotonic() < deadline, "the killed run was still STARTED after 60 s"
        time.sleep(1)
    assert status == "FAILURE"
    second = gql(BACKFILL, {"p": {"assetSelection": INGEST, "partitionNames": ["2017-01-03"]}})
    assert _wait_backfill(gql, second["data"]["launchPartitionBackfill"]["backfillId"], 180) == "COMPLETED_SUCCESS"
