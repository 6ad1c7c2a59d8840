"""Dagster resources: the dataset contract, the warehouse, the artifact store and MLflow. Local
versus cloud is decided once, in definitions.py, by choosing which warehouse resource to bind."""

from __future__ import annotations

import math
import os
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
from dagster import ConfigurableResource, MetadataValue
from dagster_gcp import BigQueryResource
from pydantic import Field

from bm_assets.config import DatasetConfig
from bm_assets.core.artifacts import Store
from bm_assets.core.bigquery import BigQueryWarehouse
from bm_assets.core.sql import ident
from bm_assets.core.tasks import load_dataset_for_tasks
from bm_assets.core.warehouse import DuckDBWarehouse, Warehouse
from bm_assets.run_launcher import process_alive
from bm_assets.settings import bm_home


@cache
def _load(path: str) -> DatasetConfig:
    return load_dataset_for_tasks(path)


class DatasetResource(ConfigurableResource):
    """The dataset YAML every asset reads its roles and date range from."""

    config_path: str

    def load(self) -> DatasetConfig:
        return _load(self.config_path)


class ArtifactStore(ConfigurableResource):
    """Every file that is not a table (embeddings, coders, models, reports), in the one layout
    of core/artifacts.py, under `home` (default $BM_HOME). Assets never build paths."""

    home: str = Field(default="", description="root folder of the artifacts; default $BM_HOME")

    def store(self) -> Store:
        return Store(self.home or bm_home())


class WarehouseResource(ConfigurableResource):
    """Where SQL stages run. Subclasses open a concrete Warehouse."""

    @contextmanager
    def open(self, sandboxed: bool = False) -> Iterator[Warehouse]:
        """A warehouse connection. `sandboxed`: for stages that run task SQL from config: the
        connection cannot read or write files (DuckDB; BigQuery SQL has no file access)."""
        raise NotImplementedError


class DuckDBWarehouseResource(WarehouseResource):
    """Embedded DuckDB file (default under $BM_HOME)."""

    database: str
    threads: int | None = None

    @contextmanager
    def open(self, sandboxed: bool = False) -> Iterator[Warehouse]:
        wh = DuckDBWarehouse(self.database, threads=self.threads, external_access=not sandboxed)
        try:
            yield wh
        finally:
            wh.close()


DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"
EXPERIMENT_KIND = "mlflow.experimentKind"


#: Tags naming the process that owns an MLflow run, so a run left RUNNING by a killed process
#: (kill -9 never reaches the `with` that would end it) can be told apart from a live one.
PID_TAG, HOST_TAG = "bm_assets.pid", "bm_assets.host"


def close_dead_runs(client: mlflow.MlflowClient, experiment_id: str) -> list[str]:
    """Mark FAILED the RUNNING runs of this host whose owning process is gone; returns their ids.
    Runs of other hosts, or without an owner tag, are left alone (nothing here can tell)."""
    host = socket.gethostname()
    closed = []
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000):
        pid, owner_host = run.data.tags.get(PID_TAG), run.data.tags.get(HOST_TAG)
        if pid and owner_host == host and not process_alive(int(pid)):
            client.set_terminated(run.info.run_id, status="FAILED")
            closed.append(run.info.run_id)
    return closed


