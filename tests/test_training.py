"""Training end to end on a tiny four-view model: the loss falls, checkpoints reload, the released model matches the
trained module, the run folder holds its logs; ensembles average their members; DDP strategy and schedule helpers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mammokit.data.dataset import ExamDataset, collate
from mammokit.models import EnsembleModel
from mammokit.release.device import model_inputs
from mammokit.release.model import load_released
from mammokit.training.module import MammoModule
from mammokit.training.run import _strategy, train, train_ensemble


def val_batch(run_dir: Path, store: Path) -> dict:
    """All validation exams of a run (its splits.csv) as one batch, without augmentation."""
    splits = pd.read_csv(run_dir / "splits.csv")
    val = set(splits.loc[splits["split"] == "val", "exam_id"])
    table = pd.read_parquet(store / "preprocessed.parquet")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]
    ds = ExamDataset(table[table["exam_id"].isin(val)], store, input_size=tuple(cfg["input_size"]),
                     full_scale=cfg["full_scale"])
    return collate([ds[i] for i in range(len(ds))])


def test_tiny_training_end_to_end(tiny_config, synth_store):
    cfg = tiny_config(stages=[{"name": "all", "epochs": 4}])
    run = train(cfg)

    # the loss falls on a handful of exams without augmentation
    metrics = pd.read_csv(run / "metrics.csv")
    steps = metrics.dropna(subset=["train/loss"])
    per_epoch = steps.groupby("epoch")["train/loss"].mean()
    assert len(per_epoch) == 4 and len(steps) == 4 * 5  # 10 training exams, batch 2
    assert per_epoch.iloc[-1] < 0.8 * per_epoch.iloc[0], per_epoch.tolist()
    assert metrics["val/exam_auc"].notna().any()  # the val split holds both classes

    # the run folder
    for name in ("config.yaml", "metrics.csv", "splits.csv", "model/model.safetensors", "model/config.json",
                 "stages/0-all/done.json", "stages/0-all/final_model.pt", "logs/csv/0-all/metrics.csv"):
        assert (run / name).is_file(), name
    assert list((run / "logs/tensorboard/0-all").glob("events.out.tfevents.*"))
    assert yaml.safe_load((run / "config.yaml").read_text())["stages"][0]["epochs"] == 4
    splits = pd.read_csv(run / "splits.csv")
    assert splits.groupby("patient_id")["split"].nunique().max() == 1  # patient-level split
    assert set(splits["split"]) == {"train", "val"}

    # checkpoints reload with weights_only=True; the released model is the best checkpoint
    best = run / "stages/0-all/checkpoints/best.ckpt"
    assert (run / "stages/0-all/checkpoints/last.ckpt").is_file() and best.is_file()
    raw = torch.load(best, map_location="cpu", weights_only=True)
    assert raw["epoch"] in range(4) and "optimizer_states" in raw
    module = MammoModule.load_from_checkpoint(best, map_location="cpu", weights_only=True).eval()
    final = torch.load(run / "stages/0-all/final_model.pt", map_location="cpu", weights_only=True)
    for key, value in module.model.state_dict().items():
        assert torch.equal(value, final[key]), key
    released, config = load_released(run / "model")
    assert config["model"] == {"name": cfg.model.name, "kwargs": cfg.model.kwargs}
    assert config["input"]["input_size"] == [64, 40] and config["training"]["exams"] == 10
    assert config["training"]["hardware"] == "cpu" and config["training"]["precision"] == "32-true"
    assert "not a medical device" in config["intended_use"].lower()
    batch = val_batch(run, synth_store.store)
    with torch.no_grad():
        want, got = module(batch), released(model_inputs(batch))
    for key in ("exam_logit", "breast_logits"):
        torch.testing.assert_close(getattr(got, key), getattr(want, key), rtol=0, atol=1e-6)
    # and training changed the weights: a fresh model of the same seed gives other outputs
    fresh = MammoModule(cfg.model.name, cfg.model.kwargs, seed=cfg.seed).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(batch).exam_logit, want.exam_logit, atol=1e-4)


WARM_OPENCV_THEN_TRAIN = """
import sys, cv2, numpy as np, yaml
from mammokit.training.config import TrainConfig
from mammokit.training.run import train
big = np.random.default_rng(0).random((3000, 2000), dtype=np.float32)
cv2.resize(big, (1000, 700), interpolation=cv2.INTER_AREA)  # the parent's OpenCV thread pool is now running
train(TrainConfig.model_validate(yaml.safe_load(open(sys.argv[1]))))
"""


def test_loader_workers_start_clean_and_change_nothing(tiny_config, tmp_path):
    """A worker process gives the same batches as the main process, even after the parent used OpenCV's threads
    (a forked worker deadlocked there: the demo hung at its first batch)."""
    stages = [{"name": "all", "epochs": 2}]
    augment = {"enabled": True}
    run0 = train(tiny_config(stages=stages, data={"augment": augment}))
    cfg1 = tiny_config(stages=stages, data={"augment": augment, "num_workers": 1}).model_dump(mode="json")
    cfg1["name"] = "workers"
    (tmp_path / "workers.yaml").write_text(yaml.safe_dump(cfg1))
    subprocess.run([sys.executable, "-c", WARM_OPENCV_THEN_TRAIN, str(tmp_path / "workers.yaml")], check=True,
                   timeout=300, capture_output=True)
    losses = [pd.read_csv(r / "metrics.csv").dropna(subset=["train/loss"])["train/loss"].to_numpy()
              for r in (run0, Path(cfg1["runs_dir"]) / "workers")]
    assert len(losses[0]) == len(losses[1]) == 2 * 5
    np.testing.assert_allclose(losses[1], losses[0], rtol=2e-3)  # float noise of another process, not a new stream


def test_ensemble_releases_the_mean_of_its_members(tiny_config, synth_store):
    cfg = tiny_config(name="ens", stages=[{"name": "all", "epochs": 1}])
    base = train_ensemble(cfg, seeds=[0, 1])
    ensemble, config = load_released(base / "model")
    assert isinstance(ensemble, EnsembleModel) and len(ensemble.members) == 2
    assert config["model"]["name"] == "ensemble" and len(config["members"]) == 2
    members = [load_released(base / f"seed-{s}" / "model")[0] for s in (0, 1)]
    batch = model_inputs(val_batch(base / "seed-0", synth_store.store))
    with torch.no_grad():
        out = ensemble(batch)
        logits = [m(batch).exam_logit for m in members]
        breast = [m(batch).breast_logits for m in members]
    assert not torch.allclose(logits[0], logits[1])  # two seeds, two different members
    torch.testing.assert_close(out.exam_logit, (logits[0] + logits[1]) / 2, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.breast_logits, (breast[0] + breast[1]) / 2, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.member_exam_logits, torch.stack(logits), rtol=0, atol=1e-6)
    assert yaml.safe_load((base / "seed-1" / "config.yaml").read_text())["seed"] == 1
    # the members share one split, and the ensemble's splits.csv marks every exam a member saw as trained on
    member_splits = [pd.read_csv(base / f"seed-{s}" / "splits.csv") for s in (0, 1)]
    pd.testing.assert_frame_equal(*member_splits)
    assert set(pd.read_csv(base / "splits.csv")["split"]) == {"train"}


@pytest.mark.parametrize(("strategy", "devices", "nodes", "want"), [
    ("auto", 1, 1, "auto"),
    ("auto", "auto", 1, "auto"),
    ("auto", 2, 1, "ddp_find_unused_parameters_true"),
    ("auto", 1, 2, "ddp_find_unused_parameters_true"),
    ("ddp", 2, 1, "ddp_find_unused_parameters_true"),
    ("ddp_spawn", 2, 1, "ddp_spawn_find_unused_parameters_true"),
    ("fsdp", 2, 1, "fsdp"),
])
def test_ddp_strategies_tolerate_unused_parameters(strategy, devices, nodes, want):
    assert _strategy(strategy, devices, nodes) == want
