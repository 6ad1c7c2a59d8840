"""The MLflow store. A BM_HOME copied or moved elsewhere uses its own MLflow artifacts: MLflow stores
absolute artifact locations, and the resource rewrites them to the current home when it opens the
store; the original folder is moved away (nothing left to read) or, for a copy, left unchanged. And
a logged network carries a signature (its input and output shapes) into the registry."""

from __future__ import annotations

import shutil
import sqlite3

import mlflow
import pytest
import torch

from bm_assets.assets.foundation import foundation_name, load_champion_foundation
from bm_assets.core.artifacts import log_network
from bm_assets.core.foundation import BehavioralNet
from bm_assets.core.registry import register_and_promote
from bm_assets.resources import MLflowResource


def _locations(db) -> list[str]:
    """Every stored artifact location of the store: the experiments', runs', logged models'."""
    con = sqlite3.connect(db)
    try:
        return [
            row[0]
            for sql in (
                "SELECT artifact_location FROM experiments WHERE name = 'bm_assets'",
                "SELECT artifact_uri FROM runs",
                "SELECT artifact_location FROM logged_models",
            )
            for row in con.execute(sql).fetchall()
        ]
    finally:
        con.close()


def _files(folder) -> dict[str, tuple[int, int]]:
    """Every file under `folder`: (size, mtime in ns)."""
    return {str(f): (f.stat().st_size, f.stat().st_mtime_ns) for f in folder.rglob("*") if f.is_file()}


def _train() -> torch.nn.Module:
    """A registered champion foundation network in the store under `home`, as foundation_model leaves it."""
    net = BehavioralNet(n_in=3, hidden=2, layers=1, dropout=0.0, layout=[("item_id", 1, 2)])
    resource = MLflowResource()
    client = resource.client()
    with resource.start_run("foundation"):
        info = log_network(net, "network")
        register_and_promote(client, foundation_name("shop"), info, "test", {}, "val_cross_entropy", 1.0)
    return net


@pytest.mark.parametrize("how", ["move", "copy"])
def test_a_moved_or_copied_home_reads_and_writes_its_own_artifacts(tmp_path, monkeypatch, how):
    original = tmp_path / "original"
    monkeypatch.setenv("BM_HOME", str(original))
    net = _train()
    assert all(str(original) in loc for loc in _locations(original / "mlflow.db"))

    moved = tmp_path / "elsewhere" / "home"
    moved.parent.mkdir()
    if how == "move":
        shutil.move(original, moved)
    else:
        shutil.copytree(original, moved)
        before = _locations(original / "mlflow.db")
        files = _files(original)
    monkeypatch.setenv("BM_HOME", str(moved))
    loaded, version = load_champion_foundation(MLflowResource().client(), "shop")
    assert version == "1"
    for name, weights in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], weights), name
    with MLflowResource().start_run("after the move") as run:  # new artifacts land in the new home
        mlflow.log_text("hello", "note.txt")
    assert (moved / "mlartifacts").as_uri() in run.info.artifact_uri
    locations = _locations(moved / "mlflow.db")
    assert locations and all(str(moved) in loc and str(original) not in loc for loc in locations)
    assert len(list((moved / "mlartifacts").rglob("note.txt"))) == 1
    if how == "copy":
        assert _locations(original / "mlflow.db") == before  # the original store is left as it was
        assert _files(original) == files  # not a file of the original was written or added
    else:
        assert not original.exists()


def test_logged_networks_carry_their_signature():
    task = BehavioralNet(n_in=6, hidden=4, layers=1, dropout=0.0, layout=[("item_id", 2, 4)], n_out=3)
    foundation = BehavioralNet(n_in=6, hidden=4, layers=1, dropout=0.0, layout=[("item_id", 2, 4)])
    resource = MLflowResource()
    client = resource.client()
    with resource.start_run("networks"):
        infos = {name: log_network(net, name) for name, net in (("task", task), ("foundation", foundation))}
        version = register_and_promote(client, "shop_task", infos["task"], "test", {}, "auroc", 0.7)
    task_sig = mlflow.models.get_model_info(f"models:/shop_task/{version.version}").signature
    assert task_sig.inputs.to_dict() == [
        {"name": "profile", "type": "tensor", "tensor-spec": {"dtype": "float32", "shape": (-1, 6)}}
    ]
    assert task_sig.outputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 3)
    foundation_sig = mlflow.models.Model.load(mlflow.artifacts.download_artifacts(infos["foundation"])).signature
    assert foundation_sig.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 6) and foundation_sig.outputs is None