def _use_store(uri: str) -> None:
    """Make `uri` the process's MLflow store (fluent API, `models:/` URIs) without leaving it in
    MLFLOW_TRACKING_URI: mlflow.set_tracking_uri exports the variable, and the resource reads that
    variable as the user's choice, so a later BM_HOME in the same process would keep the first store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def follow_moved_home(db: Path, experiment: str) -> str | None:
    """Make a local MLflow store follow its BM_HOME after the folder was copied or moved.

    MLflow stores absolute artifact locations (the experiment's, each run's, each logged model's and
    model version's), so a store in a moved home would keep reading and writing the original folder.
    When the experiment's stored location is `<old home>/mlartifacts/<experiment>` and `<old home>` is
    not the folder `db` is in, every stored value under `<old home>/` (as a path or a file URI) is
    rewritten to the same place under the current home, in one transaction. Returns the old home, or
    None when there was nothing to do (no store or experiment yet, or already at home)."""
    if not db.exists():
        return None
    home = db.parent.resolve()
    con = sqlite3.connect(db, timeout=60)
    try:
        try:
            row = con.execute("SELECT artifact_location FROM experiments WHERE name = ?", (experiment,)).fetchone()
        except sqlite3.OperationalError:  # an empty or foreign database: not ours to change
            return None
        suffix = f"/mlartifacts/{experiment}"
        if row is None or not row[0] or not row[0].startswith("file:") or not row[0].endswith(suffix):
            return None
        old = Path(unquote(urlparse(row[0][: -len(suffix)]).path))
        if old == home:
            return None
        moves = [(f"{old.as_uri()}/", f"{home.as_uri()}/"), (f"{old}/", f"{home}/")]
        with con:  # one transaction: every location moves, or none
            for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                quoted = ident(table)  # SQLite quotes names as DuckDB does
                for column in con.execute(f"PRAGMA table_info({quoted})").fetchall():
                    name, kind = column[1], (column[2] or "").upper()
                    if kind and not any(t in kind for t in ("CHAR", "TEXT", "CLOB")):
                        continue
                    col = ident(name)
                    for before, after in moves:
                        con.execute(
                            f"UPDATE {quoted} SET {col} = ? || substr({col}, ?) WHERE substr({col}, 1, ?) = ?",
                            (after, len(before) + 1, len(before), before),
                        )
        return str(old)
    finally:
        con.close()


class MLflowResource(ConfigurableResource):
    """One finished MLflow run per materialization. Tracking URI: `tracking_uri` if set, else
    MLFLOW_TRACKING_URI, else a sqlite store under $BM_HOME with artifacts beside it (an
    explicit artifact location: the default lands in ./mlruns of whatever directory the
    process started in)."""

    tracking_uri: str = ""
    experiment: str = "bm_assets"
    ui_url: str = Field(
        default="",
        description=f"address of the MLflow UI that run links point to; default BM_MLFLOW_UI, else {DEFAULT_MLFLOW_UI}",
    )

    def uri(self) -> str:
        default = f"sqlite:///{bm_home() / 'mlflow.db'}"
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default

    def _open_store(self) -> str:
        """The store's URI, made the process's tracking URI; the default store under $BM_HOME first
        follows a copied or moved home (`follow_moved_home`)."""
        uri = self.uri()
        if not self.tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI"):
            follow_moved_home(bm_home() / "mlflow.db", self.experiment)
        _use_store(uri)
        return uri

    def client(self) -> mlflow.MlflowClient:
        """A client of this store (the registry included); also makes it the process's tracking URI,
        so `models:/` URIs resolve against it."""
        return mlflow.MlflowClient(self._open_store())

    @contextmanager
    def start_run(self, run_name: str, tags: dict[str, str] | None = None) -> Iterator[mlflow.ActiveRun]:
        uri = self._open_store()
        exp = mlflow.get_experiment_by_name(self.experiment)
        if exp is None:
            local = uri.startswith("sqlite:")
            location = (bm_home() / "mlartifacts" / self.experiment).as_uri() if local else None
            # The kind makes MLflow 3's UI open the experiment on its training runs, not on GenAI traces.
            exp_id = mlflow.create_experiment(
                self.experiment, artifact_location=location, tags={EXPERIMENT_KIND: "custom_model_development"}
            )
        else:
            exp_id = exp.experiment_id
            if EXPERIMENT_KIND not in exp.tags:  # an experiment created before the kind was set
                mlflow.MlflowClient(uri).set_experiment_tag(exp_id, EXPERIMENT_KIND, "custom_model_development")
        close_dead_runs(mlflow.MlflowClient(uri), exp_id)
        owner = {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
        with mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags={**(tags or {}), **owner}) as run:
            yield run

    @staticmethod
    def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
        """Log to the active run; MLflow refuses '@' in names (ndcg@10 -> ndcg_at_10) and
        undefined (NaN) values are left out."""
        clean = {k.replace("@", "_at_"): float(v) for k, v in metrics.items() if math.isfinite(v)}
        mlflow.log_metrics(clean, step=step)

    def ui(self) -> str:
        return (self.ui_url or os.environ.get("BM_MLFLOW_UI") or DEFAULT_MLFLOW_UI).rstrip("/")

    def run_link(self, run: mlflow.ActiveRun) -> MetadataValue:
        """The run's page in the MLflow UI (`mlflow ui` on this store), a link in Dagster's UI."""
        return MetadataValue.url(f"{self.ui()}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}")


class BigQueryWarehouseResource(WarehouseResource):
    """A BigQuery dataset. The client comes from dagster-gcp's BigQueryResource: project and
    location from config, credentials from Application Default Credentials (or its
    gcp_credentials field). It has no endpoint field and needs none: the BigQuery client
    library itself honours BIGQUERY_EMULATOR_HOST, which is how an emulator is selected."""

    bigquery: BigQueryResource
    dataset: str = Field(description="BigQuery dataset holding the managed tables (BM_BQ_DATASET)")

    @contextmanager
    def open(self, sandboxed: bool = False) -> Iterator[Warehouse]:
        with self.bigquery.get_client() as client:
            wh = BigQueryWarehouse(client, self.dataset, location=self.bigquery.location)
            wh.ensure_dataset()
            try:
                yield wh
            finally:
                wh.close()
