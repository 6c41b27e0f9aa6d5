"""A run killed mid-epoch resumes from its last checkpoint with the data order, weights and logs of an uninterrupted
run; a finished curriculum stage is skipped on the re-run.

The kill happens in the second stage, in the middle of its second epoch, with one DataLoader worker: the case where
Lightning builds the resumed epoch's iterator (and the worker draws from the sampler) before it sets the epoch.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import BatchRecorder, read_records, simulated_kill
from mammokit.training.run import train

KILL = ("1-b", 7)  # stage 1, global step 7 = epoch 1, batch 2 of 5


def resumable_config(tiny_config, name: str):
    return tiny_config(
        name=name,
        data={"num_workers": 1, "augment": {"p_affine": 1.0}},  # augmented: the per-item epoch must be right too
        model={"name": "multiview_gmic",
               "kwargs": {"preset": "cpu", "image_size": [64, 40], "full_size": [128, 80], "patch_size": 16,
                          "num_patches": 2, "dropout": 0.0}},  # no dropout: the global RNG is not checkpointed
        stages=[{"name": "a", "epochs": 2}, {"name": "b", "epochs": 2, "lr": 5e-4}],
        trainer={"checkpoint_every_n_steps": 1},
    )


def by_step(records: list[dict]) -> dict[tuple[str, int], list[str]]:
    return {(r["stage"], r["step"]): r["exams"] for r in records}


@pytest.mark.slow
def test_killed_run_resumes_with_the_same_data_order(tiny_config, tmp_path):
    logs = tmp_path / "records"
    full = train(resumable_config(tiny_config, "full"), callbacks=[BatchRecorder(logs, "full-")])
    killed_cfg = resumable_config(tiny_config, "killed")
    with simulated_kill():
        train(killed_cfg, callbacks=[BatchRecorder(logs, "killed-", kill_at=KILL)])
    done_a = Path(killed_cfg.runs_dir) / "killed/stages/0-a/done.json"
    done_before = done_a.stat().st_mtime_ns
    assert not (Path(killed_cfg.runs_dir) / "killed/stages/1-b/done.json").exists()
    killed = train(killed_cfg, callbacks=[BatchRecorder(logs, "resumed-")])

    reference = by_step(read_records(logs / "full-rank0.jsonl"))
    before, after = read_records(logs / "killed-rank0.jsonl"), read_records(logs / "resumed-rank0.jsonl")
    assert len(reference) == 2 * 2 * 5
    # the finished stage was skipped: nothing trained, nothing rewritten
    assert {r["stage"] for r in after} == {"1-b"}
    assert done_a.stat().st_mtime_ns == done_before
    # the resumed run started mid-epoch, right where the kill struck, and the joined order is the uninterrupted one
    assert (after[0]["step"], after[0]["epoch"], after[0]["batch_idx"]) == (7, 1, 2)
    assert max(r["step"] for r in before if r["stage"] == "1-b") == 6
    assert {**by_step(before), **by_step(after)} == reference

    # the same weights as the uninterrupted run (deterministic CPU training, optimiser and schedule restored)
    for name in ("stages/1-b/checkpoints/last.ckpt", "stages/0-a/checkpoints/last.ckpt"):
        want = torch.load(full / name, map_location="cpu", weights_only=True)
        got = torch.load(killed / name, map_location="cpu", weights_only=True)
        assert got["global_step"] == want["global_step"] == 10
        for key, value in want["state_dict"].items():
            torch.testing.assert_close(got["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)

    # metrics.csv joins the killed attempt's rows with the resumed ones: every step's loss, equal to the reference
    def losses(run):
        m = pd.read_csv(run / "metrics.csv").dropna(subset=["train/loss"])
        return m.set_index(["stage", "step"])["train/loss"].sort_index()

    want, got = losses(full), losses(killed)
    assert len(want) == 20 and got.index.equals(want.index)
    pd.testing.assert_series_equal(got, want, rtol=1e-5)
    assert list((tmp_path / "runs/killed/logs/csv").glob("1-b+resume1/metrics.csv"))


@pytest.mark.slow
def test_kill_at_an_epoch_boundary_resumes_with_the_next_epoch(tiny_config, tmp_path):
    """Killed just after an epoch's validation (best score not improved, so Lightning's own "last" file would be
    stale): the resumed run starts the next epoch, with that epoch's order, not the finished one's again."""
    def config(name: str):
        return tiny_config(name=name, data={"num_workers": 1}, stages=[{"name": "a", "epochs": 3}],
                           trainer={"checkpoint_every_n_steps": 1})

    logs = tmp_path / "records"
    train(config("full"), callbacks=[BatchRecorder(logs, "full-")])
    with simulated_kill():
        train(config("killed"), callbacks=[BatchRecorder(logs, "killed-", kill_at=("0-a", 10))])
    train(config("killed"), callbacks=[BatchRecorder(logs, "resumed-")])
    reference = by_step(read_records(logs / "full-rank0.jsonl"))
    after = read_records(logs / "resumed-rank0.jsonl")
    assert (after[0]["step"], after[0]["epoch"], after[0]["batch_idx"]) == (10, 2, 0) and len(after) == 5
    assert {**by_step(read_records(logs / "killed-rank0.jsonl")), **by_step(after)} == reference
    assert reference[("0-a", 10)] != reference[("0-a", 5)]  # epochs 1 and 2 differ, so a mix-up would show
