"""DDP on CPU: two processes (Lightning `strategy="ddp"`, gloo) train the tiny model through `mammokit.training.run`.

The test runs this file as a script; Lightning's DDP launcher starts the second rank by running it again with the
rank in the environment. Each rank records the exams of every batch it trains on and its final weights; with
`uneven-val` it records which validation items the validation AUC was computed from instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import BatchRecorder, read_records, tiny_train_dict

EPOCHS = 2
LR = 1e-3


class FinalState(L.Callback):
    """Saves each rank's final weights, learning rate and process-group facts."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rank = trainer.global_rank
        torch.save(pl_module.model.state_dict(), self.folder / f"weights-rank{rank}.pt")
        info = {"world": trainer.world_size, "backend": torch.distributed.get_backend(),
                "lr": trainer.optimizers[0].param_groups[0]["lr"], "total_steps": pl_module.hparams.total_steps,
                "global_step": trainer.global_step, "best": trainer.checkpoint_callback.best_model_path}
        (self.folder / f"info-rank{rank}.json").write_text(json.dumps(info))


def main(store: Path, out: Path) -> None:
    """Both ranks run this: one `train()` with two CPU devices."""
    from mammokit.training.config import TrainConfig
    from mammokit.training.run import train

    cfg = TrainConfig.model_validate(tiny_train_dict(
        store, out / "runs", optim={"lr": LR, "warmup_fraction": 0.0}, stages=[{"name": "all", "epochs": EPOCHS}],
        trainer={"accelerator": "cpu", "devices": 2, "strategy": "ddp"}))
    train(cfg, callbacks=[BatchRecorder(out), FinalState(out)])


class ValidationRows(L.Callback):
    """Appends, per validation run, the item indices the module's validation AUC was computed from."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record = {"epoch": trainer.current_epoch, "n": len(trainer.datamodule.val_set),
                  "index": pl_module.val_outputs["index"].tolist()}
        with (self.folder / f"val-rank{trainer.global_rank}.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")


def uneven_val_table(store: Path) -> pd.DataFrame:
    """The store's default split with one more patient moved to `val`: 3 validation exams for 2 ranks."""
    from mammokit.release.store_table import load_store_table
    from mammokit.training.datamodule import with_splits

    table = with_splits(load_store_table(store), seed=0)
    moved = sorted(table.loc[table["split"] == "train", "patient_id"].unique())[0]
    return table.assign(split=table["split"].where(table["patient_id"] != moved, "val"))


def main_uneven_val(store: Path, out: Path) -> None:
    """Both ranks run this: one epoch on two CPU devices with a validation set that 2 does not divide."""
    from mammokit.training.config import TrainConfig
    from mammokit.training.run import train

    cfg = TrainConfig.model_validate(tiny_train_dict(
        store, out / "runs", stages=[{"name": "all", "epochs": 1}],
        trainer={"accelerator": "cpu", "devices": 2, "strategy": "ddp"}))
    train(cfg, uneven_val_table(store), callbacks=[ValidationRows(out)])


@pytest.mark.slow
def test_validation_counts_each_case_once_when_the_ranks_do_not_divide_it(synth_store, tmp_path):
    table = uneven_val_table(synth_store.store)
    assert table.loc[table["split"] == "val", "exam_id"].nunique() == 3  # the DDP sampler pads it to 4
    proc = subprocess.run([sys.executable, __file__, str(synth_store.store), str(tmp_path), "uneven-val"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for r in (0, 1):
        records = read_records(tmp_path / f"val-rank{r}.jsonl")
        assert len(records) == 1 and records[0]["n"] == 3
        assert records[0]["index"] == [0, 1, 2]  # every validation exam once, none twice, on both ranks


@pytest.mark.slow
def test_two_cpu_ranks_split_each_epoch_and_agree(synth_store, tmp_path):
    from mammokit.data.dataset import ExamDataset
    from mammokit.data.sampler import BalancedCaseSampler
    from mammokit.training.datamodule import with_splits

    proc = subprocess.run([sys.executable, __file__, str(synth_store.store), str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    infos = [json.loads((tmp_path / f"info-rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world"] for i in infos] == [2, 2] and {i["backend"] for i in infos} == {"gloo"}

    # what the sampler draws for world size 2: the training exams of the run's split
    table = with_splits(pd.read_parquet(synth_store.store / "preprocessed.parquet"), seed=0)
    train_rows = table[table["split"] == "train"]
    ds = ExamDataset(train_rows, synth_store.store)
    exam_ids = np.array([it["exam_id"] for it in ds.items])
    records = [read_records(tmp_path / f"rank{r}.jsonl") for r in (0, 1)]
    for epoch in range(EPOCHS):
        seen = [[e for rec in records[r] if rec["epoch"] == epoch for e in rec["exams"]] for r in (0, 1)]
        for r in (0, 1):
            want = BalancedCaseSampler(ds.item_groups(), ds.item_labels(), ratio_start=0.5, num_samples=len(ds),
                                       num_replicas=2, rank=r, seed=0, drop_last=True)
            want.set_epoch(epoch)
            assert seen[r] == exam_ids[list(want)].tolist()  # this rank's share, in the sampler's order
        # 10 draws at ratio 0.5 over 5 positive and 5 negative patients: every exam once, on one rank only
        assert not set(seen[0]) & set(seen[1])
        assert sorted(seen[0] + seen[1]) == sorted(train_rows["exam_id"].unique())

    # gradients were all-reduced: both ranks end with identical weights, and training moved them
    w0, w1 = (torch.load(tmp_path / f"weights-rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    from mammokit.models import create_model

    init = create_model("multiview_gmic", seed=0, **tiny_train_dict(synth_store.store, tmp_path)["model"]["kwargs"])
    assert any(not torch.equal(v, w0[k]) for k, v in init.state_dict().items() if v.is_floating_point())
    # the cosine schedule counts each rank's steps: 3 batches of 2 per epoch per rank, fully decayed at the end
    assert [i["global_step"] for i in infos] == [3 * EPOCHS] * 2 and infos[0]["total_steps"] == 3 * EPOCHS
    assert infos[0]["lr"] == pytest.approx(0.01 * LR) and infos[1]["lr"] == infos[0]["lr"]
    # both ranks chose the same best checkpoint (the AUC is logged on every rank), and rank 0 released the model
    assert infos[0]["best"] == infos[1]["best"] and infos[0]["best"].endswith("best.ckpt")
    assert (tmp_path / "runs/tiny/model/model.safetensors").is_file()


if __name__ == "__main__":
    (main_uneven_val if sys.argv[3:] == ["uneven-val"] else main)(Path(sys.argv[1]), Path(sys.argv[2]))
