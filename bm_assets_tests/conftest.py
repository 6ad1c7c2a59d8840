"""Shared fixtures: a temporary BM_HOME, the bundled sample config, a scratch DuckDB file, and
a BigQuery emulator dataset for tests marked `bigquery`."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import google.auth
import google.cloud.bigquery.client
import pytest
import yaml
from dagster_gcp import BigQueryResource
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from bm_assets.config import load_dataset_config
from bm_assets.core.warehouse import DuckDBWarehouse, Warehouse
from bm_assets.resources import BigQueryWarehouseResource
from bm_assets.settings import BUNDLED_DATASET

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def bm_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "bm_home"
    monkeypatch.setenv("BM_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    (home / "dagster").mkdir(parents=True)
    return home


@pytest.fixture(scope="session")
def sample_config():
    return load_dataset_config(BUNDLED_DATASET)


@pytest.fixture
def warehouse(tmp_path):
    wh = DuckDBWarehouse(str(tmp_path / "test.duckdb"))
    yield wh
    wh.close()


# --- BigQuery emulator -------------------------------------------------------------------
# Tests marked `bigquery` run against a BigQuery emulator at BIGQUERY_EMULATOR_HOST (started by
# scripts/bigquery_emulator.sh). With neither that variable nor CI=true set they are
# deselected, unless selected explicitly (-m bigquery); once selected, an unreachable emulator fails.

EMULATOR_PROJECT = os.environ.get("BQEMU_PROJECT", "test-proj")


def _bigquery_expected() -> bool:
    return bool(os.environ.get("BIGQUERY_EMULATOR_HOST")) or os.environ.get("CI", "").lower() == "true"


def pytest_collection_modifyitems(config, items):
    if _bigquery_expected() or "bigquery" in (config.getoption("markexpr") or ""):
        return
    skipped = [i for i in items if i.get_closest_marker("bigquery")]
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = [i for i in items if not i.get_closest_marker("bigquery")]


@pytest.fixture(scope="session")
def bq_emulator() -> Iterator[str]:
    """The emulator's URL, with the two client-side patches it needs (test set-up only):
    multipart uploads as application/octet-stream, and anonymous credentials for clients that
    dagster-gcp builds itself."""
    host = os.environ.get("BIGQUERY_EMULATOR_HOST")
    if not host:
        pytest.fail("BIGQUERY_EMULATOR_HOST is not set; start scripts/bigquery_emulator.sh and export it")
    try:
        urllib.request.urlopen(f"{host.rstrip('/')}/healthz", timeout=5).read()
    except OSError as exc:
        pytest.fail(f"BigQuery emulator at {host} is unreachable: {exc}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(google.cloud.bigquery.client, "_GENERIC_CONTENT_TYPE", "application/octet-stream")
        mp.setattr(google.auth, "default", lambda *a, **k: (AnonymousCredentials(), EMULATOR_PROJECT))
        yield host


@pytest.fixture
def bq_dataset(bq_emulator) -> Iterator[str]:
    """A fresh dataset per test, deleted afterwards."""
    client = bigquery.Client(project=EMULATOR_PROJECT, credentials=AnonymousCredentials())
    name = f"t_{uuid.uuid4().hex[:12]}"
    client.create_dataset(name)
    yield name
    client.delete_dataset(name, delete_contents=True, not_found_ok=True)
    client.close()


@pytest.fixture
def bq_resource(bq_dataset) -> BigQueryWarehouseResource:
    return BigQueryWarehouseResource(bigquery=BigQueryResource(project=EMULATOR_PROJECT), dataset=bq_dataset)


@pytest.fixture
def bq_warehouse(bq_resource) -> Iterator[Warehouse]:
    with bq_resource.open() as wh:
        yield wh


@pytest.fixture(scope="session")
def sample_events_db(tmp_path_factory, sample_config) -> Path:
    """A DuckDB file holding the bundled sample ingested and denormalized over its whole range
    (built once per session; tests copy it before changing it)."""
    from bm_assets.core.attributes import build_client_properties, build_product_catalog
    from bm_assets.core.denormalize import denormalize_window
    from bm_assets.core.ingest import ingest_window

    path = tmp_path_factory.mktemp("sample_db") / "events.duckdb"
    wh = DuckDBWarehouse(str(path))
    cfg = sample_config
    ingest_window(wh, cfg, cfg.data_start, cfg.end_exclusive)
    build_client_properties(wh, cfg)
    build_product_catalog(wh, cfg)
    denormalize_window(wh, cfg.data_start, cfg.end_exclusive, covers_all_days=True)
    wh.close()
    return path


@pytest.fixture
def sample_warehouse(sample_events_db, tmp_path):
    """A private copy of the sample events warehouse."""
    import shutil

    path = tmp_path / "sample.duckdb"
    shutil.copy(sample_events_db, path)
    wh = DuckDBWarehouse(str(path))
    yield wh
    wh.close()


def _descendants(pid: int) -> dict[int, str]:
    """{pid: command line} of every live descendant of `pid`, from /proc (Linux)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z":  # a zombie is already dead
                parents[int(entry.name)] = int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                try:
                    cmdline = (Path("/proc") / str(child) / "cmdline").read_bytes()
                    found[child] = cmdline.replace(b"\0", b" ").decode(errors="replace")[:160]
                except OSError:
                    found[child] = "?"
                frontier.append(child)
    return found


