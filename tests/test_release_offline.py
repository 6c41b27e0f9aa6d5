"""A model trained from `file:` weights needs that file only to start training: later curriculum stages, loading the
released model and `predict` run after it is gone, and a release never asks timm for weights (no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from safetensors.torch import save_file

from mammokit.models import create_backbone
from mammokit.predict import predict_studies
from mammokit.release.config_schema import read_config, write_config
from mammokit.release.device import model_inputs
from mammokit.release.model import load_released
from mammokit.training.run import train
from test_training import val_batch


class DeleteAfterFirstStage(L.Callback):
    """Deletes the weights file once the first stage has trained."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def trained_from_file(synth_store, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two one-step stages from a `file:` checkpoint that is deleted after the first; the run and the file's path."""
    from conftest import tiny_train_dict
    from mammokit.training.config import TrainConfig

    root = tmp_path_factory.mktemp("offline")
    weights = root / "backbone.safetensors"
    source = create_backbone("mammokit_resnet18n")
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(weights))
    cfg = TrainConfig.model_validate(tiny_train_dict(
        synth_store.store, root / "runs", name="from-file",
        model={"kwargs": {"preset": "cpu", "patch_size": 16, "num_patches": 2,
                          "global_pretrained": f"file:{weights}", "local_pretrained": f"file:{weights}"}},
        stages=[{"name": "a", "epochs": 1}, {"name": "b", "epochs": 1}], trainer={"max_steps": 1}))
    run = train(cfg, callbacks=[DeleteAfterFirstStage(weights)])
    return {"run": run, "weights": weights}


def test_released_model_loads_and_predicts_without_its_weight_source(trained_from_file, synth_store, tmp_path):
    run, weights = trained_from_file["run"], trained_from_file["weights"]
    assert not weights.exists()
    model, config = load_released(run / "model")
    assert not any(k.endswith("pretrained") for k in config["model"]["kwargs"])
    assert config["training"]["initial_weights"] == {"global_pretrained": f"file:{weights}",
                                                     "local_pretrained": f"file:{weights}"}
    final = torch.load(run / "stages/1-b/final_model.pt", map_location="cpu", weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, final[key]), key
    with torch.no_grad():
        out = model(model_inputs(val_batch(run, synth_store.store)))
    assert torch.isfinite(out.exam_logit).all()
    study = sorted((synth_store.raw / "dicom").iterdir())[0]
    preds = predict_studies(run, study, out=tmp_path / "pred", device="cpu")
    assert len(preds) == 1 and 0.0 <= preds[0].prediction["exam"]["prob"] <= 1.0


def test_an_older_release_naming_weight_sources_loads_offline(trained_from_file, tmp_path, monkeypatch):
    """Configs released before weight sources were left out still name them: loading ignores them (a `timm:` source
    would need the network, a `file:` source a file that is long gone)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    src = trained_from_file["run"] / "model"
    (model_dir / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    config = read_config(src / "config.json")
    config.model.kwargs.update(global_pretrained="timm:a1_in1k", local_pretrained="file:/nowhere/w.safetensors")
    write_config(model_dir / "config.json", config)
    old, _ = load_released(model_dir)
    new, _ = load_released(src)
    for key, value in new.state_dict().items():
        assert torch.equal(old.state_dict()[key], value), key
