"""The artifact store: a task's trained models written in the one layout (no pickle) and read
back predict exactly what the models in memory predicted."""

from __future__ import annotations

import numpy as np
import pytest

from bm_assets.core.artifacts import Store
from bm_assets.core.evaluation import Split, TaskData, rebuild, run_task
from bm_assets.core.kinds import KINDS, LabelSpace
from bm_assets.core.tasks import EvaluationConfig, FoundationConfig, TaskSpec
from bm_assets_tests.test_foundation import LAYOUT, _synthetic, _train
from bm_assets_tests.test_kinds import LABELS, _target, _y


@pytest.mark.parametrize(
    ("name", "dense_bins"),  # regression: with its amount path, then with a dense encoding too
    [("binary", 0), ("multiclass", 0), ("regression", 0), ("regression", 4)],
)
def test_saved_models_predict_what_the_trained_ones_did(tmp_path, name, dense_bins):
    kind = KINDS[name]
    task = TaskSpec(name="t", type=name, horizon_days=14, target=_target(kind))
    splits = {}
    for i, (role, n) in enumerate([("train", 300), ("validation", 120), ("test", 120)]):
        x, sk = _synthetic(n, 20 + i)
        splits[role] = Split(x, x[:, :8].copy(), _y(name, x, sk))
    labels = None if kind.one_score else LABELS
    data = TaskData(task, splits, labels, LAYOUT)
    ev = EvaluationConfig(task_max_epochs=2, dense_bins=dense_bins)
    run = run_task(data, _train().net, FoundationConfig(hidden=32), ev)
    store = Store(tmp_path)
    store.save_task("t", run.models, {"version": "1"}, LabelSpace(labels))
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pt"))
    saved = store.load_task("t")
    assert saved.promotion == {"version": "1"} and saved.label_space.labels == labels
    assert saved.models["finetuned"]["artifact"] is saved.models["lightgbm_fm"]["artifact"]["net"]  # saved once
    assert saved.models["finetuned"]["artifact"] is saved.models["finetuned_lightgbm"]["artifact"]["net"]
    test = data.splits["test"]
    assert (saved.models["finetuned"]["artifact"].amount is not None) == (name == "regression")
    assert (saved.models["finetuned"]["artifact"].dense_encoding is not None) == bool(dense_bins)
    for model, m in run.models.items():
        again = rebuild(data, model, saved.models[model]["artifact"])(test)
        np.testing.assert_array_equal(again, m.predict(test), err_msg=model)
        assert saved.models[model]["history"] == m.history


def test_recommendation_label_space_round_trips(tmp_path):
    from bm_assets.core.artifacts import load_label_space, save_label_space

    space = LabelSpace(["a", "b"], np.array([[0, 1], [2, 3]], np.int64), np.log([5.0, 3.0]))
    save_label_space(space, tmp_path)
    back = load_label_space(tmp_path)
    assert back.labels == ["a", "b"]
    np.testing.assert_array_equal(back.item_codes, space.item_codes)
    np.testing.assert_array_equal(back.item_log_prior, space.item_log_prior)


def test_a_task_network_saved_before_the_wide_path_loads_without_it(tmp_path):
    import torch

    from bm_assets.core.artifacts import load_network, save_network
    from bm_assets.core.foundation import task_network

    net = task_network(_train().net, 40, 32, 2, 0.1, LAYOUT, n_out=2, seed=0)
    save_network(net, tmp_path / "new")
    with torch.no_grad():
        net.wide.weight.fill_(0.5)  # would change every prediction if it were loaded
    save_network(net, tmp_path / "old")
    with np.load(tmp_path / "old" / "weights.npz") as z:
        state = {k: z[k] for k in z.files if not k.startswith("wide.")}
    np.savez(tmp_path / "old" / "weights.npz", **state)
    old, new = load_network(tmp_path / "old"), load_network(tmp_path / "new")
    assert old.wide is None and new.wide is not None
    x = torch.from_numpy(np.random.default_rng(0).random((4, 40), dtype=np.float32))
    with torch.no_grad():
        assert torch.equal(old(x), new(x))  # new's wide path is still zero