def pytest_sessionfinish(session, exitstatus):
    """No process a test started outlives the test run (`dagster dev`, its daemon and run
    workers, killed subprocesses): leftovers are listed, killed and fail the run."""
    if not Path("/proc/self/stat").exists():
        return
    deadline = time.monotonic() + 15
    while (left := _descendants(os.getpid())) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not left:
        return
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        listed = "; ".join(f"pid {pid}: {cmd}" for pid, cmd in left.items())
        reporter.write_line(f"processes left behind by the tests (now killed): {listed}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


#: The models a classification or regression task trains besides its prior.
TRAINED_MODELS = frozenset(
    {"finetuned", "scratch", "lightgbm", "lightgbm_fm", "finetuned_lightgbm", "finetuned_with_aggregates"}
)


# --- a small modeling configuration on the first half of the sample ---------------------------

TASKS = """
foundation: {horizon_days: 14, hidden: 32, layers: 1, max_epochs: 3, patience: 1, batch_size: 128}
evaluation:
  split_every_days: 14
  warmup_days: 42
  holdout_fraction: 0.2
  feature_top_n: 3
  task_max_epochs: 3
  task_patience: 1
  label_fractions: [0.5, 1.0]
tasks:
  - name: churn
    type: binary
    horizon_days: 14
    target: {value: "count(*) FILTER (WHERE event_type = 'purchase') = 0", default: 1}
    eligible: {active_days: 30, where: "event_type = 'purchase'"}
    explain: true
    learning_curve: true
"""


def sample_window(folder: Path, data_end: str, temporal: dict, tasks: str, depth: int, bits: int, dim: int) -> Path:
    """The bundled sample's config cut at `data_end` with its own temporal split, sketch
    depth/bits, Cleora dimension and tasks.yaml text, written to `folder`; returns the
    dataset.yaml path."""
    raw = yaml.safe_load(BUNDLED_DATASET.read_text())
    raw.update(base_dir=str(BUNDLED_DATASET.parent), data_end=data_end, temporal=temporal)
    raw["representation"]["sketch"].update(depth=depth, bits=bits)
    raw["representation"]["cleora"]["dim"] = dim
    folder.mkdir()
    path = folder / "dataset.yaml"
    path.write_text(yaml.safe_dump(raw))
    (folder / "tasks.yaml").write_text(tasks)
    return path


@pytest.fixture
def half_year(tmp_path):
    temporal = {"training_cutoff": "2017-05-01", "test_start": "2017-05-29", "test_end": "2017-07-01"}
    return sample_window(tmp_path / "ds", "2017-06-30", temporal, TASKS, depth=4, bits=4, dim=16)
