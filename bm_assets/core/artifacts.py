"""The one artifact store: every file the pipeline writes that is not a table (entity
embeddings, sketch coders, networks, LightGBM models, label spaces, reports) is written and
read here, under one root, in one layout, in formats that hold data and never code:

    <root>/artifacts/entity_embeddings/   manifest.json + one .npz per column
    <root>/artifacts/sketch_coders/       manifest.json + one .npz per column
    <root>/models/<task>/                 manifest.json (models, timings, promotion)
                                          label_space.json + label_space.npz
                                          networks/<name>/ network.json + weights.npz
                                          lightgbm/<name>/ manifest.json + <label>.txt
                                          arrays.npz (priors, projections)
    <root>/reports/<task>.json

A network is its constructor arguments (JSON) and its state dict (npz, float32 as trained);
LightGBM models are LightGBM's own model strings. No pickle: loading an artifact runs no code
from the file. Registered model versions in MLflow hold the same formats, logged as run artifacts:
the foundation model's network folder, and a task's served model (`save_served`: its validation
pick in the task bundle's layout), so a version is read back exactly like a local model."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bm_assets.core.embeddings import EMBEDDINGS_DIR, ColumnEmbeddings, load_embeddings, save_embeddings
from bm_assets.core.kinds import Boosters, LabelSpace
from bm_assets.core.sketches import CODERS_DIR, SketchCoder, load_sketch_coders, save_sketch_coders

FORMAT = 1
_MANIFEST = "manifest.json"


# --- networks ---------------------------------------------------------------------------------


def save_network(net, directory: Path) -> Path:
    """`network.json` (constructor arguments) and `weights.npz` (the state dict)."""
    directory.mkdir(parents=True, exist_ok=True)
    linear = [m for m in net.encoder if m.__class__.__name__ == "Linear"]
    spec = {
        "format": FORMAT,
        "n_in": int(net.x_mean.shape[0]),
        "hidden": int(linear[0].out_features),
        "layers": len(linear),
        "dropout": float(next(m.p for m in net.encoder if m.__class__.__name__ == "Dropout")),
        "layout": [list(t) for t in net.layout],
        "n_out": 0 if net.task_head is None else int(net.task_head.out_features),
    }
    if net.amount is not None:
        spec["amount_inputs"] = [net.amount.start, net.amount.stop]
    if net.dense_encoding is not None:
        enc = net.dense_encoding
        spec["dense_encoding"] = {"start": enc.start, "stop": enc.stop, "bins": enc.bins}
    (directory / "network.json").write_text(json.dumps(spec, indent=2), encoding="utf-8")
    state = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    with open(directory / "weights.npz", "wb") as fh:
        np.savez(fh, **state)
    return directory


def load_network(directory: Path):
    """The BehavioralNet saved by `save_network`, in eval mode."""
    import torch

    from bm_assets.core.foundation import AmountPath, BehavioralNet, DenseEncoding

    path = directory / "network.json"
    if not path.exists():
        raise FileNotFoundError(f"no network.json in {directory}")
    spec = json.loads(path.read_text(encoding="utf-8"))
    layout = [(str(c), int(d), int(w)) for c, d, w in spec["layout"]]
    with torch.random.fork_rng():  # building the module draws initial weights: leave the caller's RNG alone
        net = BehavioralNet(spec["n_in"], spec["hidden"], spec["layers"], spec["dropout"], layout, spec["n_out"])
        if "amount_inputs" in spec:
            net.amount = AmountPath(*spec["amount_inputs"], spec["n_out"])
        if "dense_encoding" in spec:
            enc = spec["dense_encoding"]
            net.dense_encoding = DenseEncoding(enc["start"], enc["stop"], enc["bins"], spec["hidden"])
    with np.load(directory / "weights.npz", allow_pickle=False) as z:
        if "wide.weight" not in z.files:  # saved before task networks had a wide path
            net.wide = None
        net.load_state_dict({k: torch.from_numpy(z[k]) for k in z.files})
    return net.eval()


# --- LightGBM ---------------------------------------------------------------------------------


def save_boosters(models: Boosters, directory: Path) -> Path:
    """One LightGBM model string per label (a constant label: its rate in the manifest)."""
    directory.mkdir(parents=True, exist_ok=True)
    entries: list = []
    for j, m in enumerate(models.models):
        if isinstance(m, float):
            entries.append(m)
        else:
            (directory / f"{j}.txt").write_text(m.model_to_string(), encoding="utf-8")
            entries.append(f"{j}.txt")
    manifest = {"format": FORMAT, "models": entries, "classes": models.classes}
    (directory / _MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    return directory


def load_boosters(directory: Path) -> Boosters:
    import lightgbm as lgb

    manifest = json.loads((directory / _MANIFEST).read_text(encoding="utf-8"))
    models = [
        float(e) if not isinstance(e, str) else lgb.Booster(model_str=(directory / e).read_text(encoding="utf-8"))
        for e in manifest["models"]
    ]
    return Boosters(models, manifest["classes"])


# --- label spaces -----------------------------------------------------------------------------


def save_label_space(space: LabelSpace, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "label_space.json").write_text(json.dumps({"labels": space.labels}), encoding="utf-8")
    pairs = (("item_codes", space.item_codes), ("item_log_prior", space.item_log_prior))
    arrays = {k: v for k, v in pairs if v is not None}
    with open(directory / "label_space.npz", "wb") as fh:
        np.savez(fh, **arrays)


def load_label_space(directory: Path) -> LabelSpace:
    path = directory / "label_space.json"
    if not path.exists():
        raise FileNotFoundError(f"no label_space.json in {directory}")
    labels = json.loads(path.read_text(encoding="utf-8"))["labels"]
    with np.load(directory / "label_space.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return LabelSpace(labels, arrays.get("item_codes"), arrays.get("item_log_prior"))


# --- a task's trained models ------------------------------------------------------------------


@dataclass
class SavedTask:
    """What `<task>_model` saved: {model name: {"artifact", "seconds", "epochs", "history"}}, the
    registry's decision, and the label space the models were trained on."""

    models: dict[str, dict]
    promotion: dict
    label_space: LabelSpace


def save_task_models(models: dict, promotion: dict, space: LabelSpace, directory: Path) -> Path:
    """Every model of a task training (`ModelResult`s): networks once each (models that share a
    network name it), LightGBM model strings, blend weights, priors and projections."""
    from bm_assets.core.foundation import BehavioralNet

    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    nets: dict[int, str] = {}
    arrays: dict[str, np.ndarray] = {}

    def network(net) -> str | None:
        if net is None:
            return None
        if id(net) not in nets:
            name = next(n for n, m in models.items() if _net_of(m.artifact) is net)
            nets[id(net)] = name
            save_network(net, tmp / "networks" / name)
        return nets[id(net)]

    entries = {}
    for name, m in models.items():
        a = m.artifact
        entry: dict = {"seconds": m.seconds, "epochs": m.epochs, "history": m.history}
        if isinstance(a, BehavioralNet):
            entry.update(type="network", network=network(a))
        elif isinstance(a, Boosters):
            save_boosters(a, tmp / "lightgbm" / name)
            entry.update(type="lightgbm", lightgbm=name)
        elif isinstance(a, dict) and "gbdt" in a:
            save_boosters(a["gbdt"], tmp / "lightgbm" / name)
            arrays[f"{name}/mean"], arrays[f"{name}/basis"] = a["mean"], a["basis"]
            entry.update(type="hybrid", lightgbm=name, network=network(a["net"]))
        elif isinstance(a, dict) and "ranker" in a:
            save_boosters(a["ranker"], tmp / "lightgbm" / name)
            entry.update(type="ranker", lightgbm=name, network=network(a["net"]))
        elif isinstance(a, dict) and "weights" in a:
            entry.update(type="blend", weights=a["weights"], network=network(a["net"]))
        elif isinstance(a, dict) and "mix" in a:
            save_boosters(a["mix_gbdt"], tmp / "lightgbm" / name)
            entry.update(type="mix", weight=a["mix"], lightgbm=name, network=network(a["net"]))
        elif isinstance(a, dict) and "aggregates" in a:
            entry.update(type="network_with_aggregates", aggregates=int(a["aggregates"]), network=network(a["net"]))
        else:
            arrays[f"{name}/rate"] = np.asarray(a)
            entry.update(type="prior")
        entries[name] = entry
    with open(tmp / "arrays.npz", "wb") as fh:
        np.savez(fh, **arrays)
    save_label_space(space, tmp)
    manifest = {"format": FORMAT, "models": entries, "promotion": promotion}
    (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    if directory.exists():  # replaced whole: a reader never sees half of two trainings
        shutil.rmtree(directory)
    tmp.rename(directory)
    return directory


def _net_of(artifact):
    from bm_assets.core.foundation import BehavioralNet

    if isinstance(artifact, BehavioralNet):
        return artifact
    return artifact.get("net") if isinstance(artifact, dict) else None


def load_task_models(directory: Path) -> SavedTask:
    path = directory / _MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    nets: dict[str, object] = {}

    def network(name: str | None):
        if name is None:
            return None
        if name not in nets:
            nets[name] = load_network(directory / "networks" / name)
        return nets[name]

    with np.load(directory / "arrays.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    models = {}
    for name, e in manifest["models"].items():
        kind = e["type"]
        if kind == "network":
            artifact = network(e["network"])
        elif kind == "lightgbm":
            artifact = load_boosters(directory / "lightgbm" / e["lightgbm"])
        elif kind == "hybrid":
            artifact = {
                "gbdt": load_boosters(directory / "lightgbm" / e["lightgbm"]),
                "net": network(e["network"]),
                "mean": arrays[f"{name}/mean"],
                "basis": arrays[f"{name}/basis"],
            }
        elif kind == "ranker":
            artifact = {"ranker": load_boosters(directory / "lightgbm" / e["lightgbm"]), "net": network(e["network"])}
        elif kind == "blend":
            artifact = {"weights": e["weights"], "net": network(e["network"])}
        elif kind == "mix":
            artifact = {
                "mix": e["weight"],
                "net": network(e["network"]),
                "mix_gbdt": load_boosters(directory / "lightgbm" / e["lightgbm"]),
            }
        elif kind == "network_with_aggregates":
            artifact = {"net": network(e["network"]), "aggregates": int(e["aggregates"])}
        else:
            artifact = arrays[f"{name}/rate"]
        models[name] = {"artifact": artifact, "seconds": e["seconds"], "epochs": e["epochs"], "history": e["history"]}
    return SavedTask(models, manifest["promotion"], load_label_space(directory))


# --- the served model -------------------------------------------------------------------------

_SERVING = "serving.json"


@dataclass
class ServedModel:
    """The one model a task's daily scores run (a registered version): its name in the training
    report, its artifact (as in a SavedTask), the label space, and what it reads besides the
    profile, fixed at training: the aggregates' windows, top values and column names, and the
    candidates' repurchase statistics (float[n_candidates, k]) before the training cutoff."""

    name: str
    artifact: object
    label_space: LabelSpace
    feature_windows_days: list[int] = field(default_factory=list)
    feature_tops: dict[str, list[str]] = field(default_factory=dict)
    feature_names: list[str] = field(default_factory=list)
    item_stats: np.ndarray | None = None


def save_served(model, served: ServedModel, directory: Path) -> Path:
    """`model` (a ModelResult) in the task bundle's layout, one model only, plus `serving.json`
    and `serving.npz` (what it reads besides the profile). A network served alone also gets an
    MLmodel file with its signature (the registry shows it)."""
    save_task_models({served.name: model}, {}, served.label_space, directory)
    context = {
        "format": FORMAT,
        "model": served.name,
        "feature_windows_days": served.feature_windows_days,
        "feature_tops": served.feature_tops,
        "feature_names": served.feature_names,
    }
    (directory / _SERVING).write_text(json.dumps(context, indent=2), encoding="utf-8")
    with open(directory / "serving.npz", "wb") as fh:
        np.savez(fh, **({} if served.item_stats is None else {"item_stats": np.asarray(served.item_stats)}))
    signature = network_signature(served.artifact)
    if signature is not None:
        from mlflow.models import Model

        Model(artifact_path=served.name, signature=signature).save(str(directory / "MLmodel"))
    return directory


def load_served(directory: Path) -> ServedModel:
    context = json.loads((directory / _SERVING).read_text(encoding="utf-8"))
    saved = load_task_models(directory)
    with np.load(directory / "serving.npz", allow_pickle=False) as z:
        item_stats = z["item_stats"] if "item_stats" in z.files else None
    return ServedModel(
        context["model"],
        saved.models[context["model"]]["artifact"],
        saved.label_space,
        [int(w) for w in context["feature_windows_days"]],
        {str(c): [str(v) for v in vs] for c, vs in context["feature_tops"].items()},
        [str(n) for n in context["feature_names"]],
        item_stats,
    )


def log_served(model, served: ServedModel) -> str:
    """Log the served model (`save_served`) to the active MLflow run under `served_model`; returns
    the artifact URI a model version is registered from."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_served(model, served, Path(tmp) / "served_model")
        mlflow.log_artifacts(str(folder), artifact_path="served_model")
    return mlflow.get_artifact_uri("served_model")


# --- registered versions in MLflow ------------------------------------------------------------


def network_signature(net):
    """What the registry shows a network takes and gives: a profile float32[n, n_in] in, and for a
    task network its output float32[n, n_out] (the foundation network's output is its embedding,
    read through its methods, so only its input is declared). None for a module of another kind."""
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    if not isinstance(getattr(net, "x_mean", None), torch.Tensor):
        return None
    inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, int(net.x_mean.shape[0])), "profile")])
    head = getattr(net, "task_head", None)
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, head.out_features), "output")]) if head else None
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_network(net, name: str, space: LabelSpace | None = None) -> str:
    """Log a network (and the label space its outputs mean) to the active MLflow run under
    `name`, with an MLmodel file carrying its signature (`network_signature`, shown in the
    registry); returns the artifact URI a model version is registered from."""
    import mlflow
    from mlflow.models import Model

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_network(net, Path(tmp) / name)
        if space is not None:
            save_label_space(space, folder)
        signature = network_signature(net)
        if signature is not None:
            Model(artifact_path=name, signature=signature).save(str(folder / "MLmodel"))
        mlflow.log_artifacts(str(folder), artifact_path=name)
    return mlflow.get_artifact_uri(name)


def load_registered(client, name: str, version: str) -> tuple[object, LabelSpace | None]:
    """The network of a registered model version, and its label space when it has one."""
    import mlflow

    source = client.get_model_version(name, version).source
    with tempfile.TemporaryDirectory() as tmp, _no_progress_bar():
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp))
        if not (folder / "network.json").exists():
            raise FileNotFoundError(
                f"version {version} of registered model {name} ({source}) holds no network.json: it was logged "
                "in an older format; materialize the model's asset again to register a new version"
            )
        net = load_network(folder)
        space = load_label_space(folder) if (folder / "label_space.json").exists() else None
    return net, space


def load_registered_model(client, name: str, version: str, default_name: str = "finetuned") -> ServedModel:
    """The served model of a registered task model version. Versions registered before task
    models served their validation pick hold a bare network: read as `default_name` (the
    version's tag), reading the profile only."""
    import mlflow

    source = client.get_model_version(name, version).source
    with tempfile.TemporaryDirectory() as tmp, _no_progress_bar():
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp))
        if (folder / _SERVING).exists():
            return load_served(folder)
    net, space = load_registered(client, name, version)
    if space is None:
        raise FileNotFoundError(
            f"version {version} of registered model {name} has no saved label space: materialize the task's model "
            "asset again to register a new version"
        )
    return ServedModel(default_name, net, space)


@contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow draws a progress bar per download; a scoring run reads a few small files."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


# --- the store --------------------------------------------------------------------------------


class Store:
    """The artifact layout under one root (the ArtifactStore resource's, default $BM_HOME)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def embeddings_dir(self) -> Path:
        return self.root / "artifacts" / EMBEDDINGS_DIR

    @property
    def coders_dir(self) -> Path:
        return self.root / "artifacts" / CODERS_DIR

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def task_dir(self, task_name: str) -> Path:
        return self.root / "models" / task_name

    def save_embeddings(self, embeddings: dict[str, ColumnEmbeddings], info: dict) -> Path:
        return save_embeddings(embeddings, self.embeddings_dir, info)

    def load_embeddings(self) -> dict[str, ColumnEmbeddings]:
        return load_embeddings(self.embeddings_dir)

    def save_coders(self, coders: dict[str, SketchCoder], info: dict) -> Path:
        return save_sketch_coders(coders, self.coders_dir, info)

    def load_coders(self) -> dict[str, SketchCoder]:
        return load_sketch_coders(self.coders_dir)

    def save_task(self, task_name: str, models: dict, promotion: dict, space: LabelSpace) -> Path:
        directory = self.task_dir(task_name)
        directory.parent.mkdir(parents=True, exist_ok=True)
        return save_task_models(models, promotion, space, directory)

    def load_task(self, task_name: str) -> SavedTask:
        directory = self.task_dir(task_name)
        if not (directory / _MANIFEST).exists():
            raise FileNotFoundError(f"{directory} holds no trained models: materialize {task_name}_model first")
        return load_task_models(directory)
